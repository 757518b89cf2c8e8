"""Linear algebra: linear, matmul, addmm, convolutions, embeddings and attention.

These are the ops that own prunable weights: :meth:`Propagator.mark_output` records which
weight dimension is an op's output channel dimension, so that groups are named after their
producer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import fx

from netsculpt.graph.ops._common import Desc, int_arg
from netsculpt.graph.ops._registry import handles, short_name
from netsculpt.graph.spaces import static_size

if TYPE_CHECKING:
    from netsculpt.graph.propagate import Propagator

__all__: list[str] = []

MHA_WIDTH = (
    "a width of nn.MultiheadAttention, which checks its input against embed_dim and derives "
    "its head width from it; write the attention with nn.Linear projections to prune it"
)


@handles("linear")
def _linear(p: Propagator, node: fx.Node) -> Any:
    x, w = p.desc(node.args[0]), p.desc(node.args[1])
    b = p.desc(node.args[2]) if len(node.args) > 2 else None
    if x is None or w is None:
        return p.unsupported(node)
    p.unify(x[-1], w[-1])
    if p.in_multihead_attention(node):
        p.taint_desc([x[-1], w[0]], MHA_WIDTH)
    p.mark_output(node.args[1], 0)
    out = list(x[:-1]) + [w[0]] if len(w) == 2 else list(x[:-1])
    if b is not None and len(w) == 2:
        p.unify(b[0], w[0])
    return out


def _matmul_desc(p: Propagator, a: Desc, b: Desc, out_shape: Sequence[int]) -> Desc:
    a1 = len(a) == 1
    b1 = len(b) == 1
    if a1:
        a = [p.table.new(1)] + list(a)
    if b1:
        b = list(b) + [p.table.new(1)]
    p.unify(a[-1], b[-2])
    batch_a, batch_b = a[:-2], b[:-2]
    n = max(len(batch_a), len(batch_b))
    batch: Desc = []
    for i in range(n):
        ia, ib = i - (n - len(batch_a)), i - (n - len(batch_b))
        sa = batch_a[ia] if ia >= 0 else None
        sb = batch_b[ib] if ib >= 0 else None
        if sa is not None and sb is not None and sa.size == sb.size and sa.size != 1:
            batch.append(p.unify(sa, sb))
        elif sa is not None and (sb is None or sb.size == 1):
            batch.append(sa)
        elif sb is not None:
            batch.append(sb)
    out = batch + ([] if a1 else [a[-2]]) + ([] if b1 else [b[-1]])
    if tuple(s.size for s in out) != tuple(out_shape):
        return p.fresh(out_shape, "matmul")
    return out


@handles("matmul", "mm", "bmm")
def _matmul(p: Propagator, node: fx.Node) -> Any:
    a, b = p.desc(node.args[0]), p.desc(node.args[1])
    if a is None or b is None:
        return p.unsupported(node)
    return _matmul_desc(p, a, b, p.out_shape(node))


@handles("addmm", "baddbmm", "addbmm")
def _addmm(p: Propagator, node: fx.Node) -> Any:
    bias, a, b = (p.desc(x) for x in node.args[:3])
    if a is None or b is None:
        return p.unsupported(node)
    out = _matmul_desc(p, a, b, p.out_shape(node))
    if len(b) == 2:
        p.mark_output(node.args[2], 1)
    if bias is not None:
        for k, s in enumerate(reversed(bias)):
            t = out[len(out) - 1 - k]
            if s.size == t.size and s.size != 1:
                p.unify(s, t)
    return out


def _einsum_letters(equation: str, ranks: Sequence[int]) -> tuple[list[str], str] | None:
    """The letters of each operand of ``equation`` and of its output, with every ``...``
    written as letters of its own (right-aligned across operands, as broadcasting is)."""
    equation = equation.replace(" ", "")
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(ranks):
        return None
    widest = max(
        (r - len(t.replace("...", "")) for t, r in zip(terms, ranks, strict=True)), default=0
    )
    ellipsis = "".join(chr(0x3B1 + i) for i in range(max(widest, 0)))  # Greek: never in an equation
    letters: list[str] = []
    for term, rank in zip(terms, ranks, strict=True):
        if "..." in term:
            covered = rank - len(term.replace("...", ""))
            term = term.replace("...", ellipsis[len(ellipsis) - covered :] if covered else "")
        if len(term) != rank:
            return None
        letters.append(term)
    if not arrow:
        once = sorted(c for c in set(inputs) if c.isalpha() and inputs.count(c) == 1)
        output = ellipsis + "".join(once)
    else:
        output = output.replace("...", ellipsis)
    return letters, output


@handles("einsum")
def _einsum(p: Propagator, node: fx.Node) -> Any:
    """``torch.einsum``: every dimension labelled with one letter is one space (a broadcast
    dimension of size 1 excepted); a letter in the output that only a weight carries is that
    weight's output dimension."""
    operands = list(node.args[1]) if isinstance(node.args[1], (list, tuple)) else []
    descs = [p.desc(a) for a in operands]
    parsed = None
    if descs and all(d is not None for d in descs):
        parsed = _einsum_letters(str(node.args[0]), [len(d or []) for d in descs])
    if parsed is None:
        return p.unsupported(node)
    letters, output = parsed
    spaces: dict[str, Any] = {}
    for term, desc in zip(letters, descs, strict=True):
        for letter, space in zip(term, desc or [], strict=True):
            first = spaces.get(letter)
            if first is None or first.size == 1:
                spaces[letter] = space
            elif space.size != 1:
                p.unify(first, space)
    for k, (term, arg) in enumerate(zip(letters, operands, strict=True)):
        others = "".join(t for j, t in enumerate(letters) if j != k)
        for dim, letter in enumerate(term):
            if letter in output and letter not in others:
                p.mark_output(arg, dim)
    out = [spaces[letter] for letter in output if letter in spaces]
    if len(out) != len(output) or tuple(s.size for s in out) != p.out_shape(node):
        return p.fresh_like(node, "einsum")
    return out


