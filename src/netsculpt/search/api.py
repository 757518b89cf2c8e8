"""``ns.search``: the Pareto front of sub-networks of a model, by an Optuna study.

>>> import netsculpt as ns
>>> task = ns.get_task("digits")                                          # doctest: +SKIP
>>> model = task.pretrained_model()                                       # doctest: +SKIP
>>> front = ns.search(model, task.example_inputs(), task=task, n_trials=60)  # doctest: +SKIP
>>> front.pick(max_latency_ms=0.5).model                                  # doctest: +SKIP

The study is a plain Optuna study (``optuna-dashboard sqlite:///netsculpt.db`` opens it);
running the same call again resumes it: finished trials are kept, trials cut off by a
crash or ``kill -9`` are evaluated again, and the search stops once ``n_trials`` trials
are done.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from torch import nn

from netsculpt._inputs import ExampleInputs
from netsculpt.errors import (
    InputError,
    SearchError,
    StudyMismatchError,
    UnknownNameError,
)
from netsculpt.search._resume import n_done, recover_interrupted
from netsculpt.search.front import STUDY_ATTR, Front
from netsculpt.search.objective import (
    DEFAULT_MEASURE,
    Evaluator,
    TrialFailed,
    check_objectives,
)
from netsculpt.search.predictor import Predictor, ScreeningSampler
from netsculpt.search.samplers import (
    SAMPLERS,
    check_constraints,
    make_sampler,
    population_size_for,
)
from netsculpt.search.space import BoundSpace, SearchSpace, build_space
from netsculpt.search.storage import StorageSpec, open_storage, resolve_storage

__all__ = ["load_study", "search"]

#: study settings that must match when a study is resumed
_MUST_MATCH = ("objectives", "signature", "space", "backend", "constraints", "recover_budget")


def search(
    model: nn.Module | str,
    example_inputs: ExampleInputs | None = None,
    *,
    task: Any,
    n_trials: int = 100,
    objectives: Sequence[str] = ("score", "latency_ms", "params"),
    storage: str | os.PathLike[str] | BaseStorage | None = None,
    study_name: str | None = None,
    sampler: str | BaseSampler = "nsga2",
    workers: int = 1,
    space: SearchSpace | None = None,
    constraints: Mapping[str, float] | None = None,
    predictor: bool | Predictor = False,
    backend: str = "torch",
    seed: int | None = 0,
    recover_budget: Any = None,
    timeout: float | None = None,
    progress: bool = True,
    measure_options: Mapping[str, Any] | None = None,
) -> Front:
    """Search the sub-networks of ``model`` for the Pareto front of ``objectives``.

    Args:
        model: the trained model, or a ``"package.module:factory"`` string (a function
            returning ``(model, example_inputs)``) or a built-in name (``"digits"``,
            ``"minilm"``); a string lets worker processes and ``Front.load`` rebuild it.
        example_inputs: the batch the model is called with (latency is measured on it);
            None takes it from the factory or ``task.example_inputs()``.
        task: an ``ns.Task`` (or a registered task name) that scores a model, higher is
            better; its ``calib_batches`` feed data-driven importance criteria and its
            ``finetune`` runs recovery when ``recover_budget`` is set.
        n_trials: the number of trials the study should hold once done (finished trials
            of an earlier run of the same study count; failed evaluations count too).
        objectives: some of ``"score"`` (maximised), ``"latency_ms"``, ``"latency_p90_ms"``,
            ``"params"``, ``"macs"`` (minimised).
        storage: None for ``sqlite:///netsculpt.db`` in the working folder (a journal file
            ``netsculpt.journal`` when ``workers > 1``), an RDB URL such as
            ``postgresql://user:pw@host/db`` (workers on many machines each run the same
            call), a journal file path, or an Optuna storage object.
        study_name: the study; None derives a stable name from the model class and graph,
            so running the same call again resumes.
        sampler: ``"nsga2"`` (default), ``"tpe"``, ``"random"``, or an Optuna sampler.
        workers: worker processes on this machine (spawned, so a script calling
            ``ns.search(workers=N)`` needs the ``if __name__ == "__main__":`` guard); each
            optimises a share of the remaining trials.
        space: the :class:`SearchSpace` (keep-ratio tying, ranges, importance criteria,
            ``round_to`` choices, block removal); None for the defaults.
        constraints: limits the samplers aim for, any of ``max_latency_ms``,
            ``max_latency_p90_ms``, ``max_params``, ``max_macs``, ``min_score``; trials
            that break them stay in the study but are not on the front.
        predictor: True (or a :class:`Predictor`) to screen candidates with a surrogate
            trained on finished trials, evaluating only the most promising one per trial.
        backend: the latency backend of ``ns.measure`` (``"torch"`` or ``"onnxruntime"``).
        seed: seeds the sampler (each worker gets its own stream); None for no seed.
        recover_budget: when set, each sub-network is recovered with
            ``task.finetune(small, teacher=model, budget=recover_budget)`` before scoring.
        timeout: stop starting new trials after this many seconds (per worker).
        progress: show a live display (trials done, front size, best score per latency
            band).
        measure_options: options of ``ns.measure`` in the loop (default
            ``{"warmup": 5, "repeats": 30, "memory": False}``).

    Returns:
        The :class:`Front` of the study.

    Raises:
        UnknownNameError: an unknown sampler, objective, constraint or task.
        StorageError: the storage cannot be opened (the message names it and the fix).
        StudyMismatchError: ``study_name`` exists with other objectives or settings.
        NothingToPruneError: the model has nothing to search over.
    """
    objectives = check_objectives(objectives)
    if isinstance(sampler, str) and sampler not in SAMPLERS:
        raise UnknownNameError(
            f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)} or pass an "
            f"optuna.samplers.BaseSampler instance"
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be an int >= 1, got {workers!r}")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise InputError(f"n_trials must be an int >= 1, got {n_trials!r}")
    limits = check_constraints(constraints)
    space = space if space is not None else SearchSpace()
    if not isinstance(space, SearchSpace):
        raise InputError(
            f"space must be a netsculpt SearchSpace, got {type(space).__name__}; e.g. "
            f"space=SearchSpace(tie='stage', min_keep=0.3)"
        )
    screening = _predictor(predictor)
    options = {**DEFAULT_MEASURE, **dict(measure_options or {})}
    if workers > 1 and isinstance(sampler, BaseSampler):
        raise InputError(
            "a sampler instance cannot be shared by worker processes; pass its name "
            "(sampler='nsga2'|'tpe'|'random') with workers > 1"
        )
    if workers > 1 and isinstance(storage, BaseStorage):
        raise InputError(
            "workers > 1 need a storage the worker processes can reopen; pass a journal path "
            "or an RDB URL string instead of a storage object"
        )

    with _gc_frozen():
        return _search(
            model,
            example_inputs,
            task=task,
            n_trials=n_trials,
            objectives=objectives,
            storage=storage,
            study_name=study_name,
            sampler=sampler,
            workers=workers,
            space=space,
            limits=limits,
            screening=screening,
            backend=backend,
            seed=seed,
            recover_budget=recover_budget,
            timeout=timeout,
            progress=progress,
            options=options,
        )


def _search(
    model: nn.Module | str,
    example_inputs: ExampleInputs | None,
    *,
    task: Any,
    n_trials: int,
    objectives: tuple[str, ...],
    storage: str | os.PathLike[str] | BaseStorage | None,
    study_name: str | None,
    sampler: str | BaseSampler,
    workers: int,
    space: SearchSpace,
    limits: dict[str, float],
    screening: Predictor | None,
    backend: str,
    seed: int | None,
    recover_budget: Any,
    timeout: float | None,
    progress: bool,
    options: dict[str, Any],
) -> Front:
    model_spec = model if isinstance(model, str) else None
    task_name = task if isinstance(task, str) else None
    if isinstance(task, str):
        from netsculpt.tasks.registry import get_task

        task = get_task(task)
    if isinstance(model, str):
        from netsculpt.search.cli_commands import resolve_model

        model, spec_inputs = resolve_model(model)
        example_inputs = example_inputs if example_inputs is not None else spec_inputs
    if example_inputs is None:
        example_inputs = task.example_inputs()

    from netsculpt.graph.analysis import analyze

    graph = analyze(model, example_inputs)
    bound = build_space(graph, space)
    spec = (
        storage if isinstance(storage, BaseStorage) else resolve_storage(storage, workers=workers)
    )
    opened = spec if isinstance(spec, BaseStorage) else open_storage(spec)
    name = study_name or f"netsculpt-{type(model).__name__.lower()}-{bound.signature[:8]}"
    settings = {
        "objectives": list(objectives),
        "signature": bound.signature,
        "space": space.to_dict(),
        "backend": backend,
        "constraints": limits,
        "recover_budget": _jsonable(recover_budget),
    }
    extra = {"model_spec": model_spec, "task": task_name or getattr(task, "name", None)}
    with _quiet_optuna():
        study = _open_study(opened, name, objectives, settings, extra)

    evaluator = Evaluator(
        model=model,
        example_inputs=example_inputs,
        task=task,
        bound=bound,
        objectives=objectives,
        backend=backend,
        measure_options=options,
        recover_budget=recover_budget,
        constraints=limits,
        graph=graph,
    )
    _check_importance(evaluator)

    with _quiet_optuna():
        recover_interrupted(study)
        if STUDY_ATTR + "baseline" not in study.user_attrs:
            study.set_user_attr(STUDY_ATTR + "baseline", evaluator.baseline())
        done = n_done(study.get_trials(deepcopy=False))
        remaining = n_trials - done
        if remaining > 0:
            job = _Job(
                model_spec=model_spec,
                task_name=task_name,
                storage=None if isinstance(spec, BaseStorage) else spec,
                study_name=name,
                objectives=objectives,
                n_trials=n_trials,
                sampler=sampler if isinstance(sampler, str) else "custom",
                predictor=screening,
                seed=seed,
                backend=backend,
                measure_options=options,
                recover_budget=recover_budget,
                constraints=limits,
                space=space,
                timeout=timeout,
                n_existing=len(study.trials),
                salt=_machine_salt(spec),
            )
            if workers == 1:
                study.sampler = build_sampler(
                    job,
                    bound,
                    worker=0,
                    plan_key=evaluator.plan_key,
                    instance=sampler if isinstance(sampler, BaseSampler) else None,
                )
                run_trials(study, evaluator, remaining, job, progress=progress)
            else:
                from netsculpt.search._workers import run_workers

                run_workers(
                    job,
                    model=model,
                    example_inputs=example_inputs,
                    task=task,
                    graph=graph,
                    workers=workers,
                    remaining=remaining,
                    study=study,
                    progress=progress,
                )
    study = optuna.load_study(study_name=name, storage=opened)
    return Front(study, model=model, task=task)


# --------------------------------------------------------------------------- pieces


class _Job:
    """Everything a worker process needs besides the model and the task."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    model_spec: str | None
    task_name: str | None
    storage: StorageSpec | None
    study_name: str
    objectives: tuple[str, ...]
    n_trials: int
    sampler: str
    predictor: Predictor | None
    seed: int | None
    backend: str
    measure_options: dict[str, Any]
    recover_budget: Any
    constraints: dict[str, float]
    space: SearchSpace
    timeout: float | None
    n_existing: int
    salt: int


