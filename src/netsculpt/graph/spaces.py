"""Channel spaces: the union-find at the heart of netsculpt's dependency analysis.

Every dimension of every tensor in a captured graph is described by one :class:`Space`.
Two dimensions that must keep the same indices when a channel is removed (the two
operands of a residual add, the input features of a linear layer and the last dimension
of its input, the query and key head dimensions of an attention) are *unified*.

A space can be refined into a structure when an operation looks inside it:

* ``prod``: a reshape splits a dimension of size ``H*D`` into ``[H, D]``; the space
  becomes the product of two child spaces (outer first), so attention heads are found;
* ``cat``: a concatenation or a split at offsets; the space becomes the concatenation of
  child spaces, each owning a contiguous range.

Leaves that are never refined are the prunable units. A leaf is *tainted* (not prunable)
when something depends on its exact size: a model input or output, a normalisation over
it, a literal created by the code, an operation netsculpt does not understand. The first
reason is kept so that the user can be told why a group was skipped.
"""

from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import dataclass, field

import numpy as np

DATA_DEPENDENT = (
    "a data-dependent size (how many rows depends on the values, such as the tokens routed "
    "to one expert)"
)


def static_size(size: object) -> int:
    """``size`` as an int; a data-dependent size (an unbacked SymInt) as a negative stand-in.

    torch.export gives a size that depends on tensor values (``nonzero``, ``torch.where(mask)``,
    boolean indexing: the tokens an expert receives) as a symbol with no value. Such a
    dimension is never a prunable channel; it gets a negative size, the same for the same
    symbol (so two dimensions of one symbol still unify), derived from the symbol's text
    without Python's salted ``hash`` so that analysis stays the same from run to run.
    """
    if isinstance(size, int):
        return size
    try:
        return int(size)  # type: ignore[call-overload]
    except Exception:  # noqa: BLE001 - torch raises its own guard errors for unbacked sizes
        return -1 - zlib.crc32(str(size).encode()) % (1 << 30)


@dataclass(eq=False)
class Space:
    """One dimension's index space; a node of the union-find."""

    size: int
    uid: int
    parent: Space | None = None
    taint: str = ""
    kind: str = ""  # "prod", "cat" or "" for a leaf
    children: list[Space] = field(default_factory=list)
    rank: int = 0

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Space#{self.uid}({self.size}{', ' + self.kind if self.kind else ''})"


