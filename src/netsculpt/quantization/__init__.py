"""Post-training int8 quantization through ONNX Runtime: :func:`quantize` and its config.

``ns.quantize(model, example_inputs, ns.QuantizeConfig(mode="static"), calib=batches)``
returns a :class:`QuantizedModel`: the int8 ONNX file, each layer's choice (int8, or float
and why) and the sizes on disk.
"""

from __future__ import annotations

from netsculpt.quantization.api import QuantizedModel, quantize
from netsculpt.quantization.config import QuantizeConfig

__all__ = ["QuantizeConfig", "QuantizedModel", "quantize"]
