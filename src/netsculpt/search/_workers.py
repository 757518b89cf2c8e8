"""Worker processes on one machine: spawn N, each loads the study and runs its share.

The model, the task and the analysed graph travel to the workers in a file written with
``torch.save``, so every worker prunes the very same weights; when they do not pickle and
the search was started from a ``"package.module:factory"`` string and a task name, each
worker rebuilds them from those names (the factory must then be deterministic). Each
worker opens the same storage, gets its own sampler seed, and runs ``remaining // N``
trials (the first ones one more). The parent shows progress by reading the study, and on
Ctrl-C stops the workers; the trials they were running are retried on the next start
(see ``_resume``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import optuna
import torch

from netsculpt.errors import SearchError

__all__ = ["run_workers", "worker_main"]


def run_workers(
    job: Any,
    *,
    model: Any,
    example_inputs: Any,
    task: Any,
    graph: Any,
    workers: int,
    remaining: int,
    study: optuna.Study,
    progress: bool,
) -> None:
    """Run ``remaining`` trials of ``study`` in ``workers`` spawned processes."""
    from netsculpt.search.progress import SearchProgress

    shares = [remaining // workers + (1 if i < remaining % workers else 0) for i in range(workers)]
    shares = [s for s in shares if s > 0]
    with tempfile.TemporaryDirectory(prefix="netsculpt-workers-") as tmp:
        payload = Path(tmp) / "job.pt"
        _write_payload(payload, job, model, example_inputs, task, graph)
        ctx = mp.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // len(shares))
        procs = []
        for i, share in enumerate(shares):
            err = Path(tmp) / f"error-{i}.txt"
            p = ctx.Process(
                target=worker_main,
                args=(str(payload), i, share, threads, str(err)),
                name=f"netsculpt-worker-{i}",
            )
            p.start()
            procs.append((p, err))
        display = SearchProgress(study, job.n_trials, enabled=progress)
        try:
            with display:
                while any(p.is_alive() for p, _ in procs):
                    display.refresh()
                    time.sleep(0.5)
                display.refresh()
        except BaseException:
            for p, _ in procs:
                if p.is_alive():
                    p.terminate()
            for p, _ in procs:
                p.join(10)
            raise
        for p, _ in procs:
            p.join()
        errors = []
        for i, (p, err) in enumerate(procs):
            if p.exitcode != 0:
                text = err.read_text() if err.exists() else f"exit code {p.exitcode}"
                errors.append(f"worker {i}: {text.strip()}")
        if errors:
            raise SearchError(
                "worker processes failed; finished trials are kept in the study and a new "
                "run resumes it:\n" + "\n".join(errors)
            )


def _write_payload(
    path: Path, job: Any, model: Any, example_inputs: Any, task: Any, graph: Any
) -> None:
    """Save what the workers need; objects that do not pickle travel by name instead."""
    attempts = [
        {"model": model, "task": task, "graph": graph},
        {"model": model, "task": task, "graph": None},
    ]
    if job.model_spec or job.task_name:  # rebuilt by name in each worker
        attempts.append(
            {
                "model": None if job.model_spec else model,
                "task": None if job.task_name else task,
                "graph": None,
            }
        )
    error: Exception | None = None
    for objects in attempts:
        try:
            torch.save({"job": job, "example_inputs": example_inputs, **objects}, path)
            return
        except Exception as exc:  # noqa: BLE001 -- pickling fails with many types
            error = exc
    raise SearchError(
        f"the model or the task cannot be sent to worker processes ({type(error).__name__}: "
        f"{error}); pass the model as a 'package.module:factory' string and the task by "
        f"its registered name so each worker builds its own, or use workers=1"
    ) from error


def worker_main(payload: str, index: int, share: int, threads: int, error_path: str) -> None:
    """Entry point of a spawned worker: rebuild everything, then optimise ``share`` trials."""
    try:
        torch.set_num_threads(threads)
        content = torch.load(payload, weights_only=False)
        job = content["job"]
        model, example_inputs, task = content["model"], content["example_inputs"], content["task"]
        if model is None:
            from netsculpt.search.cli_commands import resolve_model

            model, _ = resolve_model(job.model_spec)
        if task is None:
            from netsculpt.tasks.registry import get_task

            task = get_task(job.task_name)
        run_worker(
            job,
            model=model,
            example_inputs=example_inputs,
            task=task,
            graph=content["graph"],
            index=index,
            share=share,
        )
    except BaseException:  # noqa: BLE001 -- reported to the parent, then exit 1
        Path(error_path).write_text(traceback.format_exc())
        raise SystemExit(1) from None


def run_worker(
    job: Any,
    *,
    model: Any,
    example_inputs: Any,
    task: Any,
    graph: Any = None,
    index: int,
    share: int,
) -> None:
    """Open the study, build this worker's sampler and evaluator, and run ``share`` trials."""
    from netsculpt.graph.analysis import analyze
    from netsculpt.search.api import _quiet_optuna, build_sampler, run_trials
    from netsculpt.search.objective import Evaluator
    from netsculpt.search.space import build_space
    from netsculpt.search.storage import open_storage

    if graph is None:
        graph = analyze(model, example_inputs)
    bound = build_space(graph, job.space)
    storage = open_storage(job.storage)
    evaluator = Evaluator(
        model=model,
        example_inputs=example_inputs,
        task=task,
        bound=bound,
        objectives=tuple(job.objectives),
        backend=job.backend,
        measure_options=job.measure_options,
        recover_budget=job.recover_budget,
        constraints=job.constraints,
        graph=graph,
    )
    with _quiet_optuna():
        study = optuna.load_study(
            study_name=job.study_name,
            storage=storage,
            sampler=build_sampler(job, bound, worker=index + 1, plan_key=evaluator.plan_key),
        )
        run_trials(study, evaluator, share, job, progress=False)
