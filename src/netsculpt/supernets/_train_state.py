"""The checkpoint folder of :func:`netsculpt.train_supernet`: write, check and read it back.

Layout of a checkpoint folder::

    checkpoint.json            what the run is (config, super-network, world size) and where
                               it stands (step, seconds trained, checksums); written last,
                               atomically, so it always names a complete step folder
    step-000000120/
        model.safetensors      supernet.model's weights after that many steps
        optimizer.pt           the optimiser's state (torch.save; read with weights_only=True)
    dense.safetensors          the frozen dense model the largest sub-network learns from
                               (fine-tuning mode only; written once, before the first step)

Everything read back is data: the JSON is checked field by field, the step folder's name is
rebuilt from the step count (never taken from the file), the weights' names and shapes are
checked against the model before they are loaded, and ``optimizer.pt`` is read with
``torch.load(..., weights_only=True)``, which unpickles tensors and plain containers only.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model
from torch import nn

from netsculpt.errors import ChecksumError, SaveLoadError
from netsculpt.export._folder import (
    header,
    load_weights,
    make_folder,
    read_bounded,
    sha256,
    write_atomic,
)
from netsculpt.supernets.io import architecture_signature
from netsculpt.supernets.supernet import Supernet

__all__ = [
    "CHECKPOINT",
    "DENSE",
    "Resume",
    "identity",
    "load_dense",
    "read_checkpoint",
    "restore",
    "write_checkpoint",
    "write_dense",
]

CHECKPOINT = "checkpoint.json"
DENSE = "dense.safetensors"
MODEL = "model.safetensors"
OPTIMIZER = "optimizer.pt"
FORMAT = "netsculpt.supernet-training/1"
_STEP_DIR = re.compile(r"^step-\d{9}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: a checkpoint.json holds a config and a space: far below this
_MAX_JSON = 16 * 1024 * 1024
#: config fields a resumed run may change (they do not change what is computed)
_FREE = ("checkpoint_every",)


@dataclass(frozen=True)
class Resume:
    """Where a checkpoint folder stands: ``step`` steps taken in ``seconds`` of training."""

    folder: Path
    step: int
    seconds: float
    files: dict[str, str]

    @property
    def step_dir(self) -> Path:
        return self.folder / _step_name(self.step)


def _step_name(step: int) -> str:
    return f"step-{step:09d}"


def identity(supernet: Supernet, config: Mapping[str, Any], world_size: int) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes from it."""
    return {
        "config": {k: v for k, v in config.items() if k not in _FREE},
        "world_size": world_size,
        "supernet": {
            "signature": architecture_signature(supernet.model),
            "elastic_config": supernet.config.to_dict(),
            "space": supernet.space.to_dict(),
        },
    }


def _bad(path: Path, problem: str) -> SaveLoadError:
    return SaveLoadError(
        f"{str(path)!r} {problem}; it is damaged or was not written by netsculpt.train_supernet: "
        f"pass another checkpoint folder (or delete this one) to start afresh"
    )


def _differences(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(wanted))
    return [
        f"{k}={saved.get(k)!r} there, {wanted.get(k)!r} now"
        for k in keys
        if saved.get(k) != wanted.get(k)
    ]


