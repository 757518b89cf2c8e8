"""Worker processes on one machine: start N, each opens the study and runs its share.

Nothing is written to disk to hand a job over, and no worker reads a file it did not
write. Each worker is a fresh interpreter (multiprocessing's ``spawn``; a ``fork``ed child
hangs in OpenMP as soon as torch runs with more than one thread), and receives over the
pipe that multiprocessing opens between the parent and that child only:

* the job as JSON text (:meth:`Job.to_json`: the study's :class:`StudyConfig` and how to
  reopen the study);
* the model: when the search was started from a ``"package.module:factory"`` string or a
  built-in name, by that name (the parent's caller typed it) plus the parent's weights as
  safetensors bytes, so every worker prunes the very same weights; otherwise the parent's
  own model object, like a task object and the example inputs;
* a super-network (a super-network study): the files ``save_supernet`` writes
  (``elastic.json``, the weights and the example inputs as safetensors) as bytes, plus the
  super-network's inner model object as the base ``load_supernet`` loads them into; the
  worker writes the files to a temporary folder of its own, loads the super-network from
  it (checked as any folder is) and removes the folder.

Each worker opens the same storage, gets its own sampler seed, and runs
``remaining // N`` trials (the first ones one more); the parent shows progress by reading
the study. Workers die with their parent: on Linux the kernel kills them
(``PR_SET_PDEATHSIG``), and a watchdog thread in each worker ends it when its parent
process is gone (any platform). A trial a dead worker was running is failed and queued
again by the next process that looks (see ``_resume``).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import optuna
import torch

from netsculpt.errors import SearchError
from netsculpt.studies._run import (
    Job,
    build_sampler,
    check_job_json,
    process_evaluator,
    quiet_optuna,
    run_trials,
)
from netsculpt.studies._settings import SUPERNET

__all__ = ["die_with_parent", "remove_stale_job_folders", "run_workers", "worker_main"]

#: ``prctl`` option: the signal a process gets when its parent dies (linux/prctl.h)
_PR_SET_PDEATHSIG = 1
#: seconds between two looks of a worker's watchdog at its parent
_WATCHDOG_S = 0.5


def run_workers(
    job: Job,
    *,
    model: Any,
    example_inputs: Any,
    task: Any,
    graph: Any,
    workers: int,
    remaining: int,
    study: optuna.Study,
    progress: bool,
    supernet_files: dict[str, bytes] | None = None,
) -> None:
    """Run ``remaining`` trials of ``study`` in ``workers`` spawned processes
    (``supernet_files``: a super-network study's super-network, as workers load it)."""
    from netsculpt.studies.progress import SearchProgress

    shares = [remaining // workers + (1 if i < remaining % workers else 0) for i in range(workers)]
    shares = [s for s in shares if s > 0]
    remove_stale_job_folders()
    job_json = check_job_json(job)
    by_name = job.model_spec is not None
    weights = state_bytes(model) if by_name else None
    common = {
        "model": None if by_name else model,
        "task": None if job.task_name else task,
        "example_inputs": example_inputs,
    }
    if job.kind == SUPERNET:
        if supernet_files is None:
            from netsculpt.studies._supernet import supernet_files as files_of

            supernet_files = files_of(model)
        common.update(model=model.model, supernet_files=supernet_files)
        graph = None
    variants = [{**common, "graph": graph}, {**common, "graph": None}]
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // len(shares))
    procs: list[tuple[Any, Connection]] = []
    try:
        for i, share in enumerate(shares):
            procs.append(
                _start(ctx, variants, job_json, weights, index=i, share=share, threads=threads)
            )
        display = SearchProgress(study, job.config.n_trials, enabled=progress)
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
            if p.is_alive():
                p.kill()
                p.join(5)
        for _, conn in procs:
            conn.close()
        raise
    errors = []
    for i, (p, conn) in enumerate(procs):
        p.join()
        if p.exitcode != 0:
            text = f"exit code {p.exitcode}"
            try:
                if conn.poll():
                    text = str(conn.recv())
            except (EOFError, OSError):
                pass
            errors.append(f"worker {i}: {text.strip()}")
        conn.close()
    if errors:
        raise SearchError(
            "worker processes failed; finished trials are kept in the study and a new "
            "run resumes it:\n" + "\n".join(errors)
        )


def _start(
    ctx: Any,
    variants: list[dict[str, Any]],
    job_json: str,
    weights: bytes | None,
    *,
    index: int,
    share: int,
    threads: int,
) -> tuple[Any, Connection]:
    """Start one worker with the first ``variants`` entry whose objects can be sent."""
    error: Exception | None = None
    while variants:
        receive, send = ctx.Pipe(duplex=False)
        p = ctx.Process(
            target=worker_main,
            args=(job_json, weights, variants[0], index, share, threads, os.getpid(), send),
            name=f"netsculpt-worker-{index}",
        )
        try:
            p.start()  # the arguments are serialised into the child's pipe before it starts
        except (pickle.PicklingError, TypeError, AttributeError, RuntimeError, ValueError) as exc:
            receive.close()
            send.close()
            error = exc
            variants.pop(0)  # later workers skip what failed here
            continue
        send.close()  # the child holds the writing end now
        return p, receive
    raise SearchError(
        f"the model or the task cannot be sent to worker processes ({type(error).__name__}: "
        f"{error}); pass the model as a 'package.module:factory' string and the task by "
        f"its registered name so each worker builds its own, or use workers=1"
    ) from error


def worker_main(
    job_json: str,
    weights: bytes | None,
    objects: dict[str, Any],
    index: int,
    share: int,
    threads: int,
    parent_pid: int,
    conn: Connection,
) -> None:
    """Entry point of a spawned worker: rebuild everything, then optimise ``share`` trials."""
    try:
        die_with_parent(parent_pid)
        torch.set_num_threads(threads)
        job = Job.from_json(job_json)
        model = objects["model"]
        if job.kind == SUPERNET:
            from netsculpt.studies._supernet import load_supernet_files

            model = load_supernet_files(objects["supernet_files"], base=model)
        elif model is None and job.model_spec is not None:
            from netsculpt.studies._specs import resolve_model

            # the spec the parent's caller typed (not one read from a study)
            model, _ = resolve_model(job.model_spec)
            if weights is not None:
                load_state_bytes(model, weights)
        task = objects["task"]
        if task is None and job.task_name is not None:
            from netsculpt.tasks.registry import get_task

            task = get_task(job.task_name)
        run_worker(
            job,
            model=model,
            example_inputs=objects["example_inputs"],
            task=task,
            graph=objects["graph"],
            index=index,
            share=share,
        )
    except BaseException:  # noqa: BLE001 -- reported to the parent, then exit 1
        with contextlib.suppress(OSError, ValueError):
            conn.send(traceback.format_exc()[-20_000:])
        raise SystemExit(1) from None
    finally:
        conn.close()


def remove_stale_job_folders(older_than_s: float = 600.0) -> list[str]:
    """Delete job folders that netsculpt < 0.5 left in the temp folder after a ``kill -9``.

    Those versions handed jobs over as pickles in ``<tmp>/netsculpt-workers-*/job.pt``.
    Only this user's folders that hold nothing else and were not touched for
    ``older_than_s`` seconds (their workers read the job at start) are removed; returns
    their paths.
    """
    removed: list[str] = []
    root = Path(tempfile.gettempdir())
    try:
        folders = [f for f in root.glob("netsculpt-workers-*") if f.is_dir() and not f.is_symlink()]
    except OSError:
        return removed
    now = time.time()
    for folder in folders:
        try:
            info = folder.stat()
            files = list(folder.iterdir())
            if info.st_uid != os.getuid() or now - info.st_mtime < older_than_s:
                continue
            if not all(_legacy_job_file(f) for f in files):
                continue
            for f in files:
                f.unlink()
            folder.rmdir()
            removed.append(str(folder))
        except OSError:
            continue
    return removed


def _legacy_job_file(path: Path) -> bool:
    name = path.name
    plain = path.is_file() and not path.is_symlink()
    return plain and (name == "job.pt" or (name.startswith("error-") and name.endswith(".txt")))


def die_with_parent(parent_pid: int) -> None:
    """End this process when the process ``parent_pid`` (its parent) ends.

    Linux: the kernel sends SIGKILL when the parent dies (``prctl(PR_SET_PDEATHSIG)``).
    Everywhere: a daemon thread checks every half second that the parent is still this
    process's parent, and kills this process when it is not.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watchdog below still runs
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="netsculpt-parent-watchdog", daemon=True
    ).start()


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(_WATCHDOG_S)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)


def state_bytes(model: torch.nn.Module) -> bytes:
    """The model's parameters and buffers as safetensors bytes (tied tensors stored once)."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple[int, ...], tuple[int, ...], torch.dtype]] = set()
    for name, tensor in model.state_dict().items():
        if not isinstance(tensor, torch.Tensor):
            continue
        key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if tensor.numel() and key in seen:
            continue  # a tied weight: the first name carries it
        seen.add(key)
        tensors[name] = tensor.detach().to("cpu").contiguous().clone()
    return save(tensors)


def load_state_bytes(model: torch.nn.Module, data: bytes) -> None:
    """Load :func:`state_bytes` output into ``model`` (built by the same factory)."""
    from safetensors.torch import load

    tensors = load(data)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected:
        raise SearchError(
            f"the worker's model has no tensors {sorted(unexpected)[:5]}; the model factory "
            f"must build the same architecture in every process"
        )
    state = model.state_dict()
    for name in missing:  # only tied copies of tensors that were loaded may be missing
        ptr = state[name].data_ptr()
        if not any(state[n].data_ptr() == ptr for n in tensors):
            raise SearchError(
                f"the worker's model has a tensor {name!r} the parent's model did not send; "
                f"the model factory must build the same architecture in every process"
            )


def run_worker(
    job: Job,
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
    from netsculpt.studies.space import build_space
    from netsculpt.studies.storage import open_storage

    config = job.config
    bound: Any
    if job.kind == SUPERNET:
        from netsculpt.studies._supernet import SupernetSpace

        bound = SupernetSpace.of(model, config.space)
    else:
        if graph is None:
            graph = analyze(model, example_inputs)
        bound = build_space(graph, config.space)
    if bound.signature != job.signature:
        must = f"the model factory {job.model_spec!r} must build the same model in every process"
        if job.kind == SUPERNET:
            must = (
                "the super-network a worker loads from its saved files must have the space "
                "it was saved with (save and load it with this netsculpt version)"
            )
        raise SearchError(
            f"worker {index} found another search space (signature {bound.signature}, the "
            f"study has {job.signature}); {must}"
        )
    if job.storage is None:  # ns.search refuses a storage object with workers > 1
        raise SearchError(f"worker {index} got no storage to reopen the study in")
    storage = open_storage(job.storage)
    evaluator = process_evaluator(config, model, example_inputs, task, bound, graph)
    with quiet_optuna():
        study = optuna.load_study(
            study_name=job.study_name,
            storage=storage,
            sampler=build_sampler(job, bound, worker=index + 1, plan_key=evaluator.plan_key),
        )
        run_trials(study, evaluator, share, job, progress=False)
