"""Several workers on one study: a journal file on one machine, PostgreSQL for many.

Each worker evaluates trials the others do not: no trial is evaluated twice, none is lost.
The PostgreSQL test needs a server at ``NETSCULPT_TEST_POSTGRES_URL`` (``.ci/postgres.sh``
installs and starts one and prints the URL); it is skipped only when none is reachable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState
from search_helpers import FAST_MEASURE, study_trials

from netsculpt.search import SearchSpace
from netsculpt.search.api import search

HERE = Path(__file__).parent
SPACE = SearchSpace(tie="layer", importance=("magnitude",), round_to=(1,))


def _eval_log(log: Path) -> Counter[int]:
    return Counter(int(line.split()[0]) for line in log.read_text().splitlines())


def test_two_worker_processes_on_a_journal_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "evals.log"
    monkeypatch.setenv("NETSCULPT_TEST_EVAL_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    journal = tmp_path / "study.journal"
    front = search(
        "search_helpers:tiny_mlp",
        task="search_helpers:WidthTask",
        n_trials=8,
        storage=str(journal),
        study_name="pair",
        sampler="random",
        workers=2,
        space=SPACE,
        progress=False,
        measure_options=FAST_MEASURE,
    )
    assert journal.is_file()
    trials = study_trials(str(journal), "pair")
    # exactly the trials asked for: none lost, none extra, all finished
    assert len(trials) == 8
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len(front.completed) == 8
    owners = Counter(t.user_attrs["worker"]["pid"] for t in trials)
    assert len(owners) == 2 and os.getpid() not in owners  # both workers took a share
    assert sorted(owners.values()) == [4, 4]
    # every trial was evaluated once, by its owner; the parent scored only the baseline
    evals = _eval_log(log)
    assert evals[os.getpid()] == 1
    for pid in owners:
        fresh = [
            t
            for t in trials
            if t.user_attrs["worker"]["pid"] == pid and "cached_from" not in t.user_attrs
        ]
        assert evals[pid] == len(fresh)


def _postgres_url() -> str:
    url = os.environ.get("NETSCULPT_TEST_POSTGRES_URL")
    if not url:
        pytest.skip(
            "NETSCULPT_TEST_POSTGRES_URL is not set; run .ci/postgres.sh and export "
            "the URL it prints"
        )
    from netsculpt.errors import StorageError
    from netsculpt.search.storage import open_storage, resolve_storage

    try:
        open_storage(resolve_storage(url), heartbeat=False)
    except StorageError as exc:
        pytest.skip(f"no PostgreSQL server reachable at NETSCULPT_TEST_POSTGRES_URL: {exc}")
    return url


def test_two_machines_on_postgresql(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = _postgres_url()
    study = f"pg-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "evals.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env["NETSCULPT_TEST_EVAL_LOG"] = str(log)
    n_trials = 6
    # two "machines": the same command twice, at the same time, on one study
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "search_helpers.py"), url, study, str(n_trials)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()[-3000:]
    trials = study_trials(url, study)
    states = Counter(t.state for t in trials)
    assert states[TrialState.FAIL] == 0 and states[TrialState.RUNNING] == 0
    # each machine stops once the study holds n_trials; the other may finish the one
    # trial it had started
    assert n_trials <= states[TrialState.COMPLETE] <= n_trials + 1
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    owners = Counter(t.user_attrs["worker"]["pid"] for t in trials)
    assert set(owners) == {p.pid for p in procs}
    # every trial was evaluated once, by its owner (plus the baseline, by one or both)
    evals = _eval_log(log)
    for pid in owners:
        fresh = [
            t
            for t in trials
            if t.user_attrs["worker"]["pid"] == pid and "cached_from" not in t.user_attrs
        ]
        assert evals[pid] - len(fresh) in (0, 1)
    assert sum(evals.values()) - sum(1 for t in trials if "cached_from" not in t.user_attrs) in (
        1,
        2,
    )