@handles(
    "conv1d",
    "conv2d",
    "conv3d",
    "convolution",
    "_convolution",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
)
def _conv(p: Propagator, node: fx.Node) -> Any:
    name = short_name(node.target)
    x, w = p.desc(node.args[0]), p.desc(node.args[1])
    b = p.desc(node.args[2]) if len(node.args) > 2 else None
    if x is None or w is None:
        return p.unsupported(node)
    args = list(node.args)
    if name in ("convolution", "_convolution"):
        transposed = bool(args[6])
        groups = int_arg(args[8])
    elif name.startswith("conv_transpose"):
        transposed = True
        groups = int_arg(args[6] if len(args) > 6 else node.kwargs.get("groups", 1))
    else:
        transposed = False
        groups = int_arg(args[6] if len(args) > 6 else node.kwargs.get("groups", 1))
    module = p.module_of(node)
    for s in w[2:]:
        p.table.taint(s, "a convolution kernel dimension")
    p.taint_desc(x[2:] if len(x) == len(w) else x[1:], "a spatial dimension")
    out_shape = p.out_shape(node)
    batched = len(x) == len(w)
    xc = x[1] if batched else x[0]
    p.mark_output(node.args[1], 1 if transposed else 0)
    if transposed:
        if groups == 1:
            p.unify(xc, w[0])
            out_c = w[1]
        else:
            reason = f"a grouped transposed convolution in '{module}'"
            p.taint_desc([xc, w[0], w[1]], reason)
            out_c = p.table.new(out_shape[1 if batched else 0], reason)
    elif groups == 1:
        p.unify(xc, w[1])
        out_c = w[0]
    else:
        cin, cout = xc.size, w[0].size
        g_in = p.table.new(groups)
        p.unify(xc, p.table.make_prod([g_in, p.table.new(cin // groups)]))
        g_out = p.table.new(groups)
        p.unify(w[0], p.table.make_prod([g_out, p.table.new(cout // groups)]))
        p.unify(g_in, g_out)
        in_leaves = p.table.leaves(xc)
        if cin // groups > 1:
            p.unify(in_leaves[-1] if len(in_leaves) > 1 else xc, w[1])
        p.record_groups_site(module, "groups", g_in)
        out_c = w[0]
    if b is not None:
        p.unify(b[0], out_c)
    out: Desc = []
    if batched:
        out.append(x[0])
    out.append(out_c)
    for size in out_shape[len(out) :]:
        out.append(p.table.new(size, "a spatial dimension"))
    return out


@handles("embedding", "_embedding_bag", "embedding_bag")
def _embedding(p: Propagator, node: fx.Node) -> Any:
    w, idx = p.desc(node.args[0]), p.desc(node.args[1])
    if w is None:
        return p.unsupported(node)
    p.table.taint(w[0], "rows of an embedding table (vocabulary or positions)")
    p.mark_output(node.args[0], 1)
    val = node.meta.get("val")
    if isinstance(val, (list, tuple)):  # embedding_bag: (bags [B, D], and index bookkeeping)
        rest = [p.fresh_like_tensor(v, "embedding bag bookkeeping") for v in val[1:]]
        bags = val[0].shape
        if len(bags) != 2 or static_size(bags[1]) != w[1].size:
            return [p.fresh(bags, "embedding"), *rest]
        return [[p.table.new(bags[0], "the bags of an embedding bag"), w[1]], *rest]
    out_shape = p.out_shape(node)
    out = list(idx or []) + [w[1]]
    if tuple(s.size for s in out) != tuple(out_shape):
        return p.fresh_like(node, "embedding")
    return out


@handles(
    "scaled_dot_product_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_attention_math",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_flash_attention",
)
def _sdpa(p: Propagator, node: fx.Node) -> Any:
    q, k, v = (p.desc(a) for a in node.args[:3])
    if q is None or k is None or v is None:
        return p.unsupported(node)
    module = p.module_of(node)
    head_reason = (
        f"an attention head dimension in '{module}' (scaling and rotary embeddings depend on it)"
    )
    p.unify(q[-1], k[-1])
    p.table.taint(q[-1], head_reason)
    p.table.taint(v[-1], head_reason)
    p.unify(k[-2], v[-2])
    if len(q) >= 3 and len(k) >= 3:
        hq, hk = q[-3], k[-3]
        p.unify(hk, v[-3])
        if hq.size == hk.size:
            p.unify(hq, hk)
        elif hk.size and hq.size % hk.size == 0:
            rep = p.table.new(
                hq.size // hk.size, f"query heads sharing one key/value head in '{module}'"
            )
            p.unify(hq, p.table.make_prod([hk, rep]))
        for i in range(len(q) - 3):
            if q[i].size == k[i].size and q[i].size != 1:
                p.unify(q[i], k[i])
    out = list(q[:-1]) + [v[-1]]
    mask = p.desc(node.args[3]) if len(node.args) > 3 else p.desc(node.kwargs.get("attn_mask"))
    if mask is not None:
        scores = list(q[:-1]) + [k[-2]]
        for i, s in enumerate(reversed(mask)):
            t = scores[len(scores) - 1 - i] if i < len(scores) else None
            if t is not None and s.size == t.size and s.size != 1:
                p.unify(s, t)
    val = node.meta.get("val")
    if isinstance(val, (list, tuple)):
        return [out] + [p.fresh_like_tensor(v_, "attention statistics") for v_ in val[1:]]
    return out
