"""``ns.Plan``: a frozen, JSON-serialisable description of what to cut.

A plan names, for every parameter and buffer it changes, the indices kept along each
dimension; the module attributes that must follow (a grouped convolution's ``groups``,
an attention module's split size); and, for people, the decision per group. It holds no
module objects and no pickles, so it can be written down, searched over, diffed and
replayed on a freshly built model by :func:`netsculpt.apply`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from netsculpt.errors import PlanError

FORMAT = "netsculpt.plan/1"

__all__ = ["GroupDecision", "Plan"]


def encode_indices(indices: Sequence[int]) -> list[list[int]]:
    """Compress sorted indices into ``[start, stop)`` runs."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([int(i), int(i) + 1])
    return runs


def decode_indices(runs: Sequence[Sequence[int]]) -> tuple[int, ...]:
    out: list[int] = []
    for start, stop in runs:
        out.extend(range(int(start), int(stop)))
    return tuple(out)


@dataclass(frozen=True)
class GroupDecision:
    """What the plan does to one group."""

    name: str
    kind: str
    size: int
    kept: tuple[int, ...]

    @property
    def n_kept(self) -> int:
        return len(self.kept)


@dataclass(frozen=True)
class Plan:
    """What to cut, as plain data. Build one with :func:`netsculpt.plan`.

    Attributes:
        tensors: parameter or buffer name -> {dimension: kept indices}.
        shapes: original shape of every tensor in ``tensors`` (checked when applying).
        attrs: ``(module, attribute, new value)`` to set on the pruned copy.
        groups: the decision per group (for reports and search).
        removed: modules replaced by a zero branch (whole residual branches removed).
        meta: how the plan was made (ratio, importance, round_to, model class).
        lowrank: ``(module, rank)`` for Linear/Conv layers replaced, after slicing, by two
            thinner layers from a truncated SVD (see :func:`netsculpt.factorize`).
    """

    tensors: Mapping[str, Mapping[int, tuple[int, ...]]]
    shapes: Mapping[str, tuple[int, ...]]
    attrs: tuple[tuple[str, str, Any], ...] = ()
    groups: tuple[GroupDecision, ...] = ()
    removed: tuple[tuple[str, str], ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    lowrank: tuple[tuple[str, int], ...] = ()

    @property
    def widths(self) -> dict[str, tuple[int, int]]:
        """Group name -> (original units, kept units)."""
        return {g.name: (g.size, g.n_kept) for g in self.groups}

    @property
    def is_identity(self) -> bool:
        return (
            not self.removed
            and not self.lowrank
            and all(
                len(idx) == self.shapes[name][dim]
                for name, dims in self.tensors.items()
                for dim, idx in dims.items()
            )
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "meta": dict(self.meta),
            "tensors": {
                name: {str(d): encode_indices(idx) for d, idx in dims.items()}
                for name, dims in self.tensors.items()
            },
            "shapes": {name: list(s) for name, s in self.shapes.items()},
            "attrs": [list(a) for a in self.attrs],
            "groups": [
                {"name": g.name, "kind": g.kind, "size": g.size, "kept": encode_indices(g.kept)}
                for g in self.groups
            ],
            "removed": [list(r) for r in self.removed],
            "lowrank": [list(r) for r in self.lowrank],
        }

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise PlanError(
                f"not a netsculpt plan (format {found!r}, expected {FORMAT!r}); pass the "
                f"plan.json written by netsculpt.save or Plan.to_json"
            )
        try:
            if set(data["tensors"]) - set(data["shapes"]):
                missing = sorted(set(data["tensors"]) - set(data["shapes"]))[:3]
                raise PlanError(
                    f"plan data names tensors without their original shapes ({missing}); "
                    f"the plan file is damaged: write it again with Plan.to_json"
                )
            return cls(
                tensors={
                    name: {int(d): decode_indices(runs) for d, runs in dims.items()}
                    for name, dims in data["tensors"].items()
                },
                shapes={name: tuple(int(x) for x in s) for name, s in data["shapes"].items()},
                attrs=tuple((str(m), str(a), v) for m, a, v in data.get("attrs", [])),
                groups=tuple(
                    GroupDecision(
                        name=g["name"],
                        kind=g["kind"],
                        size=int(g["size"]),
                        kept=decode_indices(g["kept"]),
                    )
                    for g in data.get("groups", [])
                ),
                removed=tuple((str(m), str(k)) for m, k in data.get("removed", [])),
                meta=dict(data.get("meta", {})),
                lowrank=tuple((str(m), int(r)) for m, r in data.get("lowrank", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"plan data is incomplete or malformed: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"plan is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def then(self, second: Plan) -> Plan:
        """The plan that does ``self`` and then ``second`` (made on the pruned model).

        Iterative pruning applies several plans in turn; the composed plan replays all of
        them on the original architecture at once, so the result saves and reloads.
        """
        factored = [m for m, _ in self.lowrank]
        for name in second.tensors:
            if any(name.startswith(m + ".") for m in factored):
                raise PlanError(
                    f"the second plan changes {name!r} inside a layer the first plan factorised; "
                    f"factorise last (netsculpt.factorize after pruning)"
                )
        tensors: dict[str, dict[int, tuple[int, ...]]] = {
            n: dict(d) for n, d in self.tensors.items()
        }
        shapes = dict(self.shapes)
        for name, dims in second.tensors.items():
            base_shape = self.shapes.get(name, second.shapes[name])
            shapes.setdefault(name, tuple(base_shape))
            first = tensors.setdefault(name, {})
            for dim, idx in dims.items():
                before = first.get(dim, tuple(range(base_shape[dim])))
                first[dim] = tuple(before[i] for i in idx)
        by_name = {g.name: g for g in self.groups}
        groups = []
        for g in second.groups:
            old = by_name.pop(g.name, None)
            if old is not None and len(old.kept) == g.size:
                groups.append(
                    GroupDecision(g.name, g.kind, old.size, tuple(old.kept[i] for i in g.kept))
                )
            else:
                groups.append(g)
        groups.extend(by_name.values())
        return Plan(
            tensors=tensors,
            shapes=shapes,
            attrs=self.attrs + second.attrs,
            groups=tuple(groups),
            removed=self.removed + second.removed,
            meta={"steps": [dict(self.meta), dict(second.meta)]},
            lowrank=self.lowrank + second.lowrank,
        )

    def describe(self) -> str:
        lines = [f"plan ({self.meta.get('importance', '?')}, ratio {self.meta.get('ratio')})"]
        for g in self.groups:
            if g.n_kept != g.size:
                lines.append(f"  {g.name:<48} {g.kind:<8} {g.size:>6} -> {g.n_kept}")
        for module, how in self.removed:
            lines.append(f"  {module:<48} removed ({how})")
        for module, rank in self.lowrank:
            lines.append(f"  {module:<48} factorised to rank {rank}")
        return "\n".join(lines)