def build_sampler(
    job: _Job,
    bound: BoundSpace,
    *,
    worker: int,
    plan_key: Any = None,
    instance: BaseSampler | None = None,
) -> BaseSampler:
    """The sampler of one process: seeded per worker and per resume, maybe screened.

    ``instance`` is a user's sampler, used as the base instead of one built by name.
    """
    seed = None
    if job.seed is not None:
        entropy = [job.seed, worker, job.n_existing, job.salt]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
    base = instance or make_sampler(
        job.sampler,
        seed=seed,
        n_constraints=len(job.constraints),
        population_size=population_size_for(job.n_trials),
    )
    if job.predictor is None:
        return base
    from netsculpt.search.objective import OBJECTIVES
    from netsculpt.search.samplers import CONSTRAINT_KEYS

    maximize = [OBJECTIVES[o] for o in job.objectives]
    limits = []  # constraints on objectives, as bounds on the minimised values
    for key, value in job.constraints.items():
        metric, _ = CONSTRAINT_KEYS[key]
        if metric in job.objectives:
            j = job.objectives.index(metric)
            limits.append((j, -value if maximize[j] else value))
    return ScreeningSampler(
        base,
        distributions=bound.distributions,
        encode=bound.encode,
        maximize=maximize,
        config=job.predictor,
        seed=seed,
        plan_key=plan_key,
        limits=limits,
    )


