"""Pooling, resampling and padding: spatial dimensions change, batch and channels stay."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import fx

from netsculpt.graph.ops._common import Desc
from netsculpt.graph.ops._registry import handles

if TYPE_CHECKING:
    from netsculpt.graph.propagate import Propagator

__all__: list[str] = []


@handles(
    "constant_pad_nd",
    "pad",
    "reflection_pad1d",
    "reflection_pad2d",
    "replication_pad1d",
    "replication_pad2d",
    "reflection_pad3d",
    "replication_pad3d",
    "circular_pad2d",
)
def _pad(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    out_shape = p.out_shape(node)
    if d is None:
        return p.fresh_like(node, "")
    out: Desc = []
    for i, s in enumerate(d):
        if s.size == out_shape[i]:
            out.append(s)
        else:
            p.taint_desc([s], f"padded in module '{p.module_of(node)}'")
            out.append(p.table.new(out_shape[i], "padded"))
    return out


@handles(
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool2d_with_indices",
    "max_pool1d_with_indices",
    "max_pool3d_with_indices",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "_adaptive_avg_pool2d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "upsample_nearest1d",
    "upsample_nearest2d",
    "upsample_nearest3d",
    "upsample_bilinear2d",
    "upsample_bicubic2d",
    "upsample_linear1d",
    "upsample_trilinear3d",
    "_upsample_nearest_exact2d",
    "_upsample_bilinear2d_aa",
    "interpolate",
    "grid_sampler",
    "grid_sampler_2d",
    "lp_pool2d",
)
def _spatial(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    val = node.meta.get("val")
    shape = tuple(val[0].shape) if isinstance(val, (list, tuple)) else p.out_shape(node)
    p.taint_desc(d[2:], "a spatial dimension")
    out: Desc = []
    for i, size in enumerate(shape):
        if i < 2 and i < len(d) and d[i].size == size:
            out.append(d[i])
        else:
            out.append(p.table.new(size, "a spatial dimension"))
    if isinstance(val, (list, tuple)):
        return [out, list(out)]
    return out
