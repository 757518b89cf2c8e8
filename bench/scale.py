"""Scale check: analyse and prune a Llama-style model of about 1B parameters on CPU.

Builds a TinyLlama-shaped ``LlamaForCausalLM`` from a config (hidden 2048, intermediate
5632, 22 layers, 32 query heads, 4 key/value heads, vocabulary 32000: 1.1B parameters) with
random weights, then times ``ns.analyze`` and ``ns.prune(ratio=0.3)``. For each step it
records the wall time and the peak resident memory (``VmHWM`` from ``/proc/self/status``,
reset before the step through ``/proc/self/clear_refs``) above the memory held before it,
divided by the model's size. Targets: each step under 60 s and under 1.5x the model size.

As a reference it also times a plain non-strict ``torch.export`` of the same model, the
capture any graph-based pruner has to pay for.

Run ``python bench/scale.py`` (about 5 GB of memory in float32); ``--layers 2`` makes a
quick smoke run. The table is printed and written to ``bench/results/scale.md``.
"""

from __future__ import annotations

import gc
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"
TIME_TARGET_S = 60.0
MEMORY_TARGET = 1.5
GIB = 1024**3


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def rss_bytes() -> int:
    """Current resident set size of this process."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size since the last :func:`reset_peak`."""
    return _status_kib("VmHWM") * 1024


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS; False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Step:
    """One measured step."""

    name: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    rss_before: int = 0
    peak: int = 0
    status: str = "ok"

    def growth(self) -> int:
        return max(0, self.peak - self.rss_before)


def measure(name: str, fn: Callable[[], Any]) -> tuple[Step, Any]:
    """Run ``fn`` once, timing it and recording its peak memory above the memory before it."""
    gc.collect()
    step = Step(name, rss_before=rss_bytes())
    exact = reset_peak()
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        value = fn()
    except Exception as exc:  # a failing step is a result: report it
        value = None
        step.status = (
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[
                :200
            ]
        )
    step.seconds = time.perf_counter() - start
    step.cpu_seconds = time.process_time() - cpu_start
    step.peak = peak_rss_bytes()
    if not exact:
        step.status += " (peak since process start: /proc/self/clear_refs not writable)"
    return step, value


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def llama_config(layers: int) -> Any:
    """A TinyLlama-shaped config (1.1B parameters at 22 layers)."""
    from transformers import LlamaConfig

    return LlamaConfig(  # type: ignore[call-arg]  # transformers accepts it via **kwargs
        vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=layers,
        num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
        tie_word_embeddings=False, attn_implementation="sdpa",
    )  # fmt: skip


def build_model(layers: int, dtype: str) -> tuple[Any, dict[str, Any]]:
    """Build the model with random weights in ``dtype`` and return it with example inputs.

    The model is created on the meta device and its storage allocated once, then filled the
    way transformers initialises Llama (normal(0, 0.02) matrices, unit RMSNorm weights): the
    same weights' statistics as ``LlamaForCausalLM(config)`` in a second instead of minutes.
    """
    import torch
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = llama_config(layers)
    generator = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(getattr(torch, dtype)).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.fill_(1.0)
            else:
                param.normal_(0.0, config.initializer_range, generator=generator)
    model.model.rotary_emb = LlamaRotaryEmbedding(
        config=config
    )  # its buffers are computed, not loaded
    ids = torch.randint(0, config.vocab_size, (1, 16), generator=generator)
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "use_cache": False}


def _core_available() -> str:
    try:
        import netsculpt as ns

        _ = ns.analyze, ns.prune
    except Exception as exc:  # the core is optional for the baseline part
        return f"{type(exc).__name__}: {exc}"
    return ""


