"""The tinylm task: byte windows of standard-library docstrings split by source, a small
Llama trained once and cached, perplexity as the score, pruning and distillation on it."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt.tasks import available_tasks, get_task, tinylm
from netsculpt.tasks._tinylm_text import lm_splits, source_part, source_texts
from netsculpt.tasks.tinylm import TinyLMConfig, TinyLMTask, cache_paths, pretrained_tinylm

pytest.importorskip("transformers")

#: trains in a few seconds: 2 layers of width 32, 4 query heads sharing 2 key/value heads
TINY = TinyLMConfig(
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=64,
    seq_len=64,
    steps=25,
    batch_size=8,
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tinylm-cache")


@pytest.fixture(scope="module")
def task(cache: Path) -> TinyLMTask:
    return TinyLMTask(TINY, n_eval=32, batch_size=4, cache_dir=cache)


@pytest.fixture(scope="module")
def model(task: TinyLMTask) -> nn.Module:
    return task.pretrained_model()


def test_registered_and_built_by_name(cache: Path) -> None:
    assert "tinylm" in available_tasks()
    task = get_task("tinylm", config=TINY, n_eval=8, cache_dir=cache)
    assert isinstance(task, TinyLMTask) and task.name == "tinylm" and task.n_eval == 8


def test_splits_share_no_source_and_no_sequence() -> None:
    splits = lm_splits(TINY.seq_len)
    sources = splits.sources
    assert sources["train"] and sources["validation"] and sources["test"]
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not set(sources[a]) & set(sources[b]), (a, b)
    for part, names in sources.items():
        assert all(source_part(n) == part for n in names)
    rows = {p: {bytes(w.tolist()) for w in splits.part(p)} for p in sources}  # type: ignore[arg-type]
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not rows[a] & rows[b], (a, b)
    width = TINY.seq_len + 1
    for part in ("train", "validation", "test"):
        windows = splits.part(part)  # type: ignore[arg-type]
        assert windows.shape[1] == width and windows.dtype == torch.long and len(windows) > 32
        assert int(windows.min()) >= 0 and int(windows.max()) < tinylm.VOCAB_SIZE
    # every window is bytes of its part's sources' text, in order
    text = "".join(t for n, t in source_texts() if n in sources["test"]).encode()
    assert bytes(splits.test[0].tolist()) in text


def _digest() -> str:
    splits = lm_splits(TINY.seq_len)
    digest = hashlib.sha256(splits.fingerprint.encode())
    for part in ("train", "validation", "test"):
        digest.update(splits.part(part).numpy().tobytes())  # type: ignore[arg-type]
    return digest.hexdigest()


def test_splits_are_identical_under_another_hash_seed() -> None:
    code = (
        "import hashlib\n"
        "from netsculpt.tasks._tinylm_text import lm_splits\n"
        f"s = lm_splits({TINY.seq_len})\n"
        "d = hashlib.sha256(s.fingerprint.encode())\n"
        "for p in ('train', 'validation', 'test'):\n"
        "    d.update(s.part(p).numpy().tobytes())\n"
        "print(d.hexdigest())\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == _digest()


def test_training_beats_uniform_and_the_untrained_model(task: TinyLMTask, model: nn.Module) -> None:
    trained = task.perplexity(model)
    untrained = task.perplexity(tinylm.build_tinylm(TINY))
    assert math.isfinite(trained) and trained < untrained
    assert trained < tinylm.VOCAB_SIZE  # a uniform guess over bytes scores 256
    assert task.evaluate(model) == pytest.approx(-trained)  # higher is better
    assert task.evaluate(model, "test") == pytest.approx(-task.perplexity(model, "test"))
    with pytest.raises(ns.InputError, match="split='val'"):
        task.evaluate(model, "val")  # type: ignore[arg-type]


def test_cache_round_trip_loads_identical_weights(
    task: TinyLMTask, model: nn.Module, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, meta = cache_paths(TINY, cache_dir=cache)
    assert weights.is_file() and meta.is_file()
    stored = json.loads(meta.read_text())
    assert stored["config"] == TINY.to_dict() and stored["text"] == lm_splits(64).fingerprint

    def no_training(*_: object) -> None:
        raise AssertionError("the cached model was trained again")

    monkeypatch.setattr(tinylm, "_train", no_training)
    again = task.pretrained_model()
    assert again is not model
    reference = model.state_dict()
    for name, value in again.state_dict().items():
        assert torch.equal(value, reference[name]), name


def test_training_is_seeded(tmp_path: Path, model: nn.Module) -> None:
    """A second cache folder trains the same weights again, bit for bit."""
    other = pretrained_tinylm(TINY, cache_dir=tmp_path)
    reference = model.state_dict()
    for name, value in other.state_dict().items():
        assert torch.equal(value, reference[name]), name


def test_cache_of_another_config_is_refused(tmp_path: Path, cache: Path) -> None:
    weights, meta = cache_paths(TINY, cache_dir=cache)
    target_w, target_m = cache_paths(TINY, cache_dir=tmp_path)
    target_w.write_bytes(weights.read_bytes())
    stored = json.loads(meta.read_text())
    stored["config"]["steps"] = 99
    target_m.write_text(json.dumps(stored))
    with pytest.raises(ns.SaveLoadError, match="describes another model.*delete"):
        pretrained_tinylm(TINY, cache_dir=tmp_path)
    target_m.write_text("{not json")
    with pytest.raises(ns.SaveLoadError, match="not readable JSON"):
        pretrained_tinylm(TINY, cache_dir=tmp_path)


def test_inputs_and_batches(task: TinyLMTask) -> None:
    x = task.example_inputs()
    assert x.shape == (4, TINY.seq_len) and x.dtype == torch.long
    calib = task.calib_batches(3)
    assert len(calib) == 3 and all(b.shape == (4, TINY.seq_len) for b in calib)
    inputs, targets = next(iter(task.train_batches(batch_size=5, seed=1)))
    assert inputs.shape == targets.shape == (5, TINY.seq_len)
    torch.testing.assert_close(inputs[:, 1:], targets[:, :-1])  # targets are the next bytes
    again, _ = next(iter(task.train_batches(batch_size=5, seed=1)))
    torch.testing.assert_close(inputs, again)
    assert task.describe_splits() == {
        "train": len(lm_splits(TINY.seq_len).train),
        "validation": 32,
        "test": 32,
    }


def test_prune_and_distill(task: TinyLMTask, model: nn.Module) -> None:
    teacher = copy.deepcopy(model)
    x = task.example_inputs()
    small = ns.prune(model, x, ratio=0.3)
    assert ns.count_params(small) < ns.count_params(model)
    assert ns.count_macs(small, x) < ns.count_macs(model, x)
    before = task.perplexity(small)
    assert math.isfinite(before)
    for name, value in model.state_dict().items():  # the model itself is untouched
        assert torch.equal(value, teacher.state_dict()[name]), name
    calib = task.calib_batches(2)
    for importance in ("activation", "taylor"):
        config = ns.PruneConfig(ratio=0.3, importance=importance)
        other = ns.prune(model, x, config, calib=calib, loss_fn=tinylm.next_byte_loss)
        assert math.isfinite(task.perplexity(other))
    weights = [p.detach().clone() for p in small.parameters()]
    ns.distill(small, teacher, task, 1, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(weights, small.parameters(), strict=True))
    assert math.isfinite(task.perplexity(small))


def test_next_byte_loss_scores_the_shifted_bytes(task: TinyLMTask, model: nn.Module) -> None:
    batch = task.calib_batches(1)[0]
    logits = model(batch).logits
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, tinylm.VOCAB_SIZE), batch[:, 1:].reshape(-1)
    )
    torch.testing.assert_close(tinylm.next_byte_loss(model(batch), batch), expected)


def test_bad_options_name_the_fix() -> None:
    with pytest.raises(ns.InputError, match="num_heads=8 is not a multiple of num_kv_heads=3"):
        TinyLMConfig(num_kv_heads=3)
    with pytest.raises(ns.InputError, match="TinyLMConfig: steps must be at least 1"):
        TinyLMConfig(steps=0)
    with pytest.raises(ns.InputError, match="lr=0"):
        TinyLMConfig(lr=0)
    with pytest.raises(ns.InputError, match="needs a TinyLMConfig"):
        TinyLMTask({"steps": 3})  # type: ignore[arg-type]
    with pytest.raises(ns.InputError, match="n_eval <= "):
        TinyLMTask(TINY, n_eval=10**6)
    assert TinyLMConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ns.InputError, match="unknown keys \\['layers'\\]"):
        TinyLMConfig.from_dict({"layers": 3})
