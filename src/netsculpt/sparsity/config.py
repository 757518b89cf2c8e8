"""Sparsity methods as configuration values (frozen dataclasses, validated on construction).

Each config names one method of the literature; :func:`netsculpt.sparsify` applies it::

    import netsculpt as ns
    from netsculpt.sparsity import GradualConfig

    result = ns.sparsify(model, GradualConfig(sparsity=0.9), task=task, budget=2000)

Configs round-trip through JSON (:meth:`SparsityConfig.to_dict` / :func:`config_from_dict`),
and select layers by qualified module name or ``"re:"`` pattern, never by module object.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from netsculpt.errors import InvalidRatioError, SparsityError, UnknownNameError

__all__ = [
    "GraNetConfig",
    "GradualConfig",
    "LotteryTicketConfig",
    "MagnitudeConfig",
    "NMConfig",
    "RandomConfig",
    "RigLConfig",
    "SparsityConfig",
    "config_from_dict",
]

_REGISTRY: dict[str, type[SparsityConfig]] = {}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _sparsity(owner: str, field: str, value: Any) -> None:
    if not _is_number(value) or not 0.0 <= value < 1.0:
        raise InvalidRatioError(
            f"{owner}({field}={value!r}): a sparsity is the fraction of weights set to zero and "
            f"must be in [0, 1); pass e.g. {field}=0.9 for 90% zeros"
        )


def _fraction(owner: str, field: str, value: Any) -> None:
    if not _is_number(value) or not 0.0 < value < 1.0:
        raise InvalidRatioError(
            f"{owner}({field}={value!r}): a fraction of the kept weights, must be in (0, 1); "
            f"pass e.g. {field}=0.3"
        )


def _int_at_least(owner: str, field: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise SparsityError(
            f"{owner}({field}={value!r}): must be an integer >= {low}; pass e.g. "
            f"{field}={max(low, 1)}"
        )


def _choice(owner: str, field: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UnknownNameError(
            f"{owner}({field}={value!r}) is not known; pass one of "
            + ", ".join(repr(c) for c in choices)
        )


@dataclass(frozen=True, kw_only=True)
class SparsityConfig:
    """Base of the sparsity method configs: layer selection and (de)serialisation.

    ``include`` selects layers (qualified module names or ``"re:"`` patterns; default: every
    ``Linear`` and ``Conv1d/2d/3d`` weight); ``exclude`` removes layers from that selection.
    """

    kind: ClassVar[str] = ""

    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            _REGISTRY[cls.kind] = cls

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for field in ("include", "exclude"):
            value = getattr(self, field)
            if value is None:
                if field == "exclude":
                    object.__setattr__(self, field, ())
                continue
            object.__setattr__(self, field, _selectors(owner, field, value))
        if self.include == ():
            raise SparsityError(
                f"{owner}(include=()): an empty include selects no layer, so nothing would be "
                f"sparsified; pass include=None for every Linear and Conv layer, or name layers, "
                f"e.g. include=('classifier', 're:.*fc.*')"
            )
        self._validate(owner)

    @property
    def trains(self) -> bool:
        """Whether the method itself trains (and so needs a task and a budget)."""
        return False

    def _validate(self, owner: str) -> None:
        """Check the method's own fields (subclasses)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with ``"kind"`` naming the method."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def config_from_dict(data: dict[str, Any]) -> SparsityConfig:
    """Rebuild a config from :meth:`SparsityConfig.to_dict` output.

    Raises:
        SparsityError: ``data`` is not a dict, or names a field the method does not have.
        UnknownNameError: ``data["kind"]`` names no method.
    """
    if not isinstance(data, Mapping):
        raise SparsityError(
            f"a sparsity config dict is needed, got {type(data).__name__} ({data!r:.60}); pass "
            f"what SparsityConfig.to_dict() returned, e.g. {{'kind': 'magnitude', "
            f"'sparsity': 0.9}}"
        )
    data = dict(data)
    kind = data.pop("kind", None)
    cls = _REGISTRY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UnknownNameError(
            f"sparsity method kind={kind!r} is not known; pass one of {sorted(_REGISTRY)}"
        )
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise SparsityError(
            f"{cls.__name__} has no field {', '.join(repr(k) for k in unknown)}; its fields are "
            f"{', '.join(fields)}"
        )
    for key in ("include", "exclude"):
        if isinstance(data.get(key), list):
            data[key] = tuple(data[key])
    return cls(**data)


def _selectors(owner: str, field: str, value: Any) -> tuple[str, ...]:
    """Layer selectors as a tuple of strings; ``"re:"`` patterns must compile."""
    example = f"e.g. {field}=('classifier', 're:.*fc.*')"
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise SparsityError(
            f"{owner}({field}={value!r}): layers are selected by a list of qualified module "
            f"names or 're:' pattern strings, got {type(value).__name__}; {example}"
        )
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise SparsityError(
                f"{owner}({field}={value!r}): layers are selected by qualified module name "
                f"or 're:' pattern strings, got {item!r} ({type(item).__name__}); {example}"
            )
        if item.startswith("re:"):
            try:
                re.compile(item[3:])
            except re.error as exc:
                raise SparsityError(
                    f"{owner}({field}={value!r}): {item!r} is not a valid regular expression "
                    f"({exc}); write Python re syntax after 're:', {example}"
                ) from None
    return items


