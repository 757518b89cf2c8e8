"""netsculpt.reporting: the HTML report of a search (``ns.report``) and static PNG plots."""

from __future__ import annotations

from typing import Any

__all__ = ["report"]


def __getattr__(name: str) -> Any:
    if name == "report":
        from netsculpt.reporting.html import report

        return report
    raise AttributeError(f"module 'netsculpt.reporting' has no attribute {name!r}")
