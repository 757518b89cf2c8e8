"""``ns.search``: the Pareto front of sub-networks of a model, by an Optuna study.

>>> import netsculpt as ns
>>> from netsculpt.studies import StudyConfig
>>> task = ns.get_task("digits")                                           # doctest: +SKIP
>>> model = task.pretrained_model()                                        # doctest: +SKIP
>>> front = ns.search(model, task.example_inputs(), task=task, n_trials=60)  # doctest: +SKIP
>>> front.pick(max_latency_ms=0.5).model                                   # doctest: +SKIP
>>> config = StudyConfig(n_trials=200, constraints={"max_latency_ms": 0.5})
>>> front = ns.search(model, task=task, config=config)                     # doctest: +SKIP

The study is a plain Optuna study (``optuna-dashboard sqlite:///netsculpt.db`` opens it);
running the same call again resumes it: finished trials are kept, trials cut off by a
crash or ``kill -9`` are evaluated again, and the search stops once ``n_trials`` trials
are done. The default study name and the space signature depend only on the model's
graph, never on the process (hash seeds included), so a rerun in a new process resumes.

The options travel as one value, a :class:`~netsculpt.studies.StudyConfig`: checked when
it is built, written once into the study (``_settings``) by the process that creates it,
read back (and checked) by every resumed run, by each worker process (inside a ``Job``)
and by :meth:`netsculpt.Front.load`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from torch import nn

from netsculpt._checks import check_finite_inputs, check_finite_weights, check_model
from netsculpt._inputs import ExampleInputs
from netsculpt.errors import InputError, NetsculptError, StudyMismatchError
from netsculpt.studies._arguments import check_registered_names, check_search_arguments
from netsculpt.studies._open import open_study, stored_config
from netsculpt.studies._resume import n_done, recover_interrupted, trials_of
from netsculpt.studies._run import (
    Job,
    build_sampler,
    process_evaluator,
    quiet_optuna,
    run_trials,
)
from netsculpt.studies._settings import (
    BASELINE_ATTR,
    PRUNE,
    SUPERNET,
    study_settings,
    user_attrs,
)
from netsculpt.studies._supernet import (
    SupernetSpace,
    check_supernet_config,
    is_supernet,
    supernet_files,
    supernet_study_name,
)
from netsculpt.studies.config import StudyConfig
from netsculpt.studies.front import Front
from netsculpt.studies.objective import Evaluator
from netsculpt.studies.predictor import Predictor
from netsculpt.studies.space import BoundSpace, build_space
from netsculpt.studies.storage import load_study, open_storage, resolve_storage

__all__ = ["default_study_name", "finished_numbers", "load_study", "search"]


def search(
    model: nn.Module | str,
    example_inputs: ExampleInputs | None = None,
    *,
    task: Any,
    config: StudyConfig | None = None,
    n_trials: int | None = None,
    storage: str | os.PathLike[str] | BaseStorage | None = None,
    study_name: str | None = None,
    sampler: str | BaseSampler | None = None,
    predictor: bool | Predictor | None = None,
    progress: bool = True,
) -> Front:
    """Search the sub-networks of ``model`` for the Pareto front of the config's objectives.

    By default each trial is **recovered before it is scored**: when the task has training
    data, the pruned sub-network is distilled from ``model`` for 30 steps
    (``StudyConfig.recover_budget=30``; ``DistillConfig()``: batch 64, AdamW at lr 1e-3,
    unless the task's ``recovery_config`` or ``StudyConfig.recover`` says otherwise). That
    costs 30 forward passes of the dense model and 30 forward and backward passes of the
    sub-network per trial: for the digits CNN on one CPU core about 0.5 s, which took a
    search trial from 0.3 s to 0.8 s; for larger models it is usually more than scoring
    and timing the trial. Unrecovered scores say how little a cut damaged the model, not
    what the sub-network can do: in a 12-trial digits search the front scored 0.17-0.40
    unrecovered and 0.81-0.99 recovered (dense: 0.986). Pass
    ``config=StudyConfig(recover_budget=None)`` to score trials as pruned (faster, and what
    a task without training data always gets).

    **A trained super-network** (an :class:`~netsculpt.Supernet` from ``ns.elastic``,
    trained with ``ns.train_supernet`` or loaded with ``ns.load_supernet``) is searched
    without retraining: each trial picks one value per choice of ``supernet.space`` (Optuna
    categorical parameters named after the choices; depth choices ``True``/``False``), and
    its sub-network is ``supernet.extract(arch, calib=task.calib_batches(n))``, the
    batch-norm statistics recomputed on ``n = config.bn_calib_batches`` (16) training
    batches when the model has batch norm. It is then scored, timed, cached, screened by
    the predictor (features: the arch's values, widths over their largest option) and
    stored like any trial; the baseline is the largest sub-network, recalibrated the same
    way. Recovery does not apply: the default ``recover_budget`` is dropped (stored as
    None), another budget or a ``recover`` recipe is refused, and so is a ``config.space``
    other than the default (the space is ``supernet.space``). The study records that it is
    a super-network study (``kind``, the ``ElasticConfig``, the space signature), resuming
    it with another super-network space raises :class:`StudyMismatchError`, and
    ``Front.load(storage, name, model=supernet)`` rebuilds its trials. A slice costs no
    training: on the tests' small CNN a trial took about 0.1 s.

    Args:
        model: the trained model, or a ``"package.module:factory"`` string (a function
            returning ``(model, example_inputs)``) or a built-in name (``"digits"``,
            ``"minilm"``); a string lets worker processes rebuild it. Or a trained
            :class:`~netsculpt.Supernet` (see above; worker processes load it from the
            files ``ns.save_supernet`` writes, sent to them as bytes). The string is stored
            in the study, where it is data: ``Front.load`` runs a stored factory string
            only with ``trust_code=True`` and a stored file path never.
        example_inputs: the batch the model is called with (latency is measured on it);
            None takes it from the factory (a super-network: the inputs it was made with)
            or ``task.example_inputs()``.
        task: an ``ns.Task`` (or a registered task name) that scores a model, higher is
            better; the search reads its validation score. Its ``calib_batches`` feed any
            importance criterion that declares ``needs_calib`` (built-in or registered),
            and its training data the recovery of each trial.
        config: the :class:`~netsculpt.studies.StudyConfig`: objectives, number of trials,
            sampler name, workers, search space, constraints, latency backend, seed,
            recovery budget and recipe, timeout, measure options. None takes the config
            stored in the study when ``study_name`` exists already (so a rerun resumes with
            the stored settings), else ``StudyConfig()``.
        n_trials: replaces ``config.n_trials``: the number of trials the study should hold
            once done (finished trials of an earlier run of the same study count; failed
            evaluations count too).
        storage: None for ``sqlite:///netsculpt.db`` in the working folder (a journal file
            ``netsculpt.journal`` when ``config.workers > 1``), an RDB URL such as
            ``postgresql://user:pw@host/db`` (workers on many machines each run the same
            call), a journal file path, or an Optuna storage object.
        study_name: the study; None derives a stable name from the model class and graph,
            so running the same call again resumes.
        sampler: an Optuna sampler instance (used as given, with one worker), or a name
            replacing ``config.sampler`` (``"nsga2"``, ``"tpe"``, ``"random"``).
        predictor: a :class:`~netsculpt.studies.Predictor` with the surrogate's settings
            (turns ``config.predictor`` on), or a bool replacing ``config.predictor``.
        progress: show a live display (trials done, front size, best score per latency
            band).

    Worker processes (``config.workers > 1``) are spawned, so a script calling
    ``ns.search`` with workers needs the ``if __name__ == "__main__":`` guard; each
    optimises a share of the remaining trials, gets the config through its process pipe
    (nothing is written to disk) and dies with this process. Each process draws its
    sampler seed from ``config.seed``, its worker index and the number of its first trial,
    so processes sharing a study never draw the same candidates in lockstep (a plan another
    process is evaluating is waited for, not evaluated twice).

    Returns:
        The :class:`Front` of the study (its ``config`` is the study's config).

    Every argument is checked before anything runs (no study is created, no model is
    scored or timed until all of them pass); a bad config field is refused when the
    :class:`StudyConfig` is built.

    Raises:
        InputError: an argument of the wrong type or out of range (the message names it,
            the value and the fix), a meta-device model, NaN weights or inputs.
        UnknownNameError: an unknown sampler, objective, constraint, importance criterion,
            latency backend, measure option or task.
        FactoryError: a model or task string that does not import or build.
        StorageError: the storage cannot be opened (the message names it and the fix).
        StudyMismatchError: ``study_name`` exists with another config (objectives, space,
            backend, constraints, recovery) or another model (or super-network space, or
            kind of study), or with stored settings netsculpt did not write.
        NothingToPruneError: the model has nothing to search over.
    """
    overrides, instance, runtime_predictor = check_search_arguments(
        model=model,
        example_inputs=example_inputs,
        task=task,
        config=config,
        n_trials=n_trials,
        storage=storage,
        study_name=study_name,
        sampler=sampler,
        predictor=predictor,
        progress=progress,
    )
    with _gc_frozen():
        return _search(
            model,
            example_inputs,
            task=task,
            config=config,
            overrides=overrides,
            storage=storage,
            study_name=study_name,
            instance=instance,
            runtime_predictor=runtime_predictor,
            progress=progress,
        )


def _search(
    model: nn.Module | str,
    example_inputs: ExampleInputs | None,
    *,
    task: Any,
    config: StudyConfig | None,
    overrides: dict[str, Any],
    storage: str | os.PathLike[str] | BaseStorage | None,
    study_name: str | None,
    instance: BaseSampler | None,
    runtime_predictor: Predictor | None,
    progress: bool,
) -> Front:
    effective = dataclasses.replace(config or StudyConfig(), **overrides)
    if is_supernet(model):
        effective = check_supernet_config(effective)
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
    supernet = is_supernet(model)
    if example_inputs is None:
        own: Any = model.example_inputs if supernet else None  # the inputs it was made with
        example_inputs = own if own is not None else task.example_inputs()
    assert example_inputs is not None
    check_finite_inputs(example_inputs)

    bound: Any
    files = None  # a super-network as worker processes get it
    if supernet:
        graph = None
        bound = SupernetSpace.of(model, effective.space)
        name = study_name or supernet_study_name(model, bound.signature)
        if effective.workers > 1:
            files = supernet_files(model)
    else:
        from netsculpt.graph.analysis import analyze

        graph = analyze(model, example_inputs)
        bound = build_space(graph, effective.space)
        name = study_name or default_study_name(model, bound)
        _check_importance(_evaluator(effective, model, example_inputs, task, bound, graph))
    spec = (
        storage
        if isinstance(storage, BaseStorage)
        else resolve_storage(storage, workers=effective.workers)
    )
    opened = spec if isinstance(spec, BaseStorage) else open_storage(spec)
    if config is None:  # resume with the config the study stores, if it exists
        stored = _stored_config(opened, name)
        if stored is not None and stored != effective:
            effective = dataclasses.replace(stored, **overrides)
            check_registered_names(effective, sampler=instance, storage=storage)
            if supernet:  # a stored pruning config is refused by open_study below
                effective = dataclasses.replace(effective, recover_budget=None, recover=None)
            elif effective.space != bound.space:
                bound = build_space(graph, effective.space)
    evaluator = _evaluator(effective, model, example_inputs, task, bound, graph)

    from netsculpt.recovery.recipe import has_training_data

    settings = study_settings(
        effective,
        signature=bound.signature,
        model_spec=model_spec,
        task=task_name or _task_label(task),
        recovered=effective.recover_budget is not None and has_training_data(task),
        kind=SUPERNET if supernet else PRUNE,
        elastic=model.config.to_dict() if supernet else None,  # type: ignore[operator, union-attr]
    )
    with quiet_optuna():
        try:
            study = open_study(opened, name, effective, settings)
        except NetsculptError:
            raise
        except Exception as exc:  # noqa: BLE001 -- a damaged or hostile storage: say so
            raise StudyMismatchError(
                f"study {name!r} cannot be opened in this storage ({type(exc).__name__}: "
                f"{str(exc)[:200]}); the storage was damaged or not written by Optuna: pass "
                f"another study_name or storage"
            ) from exc

    with quiet_optuna():
        recover_interrupted(study)
        if user_attrs(study).get(BASELINE_ATTR) is None:
            study.set_user_attr(BASELINE_ATTR, evaluator.baseline())
        if effective.start_from_largest and not trials_of(study):
            for params in bound.largest_params()[: effective.n_trials]:
                study.enqueue_trial(params, skip_if_exists=True)
        remaining = effective.n_trials - n_done(trials_of(study))
        if remaining > 0:
            job = Job(
                config=effective,
                predictor=runtime_predictor or (Predictor() if effective.predictor else None),
                study_name=name,
                storage=None if isinstance(spec, BaseStorage) else spec,
                model_spec=model_spec,
                task_name=task_name,
                signature=bound.signature,
                kind=SUPERNET if supernet else PRUNE,
            )
            if effective.workers == 1:
                study.sampler = build_sampler(
                    job, bound, worker=0, plan_key=evaluator.plan_key, instance=instance
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
                    workers=effective.workers,
                    remaining=remaining,
                    study=study,
                    progress=progress,
                    supernet_files=files,
                )
    study = optuna.load_study(study_name=name, storage=opened)
    return Front(study, model=model, task=task, example_inputs=example_inputs)


def default_study_name(model: nn.Module, bound: BoundSpace) -> str:
    """``netsculpt-<model class>-<space signature>``: the same in every process and run."""
    return f"netsculpt-{type(model).__name__.lower()}-{bound.signature[:8]}"


def finished_numbers(study: optuna.Study) -> list[int]:
    """Numbers of the COMPLETE trials of ``study`` (used by tests and the CLI)."""
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


# --------------------------------------------------------------------------- pieces


def _evaluator(
    config: StudyConfig,
    model: nn.Module,
    example_inputs: ExampleInputs,
    task: Any,
    bound: BoundSpace | SupernetSpace,
    graph: Any,
) -> Evaluator:
    """The objective of this process, from the study's config."""
    return process_evaluator(config, model, example_inputs, task, bound, graph)


def _stored_config(storage: BaseStorage, name: str) -> StudyConfig | None:
    with quiet_optuna():
        try:
            return stored_config(storage, name)
        except NetsculptError:
            raise
        except Exception as exc:  # noqa: BLE001 -- a damaged or hostile storage: say so
            raise StudyMismatchError(
                f"study {name!r} cannot be read in this storage ({type(exc).__name__}: "
                f"{str(exc)[:200]}); the storage was damaged or not written by Optuna: pass "
                f"another study_name or storage"
            ) from exc


def _task_label(task: Any) -> str | None:
    name = getattr(task, "name", None)
    return name if isinstance(name, str) and name else None


def _check_importance(evaluator: Evaluator) -> None:
    """Fail fast on a criterion ``ns.plan`` refuses here (instead of failing every trial)."""
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
