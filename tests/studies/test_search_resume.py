"""Resume after ``kill -9`` mid-trial: nothing finished is lost or evaluated twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from search_helpers import kill_target, study_trials

HERE = Path(__file__).parent


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _wait_for(marker: Path, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if marker.exists():
            return
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the search process exited early ({proc.returncode}): {err.decode()}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail("the search process never reached the trial it should hang in")


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_kill_9_mid_trial_then_resume(tmp_path, monkeypatch, kind) -> None:  # type: ignore[no-untyped-def]
    storage = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else str(tmp_path / "s.journal")
    log, marker = tmp_path / "evals.log", tmp_path / "hanging"
    n_trials = 8
    # evaluate call 1 scores the dense baseline; call 5 is the 4th trial: it hangs there
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "search_helpers.py"), storage, "killed", str(n_trials)],
        env=_env(
            NETSCULPT_TEST_EVAL_LOG=str(log),
            NETSCULPT_TEST_HANG_AT="5",
            NETSCULPT_TEST_HANG_MARKER=str(marker),
        ),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_for(marker, proc, seconds=120)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    before = study_trials(storage, "killed")
    running = [t for t in before if t.state == TrialState.RUNNING]
    assert len(running) == 1, [t.state for t in before]
    killed = running[0]
    finished_before = {t.number: t for t in before if t.state == TrialState.COMPLETE}
    assert len(finished_before) == 3

    # start the same search again (in this process, without the hang)
    monkeypatch.setenv("NETSCULPT_TEST_EVAL_LOG", str(log))
    monkeypatch.delenv("NETSCULPT_TEST_HANG_AT", raising=False)
    kill_target(storage, "killed", n_trials)

    after = study_trials(storage, "killed")
    complete = [t for t in after if t.state == TrialState.COMPLETE]
    assert len(complete) == n_trials
    # the killed trial is failed, marked interrupted, and retried with the same parameters
    dead = after[killed.number]
    assert dead.state == TrialState.FAIL
    assert f"worker process {proc.pid}" in dead.user_attrs["interrupted"]
    retries = [t for t in complete if t.user_attrs.get("retry_of") == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params
    # finished trials are untouched
    for number, t in finished_before.items():
        assert after[number].state == TrialState.COMPLETE
        assert after[number].values == t.values
        assert after[number].datetime_complete == t.datetime_complete
    # the resumed run evaluated only new trials: not the baseline, not the finished ones
    lines = [line.split() for line in log.read_text().splitlines()]
    first = [p for pid, p in lines if int(pid) == proc.pid]
    second = [p for pid, p in lines if int(pid) == os.getpid()]
    assert len(first) == 5
    new = [
        t for t in complete if t.number not in finished_before and "cached_from" not in t.user_attrs
    ]
    assert len(second) == len(new)
    assert len(after) == n_trials + 1  # 8 complete + the interrupted one


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    return int(done.stdout)


def test_trials_of_dead_or_unknown_owners_are_failed_and_queued_again() -> None:
    import socket

    import optuna

    from netsculpt.studies._resume import recover_interrupted

    study = optuna.create_study()
    owners = [
        {"host": socket.gethostname(), "pid": _dead_pid(), "start": "1"},  # died
        "garbage",  # not an owner record: as good as dead
        {"host": socket.gethostname(), "pid": os.getpid(), "start": None},  # this process
        {"host": "another-machine", "pid": 1, "start": None},  # left to the heartbeat
    ]
    for owner in owners:
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        trial.set_user_attr("worker", owner)
    queued = recover_interrupted(study)
    assert queued == [0, 1]
    states = [t.state for t in study.get_trials()]
    assert states[:4] == [TrialState.FAIL, TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]
    retries = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["retry_of"] for t in retries] == [0, 1]
    fixed = [t.system_attrs["fixed_params"] for t in retries]  # run with these params
    assert fixed == [study.trials[0].params, study.trials[1].params]
    assert recover_interrupted(study) == []  # queued once, not on every look
