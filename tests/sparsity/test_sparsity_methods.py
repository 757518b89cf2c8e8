"""The training callbacks and ns.sparsify for every method (training through a minimal loop)."""

from __future__ import annotations

import copy

import pytest
import torch
from sparsity_helpers import BlobsTask, TinyConvNet, loop, mlp

import netsculpt as ns
from netsculpt.sparsity import (
    SRSTE,
    GradualConfig,
    GradualPruning,
    GraNetConfig,
    LotteryTicketConfig,
    MagnitudeConfig,
    Masks,
    NMConfig,
    RandomConfig,
    RigLConfig,
    RigLUpdates,
    cubic_sparsity,
    nm_mask,
    random_masks,
    rewind,
    select_parameters,
)
from netsculpt.sparsity.masks import weight_sparsity


def _zeros_match(model: torch.nn.Module, masks: Masks) -> None:
    for name, mask in masks.items():
        w = model.get_parameter(name)
        assert int((w[~mask] != 0).sum()) == 0, name


def test_gradual_callback_follows_the_cubic_schedule_exactly() -> None:
    model = mlp()
    masks = Masks.dense(model)
    total = masks.numel()
    cb = GradualPruning(masks, final=0.9, start=2, end=22, frequency=5)
    loop(model, BlobsTask(), 30, callbacks=[cb])
    assert [s for s, _ in cb.history] == [2, 7, 12, 17, 22]
    for step, sparsity in cb.history:
        target = cubic_sparsity(step, initial=0.0, final=0.9, start=2, end=22)
        assert round(sparsity * total) == round(target * total)
    assert cb.masks.sparsity == pytest.approx(round(0.9 * total) / total)
    _zeros_match(model, cb.masks)


def test_granet_callback_regrows_but_follows_the_schedule() -> None:
    model = mlp()
    names = select_parameters(model)
    masks = random_masks(model, names, 0.5, generator=torch.Generator().manual_seed(0))
    masks.apply(model)
    cb = GradualPruning(
        masks, final=0.8, initial=0.5, start=0, end=20, frequency=5, regrow_fraction=0.5
    )
    snapshots = []

    class Snap:
        def on_step_end(self, step: int, model: torch.nn.Module) -> None:
            if step in (5, 10):
                snapshots.append({n: cb.masks[n].clone() for n in names})

    loop(model, BlobsTask(), 25, callbacks=[cb, Snap()])
    total = cb.masks.numel()
    for step, sparsity in cb.history:
        target = cubic_sparsity(step, initial=0.5, final=0.8, start=0, end=20)
        assert round(sparsity * total) == round(target * total)
    # regeneration revives weights that an earlier mask had pruned
    revived = sum(int((snapshots[1][n] & ~snapshots[0][n]).sum()) for n in names)
    assert revived > 0
    _zeros_match(model, cb.masks)


def test_rigl_keeps_sparsity_constant_while_changing_the_mask() -> None:
    model = mlp(sizes=(16, 64, 64, 4))
    names = select_parameters(model)
    masks = random_masks(model, names, 0.8, generator=torch.Generator().manual_seed(0))
    masks.apply(model)
    start = {n: masks[n].clone() for n in names}
    cb = RigLUpdates(masks, update_every=4, end=30, drop_fraction=0.3)
    loop(model, BlobsTask(), 40, callbacks=[cb])
    assert [s for s, _ in cb.history] == [4, 8, 12, 16, 20, 24, 28]
    assert all(moved > 0 for _, moved in cb.history)
    for n in names:
        assert int(cb.masks[n].sum()) == int(start[n].sum())  # per-layer sparsity unchanged
    changed = sum(int((cb.masks[n] != start[n]).sum()) for n in names)
    assert changed > 0
    _zeros_match(model, cb.masks)


