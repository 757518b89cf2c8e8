"""The ``mnist1d`` task: MNIST-1D (Greydanus 2020), 40-sample 1-D signals of ten digits.

The data is generated locally by the ``mnist1d`` package (``pip install
'netsculpt[mnist1d]'``) with :func:`mnist1d.data.make_dataset`; nothing is downloaded.
:func:`generate_mnist1d` makes 12,000 signals (1,200 per digit) with the package's default
arguments and seed (about 3 s); :func:`mnist1d_splits` writes them once to
``mnist1d-v1-n12000-seed42.npz`` in netsculpt's cache folder (``$NETSCULPT_CACHE`` or
``~/.cache/netsculpt``, the folder of the digits weights) and later reads that file. The
signals are split once, stratified and seeded, into three parts that never overlap:

* **train** (8,000 signals): training, calibration batches and example inputs;
* **validation** (2,000): ``MNIST1DTask().evaluate(model)``, what the search, early
  stopping and every selection step score;
* **test** (2,000): ``MNIST1DTask().evaluate(model, "test")``, only for reported figures
  (one signal is 0.05 points).

A batch has shape ``[N, 1, 40]`` (float32). The generator itself centres and scales the
whole generated set by two numbers (its mean and standard deviation); that is part of the
dataset's definition and is kept as it is.

:class:`ResNet1D` is a residual 1-D CNN (a stem, residual blocks with identity shortcuts, a
downsampling block with a projection shortcut, global average pooling, a linear head) whose
channel groups netsculpt can prune and whose residual blocks it can drop.
:func:`pretrained_resnet1d` trains it once with :func:`train` (about 30 s on one CPU
thread; 99.5 % validation and 99.2 % test accuracy) and caches the weights as safetensors.
The task is nearly saturated for this family (``widths=(8, 16)``, a sixteenth of the
multiply-adds, reaches 98.3 % test accuracy with the same recipe and seed): compare
architectures over several seeds.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from netsculpt._checks import check_int
from netsculpt.errors import InputError, NetsculptError, SaveLoadError
from netsculpt.tasks._common import (
    SplitsTask,
    TensorSplits,
    cache_folder,
    cached_pretrained,
    split_rows,
    tensor_splits,
)
from netsculpt.tasks.base import Task

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "MNIST1DSplits",
    "MNIST1DTask",
    "ResNet1D",
    "generate_mnist1d",
    "mnist1d_splits",
    "pretrained_resnet1d",
    "reinitialize",
    "train",
]

#: Signals generated (1,200 per digit) and the generator's seed (the package's default).
NUM_SAMPLES = 12_000
DATA_SEED = 42
#: Seed of the fixed, stratified train/validation/test split.
SPLIT_SEED = 0
_VAL_SIZE = 2_000
_TEST_SIZE = 2_000
#: Steps (batches of 64, about 8 epochs) :func:`pretrained_resnet1d` trains for.
PRETRAIN_STEPS = 1_000
# Bump when the generated data (arguments, order) changes, so stale caches are not reused.
_DATA_VERSION = "1"
# Bump when ResNet1D or the training recipe changes.
_WEIGHTS_VERSION = "1"
_INSTALL_HINT = "pip install 'netsculpt[mnist1d]'"

_M = TypeVar("_M", bound=nn.Module)


# -- data ---------------------------------------------------------------------------------


def generate_mnist1d(
    *, num_samples: int = NUM_SAMPLES, seed: int = DATA_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Generate MNIST-1D with the ``mnist1d`` package: signals ``[N, 40]`` float32, labels int64.

    The package's default arguments except ``num_samples`` (a multiple of 10: the same
    number of signals per digit) and ``seed``; the rows come in the generator's (shuffled)
    order. The same arguments give the same arrays. The generator seeds Python's and
    NumPy's global random state; both are restored afterwards.

    Raises:
        InputError: ``num_samples`` is not a positive multiple of 10, or ``seed`` is not an
            integer in NumPy's seed range.
        NetsculptError: the ``mnist1d`` package is not installed.
    """
    import numpy as np

    check_int(num_samples, "num_samples", minimum=10)
    if num_samples % 10:
        raise InputError(
            f"num_samples={num_samples} is not a multiple of 10; MNIST-1D makes the same number "
            f"of signals per digit, so pass e.g. {num_samples - num_samples % 10 or 10}"
        )
    check_int(seed, "seed", minimum=0)
    if seed >= 2**32:
        raise InputError(f"seed={seed} is outside NumPy's seed range (0 to 2**32 - 1)")
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise NetsculptError(
            f"the mnist1d task generates its data with the package 'mnist1d', which is not "
            f"installed (or failed to import: {exc}); run: {_INSTALL_HINT}"
        ) from exc
    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    return np.ascontiguousarray(x), y


@dataclass(frozen=True)
class MNIST1DSplits(TensorSplits):
    """The fixed MNIST-1D split: signals ``[N, 1, 40]`` float32, labels int64.

    ``*_index`` are the rows of :func:`generate_mnist1d` each part came from.
    """