class SpaceTable:
    """Creates spaces and keeps the union-find consistent."""

    def __init__(self) -> None:
        self._next = 0
        self.conflicts: list[str] = []
        # outer child uid -> (the space split_prod refined, the taint of its inner factors)
        self._outer_of: dict[int, tuple[Space, str]] = {}

    # -- creation -------------------------------------------------------------------
    def new(self, size: object, taint: str = "") -> Space:
        self._next += 1
        value = static_size(size)
        taint = taint or (DATA_DEPENDENT if value < 0 else "")
        return Space(size=value, uid=self._next, taint=taint)

    # -- union-find -----------------------------------------------------------------
    def find(self, space: Space) -> Space:
        root = space
        while root.parent is not None:
            root = root.parent
        while space.parent is not None and space.parent is not root:
            nxt = space.parent
            space.parent = root
            space = nxt
        return root

    def taint(self, space: Space, reason: str) -> None:
        root = self.find(space)
        stack = [root]
        seen: set[int] = set()
        while stack:
            s = self.find(stack.pop())
            if s.uid in seen:
                continue
            seen.add(s.uid)
            if not s.taint:
                s.taint = reason
            stack.extend(s.children)

    def is_tainted(self, space: Space) -> bool:
        return bool(self.find(space).taint)

    def unify(self, a: Space, b: Space) -> Space:
        """Make ``a`` and ``b`` the same space; returns the representative."""
        a, b = self.find(a), self.find(b)
        if a is b:
            return a
        if a.size != b.size:
            reason = f"coupled dimensions of different sizes ({a.size} and {b.size})"
            self.conflicts.append(reason)
            self.taint(a, reason)
            self.taint(b, reason)
            return a
        if a.size == 1:
            return self._link(a, b)
        if not a.kind and not b.kind:
            return self._link(a, b)
        if not a.kind or not b.kind:
            leaf, other = (a, b) if not a.kind else (b, a)
            root = self._link(other, leaf, prefer=other)
            if leaf.taint or other.taint:
                self.taint(root, leaf.taint or other.taint)
            return root
        if a.kind == "prod" and b.kind == "prod":
            ok = self._align_prod(a, b)
        elif a.kind == "cat" and b.kind == "cat":
            ok = self._align_cat(a, b)
        else:
            ok = False
        if not ok:
            reason = "the same channels are laid out in incompatible ways (reshape vs concat)"
            self.conflicts.append(reason)
            self.taint(a, reason)
            self.taint(b, reason)
        root = self._link(a, b, prefer=a)
        if root.taint:
            self.taint(root, root.taint)
        return root

    def _link(self, a: Space, b: Space, prefer: Space | None = None) -> Space:
        a, b = self.find(a), self.find(b)
        if a is b:
            return a
        if prefer is None:
            root, child = (a, b) if a.rank >= b.rank else (b, a)
        else:
            root, child = (a, b) if prefer is a else (b, a)
        child.parent = root
        root.rank = max(root.rank, child.rank + 1)
        taint = root.taint or child.taint
        if taint and not root.taint:
            root.taint = taint
        if child.taint and root.kind:
            self.taint(root, child.taint)
        return root

    # -- structure ------------------------------------------------------------------
    def leaves(self, space: Space) -> list[Space]:
        """The product factors of ``space`` (outer first); a ``cat`` space is one factor."""
        root = self.find(space)
        if root.kind != "prod":
            return [root]
        out: list[Space] = []
        for child in root.children:
            out.extend(self.leaves(child))
        return out

    def make_prod(self, factors: list[Space]) -> Space:
        """A new space that is the product of ``factors`` (size-1 factors dropped)."""
        factors = [self.find(f) for f in factors if f.size != 1]
        if len(factors) == 1:
            return factors[0]
        size = math.prod(f.size for f in factors)
        space = self.new(size)
        if factors:
            space.kind = "prod"
            space.children = factors
        return space

    def split_prod(self, space: Space, sizes: list[int], *, inner_taint: str = "") -> None:
        """Refine a leaf into a product of fresh children of ``sizes`` (outer first)."""
        root = self.find(space)
        sizes = [s for s in sizes if s != 1]
        if len(sizes) <= 1 or root.kind:
            return
        children = [self.new(s) for s in sizes]
        root.kind = "prod"
        root.children = children
        self._outer_of[children[0].uid] = (root, "" if root.taint else inner_taint)
        if root.taint:
            for c in children:
                c.taint = root.taint
        elif inner_taint:
            for c in children[1:]:
                c.taint = inner_taint

    def release_next_factor(self, space: Space) -> None:
        """``space``, the outer factor of a reshape, is taken apart into separate tensors
        (``unbind``, ``select``): the factor after it is the outer factor of every piece.

        A fused projection viewed as ``[3, heads, head_dim]`` and unbound into q, k and v
        is the case: the heads, an inner factor of the reshape, become prunable units (the
        same heads in the three pieces); the head dimension stays an inner factor.
        """
        info = self._outer_of.get(space.uid) or self._outer_of.get(self.find(space).uid)
        if info is None:
            return
        root, inner = info
        if not inner:
            return
        nxt: Space | None = root.children[1]
        while nxt is not None:
            rep = self.find(nxt)
            if rep.taint != inner:
                return
            rep.taint = nxt.taint = ""
            nxt = rep.children[0] if rep.kind == "prod" and rep.children else None

    def split_cat(self, space: Space, sizes: list[int]) -> list[Space] | None:
        """Refine ``space`` into a concatenation of pieces of ``sizes``; returns the pieces.

        Works on a leaf (fresh children) or on an existing ``cat`` whose boundaries are a
        coarsening or refinement of ``sizes``. Returns None when the layouts conflict.
        """
        root = self.find(space)
        sizes = [static_size(s) for s in sizes]
        if sum(sizes) != root.size:
            return None
        if len(sizes) == 1:
            return [root]
        if not root.kind:
            children = [self.new(s, root.taint) for s in sizes]
            root.kind = "cat"
            root.children = children
            return children
        if root.kind != "cat":
            return None
        pieces = self._cat_pieces(root, sizes)
        return pieces

    def _cat_pieces(self, root: Space, sizes: list[int]) -> list[Space] | None:
        """Pieces of a ``cat`` space at the boundaries of ``sizes`` (refining children)."""
        bounds = set(np.cumsum(sizes)[:-1].tolist())
        # refine children so every requested boundary is a child boundary
        offset = 0
        new_children: list[Space] = []
        for child in root.children:
            c = self.find(child)
            inner = sorted(b - offset for b in bounds if offset < b < offset + c.size)
            if inner:
                cuts = [inner[0]] + [y - x for x, y in itertools.pairwise(inner)]
                cuts.append(c.size - inner[-1])
                sub = self.split_cat(c, cuts)
                if sub is None:
                    return None
                new_children.extend(sub)
            else:
                new_children.append(c)
            offset += c.size
        root.children = new_children
        # group children into the requested pieces
        pieces: list[Space] = []
        idx = 0
        for size in sizes:
            group: list[Space] = []
            total = 0
            while total < size:
                group.append(self.find(new_children[idx]))
                total += group[-1].size
                idx += 1
            if total != size:
                return None
            if len(group) == 1:
                pieces.append(group[0])
            else:
                piece = self.new(size)
                piece.kind = "cat"
                piece.children = group
                pieces.append(piece)
        return pieces

    def make_cat(self, parts: list[Space]) -> Space:
        parts = [self.find(p) for p in parts if p.size > 0]
        if len(parts) == 1:
            return parts[0]
        space = self.new(sum(p.size for p in parts))
        space.kind = "cat"
        space.children = parts
        return space

    def _align_prod(self, a: Space, b: Space) -> bool:
        la, lb = self.leaves(a), self.leaves(b)
        ia = ib = 0
        pairs: list[tuple[Space, Space]] = []
        while ia < len(la) and ib < len(lb):
            x, y = self.find(la[ia]), self.find(lb[ib])
            if x.size == y.size:
                pairs.append((x, y))
                ia += 1
                ib += 1
                continue
            big, small = (x, y) if x.size > y.size else (y, x)
            if big.size % small.size or big.kind:
                return False
            # refine the larger leaf into [small, rest]; the rest stays to be matched
            self.split_prod(big, [small.size, big.size // small.size])
            if big is x:
                la[ia : ia + 1] = self.leaves(big)
            else:
                lb[ib : ib + 1] = self.leaves(big)
        if ia != len(la) or ib != len(lb):
            return False
        for x, y in pairs:
            self.unify(x, y)
        return True

    def _align_cat(self, a: Space, b: Space) -> bool:
        sa = [self.find(c).size for c in a.children]
        sb = [self.find(c).size for c in b.children]
        bounds = sorted(set(np.cumsum(sa).tolist()) | set(np.cumsum(sb).tolist()))
        sizes = [bounds[0]] + [y - x for x, y in itertools.pairwise(bounds)]
        pa = self._cat_pieces(a, sizes)
        pb = self._cat_pieces(b, sizes)
        if pa is None or pb is None:
            return False
        for x, y in zip(pa, pb, strict=True):
            self.unify(x, y)
        return True

    # -- index maps -----------------------------------------------------------------
    def index_map(self, space: Space) -> dict[int, tuple[Space, np.ndarray]]:
        """For each leaf inside ``space``: the leaf index at every position (-1: absent)."""
        root = self.find(space)
        n = root.size
        if not root.kind:
            return {root.uid: (root, np.arange(n, dtype=np.int64))}
        out: dict[int, tuple[Space, np.ndarray]] = {}
        if root.kind == "prod":
            stride = n
            pos = np.arange(n, dtype=np.int64)
            for child in root.children:
                c = self.find(child)
                stride //= c.size
                digit = (pos // stride) % c.size
                for uid, (leaf, arr) in self.index_map(c).items():
                    out[uid] = (leaf, arr[digit])
            return out
        offset = 0
        for child in root.children:
            c = self.find(child)
            for uid, (leaf, arr) in self.index_map(c).items():
                full = np.full(n, -1, dtype=np.int64)
                full[offset : offset + c.size] = arr
                if uid in out:
                    prev = out[uid][1]
                    full = np.where(full >= 0, full, prev)
                out[uid] = (leaf, full)
            offset += c.size
        return out

    def all_leaves(self, space: Space) -> list[Space]:
        """Every leaf inside ``space`` (through ``prod`` and ``cat``)."""
        return [leaf for leaf, _ in self.index_map(space).values()]

    def stride_of(self, space: Space, leaf_uid: int) -> int:
        """Product of the sizes of the factors inside a leaf in ``space`` (1 if innermost).

        0 when the leaf ``leaf_uid`` does not occur in ``space``.
        """
        root = self.find(space)
        if not root.kind:
            return 1 if root.uid == leaf_uid else 0
        if root.kind == "cat":
            for child in root.children:
                s = self.stride_of(child, leaf_uid)
                if s:
                    return s
            return 0
        for i, child in enumerate(root.children):
            inner = self.stride_of(child, leaf_uid)
            if inner:
                return inner * math.prod(self.find(c).size for c in root.children[i + 1 :])
        return 0
