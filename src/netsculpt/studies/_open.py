"""Opening a study: create it with its settings, or find it and check they match.

Creation is atomic (the storage refuses a second study of the same name), and the creator
writes every setting in one user attr (``_settings``), so a process that finds the study
either sees all of its settings or none; with none it waits for the creator, and takes over
an empty study whose creator died. A study resumed with another config is refused with
:class:`~netsculpt.errors.StudyMismatchError` naming each setting that differs.
"""

from __future__ import annotations

import json
import time
from typing import Any

import optuna
from optuna.storages import BaseStorage

from netsculpt.errors import SearchError, StudyMismatchError
from netsculpt.studies._resume import trials_of
from netsculpt.studies._settings import (
    BASELINE_ATTR,
    SETTINGS_ATTR,
    STUDY_ATTR,
    SUPERNET,
    check_baseline,
    read_settings,
    settings_json,
    user_attrs,
)
from netsculpt.studies.config import StudyConfig
from netsculpt.studies.objective import OBJECTIVES

__all__ = ["MUST_MATCH", "SUPERNET_MUST_MATCH", "open_study", "stored_config"]

#: config fields that must match when a study is resumed (the others may change per run)
MUST_MATCH = ("objectives", "space", "backend", "constraints", "recover_budget", "recover")
#: config fields that must match too when a super-network study is resumed
SUPERNET_MUST_MATCH = ("bn_calib_batches",)
#: how long a process waits for the creator of a study to write its settings
_SETTINGS_WAIT_S = 10.0


def stored_config(storage: BaseStorage, name: str) -> StudyConfig | None:
    """The config study ``name`` stores, or None when there is no such study (or it holds
    no netsculpt settings yet)."""
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return None
    study = optuna.load_study(study_name=name, storage=storage)
    stored = _checked_settings(study)
    return None if stored is None else stored["config"]


def open_study(
    storage: BaseStorage, name: str, config: StudyConfig, settings: dict[str, Any]
) -> optuna.Study:
    """Create study ``name`` with ``settings`` (``_settings.study_settings``), or open it
    and check that its config and space signature match ``config`` and ``settings``."""
    directions = [
        optuna.study.StudyDirection.MAXIMIZE
        if OBJECTIVES[o]
        else optuna.study.StudyDirection.MINIMIZE
        for o in config.objectives
    ]
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        try:
            study = optuna.create_study(storage=storage, study_name=name, directions=directions)
        except optuna.exceptions.DuplicatedStudyError:
            pass  # another process created it a moment ago: check its settings below
        else:
            study.set_user_attr(SETTINGS_ATTR, settings_json(settings))
            return study
    study = optuna.load_study(study_name=name, storage=storage)
    stored = _wait_for_settings(study)
    if stored is None:
        attrs = user_attrs(study)
        if trials_of(study) or any(not k.startswith(STUDY_ATTR) for k in attrs):
            raise StudyMismatchError(
                f"study {name!r} exists in this storage but was not created by netsculpt "
                f"(directions {[d.name.lower() for d in study.directions]}); pick another "
                f"study_name"
            )
        stored = _adopt(study, directions, settings)
    diffs = _differences(stored, config, settings)
    if list(study.directions) != directions and not diffs:
        diffs.append(f"directions: stored {[d.name.lower() for d in study.directions]}")
    if diffs:
        raise StudyMismatchError(
            f"study {name!r} exists with other settings ({'; '.join(diffs)}); resume it "
            f"with the same config (or config=None, which takes the stored one), or pass "
            f"another study_name to start a new study"
        )
    try:
        check_baseline(name, user_attrs(study).get(BASELINE_ATTR))
    except SearchError as exc:
        raise StudyMismatchError(str(exc)) from None
    return study


def _differences(
    stored: dict[str, Any], config: StudyConfig, settings: dict[str, Any]
) -> list[str]:
    """``"<field>: stored ..., now ..."`` for each setting that must match and does not."""
    then, now = stored["config"].to_dict(), config.to_dict()
    if stored["space"] is None:  # an early study without a stored space
        then["space"] = None
    keys = MUST_MATCH + (SUPERNET_MUST_MATCH if settings.get("kind") == SUPERNET else ())
    diffs = [
        f"{key}: stored {then.get(key)!r}, now {now[key]!r}"
        for key in keys
        if _canon(then.get(key)) != _canon(now[key])
    ]
    for key in ("kind", "elastic"):
        if _canon(stored.get(key)) != _canon(settings.get(key)):
            diffs.append(f"{key}: stored {stored.get(key)!r}, now {settings.get(key)!r}")
    if stored["signature"] != settings["signature"]:
        diffs.append(f"signature: stored {stored['signature']!r}, now {settings['signature']!r}")
    return diffs


def _adopt(study: optuna.Study, directions: list[Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Take over an empty study that holds no settings (its creator died before writing
    them): write ours, then read back what the storage kept (another process may have
    written its own at the same moment)."""
    if list(study.directions) != directions:
        raise StudyMismatchError(
            f"study {study.study_name!r} exists with directions "
            f"{[d.name.lower() for d in study.directions]} and no netsculpt settings; pick "
            f"another study_name"
        )
    study.set_user_attr(SETTINGS_ATTR, settings_json(settings))
    time.sleep(0.2)
    stored = _checked_settings(study)
    if stored is None:
        raise StudyMismatchError(f"study {study.study_name!r} lost its settings; try again")
    return stored


def _checked_settings(study: optuna.Study) -> dict[str, Any] | None:
    try:
        return read_settings(study.study_name, user_attrs(study))
    except StudyMismatchError:
        raise
    except SearchError as exc:
        raise StudyMismatchError(str(exc)) from None


def _wait_for_settings(study: optuna.Study) -> dict[str, Any] | None:
    """The study's checked settings, once its creator has written them; None for a study
    that has none (after a short wait when it is empty, as one created a moment ago is)."""
    deadline = time.monotonic() + _SETTINGS_WAIT_S
    while True:
        stored = _checked_settings(study)
        if stored is not None:
            return stored
        attrs = user_attrs(study)
        empty = not trials_of(study) and all(k.startswith(STUDY_ATTR) for k in attrs)
        if not empty or time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
