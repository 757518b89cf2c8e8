"""netsculpt: carve fast, small sub-networks out of any PyTorch model, and prove they are faster.

>>> import netsculpt as ns
>>> graph = ns.analyze(model, example_inputs)          # doctest: +SKIP
>>> small = ns.prune(model, example_inputs, ratio=0.4)  # doctest: +SKIP

Public names are imported lazily so that ``import netsculpt`` stays fast; every name in
``__all__`` resolves (a test checks it).
"""

from __future__ import annotations

import importlib
from typing import Any

from netsculpt.errors import *  # noqa: F403
from netsculpt.errors import __all__ as _error_names

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    # analyse / plan / apply
    "analyze": "netsculpt.graph.analysis",
    "Graph": "netsculpt.graph.analysis",
    "Group": "netsculpt.graph.analysis",
    "plan": "netsculpt.pruning.planner",
    "Plan": "netsculpt.pruning.plan",
    "apply": "netsculpt.pruning.apply",
    "plan_of": "netsculpt.pruning.apply",
    "prune": "netsculpt.pruning.planner",
    "PruneConfig": "netsculpt.pruning.config",
    "iterative_prune": "netsculpt.pruning.iterative",
    "prune_experts": "netsculpt.pruning._experts",
    "rotate_residual": "netsculpt.pruning.rotate",
    "factorize": "netsculpt.pruning.lowrank",
    "FactorizeConfig": "netsculpt.pruning.lowrank",
    "register_importance": "netsculpt.pruning.importance",
    # elastic super-networks
    "elastic": "netsculpt.supernets.supernet",
    "ElasticConfig": "netsculpt.supernets.config",
    "Supernet": "netsculpt.supernets.supernet",
    "save_supernet": "netsculpt.supernets.io",
    "load_supernet": "netsculpt.supernets.io",
    "train_supernet": "netsculpt.supernets.training",
    "SupernetTrainConfig": "netsculpt.supernets.training",
    # save / load / export
    "save": "netsculpt.export.save",
    "load": "netsculpt.export.save",
    "export_onnx": "netsculpt.export.onnx",
    "check_onnx": "netsculpt.export.onnx",
    # quantize
    "quantize": "netsculpt.quantization.api",
    "QuantizeConfig": "netsculpt.quantization.config",
    "QuantizedModel": "netsculpt.quantization.api",
    # measure
    "measure": "netsculpt.measurement.api",
    "Measurement": "netsculpt.measurement.api",
    "count_params": "netsculpt.measurement.api",
    "count_macs": "netsculpt.measurement.api",
    "compare_latency": "netsculpt.measurement.api",
    "register_backend": "netsculpt.measurement.backends",
    # tasks and recovery
    "Task": "netsculpt.tasks.base",
    "get_task": "netsculpt.tasks.registry",
    "finetune": "netsculpt.recovery.train",
    "Budget": "netsculpt.recovery.budget",
    "Callback": "netsculpt.recovery.callbacks",
    "distill": "netsculpt.recovery.train",
    "TrainConfig": "netsculpt.recovery.config",
    "DistillConfig": "netsculpt.recovery.config",
    "reconstruct": "netsculpt.recovery.reconstruct",
    "reconstruction_of": "netsculpt.recovery.reconstruct",
    "ReconstructConfig": "netsculpt.recovery.reconstruct",
    "ReconstructResult": "netsculpt.recovery.reconstruct",
    # search and report
    "search": "netsculpt.studies.api",
    "StudyConfig": "netsculpt.studies.config",
    "Front": "netsculpt.studies.front",
    "report": "netsculpt.reporting.html",
    # sparsity methods
    "sparsify": "netsculpt.sparsity.api",
}

__all__ = sorted([*_LAZY, *_error_names, "__version__"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'netsculpt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
