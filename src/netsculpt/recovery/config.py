"""Training options of ``ns.finetune`` and ``ns.distill`` as values (frozen, checked, JSON).

One config object carries every option that can be written down; the call keeps only what
cannot (the model, the task, the budget, callbacks and an optimiser factory)::

    import netsculpt as ns

    ns.finetune(small, task, "2m", ns.TrainConfig(lr=1e-4, early_stop_patience=3))
    ns.distill(small, teacher, task, 500, ns.DistillConfig(temperature=4.0, alpha=0.9))

A config is checked when it is built (a bad value raises an
:class:`~netsculpt.errors.InputError` naming the field and the fix) and round-trips through
JSON, so a study or a script can record exactly how a model was trained:

>>> config = DistillConfig(lr=1e-4, hidden_weight=1.0, hidden_layers=["layer1"])
>>> config.hidden_layers
('layer1',)
>>> TrainConfig.from_json(config.to_json()) == config
True
>>> TrainConfig.from_dict({"kind": "distill", "alpha": 1.0}).alpha  # the kind picks the class
1.0
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from netsculpt._checks import check_int, check_names, check_number, config_json
from netsculpt.errors import InputError, InvalidRatioError, UnknownNameError

__all__ = ["OUTPUT_KINDS", "DistillConfig", "TrainConfig"]

#: What ``ns.distill`` matches: ``output_kind`` is one of these.
OUTPUT_KINDS: tuple[str, ...] = ("auto", "logits", "embeddings")
#: Torch's seeds are unsigned 64-bit integers; netsculpt takes the non-negative int64 half.
MAX_SEED = 2**63 - 1

_KINDS: dict[str, type[TrainConfig]] = {}
T = TypeVar("T")


def _fix(owner: str, check: Callable[[], T], fix: str = "") -> T:
    """Run a shared check; prefix its message with ``owner`` and append ``fix``."""
    try:
        return check()
    except InputError as exc:
        message = str(exc)
        suffix = f"; {fix}" if fix and "e.g." not in message else ""
        raise type(exc)(f"{owner}: {message}{suffix}") from None


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Options of :func:`netsculpt.finetune` (and the training part of ``distill``).

    Attributes:
        lr: learning rate of the default AdamW optimiser (unused with ``optimizer=``).
        weight_decay: AdamW's weight decay (unused with ``optimizer=``).
        batch_size: passed to ``task.train_batches``.
        seed: fixes the data order and torch's random state: same seed, same weights.
        early_stop_patience: stop after this many validation scores without improvement,
            then restore the weights with the best score (the score before training
            counts). ``None`` trains for the whole budget.
        eval_every: steps between validation scores; by default a tenth of a step budget
            (or every 50 steps) when ``early_stop_patience`` is set, else never.
    """

    kind: ClassVar[str] = "finetune"

    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    seed: int = 0
    early_stop_patience: int | None = None
    eval_every: int | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _KINDS[cls.kind] = cls

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _fix(owner, lambda: check_number(self.lr, "lr", strictly_positive=True), "try lr=1e-3")
        _fix(
            owner,
            lambda: check_number(self.weight_decay, "weight_decay", minimum=0.0),
            "try 0.0 or 1e-2",
        )
        _fix(owner, lambda: check_int(self.batch_size, "batch_size", minimum=1), "try 64")
        _fix(owner, lambda: check_int(self.seed, "seed"))
        if not 0 <= self.seed <= MAX_SEED:
            raise InputError(
                f"{owner}: seed={self.seed} is outside what torch takes (0 to 2**63 - 1); pass "
                f"e.g. seed=0"
            )
        _fix(
            owner,
            lambda: check_int(
                self.early_stop_patience, "early_stop_patience", minimum=1, allow_none=True
            ),
            "try early_stop_patience=3, or None to train for the whole budget",
        )
        _fix(
            owner,
            lambda: check_int(self.eval_every, "eval_every", minimum=1, allow_none=True),
            "try eval_every=50, or None",
        )
        for name in ("lr", "weight_decay"):  # 1 and 1.0 are the same option: keep floats
            object.__setattr__(self, name, float(getattr(self, name)))

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with ``"kind"`` (``"finetune"`` or ``"distill"``) first."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Rebuild a config from :meth:`to_dict` output; ``"kind"`` picks the class.

        ``TrainConfig.from_dict`` returns a :class:`DistillConfig` for ``kind="distill"``;
        ``DistillConfig.from_dict`` takes only that kind. A missing kind means ``cls``.

        Raises:
            InputError: ``data`` is not a dict or names a field the config does not have.
            UnknownNameError: ``data["kind"]`` names no config.
        """
        if not isinstance(data, Mapping):
            raise InputError(
                f"{cls.__name__}.from_dict needs a dict, got {type(data).__name__} "
                f"({data!r:.60}); pass what to_dict() returned, e.g. {{'kind': 'finetune', "
                f"'lr': 0.001}}"
            )
        fields = dict(data)
        kind = fields.pop("kind", cls.kind)
        target = _KINDS.get(kind) if isinstance(kind, str) else None
        if target is None or not issubclass(target, cls):
            known = [k for k, c in _KINDS.items() if issubclass(c, cls)]
            raise UnknownNameError(
                f"{cls.__name__}.from_dict: kind={kind!r} is not a config kind here; pass "
                f"one of {', '.join(repr(k) for k in known)}"
            )
        names = [f.name for f in dataclasses.fields(target)]
        unknown = sorted(str(k) for k in fields if k not in names)
        if unknown:
            raise InputError(
                f"{target.__name__} has no field {', '.join(repr(k) for k in unknown)}; its "
                f"fields are {', '.join(names)}"
            )
        return target(**fields)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Rebuild a config from :meth:`to_json` output."""
        return cls.from_dict(config_json(cls, text))