def test_rigl_update_zeroes_grown_weights_and_their_gradients() -> None:
    model = mlp(sizes=(16, 64, 4))
    names = select_parameters(model)
    masks = random_masks(model, names, 0.7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # dense weights everywhere, so a grown weight would keep a value
        for n in names:
            model.get_parameter(n).normal_()
    for n in names:
        model.get_parameter(n).grad = torch.randn_like(model.get_parameter(n))
    before = {n: model.get_parameter(n).detach().clone() for n in names}
    cb = RigLUpdates(masks, update_every=1, end=10, drop_fraction=0.5)
    cb.after_backward(1, model)
    for n in names:
        w, grad = model.get_parameter(n).detach(), model.get_parameter(n).grad
        grown = cb.masks[n] & ~masks[n]
        assert int(grown.sum()) > 0
        assert torch.all(w[grown] == 0)
        assert torch.all(w[~cb.masks[n]] == 0) and torch.all(grad[~cb.masks[n]] == 0)
        still = cb.masks[n] & masks[n]
        # kept weights that were not dropped keep their values
        assert torch.equal(w[still][w[still] != 0], before[n][still][w[still] != 0])


def test_srste_gradient_is_straight_through_plus_the_regulariser() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3, bias=False)
    dense = model.weight.detach().clone()
    x = torch.randn(5, 8)
    cb = SRSTE(["weight"], n=2, m=4, decay=0.5)
    cb.on_step_start(0, model)
    mask = nm_mask(dense, 2, 4)
    torch.testing.assert_close(model.weight.detach(), dense * mask)  # forward sees N:M weights
    model(x).pow(2).sum().backward()
    # gradient of the loss w.r.t. the masked weights, computed independently
    w_masked = (dense * mask).requires_grad_()
    torch.nn.functional.linear(x, w_masked).pow(2).sum().backward()
    cb.after_backward(0, model)
    torch.testing.assert_close(model.weight.detach(), dense)  # dense weights back for the step
    torch.testing.assert_close(model.weight.grad, w_masked.grad + 0.5 * (~mask) * dense)
    assert torch.count_nonzero(model.weight.grad[~mask]) > 0


