"""Reading ONNX graphs for ``ns.quantize``: which nodes are layers, which module each came
from, which ``float_layers`` entry matches which node, and which nodes the quantizer
quantized.

A *layer* is a node with a floating-point weight: an initializer input of two or more
dimensions (Conv, Gemm, MatMul, Gather of an embedding, ...). Its *module* is the PyTorch
module it came from, read from the ``pkg.torch.onnx.name_scopes`` metadata the dynamo
exporter writes, or from the names of its weights (``model.fc.weight`` -> ``fc``).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from netsculpt.errors import UnknownNameError

__all__ = ["Layer", "LayerChoice", "find_layers", "match_float_layers", "quantized_names"]

_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_WRAPPER = "model."  # export_onnx wraps the model in a module whose attribute is "model"
#: ops the quantizer puts in place of a float node (dynamic mode and QOperator format)
_INTEGER_OPS = frozenset(
    {
        "MatMulInteger",
        "ConvInteger",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
        "QAttention",
        "QLinearConv",
        "QLinearMatMul",
        "QGemm",
        "QEmbedLayerNormalization",
    }
)


@dataclass(frozen=True)
class Layer:
    """A node of the float graph that holds a floating-point weight."""

    node: str
    op_type: str
    modules: tuple[str, ...]  # the modules it belongs to, outermost first
    weights: tuple[str, ...]  # its float initializer inputs of 2+ dims

    @property
    def module(self) -> str:
        """The innermost module the node came from ('' when unknown)."""
        return self.modules[-1] if self.modules else ""


@dataclass(frozen=True)
class LayerChoice:
    """What ``ns.quantize`` did with one layer: quantized, or kept in float and why."""

    node: str
    op_type: str
    module: str
    quantized: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "op_type": self.op_type, "module": self.module}
        if not self.quantized:
            out["reason"] = self.reason
        return out


def _strip(name: str) -> str:
    return name[len(_WRAPPER) :] if name.startswith(_WRAPPER) else name


def _modules_of(node: Any, weights: tuple[str, ...]) -> tuple[str, ...]:
    modules: list[str] = []
    for entry in node.metadata_props:
        if entry.key == _SCOPES_KEY:
            scopes = re.findall(r"'([^']*)'", entry.value)
            # ['', 'model', 'model.stem', 'model.stem.1', 'op_name']: modules are dotted
            modules = [_strip(s) for s in scopes if s.startswith(_WRAPPER)]
    for weight in weights:  # a Conv folded with its BatchNorm is scoped to the norm
        owner = _strip(weight).rpartition(".")[0]
        if owner and owner not in modules:
            modules.append(owner)
    return tuple(modules)


def find_layers(proto: Any) -> list[Layer]:
    """Every node of ``proto`` with a float initializer input of two or more dims."""
    from onnx import TensorProto

    floats = {
        t.name
        for t in proto.graph.initializer
        if len(t.dims) >= 2
        and t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
    }
    layers = []
    for node in proto.graph.node:
        weights = tuple(name for name in node.input if name in floats)
        if weights:
            layers.append(Layer(node.name, node.op_type, _modules_of(node, weights), weights))
    return layers


def _matches(entry: str, layer: Layer) -> bool:
    if entry.startswith("re:"):
        pattern = re.compile(entry[3:])
        return any(pattern.fullmatch(name) for name in (layer.node, *layer.modules))
    if entry == layer.node:
        return True
    return any(m == entry or m.startswith(entry + ".") for m in layer.modules)


def match_float_layers(entries: tuple[str, ...], layers: list[Layer]) -> dict[str, str]:
    """node name -> the ``float_layers`` entry that keeps it in float.

    Raises:
        UnknownNameError: an entry matches no layer; the message lists close names.
    """
    kept: dict[str, str] = {}
    for entry in entries:
        hits = [layer for layer in layers if _matches(entry, layer)]
        if not hits:
            names = sorted({m for layer in layers for m in layer.modules} - {""})
            nodes = [layer.node for layer in layers]
            close = difflib.get_close_matches(entry, names + nodes, n=5, cutoff=0.5)
            hint = (
                f"close names: {', '.join(repr(c) for c in close)}"
                if close
                else f"layers with weights: {', '.join(repr(n) for n in (names or nodes)[:12])}"
            )
            raise UnknownNameError(
                f"float_layers entry {entry!r} matches no layer with weights in the ONNX "
                f"model; {hint}; pass a module name, an ONNX node name, or 're:pattern'"
            )
        for layer in hits:
            kept.setdefault(layer.node, entry)
    return kept


def quantized_names(proto: Any, layers: list[Layer]) -> set[str]:
    """The nodes among ``layers`` whose weight the quantizer replaced by an integer one.

    QDQ format keeps the node's name and feeds its weight through a ``DequantizeLinear``
    of an integer initializer; dynamic mode (and QOperator format) replaces the node by an
    integer op (``MatMulInteger``, ``ConvInteger``, ...) whose name starts with the node's.
    """
    from onnx import TensorProto

    produced_by = {out: node for node in proto.graph.node for out in node.output}
    integer_inits = {
        t.name
        for t in proto.graph.initializer
        if t.data_type in (TensorProto.INT8, TensorProto.UINT8)
    }
    by_name = {node.name: node for node in proto.graph.node}
    integer_nodes = [node for node in proto.graph.node if node.op_type in _INTEGER_OPS]
    done: set[str] = set()
    for layer in layers:
        node = by_name.get(layer.node)
        if node is not None and node.op_type == layer.op_type:
            for name in node.input:
                source = produced_by.get(name)
                if name in integer_inits or (  # Gather of an int8 table, dequantized after
                    source is not None
                    and source.op_type == "DequantizeLinear"
                    and source.input[0] in integer_inits
                ):
                    done.add(layer.node)
    # an integer node is named after the node it replaced ("<node>_quant", a Gemm split
    # first: "<node>_MatMul_quant"): it belongs to the longest layer name it starts with, so
    # "node_linear_1_MatMul_quant" is node_linear_1's, not node_linear's
    names = sorted((layer.node for layer in layers), key=len, reverse=True)
    for n in integer_nodes:
        owner = next((name for name in names if n.name.startswith(name)), None)
        if owner is not None:
            done.add(owner)
    return done
