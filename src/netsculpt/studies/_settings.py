"""The settings a netsculpt study stores, written once and checked whenever they are read.

``ns.search`` writes every setting of a study as one JSON object in the study user attr
``netsculpt:settings``, in a single write by the process that created the study, so no
reader ever sees half of them::

    {"config": <StudyConfig.to_dict()>, "signature": "<space signature>",
     "model_spec": ..., "task": ..., "version": ..., "recovered": true,
     "kind": "prune", "elastic": null}

``recovered`` says whether trials were recovered before scoring (a recovery budget was set
and the task had training data), so a reader rebuilds trial models the same way. ``kind``
is ``"prune"`` (trials are plans applied to the model; studies written before it was
recorded are read as such) or ``"supernet"`` (trials are slices of one trained
super-network, never retrained; ``elastic`` then holds the ``ElasticConfig`` dict it was
made with, and the signature hashes its space). The dense
model's measurements follow later in ``netsculpt:baseline``. Studies written by earlier
versions (flat settings without ``config``, or one user attr per setting) are read too:
their config is rebuilt from the fields they stored.

A study is data that anyone may hand over: what is read back is bounded in size and depth
and type-checked field by field; anything else raises :class:`~netsculpt.errors.SearchError`
naming the study, the field and what to do, never a traceback.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import optuna

from netsculpt.errors import NetsculptError, SearchError
from netsculpt.recovery.budget import Budget
from netsculpt.studies.config import StudyConfig
from netsculpt.studies.space import SearchSpace

__all__ = [
    "BASELINE_ATTR",
    "KINDS",
    "PRUNE",
    "SUPERNET",
    "SETTINGS_ATTR",
    "STUDY_ATTR",
    "check_baseline",
    "read_settings",
    "settings_json",
    "study_settings",
    "user_attrs",
]

#: the kinds of study: plans applied to a model, or slices of a trained super-network
PRUNE = "prune"
SUPERNET = "supernet"
KINDS = (PRUNE, SUPERNET)
#: prefix of the study user attrs netsculpt writes
STUDY_ATTR = "netsculpt:"
SETTINGS_ATTR = STUDY_ATTR + "settings"
BASELINE_ATTR = STUDY_ATTR + "baseline"
#: the settings JSON is a few hundred characters; anything near this is not ours
MAX_SETTINGS_CHARS = 64 * 1024
#: nesting of the settings JSON (config.space and config.recover are the deepest: 4 levels)
MAX_DEPTH = 8
_MAX_NAME = 500
_SIGNATURE = re.compile(r"^[0-9a-f]{8,64}$")
_LEGACY_KEYS = (
    "objectives",
    "signature",
    "space",
    "backend",
    "constraints",
    "recover_budget",
    "model_spec",
    "task",
    "version",
)
_BASELINE_KEYS = ("score", "latency_ms", "latency_p90_ms", "params", "macs")
#: written since the test split was scored too (``test_score``) and since models' sizes
#: were measured (``size_bytes``); absent from older studies
_OPTIONAL_BASELINE_KEYS = ("test_score", "size_bytes")


class _Invalid(Exception):
    """A field of the stored settings is not what netsculpt writes."""


def study_settings(
    config: StudyConfig,
    *,
    signature: str,
    model_spec: str | None,
    task: str | None,
    recovered: bool,
    kind: str = PRUNE,
    elastic: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a new study stores in ``netsculpt:settings`` (see the module docstring)."""
    import netsculpt

    return {
        "config": config.to_dict(),
        "signature": signature,
        "model_spec": model_spec,
        "task": task,
        "version": netsculpt.__version__,
        "recovered": recovered,
        "kind": kind,
        "elastic": None if elastic is None else dict(elastic),
    }


def settings_json(settings: Mapping[str, Any]) -> str:
    """The settings as the JSON text stored in ``netsculpt:settings``."""
    return json.dumps(dict(settings), sort_keys=True)


def user_attrs(study: optuna.Study) -> dict[str, Any]:
    """The study's user attrs; a storage whose attrs cannot be decoded raises SearchError."""
    try:
        attrs = study.user_attrs
    except (RecursionError, ValueError, TypeError, KeyError, MemoryError) as exc:
        raise SearchError(
            f"study {study.study_name!r} has user attrs that cannot be decoded "
            f"({type(exc).__name__}); the storage was not written by netsculpt or Optuna, or "
            f"was damaged: pick another study or storage"
        ) from None
    if not isinstance(attrs, dict):
        raise SearchError(f"study {study.study_name!r} has no readable user attrs")
    return attrs