def mnist1d_splits(*, cache_dir: str | os.PathLike[str] | None = None) -> MNIST1DSplits:
    """The fixed, stratified train/validation/test split of the generated signals.

    The signals are read from the cache folder (``cache_dir``, else ``$NETSCULPT_CACHE``,
    else ``~/.cache/netsculpt``), generated and written there on first use (about 3 s).
    The result is kept in memory per folder.

    Raises:
        SaveLoadError: the cached file cannot be read; the message names the file to delete.
    """
    return _splits_in(cache_folder(cache_dir).resolve())


@functools.cache
def _splits_in(folder: Path) -> MNIST1DSplits:
    x, y = _cached_data(folder)
    rows = split_rows(y, val_size=_VAL_SIZE, test_size=_TEST_SIZE, seed=SPLIT_SEED)
    return tensor_splits(MNIST1DSplits, x, y, rows)


def _data_path(folder: Path) -> Path:
    return folder / f"mnist1d-v{_DATA_VERSION}-n{NUM_SAMPLES}-seed{DATA_SEED}.npz"


def _cached_data(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The generated signals from ``folder``'s ``.npz`` file, generated and written if absent."""
    import numpy as np

    path = _data_path(folder)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                x, y = data["x"], data["y"]
        except Exception as exc:
            raise SaveLoadError(
                f"the cached MNIST-1D signals {path} could not be read ({exc}); delete the file "
                f"and netsculpt will generate them again"
            ) from None
        if x.shape != (NUM_SAMPLES, 40) or y.shape != (NUM_SAMPLES,):
            raise SaveLoadError(
                f"the cached MNIST-1D signals {path} hold arrays of shape {x.shape} and "
                f"{y.shape}, not ({NUM_SAMPLES}, 40) and ({NUM_SAMPLES},); delete the file and "
                f"netsculpt will generate them again"
            )
        return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False)
    x, y = generate_mnist1d()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:  # a file object: np.savez would append ".npz" to a name
        np.savez(handle, x=x, y=y)
    os.replace(tmp, path)  # atomic: a concurrent reader sees no file or the whole file
    return x, y


# -- the model ----------------------------------------------------------------------------


def _conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm1d(c_out),
    )


class ResidualBlock1D(nn.Module):
    """``relu(x + bn(conv(relu(bn(conv(x))))))``: ``channels`` in and out, length kept."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(channels, channels)
        self.conv2 = _conv_bn(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class DownBlock1D(nn.Module):
    """A residual block that halves the length and changes the width; 1x1 projection shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, stride=2)
        self.conv2 = _conv_bn(c_out, c_out)
        self.shortcut = _conv_bn(c_in, c_out, kernel=1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shortcut(x) + self.conv2(F.relu(self.conv1(x))))


