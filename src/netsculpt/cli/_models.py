"""The MODEL argument of the commands: the model it gives, and the base factory a folder
written from it names.

MODEL is a built-in name (``digits``, ``minilm``, ``mnist1d``), ``package.module:factory``
(also ``path/to/file.py:factory``), a function returning ``(model, example_inputs)``, a save
folder written by ``netsculpt prune``/``export``, or (for the commands that take one) a
super-network folder. A string typed on the command line is trusted: it is the user's own
code. A folder is data: it runs what it names only with ``--trust-code`` (netsculpt's own
built-in factories excepted).

A folder written from MODEL names the factory that rebuilds its unpruned base model: the
built-in model's own (:data:`netsculpt.export.save.BUILTIN_BASE_FACTORIES`, the one list of
them), or the ``package.module:factory`` string itself. A file path is never written as a
factory (a folder's file path is never run), and a transformers model is rebuilt from its
saved config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from torch import nn

from netsculpt.errors import FactoryError

__all__ = [
    "ModelArg",
    "TrustCode",
    "base_factory_of",
    "load_model_spec",
    "load_supernet_folder",
    "supernet_base_factory",
    "supernet_folder",
]

#: the MODEL argument of every command that takes a model
ModelArg = Annotated[
    str,
    typer.Argument(
        help="built-in name (digits, minilm, mnist1d), 'package.module:factory' or a netsculpt "
        "save folder"
    ),
]
#: the ``--trust-code`` option of every command whose MODEL may be a folder
TrustCode = Annotated[
    bool,
    typer.Option(
        "--trust-code/--no-trust-code",
        help="let a save or super-network folder run the model factory it names to rebuild "
        "its base model (only for folders you trust like your own code; off by default)",
    ),
]


def load_model_spec(spec: str, *, trust_code: bool = False) -> tuple[nn.Module, Any]:
    """``(model, example_inputs)`` from a built-in name, a factory string or a save folder.

    A save folder's factory is run only with ``trust_code=True`` (``--trust-code``).
    """
    folder = Path(spec)
    if folder.is_dir():
        from netsculpt.export.save import MANIFEST, load, load_inputs

        if not (folder / MANIFEST).exists():
            raise FactoryError(
                f"{spec!r} is a folder but not a netsculpt save folder (no {MANIFEST}); pass a "
                f"built-in name, 'package.module:factory' or a folder written by 'netsculpt "
                f"prune --out' or 'netsculpt export'"
            )
        model = load(folder, trust_code=trust_code)
        inputs = load_inputs(folder)
        if inputs is None:
            raise FactoryError(
                f"save folder {spec!r} holds no example inputs; save with "
                f"ns.save(model, path, example_inputs=...) or pass a factory instead"
            )
        return model, inputs
    from netsculpt.studies._specs import resolve_model

    return resolve_model(spec)


def base_factory_of(spec: str) -> str | None:
    """The factory a folder written from the model ``spec`` names for its base model: a
    built-in model's own, or ``spec`` itself when it is ``package.module:factory``; None
    otherwise (the folder then needs ``base=``, or rebuilds a transformers model from its
    config)."""
    from netsculpt._factories import is_dotted_spec
    from netsculpt.export.save import BUILTIN_BASE_FACTORIES

    if spec in BUILTIN_BASE_FACTORIES:
        return BUILTIN_BASE_FACTORIES[spec]
    return spec if is_dotted_spec(spec) and not Path(spec).is_dir() else None


def supernet_folder(spec: str | None) -> Path | None:
    """``spec`` as a super-network folder (it holds ``elastic.json``), else None."""
    if not spec:
        return None
    from netsculpt.supernets.io import DESCRIPTION

    folder = Path(spec)
    return folder if folder.is_dir() and (folder / DESCRIPTION).exists() else None


def load_supernet_folder(folder: Path, *, base: str | None, trust_code: bool) -> Any:
    """The super-network of ``folder``, its base model built from ``--base`` when given."""
    from netsculpt.studies._specs import resolve_model
    from netsculpt.supernets.io import load_supernet

    model = resolve_model(base)[0] if base is not None else None
    return load_supernet(folder, base=model, trust_code=trust_code)


def supernet_base_factory(folder: Path, base: str | None = None) -> str | None:
    """The factory a folder written from the super-network in ``folder`` names: the one
    ``folder`` names, else the one of the ``--base`` model typed (None without either)."""
    from netsculpt.supernets.io import read_description

    ref = read_description(folder)["base"]
    if ref["kind"] == "factory":
        return str(ref["factory"])
    return base_factory_of(base) if base is not None else None
