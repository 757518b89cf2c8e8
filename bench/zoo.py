"""Coverage of structured pruning across the model zoo: netsculpt and torch-pruning side by side.

For every model and tool, a fresh subprocess builds the model from
:mod:`netsculpt.testing.zoo`, prunes it at the given ratio with the tool's defaults, runs the
pruned model on the example inputs and reports one outcome:

* ``ok``: pruning removed parameters, the pruned model runs, every output keeps its shape;
* ``raised``: pruning, or the forward pass of the pruned model, raised (first line shown);
* ``hung``: the subprocess used up its time (60 s of CPU time by default, or five times
  that in wall-clock time) without finishing; counting CPU time keeps the verdict fair on
  a busy machine;
* ``output shape changed``: the pruned model runs but an output has another shape;
* ``pruned nothing``: the pruned model runs unchanged in shape but has as many parameters;
* ``unavailable``: the tool could not be imported (e.g. netsculpt's core is not installed).

torch-pruning runs as its README shows, with defaults: ``MetaPruner(model, example_inputs,
importance=MagnitudeImportance(p=2), pruning_ratio=ratio, ignored_layers=[])`` then
``pruner.step()``. netsculpt runs ``ns.prune(model, example_inputs, ratio=ratio)``.

Run ``python bench/zoo.py`` (held-out set) or ``python bench/zoo.py --models all``; the
table is printed and written to ``bench/results/zoo.md`` (and ``zoo.json``).
``python bench/zoo.py --models wild --out bench/results/zoo_wild.md`` runs the 33
transformers architectures of :mod:`netsculpt.testing.wild` instead: built from default
configs as a new user would (decoders return their cache), none of them in the zoo.
"""

from __future__ import annotations

import json
import platform
import resource
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

TOOLS = ("netsculpt", "torch-pruning")
RESULTS = Path(__file__).parent / "results"
MARKER = "ZOO_RESULT "
WALL_FACTOR = 5  # wall-clock limit as a multiple of the CPU-time limit


@dataclass
class Outcome:
    """What one tool did to one model."""

    tool: str
    model: str
    outcome: str
    detail: str = ""
    runnable_same_shapes: bool = False
    params_before: int = 0
    params_after: int = 0
    prune_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def reduction(self) -> float:
        """Fraction of parameters removed, in percent."""
        if not self.params_before or not self.params_after:
            return 0.0
        return 100.0 * (1 - self.params_after / self.params_before)


# --- the worker: runs inside the subprocess ----------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _prune_netsculpt(model: Any, example_inputs: Any, ratio: float) -> Any:
    import netsculpt as ns

    return ns.prune(model, example_inputs, ratio=ratio)


def _prune_torch_pruning(model: Any, example_inputs: Any, ratio: float) -> Any:
    import torch_pruning as tp

    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[],
    )
    pruner.step()
    return model


def _available(tool: str) -> str:
    """'' when ``tool`` can be used, else why not."""
    try:
        if tool == "netsculpt":
            import netsculpt as ns

            _ = ns.prune  # the core lives behind a lazy import
        else:
            import torch_pruning  # noqa: F401
    except Exception as exc:  # any import failure means the column is unavailable
        return _first_line(exc)
    return ""