class ResNet1D(nn.Module):
    """A residual 1-D CNN for ``[N, 1, 40]`` signals (MNIST-1D).

    stem (conv 5, ``widths[0]`` channels) -> ``stage1``: ``depths[0]`` residual blocks
    (identity shortcuts) -> ``down``: stride-2 residual block to ``widths[1]`` channels
    (1x1 projection shortcut) -> ``stage2``: ``depths[1]`` residual blocks -> global average
    pool -> ``fc`` to ``num_classes`` logits. Every convolution is followed by batch norm.
    The default, ``widths=(32, 64)``, ``depths=(2, 2)``, has 84k parameters and 1.9M
    multiply-adds per signal; other sizes are other arguments. The blocks of ``stage1`` and
    ``stage2`` are what netsculpt can remove (``graph.blocks``).
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64),
        depths: Sequence[int] = (2, 2),
        *,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.widths = w = _pair(widths, "widths", 1, "(32, 64)")
        self.depths = d = _pair(depths, "depths", 0, "(2, 2)")
        check_int(num_classes, "num_classes", minimum=1)
        self.stem = _conv_bn(1, w[0], kernel=5)
        self.stage1 = nn.Sequential(*(ResidualBlock1D(w[0]) for _ in range(d[0])))
        self.down = DownBlock1D(w[0], w[1])
        self.stage2 = nn.Sequential(*(ResidualBlock1D(w[1]) for _ in range(d[1])))
        self.fc = nn.Linear(w[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(F.relu(self.stem(x)))
        x = self.stage2(self.down(x))
        return self.fc(x.mean(dim=-1))


def _pair(value: Any, name: str, minimum: int, example: str) -> tuple[int, int]:
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    if ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value):
        return int(value[0]), int(value[1])
    raise InputError(
        f"ResNet1D {name} must be two integers >= {minimum} (one per stage), got {value!r}; "
        f"e.g. {name}={example}"
    )


def reinitialize(model: _M, *, seed: int = 0) -> _M:
    """Reset every layer's weights (and batch-norm statistics) in place, seeded; return it.

    Gives an architecture, for example a pruned or extracted copy of :class:`ResNet1D`, fresh
    random weights, so it can be trained from scratch with :func:`train`. Torch's global
    random state is left as it was.
    """
    check_int(seed, "seed", minimum=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return model


# -- training -----------------------------------------------------------------------------


class _OneCycle:
    """An AdamW factory for ``ns.finetune`` plus the callback that steps its one-cycle schedule."""

    def __init__(self, *, steps: int, lr: float, weight_decay: float) -> None:
        self.steps, self.lr, self.weight_decay = steps, lr, weight_decay
        self.schedule: torch.optim.lr_scheduler.OneCycleLR | None = None

    def optimizer(self, params: Any) -> torch.optim.Optimizer:
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.lr, total_steps=self.steps
        )
        return optimizer

    def on_step_end(self, step: int, model: nn.Module) -> None:
        if self.schedule is not None:
            self.schedule.step()


def train(
    model: nn.Module,
    task: Task,
    steps: int,
    *,
    seed: int = 0,
    lr: float = 3e-3,
    batch_size: int = 64,
    weight_decay: float = 1e-4,
) -> nn.Module:
    """Train ``model`` in place on ``task``'s training batches for ``steps`` steps; return it.

    The recipe of :func:`pretrained_resnet1d`, for training any architecture from scratch
    the same way: AdamW with a one-cycle schedule peaking at ``lr``, ``task.loss``, batches
    of ``batch_size`` in the order ``task.train_batches(seed=seed)`` gives, torch seeded with
    ``seed`` (dropout and the like). It runs :func:`netsculpt.finetune` (so a loss that
    diverges restores the weights and raises) and leaves the model in eval mode. Start
    from :func:`reinitialize` to train an existing architecture from scratch.
    """
    from netsculpt.recovery.config import TrainConfig
    from netsculpt.recovery.train import finetune

    check_int(steps, "steps", minimum=1)
    schedule = _OneCycle(steps=steps, lr=lr, weight_decay=weight_decay)
    config = TrainConfig(lr=lr, weight_decay=weight_decay, batch_size=batch_size, seed=seed)
    finetune(
        model,
        task,
        steps,
        config,
        progress=False,
        callbacks=[schedule],
        optimizer=schedule.optimizer,
    )
    return model.eval()


def pretrained_resnet1d(
    *, cache_dir: str | os.PathLike[str] | None = None, seed: int = 0
) -> nn.Module:
    """A :class:`ResNet1D` trained on the MNIST-1D train split, in eval mode.

    The first call trains it deterministically for ``seed`` (:func:`train`,
    ``PRETRAIN_STEPS`` steps, about 30 s on one CPU thread; 99.5 % validation and 99.2 %
    test accuracy for seed 0) and writes the weights as safetensors to ``cache_dir``
    (default ``$NETSCULPT_CACHE`` or ``~/.cache/netsculpt``); later calls load them.

    Raises:
        SaveLoadError: the cached weights cannot be loaded; the message names the file.
    """
    return cached_pretrained(
        cache_folder(cache_dir) / f"mnist1d_resnet1d-v{_WEIGHTS_VERSION}-seed{seed}.safetensors",
        build=ResNet1D,
        train=lambda: _train(seed=seed, cache_dir=cache_dir),
        what="MNIST-1D",
        name="mnist1d_resnet1d",
        seed=seed,
    )


def _train(*, seed: int, cache_dir: str | os.PathLike[str] | None) -> ResNet1D:
    """A fresh ResNet1D trained by :func:`train` on one CPU thread.

    One thread: the model is too small to gain from more, extra threads only slow it down
    on a busy machine, and one thread keeps the result independent of the core count.
    """
    model = reinitialize(ResNet1D(), seed=seed)
    task = MNIST1DTask(cache_dir=cache_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(model, task, PRETRAIN_STEPS, seed=seed)
    finally:
        torch.set_num_threads(threads)
    return model


# -- the task -----------------------------------------------------------------------------


class MNIST1DTask(SplitsTask):
    """Classify MNIST-1D signals (generated locally); the score is top-1 accuracy.

    ``evaluate(model)`` scores the 2,000 validation signals (the search, early stopping and
    every selection read it), ``evaluate(model, "test")`` the 2,000 test signals (reported
    figures only); ``train_batches``, ``calib_batches`` and ``example_inputs`` draw from the
    8,000 training signals. The three parts never overlap (:func:`mnist1d_splits`).
    ``cache_dir`` holds the generated signals and the pretrained weights.
    """

    name = "mnist1d"

    def __init__(
        self, *, example_batch_size: int = 32, cache_dir: str | os.PathLike[str] | None = None
    ) -> None:
        check_int(example_batch_size, "example_batch_size", minimum=1)
        self.example_batch_size = example_batch_size
        self.cache_dir = cache_dir
        self.splits = mnist1d_splits(cache_dir=cache_dir)

    def pretrained_model(self) -> nn.Module:
        """The cached, pretrained :class:`ResNet1D` (see :func:`pretrained_resnet1d`)."""
        return pretrained_resnet1d(cache_dir=self.cache_dir)
