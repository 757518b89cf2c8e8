"""The search space: what a trial chooses, and how its choices become an ``ns.Plan``.

A :class:`SearchSpace` is a frozen value describing the knobs; :func:`build_space` binds it
to a model's dependency graph (``ns.analyze``) and returns a :class:`BoundSpace` that

* names one Optuna parameter per knob (``keep`` ratios tied per stage, per group or
  uniform; ``importance``; ``round_to``; ``remove:<block>`` switches; ``precision`` for
  the model, or ``precision:<stage>`` per stage, when the space offers int8),
* suggests them on an ``optuna.Trial`` (or reads them back from a finished trial), and
* turns a parameter dict into a plan with ``ns.plan``, so the parameters alone are
  enough to rebuild every trial's plan.

>>> space = SearchSpace(tie="uniform", min_keep=0.5, step=0.25, importance=("magnitude",))
>>> space.keep_choices()
(0.5, 0.75, 1.0)
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
)

from netsculpt.errors import InputError, InvalidRatioError, NothingToPruneError
from netsculpt.quantization.config import QuantizeConfig

if TYPE_CHECKING:
    from torch import nn

    from netsculpt._inputs import ExampleInputs

__all__ = ["PRECISIONS", "BoundSpace", "SearchSpace", "build_space", "plan_hash"]

Tie = Literal["stage", "layer", "uniform"]
_TIES = ("stage", "layer", "uniform")
PrecisionTie = Literal["model", "stage", "group"]
_PRECISION_TIES = ("model", "stage", "group")
#: What a trial's precision may be: the float model, or int8 through ``ns.quantize``.
PRECISIONS: tuple[str, ...] = ("float", "int8")
#: Most choices one categorical knob may list.
_MAX_CHOICES = 1000
#: Parameter name prefixes.
KEEP = "keep"
REMOVE = "remove:"
PRECISION = "precision"


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """Which sub-networks a search may try.

    Attributes:
        tie: how keep ratios are shared between prunable groups: ``"stage"`` (one ratio
            per stage, the ``Group.stage`` of ``ns.analyze``, e.g. ``layer2``; a stage with
            several kinds of groups, such as attention heads and MLP neurons, gets one ratio
            per kind), ``"layer"`` (one per group) or ``"uniform"`` (one for the model).
        min_keep: smallest fraction of a group's units a trial may keep, in ``(0, 1]``.
        max_keep: largest fraction, in ``[min_keep, 1]``; ``1.0`` lets a stage stay whole.
        step: grid of the keep ratios (``min_keep, min_keep + step, ...``).
        importance: criteria a trial chooses from (``ns.plan``'s ``importance`` names).
        round_to: channel multiples a trial chooses from (``ns.plan``'s ``round_to``).
        remove_blocks: also let trials drop whole residual branches (``graph.blocks``).
        exclude: groups (names or ``"re:"`` patterns) never pruned, passed to ``ns.plan``.
        calib_batches: how many task batches a criterion that declares ``needs_calib``
            (taylor, activation, or a registered one) is given.
        precision: the precisions a trial chooses from: ``("float",)`` (the default: no
            quantization), ``("float", "int8")`` (search precision with the structure) or
            ``("int8",)`` (every trial quantized). An int8 trial is pruned (and recovered)
            as any trial, then quantized with :func:`netsculpt.quantize` (``quantize``),
            scored by running the quantized ONNX model on the task and timed in
            onnxruntime, so a study that offers int8 needs ``backend="onnxruntime"``.
        precision_tie: ``"model"`` (one precision per trial), ``"stage"`` (one per stage
            of the prunable groups, ``Group.stage``) or ``"group"`` (one per prunable
            group, for the layer that produces it, ``Group.module``: APQ's per-layer
            policy). A stage or layer chosen float is passed to ``ns.quantize`` as
            ``float_layers``; layers outside every choice, such as a stem or a head, are
            quantized when any choice is int8; keep them in float with
            ``quantize=QuantizeConfig(float_layers=(...))``.
        quantize: how int8 trials are quantized (``mode``, ``per_channel``,
            ``calib_batches``, ``float_layers``, ...); ``None`` is ``QuantizeConfig()``:
            static int8, per-channel weights, calibration batches from the task. Transformer
            encoders usually want ``QuantizeConfig(mode="dynamic")``.
    """

    tie: Tie = "stage"
    min_keep: float = 0.25
    max_keep: float = 1.0
    step: float = 0.05
    importance: tuple[str, ...] = ("magnitude", "lamp")
    round_to: tuple[int, ...] = (1, 8)
    remove_blocks: bool = False
    exclude: tuple[str, ...] = field(default=())
    calib_batches: int = 4
    precision: tuple[str, ...] = ("float",)
    precision_tie: PrecisionTie = "model"
    quantize: QuantizeConfig | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.tie, str) or self.tie not in _TIES:
            raise InputError(
                f"SearchSpace(tie={self.tie!r}) is not a tie mode; use one of {', '.join(_TIES)}"
            )
        for name in ("min_keep", "max_keep", "step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(
                    f"SearchSpace({name}={value!r}) must be a number, e.g. min_keep=0.25, "
                    f"max_keep=1.0, step=0.05"
                )
        if not isinstance(self.remove_blocks, bool):
            raise InputError(
                f"SearchSpace(remove_blocks={self.remove_blocks!r}) must be True or False"
            )
        if isinstance(self.calib_batches, bool) or not isinstance(self.calib_batches, int):
            raise InputError(
                f"SearchSpace(calib_batches={self.calib_batches!r}) must be an int, e.g. 4"
            )
        if not (0.0 < self.min_keep <= self.max_keep <= 1.0):
            raise InvalidRatioError(
                f"SearchSpace keep ratios need 0 < min_keep <= max_keep <= 1, got "
                f"min_keep={self.min_keep}, max_keep={self.max_keep}; e.g. min_keep=0.25, "
                f"max_keep=1.0"
            )
        if not (0.0 < self.step <= 1.0):
            raise InvalidRatioError(
                f"SearchSpace(step={self.step}) must be in (0, 1]; e.g. step=0.05"
            )
        # tuples, so that the value is hashable and JSON round-trips to an equal value
        object.__setattr__(self, "importance", _as_tuple(self.importance, "importance", str))
        object.__setattr__(self, "round_to", _as_tuple(self.round_to, "round_to", int))
        object.__setattr__(self, "exclude", _names(self.exclude))
        if any(r < 1 for r in self.round_to):
            raise InputError(
                f"SearchSpace(round_to={self.round_to}) needs positive channel multiples, "
                f"e.g. round_to=(1, 8)"
            )
        if self.calib_batches < 1:
            raise InputError(f"SearchSpace(calib_batches={self.calib_batches}) must be at least 1")
        precision = _as_tuple(self.precision, "precision", str)
        for p in precision:
            if p not in PRECISIONS:
                raise InputError(
                    f"SearchSpace(precision=...) holds {p!r}, not a precision netsculpt can "
                    f"run; choose from {', '.join(repr(c) for c in PRECISIONS)}, e.g. "
                    f"precision=('float', 'int8')"
                )
        if len(set(precision)) != len(precision):
            raise InputError(f"SearchSpace(precision={precision}) repeats a choice; list each once")
        object.__setattr__(self, "precision", precision)
        if not isinstance(self.precision_tie, str) or self.precision_tie not in _PRECISION_TIES:
            raise InputError(
                f"SearchSpace(precision_tie={self.precision_tie!r}) is not a tie mode; use "
                f"one of {', '.join(_PRECISION_TIES)}"
            )
        if isinstance(self.quantize, Mapping):
            object.__setattr__(self, "quantize", QuantizeConfig.from_dict(self.quantize))
        if self.quantize is not None and not isinstance(self.quantize, QuantizeConfig):
            raise InputError(
                f"SearchSpace(quantize={self.quantize!r:.60}) must be a netsculpt.QuantizeConfig "
                f"or None, e.g. quantize=ns.QuantizeConfig(mode='dynamic')"
            )

    @property
    def quantizes(self) -> bool:
        """Whether some trial may be quantized (the space offers ``"int8"``)."""
        return "int8" in self.precision

    def quantize_config(self) -> QuantizeConfig:
        """The options int8 trials are quantized with."""
        return self.quantize if self.quantize is not None else QuantizeConfig()

    def keep_choices(self) -> tuple[float, ...]:
        """The keep ratios on the grid, smallest first."""
        n = math.floor((self.max_keep - self.min_keep) / self.step + 1e-9)
        return tuple(round(self.min_keep + i * self.step, 6) for i in range(n + 1))

    def keep_distribution(self) -> FloatDistribution:
        """The Optuna distribution of one keep ratio."""
        choices = self.keep_choices()
        if len(choices) == 1:
            return FloatDistribution(choices[0], choices[0])
        return FloatDistribution(choices[0], choices[-1], step=self.step)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` gives back an equal value."""
        out = asdict(self)
        for key in ("importance", "round_to", "exclude", "precision"):
            out[key] = list(out[key])
        out["quantize"] = None if self.quantize is None else self.quantize.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Rebuild a space from :meth:`to_dict`'s output."""
        if not isinstance(data, Mapping):
            raise InputError(f"SearchSpace.from_dict needs a dict, got {type(data).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = {str(k) for k in data} - known
        if unknown:
            raise InputError(
                f"SearchSpace has no field(s) {sorted(unknown)}; known fields: {sorted(known)}"
            )
        return cls(**dict(data))


def _as_tuple(value: Any, name: str, kind: type) -> tuple[Any, ...]:
    if isinstance(value, (str, int)):
        value = (value,)
    if isinstance(value, Mapping) or not isinstance(value, (list, tuple)):
        raise InputError(
            f"SearchSpace({name}={value!r}) must be a tuple of {kind.__name__}s, e.g. "
            f"{name}={('magnitude', 'lamp') if kind is str else (1, 8)}"
        )
    if len(value) > _MAX_CHOICES:
        raise InputError(f"SearchSpace({name}=...) has {len(value)} choices; keep it under 1000")
    allowed = numbers.Integral if kind is int else kind
    for v in value:
        if isinstance(v, bool) or not isinstance(v, allowed):
            raise InputError(
                f"SearchSpace({name}=...) holds {v!r} ({type(v).__name__}), not a {kind.__name__}"
            )
    out = tuple(kind(v) for v in value)
    if not out:
        raise InputError(f"SearchSpace({name}=()) needs at least one choice")
    return out


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, Mapping) or not isinstance(value, (list, tuple)):
        raise InputError(
            f"SearchSpace(exclude={value!r}) must be a tuple of group names or 're:' patterns"
        )
    for v in value:
        if not isinstance(v, str):
            raise InputError(f"SearchSpace(exclude=...) holds {v!r}, not a name (str)")
    return tuple(value)


@dataclass(frozen=True)
class BoundSpace:
    """A :class:`SearchSpace` bound to one model's graph: parameter names and distributions.

    Attributes:
        space: the user's space.
        distributions: Optuna parameter name -> distribution, in a stable order.
        keep_groups: keep parameter name -> names of the groups whose ratio it sets.
        blocks: removable block names (empty unless ``space.remove_blocks``).
        signature: a hash of the prunable groups and blocks; a study started on one model
            refuses another.
        group_sizes: group name -> (units, unit width), for :meth:`encode`.
        precision_stages: precision parameter name -> the stage or layer (module path) it
            sets, or ``""`` for the one model-wide parameter; empty when the space offers
            one precision.
    """

    space: SearchSpace
    distributions: dict[str, BaseDistribution]
    keep_groups: dict[str, tuple[str, ...]]
    blocks: tuple[str, ...]
    signature: str
    group_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    precision_stages: dict[str, str] = field(default_factory=dict)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Ask ``trial`` for every parameter; returns the parameter dict."""
        params: dict[str, Any] = {}
        for name, dist in self.distributions.items():
            if isinstance(dist, FloatDistribution):
                params[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step)
            else:
                assert isinstance(dist, CategoricalDistribution)
                params[name] = trial.suggest_categorical(name, dist.choices)  # type: ignore[arg-type]
        return params

    def largest_params(self) -> list[dict[str, Any]]:
        """The parameters of the largest sub-network of the space (every keep ratio at its
        largest, the first criterion and ``round_to``, no block removed), once per
        precision the space offers (a per-stage precision the same in every stage)."""
        base: dict[str, Any] = {}
        for name, dist in self.distributions.items():
            if isinstance(dist, FloatDistribution):
                base[name] = dist.high
            elif name.startswith(REMOVE):
                base[name] = False
            elif name not in self.precision_stages:
                assert isinstance(dist, CategoricalDistribution)
                base[name] = dist.choices[0]
        if not self.precision_stages:
            return [base]
        return [{**base, **dict.fromkeys(self.precision_stages, p)} for p in self.space.precision]

    def ratios(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Group name -> prune ratio (``1 - keep``) for the groups the parameters cut."""
        out: dict[str, float] = {}
        for pname, groups in self.keep_groups.items():
            keep = float(params[pname])
            ratio = round(1.0 - keep, 6)
            if ratio > 0.0:
                for g in groups:
                    out[g] = ratio
        return out

    def removed_blocks(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The blocks the parameters switch off."""
        return tuple(b for b in self.blocks if bool(params.get(REMOVE + b, False)))

    def precision(self, params: Mapping[str, Any]) -> dict[str, str]:
        """The trial's precision: ``{"*": p}`` for the model, or stage -> precision.

        A space with one precision has no parameter: every trial gets that one.
        """
        if not self.precision_stages:
            return {"*": self.space.precision[0]}
        out: dict[str, str] = {}
        for name, stage in self.precision_stages.items():
            out[stage or "*"] = str(params.get(name, self.space.precision[0]))
        return out

    def quantize_config(self, params: Mapping[str, Any]) -> QuantizeConfig | None:
        """The ``ns.quantize`` options of the trial, or None for a float trial.

        Stages (or layers) chosen float join the space's ``float_layers``.
        """
        chosen = self.precision(params)
        if "int8" not in chosen.values():
            return None
        float_stages = tuple(s for s, p in chosen.items() if p == "float" and s != "*")
        return self.space.quantize_config().keeping_float(float_stages)

    def to_plan(
        self,
        model: nn.Module,
        example_inputs: ExampleInputs,
        params: Mapping[str, Any],
        *,
        graph: Any = None,
        calib: Sequence[ExampleInputs] | None = None,
    ) -> Any:
        """Build the ``ns.Plan`` that ``params`` describe (keep ratios -> ``ns.plan``)."""
        from netsculpt.pruning.config import PruneConfig
        from netsculpt.pruning.importance import criterion_info
        from netsculpt.pruning.planner import plan as make_plan

        importance = str(params.get("importance", self.space.importance[0]))
        ratio: float | dict[str, float] = self.ratios(params) or 0.0
        config = PruneConfig(
            ratio=ratio,
            importance=importance,
            exclude=self.space.exclude,
            round_to=int(params.get("round_to", self.space.round_to[0])),
            remove_blocks=self.removed_blocks(params),
        )
        needs_calib = criterion_info(importance).needs_calib
        return make_plan(
            model,
            example_inputs,
            config,
            calib=list(calib) if calib is not None and needs_calib else None,
            graph=graph,
        )

    def encode(self, params: Mapping[str, Any]) -> list[float]:
        """Parameters as a numeric feature vector for the predictor.

        A keep ratio becomes the fraction of units its groups really keep once widths are
        rounded to ``round_to`` (as ``ns.plan`` rounds them without global ranking), so
        parameters that give the same widths give the same features; categoricals are
        one-hot.
        """
        round_to = int(params.get("round_to", self.space.round_to[0]))
        row: list[float] = []
        for name, dist in self.distributions.items():
            value = params[name]
            if isinstance(dist, FloatDistribution):
                row.append(self._kept_fraction(name, float(value), round_to))
            else:
                assert isinstance(dist, CategoricalDistribution)
                if len(dist.choices) > 1:
                    row.extend(1.0 if value == c else 0.0 for c in dist.choices)
        return row

    def _kept_fraction(self, name: str, keep: float, round_to: int) -> float:
        groups = self.keep_groups.get(name, ())
        if not groups or not self.group_sizes:
            return keep
        kept = total = 0
        for g in groups:
            size, unit = self.group_sizes[g]
            m = 1 if round_to <= 1 else max(1, round_to // math.gcd(round_to, max(1, unit)))
            k = size - math.floor(size * round(1.0 - keep, 6) + 1e-9)
            kept += _round_keep(k, size, m)
            total += size
        return kept / total


def _round_keep(keep: int, size: int, m: int) -> int:
    """Kept units after rounding to multiples of ``m`` (mirrors ``ns.plan``'s rounding)."""
    if m <= 1:
        return max(1, min(size, keep))
    if size <= m:
        return size
    return max(m, min(round(keep / m) * m, size))


def build_space(graph: Any, space: SearchSpace) -> BoundSpace:
    """Bind ``space`` to a graph from ``ns.analyze``: one parameter per knob.

    Raises :class:`~netsculpt.errors.NothingToPruneError` when the graph has no prunable
    group (and no removable block when ``space.remove_blocks``).
    """
    groups = [g for g in graph.prunable_groups if not _excluded(g.name, space.exclude)]
    blocks = tuple(graph.blocks) if space.remove_blocks else ()
    if not groups and not blocks:
        raise NothingToPruneError(
            "the model has no prunable group left to search over "
            f"({len(graph.groups)} groups, none prunable or all excluded by "
            f"exclude={list(space.exclude)}); check ns.analyze(model, inputs).groups for the "
            f"reasons, or loosen the exclusions"
        )
    kinds_per_stage: dict[str, set[str]] = {}
    for g in groups:
        kinds_per_stage.setdefault(g.stage or "<root>", set()).add(g.kind)
    keep_groups: dict[str, list[str]] = {}
    for g in groups:
        if space.tie == "uniform":
            key = KEEP
        elif space.tie == "stage":
            stage = g.stage or "<root>"
            # a stage holding several kinds (attention heads and MLP neurons) gets one
            # ratio per kind: cutting heads and cutting neurons are different trade-offs
            key = f"{KEEP}:{stage}" + (f":{g.kind}" if len(kinds_per_stage[stage]) > 1 else "")
        else:
            key = f"{KEEP}:{g.name}"
        keep_groups.setdefault(key, []).append(g.name)
    distributions: dict[str, BaseDistribution] = {}
    keep_dist = space.keep_distribution()
    for key in keep_groups:
        distributions[key] = keep_dist
    distributions["importance"] = CategoricalDistribution(list(space.importance))
    distributions["round_to"] = CategoricalDistribution(list(space.round_to))
    for b in blocks:
        distributions[REMOVE + b] = CategoricalDistribution([False, True])
    precision_stages: dict[str, str] = {}
    if len(space.precision) > 1:
        if space.precision_tie == "model":
            precision_stages[PRECISION] = ""
        else:
            by_group = space.precision_tie == "group"
            for stage in sorted({g.module if by_group else g.stage for g in groups} - {""}):
                precision_stages[f"{PRECISION}:{stage}"] = stage
            if not precision_stages:  # no group has a stage: one choice for the model
                precision_stages[PRECISION] = ""
        for name in precision_stages:
            distributions[name] = CategoricalDistribution(list(space.precision))
    sig_src = json.dumps(
        {
            "groups": [[g.name, int(g.size), g.kind] for g in groups],
            "blocks": list(graph.blocks),
        },
        sort_keys=True,
    )
    return BoundSpace(
        space=space,
        distributions=distributions,
        keep_groups={k: tuple(v) for k, v in keep_groups.items()},
        blocks=blocks,
        signature=hashlib.sha256(sig_src.encode()).hexdigest()[:16],
        group_sizes={g.name: (int(g.size), int(getattr(g, "unit_width", 1) or 1)) for g in groups},
        precision_stages=precision_stages,
    )


def _excluded(name: str, patterns: Sequence[str]) -> bool:
    import re

    for p in patterns:
        if p.startswith("re:"):
            if re.fullmatch(p[3:], name):
                return True
        elif p == name:
            return True
    return False


def plan_hash(plan_json: str) -> str:
    """A short, stable hash of a plan's JSON, the key of the per-plan measurement cache."""
    return hashlib.sha256(plan_json.encode()).hexdigest()[:20]
