"""Several workers on one study: a journal file on one machine, PostgreSQL for many.

Each worker evaluates trials the others do not: no trial is evaluated twice, none is lost.
The PostgreSQL test needs a server at ``NETSCULPT_TEST_POSTGRES_URL`` (``.ci/postgres.sh``
installs and starts one and prints the URL); it is skipped only when none is reachable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from search_helpers import DENSE_PARAMS, FAST_MEASURE, study_trials

from netsculpt.errors import SearchError
from netsculpt.studies import SearchSpace, StudyConfig
from netsculpt.studies.api import search

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
        progress=False,
        config=StudyConfig(workers=2, space=SPACE, measure_options=FAST_MEASURE),
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
    from netsculpt.studies.storage import open_storage, resolve_storage

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


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def test_two_processes_with_one_seed_evaluate_no_plan_twice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    journal, log = tmp_path / "shared.journal", tmp_path / "evals.log"
    n_trials = 12
    # two independent runs of the same command (same seed), at the same time, on one file
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "search_helpers.py"), str(journal), "same", str(n_trials)],
            env=_env(tmp_path, NETSCULPT_TEST_EVAL_LOG=str(log), NETSCULPT_TEST_SEED="7"),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()[-3000:]
    trials = study_trials(str(journal), "same")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert n_trials <= len(complete) <= n_trials + 1
    assert {t.user_attrs["worker"]["pid"] for t in complete} == {p.pid for p in procs}
    # the processes drew their own candidates (salted seeds), not the same ones in lockstep
    hashes = [t.user_attrs["plan_hash"] for t in complete]
    assert len(set(hashes)) >= len(complete) - 3, hashes
    # ... and no plan was evaluated twice: one evaluation per distinct plan, the rest reused
    fresh = [t for t in complete if "cached_from" not in t.user_attrs]
    assert len({t.user_attrs["plan_hash"] for t in fresh}) == len(fresh)
    evaluated = Counter(int(line.split()[1]) for line in log.read_text().splitlines())
    for t in fresh:
        evaluated[t.user_attrs["params"]] -= 1
    leftover = +evaluated  # what is left are the dense baselines (one per process at most)
    assert set(leftover) <= {DENSE_PARAMS} and 1 <= sum(leftover.values()) <= 2, leftover


def _children(pid: int) -> dict[int, str]:
    """Every descendant of ``pid``: process id -> start time (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                parents[int(entry.name)] = int(stat[1])
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                stat = _stat(child)
                if stat is not None:
                    found[child] = stat[19]
                    frontier.append(child)
    return found


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_parent_of_two_workers_leaves_no_process_and_no_temp_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    temp, hanging = tmp_path / "tmp", tmp_path / "hanging"
    temp.mkdir()
    hanging.mkdir()
    journal = tmp_path / "s.journal"
    parent = subprocess.Popen(
        [sys.executable, str(HERE / "search_helpers.py"), str(journal), "orphans", "8"],
        env=_env(
            tmp_path,
            TMPDIR=str(temp),
            NETSCULPT_TEST_WORKERS="2",
            NETSCULPT_TEST_OBJECTS="1",  # the model and task objects travel in memory
            NETSCULPT_TEST_HANG_AT="2",  # a worker's first trial (the parent scored call 1)
            NETSCULPT_TEST_HANG_DIR=str(hanging),
        ),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        while len(list(hanging.iterdir())) < 2:  # both workers are mid-trial
            if parent.poll() is not None or time.monotonic() > deadline:
                _, err = parent.communicate(timeout=10)
                pytest.fail(f"the workers never started ({parent.returncode}): {err.decode()}")
            time.sleep(0.2)
        children = _children(parent.pid)
        workers = {int(p.name) for p in hanging.iterdir()}
        assert workers <= set(children) and os.getpid() not in workers
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
    finally:
        if parent.poll() is None:
            parent.kill()
    deadline = time.monotonic() + 20
    alive = dict(children)
    while alive and time.monotonic() < deadline:
        alive = {
            pid: start for pid, start in alive.items() if (_stat(pid) or [""] * 20)[19] == start
        }
        time.sleep(0.2)
    assert not alive, f"left running after the parent was killed: {sorted(alive)}"
    # no job file, no temp folder (torch.export may leave its compiler cache folder, as it
    # does in any process that captures a model)
    left = [p.name for p in temp.iterdir() if not p.name.startswith("torchinductor_")]
    assert left == []
    # the two trials the workers were running are retried by the next run
    trials = study_trials(str(journal), "orphans")
    assert sum(t.state == TrialState.RUNNING for t in trials) == 2


def test_worker_seeds_differ_by_first_trial_and_repeat_for_the_same_one() -> None:
    from netsculpt.studies.samplers import SeededPerProcess

    seen: list[int | None] = []

    def build(seed: int | None) -> optuna.samplers.BaseSampler:
        seen.append(seed)
        return optuna.samplers.RandomSampler(seed=seed)

    def first_draws(first_trial: int, worker: int, seed: int | None = 5) -> list[float]:
        study = optuna.create_study(sampler=SeededPerProcess(build, seed=seed, worker=worker))
        for _ in range(first_trial):  # trials other processes took before this one started
            study.add_trial(optuna.trial.create_trial(value=0.0))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        return [t.params["x"] for t in study.trials[first_trial:]]

    assert first_draws(0, 0) == first_draws(0, 0)  # reproducible for a lone process
    assert first_draws(0, 0) != first_draws(1, 0)  # another first trial: another stream
    assert first_draws(0, 0) != first_draws(0, 1)  # another worker: another stream
    assert first_draws(0, 0, seed=None) != first_draws(0, 0, seed=None)
    assert None in seen and len({s for s in seen if s is not None}) == 3


def test_weights_travel_as_safetensors_with_tied_tensors() -> None:
    import torch

    from netsculpt.studies._workers import load_state_bytes, state_bytes

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)
            self.head = torch.nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight
            self.norm = torch.nn.BatchNorm1d(4)

    torch.manual_seed(0)
    source = Tied()
    source.norm.running_mean += 1.5
    data = state_bytes(source)
    assert isinstance(data, bytes) and b"__reduce" not in data and data[8:9] == b"{"
    target = Tied()
    load_state_bytes(target, data)
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[name], tensor)
    assert target.head.weight is target.embed.weight
    with pytest.raises(SearchError, match="same architecture"):
        load_state_bytes(torch.nn.Linear(4, 4), data)


def test_job_folders_left_by_older_versions_are_removed(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import tempfile

    from netsculpt.studies._workers import remove_stale_job_folders

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old = tmp_path / "netsculpt-workers-old"
    old.mkdir()
    (old / "job.pt").write_bytes(b"pickled model")
    (old / "error-0.txt").write_text("")
    fresh = tmp_path / "netsculpt-workers-fresh"  # maybe still being read: kept
    fresh.mkdir()
    (fresh / "job.pt").write_bytes(b"pickled model")
    other = tmp_path / "netsculpt-workers-other"  # holds something else: kept
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    for folder in (old, other):
        os.utime(folder, (time.time() - 3600, time.time() - 3600))
    assert remove_stale_job_folders() == [str(old)]
    assert not old.exists() and fresh.is_dir() and other.is_dir()
