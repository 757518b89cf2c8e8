"""The public surface: every name in __all__ resolves; errors derive from NetsculptError."""

from __future__ import annotations

import inspect

import netsculpt as ns
from netsculpt import errors


def test_every_public_name_resolves() -> None:
    missing = [name for name in ns.__all__ if not hasattr(ns, name)]
    assert missing == []


def test_core_functions_are_functions_not_subpackages() -> None:
    import netsculpt.measurement.api  # noqa: F401  (importing a stage must not hide the verb)
    import netsculpt.pruning.planner  # noqa: F401

    for name in ("analyze", "plan", "apply", "prune", "save", "load", "measure", "export_onnx"):
        assert inspect.isfunction(getattr(ns, name)), name


def test_every_error_derives_from_netsculpt_error() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.NetsculptError)
    assert issubclass(errors.InvalidRatioError, ValueError)
