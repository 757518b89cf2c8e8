from __future__ import annotations

import copy
import math
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from recover_helpers import BlobsTask, blobs_mlp, damage, same_state, state
from torch import nn

import netsculpt as ns
from netsculpt.tasks.base import Split


def test_finetune_improves_a_damaged_digits_model(digits_task, digits_cnn) -> None:
    model = damage(copy.deepcopy(digits_cnn))
    damaged = digits_task.evaluate(model)
    out = ns.finetune(model, digits_task, 60, ns.TrainConfig(lr=1e-3), progress=False)
    assert out is model  # trained in place and returned
    recovered = digits_task.evaluate(model)
    assert damaged < 0.7
    assert recovered > 0.9
    assert recovered > damaged + 0.2


def test_same_seed_gives_identical_weights(digits_task, digits_cnn) -> None:
    a = ns.finetune(
        damage(copy.deepcopy(digits_cnn)), digits_task, 15, ns.TrainConfig(seed=3), progress=False
    )
    b = ns.finetune(
        damage(copy.deepcopy(digits_cnn)), digits_task, 15, ns.TrainConfig(seed=3), progress=False
    )
    c = ns.finetune(
        damage(copy.deepcopy(digits_cnn)), digits_task, 15, ns.TrainConfig(seed=4), progress=False
    )
    assert same_state(state(a), state(b))
    assert not same_state(state(a), state(c))


def test_dropout_model_is_deterministic_and_global_rng_untouched(blobs) -> None:
    a = ns.finetune(blobs_mlp(), blobs, 20, ns.TrainConfig(seed=1), progress=False)
    torch.rand(5)  # move the global RNG: finetune must not depend on it
    b = ns.finetune(blobs_mlp(), blobs, 20, ns.TrainConfig(seed=1), progress=False)
    assert same_state(state(a), state(b))
    model = nn.Linear(2, 3)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    ns.finetune(model, blobs, 3, progress=False)
    assert torch.equal(torch.rand(3), expected)  # the caller's random state is left as it was


def test_training_mode_is_restored(blobs) -> None:
    model = blobs_mlp().eval()
    ns.finetune(model, blobs, 3, progress=False)
    assert not model.training
    model.train()
    ns.finetune(model, blobs, 3, progress=False)
    assert model.training


def test_lr_1e10_diverges_and_restores_the_model(digits_task, digits_cnn) -> None:
    model = copy.deepcopy(digits_cnn)
    before = state(model)
    with pytest.raises(ns.DivergenceError, match=r"at step \d+.*restored.*lower lr"):
        ns.finetune(model, digits_task, 30, ns.TrainConfig(lr=1e10), progress=False)
    assert same_state(before, state(model))  # BatchNorm running stats included
    assert digits_task.evaluate(model) == digits_task.evaluate(digits_cnn)