_KINDS[TrainConfig.kind] = TrainConfig


@dataclass(frozen=True, kw_only=True)
class DistillConfig(TrainConfig):
    """Options of :func:`netsculpt.distill`: the training options plus how to match.

    The loss is ``alpha * match + (1 - alpha) * task.loss`` (just ``match`` when the task
    yields no targets), plus ``hidden_weight * hidden`` when ``hidden_weight > 0``.

    Attributes:
        temperature: softens both distributions before the KL divergence of logits.
        alpha: weight of the teacher-matching loss, in [0, 1].
        hidden_weight: weight of the hidden-state loss; 0 matches outputs only.
        hidden_layers: qualified module names present in both models whose outputs to
            match (their shapes must be equal); ``None`` matches transformers hidden states
            or top-level children with equal shapes. Needs ``hidden_weight > 0``.
        output_kind: ``"logits"``, ``"embeddings"`` or ``"auto"`` (guessed from the
            outputs: ``last_hidden_state`` without ``logits`` is embeddings).
    """

    kind: ClassVar[str] = "distill"

    temperature: float = 2.0
    alpha: float = 0.5
    hidden_weight: float = 0.0
    hidden_layers: tuple[str, ...] | None = None
    output_kind: Literal["auto", "logits", "embeddings"] = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        _fix(
            owner,
            lambda: check_number(self.temperature, "temperature", strictly_positive=True),
            "try temperature=2.0",
        )
        _fix(owner, lambda: check_number(self.alpha, "alpha"), "try alpha=0.5")
        if not 0.0 <= self.alpha <= 1.0:
            raise InvalidRatioError(
                f"{owner}: alpha must be in [0, 1] (the weight of the teacher-matching loss), "
                f"got {self.alpha}; try alpha=0.5"
            )
        _fix(
            owner,
            lambda: check_number(self.hidden_weight, "hidden_weight", minimum=0.0),
            "try hidden_weight=1.0, or 0.0 to match outputs only",
        )
        if not isinstance(self.output_kind, str) or self.output_kind not in OUTPUT_KINDS:
            raise UnknownNameError(
                f"{owner}: output_kind={self.output_kind!r} is not known; pass one of "
                f"{', '.join(repr(k) for k in OUTPUT_KINDS)}"
            )
        for name in ("temperature", "alpha", "hidden_weight"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.hidden_layers is None:
            return
        names = _fix(owner, lambda: check_names(self.hidden_layers, "hidden_layers"), "or None")
        if not names:
            raise InputError(
                f"{owner}: hidden_layers={self.hidden_layers!r} names no layer; name the "
                f"modules whose outputs to match, e.g. hidden_layers=('layer1', 'layer2'), or "
                f"None to match top-level children"
            )
        if self.hidden_weight == 0:
            raise InputError(
                f"{owner}: hidden_layers={tuple(names)!r} is set but hidden_weight=0.0, so no "
                f"hidden-state loss would be computed; pass hidden_weight=1.0 (or drop "
                f"hidden_layers)"
            )
        object.__setattr__(self, "hidden_layers", tuple(names))
