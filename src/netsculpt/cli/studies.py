"""Command-line commands of the search stage: ``search``, ``pareto``, ``export``, ``report``.

``netsculpt.cli`` mounts them with :func:`register` (or uses :data:`app` directly)::

    netsculpt search digits --task digits --trials 60 --study demo
    netsculpt pareto --study demo
    netsculpt export --study demo --trial 12 --out small/ --onnx
    netsculpt search digits --precision float,int8 --trials 60 --study joint
    netsculpt report --study demo --out report.html

``MODEL`` is a built-in name (``digits``, ``minilm``: the task's own pretrained model) or
``"package.module:factory"`` (also ``path/to/file.py:factory``), a function with no
arguments returning ``(model, example_inputs)``: a string typed on the command line is
trusted and run. ``MODEL`` may also be a super-network folder (written by
``ns.save_supernet`` or ``netsculpt elastic``; it holds ``elastic.json``): the search then
slices the trained super-network without retraining (``--task`` is required). The folder is
data: a model factory it names runs only with ``--trust-code`` (netsculpt's own built-in
factories excepted), or ``--base`` gives the base model instead.

``--precision float,int8`` searches precision with the structure: int8 trials are quantized
with ``ns.quantize`` (``--quantize-mode static|dynamic``), scored by running the quantized
ONNX model and timed in onnxruntime (the default backend then). ``export`` of an int8 trial
also writes ``model.int8.onnx`` and checks its test score against the search's validation
score (``--tolerance``).

A study is data: ``export`` rebuilds the base model from the name stored in the study only
when it is a built-in name; a stored factory string needs ``--trust-code``, a stored file
path is never run; ``--model`` gives the model instead (for a super-network study, the
super-network folder it searched).
"""

from __future__ import annotations

import contextlib
import gc
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from netsculpt.cli._models import (
    TrustCode,
    base_factory_of,
    load_supernet_folder,
    supernet_base_factory,
    supernet_folder,
)
from netsculpt.cli._output import (
    compare_models,
    compared_text,
    console,
    one_line_errors,
    print_table,
    speed_words,
)
from netsculpt.cli._output import fail as _fail
from netsculpt.errors import InputError, NetsculptError
from netsculpt.studies._specs import BUILTIN_MODELS, resolve_model
from netsculpt.studies.config import DEFAULT_BN_CALIB_BATCHES
from netsculpt.studies.front import DEFAULT_QUANT_TOLERANCE

__all__ = [
    "BUILTIN_MODELS",
    "app",
    "export_command",
    "front_table",
    "pareto_command",
    "register",
    "report_command",
    "resolve_model",
    "search_command",
]

app = typer.Typer(
    help="Search sub-networks, inspect the front, export and report.", no_args_is_help=True
)


# --------------------------------------------------------------------------- tables