class NaNAt:
    """Callback that poisons a weight after ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, step: int, model: nn.Module) -> None:
        if step == self.step:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))


def test_injected_nan_names_the_step_and_restores(blobs) -> None:
    model = blobs_mlp()
    before = state(model)
    with pytest.raises(ns.DivergenceError, match="nan at step 3"):
        ns.finetune(model, blobs, 10, progress=False, callbacks=[NaNAt(2)])
    assert same_state(before, state(model))
    assert isinstance(ns.DivergenceError("x"), ns.TrainingError)


def test_nan_after_the_last_step_is_caught(blobs) -> None:
    model = blobs_mlp()
    before = state(model)
    with pytest.raises(ns.DivergenceError, match="'0.weight'.*step 3"):
        ns.finetune(model, blobs, 3, progress=False, callbacks=[NaNAt(2)])
    assert same_state(before, state(model))


class NaNLossTask(BlobsTask):
    def __init__(self, bad_step: int) -> None:
        super().__init__()
        self.bad_step, self.calls = bad_step, 0

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        loss = super().loss(outputs, targets)
        self.calls += 1
        return loss * math.nan if self.calls - 1 == self.bad_step else loss


def test_nan_loss_from_the_task(blobs) -> None:
    model = blobs_mlp()
    before = state(model)
    with pytest.raises(ns.DivergenceError, match="finetune: the loss became nan at step 4"):
        ns.finetune(model, NaNLossTask(4), 10, progress=False)
    assert same_state(before, state(model))


class Recorder:
    def __init__(self, name: str, log: list[tuple[Any, ...]]) -> None:
        self.name, self.log = name, log

    def on_train_start(self, model: nn.Module, total_steps: int | None) -> None:
        self.log.append((self.name, "on_train_start", total_steps))

    def on_step_start(self, step: int, model: nn.Module) -> None:
        self.log.append((self.name, "on_step_start", step))

    def after_backward(self, step: int, model: nn.Module) -> None:
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None for g in grads), "gradients must be ready in after_backward"
        self.log.append((self.name, "after_backward", step))

    def on_step_end(self, step: int, model: nn.Module) -> None:
        self.log.append((self.name, "on_step_end", step))

    def on_evaluate(self, step: int, model: nn.Module, score: float) -> None:
        assert 0.0 <= score <= 1.0
        self.log.append((self.name, "on_evaluate", step))

    def on_train_end(self, model: nn.Module) -> None:
        self.log.append((self.name, "on_train_end"))


class OnlyStepEnd:
    def __init__(self, log: list[tuple[Any, ...]]) -> None:
        self.log = log

    def on_step_end(self, step: int, model: nn.Module) -> None:
        self.log.append(("partial", "on_step_end", step))


def test_callbacks_are_called_in_order(blobs) -> None:
    log: list[tuple[Any, ...]] = []
    ns.finetune(
        blobs_mlp(),
        blobs,
        2,
        ns.TrainConfig(eval_every=1),
        progress=False,
        callbacks=[Recorder("a", log), OnlyStepEnd(log), Recorder("b", log)],
    )
    expected: list[tuple[Any, ...]] = [("a", "on_train_start", 2), ("b", "on_train_start", 2)]
    for step in range(2):
        expected += [("a", "on_step_start", step), ("b", "on_step_start", step)]
        expected += [("a", "after_backward", step), ("b", "after_backward", step)]
        expected += [("a", "on_step_end", step), ("partial", "on_step_end", step)]
        expected += [("b", "on_step_end", step)]
        expected += [("a", "on_evaluate", step + 1), ("b", "on_evaluate", step + 1)]
    expected += [("a", "on_train_end"), ("b", "on_train_end")]
    assert log == expected


class Mask:
    """Sparse training in three hooks: zero masked weights and their gradients."""

    def __init__(self, model: nn.Module) -> None:
        self.weight = model[0].weight
        self.mask = torch.rand(self.weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5
        self.steps_seen: list[int] = []

    def on_step_start(self, step: int, model: nn.Module) -> None:
        with torch.no_grad():
            self.weight.mul_(self.mask)

    def after_backward(self, step: int, model: nn.Module) -> None:
        assert self.weight.grad is not None
        self.weight.grad.mul_(self.mask)
        self.steps_seen.append(step)

    def on_step_end(self, step: int, model: nn.Module) -> None:
        with torch.no_grad():
            self.weight.mul_(self.mask)


def test_callbacks_can_implement_masked_training(blobs) -> None:
    model = blobs_mlp()
    mask = Mask(model)
    ns.finetune(model, blobs, 30, ns.TrainConfig(lr=1e-2), progress=False, callbacks=[mask])
    assert mask.steps_seen == list(range(30))
    assert torch.count_nonzero(model[0].weight[~mask.mask]) == 0
    assert torch.count_nonzero(model[0].weight[mask.mask]) == int(mask.mask.sum())
    assert blobs.evaluate(model) > 0.9


class ScriptedScores(BlobsTask):
    """Validation scores come from a script, so early stopping is predictable; the test
    split must never be read while training."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = iter(scores)
        self.splits: list[str] = []

    def evaluate(self, model: nn.Module, split: Split = "validation") -> float:
        self.splits.append(split)
        if split != "validation":
            raise AssertionError(f"training read the {split!r} split")
        return next(self.scores)


