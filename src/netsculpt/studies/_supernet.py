"""Super-network studies: ``ns.search`` over the slices of one trained ``ns.Supernet``.

A trial of a super-network study picks one value per choice of ``supernet.space``: an
Optuna categorical parameter named after the choice (a width's unit counts, or
``True``/``False`` for a depth choice ``"block:<module path>"``). Its sub-network is
``supernet.extract(arch, calib=task.calib_batches(n))``: the weights are sliced, never
trained, and the batch-norm statistics (when the model has batch norm) are recomputed on
``n = StudyConfig.bn_calib_batches`` training batches. It is then scored (validation, plus
the test score for reports), timed and measured like any trial; the per-trial cache and
the predictor work on the arch (features: each width as a fraction of its largest option,
each depth choice as 0 or 1).

What a pruning search reads and a super-network search does not:

* ``StudyConfig.space`` (tie, keep ratios, importance, ``round_to``, block removal,
  exclusions): the space is ``supernet.space``, fixed when the super-network was made
  (``ns.ElasticConfig``). A space other than the default is refused (InputError), except
  for its precision: ``SearchSpace(precision=("float", "int8"), quantize=...)`` adds a
  ``precision`` parameter, and an int8 trial's slice is quantized, scored and timed as in a
  pruning study (architecture and precision searched together, as SimQ-NAS does).
* recovery: trials are slices of trained weights, never retrained. The default
  ``recover_budget`` is dropped (the study stores ``None``); another budget or a
  ``recover`` recipe is refused (InputError).

Worker processes (``workers > 1``) get the super-network as the files
:func:`~netsculpt.supernets.io.save_supernet` writes (JSON and safetensors, sent as bytes
over each worker's pipe) and load it with :func:`~netsculpt.supernets.io.load_supernet`
into a copy of its inner model; the worker checks that the space it loaded has the
study's signature.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from torch import nn

from netsculpt.errors import InputError, NetsculptError, SearchError
from netsculpt.quantization.config import QuantizeConfig
from netsculpt.recovery.budget import Budget
from netsculpt.studies.config import (
    DEFAULT_BN_CALIB_BATCHES,
    DEFAULT_RECOVER_STEPS,
    StudyConfig,
)
from netsculpt.studies.objective import Evaluator
from netsculpt.studies.space import PRECISION, SearchSpace

__all__ = [
    "SupernetEvaluator",
    "SupernetSpace",
    "arch_hash",
    "check_supernet_config",
    "has_batchnorm",
    "is_supernet",
    "load_supernet_files",
    "supernet_files",
    "supernet_signature",
    "supernet_study_name",
]


def is_supernet(model: Any) -> bool:
    """Whether ``model`` is an ``ns.Supernet`` (without importing the super-network code
    when nothing has made one)."""
    module = sys.modules.get("netsculpt.supernets.supernet")
    return module is not None and isinstance(model, module.Supernet)


def supernet_signature(supernet: Any) -> str:
    """A hash of the super-network's space and the ElasticConfig it was made with: a study
    started on one super-network refuses another."""
    source = json.dumps(
        {
            "kind": "supernet",
            "space": supernet.space.to_dict(),
            "elastic": supernet.config.to_dict(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def supernet_study_name(supernet: Any, signature: str) -> str:
    """``netsculpt-supernet-<model class>-<signature>``: the same in every process."""
    return f"netsculpt-supernet-{type(supernet.model).__name__.lower()}-{signature[:8]}"


def arch_hash(arch: Mapping[str, Any]) -> str:
    """The cache key of a checked sub-network (the ``plan_hash`` of its trials)."""
    from netsculpt.supernets.space import arch_key

    return hashlib.sha256(("arch:" + arch_key(arch)).encode()).hexdigest()[:20]


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def check_supernet_config(config: StudyConfig) -> StudyConfig:
    """``config`` as a super-network search runs it (no recovery), or InputError naming
    the option that does not apply (see the module docstring)."""
    default = SearchSpace()
    space = config.space
    if not space.quantizes:  # the int8 options are read only where a trial may be int8
        space = dataclasses.replace(space, quantize=None)
    # precision is the one part of the space a super-network search reads
    structure = dataclasses.replace(
        space, precision=default.precision, quantize=None, precision_tie=default.precision_tie
    )
    if space.quantizes and space.precision_tie != "model":
        raise InputError(
            f"StudyConfig(space=SearchSpace(precision_tie={space.precision_tie!r})) does not "
            f"apply to a super-network search, which has no stages of prunable groups; use "
            f"precision_tie='model' (one precision per sub-network)"
        )
    if structure != default:
        changed = [
            f"{f.name}={getattr(structure, f.name)!r}"
            for f in dataclasses.fields(SearchSpace)
            if getattr(structure, f.name) != getattr(default, f.name)
        ]
        raise InputError(
            f"StudyConfig(space=SearchSpace({', '.join(changed)})) does not apply to a "
            f"super-network search: its trials are the choices of supernet.space, fixed when "
            f"the super-network was made (ns.ElasticConfig(keep=..., widths=..., depth=...)); "
            f"leave space at its default (only precision=..., quantize=... apply)"
        )
    if config.recover is not None or config.recover_budget not in (
        None,
        Budget.parse(DEFAULT_RECOVER_STEPS),
    ):
        raise InputError(
            f"StudyConfig(recover_budget={config.recover_budget!r}, recover="
            f"{type(config.recover).__name__ if config.recover is not None else None}) asks to "
            f"retrain each trial, but a super-network search scores slices of the trained "
            f"weights as they are; pass recover_budget=None and recover=None (train the "
            f"super-network itself with ns.train_supernet instead)"
        )
    return dataclasses.replace(config, recover_budget=None)


def supernet_files(supernet: Any) -> dict[str, bytes]:
    """The files :func:`~netsculpt.supernets.io.save_supernet` writes for ``supernet``, as
    bytes (what worker processes get; the temporary folder is removed at once).

    Raises:
        InputError: the super-network cannot be saved (the message says why), so it
            cannot be sent to worker processes either.
    """
    from netsculpt.supernets.io import save_supernet

    with tempfile.TemporaryDirectory(prefix="netsculpt-supernet-") as tmp:
        try:
            folder = save_supernet(supernet, Path(tmp) / "supernet")
        except NetsculptError as exc:
            raise InputError(
                f"the super-network cannot be sent to worker processes, which load it from "
                f"the files ns.save_supernet writes ({exc}); use workers=1"
            ) from exc
        return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}


def load_supernet_files(files: Mapping[str, bytes], *, base: nn.Module) -> Any:
    """The super-network :func:`supernet_files` described, loaded into ``base`` (a model of
    its architecture) from a temporary folder of this process, removed afterwards."""
    from netsculpt.supernets.io import load_supernet

    with tempfile.TemporaryDirectory(prefix="netsculpt-supernet-") as tmp:
        folder = Path(tmp)
        for name, data in files.items():
            if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
                raise SearchError(f"a super-network file named {name!r} is not a plain file name")
            (folder / name).write_bytes(data)
        return load_supernet(folder, base=base)


@dataclass(frozen=True)
class SupernetSpace:
    """The space of a super-network study: one categorical Optuna parameter per choice,
    and ``precision`` when the study's space offers more than one.

    Plays the part a ``BoundSpace`` plays in a pruning study (``suggest``, ``encode``,
    ``distributions``, ``signature``, ``precision``, ``quantize_config``) for the sampler,
    the predictor and the evaluator.
    """

    supernet: Any
    distributions: dict[str, CategoricalDistribution]
    signature: str
    #: the study config's space: only its precision options are read
    space: SearchSpace = field(default_factory=SearchSpace)

    @classmethod
    def of(cls, supernet: Any, space: SearchSpace | None = None) -> SupernetSpace:
        space = space if space is not None else SearchSpace()
        distributions = {
            c.name: CategoricalDistribution(list(c.options)) for c in supernet.space.choices
        }
        if len(space.precision) > 1:
            distributions[PRECISION] = CategoricalDistribution(list(space.precision))
        return cls(supernet, distributions, supernet_signature(supernet), space)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Ask ``trial`` for one value per choice; returns the parameters (the arch)."""
        return {
            name: trial.suggest_categorical(name, dist.choices)  # type: ignore[arg-type]
            for name, dist in self.distributions.items()
        }

    def arch(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The checked sub-network the parameters describe."""
        return dict(
            self.supernet.space.check(
                {k: v for k, v in params.items() if k in self.distributions and k != PRECISION},
                where="trial parameters",
            )
        )

    def largest_params(self) -> list[dict[str, Any]]:
        """The largest sub-network's parameters, once per precision the space offers."""
        arch = dict(self.supernet.largest())
        if PRECISION not in self.distributions:
            return [arch]
        return [{**arch, PRECISION: p} for p in self.space.precision]

    def precision(self, params: Mapping[str, Any]) -> dict[str, str]:
        """The trial's precision, ``{"*": p}`` (one per sub-network)."""
        return {"*": str(params.get(PRECISION, self.space.precision[0]))}

    def quantize_config(self, params: Mapping[str, Any]) -> QuantizeConfig | None:
        """The ``ns.quantize`` options of an int8 trial; None for a float one."""
        if self.precision(params)["*"] != "int8":
            return None
        return self.space.quantize_config()

    def encode(self, params: Mapping[str, Any]) -> list[float]:
        """Features for the predictor: each width as a fraction of its largest option, each
        depth choice as 1 (kept) or 0 (dropped), the precision one-hot."""
        row: list[float] = []
        for c in self.supernet.space.choices:
            value = params[c.name]
            if c.kind == "depth":
                row.append(1.0 if value else 0.0)
            else:
                row.append(float(value) / float(c.largest))
        if PRECISION in self.distributions:
            row.extend(1.0 if params[PRECISION] == p else 0.0 for p in self.space.precision)
        return row


@dataclass
class SupernetEvaluator(Evaluator):
    """The Optuna objective of a super-network study: slice, recalibrate, score, time.

    ``model`` is the :class:`~netsculpt.Supernet`; ``bound`` its :class:`SupernetSpace`.
    The baseline is the largest sub-network, extracted and recalibrated like every trial.
    """

    bn_calib_batches: int = DEFAULT_BN_CALIB_BATCHES
    _bn_batches: list[Any] | None = None

    @property
    def supernet(self) -> Any:
        return self.model

    def calib(self) -> list[Any] | None:
        """The training batches every slice's batch-norm statistics are recomputed on
        (None when the model has no batch norm)."""
        if not has_batchnorm(self.supernet.model):
            return None
        if self._bn_batches is None:
            self._bn_batches = list(self.task.calib_batches(self.bn_calib_batches))
        return self._bn_batches

    def _dense_model(self) -> nn.Module:
        supernet = self.supernet
        return supernet.extract(supernet.largest(), calib=self.calib())  # type: ignore[no-any-return]

    def _plan_for(self, params: Mapping[str, Any]) -> tuple[Any, str, str]:
        """``(arch, plan JSON, arch hash)``: the stored plan is the sub-network's plan
        against the original model (``ns.plan_of`` of the extracted model)."""
        key = tuple(sorted(params.items()))
        found = self._plans.get(key)
        if found is None:
            arch = self.bound.arch(params)  # type: ignore[attr-defined]
            plan_json = self.supernet.original_plan(arch).to_json()
            found = (arch, plan_json, arch_hash(arch))
            self._plans[key] = found
            while len(self._plans) > 64:
                self._plans.pop(next(iter(self._plans)))
        return found

    def plan_key(self, params: Mapping[str, Any]) -> str:
        return arch_hash(self.bound.arch(params))  # type: ignore[attr-defined]

    def _build(self, trial: optuna.Trial, plan: Any) -> nn.Module:
        """``supernet.extract(arch, calib=...)``: a slice of the trained weights."""
        try:
            return self.supernet.extract(plan, calib=self.calib())  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 -- any error of user code fails the trial
            self._fail(trial, "extract", exc)

    def _calib_batches(self, params: Mapping[str, Any]) -> list[Any] | None:
        return None  # no importance criterion runs in a super-network trial