def front_table(front: Any, *, all_trials: bool = False) -> Table:
    """A rich table of the front (or of every completed trial), the knee marked.

    "val score" is the validation score the search selected on; "test score" is the test
    score to report ("-" when the study did not record one)."""
    trials = front.completed if all_trials else front.trials
    knee = front.knee().number if front.trials else None
    title = (
        f"study {front.study_name}: {len(front.trials)} on the front, "
        f"{len(front.completed)} completed, {len(front.failed)} failed"
    )
    caption = (
        "latency: median and p90 of each model's own timed runs during the study, "
        "not interleaved with the dense model's"
    )
    if getattr(front, "kind", "prune") == "supernet":
        from netsculpt.studies.front import SUPERNET_LINE

        title += f"\n{SUPERNET_LINE}"
        caption += "; dense: the largest sub-network"
    precision = any(getattr(t, "quantized", False) for t in front.completed)
    if precision:
        caption += "; int8: the quantized ONNX model, scored and timed in onnxruntime"
    table = Table(title=title, caption=caption)
    for col, justify in (
        ("trial", "right"),
        *((("precision", "left"),) if precision else ()),
        ("val score", "right"),
        ("test score", "right"),
        ("val vs dense", "right"),
        ("latency ms", "right"),
        ("p90 ms", "right"),
        ("vs dense speed", "right"),
        ("params", "right"),
        ("MACs", "right"),
        ("", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    base = front.baseline
    if base is not None:
        table.add_row(
            "dense",
            *(("float",) if precision else ()),
            f"{base.score:.4f}",
            _score_text(base.test_score),
            "",
            f"{base.latency_ms:.3f}",
            f"{base.latency_p90_ms:.3f}",
            "",
            f"{base.params:,}",
            f"{base.macs:,}",
            "",
            style="dim",
        )
    for t in sorted(trials, key=lambda t: t.latency_ms):
        speed = front.speedup(t)
        rel = "" if base is None or base.score == 0 else f"{t.score / base.score:.1%}"
        table.add_row(
            str(t.number),
            *((_precision_text(t),) if precision else ()),
            f"{t.score:.4f}",
            _score_text(t.test_score),
            rel,
            f"{t.latency_ms:.3f}",
            f"{t.latency_p90_ms:.3f}",
            "" if speed is None else speed_words(front.baseline.latency_ms, t.latency_ms),
            f"{t.params:,}",
            f"{t.macs:,}",
            "knee" if t.number == knee else "",
        )
    return table


def _score_text(score: float | None) -> str:
    return "-" if score is None else f"{score:.4f}"


def _precision_text(t: Any) -> str:
    """``float`` or ``int8 (static)``; per stage: ``int8 (static, 1/3 float)``."""
    if not getattr(t, "quantized", False):
        return "float"
    stages = {k: v for k, v in (t.precision or {}).items() if k != "*"}
    kept = sum(v == "float" for v in stages.values())
    return f"int8 ({t.quantize.mode}" + (f", {kept}/{len(stages)} float)" if kept else ")")


# --------------------------------------------------------------------------- commands

StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="sqlite:///file.db, postgresql://..., or a journal file "
        "path; default sqlite:///netsculpt.db (netsculpt.journal with --workers > 1)",
    ),
]


