"""ns.train_supernet: the sandwich rule trains every sub-network of a super-network at once,
seeded, resumable from a checkpoint, progressive, distilling from the dense model when asked,
and data-parallel on torch.distributed."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import netsculpt as ns
from netsculpt.errors import (
    DivergenceError,
    InputError,
    SaveLoadError,
    TrainingError,
    UnknownNameError,
)
from netsculpt.supernets.training import _phases

FEATURES, CLASSES = 16, 4


class RuleTask(ns.Task):
    """Four classes given by a fixed random linear rule on 16 Gaussian features.

    ``shards`` > 1 makes every batch the concatenation of the batches seeds ``seed``,
    ``seed + 1``, ... would give: what ``shards`` processes read together.
    """

    name = "rule"

    def __init__(self, *, shards: int = 1) -> None:
        g = torch.Generator().manual_seed(0)
        w = torch.randn(FEATURES, CLASSES, generator=g)
        x = torch.randn(1024, FEATURES, generator=g)
        y = (x @ w).argmax(1)
        self.train_xy, self.val_xy = (x[:768], y[:768]), (x[768:], y[768:])
        self.shards = shards

    def _stream(self, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        x, y = self.train_xy
        while True:
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x) - batch_size + 1, batch_size):
                idx = perm[i : i + batch_size]
                yield x[idx], y[idx]

    def train_batches(self, *, batch_size: int = 64, seed: int = 0) -> Iterator[Any]:
        streams = [self._stream(batch_size, seed + k) for k in range(self.shards)]
        while True:
            parts = [next(s) for s in streams]
            yield torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def evaluate(self, model: nn.Module, split: str = "validation") -> float:
        x, y = self.val_xy
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, CLASSES)
    )


def _supernet(model: nn.Module | None = None) -> ns.Supernet:
    model = _mlp() if model is None else model
    config = ns.ElasticConfig(keep=(0.125, 0.25, 0.5, 1.0))
    return ns.elastic(model, torch.randn(4, FEATURES), config)


@pytest.fixture(scope="module")
def trained_mlp() -> nn.Module:
    """The MLP trained on the rule as an ordinary model (not for elasticity)."""
    torch.set_num_threads(1)
    model = _mlp()
    ns.finetune(model, RuleTask(), 150, ns.TrainConfig(lr=3e-3), progress=False)
    return model.eval()


def _weights(supernet: ns.Supernet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in supernet.model.state_dict().items()}


def _score(supernet: ns.Supernet, arch: dict[str, Any], task: ns.Task) -> float:
    supernet.eval()
    with supernet.use(arch):
        return task.evaluate(supernet)


def _sandwich_loss(supernet: ns.Supernet, task: RuleTask) -> float:
    """The largest's cross-entropy plus the smallest's, on the validation data."""
    x, y = task.val_xy
    supernet.eval()
    total = 0.0
    with torch.no_grad():
        for arch in (supernet.largest(), supernet.smallest()):
            with supernet.use(arch):
                total += float(nn.functional.cross_entropy(supernet(x), y))
    return total


# ------------------------------------------------------------------------- what it does


def test_sandwich_steps_change_weights_and_lower_the_loss() -> None:
    task = RuleTask()
    supernet = _supernet()
    before, loss_before = _weights(supernet), _sandwich_loss(supernet, task)
    supernet.train()
    out = ns.train_supernet(supernet, task, 40, ns.SupernetTrainConfig(lr=3e-3), progress=False)
    assert out is supernet
    assert supernet.training  # the mode it had
    assert supernet.active == supernet.largest()
    after = _weights(supernet)
    assert all(not torch.equal(before[k], after[k]) for k in before)
    assert _sandwich_loss(supernet, task) < 0.8 * loss_before


def test_the_smallest_sub_network_learns_what_slicing_alone_loses(trained_mlp: nn.Module) -> None:
    task = RuleTask()
    supernet = _supernet(trained_mlp)
    smallest, largest = supernet.smallest(), supernet.largest()
    sliced = _score(supernet, smallest, task)  # sliced from a model not trained to be elastic
    dense = _score(supernet, largest, task)
    config = ns.SupernetTrainConfig(lr=3e-3, max_grad_norm=5.0)
    ns.train_supernet(supernet, task, 120, config, progress=False)
    trained = _score(supernet, smallest, task)
    assert trained > sliced + 0.15, (sliced, trained)
    assert _score(supernet, largest, task) > dense - 0.05  # the full model keeps its accuracy
    # a random sub-network sits between them, also far above its sliced score
    assert _score(supernet, supernet.sample(random.Random(3)), task) > sliced + 0.1


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    task = RuleTask()
    runs = []
    for seed in (0, 0, 1):
        supernet = _supernet()
        config = ns.SupernetTrainConfig(seed=seed, n_random=1)
        ns.train_supernet(supernet, task, 6, config, progress=False)
        runs.append(_weights(supernet))
    for key in runs[0]:
        torch.testing.assert_close(runs[0][key], runs[1][key], rtol=0, atol=0)
    assert any(not torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_the_callers_random_state_is_left_as_it_was() -> None:
    supernet = _supernet()
    torch.manual_seed(123)
    ns.train_supernet(supernet, RuleTask(), 2, progress=False)
    after = torch.rand(3)
    torch.manual_seed(123)
    torch.testing.assert_close(after, torch.rand(3))


class _Record(ns.Callback):
    """Records the sub-networks each step runs (a pre-hook on the super-network)."""

    def __init__(self, supernet: ns.Supernet) -> None:
        self.steps: list[list[dict[str, Any]]] = []
        supernet.register_forward_pre_hook(lambda m, args: self.steps[-1].append(dict(m.active)))

    def on_step_start(self, step: int, model: nn.Module) -> None:
        self.steps.append([])


def test_each_step_runs_largest_smallest_and_n_random_sub_networks() -> None:
    supernet = _supernet()
    record = _Record(supernet)
    ns.train_supernet(
        supernet,
        RuleTask(),
        5,
        ns.SupernetTrainConfig(n_random=3),
        progress=False,
        callbacks=[record],
    )
    assert len(record.steps) == 5
    for archs in record.steps:
        assert archs[0] == supernet.largest() and archs[1] == supernet.smallest()
        assert 2 <= len(archs) <= 5  # drawn copies of the largest are skipped
        assert all(a != supernet.largest() for a in archs[1:])
    # the random ones differ from step to step
    assert len({json.dumps(a, sort_keys=True) for s in record.steps for a in s[2:]}) > 3


def test_progressive_shrinking_widens_the_space_phase_by_phase() -> None:
    supernet = _supernet()  # two widths of 4 options each, no depth choice
    phases = _phases(supernet.space)
    assert [(p.top, p.depth) for p in phases] == [(2, False), (3, False), (None, True)]
    record = _Record(supernet)
    config = ns.SupernetTrainConfig(progressive=True, progressive_fraction=0.5, n_random=4)
    ns.train_supernet(supernet, RuleTask(), 8, config, progress=False, callbacks=[record])
    options = {c.name: c.options for c in supernet.space}

    def lowest(step: int) -> int:  # the lowest option index any sub-network of the step used
        return min(options[k].index(v) for a in record.steps[step] for k, v in a.items())

    assert [lowest(s) for s in (0, 1)] == [2, 2]  # top 2 of 4 options: index >= 2
    assert [lowest(s) for s in (2, 3)] == [1, 1]  # top 3
    assert all(lowest(s) == 0 for s in range(4, 8))  # the whole space
    assert record.steps[0][1] == {k: o[2] for k, o in options.items()}  # the phase's smallest


def test_progressive_phases_make_depth_elastic_last() -> None:
    from netsculpt.supernets.space import Choice, ElasticSpace

    space = ElasticSpace(
        (
            Choice("a", "width", (1, 2, 3)),
            Choice("b", "width", (4, 8)),
            Choice("block:x", "depth", (False, True)),
        )
    )
    phases = _phases(space)
    assert [(p.top, p.depth) for p in phases] == [(2, False), (3, False), (None, True)]
    assert phases[0].smallest(space) == {"a": 2, "b": 4, "block:x": True}
    assert phases[-1].smallest(space) == {"a": 1, "b": 4, "block:x": False}


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(FEATURES, 32), nn.BatchNorm1d(32), nn.ReLU())
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_batch_norm_statistics_are_the_largests_and_extract_recalibrates() -> None:
    torch.manual_seed(0)
    task = RuleTask()
    supernet = ns.elastic(BNNet(), torch.randn(4, FEATURES), ns.ElasticConfig(keep=(0.25, 1.0)))
    ns.train_supernet(supernet, task, 5, progress=False)
    bn = supernet.model.body[1]
    assert int(bn.num_batches_tracked) == 5  # once per step: by the largest only
    x = task.train_xy[0]
    small = supernet.extract(supernet.smallest(), calib=[x[:256], x[256:512]])
    kept = small.body[1].running_mean.shape[0]
    assert kept == 8
    with torch.no_grad():
        torch.testing.assert_close(
            small.body[1].running_mean, small.body[0](x[:512]).mean(0), rtol=1e-4, atol=1e-4
        )


# ---------------------------------------------------------------------------- resuming


def test_resume_after_an_interrupt_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    task = RuleTask()
    config = ns.SupernetTrainConfig(checkpoint_every=3, n_random=1)
    supernet = _supernet()
    start = _weights(supernet)
    ns.train_supernet(supernet, task, 10, config, progress=False)
    straight = _weights(supernet)

    class Stop(ns.Callback):
        def on_step_start(self, step: int, model: nn.Module) -> None:
            if step == 7:
                raise KeyboardInterrupt

    supernet.model.load_state_dict(start)
    folder = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        ns.train_supernet(supernet, task, 10, config, checkpoint=folder, callbacks=[Stop()])
    for key, value in _weights(supernet).items():  # restored to what it was before the call
        torch.testing.assert_close(value, start[key], rtol=0, atol=0)
    saved = json.loads((folder / "checkpoint.json").read_text())
    assert saved["step"] == 6 and saved["config"]["n_random"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "step-000000006"]
    assert sorted(p.name for p in (folder / "step-000000006").iterdir()) == [
        "model.safetensors",
        "optimizer.pt",
    ]
    ns.train_supernet(supernet, task, 10, config, checkpoint=folder, progress=False)
    for key, value in _weights(supernet).items():
        torch.testing.assert_close(value, straight[key])
    assert json.loads((folder / "checkpoint.json").read_text())["step"] == 10


def test_a_spent_budget_then_a_larger_one_continues_the_run(tmp_path: Path) -> None:
    task = RuleTask()
    config = ns.SupernetTrainConfig(n_random=1, optimizer="sgd", lr=0.05)
    supernet = _supernet()
    start = _weights(supernet)
    ns.train_supernet(supernet, task, 8, config, progress=False)
    straight = _weights(supernet)
    supernet.model.load_state_dict(start)
    ns.train_supernet(supernet, task, 5, config, checkpoint=tmp_path, progress=False)
    supernet.model.load_state_dict(start)  # the checkpoint, not the caller, carries the state
    ns.train_supernet(supernet, task, 8, config, checkpoint=tmp_path, progress=False)
    for key, value in _weights(supernet).items():
        torch.testing.assert_close(value, straight[key])
    # a finished run resumed with the same budget takes no step and loads the weights
    supernet.model.load_state_dict(start)
    ns.train_supernet(supernet, task, 8, config, checkpoint=tmp_path, progress=False)
    for key, value in _weights(supernet).items():
        torch.testing.assert_close(value, straight[key])


def test_a_checkpoint_of_another_run_is_refused_with_the_fix(tmp_path: Path) -> None:
    task = RuleTask()
    supernet = _supernet()
    ns.train_supernet(supernet, task, 2, ns.SupernetTrainConfig(n_random=1), checkpoint=tmp_path)
    with pytest.raises(SaveLoadError, match=r"another SupernetTrainConfig \(lr=0.001 there"):
        ns.train_supernet(supernet, task, 4, ns.SupernetTrainConfig(n_random=1, lr=0.01),
                          checkpoint=tmp_path)  # fmt: skip
    other = ns.elastic(_mlp(), torch.randn(4, FEATURES), ns.ElasticConfig(keep=(0.5, 1.0)))
    with pytest.raises(SaveLoadError, match="another super-network.*elastic config.*afresh"):
        ns.train_supernet(other, task, 4, ns.SupernetTrainConfig(n_random=1), checkpoint=tmp_path)
    # checkpoint_every may change between calls
    ns.train_supernet(supernet, task, 3, ns.SupernetTrainConfig(n_random=1, checkpoint_every=7),
                      checkpoint=tmp_path)  # fmt: skip
    # a model file changed after it was written
    model_file = tmp_path / "step-000000003" / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ns.ChecksumError, match="changed after the checkpoint was written"):
        ns.train_supernet(
            supernet, task, 5, ns.SupernetTrainConfig(n_random=1), checkpoint=tmp_path
        )
    (tmp_path / "checkpoint.json").write_text('{"format": "something else"}')
    with pytest.raises(SaveLoadError, match="not a super-network training checkpoint"):
        ns.train_supernet(
            supernet, task, 5, ns.SupernetTrainConfig(n_random=1), checkpoint=tmp_path
        )


# --------------------------------------------------------------- fine-tuning (InstaTune)


class TextTask(ns.Task):
    """Random token sequences with an attention mask and no labels, as for an encoder."""

    name = "toy-text"

    def train_batches(self, *, batch_size: int = 64, seed: int = 0) -> Iterator[Any]:
        g = torch.Generator().manual_seed(seed)
        while True:
            ids = torch.randint(0, 128, (batch_size, 8), generator=g)
            mask = torch.ones(batch_size, 8, dtype=torch.long)
            mask[: batch_size // 2, 6:] = 0
            yield {"input_ids": ids, "attention_mask": mask}, None

    def evaluate(self, model: nn.Module, split: str = "validation") -> float:
        return 0.0


def _gap(supernet: ns.Supernet, dense: nn.Module, arch: dict[str, Any], batch: Any) -> float:
    """Mean squared distance of a sub-network's token states from the dense model's."""
    supernet.eval()
    with torch.no_grad(), supernet.use(arch):
        return float((supernet(**batch).last_hidden_state - dense(**batch).last_hidden_state)
                     .pow(2).mean())  # fmt: skip


def test_fine_tuning_mode_distils_every_sub_network_from_the_dense_model(tmp_path: Path) -> None:
    from netsculpt.testing.zoo import ZOO

    model, inputs = ZOO["hf_bert"]()
    encoder = model.bert.eval()  # a BertModel: token states, no labels (as MiniLM)
    with torch.no_grad():  # larger weights than at initialisation: smaller sub-networks differ
        for name, p in encoder.named_parameters():
            if name.startswith("encoder.") and p.dim() == 2:
                p.mul_(5.0)
    supernet = ns.elastic(encoder, inputs, ns.ElasticConfig(keep=(0.25, 0.5, 1.0)))
    dense = copy.deepcopy(supernet.model)
    batch = next(TextTask().train_batches(batch_size=16, seed=99))[0]
    smallest = supernet.smallest()
    before = _gap(supernet, dense, smallest, batch)
    config = ns.SupernetTrainConfig(lr=3e-4, batch_size=16, n_random=1)  # largest_loss="auto"
    ns.train_supernet(supernet, TextTask(), 12, config, checkpoint=tmp_path, progress=False)
    assert _gap(supernet, dense, smallest, batch) < 0.6 * before
    assert _gap(supernet, dense, supernet.largest(), batch) < 0.3 * before
    assert (tmp_path / "dense.safetensors").is_file()  # what a resumed run learns from
    with pytest.raises(TrainingError, match="largest_loss='dense'"):
        ns.train_supernet(supernet, TextTask(), 2, ns.SupernetTrainConfig(largest_loss="task"))


# ------------------------------------------------------------------------- bad input


def test_bad_calls_name_the_fix() -> None:
    supernet, task = _supernet(), RuleTask()
    with pytest.raises(InputError, match=r"ns.elastic\(model, example_inputs\)"):
        ns.train_supernet(_mlp(), task, 5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="pass the Supernet made by ns.elastic"):
        ns.train_supernet("supernet", task, 5)  # type: ignore[arg-type]
    for budget in (0, -3, "0 steps"):
        with pytest.raises(InputError, match="train_supernet: budget.*e.g. budget=200"):
            ns.train_supernet(supernet, task, budget)
    with pytest.raises(InputError, match="steps are whole numbers"):
        ns.train_supernet(supernet, task, 1.5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="ns.get_task"):
        ns.train_supernet(supernet, "digits", 5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"SupernetTrainConfig.from_dict\("):
        ns.train_supernet(supernet, task, 5, {"lr": 0.1})  # type: ignore[arg-type]
    with pytest.raises(InputError, match="must be a SupernetTrainConfig"):
        ns.train_supernet(supernet, task, 5, ns.TrainConfig())  # type: ignore[arg-type]
    with pytest.raises(InputError, match="progress must be True or False"):
        ns.train_supernet(supernet, task, 5, progress="yes")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="callbacks"):
        ns.train_supernet(supernet, task, 5, callbacks=[object()])
    with pytest.raises(InputError, match="checkpoint must be a folder path"):
        ns.train_supernet(supernet, task, 5, checkpoint=3)  # type: ignore[arg-type]

    class NoData(ns.Task):
        name = "no-data"

        def evaluate(self, model: nn.Module, split: str = "validation") -> float:
            return 0.0

        def example_inputs(self) -> torch.Tensor:
            return torch.randn(2, FEATURES)

    with pytest.raises(TrainingError, match="has no training data.*override train_batches"):
        ns.train_supernet(supernet, NoData(), 5)


def test_a_checkpoint_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(InputError, match="is a file; pass a folder"):
        ns.train_supernet(_supernet(), RuleTask(), 2, checkpoint=file)


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("lr", 0.0, InputError, r"lr must be positive.*e.g. SupernetTrainConfig\(lr=1e-3\)"),
        ("batch_size", 0, InputError, "batch_size must be at least 1"),
        ("seed", -1, InputError, "seed must be at least 0"),
        ("n_random", -1, InputError, "n_random must be at least 0"),
        ("n_random", 1.5, InputError, "n_random must be an integer"),
        ("temperature", 0, InputError, "temperature must be positive"),
        ("dense_alpha", 1.5, InputError, r"a weight in \[0, 1\]"),
        ("momentum", 1.0, InputError, "momentum must be below 1"),
        ("max_grad_norm", -1.0, InputError, "max_grad_norm must be positive"),
        ("progressive", "yes", InputError, "True or False"),
        ("progressive_fraction", 1.0, InputError, r"a share in \(0, 1\)"),
        ("checkpoint_every", 0, InputError, "checkpoint_every must be at least 1"),
        ("largest_loss", "teacher", UnknownNameError, "'auto', 'task', 'dense'"),
        ("optimizer", "adam", UnknownNameError, "'adamw', 'sgd'"),
        ("lr_schedule", "linear", UnknownNameError, "'constant', 'cosine'"),
        ("output_kind", "tokens", UnknownNameError, "'auto', 'logits', 'embeddings'"),
    ],
)
def test_config_refuses_bad_values(field: str, value: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ns.SupernetTrainConfig(**{field: value})


def test_config_round_trips_through_json() -> None:
    config = ns.SupernetTrainConfig(
        lr=1, n_random=3, progressive=True, max_grad_norm=2, largest_loss="dense"
    )
    assert config.lr == 1.0 and isinstance(config.max_grad_norm, float)
    assert ns.SupernetTrainConfig.from_json(config.to_json()) == config
    assert ns.SupernetTrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(InputError, match="did you mean 'n_random'"):
        ns.SupernetTrainConfig.from_dict({"n_randoms": 2})
    with pytest.raises(InputError, match="not JSON"):
        ns.SupernetTrainConfig.from_json("{")


def test_a_diverging_run_restores_the_weights() -> None:
    supernet = _supernet()
    start = _weights(supernet)
    with pytest.raises(DivergenceError, match="restored.*lower lr"):
        ns.train_supernet(supernet, RuleTask(), 20, ns.SupernetTrainConfig(lr=1e12), progress=False)
    for key, value in _weights(supernet).items():
        torch.testing.assert_close(value, start[key], rtol=0, atol=0)


# ------------------------------------------------------------------ torch.distributed


class ResMLP(nn.Module):
    """A residual block that sub-networks may drop (elastic depth) and a layer never used:
    passes that leave parameters out, which DistributedDataParallel must be told about."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(FEATURES, 32)
        self.block = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
        self.head = nn.Linear(32, CLASSES)
        self.unused = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        return self.head(h + self.block(h))


