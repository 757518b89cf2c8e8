"""The ``digits`` task: scikit-learn's handwritten digits (8x8 images, 10 classes).

The 1,797 images of :func:`sklearn.datasets.load_digits` are split once, stratified and
seeded, into three parts that never overlap:

* **train** (1,077 images): fine-tuning, calibration batches and example inputs;
* **validation** (360 images): ``DigitsTask().evaluate(model)``, what the search, early
  stopping and every selection step score;
* **test** (360 images): ``DigitsTask().evaluate(model, "test")``, only for reported figures.

Images are scaled to ``[0, 1]`` (the raw pixels are 0..16) and standardised with the mean
and standard deviation of the training pixels; a batch has shape ``[N, 1, 8, 8]``.

:class:`DigitsCNN` is a small network with the structures that make structural pruning
interesting (batch norm, a residual block, a concatenation of two branches), and
:func:`pretrained_digits_cnn` trains it once (a few seconds on a CPU) and caches the
weights as safetensors.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from netsculpt._checks import check_int
from netsculpt._inputs import ExampleInputs
from netsculpt.errors import InputError, SaveLoadError
from netsculpt.tasks.base import Split, Task, check_split

__all__ = ["DigitsCNN", "DigitsSplits", "DigitsTask", "digits_splits", "pretrained_digits_cnn"]

#: Seed of the fixed train/val/test split.
SPLIT_SEED = 0
_VAL_SIZE = 360
_TEST_SIZE = 360
# Bump when DigitsCNN or the training recipe changes, so stale caches are not reused.
_WEIGHTS_VERSION = "2"


@dataclass(frozen=True)
class DigitsSplits:
    """The fixed digits split: images ``[N, 1, 8, 8]`` float32 (standardised), labels int64.

    ``*_index`` are the rows of :func:`sklearn.datasets.load_digits` each part came from.
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


