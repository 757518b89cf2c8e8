"""netsculpt.report: the HTML report of a search and its plots.

Calling the package, ``netsculpt.report(front, "report.html")``, is ``ns.report``: once
this package is imported, Python binds ``netsculpt.report`` to the package rather than to
the function, so the package forwards calls to :func:`netsculpt.report.html.report`.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["report"]


def __getattr__(name: str) -> Any:
    if name == "report":
        from netsculpt.report.html import report

        return report
    raise AttributeError(f"module 'netsculpt.report' has no attribute {name!r}")


class _CallablePackage(types.ModuleType):
    """``netsculpt.report(...)`` calls :func:`netsculpt.report.html.report`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from netsculpt.report.html import report

        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
