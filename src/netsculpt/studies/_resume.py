"""Resuming a study: which trials count as done, and retrying trials whose worker died.

Every trial records its owner (host, process id, process start time) as the user attr
``"worker"`` when it starts. On start-up, a RUNNING trial whose owner process on this host
no longer exists was cut off (``kill -9``, a crash, a power cut): it is marked FAIL with
the user attr ``"interrupted"`` and its parameters are queued again with
``study.enqueue_trial`` (user attr ``"retry_of"``), so the next worker evaluates it from
scratch. A trial stopped by Ctrl-C is marked the same way when it stops, and queued again
on the next start-up. Trials of workers on other hosts are left to the RDB heartbeat
(``RetryHeartbeatStaleTrialCallback``), which does the same after the grace period.

A trial counts towards ``n_trials`` when it is COMPLETE, or FAIL because the task or
the plan failed (user attr ``"fail_reason"``); interrupted trials do not count.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from netsculpt.errors import SearchError

__all__ = [
    "counts_as_done",
    "n_done",
    "owner_alive",
    "owner_record",
    "recover_interrupted",
    "trials_of",
]

#: A RUNNING trial with no owner record that is older than this (seconds) is stale.
_UNOWNED_STALE_AFTER = 120.0


def _proc_start_time(pid: int) -> str | None:
    """The kernel start time of process ``pid`` (Linux), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may contain spaces: split after its closing parenthesis
    fields = stat[stat.rfind(")") + 2 :].split()
    # fields[0] is field 3 (state); the start time is field 22
    return fields[19] if len(fields) > 19 else None


def _proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rfind(")") + 2 :].split()
    return rest[0] if rest else None


def owner_record() -> dict[str, Any]:
    """Who runs a trial: this host, process id and process start time."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _proc_start_time(pid)}


def trials_of(study: optuna.Study) -> list[FrozenTrial]:
    """The study's trials; a storage whose trials cannot be decoded raises SearchError."""
    try:
        return study.get_trials(deepcopy=False)
    except Exception as exc:  # noqa: BLE001 -- a damaged or hostile storage: say so
        raise SearchError(
            f"the trials of study {study.study_name!r} cannot be decoded "
            f"({type(exc).__name__}); the storage was damaged or not written by Optuna: pick "
            f"another study"
        ) from None


def owner_alive(owner: Any) -> bool | None:
    """True / False for an owner on this host; None when it runs on another host.

    ``owner`` is the ``"worker"`` user attr of a trial (:func:`owner_record`); anything
    else counts as a dead owner.
    """
    if not isinstance(owner, dict):
        return False
    if owner.get("host") != socket.gethostname():
        return None
    pid = owner.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0 or pid > 2**22:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if _proc_state(pid) in ("Z", "X"):
        return False  # killed, not yet reaped
    start = owner.get("start")
    if start is not None:
        now = _proc_start_time(pid)
        if now is not None and now != start:
            return False  # the pid was reused by another process
    return True


def counts_as_done(trial: FrozenTrial) -> bool:
    """COMPLETE, or FAIL because of the task/plan (not because the worker was cut off)."""
    if trial.state == TrialState.COMPLETE:
        return True
    return (
        trial.state == TrialState.FAIL
        and "fail_reason" in trial.user_attrs
        and "interrupted" not in trial.user_attrs
    )


def n_done(trials: Iterable[FrozenTrial]) -> int:
    """How many trials count towards ``n_trials``."""
    return sum(1 for t in trials if counts_as_done(t))


def _retried_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    out: set[int] = set()
    for t in trials:
        out.update(_ints([t.user_attrs.get("retry_of")]))
        if "failed_trial" in t.system_attrs:  # Optuna's heartbeat retry
            out.update(_ints([t.system_attrs["failed_trial"]]))
            history = t.system_attrs.get("retry_history")
            out.update(_ints(history if isinstance(history, list) else []))
    return out


def _ints(values: Iterable[Any]) -> list[int]:
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Fail dead RUNNING trials of this host and queue every interrupted trial again.

    Returns the numbers of the trials queued again. Safe to call while other workers run:
    only trials whose owner process is gone are touched, and a trial another worker has
    already failed is skipped.
    """
    storage = study._storage
    trials = trials_of(study)
    now = time.time()
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        owner = t.user_attrs.get("worker")
        if owner is None:
            started = t.datetime_start.timestamp() if t.datetime_start else now
            dead = now - started > _UNOWNED_STALE_AFTER
            why = "its worker never recorded itself and it has not finished"
        else:
            dead = owner_alive(owner) is False
            who = owner if isinstance(owner, dict) else {}
            why = f"worker process {who.get('pid')!r:.20} on {who.get('host')!r:.80} died"
        if not dead:
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "interrupted", f"{why} mid-trial")
            storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        except RuntimeError:
            continue
    trials = trials_of(study)
    retried = _retried_numbers(trials)
    queued: list[int] = []
    for t in trials:
        if (
            t.state == TrialState.FAIL
            and "interrupted" in t.user_attrs
            and t.number not in retried
            and t.params
        ):
            study.enqueue_trial(
                dict(t.params), user_attrs={"retry_of": t.number}, skip_if_exists=False
            )
            queued.append(t.number)
    return queued
