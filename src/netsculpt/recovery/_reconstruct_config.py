"""The options of :func:`netsculpt.reconstruct` as one value (frozen, checked, JSON).

Kept apart from :mod:`netsculpt.recovery.reconstruct` so that :class:`netsculpt.PruneConfig`
can hold one (``PruneConfig(reconstruct=ReconstructConfig(...))``) without importing the
reconstruction code:

>>> config = ReconstructConfig(method="bias", damping=1e-3)
>>> ReconstructConfig.from_json(config.to_json()) == config
True
>>> ReconstructConfig.from_dict({"method": "refit"}).sequential
True
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from netsculpt._checks import check_config_fields, check_int, check_number, config_json
from netsculpt.errors import InputError, UnknownNameError

__all__ = ["METHODS", "SCOPES", "ReconstructConfig", "as_reconstruct_config"]

#: What ``ReconstructConfig.method`` may be.
METHODS: tuple[str, ...] = ("refit", "bias")
#: What ``ReconstructConfig.scope`` may be.
SCOPES: tuple[str, ...] = ("inputs", "changed")


def _fix(check: Any, fix: str) -> Any:
    try:
        return check()
    except InputError as exc:
        raise InputError(f"ReconstructConfig: {exc}; {fix}") from None


@dataclass(frozen=True, kw_only=True)
class ReconstructConfig:
    """How :func:`netsculpt.reconstruct` refits the layers that read pruned activations.

    Attributes:
        method: ``"refit"`` solves each layer's weight and bias by least squares so that,
            on the calibration batches, its output on the pruned model's inputs matches the
            original layer's output on the original model's inputs; ``"bias"`` keeps the
            weight and shifts the bias by the mean output error (bias compensation).
        damping: ridge term, relative to the mean diagonal of the layer's input Gram matrix
            ``X^T X``; it pulls the solution towards the current weights where the data says
            little. ``1`` (cautious) to ``1e-4`` (close fit); ``0`` needs well-conditioned
            inputs. In ``bench/reconstruct.py`` CNNs with batch norm did best at ``1e-2`` and
            the MiniLM encoder at ``0.3``-``1``: choose it on a validation split.
        max_features: a layer whose refit reads more input features than this (a
            convolution counts ``in_channels * kernel size``, plus one for a bias) falls back
            to bias compensation; the normal equations take ``8 * max_features**2`` bytes.
        sequential: refit layers in execution order, re-running the pruned model after each
            so that later layers are fitted to the inputs the refitted earlier layers give
            them (as SparseGPT and Wanda do). ``False`` fits every layer from one pass of
            each model: faster, usually less accurate.
        scope: which layers: ``"inputs"``, those whose input width was pruned (they lost
            inputs); ``"changed"``, every layer the plan changes, also those that lost only
            outputs (their kept outputs are refitted to the inputs earlier pruning changed).
            On MiniLM ``"changed"`` refits three times as many layers and scored higher.
        ignore_padding: leave out token rows whose ``attention_mask`` is 0, when the
            calibration batches are dicts holding an ``attention_mask`` of shape
            ``[batch, sequence]`` and a layer reads ``[batch, sequence, features]``.
    """

    method: Literal["refit", "bias"] = "refit"
    damping: float = 1e-2
    max_features: int = 8192
    sequential: bool = True
    scope: Literal["inputs", "changed"] = "inputs"
    ignore_padding: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or self.method not in METHODS:
            close = difflib.get_close_matches(str(self.method), METHODS, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownNameError(
                f"ReconstructConfig(method={self.method!r}) is not a method; {hint}choose "
                f"'refit' (least-squares weights) or 'bias' (bias compensation only)"
            )
        if not isinstance(self.scope, str) or self.scope not in SCOPES:
            raise UnknownNameError(
                f"ReconstructConfig(scope={self.scope!r}) is not a scope; choose 'inputs' "
                f"(layers whose input width was pruned) or 'changed' (every layer the plan "
                f"changes)"
            )
        _fix(
            lambda: check_number(self.damping, "damping", minimum=0.0),
            "try damping=1e-2 (1e-1 is more cautious, 1e-4 fits closer)",
        )
        _fix(
            lambda: check_int(self.max_features, "max_features", minimum=1),
            "try max_features=8192 (8 * 8192**2 bytes = 512 MiB for the largest layer)",
        )
        for name in ("sequential", "ignore_padding"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise InputError(
                    f"ReconstructConfig({name}={value!r}): {name} must be True or False, got "
                    f"{type(value).__name__}"
                )
        object.__setattr__(self, "damping", float(self.damping))

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReconstructConfig:
        """The config :meth:`to_dict` wrote; missing fields take their defaults.

        Raises:
            InputError: ``data`` is not a mapping, or names a field the config lacks.
        """
        return cls(**check_config_fields(cls, data))

    @classmethod
    def from_json(cls, text: str) -> ReconstructConfig:
        """The config in JSON ``text`` (as :meth:`to_json` writes it)."""
        return cls.from_dict(config_json(cls, text))


def as_reconstruct_config(value: Any, where: str) -> ReconstructConfig | None:
    """``value`` as a config: ``None``/``False`` is none, ``True`` the default, a dict
    (as :meth:`ReconstructConfig.to_dict` writes) is read back.

    Raises:
        InputError: anything else (the message names ``where``).
    """
    if value is None or value is False:
        return None
    if value is True:
        return ReconstructConfig()
    if isinstance(value, ReconstructConfig):
        return value
    if isinstance(value, Mapping):
        return ReconstructConfig.from_dict(value)
    raise InputError(
        f"{where}={value!r:.60} ({type(value).__name__}): pass True (the default "
        f"reconstruction), False, or a ReconstructConfig, e.g. "
        f"ns.ReconstructConfig(method='bias')"
    )