class Snapshots:
    def __init__(self) -> None:
        self.at: dict[int, dict[str, torch.Tensor]] = {}
        self.steps = 0

    def on_evaluate(self, step: int, model: nn.Module, score: float) -> None:
        self.at[step] = state(model)

    def on_step_end(self, step: int, model: nn.Module) -> None:
        self.steps = step + 1


def test_early_stopping_stops_and_restores_the_best_weights() -> None:
    # before training 0.5; after steps 2, 4, 6, 8: 0.9 (best), 0.6, 0.7, 0.4 -> stop at 8
    task = ScriptedScores([0.5, 0.9, 0.6, 0.7, 0.4, 0.99, 0.99])
    model, snaps = blobs_mlp(), Snapshots()
    ns.finetune(
        model,
        task,
        100,
        ns.TrainConfig(early_stop_patience=3, eval_every=2),
        progress=False,
        callbacks=[snaps],
    )
    assert snaps.steps == 8
    assert sorted(snaps.at) == [2, 4, 6, 8]
    assert same_state(state(model), snaps.at[2])
    assert task.splits == ["validation"] * 5  # before training, then steps 2, 4, 6, 8


def test_early_stopping_keeps_the_starting_weights_when_training_only_hurts() -> None:
    model = blobs_mlp()
    before = state(model)
    task = ScriptedScores([0.8, 0.1, 0.2])
    ns.finetune(model, task, 4, ns.TrainConfig(early_stop_patience=5, eval_every=2), progress=False)
    assert same_state(before, state(model))


def test_early_stopping_on_a_task_whose_evaluate_takes_no_split() -> None:
    """Tasks written before splits existed still early-stop, on their one held-out set."""
    with pytest.warns(UserWarning, match="takes no split"):

        class OneSet(BlobsTask):
            def evaluate(self, model: nn.Module) -> float:  # type: ignore[override]
                self.calls += 1
                return super().evaluate(model)

    task = OneSet()
    task.calls = 0
    ns.finetune(
        blobs_mlp(), task, 6, ns.TrainConfig(early_stop_patience=5, eval_every=2), progress=False
    )
    assert task.calls == 4  # before training, then steps 2, 4, 6


def test_task_without_training_data() -> None:
    class NoData(ns.Task):
        name = "nodata"

        def evaluate(self, model: nn.Module, split: Split = "validation") -> float:
            return 0.0

    with pytest.raises(ns.TrainingError, match="'nodata'.*no training data"):
        ns.finetune(nn.Linear(2, 2), NoData(), 5, progress=False)


def test_finite_stream_is_a_training_error(blobs) -> None:
    class Finite(BlobsTask):
        def train_batches(self, *, batch_size: int = 64, seed: int = 0) -> Iterator[Any]:
            yield self.x[:8], self.y[:8]

    with pytest.raises(ns.TrainingError, match="ran out of batches"):
        ns.finetune(blobs_mlp(), Finite(), 5, progress=False)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("lr", 0.0),
        ("lr", float("nan")),
        ("batch_size", 0),
        ("early_stop_patience", 0),
        ("eval_every", 0),
        ("weight_decay", -1.0),
    ],
)
def test_bad_options(blobs, option: str, value: Any) -> None:
    with pytest.raises(ns.InputError, match=option):
        ns.TrainConfig(**{option: value})


def test_frozen_model_is_a_training_error(blobs) -> None:
    model = blobs_mlp().requires_grad_(False)
    with pytest.raises(ns.TrainingError, match="no trainable parameters"):
        ns.finetune(model, blobs, 3, progress=False)


def test_custom_optimizer(blobs) -> None:
    model = blobs_mlp()
    before = {k: v.clone() for k, v in model.named_parameters()}
    ns.finetune(model, blobs, 5, progress=False, optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())
    ns.finetune(model, blobs, 5, progress=False, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    assert not all(torch.equal(before[k], v) for k, v in model.named_parameters())


def test_progress_bar_on_a_terminal(
    blobs: BlobsTask, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    model = blobs_mlp()
    before = state(model)
    ns.finetune(model, blobs, 5, progress=True)
    ns.finetune(model, blobs, "0.2s", progress=True)  # a time budget drives the bar by seconds
    assert "finetune" in capsys.readouterr().err
    assert not same_state(before, state(model))