class _StopWhenDone:
    """Optuna callback: stop once the study holds ``n_trials`` done trials (all workers)."""

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if n_done(study.get_trials(deepcopy=False)) >= self.n_trials:
            study.stop()


def run_trials(
    study: optuna.Study,
    evaluator: Evaluator,
    share: int,
    job: _Job,
    *,
    progress: bool = False,
    callbacks: Sequence[Any] = (),
) -> None:
    """Optimise ``share`` trials in this process (stops early once the study is done)."""
    from netsculpt.search.progress import SearchProgress

    cbs = [_StopWhenDone(job.n_trials), *callbacks]
    display = SearchProgress(study, job.n_trials, enabled=progress)
    with display:
        cbs.append(display.callback)
        study.optimize(
            evaluator,
            n_trials=share,
            timeout=job.timeout,
            catch=(TrialFailed,),
            callbacks=cbs,
        )


def load_study(
    storage: str | os.PathLike[str] | BaseStorage | None, study_name: str
) -> optuna.Study:
    """Open an existing study; a missing one raises SearchError listing those stored."""
    opened = (
        storage
        if isinstance(storage, BaseStorage)
        else open_storage(resolve_storage(storage), heartbeat=False)
    )
    try:
        return optuna.load_study(study_name=study_name, storage=opened)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(opened)]
        raise SearchError(
            f"storage {_display(storage)!r} has no study {study_name!r}; stored studies: "
            f"{', '.join(names) or 'none'}"
        ) from None


