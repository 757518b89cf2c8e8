"""Mixture of experts: what netsculpt removes from tiny Mixtral and Qwen2-MoE configs.

    python bench/moe.py               # both zoo MoE configs; writes bench/results/moe.md (+ .json)
    python bench/moe.py --no-onnx     # skip the ONNX exports (about 30 s each)

For ``hf_mixtral`` and ``hf_qwen2_moe`` (:mod:`netsculpt.testing.zoo`: hidden 64, 2 layers,
4 heads / 2 key-value heads, 4 experts with top-2 routing; Qwen2-MoE with a shared expert),
with random weights:

* ``ns.prune(model, inputs, ratio=0.3)``: expert neurons (and everything else prunable),
  verified exact; then ``ns.prune_experts(..., ratio=0.25)`` on 8 calibration batches of
  random token ids: the least used expert of each layer goes (approximate);
* the same with ``PruneConfig(residual=True)`` (the hidden width too);
* for each result: the share of parameters removed, the largest difference after
  ``ns.save`` / ``ns.load`` (must be 0), and for the expert removal the largest difference
  from the original with those experts' router logits set to -inf (exact up to rounding);
* ``ns.export_onnx`` of the fully pruned model with the default exporter, checked against
  onnxruntime at two batch sizes, with its wall time.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import netsculpt as ns
from netsculpt._inputs import call_model
from netsculpt.testing.experts import removed_experts_masked
from netsculpt.testing.zoo import MOE, ZOO, token_batches

RESULTS = Path(__file__).parent / "results"


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _logits(model: nn.Module, inputs: Any) -> torch.Tensor:
    with torch.no_grad():
        return call_model(model, inputs).logits


def _masked_reference(original: nn.Module, plan_meta: dict[str, Any], inputs: Any) -> Any:
    removed = plan_meta["removed_experts"]
    with removed_experts_masked(original, removed):
        return _logits(original, inputs)


def _reload_diff(model: nn.Module, inputs: Any) -> float:
    with tempfile.TemporaryDirectory() as folder:
        ns.save(model, folder)
        again = ns.load(folder)
    return float((_logits(again, inputs) - _logits(model, inputs)).abs().max())


def run(name: str, *, onnx: bool) -> dict[str, Any]:
    model, inputs = ZOO[name]()
    calib = token_batches(inputs, 8)
    n0 = _params(model)
    row: dict[str, Any] = {"model": name, "params": n0}
    for label, config in (
        ("neurons", ns.PruneConfig(ratio=0.3)),
        ("residual", ns.PruneConfig(ratio=0.3, residual=True)),
    ):
        small = ns.prune(model, inputs, config)
        smaller = ns.prune_experts(small, calib, ratio=0.25)
        # the expert step alone on the original, against its exact masked-logit reference
        experts_only = ns.prune_experts(model, calib, ratio=0.25)
        meta = dict(ns.plan_of(experts_only).meta)
        masked = float(
            (_logits(experts_only, inputs) - _masked_reference(model, meta, inputs)).abs().max()
        )
        row[label] = {
            "removed_ratio_0.3": 1 - _params(small) / n0,
            "removed_with_experts": 1 - _params(smaller) / n0,
            "reload_max_diff": _reload_diff(smaller, inputs),
            "experts_vs_masked_logits_max_diff": masked,
        }
        if label == "neurons":
            final = smaller
    if onnx:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            try:
                path = ns.export_onnx(final, inputs, Path(folder) / "moe.onnx")
                status = f"ok (max abs diff {ns.check_onnx(final, inputs, path):.1e})"
            except ns.ExportError as exc:
                status = f"ExportError: {exc}"
        row["onnx"] = {"status": status, "seconds": time.perf_counter() - start}
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | params | ratio 0.3 | + prune_experts 0.25 | residual + 0.3 | + prune_experts "
        "0.25 | reload diff | experts vs masked logits | ONNX |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        n, res = r["neurons"], r["residual"]
        onnx = r.get("onnx")
        onnx_text = f"{onnx['status']}, {onnx['seconds']:.0f} s" if onnx else "not run"
        lines.append(
            f"| {r['model']} | {r['params']:,} | {n['removed_ratio_0.3']:.1%} | "
            f"{n['removed_with_experts']:.1%} | {res['removed_ratio_0.3']:.1%} | "
            f"{res['removed_with_experts']:.1%} | "
            f"{max(n['reload_max_diff'], res['reload_max_diff']):.1g} | "
            f"{n['experts_vs_masked_logits_max_diff']:.1e} | {onnx_text} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX exports")
    parser.add_argument("--out", type=Path, default=RESULTS / "moe.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [run(name, onnx=not args.no_onnx) for name in MOE]
    table = _table(rows)
    print(table)
    header = (
        f"# Mixture of experts (`python bench/moe.py`)\n\n"
        f"torch {torch.__version__}, {platform.machine()}, one thread. Parameters removed "
        f"(share of the original), random weights.\n\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + table + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
