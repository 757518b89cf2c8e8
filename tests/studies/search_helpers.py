"""Tiny models and fake tasks for the search tests (importable by spawned workers).

``WidthTask`` scores a model by the fraction of the dense parameter count it keeps (a
deterministic stand-in for accuracy), and can be told through environment variables to

* log every ``evaluate`` call to a file (``NETSCULPT_TEST_EVAL_LOG``): one line
  ``<pid> <params>`` per call;
* hang on its k-th call (``NETSCULPT_TEST_HANG_AT=k``) after writing the file
  ``NETSCULPT_TEST_HANG_MARKER``, so that a test can kill the process mid-trial.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import netsculpt as ns
from netsculpt.measurement.api import count_params
from netsculpt.studies import SearchSpace, StudyConfig

FAST_MEASURE = {"warmup": 0, "repeats": 3, "memory": False}


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 32)
        self.fc2 = nn.Linear(32, 24)
        self.out = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def tiny_inputs() -> torch.Tensor:
    return torch.randn(8, 12, generator=torch.Generator().manual_seed(0))


def tiny_mlp() -> tuple[nn.Module, torch.Tensor]:
    """Factory for ``"search_helpers:tiny_mlp"``: (model, example_inputs)."""
    torch.manual_seed(0)
    return TinyMLP(), tiny_inputs()


DENSE_PARAMS = count_params(TinyMLP())


class WidthTask(ns.Task):
    """Score = kept parameter fraction; optionally logs, fails or hangs (see module doc)."""

    name = "width-task"

    def __init__(
        self,
        *,
        fail_below: float | None = None,
        nan_below: float | None = None,
        calls: list[int] | None = None,
    ) -> None:
        self.fail_below = fail_below
        self.nan_below = nan_below
        self.calls = calls if calls is not None else []

    def example_inputs(self) -> torch.Tensor:
        return tiny_inputs()

    def evaluate(self, model: nn.Module) -> float:
        params = count_params(model)
        self.calls.append(params)
        log = os.environ.get("NETSCULPT_TEST_EVAL_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {params}\n")
        hang_at = os.environ.get("NETSCULPT_TEST_HANG_AT")
        if hang_at and len(self.calls) == int(hang_at):
            marker = os.environ.get("NETSCULPT_TEST_HANG_MARKER")
            if marker:
                Path(marker).write_text(str(os.getpid()))
            folder = os.environ.get("NETSCULPT_TEST_HANG_DIR")
            if folder:  # one file per hanging process
                (Path(folder) / str(os.getpid())).write_text("hanging")
            time.sleep(600)
        score = params / DENSE_PARAMS
        if self.fail_below is not None and score < self.fail_below:
            raise RuntimeError(f"model too small to score ({params} params)")
        if self.nan_below is not None and score < self.nan_below:
            return float("nan")
        return score


#: arguments of ns.search that replace config fields (they stay in the call)
SHORTCUTS = ("n_trials", "sampler", "predictor")


def search_with(model: Any, x: Any = None, **options: Any) -> Any:
    """``ns.search`` with old-style keywords: the StudyConfig fields among ``options`` go
    into ``config=StudyConfig(...)``, the rest (and the shortcuts) stay in the call."""
    names = [k for k in StudyConfig.__dataclass_fields__ if k not in SHORTCUTS]
    fields = {k: options.pop(k) for k in names if k in options}
    if fields:
        options["config"] = StudyConfig(**fields)
    return ns.search(model, x, **options)


def kill_target(storage: str, study: str, n_trials: int) -> None:
    """Run a search as a subprocess target (``python search_helpers.py STORAGE STUDY N``).

    ``NETSCULPT_TEST_WORKERS`` sets ``workers``; ``NETSCULPT_TEST_OBJECTS=1`` passes the
    model and the task as objects instead of by name.
    """
    torch.set_num_threads(1)
    objects = os.environ.get("NETSCULPT_TEST_OBJECTS") == "1"
    model, inputs = tiny_mlp() if objects else ("search_helpers:tiny_mlp", None)
    ns.search(
        model,
        inputs,
        task=WidthTask() if objects else "search_helpers:WidthTask",
        n_trials=n_trials,
        storage=storage,
        study_name=study,
        sampler="random",
        progress=False,
        config=StudyConfig(
            workers=int(os.environ.get("NETSCULPT_TEST_WORKERS", "1")),
            measure_options=FAST_MEASURE,
            seed=int(os.environ.get("NETSCULPT_TEST_SEED", "0")),
            space=SearchSpace(tie="layer", importance=("magnitude",), round_to=(1,)),
        ),
    )


def study_trials(storage: str, study: str) -> list[Any]:
    import optuna

    return optuna.load_study(study_name=study, storage=_storage(storage)).get_trials()


def _storage(storage: str) -> Any:
    from netsculpt.studies.storage import open_storage, resolve_storage

    return open_storage(resolve_storage(storage), heartbeat=False)


if __name__ == "__main__":
    kill_target(sys.argv[1], sys.argv[2], int(sys.argv[3]))
