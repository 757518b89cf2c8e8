"""The ``netsculpt`` command line, a thin layer over the public API.

:mod:`netsculpt.cli.app` holds the analyse / prune / measure / export / demo commands,
:mod:`netsculpt.cli.studies` the search / pareto / report commands and the study side of
export. The library never imports this package.
"""

from __future__ import annotations

from netsculpt.cli.app import app, main

__all__ = ["app", "main"]
