"""The ``quantize`` command: int8 post-training quantization through ONNX Runtime.

::

    netsculpt quantize small/ --mode static --task digits --calib 8 --out small.int8.onnx
    netsculpt quantize small/ --mode dynamic --out small.int8.onnx --float fc

``MODEL`` is a save folder written by ``netsculpt prune``/``export`` (loaded without running
anything it names unless ``--trust-code``), a built-in name or ``package.module:factory``.
A save folder records no task, so static mode names the task its calibration batches come
from with ``--task``; with a task, both models are scored on its validation split.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from netsculpt.cli._models import ModelArg, TrustCode, load_model_spec
from netsculpt.cli._output import console, one_line_errors, print_table
from netsculpt.errors import InputError

__all__ = ["quantize_command", "register"]


def quantize_command(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", help="the quantized .onnx file to write")],
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            help="static (weights and activations) or dynamic; default: the mode the saved "
            "plan records (an int8 trial exported from a search), else static",
        ),
    ] = None,
    calib: Annotated[
        int | None,
        typer.Option("--calib", help="calibration batches read from the task (static; 8)"),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="the task that gives calibration batches (needed for static mode) and "
            "scores both models on its validation split: digits, mnist1d, minilm, ...",
        ),
    ] = None,
    float_layers: Annotated[
        list[str] | None,
        typer.Option("--float", help="module or node name (or re:pattern) to keep in float"),
    ] = None,
    per_channel: Annotated[
        bool | None,
        typer.Option("--per-channel/--per-tensor", help="weight scales per channel (the default)"),
    ] = None,
    trust_code: TrustCode = False,
) -> None:
    """Quantize a model to int8 with ONNX Runtime; write the .onnx and its recipe (.json)."""
    from netsculpt.pruning.apply import plan_of
    from netsculpt.quantization import QuantizeConfig, quantize
    from netsculpt.tasks.registry import get_task

    with console.status("loading the model"):
        module, inputs = load_model_spec(model, trust_code=trust_code)
    # a plan with a precision per layer (Plan.with_precision, a search's int8 trial) gives
    # the options the command line leaves out; its float layers are kept float either way
    plan = plan_of(module)
    planned = plan.quantize_config if plan is not None else None
    given: dict[str, Any] = {}
    if mode is not None:  # checked by QuantizeConfig; the activation type follows the mode
        given.update(mode=mode, activation_type=None)
    if calib is not None:
        given["calib_batches"] = calib
    if per_channel is not None:
        given["per_channel"] = per_channel
    base = planned if planned is not None else QuantizeConfig()
    config = dataclasses.replace(base, **given).keeping_float(tuple(float_layers or ()))
    if config.mode == "static" and task is None:
        raise InputError(
            "static mode needs calibration batches, and a model or save folder names no task; "
            "pass --task digits (or the task the model was trained on), or --mode dynamic"
        )
    scorer = get_task(task) if task is not None else None
    with console.status(f"quantizing ({config.mode})"):
        calib_batches = scorer if config.mode == "static" else None
        result = quantize(module, inputs, config, calib=calib_batches, path=out)
    table = Table(title=f"{model}: {len(result.quantized)} of {len(result.layers)} layers int8")
    for column in ("layer", "module", "op", "precision"):
        table.add_column(column)
    for choice in result.layers:
        precision = "int8" if choice.quantized else f"float ({choice.reason})"
        table.add_row(choice.node, choice.module, choice.op_type, precision)
    print_table(table)
    console.print(
        f"size on disk: {result.float_bytes:,} -> {result.quantized_bytes:,} bytes "
        f"({result.size_ratio:.1f}x smaller); pre-processing "
        f"{result.preprocess or 'ran'}",
        markup=False,
    )
    if scorer is not None:
        with console.status("scoring both models on the validation split"):
            dense, quantized = scorer.evaluate(module), scorer.evaluate(result.as_module())
        console.print(f"{scorer.name} validation score: float {dense:.4f}, int8 {quantized:.4f}")
    console.print(f"quantized model: {result.path} (recipe: {result.path.with_suffix('.json')})")


def register(target: typer.Typer) -> None:
    """Add ``quantize`` to the typer app ``target``."""
    target.command("quantize")(one_line_errors(quantize_command))
