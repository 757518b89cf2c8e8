"""Bad calls to the training entry points: ns.finetune, ns.distill, ns.sparsify, Budget, Task.

Each row is one bad call, the error class it must raise and a fragment of the message that
names the bad value (or the fix). The checks fire before any training step: a spy callback
passed to every finetune / distill call must see no step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt.errors import (
    ExampleInputsError,
    InputError,
    InvalidRatioError,
    NetsculptError,
    SparsityError,
    TrainingError,
    UnknownNameError,
)
from netsculpt.recovery import recover
from netsculpt.sparsity import (
    GradualConfig,
    LotteryTicketConfig,
    MagnitudeConfig,
    NMConfig,
    RigLConfig,
    config_from_dict,
)
from netsculpt.tasks.base import check_calib_batches


class TinyTask(ns.Task):
    """Three classes on four features; a batch costs microseconds."""

    name = "tiny"

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 4, generator=g)
        self.y = torch.randint(0, 3, (64,), generator=g)

    def evaluate(self, model: nn.Module, split: str = "validation") -> float:
        with torch.no_grad():
            return float((model(self.x).argmax(1) == self.y).float().mean())

    def train_batches(
        self, *, batch_size: int = 64, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        while True:
            rows = torch.randint(0, 64, (batch_size,), generator=g)
            yield self.x[rows], self.y[rows]


class ScoreTask(TinyTask):
    """A task whose score is whatever it was given (for broken-metric cases)."""

    def __init__(self, score: Any) -> None:
        super().__init__()
        self.score = score

    def evaluate(self, model: nn.Module, split: str = "validation") -> Any:
        return self.score


class PairlessTask(TinyTask):
    def train_batches(self, *, batch_size: int = 64, seed: int = 0) -> Iterator[Any]:
        while True:
            yield self.x[:batch_size]


class TinyNet(nn.Module):
    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Spy(ns.Callback):
    """Counts training steps: a check that fires before training leaves it at zero."""

    def __init__(self) -> None:
        self.steps = 0

    def on_step_start(self, step: int, model: nn.Module) -> None:
        self.steps += 1


def net(fill: float | None = None, hidden: int = 8) -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet(hidden)
    if fill is not None:
        with torch.no_grad():
            model.fc1.weight[0, 0] = fill
    return model


def meta_net() -> nn.Module:
    with torch.device("meta"):
        return TinyNet()


TRAIN_FIELDS = {f.name for f in dataclasses.fields(ns.TrainConfig)}
DISTILL_FIELDS = {f.name for f in dataclasses.fields(ns.DistillConfig)}


def ft(spy: Spy, **kwargs: Any) -> Any:
    """ns.finetune on the tiny task; option keywords build the TrainConfig inside the call."""
    call: dict[str, Any] = {
        "model": net(),
        "task": TinyTask(),
        "budget": 3,
        "progress": False,
        "callbacks": [spy],
    }
    call.update(kwargs)
    model, task, budget = call.pop("model"), call.pop("task"), call.pop("budget")
    options = {k: call.pop(k) for k in list(call) if k in TRAIN_FIELDS}
    config = ns.TrainConfig(**options) if options else call.pop("config", None)
    return ns.finetune(model, task, budget, config, **call)


def ds(spy: Spy, **kwargs: Any) -> Any:
    """ns.distill on the tiny task; option keywords build the DistillConfig inside the call."""
    call: dict[str, Any] = {
        "student": net(),
        "teacher": net(),
        "task": TinyTask(),
        "budget": 3,
        "progress": False,
        "callbacks": [spy],
    }
    call.update(kwargs)
    student, teacher = call.pop("student"), call.pop("teacher")
    task, budget = call.pop("task"), call.pop("budget")
    options = {k: call.pop(k) for k in list(call) if k in DISTILL_FIELDS}
    config = ns.DistillConfig(**options) if options else call.pop("config", None)
    return ns.distill(student, teacher, task, budget, config, **call)


def sp(**kwargs: Any) -> Any:
    call: dict[str, Any] = {"model": net(), "config": MagnitudeConfig(sparsity=0.5)}
    call.update(kwargs)
    return ns.sparsify(call.pop("model"), call.pop("config"), **call)


def same(spy: Spy) -> nn.Module:
    """A model used as both student and teacher."""
    return net()


Case = tuple[Callable[[Spy], Any], type[Exception], str]

FINETUNE: dict[str, Case] = {
    # the task
    "task-none": (lambda s: ft(s, task=None), InputError, "task=None"),
    "task-name": (lambda s: ft(s, task="digits"), InputError, "ns.get_task('digits')"),
    "task-class": (lambda s: ft(s, task=TinyTask), InputError, "task=TinyTask()"),
    "task-object": (lambda s: ft(s, task=object()), InputError, "lacks evaluate"),
    "task-int": (lambda s: ft(s, task=3), InputError, "got int (3)"),
    # the model
    "model-str": (lambda s: ft(s, model="resnet18"), InputError, "got str ('resnet18')"),
    "model-none": (lambda s: ft(s, model=None), InputError, "got NoneType (None)"),
    "model-meta": (lambda s: ft(s, model=meta_net()), InputError, "meta device ('fc1.weight')"),
    "model-nan": (lambda s: ft(s, model=net(math.nan)), InputError, "NaN values in 'fc1.weight'"),
    "model-inf": (lambda s: ft(s, model=net(math.inf)), InputError, "infinite values"),
    # the budget
    "budget-negative": (lambda s: ft(s, budget=-5), InputError, "budget=-5"),
    "budget-zero": (lambda s: ft(s, budget=0), InputError, "budget=0"),
    "budget-nan": (lambda s: ft(s, budget=math.nan), InputError, "budget=nan"),
    "budget-bool": (lambda s: ft(s, budget=True), InputError, "got True"),
    "budget-garbage": (lambda s: ft(s, budget="lots"), InputError, "'lots' is not understood"),
    "budget-float": (lambda s: ft(s, budget=2.5), InputError, "budget=2.5"),
    "budget-zero-time": (lambda s: ft(s, budget="0s"), InputError, "'0s'"),
    "budget-none": (lambda s: ft(s, budget=None), InputError, "NoneType None"),
    "budget-huge": (lambda s: ft(s, budget=10**15), InputError, "steps=1000000000000000"),
    # options
    "lr-zero": (lambda s: ft(s, lr=0.0), InputError, "lr must be positive, got 0.0"),
    "lr-negative": (lambda s: ft(s, lr=-1e-3), InputError, "got -0.001; try lr=1e-3"),
    "lr-nan": (lambda s: ft(s, lr=math.nan), InputError, "lr must be finite, got nan"),
    "lr-str": (lambda s: ft(s, lr="fast"), InputError, "lr must be a number, got 'fast'"),
    "seed-str": (lambda s: ft(s, seed="x"), InputError, "seed must be an integer, got 'x'"),
    "seed-float": (lambda s: ft(s, seed=1.5), InputError, "got 1.5"),
    "seed-negative": (lambda s: ft(s, seed=-1), InputError, "seed=-1 is outside"),
    "seed-huge": (lambda s: ft(s, seed=2**70), InputError, f"seed={2**70}"),
    "batch-zero": (lambda s: ft(s, batch_size=0), InputError, "batch_size must be at least 1"),
    "batch-negative": (lambda s: ft(s, batch_size=-8), InputError, "got -8"),
    "batch-float": (lambda s: ft(s, batch_size=32.0), InputError, "got 32.0 (float)"),
    "weight-decay": (lambda s: ft(s, weight_decay=-1.0), InputError, "weight_decay"),
    "patience-zero": (lambda s: ft(s, early_stop_patience=0), InputError, "early_stop_patience"),
    "eval-every-str": (lambda s: ft(s, eval_every="often"), InputError, "'often'"),
    "progress-str": (lambda s: ft(s, progress="yes"), InputError, "got 'yes'"),
    # the config object
    "config-distill": (
        lambda s: ft(s, config=ns.DistillConfig()),
        InputError,
        "config is a DistillConfig, whose temperature",
    ),
    "config-dict": (
        lambda s: ft(s, config={"lr": 0.1}),
        InputError,
        "config=TrainConfig.from_dict({'lr': 0.1})",
    ),
    "config-class": (lambda s: ft(s, config=ns.TrainConfig), InputError, "config=TrainConfig(...)"),
    "config-str": (lambda s: ft(s, config="adamw"), InputError, "config must be a TrainConfig"),
    # callbacks
    "callbacks-single": (lambda s: ft(s, callbacks=s), InputError, "wrap it: callbacks=[Spy"),
    "callbacks-class": (lambda s: ft(s, callbacks=[Spy]), InputError, "the class Spy"),
    "callbacks-function": (lambda s: ft(s, callbacks=[print]), InputError, "none of the hooks"),
    "callbacks-str": (lambda s: ft(s, callbacks="spy"), InputError, "got str ('spy')"),
    "callbacks-int": (lambda s: ft(s, callbacks=[s, 7]), InputError, "callbacks[1] is int"),
    # optimizer
    "optimizer-name": (lambda s: ft(s, optimizer="adam"), UnknownNameError, "optimizer='adam'"),
    "optimizer-instance": (
        lambda s: ft(s, optimizer=torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1)),
        InputError,
        "SGD already built",
    ),
    "optimizer-int": (lambda s: ft(s, optimizer=5), InputError, "got int (5)"),
    "optimizer-returns-str": (
        lambda s: ft(s, optimizer=lambda p: "sgd"),
        TrainingError,
        "returned str ('sgd')",
    ),
    # a task whose score is not a number (taken before training for early stopping)
    "score-str": (
        lambda s: ft(s, task=ScoreTask("good"), early_stop_patience=2),
        TrainingError,
        "task 'tiny' (ScoreTask): evaluate(model, 'validation') returned 'good'",
    ),
    "score-nan": (
        lambda s: ft(s, task=ScoreTask(math.nan), early_stop_patience=2),
        TrainingError,
        "returned nan",
    ),
    "score-none": (
        lambda s: ft(s, task=ScoreTask(None), early_stop_patience=2),
        TrainingError,
        "returned None (NoneType), not a number",
    ),
    "score-vector": (
        lambda s: ft(s, task=ScoreTask(torch.ones(3)), early_stop_patience=2),
        TrainingError,
        "'tiny'",
    ),
}

DISTILL: dict[str, Case] = {
    "teacher-str": (lambda s: ds(s, teacher="bert"), InputError, "teacher must be a torch.nn"),
    "teacher-none": (lambda s: ds(s, teacher=None), InputError, "got NoneType"),
    "teacher-nan": (lambda s: ds(s, teacher=net(math.nan)), InputError, "teacher has NaN"),
    "teacher-meta": (lambda s: ds(s, teacher=meta_net()), InputError, "teacher has weights on"),
    "student-str": (lambda s: ds(s, student="small"), InputError, "student must be a torch.nn"),
    "task-none": (lambda s: ds(s, task=None), InputError, "distill: task=None"),
    "task-name": (lambda s: ds(s, task="minilm"), InputError, "ns.get_task('minilm')"),
    "temperature-zero": (lambda s: ds(s, temperature=0.0), InputError, "got 0.0"),
    "temperature-negative": (lambda s: ds(s, temperature=-2.0), InputError, "got -2.0"),
    "temperature-nan": (lambda s: ds(s, temperature=math.nan), InputError, "temperature must"),
    "alpha-above": (lambda s: ds(s, alpha=1.5), InvalidRatioError, "got 1.5"),
    "alpha-below": (lambda s: ds(s, alpha=-0.1), InvalidRatioError, "got -0.1"),
    "alpha-str": (lambda s: ds(s, alpha="half"), InputError, "alpha must be a number"),
    "output-kind": (lambda s: ds(s, output_kind="probs"), UnknownNameError, "'probs'"),
    "hidden-weight": (lambda s: ds(s, hidden_weight=-1.0), InputError, "hidden_weight"),
    "hidden-unknown": (
        lambda s: ds(s, hidden_weight=1.0, hidden_layers=["fc3"]),
        UnknownNameError,
        "'fc3', which the student (TinyNet) does not have; close names: 'fc2', 'fc1'",
    ),
    "hidden-teacher-lacks": (
        lambda s: ds(
            s, teacher=nn.Sequential(nn.Linear(4, 3)), hidden_weight=1.0, hidden_layers=["fc1"]
        ),
        UnknownNameError,
        "the teacher (Sequential) does not have",
    ),  # fmt: skip
    "hidden-not-names": (
        lambda s: ds(s, hidden_weight=1.0, hidden_layers=5),
        InputError,
        "hidden_layers must be a list",
    ),
    "hidden-without-weight": (
        lambda s: ds(s, hidden_layers=["fc1"]),
        InputError,
        "hidden_weight=0.0",
    ),
    "config-train": (
        lambda s: ds(s, config=ns.TrainConfig(lr=0.1)),
        InputError,
        "config must be a DistillConfig",
    ),
    "hidden-layers-empty": (
        lambda s: ds(s, hidden_weight=1.0, hidden_layers=[]),
        InputError,
        "names no layer",
    ),
    "same-module": (
        lambda s: (lambda m: ns.distill(m, m, TinyTask(), 3, progress=False, callbacks=[s]))(net()),
        TrainingError,
        "same module as student and teacher",
    ),
}

CONFIG: dict[str, Case] = {
    "from-dict-list": (lambda s: ns.TrainConfig.from_dict([1]), InputError, "needs a dict"),
    "from-dict-field": (
        lambda s: ns.TrainConfig.from_dict({"kind": "finetune", "learning_rate": 0.1}),
        InputError,
        "TrainConfig has no field 'learning_rate'",
    ),
    "from-dict-kind": (
        lambda s: ns.TrainConfig.from_dict({"kind": "sgd"}),
        UnknownNameError,
        "kind='sgd'",
    ),
    "distill-from-finetune-dict": (
        lambda s: ns.DistillConfig.from_dict({"kind": "finetune"}),
        UnknownNameError,
        "pass one of 'distill'",
    ),
    "from-json-garbage": (lambda s: ns.TrainConfig.from_json("{lr"), InputError, "not JSON"),
    "from-json-bad-value": (
        lambda s: ns.DistillConfig.from_json('{"kind": "distill", "alpha": 2}'),
        InvalidRatioError,
        "alpha must be in [0, 1]",
    ),
}

BUDGET: dict[str, Case] = {
    "steps-zero": (lambda s: ns.Budget(steps=0), InputError, "got 0"),
    "steps-str": (lambda s: ns.Budget(steps="10"), InputError, "got '10'"),
    "seconds-nan": (lambda s: ns.Budget(seconds=math.nan), InputError, "got nan"),
    "seconds-bool": (lambda s: ns.Budget(seconds=True), InputError, "got True"),
    "neither": (lambda s: ns.Budget(), InputError, "got neither"),
    "parse-list": (lambda s: ns.Budget.parse([200]), InputError, "got list [200]"),
    "parse-fraction": (lambda s: ns.Budget.parse("1.5 steps"), InputError, "must be whole"),
}

SPARSIFY: dict[str, Case] = {
    "model-str": (lambda s: sp(model="vit"), InputError, "got str ('vit')"),
    "model-nan": (lambda s: sp(model=net(math.nan)), InputError, "NaN values in 'fc1.weight'"),
    "model-meta": (lambda s: sp(model=meta_net()), InputError, "meta device"),
    "config-class": (lambda s: sp(config=MagnitudeConfig), InputError, "MagnitudeConfig()"),
    "config-dict": (lambda s: sp(config={"sparsity": 0.5}), InputError, "config_from_dict"),
    "config-name": (lambda s: sp(config="magnitude"), InputError, "config='magnitude' is a name"),
    "config-none": (lambda s: sp(config=None), InputError, "got NoneType"),
    "sparsity-one": (lambda s: MagnitudeConfig(sparsity=1.0), InvalidRatioError, "sparsity=1.0"),
    "sparsity-negative": (
        lambda s: MagnitudeConfig(sparsity=-0.1),
        InvalidRatioError,
        "sparsity=-0.1",
    ),
    "sparsity-nan": (lambda s: GradualConfig(sparsity=math.nan), InvalidRatioError, "nan"),
    "n-above-m": (lambda s: NMConfig(n=5, m=4), SparsityError, "(n=5, m=4)"),
    "include-unknown": (
        lambda s: sp(config=MagnitudeConfig(include=("fc3",))),
        UnknownNameError,
        "include='fc3' matches no layer with a weight in TinyNet; close names: 'fc2', 'fc1'",
    ),
    "exclude-unknown": (
        lambda s: sp(config=MagnitudeConfig(exclude=("fc_2",))),
        UnknownNameError,
        "close names: 'fc2'",
    ),
    "include-int": (lambda s: MagnitudeConfig(include=5), SparsityError, "got int"),
    "include-bad-regex": (
        lambda s: MagnitudeConfig(include="re:fc["),
        SparsityError,
        "'re:fc[' is not a valid regular expression",
    ),  # fmt: skip
    "include-empty": (lambda s: MagnitudeConfig(include=()), SparsityError, "include=()"),
    "selects-nothing": (
        lambda s: sp(model=nn.Sequential(nn.ReLU())),
        SparsityError,
        "selects no weight of Sequential",
    ),
    "nm-fits-nothing": (
        lambda s: sp(config=NMConfig(n=1, m=3)),
        SparsityError,
        "NMConfig(n=1, m=3) fits none",
    ),
    "rigl-never-updates": (
        lambda s: sp(config=RigLConfig(update_every=100), task=TinyTask(), budget=20),
        SparsityError,
        "update_every=100) makes no mask update",
    ),
    "task-name": (lambda s: sp(task="digits", budget=5), InputError, "ns.get_task('digits')"),
    "task-without-budget": (lambda s: sp(task=TinyTask()), InputError, "budget=None"),
    "training-without-task": (
        lambda s: sp(config=GradualConfig()),
        InputError,
        "GradualConfig trains the model, so it needs task=",
    ),
    "budget-negative": (lambda s: sp(task=TinyTask(), budget=-5), InputError, "budget=-5"),
    "budget-time": (lambda s: sp(task=TinyTask(), budget="30s"), InputError, "budget='30s'"),
    "budget-nan": (lambda s: sp(task=TinyTask(), budget=math.nan), InputError, "budget=nan"),
    "seed-str": (lambda s: sp(seed="x"), InputError, "seed must be an integer, got 'x'"),
    "lr-zero": (lambda s: sp(lr=0.0), InputError, "lr must be positive"),
    "progress-int": (lambda s: sp(progress=2), InputError, "got 2"),
    "lottery-control": (
        lambda s: LotteryTicketConfig(control="yes"),
        SparsityError,
        "control='yes'",
    ),
    "from-dict-list": (lambda s: config_from_dict([1, 2]), SparsityError, "got list"),
    "from-dict-field": (
        lambda s: config_from_dict({"kind": "magnitude", "sparsty": 0.5}),
        SparsityError,
        "no field 'sparsty'",
    ),
    "from-dict-kind": (lambda s: config_from_dict({"kind": ["nm"]}), UnknownNameError, "['nm']"),
}

TASK: dict[str, Case] = {
    "calib-n-str": (lambda s: TinyTask().calib_batches("4"), InputError, "got '4'"),
    "calib-n-zero": (lambda s: TinyTask().calib_batches(0), InputError, "n=0"),
    "calib-not-pairs": (
        lambda s: PairlessTask().calib_batches(2),
        TrainingError,
        "task 'tiny' (PairlessTask): train_batches() must yield (inputs, targets)",
    ),
    "calib-one-tensor": (
        lambda s: check_calib_batches(torch.ones(2, 4)),
        ExampleInputsError,
        "wrap it in a list",
    ),
    "calib-empty": (lambda s: check_calib_batches([]), ExampleInputsError, "no calibration"),
    "calib-str": (lambda s: check_calib_batches(["x"]), ExampleInputsError, "batch 0 is str"),
    "calib-int": (lambda s: check_calib_batches(4), ExampleInputsError, "got int (4)"),
    "calib-nan": (
        lambda s: check_calib_batches([torch.ones(2), torch.full((2,), math.nan)]),
        ExampleInputsError,
        "calibration batch 1 holds NaN",
    ),
    "recover-model-str": (lambda s: recover("m", TinyTask(), 5), InputError, "got str ('m')"),
    "recover-teacher-str": (
        lambda s: recover(net(), TinyTask(), 5, teacher="t", callbacks=[s]),
        InputError,
        "teacher must be a torch.nn.Module",
    ),
    "recover-budget": (lambda s: recover(net(), TinyTask(), -1), InputError, "budget=-1"),
    "recover-distill-alone": (
        lambda s: recover(net(), TinyTask(), 5, config=ns.DistillConfig(), callbacks=[s]),
        InputError,
        "a DistillConfig needs teacher=",
    ),
    "recover-config-dict": (
        lambda s: recover(net(), TinyTask(), 5, config={"lr": 1e-3}),  # type: ignore[arg-type]
        InputError,
        "config must be a TrainConfig or DistillConfig",
    ),
    "name-not-str": (
        lambda s: type("Named", (TinyTask,), {"name": 5}),
        InputError,
        "Named.name must be a non-empty string, got 5",
    ),
}

CASES = {
    **{f"finetune-{k}": v for k, v in FINETUNE.items()},
    **{f"distill-{k}": v for k, v in DISTILL.items()},
    **{f"config-{k}": v for k, v in CONFIG.items()},
    **{f"budget-{k}": v for k, v in BUDGET.items()},
    **{f"sparsify-{k}": v for k, v in SPARSIFY.items()},
    **{f"task-{k}": v for k, v in TASK.items()},
}


@pytest.mark.parametrize(("call", "error", "fragment"), CASES.values(), ids=CASES.keys())
def test_bad_call(call: Callable[[Spy], Any], error: type[Exception], fragment: str) -> None:
    spy = Spy()
    with pytest.raises(error) as info:
        call(spy)
    assert isinstance(info.value, NetsculptError)
    assert fragment in str(info.value)
    assert spy.steps == 0  # refused before the first training step


def test_named_hidden_layers_of_different_shapes_stop_at_the_first_step() -> None:
    student, teacher = net(hidden=6), net()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with pytest.raises(TrainingError, match=r"'fc1' gives shape \(64, 6\).*\(64, 8\)"):
        ns.distill(
            student,
            teacher,
            TinyTask(),
            3,
            ns.DistillConfig(hidden_weight=1.0, hidden_layers=["fc1"]),
            progress=False,
        )
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())


def test_named_hidden_layers_are_matched() -> None:
    """hidden_layers pulls the student's named layer towards the teacher's."""
    teacher = net()
    student = net()
    with torch.no_grad():
        student.fc1.weight.add_(0.5)
    x = TinyTask().x

    def gap() -> float:
        with torch.no_grad():
            return float((student.fc1(x) - teacher.fc1(x)).pow(2).mean())

    before = gap()
    ns.distill(
        student,
        teacher,
        TinyTask(),
        30,
        ns.DistillConfig(alpha=1.0, hidden_weight=10.0, hidden_layers="fc1", lr=1e-2),
        progress=False,
    )
    assert gap() < 0.5 * before


def test_a_duck_typed_task_is_accepted() -> None:
    """An object with evaluate, train_batches and loss trains like a Task subclass."""

    class Duck:
        name = "duck"

        def __init__(self) -> None:
            self.inner = TinyTask()

        def evaluate(self, model: nn.Module, split: str = "validation") -> float:
            return self.inner.evaluate(model)

        def train_batches(self, *, batch_size: int = 64, seed: int = 0) -> Iterator[Any]:
            return self.inner.train_batches(batch_size=batch_size, seed=seed)

        def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return self.inner.loss(outputs, targets)

    spy = Spy()
    ns.finetune(net(), Duck(), 3, progress=False, callbacks=[spy])
    assert spy.steps == 3


def test_scores_that_are_numbers_are_accepted() -> None:
    import numpy as np

    for score in (0.5, 1, np.float32(0.25), torch.tensor(0.75)):
        spy = Spy()
        ns.finetune(
            net(),
            ScoreTask(score),
            2,
            ns.TrainConfig(early_stop_patience=2),
            progress=False,
            callbacks=[spy],
        )
        assert spy.steps == 2


def test_enough_bad_calls() -> None:
    assert len(CASES) >= 35
