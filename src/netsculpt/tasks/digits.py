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
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from netsculpt.errors import InputError
from netsculpt.tasks._common import (
    SplitsTask,
    TensorSplits,
    cache_folder,
    cached_pretrained,
    split_rows,
    tensor_splits,
)

__all__ = ["DigitsCNN", "DigitsSplits", "DigitsTask", "digits_splits", "pretrained_digits_cnn"]

#: Seed of the fixed train/val/test split.
SPLIT_SEED = 0
_VAL_SIZE = 360
_TEST_SIZE = 360
# Bump when DigitsCNN or the training recipe changes, so stale caches are not reused.
_WEIGHTS_VERSION = "2"


@dataclass(frozen=True)
class DigitsSplits(TensorSplits):
    """The fixed digits split: images ``[N, 1, 8, 8]`` float32 (standardised), labels int64.

    ``*_index`` are the rows of :func:`sklearn.datasets.load_digits` each part came from.
    """


@functools.cache
def digits_splits() -> DigitsSplits:
    """Load scikit-learn's digits and return the fixed, stratified train/val/test split."""
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits()
    images = data.images.astype(np.float32) / 16.0
    labels = data.target.astype(np.int64)
    rows = split_rows(labels, val_size=_VAL_SIZE, test_size=_TEST_SIZE, seed=SPLIT_SEED)
    mean = float(images[rows[0]].mean())
    std = float(images[rows[0]].std())
    return tensor_splits(DigitsSplits, (images - mean) / std, labels, rows)


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


def pretrained_digits_cnn(
    *, cache_dir: str | os.PathLike[str] | None = None, seed: int = 0
) -> nn.Module:
    """A :class:`DigitsCNN` trained on the digits train split, in eval mode.

    The first call trains it deterministically for ``seed`` (a few seconds on one CPU
    thread; about 99% test accuracy) and writes the weights as safetensors to ``cache_dir`` (default
    ``$NETSCULPT_CACHE`` or ``~/.cache/netsculpt``); later calls load them from there.
    """
    return cached_pretrained(
        cache_folder(cache_dir) / f"digits_cnn-v{_WEIGHTS_VERSION}-seed{seed}.safetensors",
        build=DigitsCNN,
        train=lambda: _train(DigitsCNN(), seed=seed),
        what="digits",
        name="digits_cnn",
        seed=seed,
    )


def _train(model: DigitsCNN, *, seed: int, epochs: int = 12, batch_size: int = 64) -> DigitsCNN:
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
    return model


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


class DigitsTask(SplitsTask):
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

    def train_batches(
        self, *, batch_size: int = 64, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless ``(images, labels)`` batches from the train split, reshuffled each epoch.

        The order depends only on ``seed``; a final partial batch of an epoch is dropped.
        """
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}; try 64")
        return super().train_batches(batch_size=batch_size, seed=seed)

    def pretrained_model(self) -> nn.Module:
        """The cached, pretrained :class:`DigitsCNN` (see :func:`pretrained_digits_cnn`)."""
        return pretrained_digits_cnn(cache_dir=self.cache_dir)
