"""Model specs: built-in names and ``"package.module:factory"`` strings, and who may run them.

A spec the caller typed (an argument of ``ns.search`` or ``Front.load``, a command-line
argument) is the caller's own code: it is imported and called, and the command line also
takes ``path/to/file.py:factory``. A spec read from a study is data: a built-in name is
fine, a ``module:factory`` string runs only with ``trust_code=True`` (``--trust-code``), and
a file path is never executed (:func:`check_stored_model_spec`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from netsculpt._factories import is_dotted_spec, is_file_spec, resolve
from netsculpt.errors import FactoryError, UntrustedCodeError

__all__ = [
    "BUILTIN_MODELS",
    "check_stored_model_spec",
    "is_file_spec",
    "resolve_model",
]

#: built-in model names: each is the pretrained model of the task of the same name
BUILTIN_MODELS = ("digits", "minilm", "mnist1d")
#: longest spec accepted from a study
_MAX_SPEC = 500


def check_stored_model_spec(spec: Any, *, study: str, trust_code: bool) -> str:
    """Refuse to run a model spec read from study ``study`` unless it is safe or trusted.

    Returns the spec when it may be resolved: a built-in name, or (with ``trust_code``) a
    ``package.module:factory`` string.

    Raises:
        UntrustedCodeError: the spec names code (a factory or a file) and the caller did not
            opt in, or names a file (never executed from a study).
    """
    shown = _short(spec)
    how = (
        "pass the base model yourself: Front.load(storage, study_name, model=your_model) in "
        "Python, or --model 'package.module:factory' on the command line"
    )
    if not isinstance(spec, str) or not spec.strip() or len(spec) > _MAX_SPEC:
        raise UntrustedCodeError(
            f"study {study!r} stores the model spec {shown}, which is not a model name; {how}"
        )
    if spec in BUILTIN_MODELS:
        return spec
    if is_file_spec(spec):
        raise UntrustedCodeError(
            f"study {study!r} names the Python file {shown} as its model; netsculpt never runs "
            f"a file named by a study, even with trust_code=True; {how}"
        )
    if not is_dotted_spec(spec):
        raise UntrustedCodeError(
            f"study {study!r} stores the model spec {shown}, which is neither a built-in name "
            f"({', '.join(BUILTIN_MODELS)}) nor 'package.module:factory'; {how}"
        )
    if not trust_code:
        raise UntrustedCodeError(
            f"study {study!r} names the model factory {shown}, which netsculpt would import "
            f"and call; a study is data and runs no code unless you opt in: pass "
            f"trust_code=True (--trust-code) if you trust whoever wrote the study, or {how}"
        )
    return spec


def resolve_model(spec: str, *, allow_files: bool = True) -> tuple[nn.Module, Any]:
    """``(model, example_inputs)`` from a built-in name or a ``"module:factory"`` string.

    ``spec`` is one the caller typed; ``allow_files`` also accepts ``path/to/file.py:factory``
    (never pass a spec read from data here without :func:`check_stored_model_spec`).

    Raises:
        FactoryError: the string is malformed, does not import, or the factory does not
            return ``(nn.Module, example_inputs)``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise FactoryError(
            f"model spec {spec!r} is empty; use a built-in name ({', '.join(BUILTIN_MODELS)}) "
            f"or 'package.module:factory'"
        )
    spec = spec.strip()
    if spec in BUILTIN_MODELS:
        from netsculpt.tasks.registry import get_task

        task = get_task(spec)
        return task.pretrained_model(), task.example_inputs()
    factory = resolve(
        spec,
        what="model spec",
        expects="a function returning (model, example_inputs)",
        allow_files=allow_files,
        builtins=BUILTIN_MODELS,
    )
    attr = spec.rpartition(":")[2]
    try:
        result = factory()
    except Exception as exc:
        raise FactoryError(
            f"model spec {spec!r}: calling {attr}() raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(result, tuple) or len(result) != 2 or not isinstance(result[0], nn.Module):
        raise FactoryError(
            f"model spec {spec!r}: {attr}() returned {type(result).__name__}, not "
            f"(nn.Module, example_inputs); return e.g. (model, torch.randn(1, 3, 224, 224))"
        )
    return result[0], result[1]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
