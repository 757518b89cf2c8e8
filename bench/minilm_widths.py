"""Where MiniLM's milliseconds go: attention heads against MLP neurons, in onnxruntime.

The pretrained all-MiniLM-L6-v2 encoder of the ``minilm`` task is cut to fixed widths, the
same in every layer (``ns.plan`` with a ratio per group kind, magnitude importance; only
the widths matter for timing), and each copy is timed side by side with the dense model
by :func:`netsculpt.measurement.api.compare_latency` (onnxruntime, batch 32, sequence 128,
interleaved rounds, medians). The table sets each copy's measured speedup against its
MACs reduction (``ns.count_macs``): a ratio below 1 means the latency fell less than the
MACs. ``bench/minilm.py`` searches on measured latency because of what this shows.

Run ``python bench/minilm_widths.py`` (a few minutes at one thread). The table is printed
and written to ``bench/results/minilm_widths.md`` (and ``.json``).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.table import Table

import netsculpt as ns
from netsculpt.measurement.api import compare_latency

RESULTS = Path(__file__).parent / "results"
HEADS, NEURONS = 12, 1536
#: kept (heads, MLP neurons) per layer: MLP only, heads only, and mixes of both
WIDTHS = ((12, 640), (6, 1536), (8, 768), (9, 768), (6, 992))
console = Console()
app = typer.Typer(add_completion=False)


@app.command()
def main(
    threads: Annotated[int, typer.Option(help="onnxruntime threads")] = 1,
    rounds: Annotated[int, typer.Option(help="interleaved timing rounds")] = 4,
    out: Annotated[Path, typer.Option(help="results folder")] = RESULTS,
) -> None:
    """Time MiniLM copies of fixed widths side by side with the dense encoder."""
    torch.set_num_threads(threads)
    from netsculpt.tasks.minilm import MiniLMTask

    task = MiniLMTask()
    model = task.pretrained_model()
    x = task.example_inputs()
    graph = ns.analyze(model, x)
    dense_macs = ns.count_macs(model, x)
    models = {"dense": model}
    for heads, neurons in WIDTHS:
        ratio = {
            "re:.*attention\\.self$": 1 - heads / HEADS,
            "re:.*intermediate\\.dense$": 1 - neurons / NEURONS,
        }
        plan = ns.plan(model, x, ns.PruneConfig(ratio=ratio, round_to=16), graph=graph)
        models[f"{heads}h/{neurons}n"] = ns.apply(model, plan)
    medians = compare_latency(
        models, x, backend="onnxruntime", rounds=rounds, repeats=2, warmup=1, threads=threads
    )
    rows = []
    for name, small in models.items():
        if name == "dense":
            continue
        macs_reduction = dense_macs / ns.count_macs(small, x)
        speedup = medians["dense"] / medians[name]
        rows.append(
            {
                "widths": name,
                "macs_reduction": macs_reduction,
                "latency_ms": medians[name],
                "speedup": speedup,
                "ratio": speedup / macs_reduction,
            }
        )

    table = Table(
        title=f"MiniLM widths, onnxruntime, batch 32 x 128, {threads} thread(s); "
        f"dense {medians['dense']:.0f} ms"
    )
    for col in (
        "kept heads / neurons",
        "MACs red.",
        "latency ms",
        "speedup",
        "speedup / MACs red.",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["widths"],
            f"{r['macs_reduction']:.2f}x",
            f"{r['latency_ms']:.0f}",
            f"{r['speedup']:.2f}x",
            f"{r['ratio']:.2f}",
        )
    console.print(table)
    lines = [
        "# all-MiniLM-L6-v2: heads against MLP neurons in onnxruntime",
        "",
        (
            f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
            f"{threads} thread(s); run {time.strftime('%Y-%m-%d')}. Batch 32 x 128 tokens; "
            f"dense {medians['dense']:.0f} ms, {dense_macs / 1e9:.1f} GMACs; every copy timed "
            f"side by side with the dense model ({rounds} interleaved rounds, medians)."
        ),
        "",
        "| kept heads / MLP neurons per layer | MACs red. | latency ms | speedup | "
        "speedup / MACs red. |",
        "|---|--:|--:|--:|--:|",
        *[
            f"| {r['widths']} | {r['macs_reduction']:.2f}x | {r['latency_ms']:.0f} | "
            f"{r['speedup']:.2f}x | {r['ratio']:.2f} |"
            for r in rows
        ],
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "minilm_widths.md").write_text("\n".join(lines) + "\n")
    (out / "minilm_widths.json").write_text(
        json.dumps(
            {
                "dense_ms": medians["dense"],
                "dense_macs": dense_macs,
                "threads": threads,
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    app()
