"""Analysis, search spaces and default study names do not depend on the process.

Python salts ``hash(str)`` per process (``PYTHONHASHSEED``), so anything ordered by
iterating a set of strings changes from run to run. Two fresh interpreters with different
hash seeds analyse the same models (hand-written and transformers ones from the zoo) and
must report the same groups, blocks, search parameters, space signature and default study
name; then each runs the same search on one SQLite file with the default study name, and
the second resumes the first's study instead of failing with StudyMismatchError or
starting another one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

MODELS = ("mlp_residual", "resnet_basic", "transformer_block", "hf_bert", "moe_transformer")

PROBE = """
import json, sys
import torch
torch.set_num_threads(1)
import netsculpt as ns
from netsculpt.testing.zoo import ZOO
from netsculpt.studies import SearchSpace, StudyConfig
from netsculpt.studies.api import default_study_name, search
from netsculpt.studies.space import build_space
from netsculpt.measurement.api import count_params

storage, n_trials, names = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
out = {"graphs": {}}
for name in names:
    model, x = ZOO[name]()
    graph = ns.analyze(model, x)
    bound = build_space(graph, SearchSpace(remove_blocks=True))
    out["graphs"][name] = {
        "groups": [
            [g.name, g.kind, g.size, g.prunable, g.reason, g.stage, g.module, list(g.params),
             [[s.tensor, s.dim] for s in g.slots]]
            for g in graph.groups
        ],
        "blocks": graph.blocks,
        "block_kinds": graph.block_kinds,
        "parameters": list(bound.distributions),
        "keep_groups": {k: list(v) for k, v in bound.keep_groups.items()},
        "signature": bound.signature,
        "study": default_study_name(model, bound),
    }


class ParamsTask(ns.Task):
    name = "params"

    def __init__(self):
        self.dense = None

    def evaluate(self, model, split="validation"):
        self.dense = self.dense or count_params(model)
        return count_params(model) / self.dense


model, x = ZOO["mlp_residual"]()
config = StudyConfig(
    space=SearchSpace(tie="layer", remove_blocks=True, importance=("magnitude",), round_to=(1,)),
    measure_options={"warmup": 0, "repeats": 2, "memory": False},
)
front = search(
    model, x, task=ParamsTask(), config=config, n_trials=n_trials, storage=storage,
    sampler="random", progress=False,
)
out["study"] = front.study_name
print("RESULT " + json.dumps(out))
"""


def _probe(tmp_path: Path, seed: int, storage: str, n_trials: int) -> dict:  # type: ignore[type-arg]
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    done = subprocess.run(
        [sys.executable, str(script), storage, str(n_trials), ",".join(MODELS)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])  # type: ignore[no-any-return]


def test_two_hash_seeds_give_one_graph_and_resume_one_study(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    first = _probe(tmp_path, 1, storage, 3)
    second = _probe(tmp_path, 2, storage, 6)
    for name in MODELS:
        a, b = first["graphs"][name], second["graphs"][name]
        assert a["groups"], name
        for key in ("groups", "blocks", "block_kinds", "parameters", "keep_groups"):
            assert a[key] == b[key], (name, key)
        assert a["signature"] == b["signature"] and a["study"] == b["study"], name
    # the models whose blocks were once ordered by a set of strings have several of them
    assert len(first["graphs"]["mlp_residual"]["blocks"]) >= 3
    assert len(first["graphs"]["hf_bert"]["blocks"]) >= 3
    # the second process resumed the first one's study: one study, no trial lost
    assert first["study"] == second["study"]
    opened = optuna.storages.RDBStorage(storage)
    assert [s.study_name for s in optuna.get_all_study_summaries(opened)] == [first["study"]]
    trials = optuna.load_study(study_name=first["study"], storage=opened).get_trials()
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials)
