"""The ``netsculpt`` command line: a thin layer over the public API.

    netsculpt analyze MODEL            dependency groups, what is protected and why
    netsculpt prune MODEL --ratio 0.3  a smaller copy, measured before/after, saved
    netsculpt measure MODEL            params, MACs, latency, memory
    netsculpt export MODEL --out DIR   plan + weights (+ ONNX); or --study S --trial N
    netsculpt search / pareto / report the multi-objective search and its results
    netsculpt elastic / train-supernet / extract   super-networks (netsculpt.cli.elastic)
    netsculpt quantize FOLDER --out F  int8 through ONNX Runtime (netsculpt.cli.quantize)
    netsculpt demo                     the whole pipeline on the built-in digits task

MODEL is a built-in name (``digits``, ``minilm``), ``package.module:factory`` (a function
returning ``(model, example_inputs)``), or a folder written by ``netsculpt prune``/``export``.

A factory string typed on the command line is trusted: it is the user's own code. A folder
is data: it is loaded without running anything it names, unless ``--trust-code`` is given
(needed for folders whose base model is rebuilt by a factory other than netsculpt's own).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from torch import nn

from netsculpt.cli._models import ModelArg, TrustCode, base_factory_of, load_model_spec
from netsculpt.cli._output import (
    LatencySpread,
    compare_models,
    compared_text,
    console,
    one_line_errors,
    print_table,
)
from netsculpt.cli._output import fail as _fail
from netsculpt.errors import InputError, NetsculptError

if TYPE_CHECKING:
    from netsculpt.measurement.api import Measurement

app = typer.Typer(
    help="Carve fast, small sub-networks out of any PyTorch model, and prove they are faster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _command(name: str | None = None) -> Any:
    """``@app.command()`` whose NetsculptErrors print as one line with exit code 2."""

    def register(function: Any) -> Any:
        return app.command(name)(one_line_errors(function))

    return register


def _factory_of(spec: str) -> str | None:
    """The factory a save folder written from ``spec`` should name."""
    from netsculpt.export.save import BUILTIN_BASE_FACTORIES, read_manifest

    if spec not in BUILTIN_BASE_FACTORIES and Path(spec).is_dir():
        # a folder re-saved: keep the base reference it had
        base = read_manifest(spec)["base"]
        return str(base["factory"]) if base["kind"] == "factory" else None
    return base_factory_of(spec)


@_command()
def analyze(
    model: ModelArg,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="module name or re:pattern to keep whole")
    ] = None,
    show_protected: Annotated[
        bool, typer.Option("--protected/--no-protected", help="list protected groups too")
    ] = True,
    trust_code: TrustCode = False,
) -> None:
    """Show what can be cut, what is coupled, and what is protected (and why)."""
    from netsculpt.graph.analysis import analyze as run_analyze

    try:
        with console.status("capturing the graph"):
            module, inputs = load_model_spec(model, trust_code=trust_code)
            graph = run_analyze(module, inputs, exclude=tuple(exclude or ()))
    except NetsculptError as exc:
        _fail(exc)
    table = Table(
        title=f"{graph.model_name}: dependency groups "
        f"(captured in {graph.capture_seconds:.2f} s, {graph.n_nodes} nodes)"
    )
    for col, justify in (
        ("group", "left"),
        ("kind", "left"),
        ("units", "right"),
        ("tensors", "right"),
        ("state", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for g in graph.groups:
        if not g.prunable and not show_protected:
            continue
        state = (
            "[green]prunable[/green]" if g.prunable else f"[yellow]protected[/yellow]: {g.reason}"
        )
        if g.note:
            state += f" ({g.note})"
        table.add_row(g.name, g.kind, f"{g.size:,}", f"{len(g.params):,}", state)
    print_table(table)
    if graph.blocks:
        console.print("removable blocks: " + ", ".join(graph.blocks))
    for s in graph.skipped:
        console.print(f"[yellow]skipped[/yellow] {s.op} in {s.module or '<top>'}: {s.reason}")


def _measure_table(
    title: str, rows: dict[str, Measurement], latency: dict[str, LatencySpread]
) -> Table:
    """Params, MACs and memory from ``rows``; latency median and p10-p90 from ``latency``."""
    table = Table(title=title)
    table.add_column("model")
    for col in ("params", "MACs", "median ms", "p10-p90 ms", "peak act. MiB"):
        table.add_column(col, justify="right")
    for name, m in rows.items():
        mem = "-" if m.peak_memory_bytes is None else f"{m.peak_memory_bytes / 2**20:.2f}"
        spread = latency[name]
        table.add_row(
            name, f"{m.params:,}", f"{m.macs:,}", f"{spread.median:.3f}", spread.range_text, mem
        )
    return table


def _counts(module: nn.Module, inputs: Any, *, threads: int | None = None) -> Measurement:
    """Params, MACs, memory and sparsity of ``module`` (its one timed run is not shown)."""
    from netsculpt.measurement.api import measure

    # the latency is timed apart, interleaved; torch here avoids an ONNX export for nothing
    return measure(module, inputs, backend="torch", warmup=0, repeats=1, threads=threads)


@_command()
def prune(
    model: ModelArg,
    ratio: Annotated[
        float, typer.Option("--ratio", help="fraction of width removed, in [0, 1)")
    ] = 0.3,
    importance: Annotated[
        str, typer.Option("--importance", help="magnitude, l1, taylor, activation, random or lamp")
    ] = "magnitude",
    round_to: Annotated[
        int, typer.Option("--round-to", help="keep widths at multiples of this")
    ] = 1,
    exclude: Annotated[list[str] | None, typer.Option("--exclude")] = None,
    residual: Annotated[
        bool,
        typer.Option(
            "--residual/--no-residual",
            help="also prune the residual width (a transformer's hidden size and its norms)",
        ),
    ] = False,
    rotate: Annotated[
        bool,
        typer.Option(
            "--rotate/--no-rotate",
            help="with --residual: first rotate the residual stream onto its principal axes "
            "(SliceGPT), measured on the example inputs",
        ),
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="save folder")] = None,
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="also write model.onnx")] = False,
    backend: Annotated[str, typer.Option("--backend", help="torch or onnxruntime")] = "torch",
    trust_code: TrustCode = False,
) -> None:
    """Prune a model, print the measured before/after table, optionally save it.

    Latency is timed with the original's and the pruned model's runs interleaved (so both
    see the same machine load): medians with the p10-p90 spread.
    """
    from netsculpt.pruning.apply import apply
    from netsculpt.pruning.config import PruneConfig
    from netsculpt.pruning.importance import criterion_info
    from netsculpt.pruning.planner import plan
    from netsculpt.pruning.rotate import rotate_residual

    try:
        config = PruneConfig(
            ratio=ratio,
            importance=importance,
            round_to=round_to,
            exclude=tuple(exclude or ()),
            residual=residual,
        )
        if rotate and not residual:
            raise InputError(
                "--rotate rotates the residual stream so that --residual prunes its weakest "
                "directions; pass --residual with it"
            )
        module, inputs = load_model_spec(model, trust_code=trust_code)
        calib = [inputs] if criterion_info(importance).needs_calib else None
        with console.status("planning"):
            start = time.perf_counter()
            base = rotate_residual(module, inputs, [inputs]) if rotate else module
            the_plan = plan(base, inputs, config, calib=calib)
            small = apply(base, the_plan)
            seconds = time.perf_counter() - start
        with console.status("measuring"):
            before = _counts(module, inputs)
            after = _counts(small, inputs)
            latency = compare_models({"original": module, "pruned": small}, inputs, backend=backend)
    except NetsculptError as exc:
        _fail(exc)
    console.print(the_plan.describe(), markup=False)
    print_table(
        _measure_table(
            f"planned and applied in {seconds:.2f} s ({backend})",
            {"original": before, "pruned": after},
            latency,
        )
    )
    console.print(
        f"params {before.params / max(after.params, 1):.2f}x fewer, MACs "
        f"{before.macs / max(after.macs, 1):.2f}x fewer; "
        + compared_text(latency["original"], latency["pruned"], backend=backend),
        markup=False,
    )
    if out is not None:
        try:
            factory = _factory_of(model)
        except NetsculptError as exc:
            _fail(exc)
        _write(small, inputs, out, onnx=onnx, factory=factory)


def _write(small: nn.Module, inputs: Any, out: Path, *, onnx: bool, factory: str | None) -> None:
    from netsculpt.export.save import save

    try:
        save(small, out, base_factory=factory, example_inputs=inputs)
        written = [str(out)]
        if onnx:
            from netsculpt.export.onnx import export_onnx

            written.append(str(export_onnx(small, inputs, out / "model.onnx")))
    except NetsculptError as exc:
        _fail(exc)
    console.print("written: " + ", ".join(written))


@_command()
def measure(
    model: ModelArg,
    backend: Annotated[str, typer.Option("--backend", help="torch or onnxruntime")] = "torch",
    repeats: Annotated[int, typer.Option("--repeats")] = 30,
    threads: Annotated[int | None, typer.Option("--threads")] = None,
    trust_code: TrustCode = False,
) -> None:
    """Measure params, MACs, latency (median, p10-p90) and peak activation memory."""
    module, inputs = load_model_spec(model, trust_code=trust_code)
    with console.status(f"measuring ({backend})"):
        m = _counts(module, inputs, threads=threads)
        latency = compare_models(
            {model: module},
            inputs,
            backend=backend,
            rounds=1,
            repeats=repeats,
            warmup=5,
            threads=threads,
        )
    title = (
        f"{type(module).__name__}: {backend}, {m.threads} thread{'s' * (m.threads != 1)}, "
        f"latency of {repeats} timed runs"
    )
    print_table(_measure_table(title, {model: m}, latency))


@_command()
def export(
    model: Annotated[str | None, typer.Argument(help="model to export (omit with --study)")] = None,
    out: Annotated[Path, typer.Option("--out", help="folder to write")] = Path("netsculpt-export"),
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="also write model.onnx")] = False,
    study: Annotated[
        str | None, typer.Option("--study", help="export a trial of this study")
    ] = None,
    trial: Annotated[
        int | None, typer.Option("--trial", help="trial number (default: knee)")
    ] = None,
    storage: Annotated[str | None, typer.Option("--storage")] = None,
    trust_code: TrustCode = False,
) -> None:
    """Write a model (or one trial of a study) as plan + weights, optionally ONNX."""
    if study is not None:
        from netsculpt.cli.studies import export_command

        export_command(
            study=study,
            out=out,
            trial=trial,
            storage=storage,
            onnx=onnx,
            model=model,
            trust_code=trust_code,
        )
        return
    if model is None:
        console.print("[red]give a MODEL or --study[/red]")
        raise typer.Exit(code=2)
    try:
        module, inputs = load_model_spec(model, trust_code=trust_code)
        factory = _factory_of(model)
    except NetsculptError as exc:
        _fail(exc)
    _write(module, inputs, out, onnx=onnx, factory=factory)


@_command()
def demo(
    trials: Annotated[int, typer.Option("--trials", help="search trials")] = 24,
    out: Annotated[Path, typer.Option("--out", help="working folder")] = Path("netsculpt-demo"),
    backend: Annotated[str, typer.Option("--backend", help="torch or onnxruntime")] = "onnxruntime",
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """The whole pipeline on embedded defaults: digits CNN, search, front, report, ONNX."""
    from netsculpt.cli.studies import front_table
    from netsculpt.export.onnx import export_onnx
    from netsculpt.export.save import save
    from netsculpt.reporting.html import report
    from netsculpt.studies.api import search
    from netsculpt.studies.config import StudyConfig
    from netsculpt.tasks.registry import get_task

    out.mkdir(parents=True, exist_ok=True)
    try:
        with console.status("training (or loading) the digits CNN on scikit-learn's digits"):
            task = get_task("digits")
            model = task.pretrained_model()
            inputs = task.example_inputs()
            dense_val = task.evaluate(model, "validation")
            dense_test = task.evaluate(model, "test")
        console.print(
            f"dense digits CNN: accuracy {dense_val:.4f} on the validation split (what the "
            f"search scores), {dense_test:.4f} on the test split"
        )
        storage = f"sqlite:///{(out / 'netsculpt.db').resolve()}"
        front = search(
            "digits",
            inputs,
            task=task,
            n_trials=trials,
            storage=storage,
            study_name=f"digits-demo-{backend}",
            config=StudyConfig(backend=backend, seed=seed),  # each trial distilled 30 steps
        )
        print_table(front_table(front))
        page = report(front, out / "report.html")
        knee = front.knee()
        folder = out / "knee"
        small = knee.model
        save(small, folder, base_factory=base_factory_of("digits"), example_inputs=inputs)
        onnx_path = export_onnx(small, inputs, folder / "model.onnx")
        with console.status("timing the knee and the dense model, runs interleaved"):
            latency = compare_models({"dense": model, "knee": small}, inputs, backend=backend)
    except NetsculptError as exc:
        _fail(exc)
    console.print(
        f"knee: trial {knee.number}, accuracy {knee.score:.4f} validation (chosen on), "
        f"{'-' if knee.test_score is None else f'{knee.test_score:.4f}'} test, "
        f"{knee.latency_ms:.3f} ms, "
        f"{knee.params:,} params\nreport: {page}\nknee sub-network: {folder} (ONNX: {onnx_path})"
    )
    console.print(
        "knee vs dense, " + compared_text(latency["dense"], latency["knee"], backend=backend),
        markup=False,
    )


def _register_search_commands() -> None:
    from netsculpt.cli.studies import pareto_command, report_command, search_command

    app.command("search")(one_line_errors(search_command))
    app.command("pareto")(one_line_errors(pareto_command))
    app.command("report")(one_line_errors(report_command))


_register_search_commands()


def _register_elastic_commands() -> None:
    from netsculpt.cli.elastic import register

    register(app)


_register_elastic_commands()


def _register_quantize_command() -> None:
    from netsculpt.cli.quantize import register

    register(app)


_register_quantize_command()


def main() -> None:
    """Entry point of the ``netsculpt`` console script."""
    app()


if __name__ == "__main__":
    main()