def test_sparsify_leaves_the_input_model_untouched() -> None:
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    result = ns.sparsify(model, MagnitudeConfig(sparsity=0.9, scope="layer"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert result.model is not model
    for name, s in weight_sparsity(result.model).items():
        n = result.masks[name].numel()
        assert s == pytest.approx(round(0.9 * n) / n)


def test_one_shot_with_budget_fine_tunes_with_the_mask_fixed(fake_training, task) -> None:
    result = ns.sparsify(mlp(), MagnitudeConfig(sparsity=0.8), task=task, budget=15)
    assert fake_training == [15]
    assert result.steps == 15
    _zeros_match(result.model, result.masks)
    assert result.sparsity == pytest.approx(
        round(0.8 * result.masks.numel()) / result.masks.numel()
    )


def test_gradual_through_sparsify(fake_training, task) -> None:
    result = ns.sparsify(mlp(), GradualConfig(sparsity=0.9, frequency=3), task=task, budget=40)
    assert result.history[-1][0] == 30  # default end: three quarters of the budget
    assert result.sparsity == pytest.approx(0.9, abs=1e-3)
    _zeros_match(result.model, result.masks)
    assert weight_sparsity(result.model) == pytest.approx(result.layer_sparsity())


def test_granet_sparse_to_sparse_through_sparsify(fake_training, task) -> None:
    config = GraNetConfig(sparsity=0.9, initial_sparsity=0.5, frequency=5)
    result = ns.sparsify(mlp(), config, task=task, budget=40)
    assert result.history[0][1] == pytest.approx(0.5, abs=0.01)
    assert result.sparsity == pytest.approx(0.9, abs=1e-3)
    _zeros_match(result.model, result.masks)


def test_rigl_through_sparsify(fake_training, task) -> None:
    model = mlp(sizes=(16, 64, 64, 4))
    config = RigLConfig(sparsity=0.85, update_every=5)
    result = ns.sparsify(model, config, task=task, budget=40)
    start = random_masks(
        model, select_parameters(model), 0.85, generator=torch.Generator().manual_seed(0)
    )
    assert result.layer_sparsity() == pytest.approx(start.layer_sparsity())
    assert any(not torch.equal(result.masks[n], start[n]) for n in start)
    assert [s for s, _ in result.history] == [5, 10, 15, 20, 25]  # before 3/4 of the budget
    _zeros_match(result.model, result.masks)


def test_random_erk_through_sparsify() -> None:
    result = ns.sparsify(mlp(sizes=(64, 128, 128, 10)), RandomConfig(sparsity=0.5), seed=1)
    assert result.sparsity == pytest.approx(0.5, abs=1e-3)
    _zeros_match(result.model, result.masks)


def _assert_nm(model: torch.nn.Module, names: list[str]) -> None:
    for name in names:
        w = model.get_parameter(name).detach()
        assert torch.equal(w != 0, nm_mask(w, 2, 4)), name
        assert torch.all((w.movedim(1, -1).reshape(-1, 4) != 0).sum(-1) == 2), name


def test_nm_magnitude_on_convolutions() -> None:
    result = ns.sparsify(TinyConvNet(), NMConfig(n=2, m=4))
    assert set(result.masks) == {"conv1.weight", "conv2.weight", "head.weight"}
    _assert_nm(result.model, list(result.masks))
    assert result.sparsity == pytest.approx(0.5)


def test_nm_srste_through_sparsify_holds_the_pattern(fake_training, task) -> None:
    model = mlp()
    config = NMConfig(n=2, m=4, method="sr-ste", decay=1e-2)
    result = ns.sparsify(model, config, task=task, budget=12)
    assert fake_training == [12]
    _assert_nm(result.model, list(result.masks))
    assert result.sparsity == pytest.approx(0.5)
    # training changed the weights, so the final mask is not the one-shot mask of the input
    one_shot = ns.sparsify(model, NMConfig(n=2, m=4))
    assert any(not torch.equal(result.masks[n], one_shot.masks[n]) for n in result.masks)


def test_nm_skips_what_does_not_fit() -> None:
    model = mlp(sizes=(6, 8, 4))
    result = ns.sparsify(model, NMConfig(n=2, m=4))
    assert list(result.masks) == ["2.weight"]
    assert "0.weight" in result.skipped


def test_rewind_restores_early_weights_on_unpruned_positions(fake_training, task) -> None:
    model = mlp()
    config = LotteryTicketConfig(sparsity=0.75, rounds=2, rewind_step=3, control=True)
    result = ns.sparsify(model, config, task=task, budget=20, seed=0)
    assert fake_training == [20, 17, 17, 20]  # dense, two rounds from step 3, control
    assert result.steps == 20 + 17 + 17
    assert [round(s, 2) for _, s in result.history] == [0.5, 0.75]
    # the same training run, stopped after 3 steps, gives the weights the ticket rewound to
    early = loop(copy.deepcopy(model), task, 3, lr=1e-3, seed=0)
    for name, mask in result.masks.items():
        kept = result.rewound[name][mask]
        torch.testing.assert_close(kept, early.get_parameter(name).detach()[mask])
        assert torch.all(result.rewound[name][~mask] == 0)
    # rewinding a model: kept weights take the early values, pruned ones are zero
    target = rewind(copy.deepcopy(result.model), early.state_dict(), result.masks)
    for name, mask in result.masks.items():
        w = target.get_parameter(name).detach()
        torch.testing.assert_close(w[mask], early.get_parameter(name).detach()[mask])
        assert torch.all(w[~mask] == 0)
    # the control has the same mask but not the ticket's weights
    assert result.control is not None
    _zeros_match(result.control, result.masks)
    _zeros_match(result.model, result.masks)
    assert not torch.equal(
        result.control.get_parameter("0.weight"), result.model.get_parameter("0.weight")
    )


def test_lottery_rewind_to_init(fake_training, task) -> None:
    model = mlp()
    result = ns.sparsify(model, LotteryTicketConfig(sparsity=0.5, rounds=1), task=task, budget=8)
    for name, mask in result.masks.items():
        torch.testing.assert_close(result.rewound[name][mask], model.get_parameter(name)[mask])


@pytest.mark.parametrize(
    "config",
    [
        GradualConfig(sparsity=0.9, frequency=4),
        RigLConfig(sparsity=0.8, update_every=5),
        NMConfig(method="sr-ste"),
        LotteryTicketConfig(sparsity=0.6, rounds=2, rewind_step=2),
    ],
)
def test_methods_compose_with_ns_finetune(config, task) -> None:
    """The real recovery loop (no stand-in): masks hold, and the model learns the task."""
    model = mlp()
    result = ns.sparsify(model, config, task=task, budget=40, lr=1e-2)
    _zeros_match(result.model, result.masks)
    assert weight_sparsity(result.model)["0.weight"] >= result.layer_sparsity()["0.weight"]
    assert result.sparsity > 0.45
    assert task.evaluate(result.model) > 0.6  # four classes: chance is 0.25
