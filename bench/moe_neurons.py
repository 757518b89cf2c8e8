"""Expert neurons of a trained mixture-of-experts LM: each expert's own, or the same in all.

    python bench/moe_neurons.py            # about 8 minutes on one thread
    python bench/moe_neurons.py --quick    # a smoke run (writes nothing)

A byte-level Mixtral (transformers ``MixtralForCausalLM``: hidden 128, 2 layers, 4 query and
2 key/value heads, 4 experts of 256 neurons, top-2 routing; stacked expert weights run by a
grouped matmul) is trained by ``ns.finetune`` on the ``tinylm`` task's text (the docstrings
of Python's standard library; AdamW 3e-3, 16 windows of 128 bytes a step, for
``--minutes``). Then only the experts' neurons are pruned one-shot
(``PruneConfig(ratio={"re:.*experts#2": r})``, every expert of a layer keeping the same
number, a multiple of the grouped-matmul alignment) in two ways:

* **per expert** (netsculpt's plan): each expert keeps its own best neurons by the
  criterion applied to its own slices (``Plan.gathers``);
* **shared**: the same positions in every expert, scored over all of them (what netsculpt
  did before, and what a planner that treats the stacked weights as one layer does),
  obtained here by hiding the expert layers from the per-expert step.

Perplexity is read on the task's validation and test windows (nothing is selected: every
row is reported). Tables go to ``bench/results/moe_neurons.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from _report import begin, finish, options
from rich.console import Console

import netsculpt as ns
from netsculpt.tasks.tinylm import VOCAB_SIZE, TinyLMTask, next_byte_loss

RESULTS = Path(__file__).parent / "results"
console = Console(width=160)


def build(quick: bool) -> torch.nn.Module:
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    config = MixtralConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64 if quick else 128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64 if quick else 256,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=128,
        use_cache=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    return MixtralForCausalLM(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training wall time")
    options(parser)
    args = parser.parse_args()
    out, started = begin(args, RESULTS)
    task = TinyLMTask(n_eval=32 if args.quick else 256)
    model = build(args.quick)
    minutes = 0.2 if args.quick else args.minutes
    config = ns.TrainConfig(lr=3e-3, batch_size=16, seed=0)
    ns.finetune(model, task, f"{minutes * 60:.0f}s", config, progress=False)
    model.eval()
    x = task.example_inputs()
    calib = task.calib_batches(args.calib)
    dense = {"val": task.perplexity(model, "validation"), "test": task.perplexity(model, "test")}
    console.print(f"trained {minutes:g} min: perplexity {dense}")
    rows: list[dict[str, Any]] = []
    for ratio in (0.5, 0.75):
        for importance in ("magnitude", "taylor"):
            prune_config = ns.PruneConfig(ratio={"re:.*experts#2": ratio}, importance=importance)
            for how in ("per expert", "shared"):
                if how == "shared":
                    with mock.patch("netsculpt.pruning._decide.expert_groups", return_value={}):
                        small = ns.prune(
                            model, x, prune_config, calib=calib, loss_fn=next_byte_loss
                        )
                else:
                    small = ns.prune(model, x, prune_config, calib=calib, loss_fn=next_byte_loss)
                plan = ns.plan_of(small)
                assert plan is not None and bool(plan.gathers) == (how == "per expert")
                kept = small.get_submodule("model.layers.0.mlp.experts").down_proj.shape[2]
                row = {
                    "ratio": ratio,
                    "importance": importance,
                    "how": how,
                    "neurons": kept,
                    "params": ns.count_params(small),
                    "val": task.perplexity(small, "validation"),
                    "test": task.perplexity(small, "test"),
                }
                rows.append(row)
                console.print(
                    {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
                )
    width = model.get_submodule("model.layers.0.mlp.experts").down_proj.shape[2]
    lines = [
        "# Expert neurons of a trained MoE LM: each expert's own, or the same in all",
        "",
        f"Written by `python bench/moe_neurons.py` (see its docstring). Mixtral, "
        f"{ns.count_params(model):,} parameters, trained {minutes:g} min on one thread; dense "
        f"perplexity validation {dense['val']:.3f}, test {dense['test']:.3f}. Only expert "
        f"neurons pruned ({width} per expert before), one-shot.",
        "",
        "| ratio | importance | neurons kept | per expert: val / test ppl "
        "| shared: val / test ppl |",
        "|--:|---|--:|--:|--:|",
    ]
    for i in range(0, len(rows), 2):
        own, shared = rows[i], rows[i + 1]
        lines.append(
            f"| {own['ratio']} | {own['importance']} | {own['neurons']} | "
            f"{own['val']:.3f} / {own['test']:.3f} | {shared['val']:.3f} / {shared['test']:.3f} |"
        )
    data = {"dense": dense, "rows": rows}
    finish(lines, started, console=console, out=out, name="moe_neurons", data=data)


if __name__ == "__main__":
    main()
