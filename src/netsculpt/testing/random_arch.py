"""Random architectures for property tests: DAGs of conv/linear/norm/activation/add/concat/split.

:func:`random_architectures` is a hypothesis strategy drawing ``(model, example_inputs)``
pairs whose shapes are consistent by construction::

    from hypothesis import given
    from netsculpt.testing.random_arch import random_architectures

    @given(random_architectures())
    def test_pruning_keeps_the_forward_pass(arch):
        model, example_inputs = arch
        small = ns.prune(model, example_inputs, ratio=0.3)
        ...

A drawn architecture is a frozen :class:`ArchSpec` (a list of :class:`Op` over numbered
values); :func:`build_arch` turns a spec into a model and inputs, seeded from the spec, so
the same drawn data always gives the same weights and inputs. Every value a spec computes
reaches the output: the leaves are pooled to vectors, concatenated and fed to a linear head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

from netsculpt._inputs import ExampleInputs
from netsculpt.errors import InputError, UnknownNameError
from netsculpt.testing._blocks import randomise_norms

DOMAINS = ("image", "vector", "sequence")
ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "sigmoid")
BATCH = 2
SEQ = 4
CLASSES = 3


@dataclass(frozen=True)
class Shape:
    """The shape of one value: ``domain`` (image NCHW, vector NC, sequence NTC), channels, size."""

    domain: str
    channels: int
    size: int = 0  # image height = width; 0 elsewhere


@dataclass(frozen=True)
class Op:
    """One operation: ``kind`` applied to the values numbered ``inputs``, with its options.

    ``options`` is a tuple of ``(name, value)`` pairs so that the spec stays hashable.
    """

    kind: str
    inputs: tuple[int, ...]
    options: tuple[tuple[str, Any], ...] = ()

    def get(self, name: str) -> Any:
        return dict(self.options)[name]


@dataclass(frozen=True)
class ArchSpec:
    """A drawn architecture: the input shape, the operations in order, and a seed."""

    input: Shape
    ops: tuple[Op, ...]
    seed: int

    def shapes(self) -> list[Shape]:
        """The shape of every value: the input, then each op's outputs in order."""
        shapes = [self.input]
        for op in self.ops:
            shapes.extend(_out_shapes(op, [shapes[i] for i in op.inputs]))
        return shapes

    def leaves(self) -> list[int]:
        """Values that no op consumes; they feed the head."""
        used = {i for op in self.ops for i in op.inputs}
        return [i for i in range(len(self.shapes())) if i not in used]