def main(
    layers: Annotated[int, typer.Option(help="decoder layers (22 gives 1.1B parameters)")] = 22,
    dtype: Annotated[str, typer.Option(help="float32 or bfloat16")] = "float32",
    ratio: Annotated[float, typer.Option(help="pruning ratio for ns.prune")] = 0.3,
    threads: Annotated[int, typer.Option(help="torch intra-op threads")] = 2,
    reference_export: Annotated[bool, typer.Option(help="also time a plain torch.export")] = True,
    out: Annotated[Path, typer.Option(help="where to write the markdown table")] = RESULTS
    / "scale.md",
) -> None:
    """Build a ~1B-parameter Llama, then time and measure ns.analyze and ns.prune on it."""
    import torch

    torch.set_num_threads(threads)
    console = Console(width=max(Console().width, 120))
    process_start = rss_bytes()
    build, built = measure("build model (random weights)", lambda: build_model(layers, dtype))
    if built is None:
        raise SystemExit(f"building the model failed: {build.status}")
    model, example_inputs = built
    n_params = sum(p.numel() for p in model.parameters())
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    steps = [build]
    console.print(
        f"model: {n_params / 1e9:.2f}B parameters, {model_bytes / GIB:.2f} GiB in {dtype}; "
        f"build {build.seconds:.1f} s"
    )

    def forward() -> Any:
        with torch.no_grad():
            return model(**example_inputs).logits.shape

    step, _ = measure("forward (1 x 16 tokens)", forward)
    steps.append(step)
    if reference_export:
        step, exported = measure(
            "torch.export, non-strict (reference)",
            lambda: torch.export.export(model, (), example_inputs, strict=False),
        )
        del exported
        steps.append(step)

    missing = _core_available()
    if missing:
        steps += [
            Step("ns.analyze", status=f"unavailable: {missing}"),
            Step("ns.prune", status="unavailable"),
        ]
    else:
        import netsculpt as ns

        step, graph = measure("ns.analyze", lambda: ns.analyze(model, example_inputs))
        steps.append(step)
        if graph is not None:
            console.print(f"groups: {len(graph.groups)}, prunable: {len(graph.prunable_groups)}")
        del graph
        step, small = measure(
            f"ns.prune (ratio {ratio})", lambda: ns.prune(model, example_inputs, ratio=ratio)
        )
        steps.append(step)
        if small is not None:
            kept = sum(p.numel() for p in small.parameters())
            console.print(
                f"pruned: {kept / 1e9:.2f}B parameters ({100 * (1 - kept / n_params):.1f}% fewer)"
            )
        del small
        # last: pruning in place modifies the model, so that it never exists twice in memory
        step, small = measure(
            f"ns.prune (ratio {ratio}, inplace=True)",
            lambda: ns.prune(model, example_inputs, ratio=ratio, inplace=True),
        )
        steps.append(step)
        del small

    table = Table(
        title=f"Llama-style {n_params / 1e9:.2f}B ({layers} layers, {dtype}), "
        f"model {model_bytes / GIB:.2f} GiB"
    )
    for column in (
        "step",
        "wall s",
        "CPU s",
        "peak growth GiB",
        "growth / model",
        "peak RSS / model",
        "status",
    ):
        table.add_column(column, justify="left" if column in ("step", "status") else "right")
    rows = []
    for s in steps:
        measured = s.status == "ok" or s.status.startswith("ok ")
        ratio_cell = f"{s.growth() / model_bytes:.2f}x" if measured else "-"
        row = [
            s.name,
            f"{s.seconds:.1f}" if measured else "-",
            f"{s.cpu_seconds:.1f}" if measured else "-",
            f"{s.growth() / GIB:.2f}" if measured else "-",
            ratio_cell,
            f"{s.peak / model_bytes:.2f}x" if measured else "-",
            s.status,
        ]
        rows.append(row)
        table.add_row(*row)
    console.print(table)
    console.print(
        f"targets (ns.analyze, ns.prune): < {TIME_TARGET_S:.0f} s and peak growth "
        f"< {MEMORY_TARGET}x the model; "
        f"process RSS before building: {process_start / GIB:.2f} GiB; load average {_load()}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Scale: Llama-style model, {n_params / 1e9:.2f}B parameters",
        "",
        f"Generated by `python bench/scale.py --layers {layers} --dtype {dtype}`; "
        f"torch {torch.__version__}, "
        f"Python {platform.python_version()}, {threads} threads, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average at the end {_load()} "
        "(CPU s is this process's CPU time, "
        "all threads, which a busy machine does not inflate).",
        f"Config: hidden 2048, intermediate 5632, {layers} layers, 32 heads, 4 key/value heads, "
        f"vocabulary 32000; weights {model_bytes / GIB:.2f} GiB. Inputs: 1 x 16 tokens.",
        "",
        "Peak growth is the peak resident memory during the step (VmHWM, reset before it) minus "
        "the resident memory before it (which holds the model); peak RSS is the whole process's "
        "peak during the step, model and Python included. Targets for ns.analyze and ns.prune: "
        f"under {TIME_TARGET_S:.0f} s and peak growth under {MEMORY_TARGET}x the model's size.",
        "",
        "| step | wall s | CPU s | peak growth GiB | growth / model | peak RSS / model | status |",
        "|---|---:|---:|---:|---:|---:|---|",
        *("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows),
    ]
    out.write_text("\n".join(lines) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    typer.run(main)