def _schedule(owner: str, start: Any, end: Any, frequency: Any) -> None:
    _int_at_least(owner, "start_step", start, 0)
    _int_at_least(owner, "frequency", frequency, 1)
    if end is not None:
        _int_at_least(owner, "end_step", end, 0)
        if end <= start:
            raise SparsityError(
                f"{owner}(start_step={start}, end_step={end}): the schedule ends before it "
                f"starts; pass an end_step greater than start_step, or end_step=None to end "
                f"at three quarters of the budget"
            )


@dataclass(frozen=True, kw_only=True)
class MagnitudeConfig(SparsityConfig):
    """One-shot unstructured magnitude pruning: zero the smallest ``|w|``.

    ``scope="global"`` ranks all selected weights together; ``"layer"`` prunes every layer to
    the same sparsity. With a task and a budget, the pruned model is then fine-tuned with its
    mask held fixed.
    """

    kind: ClassVar[str] = "magnitude"
    sparsity: float = 0.5
    scope: Literal["global", "layer"] = "global"

    def _validate(self, owner: str) -> None:
        _sparsity(owner, "sparsity", self.sparsity)
        _choice(owner, "scope", self.scope, ("global", "layer"))


@dataclass(frozen=True, kw_only=True)
class GradualConfig(SparsityConfig):
    """Gradual magnitude pruning (GMP) with the cubic schedule of Zhu & Gupta (2017).

    Sparsity rises from ``initial_sparsity`` at ``start_step`` to ``sparsity`` at ``end_step``
    (``None``: three quarters of the budget), the mask being recomputed every ``frequency``
    steps; training goes on with the final mask until the budget is spent.
    """

    kind: ClassVar[str] = "gradual"
    sparsity: float = 0.9
    initial_sparsity: float = 0.0
    start_step: int = 0
    end_step: int | None = None
    frequency: int = 10
    scope: Literal["global", "layer"] = "global"

    @property
    def trains(self) -> bool:
        return True

    def _validate(self, owner: str) -> None:
        _sparsity(owner, "sparsity", self.sparsity)
        _sparsity(owner, "initial_sparsity", self.initial_sparsity)
        if self.initial_sparsity > self.sparsity:
            raise SparsityError(
                f"{owner}(initial_sparsity={self.initial_sparsity}, sparsity={self.sparsity}): "
                f"gradual pruning only raises sparsity; pass initial_sparsity <= sparsity"
            )
        _schedule(owner, self.start_step, self.end_step, self.frequency)
        _choice(owner, "scope", self.scope, ("global", "layer"))


@dataclass(frozen=True, kw_only=True)
class GraNetConfig(GradualConfig):
    """Gradual pruning with neuroregeneration (GraNet, Liu et al. 2021).

    The cubic schedule of :class:`GradualConfig`, and at each mask update a further
    ``regrow_fraction`` (cosine-decayed to zero at ``end_step``) of each layer's kept weights
    is dropped by magnitude and the same number regrown where the gradient is largest.
    Start from a random ERK mask at ``initial_sparsity`` with ``initial_distribution="erk"``
    (sparse-to-sparse), or from the dense model (``initial_sparsity=0``, dense-to-sparse).
    """

    kind: ClassVar[str] = "granet"
    frequency: int = 50
    regrow_fraction: float = 0.5
    initial_distribution: Literal["erk", "uniform"] = "erk"

    def _validate(self, owner: str) -> None:
        super()._validate(owner)
        _fraction(owner, "regrow_fraction", self.regrow_fraction)
        _choice(owner, "initial_distribution", self.initial_distribution, ("erk", "uniform"))


@dataclass(frozen=True, kw_only=True)
class LotteryTicketConfig(SparsityConfig):
    """Iterative magnitude pruning with weight rewinding (lottery tickets).

    Train densely for the budget, remembering the weights after ``rewind_step`` steps
    (0: the initialisation, as in Frankle & Carbin 2019; a few percent of training: early
    rewinding, "Stabilizing the Lottery Ticket Hypothesis"). Then ``rounds`` times: prune by
    magnitude (so that the sparsity after round ``r`` is ``1 - (1 - sparsity) ** (r / rounds)``),
    rewind the kept weights, and train for the rest of the budget. With ``control=True`` the
    final mask is also trained from a fresh random initialisation for the whole budget (the
    control that a ticket should beat).
    """

    kind: ClassVar[str] = "lottery"
    sparsity: float = 0.8
    rounds: int = 3
    rewind_step: int = 0
    scope: Literal["global", "layer"] = "global"
    control: bool = False

    @property
    def trains(self) -> bool:
        return True

    def _validate(self, owner: str) -> None:
        _sparsity(owner, "sparsity", self.sparsity)
        _int_at_least(owner, "rounds", self.rounds, 1)
        _int_at_least(owner, "rewind_step", self.rewind_step, 0)
        _choice(owner, "scope", self.scope, ("global", "layer"))
        if not isinstance(self.control, bool):
            raise SparsityError(
                f"{owner}(control={self.control!r}): must be True or False; pass control=True "
                f"to also train the mask from a fresh initialisation"
            )


