"""netsculpt.search: search spaces, Optuna studies, Pareto fronts and the predictor.

>>> from netsculpt.search import SearchSpace, Predictor
>>> SearchSpace(tie="layer", min_keep=0.5).tie
'layer'

Calling the package, ``netsculpt.search(model, inputs, task=...)``, is ``ns.search``: once
this package is imported, Python binds ``netsculpt.search`` to the package rather than to
the function, so the package forwards calls to :func:`netsculpt.search.api.search`.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from netsculpt.search.predictor import Predictor
from netsculpt.search.space import SearchSpace

__all__ = ["Front", "FrontTrial", "Predictor", "SearchSpace", "search"]


def __getattr__(name: str) -> Any:
    if name in ("Front", "FrontTrial"):
        from netsculpt.search import front

        return getattr(front, name)
    if name == "search":
        from netsculpt.search.api import search

        return search
    raise AttributeError(f"module 'netsculpt.search' has no attribute {name!r}")


class _CallablePackage(types.ModuleType):
    """``netsculpt.search(...)`` calls :func:`netsculpt.search.api.search`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from netsculpt.search.api import search

        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
