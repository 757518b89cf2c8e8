"""Running trials in one process: the job a process gets, its sampler and its Optuna loop.

The parent process (``ns.search``) and every worker process (``_workers``) run trials the
same way, from one typed value: a :class:`Job` holds the :class:`StudyConfig` of the study
plus what a process needs to reopen it (storage, study name, model and task names, the
space signature, the predictor settings), and travels to workers as JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.samplers import BaseSampler

from netsculpt.errors import SearchError
from netsculpt.studies._resume import n_done, recover_interrupted
from netsculpt.studies.config import StudyConfig
from netsculpt.studies.objective import OBJECTIVES, Evaluator, TrialFailed
from netsculpt.studies.predictor import Predictor, ScreeningSampler
from netsculpt.studies.samplers import (
    CONSTRAINT_KEYS,
    SeededPerProcess,
    make_sampler,
    population_size_for,
)
from netsculpt.studies.space import BoundSpace
from netsculpt.studies.storage import StorageSpec

__all__ = ["Job", "build_sampler", "process_evaluator", "quiet_optuna", "run_trials"]


@dataclass(frozen=True, kw_only=True)
class Job:
    """What a process needs to run trials of a study besides the model and the task.

    Attributes:
        config: the study's settings (the one :class:`StudyConfig` of the search).
        predictor: the screening settings when ``config.predictor`` is on (the caller's
            :class:`Predictor`, or the defaults), else None.
        study_name: the study.
        storage: how to reopen the storage; None when the caller passed a storage object
            (only the parent process runs trials then).
        model_spec: the model name or factory string the caller typed, or None.
        task_name: the task name the caller typed, or None.
        signature: the space signature every process must find on its model.
        kind: ``"prune"`` (trials are plans applied to the model) or ``"supernet"`` (slices
            of a trained super-network, which workers rebuild from its saved files).
    """

    config: StudyConfig
    predictor: Predictor | None
    study_name: str
    storage: StorageSpec | None
    model_spec: str | None
    task_name: str | None
    signature: str
    kind: str = "prune"

    def to_json(self) -> str:
        """The job as JSON text (what a worker process receives)."""
        return json.dumps(
            {
                "config": self.config.to_dict(),
                "predictor": None if self.predictor is None else asdict(self.predictor),
                "study_name": self.study_name,
                "storage": None if self.storage is None else asdict(self.storage),
                "model_spec": self.model_spec,
                "task_name": self.task_name,
                "signature": self.signature,
                "kind": self.kind,
            },
            sort_keys=True,
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str) -> Job:
        """The job :meth:`to_json` wrote (in the parent process of this worker)."""
        data = json.loads(text)
        storage, predictor = data["storage"], data["predictor"]
        return cls(
            config=StudyConfig.from_dict(data["config"]),
            predictor=None if predictor is None else Predictor(**predictor),
            study_name=data["study_name"],
            storage=None if storage is None else StorageSpec(**storage),
            model_spec=data["model_spec"],
            task_name=data["task_name"],
            signature=data["signature"],
            kind=data.get("kind", "prune"),
        )


def process_evaluator(
    config: StudyConfig,
    model: Any,
    example_inputs: Any,
    task: Any,
    bound: Any,
    graph: Any,
) -> Evaluator:
    """The objective of one process, from the study's config: an :class:`Evaluator` over
    ``bound`` (a ``BoundSpace``), or a ``SupernetEvaluator`` over a ``SupernetSpace``."""
    from netsculpt.studies._supernet import SupernetEvaluator, SupernetSpace

    if isinstance(bound, SupernetSpace):
        return SupernetEvaluator(
            model=model,
            example_inputs=example_inputs,
            task=task,
            bound=bound,  # type: ignore[arg-type]
            objectives=config.objectives,
            backend=config.backend,
            measure_options=dict(config.measure_options),
            constraints=dict(config.constraints),
            test_scores=config.test_scores,
            bn_calib_batches=config.bn_calib_batches,
        )
    return Evaluator(
        model=model,
        example_inputs=example_inputs,
        task=task,
        bound=bound,
        objectives=config.objectives,
        backend=config.backend,
        measure_options=dict(config.measure_options),
        recover_budget=config.recover_budget,
        recover=config.recover,
        constraints=dict(config.constraints),
        graph=graph,
        test_scores=config.test_scores,
    )


def build_sampler(
    job: Job,
    bound: BoundSpace,
    *,
    worker: int,
    plan_key: Any = None,
    instance: BaseSampler | None = None,
) -> BaseSampler:
    """The sampler of one process: seeded per worker and per first trial, maybe screened.

    The seed joins the config's ``seed``, the worker index and the number of the first
    trial this process gets (:class:`SeededPerProcess`), so processes sharing one study
    never draw the same candidates in lockstep. ``instance`` is a user's sampler, used as
    the base instead of one built by name (and not reseeded).
    """
    config = job.config
    if instance is not None and job.predictor is None:
        return instance

    def build(seed: int | None) -> BaseSampler:
        base = instance or make_sampler(
            config.sampler,
            seed=seed,
            n_constraints=len(config.constraints),
            population_size=population_size_for(config.n_trials),
        )
        if job.predictor is None:
            return base
        maximize = [OBJECTIVES[o] for o in config.objectives]
        limits = []  # constraints on objectives, as bounds on the minimised values
        for key, value in config.constraints.items():
            metric, _ = CONSTRAINT_KEYS[key]
            if metric in config.objectives:
                j = config.objectives.index(metric)
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

    return SeededPerProcess(build, seed=config.seed, worker=worker)


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

    n_trials = job.config.n_trials
    cbs = [_StopWhenDone(n_trials), _RecoverDeadTrials(), *callbacks]
    display = SearchProgress(study, n_trials, enabled=progress)
    with display:
        cbs.append(display.callback)
        study.optimize(
            evaluator,
            n_trials=share,
            timeout=job.config.timeout,
            catch=(TrialFailed,),
            callbacks=cbs,
        )


class _NoTracebackForFailedTrials(logging.Filter):
    """Optuna logs a trial that failed in the task with its traceback; the reason is enough
    (it names the exception and where it was raised, and is kept as ``fail_reason``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TrialFailed):
            record.exc_info = None
            record.exc_text = None
        return True


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
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


def check_job_json(job: Job) -> str:
    """:meth:`Job.to_json`, or SearchError naming what cannot be sent to workers."""
    try:
        return job.to_json()
    except (TypeError, ValueError) as exc:
        raise SearchError(
            f"the search settings cannot be sent to worker processes ({exc}); use workers=1"
        ) from None