@dataclass(frozen=True, kw_only=True)
class RandomConfig(SparsityConfig):
    """Random pruning with layer-wise ratios from Erdős–Rényi-Kernel (``"erk"``) or uniform.

    "The Unreasonable Effectiveness of Random Pruning" (Liu et al., 2022). With a task and a
    budget, the model is trained with the mask held fixed.
    """

    kind: ClassVar[str] = "random"
    sparsity: float = 0.5
    distribution: Literal["erk", "uniform"] = "erk"

    def _validate(self, owner: str) -> None:
        _sparsity(owner, "sparsity", self.sparsity)
        _choice(owner, "distribution", self.distribution, ("erk", "uniform"))


@dataclass(frozen=True, kw_only=True)
class NMConfig(SparsityConfig):
    """N:M fine-grained sparsity: ``n`` of every ``m`` consecutive input weights kept.

    ``method="magnitude"`` keeps the ``n`` largest in each group once (then fine-tunes with the
    mask fixed when given a budget). ``method="sr-ste"`` trains with the sparse-refined
    straight-through estimator (Zhou et al., 2021): the forward pass uses the N:M-masked
    weights, recomputed from the dense weights every step, and the gradient reaching the
    dense weights is the masked weights' gradient plus ``decay * (~mask * w)``.
    Layers whose input dimension is not a multiple of ``m`` are skipped and listed in the
    result.
    """

    kind: ClassVar[str] = "nm"
    n: int = 2
    m: int = 4
    method: Literal["magnitude", "sr-ste"] = "magnitude"
    decay: float = 2e-4

    @property
    def trains(self) -> bool:
        return self.method == "sr-ste"

    def _validate(self, owner: str) -> None:
        if not isinstance(self.m, int) or isinstance(self.m, bool) or self.m < 1:
            raise SparsityError(f"{owner}(m={self.m!r}): m is the group size, pass e.g. m=4")
        if not isinstance(self.n, int) or isinstance(self.n, bool) or not 0 < self.n <= self.m:
            raise SparsityError(
                f"{owner}(n={self.n!r}, m={self.m!r}): N:M keeps n of every m weights, so n must "
                f"satisfy 0 < n <= m; pass e.g. n=2, m=4 for 2:4 sparsity"
            )
        _choice(owner, "method", self.method, ("magnitude", "sr-ste"))
        if not _is_number(self.decay) or self.decay < 0:
            raise SparsityError(f"{owner}(decay={self.decay!r}): must be >= 0; pass e.g. 2e-4")


@dataclass(frozen=True, kw_only=True)
class RigLConfig(SparsityConfig):
    """Prune-and-regrow sparse training (RigL, Evci et al. 2020; SET with ``grow="random"``).

    Start from a mask at ``sparsity`` (``init="random"`` with ``distribution`` ratios, or
    ``init="magnitude"`` from the model's weights). Every ``update_every`` steps until
    ``end_fraction`` of the budget, each layer drops ``f(t) = drop_fraction / 2 *
    (1 + cos(pi t / T_end))`` of its kept weights by magnitude and grows as many where the
    dense gradient is largest. Per-layer sparsity stays constant.
    """

    kind: ClassVar[str] = "rigl"
    sparsity: float = 0.9
    distribution: Literal["erk", "uniform"] = "erk"
    init: Literal["random", "magnitude"] = "random"
    update_every: int = 100
    drop_fraction: float = 0.3
    end_fraction: float = 0.75
    grow: Literal["gradient", "random"] = "gradient"

    @property
    def trains(self) -> bool:
        return True

    def _validate(self, owner: str) -> None:
        _sparsity(owner, "sparsity", self.sparsity)
        _choice(owner, "distribution", self.distribution, ("erk", "uniform"))
        _choice(owner, "init", self.init, ("random", "magnitude"))
        _int_at_least(owner, "update_every", self.update_every, 1)
        _fraction(owner, "drop_fraction", self.drop_fraction)
        if not _is_number(self.end_fraction) or not 0.0 < self.end_fraction <= 1.0:
            raise InvalidRatioError(
                f"{owner}(end_fraction={self.end_fraction!r}): the part of the budget during "
                f"which masks change, must be in (0, 1]; pass e.g. end_fraction=0.75"
            )
        _choice(owner, "grow", self.grow, ("gradient", "random"))