@functools.cache
def digits_splits() -> DigitsSplits:
    """Load scikit-learn's digits and return the fixed, stratified train/val/test split."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = data.images.astype(np.float32) / 16.0
    labels = data.target.astype(np.int64)
    index = np.arange(len(labels))
    rest, test = train_test_split(
        index, test_size=_TEST_SIZE, stratify=labels, random_state=SPLIT_SEED
    )
    train, val = train_test_split(
        rest, test_size=_VAL_SIZE, stratify=labels[rest], random_state=SPLIT_SEED
    )
    train, val, test = np.sort(train), np.sort(val), np.sort(test)
    mean = float(images[train].mean())
    std = float(images[train].std())

    def part(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy((images[rows] - mean) / std).unsqueeze(1).contiguous()
        return x, torch.from_numpy(labels[rows])

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = part(train), part(val), part(test)
    return DigitsSplits(
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


def _conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    )


class ResidualBlock(nn.Module):
    """``relu(x + bn(conv(relu(bn(conv(x))))))`` with ``channels`` in and out."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(channels, channels)
        self.conv2 = _conv_bn(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class DigitsCNN(nn.Module):
    """A small CNN for 8x8 digits: stem, residual block, two-branch concat, stride-2 conv.

    ``[N, 1, 8, 8]`` -> stem conv (``width``) -> residual block -> a 3x3 branch and a 1x1
    branch (``width // 2`` each) concatenated -> conv ``2 * width`` stride 2 -> global
    average pool -> linear to 10 logits.
    """

    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        if width < 2 or width % 2:
            raise InputError(f"DigitsCNN width must be an even number >= 2, got {width}")
        self.stem = _conv_bn(1, width)
        self.block = ResidualBlock(width)
        self.branch3 = _conv_bn(width, width // 2, kernel=3)
        self.branch1 = _conv_bn(width, width // 2, kernel=1)
        self.down = _conv_bn(width, 2 * width, stride=2)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(F.relu(self.stem(x)))
        x = F.relu(torch.cat([self.branch3(x), self.branch1(x)], dim=1))
        x = F.relu(self.down(x))
        return self.fc(x.mean(dim=(2, 3)))


def _cache_folder(path: str | os.PathLike[str] | None = None) -> Path:
    """netsculpt's cache folder: ``path``, else ``$NETSCULPT_CACHE``, else ~/.cache/netsculpt."""
    if path is not None:
        return Path(path)
    env = os.environ.get("NETSCULPT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "netsculpt"


def pretrained_digits_cnn(
    *, cache_dir: str | os.PathLike[str] | None = None, seed: int = 0
) -> nn.Module:
    """A :class:`DigitsCNN` trained on the digits train split, in eval mode.

    The first call trains it deterministically for ``seed`` (a few seconds on one CPU
    thread; about 99% test accuracy) and writes the weights as safetensors to ``cache_dir`` (default
    ``$NETSCULPT_CACHE`` or ``~/.cache/netsculpt``); later calls load them from there.
    """
    from safetensors.torch import load_file, save_file

    folder = _cache_folder(cache_dir)
    path = folder / f"digits_cnn-v{_WEIGHTS_VERSION}-seed{seed}.safetensors"
    model = DigitsCNN()
    if path.exists():
        try:
            model.load_state_dict(load_file(path))
        except Exception as exc:
            raise SaveLoadError(
                f"the cached digits weights {path} could not be loaded ({exc}); delete the "
                f"file and netsculpt will train them again"
            ) from exc
        return model.eval()
    _train(model, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp, metadata={"netsculpt": "digits_cnn", "seed": str(seed)})
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
    return model.eval()


def _train(model: DigitsCNN, *, seed: int, epochs: int = 12, batch_size: int = 64) -> None:
    """Deterministic training recipe: AdamW, one-cycle cosine schedule, small shifts.

    Runs on one CPU thread: the model is too small to gain from more, extra threads only
    slow it down on a busy machine, and one thread keeps the result independent of the
    machine's core count.
    """
    splits = digits_splits()
    x, y = splits.train_x, splits.train_y
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_steps(model, x, y, seed=seed, epochs=epochs, batch_size=batch_size)
    finally:
        torch.set_num_threads(threads)


def _train_steps(
    model: DigitsCNN, x: torch.Tensor, y: torch.Tensor, *, seed: int, epochs: int, batch_size: int
) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        steps_per_epoch = math.ceil(len(y) / batch_size)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=3e-3, total_steps=epochs * steps_per_epoch
        )
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=generator)
            for start in range(0, len(y), batch_size):
                rows = order[start : start + batch_size]
                batch = _shift(x[rows], generator)
                loss = F.cross_entropy(model(batch), y[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    model.eval()


def _shift(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to one pixel (edge pixels repeated): cheap augmentation."""
    dx, dy = torch.randint(-1, 2, (2,), generator=generator).tolist()
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    return padded[:, :, 1 + dy : 9 + dy, 1 + dx : 9 + dx]


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


class DigitsTask(Task):
    """Classify scikit-learn's 8x8 digits; the score is top-1 accuracy.

    ``evaluate(model)`` scores the 360 validation images (the search, early stopping and
    every selection read it), ``evaluate(model, "test")`` the 360 test images (reported
    figures only); ``train_batches``, ``calib_batches`` and ``example_inputs`` draw from the
    1,077 training images. The three parts never overlap (:func:`digits_splits`).
    """

    name = "digits"

    def __init__(self, *, example_batch_size: int = 32, cache_dir: str | None = None) -> None:
        if example_batch_size < 1:
            raise InputError(f"example_batch_size must be >= 1, got {example_batch_size}; try 32")
        self.example_batch_size = example_batch_size
        self.cache_dir = cache_dir
        self.splits = digits_splits()

    def evaluate(self, model: nn.Module, split: Split = "validation") -> float:
        """Top-1 accuracy on the 360 validation images, or the 360 test images."""
        if check_split(split) == "test":
            return accuracy(model, self.splits.test_x, self.splits.test_y)
        return accuracy(model, self.splits.val_x, self.splits.val_y)

    def describe_splits(self) -> dict[str, int]:
        """Images per split: ``{"train": 1077, "validation": 360, "test": 360}``."""
        s = self.splits
        return {"train": len(s.train_y), "validation": len(s.val_y), "test": len(s.test_y)}

    def example_inputs(self) -> torch.Tensor:
        """The first ``example_batch_size`` training images, ``[N, 1, 8, 8]``."""
        return self.splits.train_x[: self.example_batch_size].clone()

    def calib_batches(self, n: int = 4) -> list[ExampleInputs]:
        """``n`` batches of ``example_batch_size`` training images (wrapping around)."""
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
        """Endless ``(images, labels)`` batches from the train split, reshuffled each epoch.

        The order depends only on ``seed``; a final partial batch of an epoch is dropped.
        """
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}; try 64")
        return _batches(self.splits.train_x, self.splits.train_y, batch_size, seed)

    def pretrained_model(self) -> nn.Module:
        """The cached, pretrained :class:`DigitsCNN` (see :func:`pretrained_digits_cnn`)."""
        return pretrained_digits_cnn(cache_dir=self.cache_dir)


def _batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    size = min(batch_size, len(y))
    while True:
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y) - size + 1, size):
            rows = order[start : start + size]
            yield x[rows], y[rows]