def _out_shapes(op: Op, ins: list[Shape]) -> list[Shape]:
    x = ins[0]
    if op.kind == "conv":
        size = x.size // op.get("stride")
        return [Shape("image", op.get("cout"), size)]
    if op.kind == "conv_transpose":
        return [Shape("image", op.get("cout"), x.size * 2)]
    if op.kind == "linear":
        return [Shape(x.domain, op.get("cout"))]
    if op.kind in ("norm", "act", "merge"):
        return [x]
    if op.kind == "concat":
        return [Shape(x.domain, x.channels + ins[1].channels, x.size)]
    if op.kind == "split":
        first = op.get("first")
        return [Shape(x.domain, first, x.size), Shape(x.domain, x.channels - first, x.size)]
    if op.kind == "pool":
        return [Shape("image", x.channels, x.size // 2)]
    if op.kind == "flatten":
        return [Shape("vector", x.channels * x.size * x.size)]
    if op.kind == "mean":
        return [Shape("vector", x.channels)]
    raise ValueError(f"unknown op kind {op.kind!r}")


class RandomNet(nn.Module):
    """A model that evaluates an :class:`ArchSpec`; its ``repr`` shows the wiring."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        self.layers = nn.ModuleDict()
        shapes = [spec.input]
        for index, op in enumerate(spec.ops):
            ins = [shapes[i] for i in op.inputs]
            module = _make_module(op, ins[0])
            if module is not None:
                self.layers[_key(index, op)] = module
            shapes.extend(_out_shapes(op, ins))
        self.leaves = spec.leaves()
        width = sum(shapes[i].channels for i in self.leaves)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = [x]
        for index, op in enumerate(self.spec.ops):
            out = self._run(index, op, [values[i] for i in op.inputs])
            values.extend(out)
        pooled = [_to_vector(values[i]) for i in self.leaves]
        return self.head(torch.cat(pooled, dim=-1) if len(pooled) > 1 else pooled[0])

    def _run(self, index: int, op: Op, ins: list[torch.Tensor]) -> list[torch.Tensor]:
        x = ins[0]
        dim = -1 if x.dim() == 3 else 1
        if op.kind in ("conv", "conv_transpose", "linear", "norm"):
            return [self.layers[_key(index, op)](x)]
        if op.kind == "act":
            return [getattr(F, op.get("fn"))(x)]
        if op.kind == "merge":
            return [x + ins[1] if op.get("fn") == "add" else x * ins[1]]
        if op.kind == "concat":
            return [torch.cat([x, ins[1]], dim=dim)]
        if op.kind == "split":
            if op.get("chunk"):
                return list(x.chunk(2, dim=dim))
            first = op.get("first")
            return list(torch.split(x, [first, x.shape[dim] - first], dim=dim))
        if op.kind == "pool":
            return [F.max_pool2d(x, 2) if op.get("fn") == "max" else F.avg_pool2d(x, 2)]
        if op.kind == "flatten":
            return [torch.flatten(x, 1)]
        if op.kind == "mean":
            return [_to_vector(x)]
        raise ValueError(f"unknown op kind {op.kind!r}")

    def extra_repr(self) -> str:
        lines = [f"input: {self.spec.input}"]
        for index, op in enumerate(self.spec.ops):
            opts = ", ".join(f"{k}={v}" for k, v in op.options)
            lines.append(f"op{index}: {op.kind}{list(op.inputs)} {opts}".rstrip())
        lines.append(f"head <- leaves {self.leaves}")
        return "\n".join(lines)


def _key(index: int, op: Op) -> str:
    return f"{op.kind}{index}"


def _to_vector(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4:
        return x.mean(dim=(2, 3))
    if x.dim() == 3:
        return x.mean(dim=1)
    return x


def _make_module(op: Op, x: Shape) -> nn.Module | None:
    if op.kind == "conv":
        k = op.get("kernel")
        return nn.Conv2d(
            x.channels, op.get("cout"), k, stride=op.get("stride"), padding=k // 2,
            groups=op.get("groups"), bias=op.get("bias"),
        )  # fmt: skip
    if op.kind == "conv_transpose":
        return nn.ConvTranspose2d(x.channels, op.get("cout"), 2, stride=2)
    if op.kind == "linear":
        return nn.Linear(x.channels, op.get("cout"), bias=op.get("bias"))
    if op.kind == "norm":
        fn = op.get("fn")
        if fn == "batch":
            return nn.BatchNorm2d(x.channels) if x.domain == "image" else nn.BatchNorm1d(x.channels)
        if fn == "group":
            return nn.GroupNorm(op.get("groups"), x.channels)
        return nn.LayerNorm(x.channels)
    return None


def build_arch(spec: ArchSpec) -> tuple[nn.Module, ExampleInputs]:
    """Build the model (eval mode, trained-looking norms) and its example input for ``spec``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = randomise_norms(RandomNet(spec)).eval()
        x = spec.input
        if x.domain == "image":
            inputs = torch.randn(BATCH, x.channels, x.size, x.size)
        elif x.domain == "sequence":
            inputs = torch.randn(BATCH, SEQ, x.channels)
        else:
            inputs = torch.randn(BATCH, x.channels)
    return model, inputs


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def _draw_op(draw: st.DrawFn, shapes: list[Shape], uneven_splits: bool) -> Op:
    # prefer the most recent value, so drawn models are deep as well as wide
    src = draw(st.one_of(st.just(len(shapes) - 1), st.integers(0, len(shapes) - 1)))
    x = shapes[src]
    same = [i for i, s in enumerate(shapes) if s == x and i != src]
    joinable = [
        i for i, s in enumerate(shapes) if i != src and s.domain == x.domain and s.size == x.size
    ]
    kinds = (
        ["norm", "act"] + (["merge", "merge"] if same else []) + (["concat"] if joinable else [])
    )
    can_chunk = x.channels >= 2 and (uneven_splits or x.channels % 2 == 0)
    kinds += ["split"] if can_chunk else []
    if x.domain == "image":
        kinds += ["conv", "conv", "conv", "mean"]
        kinds += ["pool"] if x.size >= 2 and x.size % 2 == 0 else []
        kinds += ["flatten"] if x.channels * x.size * x.size <= 64 else []
        kinds += ["conv_transpose"] if x.size <= 4 else []
    else:
        kinds += ["linear", "linear"] + (["mean"] if x.domain == "sequence" else [])
    kind = draw(st.sampled_from(kinds))

    # keeping the width is likely, so that residual adds and gates find partners
    width = st.one_of(st.just(x.channels), st.integers(2, 16))
    if kind == "conv":
        cout = draw(width)
        # grouped (up to 8 groups) or depthwise
        groups = [
            g
            for g in _divisors(x.channels)
            if (cout % g == 0 and g <= 8) or g == x.channels == cout
        ]
        opts = {
            "cout": cout,
            "kernel": draw(st.sampled_from([1, 3])),
            "stride": draw(st.sampled_from([1, 2])) if x.size >= 2 and x.size % 2 == 0 else 1,
            "groups": draw(st.sampled_from(groups)),
            "bias": draw(st.booleans()),
        }
        return Op("conv", (src,), tuple(opts.items()))
    if kind == "conv_transpose":
        return Op(kind, (src,), (("cout", draw(width)),))
    if kind == "linear":
        opts = {"cout": draw(width), "bias": draw(st.booleans())}
        return Op(kind, (src,), tuple(opts.items()))
    if kind == "norm":
        fns = {"image": ["batch", "group"], "vector": ["batch", "layer"], "sequence": ["layer"]}
        fn = draw(st.sampled_from(fns[x.domain]))
        num_groups = draw(st.sampled_from(_divisors(x.channels))) if fn == "group" else 0
        return Op(kind, (src,), (("fn", fn), ("groups", num_groups)))
    if kind == "act":
        return Op(kind, (src,), (("fn", draw(st.sampled_from(ACTIVATIONS))),))
    if kind == "merge":
        other = draw(st.sampled_from(same))
        return Op(kind, (src, other), (("fn", draw(st.sampled_from(["add", "add", "mul"]))),))
    if kind == "concat":
        return Op(kind, (src, draw(st.sampled_from(joinable))))
    if kind == "split":
        chunk = x.channels % 2 == 0 and (not uneven_splits or draw(st.booleans()))
        first = x.channels // 2 if chunk else draw(st.integers(1, x.channels - 1))
        return Op(kind, (src,), (("chunk", chunk), ("first", first)))
    if kind == "pool":
        return Op(kind, (src,), (("fn", draw(st.sampled_from(["max", "avg"]))),))
    return Op(kind, (src,))  # flatten, mean


@st.composite
def random_specs(
    draw: st.DrawFn,
    *,
    max_ops: int = 8,
    domains: tuple[str, ...] = DOMAINS,
    uneven_splits: bool = True,
) -> ArchSpec:
    """A hypothesis strategy for :class:`ArchSpec` values of 1 to ``max_ops`` operations.

    Options as in :func:`random_architectures`.
    """
    _check_options(max_ops, domains)
    # images are drawn twice as often: they carry the most op kinds
    domain = draw(st.sampled_from([d for d in domains for _ in range(2 if d == "image" else 1)]))
    if domain == "image":
        shape = Shape("image", draw(st.integers(1, 4)), draw(st.sampled_from([4, 8])))
    else:
        shape = Shape(domain, draw(st.integers(2, 16)))
    shapes = [shape]
    ops: list[Op] = []
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(_draw_op(shapes, uneven_splits))
        ops.append(op)
        shapes.extend(_out_shapes(op, [shapes[i] for i in op.inputs]))
    return ArchSpec(input=shape, ops=tuple(ops), seed=draw(st.integers(0, 2**16)))


def _check_options(max_ops: int, domains: tuple[str, ...]) -> None:
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown or not domains:
        raise UnknownNameError(
            f"unknown input domain(s) {unknown or list(domains)!r}; "
            f"choose from {', '.join(DOMAINS)}"
        )
    if max_ops < 1:
        raise InputError(f"max_ops={max_ops} draws no operation; pass max_ops >= 1")


def random_architectures(
    *, max_ops: int = 8, domains: tuple[str, ...] = DOMAINS, uneven_splits: bool = True
) -> st.SearchStrategy[tuple[nn.Module, ExampleInputs]]:
    """A hypothesis strategy drawing ``(model, example_inputs)`` from random DAG architectures.

    Models mix Conv2d (plain, grouped, depthwise, strided, transposed), Linear, BatchNorm,
    GroupNorm, LayerNorm, activations, residual add and gating multiply, concat, split and
    chunk, pooling and flatten into a linear head, over image (NCHW), vector (NC) or
    sequence (NTC) inputs. ``domains`` limits the input kinds drawn.

    ``uneven_splits=True`` also draws ``torch.split(x, [a, b])`` with sizes fixed in the
    model's code: a pruner cannot rewrite those sizes, so it must keep the split input's
    width (``x.chunk(2)``, drawn either way, adapts to any even width).
    """
    _check_options(max_ops, domains)
    return random_specs(max_ops=max_ops, domains=domains, uneven_splits=uneven_splits).map(
        build_arch
    )