def read_checkpoint(folder: Path, wanted: Mapping[str, Any]) -> Resume | None:
    """The state a checkpoint folder holds, or None when it holds none yet.

    Raises:
        SaveLoadError: ``checkpoint.json`` is malformed, or was written by a run of another
            super-network, config or number of processes (the message names what differs).
    """
    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    try:
        data = json.loads(read_bounded(path, _MAX_JSON).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _bad(path, f"is not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _bad(path, f"is not a super-network training checkpoint (format {FORMAT!r})")
    step, seconds, files = data.get("step"), data.get("seconds"), data.get("files")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise _bad(path, f"has step={step!r}, not a count of steps")
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise _bad(path, f"has seconds={seconds!r}, not a duration")
    if (
        not isinstance(files, dict)
        or set(files) != {MODEL, OPTIMIZER}
        or not all(isinstance(v, str) and _HEX64.match(v) for v in files.values())
    ):
        raise _bad(path, f"has files={files!r:.120}, not the SHA-256 of {MODEL} and {OPTIMIZER}")
    saved_net, wanted_net = data.get("supernet"), wanted["supernet"]
    if saved_net != wanted_net:
        what = "model architecture"
        if isinstance(saved_net, dict) and saved_net.get("signature") == wanted_net["signature"]:
            what = (
                "elastic config"
                if saved_net.get("elastic_config") != wanted_net["elastic_config"]
                else "space"
            )
        raise SaveLoadError(
            f"checkpoint folder {str(folder)!r} was written while training another super-network "
            f"(its {what} differs from this one's); resume with the super-network that run "
            f"trained (ns.elastic with the same model and ElasticConfig), or pass another "
            f"checkpoint folder to start afresh"
        )
    saved_config = data.get("config")
    if not isinstance(saved_config, dict):
        raise _bad(path, "has no config")
    diff = _differences(saved_config, wanted["config"])
    if diff:
        raise SaveLoadError(
            f"checkpoint folder {str(folder)!r} was written by a run with another "
            f"SupernetTrainConfig ({'; '.join(diff[:6])}); resume with the config that run "
            f"used (SupernetTrainConfig.from_dict(json.load(open(...))['config']) rebuilds "
            f"it), or pass another checkpoint folder to start afresh"
        )
    if data.get("world_size") != wanted["world_size"]:
        raise SaveLoadError(
            f"checkpoint folder {str(folder)!r} was written by a run on "
            f"{data.get('world_size')!r} processes, this one has {wanted['world_size']}; each "
            f"process reads its own shard of the data, so resume with the same number of "
            f"processes (torchrun --nproc_per_node), or pass another folder to start afresh"
        )
    return Resume(folder, step, float(seconds), dict(files))


def _verified(resume: Resume, name: str) -> Path:
    path = resume.step_dir / name
    if not path.is_file():
        raise _bad(
            resume.folder / CHECKPOINT, f"names step {resume.step}, but {str(path)!r} is missing"
        )
    if sha256(path) != resume.files[name]:
        raise ChecksumError(
            f"{str(path)!r} changed after the checkpoint was written (its SHA-256 differs from "
            f"the one in {CHECKPOINT}); pass another checkpoint folder to start afresh"
        )
    return path


def _load_weights(model: nn.Module, path: Path) -> None:
    _metadata, table = header(path)
    load_weights(
        model,
        path,
        table,
        strict=True,
        misfit=lambda exc: (
            f"the weights in {str(path)!r} do not fit the super-network ({exc}); pass another "
            f"checkpoint folder to start afresh"
        ),
    )


def restore(resume: Resume, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load the checkpoint's weights into ``model`` and its state into ``optimizer``."""
    _load_weights(model, _verified(resume, MODEL))
    path = _verified(resume, OPTIMIZER)
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        optimizer.load_state_dict(state)
    except (RuntimeError, OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise SaveLoadError(
            f"the optimiser state in {str(path)!r} cannot be read into this run's optimiser "
            f"({str(exc)[:200]}); pass another checkpoint folder to start afresh"
        ) from exc


def write_checkpoint(
    folder: Path,
    wanted: Mapping[str, Any],
    *,
    step: int,
    seconds: float,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: Mapping[str, Any],
) -> None:
    """Write the state after ``step`` steps, then point ``checkpoint.json`` at it and remove
    the older step folders."""
    step_dir = folder / _step_name(step)
    make_folder(step_dir, "checkpoint folder", "pass a checkpoint folder you can write to")
    write_atomic(step_dir / MODEL, lambda p: save_model(model, str(p)))
    write_atomic(step_dir / OPTIMIZER, lambda p: torch.save(optimizer.state_dict(), p))
    description = {
        "format": FORMAT,
        "step": step,
        "seconds": seconds,
        **wanted,
        "rng": dict(rng),
        "files": {MODEL: sha256(step_dir / MODEL), OPTIMIZER: sha256(step_dir / OPTIMIZER)},
    }
    text = json.dumps(description, indent=1, allow_nan=False)
    write_atomic(folder / CHECKPOINT, lambda p: p.write_bytes(text.encode("utf-8")))
    for old in folder.iterdir():
        if old != step_dir and old.is_dir() and not old.is_symlink() and _STEP_DIR.match(old.name):
            shutil.rmtree(old, ignore_errors=True)


def write_dense(folder: Path, model: nn.Module) -> None:
    """Keep the dense model's weights, which a resumed fine-tuning run learns from again."""
    make_folder(folder, "checkpoint folder", "pass a folder you can write to")
    write_atomic(folder / DENSE, lambda p: save_model(model, str(p)))


def load_dense(folder: Path, model: nn.Module) -> None:
    """Load the dense weights a checkpointed fine-tuning run started from into ``model``."""
    path = folder / DENSE
    if not path.is_file():
        raise _bad(
            folder / CHECKPOINT,
            f"belongs to a run in which the largest sub-network learns from the dense model, but "
            f"{DENSE} (that model's weights) is missing",
        )
    _load_weights(model, path)
