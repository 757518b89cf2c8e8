from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt.tasks import digits
from netsculpt.tasks.digits import DigitsCNN, DigitsTask, digits_splits, pretrained_digits_cnn


def test_split_sizes_and_no_overlap() -> None:
    s = digits_splits()
    assert (len(s.train_index), len(s.val_index), len(s.test_index)) == (1077, 360, 360)
    train, val, test = set(s.train_index), set(s.val_index), set(s.test_index)
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(1797))
    assert s.train_x.shape == (1077, 1, 8, 8) and s.train_x.dtype == torch.float32
    assert s.test_y.dtype == torch.int64


def test_split_is_stratified_and_standardised() -> None:
    s = digits_splits()
    for labels in (s.train_y, s.val_y, s.test_y):
        counts = torch.bincount(labels, minlength=10).float()
        assert counts.min() >= 0.9 * counts.mean()
    assert abs(float(s.train_x.mean())) < 1e-4
    assert float(s.train_x.std()) == pytest.approx(1.0, abs=1e-3)


def test_split_is_fixed() -> None:
    first = digits_splits()
    digits_splits.cache_clear()
    again = digits_splits()
    assert again is not first
    assert (again.train_index, again.val_index, again.test_index) == (
        first.train_index,
        first.val_index,
        first.test_index,
    )
    torch.testing.assert_close(again.test_x, first.test_x, rtol=0, atol=0)


def test_pretrained_accuracy(digits_cnn: nn.Module) -> None:
    task = DigitsTask()
    assert task.evaluate(digits_cnn, "validation") >= 0.95
    assert task.evaluate(digits_cnn, "test") >= 0.95
    assert task.evaluate(digits_cnn) == task.evaluate(digits_cnn, "validation")
    assert not digits_cnn.training


class Memorizer(nn.Module):
    """Right on the images it memorised (by exact pixels), class 0 on every other image."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("keys", x.flatten(1))
        self.register_buffer("labels", y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        same = (x.flatten(1)[:, None, :] == self.keys[None]).all(-1)  # [batch, memorised]
        known = same.any(1)
        logits = torch.zeros(x.shape[0], 10)
        logits[known, self.labels[same.float().argmax(1)][known]] = 1.0
        logits[~known, 0] = 1.0
        return logits


def test_validation_and_test_read_different_images() -> None:
    task = DigitsTask()
    s = task.splits
    on_validation = Memorizer(s.val_x, s.val_y)
    assert task.evaluate(on_validation, "validation") == 1.0
    assert task.evaluate(on_validation, "test") == pytest.approx(36 / 360, abs=0.01)
    on_test = Memorizer(s.test_x, s.test_y)
    assert task.evaluate(on_test, "test") == 1.0
    assert task.evaluate(on_test) == pytest.approx(36 / 360, abs=0.01)  # the default: val
    assert task.describe_splits() == {"train": 1077, "validation": 360, "test": 360}


def test_a_bad_split_is_an_input_error() -> None:
    with pytest.raises(ns.InputError, match=r"split='val'.*'validation'.*'test'"):
        DigitsTask().evaluate(nn.Identity(), "val")  # type: ignore[arg-type]


def test_cache_is_safetensors_in_netsculpt_cache(digits_cnn: nn.Module, digits_cache: Path) -> None:
    files = sorted(p.name for p in digits_cache.iterdir())
    assert files == [f"digits_cnn-v{digits._WEIGHTS_VERSION}-seed0.safetensors"]
    from safetensors.torch import load_file

    weights = load_file(digits_cache / files[0])
    assert weights.keys() == digits_cnn.state_dict().keys()


def test_cache_reload_reproduces_outputs_exactly(
    digits_cnn: nn.Module, digits_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached weights should have been loaded, not trained again")

    monkeypatch.setattr(digits, "_train", no_training)
    again = pretrained_digits_cnn(cache_dir=digits_cache)
    x = digits_splits().test_x
    with torch.no_grad():
        torch.testing.assert_close(again(x), digits_cnn(x), rtol=0, atol=0)


def test_corrupt_cache_says_what_to_delete(tmp_path: Path) -> None:
    (tmp_path / f"digits_cnn-v{digits._WEIGHTS_VERSION}-seed0.safetensors").write_bytes(
        b"not safetensors"
    )
    with pytest.raises(ns.SaveLoadError, match="delete the file"):
        pretrained_digits_cnn(cache_dir=tmp_path)


def test_example_inputs_calib_and_train_batches() -> None:
    task = DigitsTask()
    s = task.splits
    x = task.example_inputs()
    assert x.shape == (32, 1, 8, 8)
    torch.testing.assert_close(x, s.train_x[:32])
    calib = task.calib_batches(3)
    assert [b.shape for b in calib] == [(32, 1, 8, 8)] * 3
    torch.testing.assert_close(calib[0], s.train_x[:32])  # calibration comes from train
    # no calibration image is a validation or test image
    held_out = {tuple(img.flatten().tolist()) for img in torch.cat([s.val_x, s.test_x])}
    train = {tuple(img.flatten().tolist()) for img in s.train_x}
    assert all(tuple(img.flatten().tolist()) in train for b in calib for img in b)
    assert not any(tuple(img.flatten().tolist()) in held_out for b in calib for img in b)
    stream = task.train_batches(batch_size=50, seed=1)
    batches = [next(stream) for _ in range(25)]  # more than one epoch (21 per epoch)
    assert all(b[0].shape == (50, 1, 8, 8) and b[1].shape == (50,) for b in batches)
    again = next(task.train_batches(batch_size=50, seed=1))
    other = next(task.train_batches(batch_size=50, seed=2))
    torch.testing.assert_close(again[0], batches[0][0])
    assert not torch.equal(other[1], batches[0][1])
    # every training image belongs to the train split with its own label
    pixels = [tuple(img.flatten().tolist()) for img in s.train_x]
    labels = dict(zip(pixels, s.train_y.tolist(), strict=True))
    images, targets = batches[0]
    rows = zip(images, targets.tolist(), strict=True)
    assert all(labels[tuple(img.flatten().tolist())] == y for img, y in rows)


def test_digits_cnn_shapes_and_options() -> None:
    model = DigitsCNN(width=8)
    assert model(torch.zeros(4, 1, 8, 8)).shape == (4, 10)
    with pytest.raises(ns.InputError, match="width"):
        DigitsCNN(width=7)
    with pytest.raises(ns.InputError, match="example_batch_size"):
        DigitsTask(example_batch_size=0)
    with pytest.raises(ns.InputError, match="n >= 1"):
        DigitsTask().calib_batches(0)
    with pytest.raises(ns.InputError, match="got '4'"):
        DigitsTask().calib_batches("4")  # type: ignore[arg-type]


def test_evaluate_restores_training_mode_and_scores_chance_for_constant_model() -> None:
    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bias.expand(x.shape[0], 10)

    model = Constant().train()
    for split in ("validation", "test"):
        score = DigitsTask().evaluate(model, split)  # type: ignore[arg-type]
        assert score == pytest.approx(36 / 360, abs=0.01)  # always class 0
        assert model.training
