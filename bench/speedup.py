"""Does halving the MACs halve the latency? Measured speedup of pruned models on the CPU.

For a ResNet-style CNN (four stages of two residual blocks, 64x64 images) and a BERT encoder
built from a ``transformers.BertConfig`` of MiniLM shape (hidden 384, 12 heads, intermediate
1536, sequence 128; 4 layers to keep the run short), with random weights:

1. ``ns.analyze`` the model once, then bisect the pruning ratio of
   ``ns.plan(model, inputs, ns.PruneConfig(ratio=r, round_to=16), graph=graph)`` until
   ``ns.count_macs`` of the applied plan is half the original's (within 2 %). Widths are
   kept at multiples of 16 because CPU convolution kernels work in blocks of 16 channels
   (AVX-512): on this bench's machine a 3x3 convolution with 40 channels takes as long as
   one with 48, so the pruned CNN with ``round_to=8`` gained only 0.65-0.70x of its MACs
   reduction on either backend, and with ``round_to=16`` 0.93-0.96x on onnxruntime.
2. At batch 1 and batch 32, time the original and the pruned copy with the ``torch`` and
   ``onnxruntime`` backends through :func:`netsculpt.measurement.api.compare_latency`, which
   interleaves their runs round-robin so that both see the same machine noise, and report
   median latencies.
3. Report the MACs reduction, the latency speedup (original median / pruned median), and
   their ratio ``speedup / MACs reduction``: 1.0 means the latency fell as much as the MACs.
   The target is >= 0.9 at a 2x MACs reduction.

Run ``python bench/speedup.py`` (a few minutes; under 10 on two busy cores) or
``python bench/speedup.py --quick`` (smaller shapes, batch 1 and 8, fewer runs). Timing uses
one thread by default, the setting that stays stable on a machine shared with other jobs;
``--threads N`` uses N (``--threads 0``: PyTorch's current count). The table is printed and
written to ``bench/results/speedup.md`` (and ``speedup.json``).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.table import Table
from torch import nn

RESULTS = Path(__file__).parent / "results"
TARGET_MACS_FRACTION = 0.5  # prune to half the MACs, a 2x reduction
MACS_TOLERANCE = 0.02
TARGET_EFFICIENCY = 0.9  # speedup / MACs reduction
BACKENDS = ("torch", "onnxruntime")


# --------------------------------------------------------------------------- models


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.downsample(x))


class ResNetish(nn.Module):
    """A ResNet-18-style CNN: a stem, four stages of two basic blocks, a linear head."""

    def __init__(self, width: int = 32, num_classes: int = 100) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        stages, cin = [], width
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x).flatten(1))


def _randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Random BatchNorm statistics, so that channel importances differ as in a trained net."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = torch.rand(n, generator=generator) + 0.5
            module.running_mean = torch.randn(n, generator=generator) * 0.1
            module.running_var = torch.rand(n, generator=generator) + 0.5
    return model


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int], Any]  # batch size -> example inputs


def cnn_case(image: int) -> Case:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return _randomise_batchnorm(ResNetish(width=32)).eval()

    return Case(
        name=f"ResNet-ish CNN {image}x{image}",
        build=build,
        inputs=lambda batch: torch.randn(batch, 3, image, image),
    )


def bert_case(hidden: int, layers: int, heads: int, seq: int) -> Case:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
    )

    def build() -> nn.Module:
        torch.manual_seed(0)
        return BertModel(config).eval()

    def inputs(batch: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(batch)
        ids = torch.randint(0, config.vocab_size, (batch, seq), generator=generator)
        return {"input_ids": ids, "attention_mask": torch.ones(batch, seq, dtype=torch.long)}

    return Case(name=f"BERT h{hidden} L{layers} H{heads} seq{seq}", build=build, inputs=inputs)


# --------------------------------------------------------------------------- pruning


@dataclass(frozen=True)
class Pruned:
    model: nn.Module
    ratio: float
    macs_fraction: float
    seconds: float


def prune_to_half_macs(
    model: nn.Module, inputs: Any, *, round_to: int | None, steps: int = 10
) -> Pruned:
    """Bisect the uniform pruning ratio until the pruned copy has half the MACs.

    ``round_to=None`` keeps every other option at ``ns.PruneConfig``'s default, so the copy
    is what ``ns.prune(model, inputs, ratio=r)`` gives a user who sets nothing else."""
    import netsculpt as ns
    from netsculpt.measurement.api import count_macs

    start = time.perf_counter()
    graph = ns.analyze(model, inputs)
    base = count_macs(model, inputs)
    lo, hi = 0.0, 0.95
    best: tuple[float, float, nn.Module] | None = None
    for _ in range(steps):
        ratio = (lo + hi) / 2
        config = (
            ns.PruneConfig(ratio=ratio)
            if round_to is None
            else ns.PruneConfig(ratio=ratio, round_to=round_to)
        )
        plan = ns.plan(model, inputs, config, graph=graph)
        small = ns.apply(model, plan)
        fraction = count_macs(small, inputs) / base
        if best is None or abs(fraction - TARGET_MACS_FRACTION) < abs(
            best[1] - TARGET_MACS_FRACTION
        ):
            best = (ratio, fraction, small)
        if abs(fraction - TARGET_MACS_FRACTION) <= MACS_TOLERANCE:
            break
        lo, hi = (ratio, hi) if fraction > TARGET_MACS_FRACTION else (lo, ratio)
    assert best is not None
    return Pruned(
        model=best[2].eval(),
        ratio=best[0],
        macs_fraction=best[1],
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Row:
    model: str
    batch: int
    backend: str
    ratio: float
    params_base: int
    params_pruned: int
    macs_base: int
    macs_pruned: int
    ms_base: float
    ms_pruned: float
    runs: int
    macs_default: int
    ms_default: float

    @property
    def macs_reduction(self) -> float:
        return self.macs_base / self.macs_pruned

    @property
    def speedup(self) -> float:
        return self.ms_base / self.ms_pruned

    @property
    def efficiency(self) -> float:
        return self.speedup / self.macs_reduction

    @property
    def default_macs_reduction(self) -> float:
        return self.macs_base / self.macs_default

    @property
    def default_speedup(self) -> float:
        return self.ms_base / self.ms_default

    @property
    def default_efficiency(self) -> float:
        return self.default_speedup / self.default_macs_reduction


def measure_case(
    case: Case,
    *,
    batches: tuple[int, ...],
    rounds: int,
    repeats: int,
    threads: int,
    round_to: int,
    console: Console,
) -> list[Row]:
    from netsculpt.measurement.api import compare_latency, count_macs, count_params

    base = case.build()
    pruned = prune_to_half_macs(base, case.inputs(1), round_to=round_to)
    default = prune_to_half_macs(base, case.inputs(1), round_to=None)
    for label, what in (("round_to", pruned), ("defaults", default)):
        console.print(
            f"{case.name} ({label}): ratio {what.ratio:.3f} leaves {what.macs_fraction:.1%} "
            f"of the MACs (search {what.seconds:.1f} s)"
        )
    rows = []
    for batch in batches:
        inputs = case.inputs(batch)
        macs = tuple(count_macs(m, inputs) for m in (base, pruned.model, default.model))
        # a big batch runs long enough to time once per round; same number of rounds
        reps, warmup = (1, 1) if batch > 8 else (repeats, 2)
        for backend in BACKENDS:
            start = time.perf_counter()
            medians = compare_latency(
                {"base": base, "pruned": pruned.model, "default": default.model},
                inputs,
                backend=backend,
                rounds=rounds,
                repeats=reps,
                warmup=warmup,
                threads=threads,
            )
            row = Row(
                model=case.name,
                batch=batch,
                backend=backend,
                ratio=pruned.ratio,
                params_base=count_params(base),
                params_pruned=count_params(pruned.model),
                macs_base=macs[0],
                macs_pruned=macs[1],
                ms_base=medians["base"],
                ms_pruned=medians["pruned"],
                runs=rounds * reps,
                macs_default=macs[2],
                ms_default=medians["default"],
            )
            console.print(
                f"  batch {batch:>2} {backend:>11}: {row.ms_base:8.2f} -> {row.ms_pruned:8.2f} ms"
                f" = {row.speedup:.2f}x for {row.macs_reduction:.2f}x fewer MACs; defaults "
                f"{row.default_speedup:.2f}x for {row.default_macs_reduction:.2f}x "
                f"({time.perf_counter() - start:.0f} s)"
            )
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- output


def _verdict(row: Row) -> str:
    return "ok" if row.efficiency >= TARGET_EFFICIENCY else "below target"


def render_table(rows: list[Row], threads: int) -> Table:
    table = Table(
        title=f"Pruned to ~{1 / TARGET_MACS_FRACTION:.0f}x fewer MACs: measured "
        f"speedup ({threads} thread(s), interleaved medians)"
    )
    for column in (
        "model",
        "batch",
        "backend",
        "params (M)",
        "GMACs",
        "MACs red.",
        "base ms",
        "pruned ms",
        "speedup",
        "speedup / MACs red.",
        "ns.prune defaults: speedup / MACs red.",
    ):
        table.add_column(column, justify="left" if column in ("model", "backend") else "right")
    for row in rows:
        color = "green" if row.efficiency >= TARGET_EFFICIENCY else "yellow"
        table.add_row(
            row.model,
            str(row.batch),
            row.backend,
            f"{row.params_base / 1e6:.2f} -> {row.params_pruned / 1e6:.2f}",
            f"{row.macs_base / 1e9:.2f} -> {row.macs_pruned / 1e9:.2f}",
            f"{row.macs_reduction:.2f}x",
            f"{row.ms_base:.2f}",
            f"{row.ms_pruned:.2f}",
            f"{row.speedup:.2f}x",
            f"[{color}]{row.efficiency:.2f}[/{color}]",
            f"{row.default_speedup:.2f}x / {row.default_macs_reduction:.2f}x "
            f"= {row.default_efficiency:.2f}",
        )
    return table


def markdown(rows: list[Row], *, threads: int, quick: bool, seconds: float) -> str:
    import onnxruntime

    lines = [
        "# Speedup of pruned models (bench/speedup.py)",
        "",
        (
            f"Pruned to about {1 / TARGET_MACS_FRACTION:.0f}x fewer MACs by bisecting a uniform "
            "ratio; latency medians from `compare_latency` (base and pruned interleaved). "
            f"Target: speedup / MACs reduction >= {TARGET_EFFICIENCY}. The last column "
            "prunes the same way with `ns.PruneConfig`'s defaults (magnitude, `round_to=1`), "
            "timed in the same interleaved rounds: what a user who sets only the ratio gets."
        ),
        "",
        (
            f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
            f"{platform.processor() or platform.machine()}, {threads} thread(s)"
            f"{', --quick' if quick else ''}; {seconds:.0f} s in all."
        ),
        "",
        (
            "| model | batch | backend | ratio | params (M) | GMACs | MACs red. | base ms | "
            "pruned ms | speedup | speedup / MACs red. | defaults: MACs red. | "
            "defaults: speedup | defaults: speedup / MACs red. | runs |"
        ),
        "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.batch} | {r.backend} | {r.ratio:.3f} | "
            f"{r.params_base / 1e6:.2f} -> {r.params_pruned / 1e6:.2f} | "
            f"{r.macs_base / 1e9:.3f} -> {r.macs_pruned / 1e9:.3f} | {r.macs_reduction:.2f}x | "
            f"{r.ms_base:.2f} | {r.ms_pruned:.2f} | {r.speedup:.2f}x | "
            f"{r.efficiency:.2f} ({_verdict(r)}) | {r.default_macs_reduction:.2f}x | "
            f"{r.default_speedup:.2f}x | {r.default_efficiency:.2f} | {r.runs} |"
        )
    return "\n".join(lines) + "\n"


def main(
    quick: Annotated[bool, typer.Option(help="smaller shapes, batch 1 and 8, fewer runs")] = False,
    threads: Annotated[int, typer.Option(help="intra-op threads (0: torch's current)")] = 1,
    rounds: Annotated[int, typer.Option(help="interleaved rounds per comparison")] = 0,
    round_to: Annotated[int, typer.Option(help="keep widths at multiples of this")] = 16,
    models: Annotated[str, typer.Option(help="comma-separated: cnn, bert")] = "cnn,bert",
    out: Annotated[Path, typer.Option(help="markdown output")] = RESULTS / "speedup.md",
) -> None:
    """Prune a CNN and a BERT encoder to half their MACs and measure the speedup."""
    try:
        import netsculpt as ns

        ns.analyze, ns.plan, ns.apply  # noqa: B018 -- fail here if the core is missing
    except (ImportError, AttributeError) as exc:
        raise SystemExit(
            f"netsculpt's pruning core is not importable ({exc}); install it first"
        ) from exc
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    if quick:
        cases = {"cnn": cnn_case(32), "bert": bert_case(256, 2, 4, 64)}
        batches, default_rounds, repeats = (1, 8), 4, 4
    else:
        cases = {"cnn": cnn_case(64), "bert": bert_case(384, 4, 12, 128)}
        batches, default_rounds, repeats = (1, 32), 8, 8
    chosen = [m.strip() for m in models.split(",")]
    if any(m not in cases for m in chosen):
        raise typer.BadParameter(f"models must be among {sorted(cases)}, got {chosen}")
    console = Console(width=max(Console().width, 160))
    start = time.perf_counter()
    rows: list[Row] = []
    for name in chosen:
        rows += measure_case(
            cases[name],
            batches=batches,
            rounds=rounds or default_rounds,
            repeats=repeats,
            threads=threads,
            round_to=round_to,
            console=console,
        )
    seconds = time.perf_counter() - start
    console.print(render_table(rows, threads))
    console.print(f"{seconds:.0f} s in all")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(rows, threads=threads, quick=quick, seconds=seconds))
    payload = [
        asdict(r)
        | {"macs_reduction": r.macs_reduction, "speedup": r.speedup, "efficiency": r.efficiency}
        | {"default_speedup": r.default_speedup, "default_efficiency": r.default_efficiency}
        for r in rows
    ]
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    typer.run(main)
