"""netsculpt.studies: study configs, search spaces, Optuna studies, Pareto fronts, predictor.

>>> from netsculpt.studies import SearchSpace, Predictor
>>> SearchSpace(tie="layer", min_keep=0.5).tie
'layer'
"""

from __future__ import annotations

from typing import Any

from netsculpt.studies.config import StudyConfig
from netsculpt.studies.predictor import Predictor
from netsculpt.studies.space import SearchSpace

__all__ = ["Front", "FrontTrial", "Predictor", "SearchSpace", "StudyConfig", "search"]


def __getattr__(name: str) -> Any:
    if name in ("Front", "FrontTrial"):
        from netsculpt.studies import front

        return getattr(front, name)
    if name == "search":
        from netsculpt.studies.api import search

        return search
    raise AttributeError(f"module 'netsculpt.studies' has no attribute {name!r}")
