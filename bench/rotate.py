"""Residual-width pruning of a small language model with and without rotating its stream.

    python bench/rotate.py              # the tinylm task's model; a few minutes on one thread
    python bench/rotate.py --quick      # a tiny model: a smoke run (writes nothing)

The model and splits are ``bench/llm.py``'s (the ``tinylm`` task: a byte-level Llama with
RMS norms, GQA, 2.9 M parameters, trained by netsculpt on the standard library's
docstrings; calibration batches from **train**, choices on **validation**, figures on
**test**). Every row prunes heads, MLP neurons and the residual width
(``PruneConfig(residual=True)``, one ratio for every group, per-group ranking) at the ratio
that gives 2x fewer MACs, found by bisection on MACs alone (``bench/llm.py``'s
``bisect_ratio``), one-shot, for importance ``magnitude``, ``activation`` and ``taylor``,
without and with ``ns.reconstruct``, on the model as trained and on the model after
``ns.rotate_residual`` (its stream rotated onto the principal axes of the calibration
batches, SliceGPT's rotation; the rotated model computes the same function). Tables go to
``bench/results/rotate.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import begin, finish, options
from llm import QUICK_CONFIG, bisect_ratio, netsculpt_config, widths
from rich.console import Console

import netsculpt as ns
from netsculpt.tasks.tinylm import TinyLMTask, next_byte_loss

RESULTS = Path(__file__).parent / "results"
console = Console(width=200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=2.0, help="MACs reduction to reach")
    parser.add_argument("--n-eval", type=int, default=256, help="windows per scored split")
    options(parser)
    args = parser.parse_args()
    out, started = begin(args, RESULTS)
    if args.quick:
        cache = tempfile.mkdtemp(prefix="netsculpt-rotate-")
        task = TinyLMTask(QUICK_CONFIG, n_eval=16, cache_dir=cache)
    else:
        task = TinyLMTask(n_eval=args.n_eval)
    dense = task.pretrained_model()
    x = task.example_inputs()
    calib = task.calib_batches(args.calib)
    dense_macs = ns.count_macs(dense, x)
    dense_val, dense_test = task.perplexity(dense, "validation"), task.perplexity(dense, "test")
    console.print(f"dense: perplexity validation {dense_val:.3f}, test {dense_test:.3f}")

    t0 = time.perf_counter()
    rotated = ns.rotate_residual(dense, x, calib)
    rotate_seconds = time.perf_counter() - t0
    rotated_val = task.perplexity(rotated, "validation")
    console.print(f"rotated in {rotate_seconds:.1f} s: validation perplexity {rotated_val:.3f}")

    graph = ns.analyze(dense, x, residual=True)

    def macs_at(ratio: float) -> int:
        config = netsculpt_config(ratio, "magnitude", residual=True, reconstruct=False)
        plan = ns.plan(
            dense, x, ns.PruneConfig(**{**config.to_dict(), "verify": False}), graph=graph
        )
        return ns.count_macs(ns.apply(dense, plan), x)

    found = bisect_ratio(macs_at, dense_macs / args.target)
    if found is None:
        raise SystemExit(f"{args.target}x fewer MACs is not reachable with the residual width")
    ratio = found[0]
    rows: list[dict[str, Any]] = []
    for importance in ("magnitude", "activation", "taylor"):
        for reconstruct in (False, True):
            for rotate, base in (("off", dense), ("on", rotated)):
                config = netsculpt_config(ratio, importance, residual=True, reconstruct=reconstruct)
                t0 = time.perf_counter()
                small = ns.prune(base, x, config, calib=calib, loss_fn=next_byte_loss)
                row = {
                    "importance": importance,
                    "reconstruct": reconstruct,
                    "rotate": rotate,
                    "ratio": ratio,
                    "macs_reduction": dense_macs / ns.count_macs(small, x),
                    "widths": widths(small),
                    "val_ppl": task.perplexity(small, "validation"),
                    "test_ppl": task.perplexity(small, "test"),
                    "prune_seconds": time.perf_counter() - t0,
                }
                rows.append(row)
                console.print(
                    {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
                )
    best = min(rows, key=lambda r: r["val_ppl"])
    lines = [
        "# tinylm: residual-width pruning at 2x fewer MACs, stream rotated or not",
        "",
        f"Written by `python bench/rotate.py` (see its docstring). Dense perplexity validation "
        f"{dense_val:.3f}, test {dense_test:.3f}; rotated (before pruning) validation "
        f"{rotated_val:.3f}, {rotate_seconds:.1f} s to rotate. Ratio {ratio} for every group "
        f"(residual width on), {args.calib} calibration batches of 16 train windows.",
        "",
        "| importance | reconstruct | rotated | MACs red. | widths (layer 0) | val ppl "
        "| test ppl | prune s |",
        "|---|---|---|--:|---|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['importance']} | {'on' if r['reconstruct'] else 'off'} | {r['rotate']} | "
            f"{r['macs_reduction']:.2f}x | {r['widths']} | {r['val_ppl']:.3f} | "
            f"{r['test_ppl']:.3f} | {r['prune_seconds']:.0f} |"
        )
    lines += [
        "",
        f"Best on validation: {best['importance']}, reconstruct "
        f"{'on' if best['reconstruct'] else 'off'}, rotated {best['rotate']}: test perplexity "
        f"{best['test_ppl']:.3f} (dense {dense_test:.3f}).",
    ]
    data = {"rows": rows, "dense_test": dense_test}
    finish(lines, started, console=console, out=out, name="rotate", data=data)


if __name__ == "__main__":
    main()
