"""The public surface: every name in __all__ resolves; errors derive from NetsculptError."""

from __future__ import annotations

import inspect

import pytest

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


# The top-level surface, written out: adding or removing a public name is a decision this list
# records (README and docs follow it), never a side effect of an import.
PUBLIC = {
    # errors
    "NetsculptError", "InputError", "InvalidRatioError", "ExampleInputsError", "UnknownNameError",
    "CaptureError", "UnsupportedOperationError", "NothingToPruneError", "PlanError",
    "SaveLoadError", "ChecksumError", "FactoryError", "UntrustedCodeError", "MeasureError",
    "ExportError", "SearchError", "StorageError", "StudyMismatchError", "ConstraintError",
    "TrainingError", "DivergenceError", "SparsityError",
    # configs and values
    "PruneConfig", "TrainConfig", "DistillConfig", "StudyConfig", "FactorizeConfig", "Budget",
    "Callback", "Graph", "Group", "Plan", "Measurement", "Front", "Task",
    # verbs
    "analyze", "plan", "apply", "prune", "iterative_prune", "plan_of", "register_importance",
    "prune_experts", "rotate_residual",
    "save", "load", "measure", "compare_latency", "count_macs", "count_params",
    "register_backend", "export_onnx", "check_onnx", "finetune", "distill", "get_task",
    "search", "report", "sparsify", "factorize",
    "reconstruct", "reconstruction_of", "ReconstructConfig", "ReconstructResult",
    "elastic", "ElasticConfig", "Supernet",
    "save_supernet", "load_supernet", "train_supernet", "SupernetTrainConfig",
    "quantize", "QuantizeConfig", "QuantizedModel",
    "__version__",
}  # fmt: skip


def test_all_is_pinned() -> None:
    assert len(ns.__all__) == len(set(ns.__all__)), "a name is listed twice in __all__"
    assert set(ns.__all__) - PUBLIC == set(), "new public names: add them to PUBLIC"
    assert PUBLIC - set(ns.__all__) == set(), "public names removed from __all__"


def test_configs_are_frozen_keyword_only_and_round_trip() -> None:
    import dataclasses

    for cls in (
        ns.PruneConfig,
        ns.TrainConfig,
        ns.DistillConfig,
        ns.StudyConfig,
        ns.ElasticConfig,
        ns.SupernetTrainConfig,
        ns.ReconstructConfig,
        ns.QuantizeConfig,
    ):
        params = dataclasses.fields(cls)
        assert cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
        assert all(f.kw_only for f in params), cls
        value = cls()
        assert cls.from_dict(value.to_dict()) == value, cls
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, params[0].name, None)