def search_command(
    model: Annotated[
        str,
        typer.Argument(
            help="built-in name (digits, minilm, mnist1d), 'package.module:factory', or a "
            "super-network folder (ns.save_supernet / netsculpt elastic) to slice without "
            "retraining"
        ),
    ],
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="the task that scores MODEL: a built-in or registered name (digits, minilm, "
            "mnist1d) or 'package.module:factory'; required unless MODEL is a built-in, which "
            "brings its own task",
        ),
    ] = None,
    trials: Annotated[int, typer.Option("--trials", help="trials the study holds when done")] = 60,
    storage: StorageOpt = None,
    study: Annotated[
        str | None,
        typer.Option(
            "--study", help="study name (default: derived from the model, so a rerun resumes)"
        ),
    ] = None,
    sampler: Annotated[str, typer.Option("--sampler", help="nsga2, tpe or random")] = "nsga2",
    workers: Annotated[int, typer.Option("--workers", help="worker processes here")] = 1,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="latency backend: torch or onnxruntime (default: torch, or onnxruntime when "
            "--precision offers int8, which only onnxruntime runs)",
        ),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            help="comma-separated precisions a trial chooses from: float, int8 (e.g. "
            "float,int8 searches precision with the structure; int8 alone quantizes every "
            "trial)",
        ),
    ] = "float",
    quantize_mode: Annotated[
        str,
        typer.Option(
            "--quantize-mode",
            help="how int8 trials are quantized: static (weights and activations, "
            "calibrated on the task's batches) or dynamic (weights only; transformer "
            "encoders)",
        ),
    ] = "static",
    precision_tie: Annotated[
        str,
        typer.Option(
            "--precision-tie",
            help="one precision per trial (model), per stage (stage) or per prunable "
            "group's layer (group)",
        ),
    ] = "model",
    predictor: Annotated[
        bool, typer.Option("--predictor/--no-predictor", help="screen candidates with a surrogate")
    ] = False,
    start_from_largest: Annotated[
        bool,
        typer.Option(
            "--start-from-largest/--no-start-from-largest",
            help="first try the largest sub-network of the space (unpruned) in each precision",
        ),
    ] = False,
    objectives: Annotated[
        str, typer.Option("--objectives", help="comma-separated")
    ] = "score,latency_ms,params",
    tie: Annotated[
        str, typer.Option("--tie", help="keep ratios per stage, layer or uniform")
    ] = "stage",
    min_keep: Annotated[float, typer.Option("--min-keep")] = 0.25,
    max_latency_ms: Annotated[
        float | None, typer.Option("--max-latency-ms", help="constraint")
    ] = None,
    recover_budget: Annotated[
        str,
        typer.Option(
            "--recover-budget",
            help="recovery of each trial before it is scored: steps (default 30: distilled "
            "from the dense model when the task has training data) or a time such as 30s; "
            "'none' scores trials as pruned",
        ),
    ] = "30",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    timeout: Annotated[float | None, typer.Option("--timeout", help="seconds")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    bn_calib_batches: Annotated[
        int,
        typer.Option(
            "--bn-calib-batches",
            help="super-network folder: training batches each slice's batch-norm statistics "
            "are recomputed on",
        ),
    ] = DEFAULT_BN_CALIB_BATCHES,
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="super-network folder: build its base model from this built-in name or "
            "'package.module:factory' (typed by you, so trusted) instead of what the folder "
            "names",
        ),
    ] = None,
    trust_code: TrustCode = False,
) -> None:
    """Search the Pareto front of MODEL's sub-networks (resumable; rerun to continue).

    The knee of the front is then timed against the dense model, runs interleaved. With a
    super-network folder, each trial is a slice of the trained super-network (no
    retraining), and the knee is timed against the largest sub-network.
    """
    from netsculpt.quantization.config import QuantizeConfig
    from netsculpt.studies.api import search
    from netsculpt.studies.config import StudyConfig
    from netsculpt.studies.space import SearchSpace

    precisions = tuple(p.strip() for p in precision.split(",") if p.strip())
    quantize = QuantizeConfig(mode=quantize_mode)  # type: ignore[arg-type]
    space = SearchSpace(
        tie=tie,  # type: ignore[arg-type]
        min_keep=min_keep,
        precision=precisions,
        precision_tie=precision_tie,  # type: ignore[arg-type]
        # the default (static) is quantize=None, so a float study stores the space it did
        quantize=quantize if "int8" in precisions and quantize != QuantizeConfig() else None,
    )
    if backend is None:
        backend = "onnxruntime" if space.quantizes else "torch"
    folder = supernet_folder(model)
    if folder is not None and task is None:
        raise InputError(
            f"netsculpt search needs --task for the super-network folder {model!r}: the task "
            f"scores each slice and gives the training batches batch norm is recalibrated "
            f"on; e.g. --task digits or --task pkg.mod:make_task"
        )
    if task is None:
        if model not in BUILTIN_MODELS:
            raise InputError(
                f"netsculpt search needs --task for the model {model!r}: only the built-in "
                f"models ({', '.join(BUILTIN_MODELS)}) bring their own task; name the task "
                f"that scores it, e.g. --task digits or --task pkg.mod:make_task (a function "
                f"returning an ns.Task)"
            )
        task = model
    try:
        config = StudyConfig(
            n_trials=trials,
            objectives=tuple(o.strip() for o in objectives.split(",") if o.strip()),
            sampler=sampler,
            workers=workers,
            space=space,
            constraints={"max_latency_ms": max_latency_ms} if max_latency_ms else {},
            predictor=predictor,
            backend=backend,
            seed=seed,
            recover_budget=_budget(recover_budget),
            timeout=timeout,
            bn_calib_batches=bn_calib_batches,
            start_from_largest=start_from_largest,
        )
        target: Any = model
        if folder is not None:
            target = load_supernet_folder(folder, base=base, trust_code=trust_code)
        front = search(
            target, task=task, config=config, storage=storage, study_name=study, progress=progress
        )
    except NetsculptError as exc:
        _fail(exc)
        return
    print_table(front_table(front))
    if front.trials and folder is not None:
        _compare_knee_supernet(front, target, backend=backend)
    elif front.trials:
        _compare_knee(front, model, backend=backend)
    console.print(
        f"study {front.study_name} saved; next: netsculpt pareto --study "
        f"{front.study_name}" + (f" --storage {storage}" if storage else ""),
        markup=False,
    )


