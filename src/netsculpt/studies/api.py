"""``ns.search``: the Pareto front of sub-networks of a model, by an Optuna study.

>>> import netsculpt as ns
>>> task = ns.get_task("digits")                                          # doctest: +SKIP
>>> model = task.pretrained_model()                                       # doctest: +SKIP
>>> front = ns.search(model, task.example_inputs(), task=task, n_trials=60)  # doctest: +SKIP
>>> front.pick(max_latency_ms=0.5).model                                  # doctest: +SKIP

The study is a plain Optuna study (``optuna-dashboard sqlite:///netsculpt.db`` opens it);
running the same call again resumes it: finished trials are kept, trials cut off by a
crash or ``kill -9`` are evaluated again, and the search stops once ``n_trials`` trials
are done. The default study name and the space signature depend only on the model's
graph, never on the process (hash seeds included), so a rerun in a new process resumes.

Every argument is checked before a study is opened (``_arguments``); the study's settings
are written once, as one JSON user attr, by the process that creates it, and are checked
whenever a study is resumed or read (``_settings``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from torch import nn

from netsculpt._checks import check_finite_inputs, check_finite_weights, check_model
from netsculpt._inputs import ExampleInputs
from netsculpt.errors import InputError, NetsculptError, SearchError, StudyMismatchError
from netsculpt.studies._arguments import check_search_arguments
from netsculpt.studies._resume import n_done, recover_interrupted, trials_of
from netsculpt.studies._settings import (
    BASELINE_ATTR,
    SETTINGS_ATTR,
    STUDY_ATTR,
    check_baseline,
    read_settings,
    settings_json,
    user_attrs,
)
from netsculpt.studies.front import Front
from netsculpt.studies.objective import Evaluator, TrialFailed
from netsculpt.studies.predictor import Predictor, ScreeningSampler
from netsculpt.studies.samplers import SeededPerProcess, make_sampler, population_size_for
from netsculpt.studies.space import BoundSpace, SearchSpace, build_space
from netsculpt.studies.storage import StorageSpec, open_storage, resolve_storage

__all__ = ["Job", "default_study_name", "load_study", "search"]

#: study settings that must match when a study is resumed
_MUST_MATCH = ("objectives", "signature", "space", "backend", "constraints", "recover_budget")
#: how long a process waits for the creator of a study to write its settings
_SETTINGS_WAIT_S = 10.0


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
            ``"minilm"``); a string lets worker processes rebuild it. The string is stored
            in the study, where it is data: ``Front.load`` runs a stored factory string
            only with ``trust_code=True`` and a stored file path never.
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
            optimises a share of the remaining trials. Jobs reach them through the
            process pipe (nothing is written to disk), and they die with this process.
        space: the :class:`SearchSpace` (keep-ratio tying, ranges, importance criteria,
            ``round_to`` choices, block removal); None for the defaults.
        constraints: limits the samplers aim for, any of ``max_latency_ms``,
            ``max_latency_p90_ms``, ``max_params``, ``max_macs``, ``min_score``; trials
            that break them stay in the study but are not on the front.
        predictor: True (or a :class:`Predictor`) to screen candidates with a surrogate
            trained on finished trials, evaluating only the most promising one per trial.
        backend: the latency backend of ``ns.measure`` (``"torch"`` or ``"onnxruntime"``).
        seed: seeds the sampler; each process gets its own stream from the seed, its
            worker index and the number of its first trial, so processes sharing a study
            never draw the same candidates in lockstep (a plan another process is
            evaluating is waited for, not evaluated twice); None for no seed.
        recover_budget: when set (steps as an int, a time such as ``"30s"``, or a
            ``Budget``), each sub-network is recovered with
            ``task.finetune(small, teacher=model, budget=recover_budget)`` before scoring.
        timeout: stop starting new trials after this many seconds (per worker).
        progress: show a live display (trials done, front size, best score per latency
            band).
        measure_options: options of ``ns.measure`` in the loop (default
            ``{"warmup": 5, "repeats": 30, "memory": False}``).

    Returns:
        The :class:`Front` of the study.

    Every argument is checked before anything runs (no study is created, no model is
    scored or timed until all of them pass).

    Raises:
        InputError: an argument of the wrong type or out of range (the message names it,
            the value and the fix), a meta-device model, NaN weights or inputs.
        UnknownNameError: an unknown sampler, objective, constraint, importance criterion,
            latency backend, measure option or task.
        FactoryError: a model or task string that does not import or build.
        StorageError: the storage cannot be opened (the message names it and the fix).
        StudyMismatchError: ``study_name`` exists with other objectives or settings, or
            with stored settings netsculpt did not write.
        NothingToPruneError: the model has nothing to search over.
    """
    checked = check_search_arguments(
        model=model,
        example_inputs=example_inputs,
        task=task,
        n_trials=n_trials,
        objectives=objectives,
        storage=storage,
        study_name=study_name,
        sampler=sampler,
        workers=workers,
        space=space,
        constraints=constraints,
        predictor=predictor,
        backend=backend,
        seed=seed,
        recover_budget=recover_budget,
        timeout=timeout,
        progress=progress,
        measure_options=measure_options,
    )
    objectives, space, limits, screening, options = checked

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
    # strings here are the caller's own (typed): they may name code to import
    model_spec = model.strip() if isinstance(model, str) else None
    task_name = task if isinstance(task, str) else None
    if isinstance(task, str):
        from netsculpt.tasks.registry import get_task

        task = get_task(task)
    if isinstance(model, str):
        from netsculpt.studies._specs import resolve_model

        model, spec_inputs = resolve_model(model)
        check_model(model, what=f"the model built by {model_spec!r}")
        check_finite_weights(model, what=f"the model built by {model_spec!r}")
        example_inputs = example_inputs if example_inputs is not None else spec_inputs
    if example_inputs is None:
        example_inputs = task.example_inputs()
    check_finite_inputs(example_inputs)

    from netsculpt.graph.analysis import analyze

    graph = analyze(model, example_inputs)
    bound = build_space(graph, space)
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
    _check_importance(evaluator)  # before a study is created
    spec = (
        storage if isinstance(storage, BaseStorage) else resolve_storage(storage, workers=workers)
    )
    opened = spec if isinstance(spec, BaseStorage) else open_storage(spec)
    name = study_name or default_study_name(model, bound)
    import netsculpt

    settings = {
        "objectives": list(objectives),
        "signature": bound.signature,
        "space": space.to_dict(),
        "backend": backend,
        "constraints": limits,
        "recover_budget": _jsonable(recover_budget),
        "model_spec": model_spec,
        "task": task_name or _task_label(task),
        "version": netsculpt.__version__,
    }
    with _quiet_optuna():
        try:
            study = _open_study(opened, name, objectives, settings)
        except NetsculptError:
            raise
        except Exception as exc:  # noqa: BLE001 -- a damaged or hostile storage: say so
            raise StudyMismatchError(
                f"study {name!r} cannot be opened in this storage ({type(exc).__name__}: "
                f"{str(exc)[:200]}); the storage was damaged or not written by Optuna: pass "
                f"another study_name or storage"
            ) from exc

    with _quiet_optuna():
        recover_interrupted(study)
        if user_attrs(study).get(BASELINE_ATTR) is None:
            study.set_user_attr(BASELINE_ATTR, evaluator.baseline())
        done = n_done(trials_of(study))
        remaining = n_trials - done
        if remaining > 0:
            job = Job(
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
                signature=bound.signature,
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
                from netsculpt.studies._workers import run_workers

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
    return Front(study, model=model, task=task, example_inputs=example_inputs)


def default_study_name(model: nn.Module, bound: BoundSpace) -> str:
    """``netsculpt-<model class>-<space signature>``: the same in every process and run."""
    return f"netsculpt-{type(model).__name__.lower()}-{bound.signature[:8]}"


# --------------------------------------------------------------------------- pieces


@dataclass(frozen=True, kw_only=True)
class Job:
    """Everything a worker process needs besides the model and the task, as plain values
    that travel as JSON (:meth:`to_json`, :meth:`from_json`)."""

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
    signature: str

    def to_json(self) -> str:
        """The job as JSON text; a value that is not JSON raises SearchError naming it."""
        data = {
            **{k: getattr(self, k) for k in self.__dataclass_fields__},
            "objectives": list(self.objectives),
            "storage": None if self.storage is None else asdict(self.storage),
            "predictor": None if self.predictor is None else asdict(self.predictor),
            "space": self.space.to_dict(),
            "recover_budget": _budget_json(self.recover_budget),
        }
        try:
            return json.dumps(data, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SearchError(
                f"the search settings cannot be sent to worker processes ({exc}); pass plain "
                f"numbers, strings and booleans in measure_options and recover_budget, or use "
                f"workers=1"
            ) from None

    @classmethod
    def from_json(cls, text: str) -> Job:
        """The job written by :meth:`to_json` (in the parent process of this worker)."""
        data = json.loads(text)
        storage = data["storage"]
        predictor = data["predictor"]
        return cls(
            **{
                **data,
                "objectives": tuple(data["objectives"]),
                "storage": None if storage is None else StorageSpec(**storage),
                "predictor": None if predictor is None else Predictor(**predictor),
                "space": SearchSpace.from_dict(data["space"]),
                "recover_budget": _budget_value(data["recover_budget"]),
            }
        )


def _budget_json(value: Any) -> Any:
    if hasattr(value, "steps") and hasattr(value, "seconds"):  # a recovery Budget
        return {"budget": {"steps": value.steps, "seconds": value.seconds}}
    return value


def _budget_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"budget"}:
        from netsculpt.recovery.budget import Budget

        return Budget(**value["budget"])
    return value


def build_sampler(
    job: Job,
    bound: BoundSpace,
    *,
    worker: int,
    plan_key: Any = None,
    instance: BaseSampler | None = None,
) -> BaseSampler:
    """The sampler of one process: seeded per worker and per first trial, maybe screened.

    The seed joins the user's ``seed``, the worker index and the number of the first trial
    this process gets (:class:`SeededPerProcess`), so processes sharing one study never
    draw the same candidates in lockstep. ``instance`` is a user's sampler, used as the
    base instead of one built by name (and not reseeded).
    """
    if instance is not None and job.predictor is None:
        return instance

    def build(seed: int | None) -> BaseSampler:
        base = instance or make_sampler(
            job.sampler,
            seed=seed,
            n_constraints=len(job.constraints),
            population_size=population_size_for(job.n_trials),
        )
        if job.predictor is None:
            return base
        from netsculpt.studies.objective import OBJECTIVES
        from netsculpt.studies.samplers import CONSTRAINT_KEYS

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

    return SeededPerProcess(build, seed=job.seed, worker=worker)


class _StopWhenDone:
    """Optuna callback: stop once the study holds ``n_trials`` done trials (all workers)."""

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if n_done(study.get_trials(deepcopy=False)) >= self.n_trials:
            study.stop()


class _RecoverDeadTrials:
    """Optuna callback: after a trial, fail and queue again the RUNNING trials of processes
    on this machine that died (every few seconds at most), so a trial cut off while this
    process runs is retried now, not at the next start."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self._last = time.monotonic()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            recover_interrupted(study)


def run_trials(
    study: optuna.Study,
    evaluator: Evaluator,
    share: int,
    job: Job,
    *,
    progress: bool = False,
    callbacks: Sequence[Any] = (),
) -> None:
    """Optimise ``share`` trials in this process (stops early once the study is done)."""
    from netsculpt.studies.progress import SearchProgress

    cbs = [_StopWhenDone(job.n_trials), _RecoverDeadTrials(), *callbacks]
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
    if storage is not None and not isinstance(storage, (str, os.PathLike, BaseStorage)):
        raise InputError(
            f"storage must be None, a URL or path string, or an optuna storage, got "
            f"{type(storage).__name__}; e.g. storage='sqlite:///netsculpt.db'"
        )
    if not isinstance(study_name, str) or not study_name:
        raise InputError(f"study_name must be a non-empty string, got {study_name!r}")
    opened = (
        storage
        if isinstance(storage, BaseStorage)
        else open_storage(resolve_storage(storage), heartbeat=False)
    )
    try:
        return optuna.load_study(study_name=study_name, storage=opened)
    except KeyError:
        pass
    except Exception as exc:  # noqa: BLE001 -- a damaged or hostile storage: say so
        raise SearchError(
            f"study {study_name!r} in storage {_display(storage)!r} cannot be read "
            f"({type(exc).__name__}); the storage was damaged or not written by Optuna"
        ) from None
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(opened)]
    except Exception:  # noqa: BLE001 -- listing is only a hint
        names = []
    raise SearchError(
        f"storage {_display(storage)!r} has no study {study_name!r}; stored studies: "
        f"{', '.join(sorted(map(str, names))[:20]) or 'none'}"
    )


def _display(storage: Any) -> str:
    if isinstance(storage, BaseStorage):
        return type(storage).__name__
    return resolve_storage(storage).display


def _open_study(
    storage: BaseStorage,
    name: str,
    objectives: tuple[str, ...],
    settings: dict[str, Any],
) -> optuna.Study:
    """Create the study, or open it and check that its settings match.

    Creation is atomic (the storage refuses a second study of the same name), and the
    creator writes every setting in one user attr, so a process that finds the study
    either sees all of its settings or none; with none it waits for the creator, and
    takes over an empty study whose creator died.
    """
    from netsculpt.studies.objective import OBJECTIVES

    directions = [
        optuna.study.StudyDirection.MAXIMIZE
        if OBJECTIVES[o]
        else optuna.study.StudyDirection.MINIMIZE
        for o in objectives
    ]
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        try:
            study = optuna.create_study(storage=storage, study_name=name, directions=directions)
        except optuna.exceptions.DuplicatedStudyError:
            pass  # another process created it a moment ago: check its settings below
        else:
            study.set_user_attr(SETTINGS_ATTR, settings_json(settings))
            return study
    study = optuna.load_study(study_name=name, storage=storage)
    stored = _wait_for_settings(study)
    if stored is None:
        attrs = user_attrs(study)
        if trials_of(study) or any(not k.startswith(STUDY_ATTR) for k in attrs):
            raise StudyMismatchError(
                f"study {name!r} exists in this storage but was not created by netsculpt "
                f"(directions {[d.name.lower() for d in study.directions]}); pick another "
                f"study_name"
            )
        stored = _adopt(study, directions, settings)
    diffs = []
    for key in _MUST_MATCH:
        if _canon(stored[key]) != _canon(settings[key]):
            diffs.append(f"{key}: stored {stored[key]!r}, now {settings[key]!r}")
    if list(study.directions) != directions and not diffs:
        diffs.append(f"directions: stored {[d.name.lower() for d in study.directions]}")
    if diffs:
        raise StudyMismatchError(
            f"study {name!r} exists with other settings ({'; '.join(diffs)}); resume it "
            f"with the same settings, or pass another study_name to start a new study"
        )
    try:
        check_baseline(name, user_attrs(study).get(BASELINE_ATTR))
    except SearchError as exc:
        raise StudyMismatchError(str(exc)) from None
    return study


def _adopt(study: optuna.Study, directions: list[Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Take over an empty study that holds no settings (its creator died before writing
    them): write ours, then read back what the storage kept (another process may have
    written its own at the same moment)."""
    if list(study.directions) != directions:
        raise StudyMismatchError(
            f"study {study.study_name!r} exists with directions "
            f"{[d.name.lower() for d in study.directions]} and no netsculpt settings; pick "
            f"another study_name"
        )
    study.set_user_attr(SETTINGS_ATTR, settings_json(settings))
    time.sleep(0.2)
    stored = _checked_settings(study)
    if stored is None:
        raise StudyMismatchError(f"study {study.study_name!r} lost its settings; try again")
    return stored


def _checked_settings(study: optuna.Study) -> dict[str, Any] | None:
    try:
        return read_settings(study.study_name, user_attrs(study))
    except StudyMismatchError:
        raise
    except SearchError as exc:
        raise StudyMismatchError(str(exc)) from None


def _wait_for_settings(study: optuna.Study) -> dict[str, Any] | None:
    """The study's checked settings, once its creator has written them; None for a study
    that has none (after a short wait when it is empty, as one created a moment ago is)."""
    deadline = time.monotonic() + _SETTINGS_WAIT_S
    while True:
        stored = _checked_settings(study)
        if stored is not None:
            return stored
        attrs = user_attrs(study)
        empty = not trials_of(study) and all(k.startswith(STUDY_ATTR) for k in attrs)
        if not empty or time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "steps") and hasattr(value, "seconds"):  # a recovery Budget
        return {"steps": value.steps, "seconds": value.seconds}
    return value


def _task_label(task: Any) -> str | None:
    name = getattr(task, "name", None)
    return name if isinstance(name, str) and name else None


def _check_importance(evaluator: Evaluator) -> None:
    """Fail fast on an importance name ``ns.plan`` does not know (instead of every trial)."""
    from optuna.distributions import FloatDistribution

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
        except InputError:
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