def _ddp_supernets() -> list[ns.Supernet]:
    torch.manual_seed(0)
    deep = ns.elastic(
        ResMLP(), torch.randn(4, FEATURES), ns.ElasticConfig(keep=(0.5, 1.0), depth=True)
    )
    return [_supernet(), deep]


DDP_CONFIG = {"n_random": 2, "batch_size": 32}


def _ddp_worker(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        for i, supernet in enumerate(_ddp_supernets()):
            if rank == 1:  # DDP starts every process from rank 0's weights
                with torch.no_grad():
                    for p in supernet.parameters():
                        p.add_(1.0)
            config = ns.SupernetTrainConfig(**DDP_CONFIG, checkpoint_every=2)
            folder = f"{out}/ckpt{i}"
            ns.train_supernet(supernet, RuleTask(), 5, config, checkpoint=folder, progress=False)
            torch.save(_weights(supernet), f"{out}/net{i}-rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_train_as_one_with_the_batches_concatenated(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_ddp_worker, args=(r, init, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    for i, supernet in enumerate(_ddp_supernets()):
        ranks = [torch.load(tmp_path / f"net{i}-rank{r}.pt", weights_only=True) for r in range(2)]
        start = _weights(supernet)
        record = _Record(supernet)
        config = ns.SupernetTrainConfig(**DDP_CONFIG)
        ns.train_supernet(supernet, RuleTask(shards=2), 5, config, callbacks=[record])
        alone = _weights(supernet)
        for key in alone:
            torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=0)
            torch.testing.assert_close(ranks[0][key], alone[key], rtol=1e-4, atol=1e-5)
        assert any(not torch.equal(alone[k], start[k]) for k in alone)
        saved = json.loads((tmp_path / f"ckpt{i}" / "checkpoint.json").read_text())
        assert saved["step"] == 5 and saved["world_size"] == 2  # written by rank 0
        if i == 1:  # the block was dropped in some last (gradient-averaging) passes
            assert any(s[-1]["block:block"] is False for s in record.steps)
            torch.testing.assert_close(alone["unused.weight"], start["unused.weight"])
