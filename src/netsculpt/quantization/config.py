"""Options of ``ns.quantize`` as a value (frozen, checked on construction, JSON round trip).

>>> config = QuantizeConfig(mode="dynamic", float_layers=["fc"])
>>> config.float_layers, config.activation_type   # dynamic mode quantizes activations to uint8
(('fc',), 'uint8')
>>> QuantizeConfig.from_json(config.to_json()) == config
True
>>> QuantizeConfig(mode="fp8")  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
netsculpt.errors.UnknownNameError: QuantizeConfig: mode='fp8' is not a mode onnxruntime ...
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from netsculpt._checks import check_config_fields, check_int, check_names, config_json
from netsculpt.errors import InputError, UnknownNameError

__all__ = ["CALIBRATION_METHODS", "MODES", "QUANT_TYPES", "QuantizeConfig"]

#: ``"dynamic"``: int8 weights, activations quantized on the fly (transformer encoders);
#: ``"static"``: int8 weights and activations with ranges from calibration batches (CNNs).
MODES: tuple[str, ...] = ("dynamic", "static")
#: The integer types onnxruntime's quantizer writes (its ``QuantType.QInt8`` / ``QUInt8``).
QUANT_TYPES: tuple[str, ...] = ("int8", "uint8")
#: How static mode turns calibration activations into ranges (onnxruntime's
#: ``CalibrationMethod``).
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")

Mode = Literal["dynamic", "static"]
QuantTypeName = Literal["int8", "uint8"]


def _choice(owner: str, field: str, value: Any, choices: tuple[str, ...], fix: str) -> None:
    if not isinstance(value, str) or value not in choices:
        raise UnknownNameError(
            f"{owner}: {field}={value!r} is not a {fix}; pass one of "
            f"{', '.join(repr(c) for c in choices)}"
        )


@dataclass(frozen=True, kw_only=True)
class QuantizeConfig:
    """How :func:`netsculpt.quantize` quantizes a model with onnxruntime's quantizer.

    Attributes:
        mode: ``"static"`` (weights and activations, QDQ format, needs calibration batches)
            or ``"dynamic"`` (weights only ahead of time, activations at run time; the
            usual choice for transformer encoders).
        per_channel: one scale per output channel of each weight (more accurate than one
            per tensor, for the same speed).
        calib_batches: how many calibration batches static mode reads (at most).
        calibration_method: ``"minmax"``, ``"entropy"`` or ``"percentile"``.
        weight_type: ``"int8"`` or ``"uint8"``.
        activation_type: ``"int8"`` or ``"uint8"``; ``None`` picks ``"int8"`` for static
            mode and ``"uint8"`` for dynamic mode (the only type onnxruntime's dynamic
            quantization produces).
        op_types: ONNX op types to quantize (e.g. ``("Conv", "MatMul")``); ``None`` means
            every op type onnxruntime can quantize in this mode.
        float_layers: module names (``"fc"``, ``"encoder.layer.0"``; a module's sub-modules
            included), ONNX node names, or ``"re:pattern"`` patterns, kept in float.
    """

    mode: Mode = "static"
    per_channel: bool = True
    calib_batches: int = 8
    calibration_method: str = "minmax"
    weight_type: QuantTypeName = "int8"
    activation_type: QuantTypeName | None = None
    op_types: tuple[str, ...] | None = None
    float_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _choice(owner, "mode", self.mode, MODES, "mode onnxruntime can quantize with")
        if not isinstance(self.per_channel, bool):
            raise InputError(
                f"{owner}: per_channel must be True or False, got {self.per_channel!r}"
            )
        try:
            check_int(self.calib_batches, "calib_batches", minimum=1)
        except InputError as exc:
            raise InputError(f"{owner}: {exc}; e.g. calib_batches=8") from None
        _choice(
            owner,
            "calibration_method",
            self.calibration_method,
            CALIBRATION_METHODS,
            "calibration method of onnxruntime",
        )
        _choice(owner, "weight_type", self.weight_type, QUANT_TYPES, "quantized type")
        activation = self.activation_type
        if activation is None:
            activation = "int8" if self.mode == "static" else "uint8"
        _choice(owner, "activation_type", activation, QUANT_TYPES, "quantized type")
        if self.mode == "dynamic" and activation != "uint8":
            raise InputError(
                f"{owner}: activation_type={activation!r} cannot run in dynamic mode: "
                f"onnxruntime's dynamic quantization computes activations in uint8 only; "
                f"pass activation_type='uint8' (or None), or mode='static' for int8 activations"
            )
        object.__setattr__(self, "activation_type", activation)
        if self.op_types is not None:
            op_types = tuple(check_names(self.op_types, "op_types"))
            if not op_types:
                raise InputError(
                    f"{owner}: op_types=() quantizes nothing; pass None for every op type "
                    f"onnxruntime can quantize, or e.g. op_types=('Conv', 'MatMul')"
                )
            object.__setattr__(self, "op_types", op_types)
        try:
            float_layers = tuple(check_names(self.float_layers, "float_layers"))
        except InputError as exc:
            raise InputError(f"{owner}: {exc}") from None
        if any(not name for name in float_layers):
            raise InputError(
                f"{owner}: float_layers holds an empty name; pass module names such as 'fc'"
            )
        object.__setattr__(self, "float_layers", float_layers)

    def keeping_float(self, layers: tuple[str, ...]) -> QuantizeConfig:
        """This config with ``layers`` added to :attr:`float_layers` (each once, in order)."""
        extra = tuple(dict.fromkeys(m for m in layers if m not in self.float_layers))
        return dataclasses.replace(self, float_layers=self.float_layers + extra) if extra else self

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantizeConfig:
        """Rebuild a config from :meth:`to_dict` output.

        Raises:
            InputError: ``data`` is not a dict, or names a field the config does not have.
        """
        return cls(**check_config_fields(cls, data))

    @classmethod
    def from_json(cls, text: str) -> QuantizeConfig:
        """Rebuild a config from :meth:`to_json` output."""
        return cls.from_dict(config_json(cls, text))