def read_settings(study_name: str, attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The checked settings of a study, or None when it holds no netsculpt settings at all.

    The result holds ``config`` (the :class:`StudyConfig`), ``signature``, ``model_spec``,
    ``task``, ``version``, ``recovered``, ``kind`` and ``elastic``, plus the config fields
    readers look up often (``objectives``, ``space`` as a dict, ``backend``,
    ``constraints``, ``recover_budget`` and ``recover``).

    Raises:
        SearchError: settings are present but are not what netsculpt writes.
    """
    if SETTINGS_ATTR in attrs:
        raw: Any = _decode(study_name, attrs[SETTINGS_ATTR])
    elif STUDY_ATTR + "objectives" in attrs:  # written by netsculpt < 0.5, one attr each
        raw = {k: attrs[STUDY_ATTR + k] for k in _LEGACY_KEYS if STUDY_ATTR + k in attrs}
        if _depth(raw, MAX_DEPTH + 1) > MAX_DEPTH:
            raise _error(study_name, "settings", "nested too deeply")
    else:
        return None
    if not isinstance(raw, dict):
        raise _error(study_name, "settings", f"a JSON {type(raw).__name__}, not an object")
    checks = _CHECKS if "config" in raw else _LEGACY_CHECKS
    out: dict[str, Any] = {}
    for key, check in checks.items():
        try:
            out[key] = check(raw.get(key))
        except _Invalid as exc:
            raise _error(study_name, key, str(exc)) from None
    if "config" not in raw:  # written before studies recorded their StudyConfig
        try:
            out["config"] = _legacy_config(out)
        except _Invalid as exc:
            raise _error(study_name, "settings", str(exc)) from None
        out["recovered"] = out["recover_budget"] is not None
    out.setdefault("kind", PRUNE)
    out.setdefault("elastic", None)
    if (out["kind"] == SUPERNET) != (out["elastic"] is not None):
        raise _error(
            study_name, "settings", f"kind {out['kind']!r} with elastic {_short(out['elastic'])}"
        )
    config: StudyConfig = out["config"]
    spaceless = out.get("space", "stored") is None  # an early study: no space stored
    out.update(
        objectives=list(config.objectives),
        space=None if spaceless else config.space.to_dict(),
        backend=config.backend,
        constraints=dict(config.constraints),
        recover_budget=config.recover_budget,
        recover=config.recover,
    )
    return out


def check_baseline(study_name: str, value: Any) -> dict[str, float] | None:
    """The dense model's stored measurements, checked; None when not measured yet."""
    if value is None:
        return None
    if not isinstance(value, dict) or not (
        set(_BASELINE_KEYS) <= set(value) <= {*_BASELINE_KEYS, *_OPTIONAL_BASELINE_KEYS}
    ):
        raise _error(
            study_name, "baseline", f"{_short(value)} is not {{{', '.join(_BASELINE_KEYS)}}}"
        )
    try:
        return {
            **({"test_score": _finite(value["test_score"])} if "test_score" in value else {}),
            "score": _finite(value["score"]),
            "latency_ms": _finite(value["latency_ms"], minimum=0.0),
            "latency_p90_ms": _finite(value["latency_p90_ms"], minimum=0.0),
            "params": _count(value["params"]),
            "macs": _count(value["macs"]),
            **({"size_bytes": _count(value["size_bytes"])} if "size_bytes" in value else {}),
        }
    except _Invalid as exc:
        raise _error(study_name, "baseline", str(exc)) from None


# --------------------------------------------------------------------------- fields


def _config(value: Any) -> StudyConfig:
    if not isinstance(value, dict):
        raise _Invalid(f"{_short(value)} is not a StudyConfig dict")
    try:
        return StudyConfig.from_dict(value)
    except (NetsculptError, TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise _Invalid(
            f"not a valid StudyConfig ({type(exc).__name__}: {str(exc)[:300]})"
        ) from None


def _kind(value: Any) -> str:
    if value is None:  # written before studies recorded their kind: a pruning study
        return PRUNE
    if value not in KINDS:
        raise _Invalid(f"{_short(value)} is not one of {', '.join(KINDS)}")
    return str(value)


def _elastic(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    from netsculpt.supernets.config import ElasticConfig

    if not isinstance(value, dict):
        raise _Invalid(f"{_short(value)} is not an ElasticConfig dict")
    try:
        return ElasticConfig.from_dict(value).to_dict()
    except (NetsculptError, TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise _Invalid(
            f"not a valid ElasticConfig ({type(exc).__name__}: {str(exc)[:300]})"
        ) from None


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"{_short(value)} is not true or false")
    return value


def _legacy_config(fields: Mapping[str, Any]) -> StudyConfig:
    """The StudyConfig of a study written before configs were stored (its other fields
    take their defaults; a missing budget means no recovery, as it did then)."""
    budget = fields["recover_budget"]
    if isinstance(budget, dict):
        budget = Budget(**budget)
    space = fields["space"]
    try:
        return StudyConfig(
            objectives=tuple(fields["objectives"]),
            space=SearchSpace.from_dict(space) if space is not None else SearchSpace(),
            backend=fields["backend"],
            constraints=fields["constraints"],
            recover_budget=budget,
        )
    except (NetsculptError, TypeError, ValueError, OverflowError) as exc:
        raise _Invalid(f"not valid settings ({type(exc).__name__}: {exc})") from None


def _objectives(value: Any) -> list[str]:
    from netsculpt.studies.objective import OBJECTIVES

    if not isinstance(value, list) or not value or len(value) > len(OBJECTIVES):
        raise _Invalid(f"{_short(value)} is not a list of objective names")
    for name in value:
        if not isinstance(name, str) or name not in OBJECTIVES:
            raise _Invalid(f"unknown objective {_short(name)} (known: {', '.join(OBJECTIVES)})")
    if len(set(value)) != len(value):
        raise _Invalid(f"{value} repeats an objective")
    return list(value)


def _signature(value: Any) -> str | None:
    if value is None:  # an early or hand-made study: readable, never resumed
        return None
    if not isinstance(value, str) or not _SIGNATURE.match(value):
        raise _Invalid(f"{_short(value)} is not a space signature (hex digits)")
    return value


def _space(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Invalid(f"{_short(value)} is not a SearchSpace dict")
    try:
        return SearchSpace.from_dict(value).to_dict()
    except (NetsculptError, TypeError, ValueError, OverflowError) as exc:
        raise _Invalid(f"not a valid SearchSpace ({type(exc).__name__}: {exc})") from None


def _backend(value: Any) -> str:
    if value is None:
        return "torch"
    return _name(value)


def _constraints(value: Any) -> dict[str, float]:
    from netsculpt.studies.samplers import CONSTRAINT_KEYS

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid(f"{_short(value)} is not a dict of constraints")
    out = {}
    for key, bound in value.items():
        if key not in CONSTRAINT_KEYS:
            raise _Invalid(f"unknown constraint {_short(key)}")
        out[key] = _finite(bound)
    return out


def _budget(value: Any) -> Any:
    if value is None:
        return None
    try:
        if isinstance(value, dict):
            if not set(value) <= {"steps", "seconds"}:
                raise _Invalid(f"{_short(value)} is not {{steps, seconds}}")
            Budget(**value)
        elif isinstance(value, (int, str)) and not isinstance(value, bool):
            if isinstance(value, str) and len(value) > 100:
                raise _Invalid(f"{_short(value)} is not a budget")
            Budget.parse(value)
        else:
            raise _Invalid(f"{_short(value)} is not a recovery budget")
    except NetsculptError as exc:
        raise _Invalid(str(exc)) from None
    return value


def _optional_name(value: Any) -> str | None:
    return None if value is None else _name(value)


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_NAME:
        raise _Invalid(f"{_short(value)} is not a name")
    return value


_CHECKS = {
    "config": _config,
    "signature": _signature,
    "model_spec": _optional_name,
    "task": _optional_name,
    "version": _optional_name,
    "recovered": _flag,
    "kind": _kind,
    "elastic": _elastic,
}

_LEGACY_CHECKS = {
    "objectives": _objectives,
    "signature": _signature,
    "space": _space,
    "backend": _backend,
    "constraints": _constraints,
    "recover_budget": _budget,
    "model_spec": _optional_name,
    "task": _optional_name,
    "version": _optional_name,
}


# --------------------------------------------------------------------------- helpers


def _decode(study_name: str, value: Any) -> Any:
    if not isinstance(value, str):
        raise _error(study_name, "settings", f"a {type(value).__name__}, not JSON text")
    if len(value) > MAX_SETTINGS_CHARS:
        raise _error(
            study_name, "settings", f"{len(value):,} characters long (netsculpt writes < 1 kB)"
        )
    try:
        data = json.loads(value)
    except RecursionError:
        raise _error(study_name, "settings", "nested too deeply") from None
    except ValueError as exc:
        raise _error(study_name, "settings", f"not JSON ({exc})") from None
    if _depth(data, MAX_DEPTH + 1) > MAX_DEPTH:
        raise _error(study_name, "settings", "nested too deeply")
    return data


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of lists and dicts in ``value``, counted up to ``limit``."""
    if limit <= 0 or not isinstance(value, (list, dict)):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in items), default=0)


def _finite(value: Any, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"{_short(value)} is not a number")
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        raise _Invalid(f"{value!r} is out of range")
    return float(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Invalid(f"{_short(value)} is not a count")
    return value


def _error(study_name: str, field: str, what: str) -> SearchError:
    return SearchError(
        f"study {study_name!r} stores invalid netsculpt {field}: {what}; it was not written "
        f"by netsculpt or was edited: pick another study_name, or run ns.search with a new "
        f"study"
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
