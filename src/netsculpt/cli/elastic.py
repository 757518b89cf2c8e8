"""Command-line commands of elastic super-networks: ``elastic``, ``train-supernet``, ``extract``.

::

    netsculpt elastic digits --out supernet/ --keep 0.25,0.5,0.75,1 --depth
    netsculpt train-supernet supernet/ --task digits --budget 300
    torchrun --nproc_per_node 2 -m netsculpt train-supernet supernet/ --task digits --budget 60s
    netsculpt extract supernet/ --arch smallest --out small/ --task digits --onnx

``MODEL`` is a built-in name (``digits``, ``minilm``, ``mnist1d``), ``package.module:factory``
(also ``path/to/file.py:factory``), a function returning ``(model, example_inputs)``, or a
folder written by ``netsculpt prune``/``export``. A string typed on the command line is
trusted: it is the user's own code. A super-network folder is data: it is loaded without
running anything it names unless ``--trust-code`` is given (netsculpt's own built-in
factories excepted), or ``--base MODEL`` gives the base model instead.

``train-supernet`` runs data-parallel when started by ``torchrun`` (``WORLD_SIZE`` > 1): each
process joins a ``torch.distributed`` group on the gloo backend, and only rank 0 writes the
trained folder.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from torch import nn

from netsculpt.cli._models import (
    ModelArg,
    TrustCode,
    base_factory_of,
    load_model_spec,
    load_supernet_folder,
    supernet_base_factory,
)
from netsculpt.cli._output import console, one_line_errors, print_table
from netsculpt.errors import InputError

__all__ = ["extract_command", "elastic_command", "register", "train_supernet_command"]

BaseOpt = Annotated[
    str | None,
    typer.Option(
        "--base",
        help="build the base model from this built-in name or 'package.module:factory' (typed "
        "by you, so trusted) instead of what the folder names",
    ),
]


# --------------------------------------------------------------------------- helpers


def _keep(text: str) -> tuple[float, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise InputError(
            f"--keep {text!r} is not a comma-separated list of keep fractions; write e.g. "
            f"--keep 0.25,0.5,0.75,1"
        ) from None


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _space_table(supernet: Any) -> Table:
    table = Table(title=f"{type(supernet.model).__name__} super-network: {supernet.space!r}")
    for col, justify in (("choice", "left"), ("kind", "left"), ("options", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for c in supernet.space:
        options = (
            "keep or drop" if c.kind == "depth" else ", ".join(str(n) for n in c.options)
        ) + (f" (units of {c.unit_width})" if c.unit_width > 1 else "")
        table.add_row(c.name, c.kind, options)
    for name, why in supernet.fixed.items():
        table.add_row(name, "fixed", why, style="dim")
    return table


def _summary(supernet: Any) -> str:
    largest = _params(supernet.extract(supernet.largest()))
    smallest = _params(supernet.extract(supernet.smallest()))
    return (
        f"{supernet.space.size:,.0f} sub-networks; params: largest {largest:,}, smallest "
        f"{smallest:,} ({largest / max(smallest, 1):.2f}x fewer)"
    )


# --------------------------------------------------------------------------- commands


def elastic_command(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", help="super-network folder to write")],
    keep: Annotated[
        str, typer.Option("--keep", help="keep fractions every group offers, comma-separated")
    ] = "0.25,0.5,0.75,1",
    round_to: Annotated[
        int, typer.Option("--round-to", help="widths at multiples of this many channels")
    ] = 1,
    depth: Annotated[
        bool, typer.Option("--depth/--no-depth", help="let removable blocks be dropped")
    ] = False,
    importance: Annotated[
        str, typer.Option("--importance", help="criterion that orders the units once")
    ] = "magnitude",
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="module name or re:pattern kept whole")
    ] = None,
    trust_code: TrustCode = False,
) -> None:
    """Make MODEL an elastic super-network and save it (print its space)."""
    from netsculpt.pruning.importance import criterion_info
    from netsculpt.supernets.config import ElasticConfig
    from netsculpt.supernets.io import save_supernet
    from netsculpt.supernets.supernet import elastic

    config = ElasticConfig(
        keep=_keep(keep),
        round_to=round_to,
        depth=depth,
        importance=importance,
        exclude=tuple(exclude or ()),
    )
    module, inputs = load_model_spec(model, trust_code=trust_code)
    calib = [inputs] if criterion_info(importance).needs_calib else None
    with console.status("ordering units by importance"):
        supernet = elastic(module, inputs, config, calib=calib)
    folder = save_supernet(supernet, out, base_factory=base_factory_of(model))
    print_table(_space_table(supernet))
    console.print(_summary(supernet), markup=False)
    console.print(
        f"written: {folder}; next: netsculpt train-supernet {folder} --task NAME --budget 300",
        markup=False,
    )


@contextmanager
def _distributed() -> Iterator[tuple[int, int]]:
    """``(rank, world size)``; joins a gloo process group when torchrun started more than
    one process (``WORLD_SIZE`` > 1), and leaves it afterwards."""
    text = os.environ.get("WORLD_SIZE", "1").strip() or "1"
    try:
        world = int(text)
    except ValueError:
        raise InputError(
            f"WORLD_SIZE={text!r} is not a number of processes; start the command with "
            f"torchrun --nproc_per_node N, or unset WORLD_SIZE"
        ) from None
    if world <= 1:
        yield 0, 1
        return
    import torch.distributed as dist

    started = not dist.is_initialized()
    if started:
        dist.init_process_group(backend="gloo")
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        if started:
            dist.destroy_process_group()


def train_supernet_command(
    folder: Annotated[Path, typer.Argument(help="super-network folder (netsculpt elastic --out)")],
    task: Annotated[
        str,
        typer.Option(
            "--task",
            help="the task to train on: built-in or registered name (digits, minilm, mnist1d) "
            "or 'package.module:factory'",
        ),
    ],
    budget: Annotated[
        str, typer.Option("--budget", help="steps (300) or a time (60s, 2m)")
    ] = "300",
    n_random: Annotated[
        int | None,
        typer.Option("--random", help="random sub-networks per step besides largest and smallest"),
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="learning rate")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="folder to checkpoint into and resume from"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="folder for the trained super-network (default: FOLDER)"),
    ] = None,
    base: BaseOpt = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--evaluate/--no-evaluate",
            help="score the largest and smallest sub-networks on the validation split after",
        ),
    ] = True,
    trust_code: TrustCode = False,
) -> None:
    """Train a saved super-network (sandwich rule, in-place distillation) and save it.

    Under ``torchrun --nproc_per_node N -m netsculpt train-supernet ...`` every process
    trains on its share of each batch (gloo backend); rank 0 writes the folder.
    """
    from netsculpt.recovery.budget import Budget
    from netsculpt.supernets.io import save_supernet
    from netsculpt.supernets.training import SupernetTrainConfig, train_supernet
    from netsculpt.tasks.registry import get_task

    the_budget = Budget.parse(budget)
    options: dict[str, Any] = {
        "n_random": n_random,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
    }
    config = SupernetTrainConfig(**{k: v for k, v in options.items() if v is not None})
    with _distributed() as (rank, world):
        supernet = load_supernet_folder(folder, base=base, trust_code=trust_code)
        factory = supernet_base_factory(folder, base)
        the_task = get_task(task)
        start = time.perf_counter()
        train_supernet(
            supernet,
            the_task,
            the_budget,
            config=config,
            progress=progress and rank == 0,
            checkpoint=checkpoint,
        )
        seconds = time.perf_counter() - start
        if rank == 0:
            target = save_supernet(supernet, out or folder, base_factory=factory)
            processes = f" on {world} processes" if world > 1 else ""
            console.print(
                f"trained{processes} for {seconds:.1f} s (budget {_budget_text(the_budget)})",
                markup=False,
            )
            if evaluate:
                console.print(_scores(supernet, the_task), markup=False)
            console.print(
                f"written: {target}; next: netsculpt extract {target} --arch smallest --out "
                f"small/ --task {task}",
                markup=False,
            )


def _budget_text(budget: Any) -> str:
    parts = [] if budget.steps is None else [f"{budget.steps} steps"]
    return " or ".join(parts + ([] if budget.seconds is None else [f"{budget.seconds:g} s"]))


def _scores(supernet: Any, task: Any) -> str:
    """Validation scores of the largest and smallest sub-networks (batch norm recomputed)."""
    calib = task.calib_batches()
    largest = task.evaluate(supernet.extract(supernet.largest(), calib=calib))
    smallest = task.evaluate(supernet.extract(supernet.smallest(), calib=calib))
    return (
        f"validation score: largest sub-network {largest:.4f}, smallest {smallest:.4f} "
        f"(batch-norm statistics recomputed on {len(calib)} training batches)"
    )


def _arch(supernet: Any, text: str) -> dict[str, Any]:
    if text.strip() in ("largest", "smallest"):
        return dict(getattr(supernet, text.strip())())
    try:
        arch = json.loads(text)
    except ValueError as exc:
        raise InputError(
            f"--arch {text[:80]!r} is neither 'largest', 'smallest' nor a JSON object ({exc}); "
            f"write e.g. --arch '{json.dumps(supernet.smallest())[:120]}'"
        ) from None
    return dict(supernet.space.check(arch, where="--arch"))


def extract_command(
    folder: Annotated[Path, typer.Argument(help="super-network folder")],
    arch: Annotated[
        str,
        typer.Option("--arch", help="'largest', 'smallest' or a JSON sub-network {choice: value}"),
    ],
    out: Annotated[Path, typer.Option("--out", help="folder for the extracted model (ns.save)")],
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="also write model.onnx")] = False,
    calib: Annotated[
        int | None,
        typer.Option(
            "--calib",
            help="training batches of --task to recompute batch-norm statistics on (default 8 "
            "with --task)",
        ),
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="task whose batches recalibrate batch norm")
    ] = None,
    base: BaseOpt = None,
    trust_code: TrustCode = False,
) -> None:
    """Slice one sub-network out as an ordinary, smaller model folder (ns.load reads it)."""
    from netsculpt.export.save import save
    from netsculpt.tasks.registry import get_task

    if calib is not None and calib < 0:
        raise InputError(f"--calib {calib} is negative; pass a number of batches, e.g. --calib 8")
    if calib and task is None:
        raise InputError(
            f"--calib {calib} needs --task NAME: the batches batch norm is recomputed on come "
            f"from the task's training split"
        )
    supernet = load_supernet_folder(folder, base=base, trust_code=trust_code)
    chosen = _arch(supernet, arch)
    the_task = get_task(task) if task is not None else None
    batches = None
    if the_task is not None and calib != 0:
        batches = the_task.calib_batches(8 if calib is None else calib)
    small = supernet.extract(chosen, calib=batches)
    inputs = supernet.example_inputs
    save(small, out, base_factory=supernet_base_factory(folder, base), example_inputs=inputs)
    written = [str(out)]
    if onnx:
        from netsculpt.export.onnx import export_onnx

        written.append(str(export_onnx(small, inputs, Path(out) / "model.onnx")))
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in small.modules())
    full = _params(supernet.model)
    console.print(
        f"sub-network {json.dumps(chosen)}: {_params(small):,} params "
        f"({full / max(_params(small), 1):.2f}x fewer than the super-network)",
        markup=False,
    )
    if the_task is not None:
        console.print(
            f"validation score {the_task.evaluate(small):.4f} ({the_task.name})", markup=False
        )
    if has_bn and not batches:
        console.print(
            "batch-norm statistics are the super-network's shared ones; pass --task NAME to "
            "recompute them for this sub-network",
            markup=False,
        )
    console.print("written: " + ", ".join(written), markup=False)


def register(target: typer.Typer) -> None:
    """Add ``elastic``, ``train-supernet`` and ``extract`` to the typer app ``target``."""
    target.command("elastic")(one_line_errors(elastic_command))
    target.command("train-supernet")(one_line_errors(train_supernet_command))
    target.command("extract")(one_line_errors(extract_command))
