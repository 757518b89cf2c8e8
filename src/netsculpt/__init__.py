"""netsculpt: carve fast, small sub-networks out of any PyTorch model, and prove they are faster.

>>> import netsculpt as ns
>>> graph = ns.analyze(model, example_inputs)          # doctest: +SKIP
>>> small = ns.prune(model, example_inputs, ratio=0.4)  # doctest: +SKIP

Public names are imported lazily so that ``import netsculpt`` stays fast; every name in
``__all__`` resolves (a test checks it).
"""

from __future__ import annotations

import importlib
import sys
import types
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
    "plan": "netsculpt.prune.planner",
    "Plan": "netsculpt.prune.plan",
    "apply": "netsculpt.prune.apply",
    "plan_of": "netsculpt.prune.apply",
    "prune": "netsculpt.prune.planner",
    "iterative_prune": "netsculpt.prune.iterative",
    "factorize": "netsculpt.prune.lowrank",
    "FactorizeConfig": "netsculpt.prune.lowrank",
    "register_importance": "netsculpt.prune.importance",
    # save / load / export
    "save": "netsculpt.export.save",
    "load": "netsculpt.export.save",
    "export_onnx": "netsculpt.export.onnx",
    "check_onnx": "netsculpt.export.onnx",
    # measure
    "measure": "netsculpt.measure.api",
    "Measurement": "netsculpt.measure.api",
    "count_params": "netsculpt.measure.api",
    "count_macs": "netsculpt.measure.api",
    "compare_latency": "netsculpt.measure.api",
    "register_backend": "netsculpt.measure.backends",
    # tasks and recovery
    "Task": "netsculpt.tasks.base",
    "get_task": "netsculpt.tasks.registry",
    "finetune": "netsculpt.recover.train",
    "Budget": "netsculpt.recover.budget",
    "Callback": "netsculpt.recover.callbacks",
    "distill": "netsculpt.recover.train",
    # search and report
    "search": "netsculpt.search.api",
    "Front": "netsculpt.search.front",
    "report": "netsculpt.report.html",
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


# ``ns.prune``, ``ns.measure``, ``ns.search`` and ``ns.report`` are functions that share their
# names with the subpackages of their pipeline stage. Importing a subpackage would normally
# bind it on this module and hide the function; keep the function name public instead (the
# subpackages remain importable as ``netsculpt.prune.planner`` and so on via sys.modules).
_SHADOWED = {"prune", "measure", "search", "report"}


class _PublicModule(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _PublicModule