def _compare_knee(front: Any, model: str, *, backend: str) -> None:
    """Time the knee against the dense model, runs interleaved; print how much faster."""
    from netsculpt.pruning.apply import apply

    knee = front.knee()
    base, inputs = resolve_model(model)  # the spec the user typed
    small: Any = apply(base, knee.plan)  # recovery changes weights, not latency
    if knee.quantized:  # the int8 model the search timed (ns.quantize of the sub-network)
        with console.status("quantizing the knee"):
            small = knee.quantized_model()
    with console.status("timing the knee and the dense model, runs interleaved"), _gc_frozen():
        latency = compare_models({"dense": base, "knee": small}, inputs, backend=backend)
    console.print(
        f"knee (trial {knee.number}{', int8' if knee.quantized else ''}) vs dense, "
        + compared_text(latency["dense"], latency["knee"], backend=backend),
        markup=False,
    )


@contextlib.contextmanager
def _gc_frozen() -> Iterator[None]:
    """Keep the objects alive now out of the collector's sight while models are timed: each
    timed run collects garbage first, and with torch's compiler stack imported a full
    collection walks millions of objects (about half a second each), as in ``ns.search``."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _compare_knee_supernet(front: Any, supernet: Any, *, backend: str) -> None:
    """Time the knee's slice against the largest sub-network, runs interleaved (batch-norm
    statistics change no latency, so neither is recalibrated here)."""
    knee = front.knee()
    dense = supernet.extract(supernet.largest())
    small = supernet.extract(knee.arch)
    with (
        console.status("timing the knee and the largest sub-network, runs interleaved"),
        _gc_frozen(),
    ):
        latency = compare_models(
            {"dense": dense, "knee": small}, supernet.example_inputs, backend=backend
        )
    console.print(
        f"knee (trial {knee.number}) vs the largest sub-network, "
        + compared_text(latency["dense"], latency["knee"], backend=backend),
        markup=False,
    )


def pareto_command(
    study: Annotated[str, typer.Option("--study", help="study name")],
    storage: StorageOpt = None,
    all_trials: Annotated[bool, typer.Option("--all", help="every completed trial")] = False,
) -> None:
    """Print the Pareto front of a stored study."""
    from netsculpt.studies.front import Front

    try:
        front = Front.load(storage, study)
    except NetsculptError as exc:
        _fail(exc)
        return
    print_table(front_table(front, all_trials=all_trials))


def export_command(
    study: Annotated[str, typer.Option("--study", help="study name")],
    out: Annotated[Path, typer.Option("--out", help="folder to write")],
    trial: Annotated[
        int | None, typer.Option("--trial", help="trial number (default: the knee of the front)")
    ] = None,
    storage: StorageOpt = None,
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="also write model.onnx")] = False,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="the base model: built-in name or 'package.module:factory' (default: the "
            "built-in name stored in the study); for a super-network study, the "
            "super-network folder it searched",
        ),
    ] = None,
    trust_code: Annotated[
        bool,
        typer.Option(
            "--trust-code/--no-trust-code",
            help="import the model factory or task stored in the study (only for studies "
            "whose author you trust; a stored file path is never run)",
        ),
    ] = False,
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance",
            help="int8 trial: the largest accepted gap between the int8 model's test score "
            "and the validation score the search measured (absolute, score units)",
        ),
    ] = DEFAULT_QUANT_TOLERANCE,
) -> None:
    """Materialise one trial: plan + weights (ns.save), optionally ONNX.

    An int8 trial (``--precision`` searches) also gets ``model.int8.onnx`` (its recipe
    ``model.int8.json`` and check ``model.int8.check.json`` beside it): the quantized model
    the search scored, its test score checked against the search's validation score within
    ``--tolerance`` (a gap beyond it is reported; the files are kept, the exit code is 0).
    """
    from netsculpt.studies.front import Front

    try:
        folder = supernet_folder(model)
        base: Any = model
        if folder is not None:
            base = load_supernet_folder(folder, base=None, trust_code=trust_code)
        front = Front.load(storage, study, model=base, trust_code=trust_code)
        chosen = front.knee() if trial is None else front.trial(trial)
        small = chosen.model
        from netsculpt.export.save import save

        inputs = front.example_inputs()
        spec = model if model is not None else front.model_spec
        factory = None
        if folder is not None:
            factory = supernet_base_factory(folder)
        elif spec:
            factory = base_factory_of(spec)
        save(small, out, base_factory=factory, example_inputs=inputs)
        written = [str(out)]
        if onnx:
            from netsculpt.export.onnx import export_onnx

            written.append(str(export_onnx(small, inputs, Path(out) / "model.onnx")))
        check = None
        if chosen.quantized:
            with warnings.catch_warnings():  # the gap is printed below, once
                warnings.simplefilter("ignore", UserWarning)
                check = chosen.export_quantized(Path(out) / "model.int8.onnx", tolerance=tolerance)
            written.append(str(check.model.path))
    except NetsculptError as exc:
        _fail(exc)
        return
    console.print(
        f"trial {chosen.number}: val score {chosen.score:.4f}, test score "
        f"{_score_text(chosen.test_score)}, {chosen.latency_ms:.3f} ms, "
        f"{chosen.params:,} params -> {', '.join(written)}",
        markup=False,
    )
    if check is not None:
        console.print(_check_text(check), markup=False)


def _check_text(check: Any) -> str:
    """One line on an exported int8 model: its test score against the search's validation."""
    verdict = (
        "within the tolerance"
        if check.within_tolerance
        else "BEYOND the tolerance: the search's ranking of this trial may not hold on new data"
    )
    return (
        f"int8 model: val score {check.validation_score:.4f} (search), test score "
        f"{check.test_score:.4f} (written model), gap {check.gap:+.4f}, tolerance "
        f"{check.tolerance:g}: {verdict}"
    )


def report_command(
    study: Annotated[str, typer.Option("--study", help="study name")],
    out: Annotated[Path, typer.Option("--out", help="HTML file to write")] = Path("report.html"),
    storage: StorageOpt = None,
    trial: Annotated[
        int | None, typer.Option("--trial", help="trial whose widths are shown (default: the knee)")
    ] = None,
) -> None:
    """Write a self-contained HTML report of a stored study."""
    from netsculpt.reporting.html import report
    from netsculpt.studies.front import Front

    try:
        front = Front.load(storage, study)
        path = report(front, out, trial=trial)
    except NetsculptError as exc:
        _fail(exc)
        return
    console.print(f"report written to {path}")


def register(target: typer.Typer) -> None:
    """Add ``search``, ``pareto``, ``export`` and ``report`` to the typer app ``target``."""
    target.command("search")(one_line_errors(search_command))
    target.command("pareto")(one_line_errors(pareto_command))
    target.command("export")(one_line_errors(export_command))
    target.command("report")(one_line_errors(report_command))


register(app)


def _budget(text: str | None) -> Any:
    if text is None or text.strip().lower() in ("none", "off", "0"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text
