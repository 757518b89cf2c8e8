"""Factory strings: the one place netsculpt turns a string into code to call.

Two forms are understood::

    package.module:attribute          imported with importlib; attribute may be dotted
    path/to/file.py:attribute         executed from the file, only where the caller allows it

:func:`resolve` imports (and so runs) code. It decides nothing about trust: each caller
checks first that the string is one the user typed or one read from data with
``trust_code=True`` (``tasks.registry.task_from_data``, ``studies._specs.check_stored_model_spec``,
``export.save.load``). This module imports nothing from netsculpt but its errors, so any
layer can use it.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from netsculpt.errors import FactoryError

__all__ = ["is_dotted_spec", "is_file_spec", "resolve"]

#: ``package.module:attribute`` with Python identifiers only (no paths, no spaces)
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
#: a dotted attribute path, the part after the colon
_ATTRIBUTE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_MISSING = object()


def is_dotted_spec(spec: Any) -> bool:
    """Whether ``spec`` is ``package.module:attribute`` made of Python identifiers only."""
    return isinstance(spec, str) and _DOTTED.fullmatch(spec) is not None


def is_file_spec(spec: str) -> bool:
    """Whether ``spec`` names a Python file (``path/to/file.py:factory``) or a path at all."""
    module = spec.rpartition(":")[0] or spec
    return module.endswith(".py") or "/" in module or "\\" in module or module.startswith(".")


def resolve(
    spec: Any,
    *,
    what: str,
    expects: str,
    allow_files: bool = False,
    builtins: Iterable[str] = (),
) -> Any:
    """The callable that ``spec`` names, importing its module (which runs its code).

    Args:
        spec: ``"package.module:attribute"`` (attribute may be dotted, ``"mod:Class.build"``),
            or with ``allow_files`` also ``"path/to/file.py:attribute"``.
        what: how error messages name the string (``"task factory"``, ``"model spec"``).
        expects: what the attribute should be, for the fix in error messages
            (``"a function returning (model, example_inputs)"``).
        allow_files: accept the file form. Pass True only for a string the user typed.
        builtins: names the caller accepts besides factory strings, listed when ``spec`` is
            malformed.

    Raises:
        FactoryError: ``spec`` is malformed, names a file where files are not allowed, its
            module or file cannot be imported (whatever the module raised is chained), it has
            no such attribute, or the attribute is not callable.
    """
    module_name, attr = _split(
        spec, what=what, expects=expects, allow_files=allow_files, builtins=builtins
    )
    is_file = module_name.endswith(".py")
    try:
        if is_file:
            module = _import_file(spec, module_name, what=what)
        else:
            module = importlib.import_module(module_name)
    except FactoryError:
        raise
    except Exception as exc:  # an import error, or whatever the module raised while running
        raise FactoryError(
            f"cannot import {what} {_short(spec)}: {'file' if is_file else 'module'} "
            f"{module_name!r} could not be imported ({type(exc).__name__}: "
            f"{_short(str(exc), quote=False)}); "
            + (
                "check the file and what it imports"
                if is_file
                else "check the spelling and that its package is installed or on PYTHONPATH"
            )
        ) from exc
    found: Any = module
    for part in attr.split("."):
        found = getattr(found, part, _MISSING)
        if found is _MISSING:
            raise FactoryError(
                f"{what} {_short(spec)} names no callable {attr!r}: module {module_name!r} has "
                f"no attribute {attr!r}; point it at {expects}"
            )
    if not callable(found):
        raise FactoryError(
            f"{what} {_short(spec)} names no callable {attr!r}: it is {_short(found, 80)} "
            f"({type(found).__name__}), not a function or class; point it at {expects}"
        )
    return found


def _split(
    spec: Any, *, what: str, expects: str, allow_files: bool, builtins: Iterable[str]
) -> tuple[str, str]:
    """``(module or file path, attribute)``, or FactoryError naming the forms accepted."""
    module_name, sep, attr = spec.rpartition(":") if isinstance(spec, str) else ("", "", "")
    is_file = module_name.endswith(".py") and len(module_name) > len(".py")
    if is_file and not allow_files and _ATTRIBUTE.fullmatch(attr):
        raise FactoryError(
            f"{what} {_short(spec)} names the Python file {module_name!r}, which is not "
            f"accepted here; pass 'package.module:factory' (a module on PYTHONPATH)"
        )
    if sep and _ATTRIBUTE.fullmatch(attr) and (is_file or _ATTRIBUTE.fullmatch(module_name)):
        return module_name, attr
    forms = "'package.module:factory'" + (" or 'path/to/file.py:factory'" if allow_files else "")
    names = ", ".join(builtins)
    start = (
        f"is neither a built-in name ({names}) nor of the form {forms}"
        if names
        else f"is not of the form {forms}"
    )
    raise FactoryError(
        f"{what} {_short(spec)} {start}; write e.g. 'mypkg.models:build' where build is {expects}"
    )


def _import_file(spec: str, path: str, *, what: str) -> Any:
    """The module executed from ``path``, once per resolved path and process."""
    file = Path(path)
    if not file.is_file():
        raise FactoryError(f"{what} {_short(spec)}: file {path!r} does not exist; check the path")
    resolved = str(file.resolve())
    name = f"_netsculpt_factory_{zlib.crc32(resolved.encode()):08x}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, file)
    if module_spec is None or module_spec.loader is None:
        raise FactoryError(f"{what} {_short(spec)}: file {path!r} cannot be imported as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _short(value: Any, limit: int = 200, *, quote: bool = True) -> str:
    text = repr(value) if quote else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