def _display(storage: Any) -> str:
    if isinstance(storage, BaseStorage):
        return type(storage).__name__
    return resolve_storage(storage).display


def _open_study(
    storage: BaseStorage,
    name: str,
    objectives: tuple[str, ...],
    settings: dict[str, Any],
    extra: dict[str, Any],
) -> optuna.Study:
    """Create the study, or open it and check that its settings match.

    Settings are written one user attr at a time, ``objectives`` last: a worker that finds
    a study being created by another (``netsculpt:creating`` set, ``objectives`` not yet)
    waits for it.
    """
    from netsculpt.search.objective import OBJECTIVES

    directions = [
        optuna.study.StudyDirection.MAXIMIZE
        if OBJECTIVES[o]
        else optuna.study.StudyDirection.MINIMIZE
        for o in objectives
    ]
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        study = optuna.create_study(
            storage=storage, study_name=name, directions=directions, load_if_exists=True
        )
        if not study.user_attrs and not study.trials:
            import netsculpt

            study.set_user_attr(STUDY_ATTR + "creating", time.time())
            for key, value in {**settings, **extra}.items():
                if key != "objectives":
                    study.set_user_attr(STUDY_ATTR + key, value)
            study.set_user_attr(STUDY_ATTR + "version", netsculpt.__version__)
            study.set_user_attr(STUDY_ATTR + "objectives", settings["objectives"])
            return study
    study = optuna.load_study(study_name=name, storage=storage)
    stored = _wait_for_settings(study)
    if STUDY_ATTR + "objectives" not in stored:
        raise StudyMismatchError(
            f"study {name!r} exists in this storage but was not created by netsculpt "
            f"(directions {[d.name.lower() for d in study.directions]}); pick another "
            f"study_name"
        )
    diffs = []
    for key in _MUST_MATCH:
        old = stored.get(STUDY_ATTR + key)
        if _canon(old) != _canon(settings[key]):
            diffs.append(f"{key}: stored {old!r}, now {settings[key]!r}")
    if diffs:
        raise StudyMismatchError(
            f"study {name!r} exists with other settings ({'; '.join(diffs)}); resume it "
            f"with the same settings, or pass another study_name to start a new study"
        )
    return study


