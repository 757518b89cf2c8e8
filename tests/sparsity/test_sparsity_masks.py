"""Masks: layer selection, in-place and parametrised application, folding, survival in training."""

from __future__ import annotations

import pytest
import torch
from sparsity_helpers import BlobsTask, TinyConvNet, loop, mlp
from torch import nn
from torch.nn.utils import parametrize

from netsculpt.errors import SparsityError, UnknownNameError
from netsculpt.sparsity import (
    MaskCallback,
    Masks,
    fold,
    magnitude_masks,
    select_parameters,
)
from netsculpt.sparsity.masks import weight_sparsity


def test_default_selection_is_linear_and_conv_weights() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2), nn.Embedding(5, 4)
    )
    assert select_parameters(model) == ["0.weight", "3.weight"]


def test_selection_by_name_and_pattern() -> None:
    model = TinyConvNet()
    assert select_parameters(model, include=["re:conv.*"]) == ["conv1.weight", "conv2.weight"]
    assert select_parameters(model, exclude=["head"]) == ["conv1.weight", "conv2.weight"]
    assert select_parameters(model, include=["head.weight"]) == ["head.weight"]
    assert select_parameters(model, exclude=["re:nothing.*"]) == [
        "conv1.weight",
        "conv2.weight",
        "head.weight",
    ]


@pytest.mark.parametrize(
    "kwargs", [{"include": ["conv9"]}, {"exclude": ["hed"]}, {"include": ["re:fc.*"]}]
)
def test_unknown_layer_names_say_what_exists(kwargs: dict) -> None:
    with pytest.raises(UnknownNameError) as info:
        select_parameters(TinyConvNet(), **kwargs)
    assert "matches no layer" in str(info.value)
    assert "'conv1'" in str(info.value)


def test_unknown_name_lists_the_closest_layers_first() -> None:
    with pytest.raises(UnknownNameError, match=r"close names: 'conv2', 'conv1'"):
        select_parameters(TinyConvNet(), include=["conv3"])


def test_one_name_is_one_selector_and_bad_patterns_are_named() -> None:
    model = TinyConvNet()
    assert select_parameters(model, include="head") == ["head.weight"]  # not 'h', 'e', ...
    assert select_parameters(model, exclude=None) == select_parameters(model)  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match=r"'re:conv\[' is not a valid regular expression"):
        select_parameters(model, exclude=["re:conv["])


def test_apply_zeroes_exactly_the_masked_weights() -> None:
    model = mlp()
    masks = magnitude_masks(model, Masks.dense(model), 0.5, scope="layer")
    masks.apply(model)
    for name, mask in masks.items():
        w = model.get_parameter(name)
        assert torch.all(w[~mask] == 0)
        assert torch.all(w[mask] != 0)
    assert weight_sparsity(model) == pytest.approx(masks.layer_sparsity())


def test_masks_survive_training_steps_with_weight_decay() -> None:
    model = mlp()
    masks = magnitude_masks(model, Masks.dense(model), 0.8)
    before = {n: model.get_parameter(n).detach().clone() for n in masks}
    loop(model, BlobsTask(), 30, callbacks=[MaskCallback(masks)], weight_decay=0.1)
    for name, mask in masks.items():
        w = model.get_parameter(name)
        assert int((w[~mask] != 0).sum()) == 0
        assert not torch.equal(w[mask], before[name][mask])  # the kept weights did train


def test_without_callback_zeros_do_not_survive() -> None:
    """The control for the test above: AdamW does move masked weights."""
    model = mlp()
    masks = magnitude_masks(model, Masks.dense(model), 0.8)
    masks.apply(model)
    loop(model, BlobsTask(), 5, weight_decay=0.1)
    assert int((model.get_parameter("0.weight")[~masks["0.weight"]] != 0).sum()) > 0


def test_attach_masks_forward_and_fold_makes_zeros_permanent() -> None:
    model = mlp()
    x = torch.randn(5, 16)
    masks = magnitude_masks(model, Masks.dense(model), 0.6)
    reference = masks.apply(mlp())(x)  # same seed, masked in place
    masks.attach(model)
    assert parametrize.is_parametrized(model[0], "weight")
    original = model[0].parametrizations.weight.original
    assert int((original == 0).sum()) == 0  # stored weights untouched
    torch.testing.assert_close(model(x), reference)
    masks.fold(model)
    assert not parametrize.is_parametrized(model[0])
    assert set(model.state_dict()) == set(mlp().state_dict())
    torch.testing.assert_close(model(x), reference)
    assert weight_sparsity(model) == pytest.approx(masks.layer_sparsity())


def test_fold_without_parametrisation_is_a_no_op() -> None:
    model = mlp()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fold(model)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k])


def test_masks_that_do_not_fit_are_refused() -> None:
    masks = Masks.dense(mlp(sizes=(16, 8, 4)))
    with pytest.raises(SparsityError, match="shape"):
        masks.apply(mlp())
    with pytest.raises(SparsityError, match="no such parameter"):
        Masks({"nothing.weight": torch.ones(2, 2)}).apply(mlp())


def test_masks_save_and_load(tmp_path) -> None:
    model = mlp()
    masks = magnitude_masks(model, Masks.dense(model), 0.7)
    masks.save(str(tmp_path / "m.safetensors"))
    again = Masks.load(str(tmp_path / "m.safetensors"))
    assert list(again) == list(masks)
    for n in masks:
        assert torch.equal(again[n], masks[n])
    assert again.sparsity == pytest.approx(masks.sparsity)


def test_from_model_reads_zeros() -> None:
    model = mlp()
    masks = magnitude_masks(model, Masks.dense(model), 0.3)
    masks.apply(model)
    read = Masks.from_model(model)
    assert all(torch.equal(read[n], masks[n]) for n in masks)
