"""What the built-in classification tasks on fixed tensor splits share (``digits``, ``mnist1d``).

* :class:`TensorSplits`: a stratified, seeded train/validation/test split held as tensors
  (:func:`split_rows` draws it, :func:`tensor_splits` builds it);
* :class:`SplitsTask`: a :class:`~netsculpt.tasks.base.Task` on such a split, scored by
  top-1 accuracy, drawing example inputs, calibration and training batches from the train
  split only;
* :func:`cache_folder` and :func:`cached_pretrained`: a task's pretrained weights, trained
  once and kept as safetensors in netsculpt's cache folder.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import nn

from netsculpt._checks import check_int
from netsculpt._inputs import ExampleInputs
from netsculpt.errors import InputError, SaveLoadError
from netsculpt.tasks.base import Split, Task, check_split

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "SplitsTask",
    "TensorSplits",
    "accuracy",
    "batches",
    "cache_folder",
    "cached_pretrained",
    "split_rows",
    "tensor_splits",
]

_S = TypeVar("_S", bound="TensorSplits")


@dataclass(frozen=True)
class TensorSplits:
    """A fixed split: inputs ``[N, 1, ...]`` float32, labels int64.

    ``*_index`` are the rows of the whole data set each part came from.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    train_index: tuple[int, ...]
    val_index: tuple[int, ...]
    test_index: tuple[int, ...]


def split_rows(
    labels: np.ndarray, *, val_size: int, test_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sorted train, validation and test rows: stratified by ``labels``, seeded, disjoint.

    The test rows are drawn first from all rows, the validation rows from the rest.
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=test_size, stratify=labels, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_size, stratify=labels[rest], random_state=seed
    )
    return np.sort(train), np.sort(val), np.sort(test)


def tensor_splits(
    cls: type[_S],
    x: np.ndarray,
    y: np.ndarray,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> _S:
    """``cls`` holding ``x`` (a channel axis added after the first) and ``y`` at ``rows``."""
    train, val, test = rows

    def part(r: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(x[r]).unsqueeze(1).contiguous(), torch.from_numpy(y[r])

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = part(train), part(val), part(test)
    return cls(
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=val_y,
        test_x=test_x,
        test_y=test_y,
        train_index=tuple(int(i) for i in train),
        val_index=tuple(int(i) for i in val),
        test_index=tuple(int(i) for i in test),
    )


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``, in eval mode without gradients."""
    device = _device_of(model)
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.inference_mode():
            for start in range(0, len(y), batch_size):
                logits = model(x[start : start + batch_size].to(device))
                if isinstance(logits, (tuple, list)):
                    logits = logits[0]
                pred = logits.argmax(dim=-1).cpu()
                correct += int((pred == y[start : start + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / len(y)


def _device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for an empty model."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(x, y)`` batches, reshuffled each epoch by a generator seeded with ``seed``;
    a final partial batch of an epoch is dropped."""
    generator = torch.Generator().manual_seed(seed)
    size = min(batch_size, len(y))
    while True:
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y) - size + 1, size):
            rows = order[start : start + size]
            yield x[rows], y[rows]


class SplitsTask(Task):
    """A classification task on a fixed :class:`TensorSplits` (``self.splits``).

    The score is top-1 accuracy on the validation split (``evaluate(model)``) or the test
    split (``evaluate(model, "test")``); example inputs, calibration and training batches
    come from the train split, ``example_batch_size`` inputs at a time.
    """

    splits: TensorSplits
    example_batch_size: int

    def evaluate(self, model: nn.Module, split: Split = "validation") -> float:
        """Top-1 accuracy on the validation split, or the test split."""
        if check_split(split) == "test":
            return accuracy(model, self.splits.test_x, self.splits.test_y)
        return accuracy(model, self.splits.val_x, self.splits.val_y)

    def describe_splits(self) -> dict[str, int]:
        """Examples per split: ``{"train": ..., "validation": ..., "test": ...}``."""
        s = self.splits
        return {"train": len(s.train_y), "validation": len(s.val_y), "test": len(s.test_y)}

    def example_inputs(self) -> torch.Tensor:
        """The first ``example_batch_size`` training inputs."""
        return self.splits.train_x[: self.example_batch_size].clone()

    def calib_batches(self, n: int = 4) -> list[ExampleInputs]:
        """``n`` batches of ``example_batch_size`` training inputs (wrapping around)."""
        try:
            check_int(n, "n")
        except InputError as exc:
            raise InputError(f"calib_batches: {exc}") from None
        if n < 1:
            raise InputError(f"calib_batches needs n >= 1, got n={n}; ask for at least one batch")
        x, size = self.splits.train_x, self.example_batch_size
        rows = torch.arange(n * size) % len(x)
        return [x[rows[i * size : (i + 1) * size]] for i in range(n)]

    def train_batches(
        self, *, batch_size: int = 64, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless ``(inputs, labels)`` batches from the train split, reshuffled each epoch.

        The order depends only on ``seed``; a final partial batch of an epoch is dropped.
        """
        check_int(batch_size, "batch_size", minimum=1)
        return batches(self.splits.train_x, self.splits.train_y, batch_size, seed)


def cache_folder(path: str | os.PathLike[str] | None = None) -> Path:
    """netsculpt's cache folder: ``path``, else ``$NETSCULPT_CACHE``, else ~/.cache/netsculpt."""
    if path is not None:
        return Path(path)
    env = os.environ.get("NETSCULPT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "netsculpt"


def cached_pretrained(
    path: Path,
    *,
    build: Callable[[], nn.Module],
    train: Callable[[], nn.Module],
    what: str,
    name: str,
    seed: int,
) -> nn.Module:
    """A pretrained model, in eval mode: ``build()`` loaded with the safetensors weights at
    ``path``, or, when there are none yet, ``train()``'s model, whose weights are then
    written there (atomically: a concurrent reader sees the old file or the new one).

    ``what`` names the weights in errors (``"digits"``), ``name`` and ``seed`` go in the
    file's metadata.

    Raises:
        SaveLoadError: the cached weights cannot be loaded; the message names the file.
    """
    from safetensors.torch import load_file, save_file

    if path.exists():
        model = build()
        try:
            model.load_state_dict(load_file(path))
        except Exception as exc:
            raise SaveLoadError(
                f"the cached {what} weights {path} could not be loaded ({exc}); delete the "
                f"file and netsculpt will train them again"
            ) from exc
        return model.eval()
    model = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp, metadata={"netsculpt": name, "seed": str(seed)})
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
    return model.eval()
