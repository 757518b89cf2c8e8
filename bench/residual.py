"""Residual-width pruning across the zoo's transformers configs: parameters removed, or why not.

    python bench/residual.py            # about two minutes on one thread

Every ``hf_*`` entry of the zoo (``netsculpt.testing.zoo``: tiny transformers configs,
random weights) is pruned at ratio 0.3 with magnitude importance, with the residual width
kept (the default) and pruned (``PruneConfig(residual=True)``). Every plan is verified by
``ns.prune`` (the pruned model equals the original with the removed units zeroed); a row
also checks that the residual-pruned model reloads bit-exactly from its saved folder. A
model netsculpt refuses gets its reason (and, where the residual stream is the model's
output, the figure with ``protect_outputs=False``). Nothing here is selected: every model is a row.
Tables go to ``bench/results/residual.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from _report import begin, finish, options
from rich.console import Console

import netsculpt as ns
from netsculpt._inputs import call_model, flatten_outputs
from netsculpt.errors import NetsculptError
from netsculpt.testing.zoo import ZOO

RESULTS = Path(__file__).parent / "results"
console = Console(width=160)


def _reload_diff(small: torch.nn.Module, inputs: Any) -> float:
    with tempfile.TemporaryDirectory() as folder:
        again = ns.load(ns.save(small, Path(folder) / "m"))
        with torch.no_grad():
            a = flatten_outputs(call_model(small, inputs))
            b = flatten_outputs(call_model(again, inputs))
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options(parser)  # --quick: the first three models
    args = parser.parse_args()
    out, started = begin(args, RESULTS)
    names = [n for n in ZOO if n.startswith("hf_")]
    names = names[:3] if args.quick else names
    rows: list[dict[str, Any]] = []
    for name in names:
        model, inputs = ZOO[name]()
        before = ns.count_params(model)
        row: dict[str, Any] = {"model": name}
        for label, config in (
            ("off", ns.PruneConfig(ratio=0.3)),
            ("on", ns.PruneConfig(ratio=0.3, residual=True)),
        ):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    small = ns.prune(model, inputs, config)
            except NetsculptError as exc:
                row[label] = None
                row[f"{label}_reason"] = f"{type(exc).__name__}: {str(exc)[:140]}"
                continue
            row[label] = 1 - ns.count_params(small) / before
            if label == "on":
                row["reload_diff"] = _reload_diff(small, inputs)
        if "model output" in row.get("on_reason", ""):  # the hidden stream is the output
            config = ns.PruneConfig(ratio=0.3, residual=True, protect_outputs=False)
            small = ns.prune(model, inputs, config)
            row["on_unprotected"] = 1 - ns.count_params(small) / before
        rows.append(row)
        console.print(row)
    lines = [
        "# Residual-width pruning across the zoo's transformers configs",
        "",
        "Written by `python bench/residual.py` (see its docstring): parameters removed at ratio "
        "0.3 (magnitude, verified exact), residual width off and on.",
        "",
        "| model | residual off | residual on | reload max diff | why not |",
        "|---|--:|--:|--:|---|",
    ]
    for r in rows:
        cells = [f"{100 * r[k]:.1f} %" if r.get(k) is not None else "-" for k in ("off", "on")]
        diff = f"{r['reload_diff']:.1g}" if "reload_diff" in r else "-"
        why = r.get("on_reason", "").replace("|", "/")
        if "on_unprotected" in r:
            why += f" (with protect_outputs=False: {100 * r['on_unprotected']:.1f} %)"
        lines.append(f"| `{r['model']}` | {cells[0]} | {cells[1]} | {diff} | {why} |")
    pruned = sum(1 for r in rows if r.get("on") is not None)
    lines += ["", f"{pruned} of {len(rows)} prune with the residual width on."]
    finish(lines, started, console=console, out=out, name="residual", data=rows)


if __name__ == "__main__":
    main()
