"""Plans compose: iterative pruning and low-rank factorisation save and reload."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt._inputs import call_model
from netsculpt.errors import InputError, InvalidRatioError


def cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 6 * 6, 64),
        nn.ReLU(),
        nn.Linear(64, 5),
    )
    return model.eval(), torch.randn(2, 3, 6, 6)


def test_two_plans_in_a_row_reload_on_the_original(tmp_path: Path) -> None:
    model, x = cnn()
    once = ns.prune(model, x, ratio=0.25)
    twice = ns.prune(once, x, ratio=0.5)
    plan = ns.plan_of(twice)
    assert plan.widths["0"] == (32, 12) and plan.widths["6"] == (64, 24)
    ns.save(twice, tmp_path)
    again = ns.load(tmp_path, base=cnn()[0])
    torch.testing.assert_close(call_model(again, x), call_model(twice, x), rtol=0, atol=0)


def test_factorize_composes_with_pruning(tmp_path: Path) -> None:
    model, x = cnn()
    with torch.no_grad():  # a rank-4 layer is reproduced exactly by its rank-4 factors
        w = model[6].weight
        w.copy_(torch.randn(64, 4) @ torch.randn(4, w.shape[1]) / 10)
    small = ns.prune(model, x, ratio=0.25)
    exact = ns.factorize(small, energy=0.99999, modules=["6"])
    assert isinstance(exact.get_submodule("6"), nn.Sequential)
    torch.testing.assert_close(call_model(exact, x), call_model(small, x), rtol=1e-4, atol=1e-4)
    low = ns.factorize(small, rank_ratio=0.25)
    n_small = sum(p.numel() for p in small.parameters())
    n_low = sum(p.numel() for p in low.parameters())
    assert n_low < 0.7 * n_small
    ns.save(low, tmp_path)
    again = ns.load(tmp_path, base=cnn()[0])
    torch.testing.assert_close(call_model(again, x), call_model(low, x), rtol=0, atol=0)
    assert (
        "factorised to rank" in ns.Plan.from_json((tmp_path / "plan.json").read_text()).describe()
    )


def test_factorize_rank_by_energy_and_errors() -> None:
    model, x = cnn()
    with torch.no_grad():  # a rank-2 layer: energy 0.999 needs only rank 2
        w = model[6].weight
        w.copy_(torch.randn(64, 2) @ torch.randn(2, w.shape[1]))
    from netsculpt.pruning.lowrank import FactorizeConfig, choose_ranks

    assert choose_ranks(model, FactorizeConfig(energy=0.999, modules=("6",))) == {"6": 2}
    with pytest.raises(InvalidRatioError):
        FactorizeConfig(energy=1.5)
    with pytest.raises(InputError, match="exactly one"):
        FactorizeConfig(energy=0.9, rank_ratio=0.5)
    with pytest.raises(InputError, match="worth factorising"):
        ns.factorize(model, energy=1.0, modules=["0"])


class Blobs(ns.Task):
    """Three Gaussian blobs in 3x6x6 images: quick to learn."""

    name = "blobs"

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.centres = torch.randn(5, 3, 6, 6, generator=g)
        self.x_test, self.y_test = self._draw(256, 1)

    def _draw(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 5, (n,), generator=g)
        return self.centres[y] + 0.5 * torch.randn(n, 3, 6, 6, generator=g), y

    def evaluate(self, model: nn.Module, split: str = "validation") -> float:
        with torch.no_grad():
            return float((model(self.x_test).argmax(1) == self.y_test).float().mean())

    def example_inputs(self) -> torch.Tensor:
        return self.x_test[:2]

    def train_batches(self, *, batch_size: int = 64, seed: int = 0):  # type: ignore[no-untyped-def]
        k = seed
        while True:
            k += 1
            yield self._draw(batch_size, 100 + k)


def test_iterative_pruning_reaches_the_ratio_and_recovers(tmp_path: Path) -> None:
    model, x = cnn()
    task = Blobs()
    ns.finetune(model, task, 60, progress=False)
    model.eval()
    dense = task.evaluate(model)
    small = ns.iterative_prune(model, x, task=task, ratio=0.75, steps=2, budget_per_step=30)
    small.eval()
    plan = ns.plan_of(small)
    assert plan.widths["0"][1] == 8 and plan.widths["6"][1] == 16
    assert task.evaluate(small) >= dense - 0.1
    ns.save(small, tmp_path)
    again = ns.load(tmp_path, base=cnn()[0])
    torch.testing.assert_close(call_model(again, x), call_model(small, x), rtol=0, atol=0)
    with pytest.raises(InputError, match="steps"):
        ns.iterative_prune(model, x, task=task, ratio=0.5, steps=0)


def test_iterative_pruning_takes_a_config_and_records_each_step() -> None:
    model, x = cnn()
    task = Blobs()
    config = ns.PruneConfig(ratio={"0": 0.75}, importance="l1", seed=5)
    small = ns.iterative_prune(
        model, x, config, task=task, steps=2, budget_per_step=2, recovery="finetune"
    )
    plan = ns.plan_of(small)
    assert plan.widths["0"][1] == 8  # 32 -> 16 -> 8: half of what is left in each step
    assert plan.widths["6"] == (64, 64)  # not named in the ratio mapping
    steps = [ns.PruneConfig.from_dict(step["config"]) for step in plan.meta["steps"]]
    assert [s.seed for s in steps] == [5, 6]
    assert {s.importance for s in steps} == {"l1"}
    assert steps[0].ratio == {"0": pytest.approx(0.5)}
