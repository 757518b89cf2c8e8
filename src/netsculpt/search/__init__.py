"""netsculpt.search: search spaces, Optuna studies, Pareto fronts and the predictor.

>>> from netsculpt.search import SearchSpace, Predictor
>>> SearchSpace(tie="layer", min_keep=0.5).tie
'layer'
"""

from __future__ import annotations

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