def work(tool: str, name: str, ratio: float) -> Outcome:
    """Prune zoo model ``name`` with ``tool`` and classify the result (runs in the subprocess)."""
    import torch

    from netsculpt._inputs import call_model, flatten_outputs
    from netsculpt.testing.wild import WILD
    from netsculpt.testing.zoo import ZOO

    torch.set_num_threads(1)
    result = Outcome(tool=tool, model=name, outcome="raised")
    why = _available(tool)
    if why:
        result.outcome, result.detail = "unavailable", why
        return result
    model, example_inputs = {**ZOO, **WILD}[name]()
    with torch.no_grad():
        before = [tuple(o.shape) for o in flatten_outputs(call_model(model, example_inputs))]
    result.params_before = sum(p.numel() for p in model.parameters())
    prune = _prune_netsculpt if tool == "netsculpt" else _prune_torch_pruning
    start = time.perf_counter()
    try:
        small = prune(model, example_inputs, ratio)
    except Exception as exc:  # the tool failed: that is the measurement
        result.detail = _first_line(exc)
        return result
    finally:
        result.prune_seconds = time.perf_counter() - start
    result.params_after = sum(p.numel() for p in small.parameters())
    try:
        with torch.no_grad():
            after = [tuple(o.shape) for o in flatten_outputs(call_model(small, example_inputs))]
    except Exception as exc:  # the pruned model no longer runs
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        result.detail = "forward after pruning: " + _first_line(cause)
        return result
    result.runnable_same_shapes = after == before
    if after != before:
        result.outcome, result.detail = "output shape changed", f"{before} -> {after}"
    elif result.params_after >= result.params_before:
        result.outcome = "pruned nothing"
    else:
        result.outcome = "ok"
    return result


# --- the driver ----------------------------------------------------------------------------


def run_one(tool: str, name: str, ratio: float, timeout: float) -> Outcome:
    """Run :func:`work` in a fresh interpreter; running out of CPU or wall time is ``hung``."""
    cmd = [sys.executable, __file__, "--worker", tool, name, "--ratio", str(ratio)]
    seconds = max(1, int(timeout))

    def limit_cpu() -> None:  # in the child: the kernel stops it after `seconds` of CPU time
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 5))

    start = time.perf_counter()
    hung = Outcome(tool, name, "hung", f"no result after {seconds} s of CPU time")
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=WALL_FACTOR * timeout, preexec_fn=limit_cpu
        )
    except subprocess.TimeoutExpired:
        hung.detail, hung.wall_seconds = (
            f"no result after {WALL_FACTOR * timeout:.0f} s",
            WALL_FACTOR * timeout,
        )
        return hung
    wall = time.perf_counter() - start
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        hung.wall_seconds = wall
        return hung
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return Outcome(tool, name, "raised", f"worker died: {tail[:300]}", wall_seconds=wall)
    fields = json.loads(lines[-1][len(MARKER) :])
    fields["wall_seconds"] = wall
    return Outcome(**fields)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "torch-pruning", "netsculpt"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _cell(result: Outcome) -> str:
    return result.outcome if not result.detail else f"{result.outcome}: {result.detail}"


def summary(results: list[Outcome], models: list[str]) -> str:
    """One line per tool: how many models were pruned, runnable, with unchanged output shapes."""
    parts = []
    for tool in TOOLS:
        mine = [r for r in results if r.tool == tool]
        if not mine:
            continue
        if all(r.outcome == "unavailable" for r in mine):
            parts.append(f"{tool}: unavailable ({mine[0].detail})")
            continue
        ok = sum(r.outcome == "ok" for r in mine)
        counts = {
            o: sum(r.outcome == o for r in mine) for o in dict.fromkeys(r.outcome for r in mine)
        }
        spread = ", ".join(f"{n} {o}" for o, n in counts.items())
        parts.append(f"{tool}: {ok}/{len(models)} runnable with unchanged output shapes ({spread})")
    return "; ".join(parts)


def render_table(results: list[Outcome], models: list[str], ratio: float) -> Table:
    table = Table(title=f"Pruning coverage at ratio {ratio}")
    table.add_column("model")
    tools = [t for t in TOOLS if any(r.tool == t for r in results)]
    for tool in tools:
        table.add_column(f"{tool}", overflow="fold", max_width=60)
        table.add_column("params -%", justify="right")
        table.add_column("s", justify="right")
    by_key = {(r.tool, r.model): r for r in results}
    for name in models:
        row = [name]
        for tool in tools:
            r = by_key[(tool, name)]
            style = "green" if r.outcome == "ok" else "red"
            cell = _cell(r)[:90]
            row += [f"[{style}]{cell}[/{style}]", f"{r.reduction:.1f}", f"{r.prune_seconds:.2f}"]
        table.add_row(*row)
    return table