def _wait_for_settings(study: optuna.Study, timeout: float = 30.0) -> dict[str, Any]:
    """The study's user attrs, once another worker has finished writing the settings."""
    deadline = time.monotonic() + timeout
    grace = time.monotonic() + 2.0  # an empty study may be one created a moment ago
    while True:
        stored = study.user_attrs
        if STUDY_ATTR + "objectives" in stored:
            return stored
        creating = STUDY_ATTR + "creating" in stored
        empty = not stored and not study.trials
        now = time.monotonic()
        if now > deadline or not (creating or (empty and now < grace)):
            return stored
        time.sleep(0.2)


def _machine_salt(spec: Any) -> int:
    """0, except on a database server shared by machines: there each process must draw
    its own trials, so its host and process id join the seed."""
    if isinstance(spec, StorageSpec) and spec.kind == "rdb" and not spec.url.startswith("sqlite"):
        import socket
        import zlib

        return zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())
    return 0


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "steps") and hasattr(value, "seconds"):  # a recovery Budget
        return {"steps": value.steps, "seconds": value.seconds}
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def _predictor(value: bool | Predictor | None) -> Predictor | None:
    if value is None or value is False:
        return None
    if value is True:
        return Predictor()
    if isinstance(value, Predictor):
        return value
    raise InputError(f"predictor must be True, False or a netsculpt Predictor(...), got {value!r}")


def _check_importance(evaluator: Evaluator) -> None:
    """Fail fast on an importance name ``ns.plan`` does not know (instead of every trial)."""
    from optuna.distributions import FloatDistribution

    from netsculpt.errors import InputError as _InputError

    bound = evaluator.bound
    for criterion in bound.space.importance:
        params: dict[str, Any] = {
            k: d.low if isinstance(d, FloatDistribution) else d.choices[0]  # type: ignore[attr-defined]
            for k, d in bound.distributions.items()
        }
        params["importance"] = criterion
        try:
            bound.to_plan(
                evaluator.model,
                evaluator.example_inputs,
                params,
                graph=evaluator.graph,
                calib=evaluator._calib_batches(params),
            )
        except _InputError:
            raise
        except Exception:  # noqa: BLE001, S110 -- other failures are recorded per trial
            pass


@contextlib.contextmanager
def _gc_frozen() -> Iterator[None]:
    """Move the objects alive now out of the collector's sight for the search.

    Latency measurements collect garbage before timing; with torch's compiler stack
    imported, a full collection walks millions of objects (~0.5 s). Frozen objects are not
    walked, and are handed back to the collector when the search ends.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class _NoTracebackForFailedTrials(logging.Filter):
    """Optuna logs a trial that failed in the task with its traceback; the reason is enough
    (it names the exception and where it was raised, and is kept as ``fail_reason``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TrialFailed):
            record.exc_info = None
            record.exc_text = None
        return True


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Hide Optuna's per-trial INFO lines (the progress display shows them); keep warnings."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    logger = logging.getLogger("optuna")
    quiet = _NoTracebackForFailedTrials()
    logger.addFilter(quiet)
    for handler in logger.handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)
        logger.removeFilter(quiet)
        for handler in logger.handlers:
            handler.removeFilter(quiet)


def finished_numbers(study: optuna.Study) -> list[int]:
    """Numbers of the COMPLETE trials of ``study`` (used by tests and the CLI)."""
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
