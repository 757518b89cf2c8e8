"""What the small benchmarks share: their common options, and the end of every table (the
machine line, printing, writing .md and .json)."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console


def options(parser: argparse.ArgumentParser) -> None:
    """``--calib``, ``--quick`` and ``--out``, as every small benchmark takes them."""
    parser.add_argument("--calib", type=int, default=8, help="calibration batches of 16")
    parser.add_argument("--quick", action="store_true", help="tiny model: a smoke run")
    parser.add_argument("--out", type=Path, default=None, help="results folder")


def begin(args: argparse.Namespace, results: Path) -> tuple[Path | None, float]:
    """One thread; the results folder (none for a quick run unless ``--out`` says) and the
    start time."""
    torch.set_num_threads(1)
    out = args.out if args.out is not None else (None if args.quick else results)
    return out, time.perf_counter()


def finish(
    lines: list[str],
    started: float,
    console: Console,
    out: Path | None,
    name: str,
    data: Any,
) -> None:
    """Add the machine and the total time to ``lines``, print them, and write
    ``out/name.md`` and ``out/name.json`` (``data``) unless ``out`` is None."""
    lines += [
        "",
        f"{platform.platform()}, torch {torch.__version__}, 1 thread; total "
        f"{(time.perf_counter() - started) / 60:.1f} min.",
    ]
    text = "\n".join(lines) + "\n"
    console.print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.md").write_text(text)
        (out / f"{name}.json").write_text(json.dumps(data, indent=1))