def markdown(
    results: list[Outcome], models: list[str], ratio: float, timeout: float, command: str = ""
) -> str:
    tools = [t for t in TOOLS if any(r.tool == t for r in results)]
    versions = ", ".join(f"{k} {v}" for k, v in _versions().items())
    lines = [
        f"# Pruning coverage at ratio {ratio}",
        "",
        f"Generated by `python bench/zoo.py{command}`; {versions}; Python "
        f"{platform.python_version()}, "
        f"one thread; each model and tool in a fresh subprocess limited to {timeout:.0f} s "
        "of CPU time "
        f"({WALL_FACTOR * timeout:.0f} s wall clock); "
        "beyond that it counts as hung.",
        "",
        "`ok` = parameters were removed, the pruned model runs on the example inputs, and every "
        "output keeps its shape. `runs, same shapes` is true whenever the pruned model runs with "
        "unchanged output shapes (also when nothing was pruned). "
        "Seconds are the pruning call only.",
        "",
        f"**{summary(results, models)}**",
        "",
    ]
    header = ["model"]
    for tool in tools:
        header += [f"{tool} outcome", "runs, same shapes", "params -%", "s"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    by_key = {(r.tool, r.model): r for r in results}
    for name in models:
        row = [f"`{name}`"]
        for tool in tools:
            r = by_key[(tool, name)]
            row += [
                _cell(r).replace("|", "\\|"),
                "yes" if r.runnable_same_shapes else "no",
                f"{r.reduction:.1f}",
                f"{r.prune_seconds:.2f}" if r.outcome != "hung" else f">{timeout:.0f}",
            ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(
    models: Annotated[
        str, typer.Option(help="'held-out', 'all', 'wild', or comma-separated zoo names")
    ] = "held-out",
    tools: Annotated[
        str, typer.Option(help="comma-separated: netsculpt, torch-pruning")
    ] = ",".join(TOOLS),
    ratio: Annotated[float, typer.Option(help="fraction of prunable width to remove")] = 0.3,
    timeout: Annotated[
        float, typer.Option(help="CPU seconds before a model counts as hung")
    ] = 60.0,
    out: Annotated[Path, typer.Option(help="where to write the markdown table")] = RESULTS
    / "zoo.md",
    worker: Annotated[bool, typer.Option(hidden=True)] = False,
    worker_args: Annotated[list[str] | None, typer.Argument(hidden=True)] = None,
) -> None:
    """Prune every model with every tool and print the coverage table."""
    if worker:
        tool, name = worker_args or ["", ""]
        print(MARKER + json.dumps(asdict(work(tool, name, ratio))), flush=True)
        return
    from netsculpt.testing.wild import WILD
    from netsculpt.testing.zoo import HELD_OUT, ZOO

    names = {"held-out": HELD_OUT, "all": list(ZOO), "wild": list(WILD)}.get(models)
    names = names or models.split(",")
    unknown = [n for n in names if n not in ZOO and n not in WILD]
    if unknown:
        raise typer.BadParameter(f"unknown zoo models {unknown}; see netsculpt.testing.zoo.ZOO")
    chosen = [t.strip() for t in tools.split(",")]
    if any(t not in TOOLS for t in chosen):
        raise typer.BadParameter(f"tools must be among {TOOLS}, got {chosen}")
    console = Console(width=max(Console().width, 150))
    results = []
    for name in names:
        for tool in chosen:
            result = run_one(tool, name, ratio, timeout)
            console.print(
                f"{name:>20} {tool:>14}: {_cell(result)[:110]} ({result.wall_seconds:.1f} s)"
            )
            results.append(result)
    console.print(render_table(results, names, ratio))
    console.print(summary(results, names))
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "" if models == "held-out" else f" --models {models}"
    out.write_text(markdown(results, names, ratio, timeout, command))
    out.with_suffix(".json").write_text(
        json.dumps(
            [asdict(r) | {"reduction_percent": round(r.reduction, 2)} for r in results], indent=1
        )
    )
    console.print(f"wrote {out}")


if __name__ == "__main__":
    typer.run(main)
