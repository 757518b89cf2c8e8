"""``ns.save`` / ``ns.load``: a pruned model as a plan (JSON) plus weights (safetensors).

A save folder holds three files, and a fourth when example inputs are saved with it::

    netsculpt.json       manifest: format, base model reference, SHA-256 of the others
    plan.json            the plan (kept indices, attribute updates)
    model.safetensors    the pruned model's weights
    inputs.safetensors   optional: the example inputs (see :func:`load_inputs`)

Nothing is pickled. Loading builds the unpruned base model (given by the caller, rebuilt
from a transformers config, or from a ``package.module:factory`` string), replays the
plan on it and loads the weights; a file changed after saving is refused.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from netsculpt.errors import ChecksumError, FactoryError, SaveLoadError
from netsculpt.prune.apply import apply, plan_of
from netsculpt.prune.plan import Plan

__all__ = ["base_reference", "load", "load_inputs", "resolve_factory", "save"]

MANIFEST = "netsculpt.json"
PLAN = "plan.json"
WEIGHTS = "model.safetensors"
INPUTS = "inputs.safetensors"
FORMAT = "netsculpt.save/1"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def base_reference(model: nn.Module, factory: str | None = None) -> dict[str, Any]:
    """How to rebuild the unpruned model: a factory string or a transformers config."""
    if factory:
        return {"kind": "factory", "factory": factory}
    config = getattr(model, "config", None)
    if (
        config is not None
        and hasattr(config, "to_dict")
        and type(model).__module__.startswith("transformers.")
    ):
        return {
            "kind": "transformers",
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "config": config.to_dict(),
        }
    return {"kind": "class", "class": f"{type(model).__module__}.{type(model).__qualname__}"}


def resolve_factory(spec: str) -> Any:
    """Import ``package.module:function`` and return the function."""
    if ":" not in spec:
        raise FactoryError(
            f"model factory {spec!r} is not of the form 'package.module:function'; for "
            f"example 'myproject.models:build' where build() returns (model, example_inputs)"
        )
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise FactoryError(
            f"cannot import module {module_name!r} from factory {spec!r}: "
            f"{type(exc).__name__}: {exc}; check the name and that it is on PYTHONPATH"
        ) from exc
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise FactoryError(
                f"module {module_name!r} has no attribute {attr!r} (factory {spec!r}); "
                f"name a function that returns (model, example_inputs)"
            )
    if not callable(fn):
        raise FactoryError(f"factory {spec!r} is not callable")
    return fn


def _rebuild(ref: dict[str, Any]) -> nn.Module:
    kind = ref.get("kind")
    if kind == "factory":
        made = resolve_factory(ref["factory"])()
        return made[0] if isinstance(made, tuple) else made
    if kind == "transformers":
        module_name, _, cls_name = ref["class"].rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), cls_name)
        except Exception as exc:
            raise SaveLoadError(
                f"cannot import {ref['class']} to rebuild the base model: {exc}; install the "
                f"transformers version the model was saved with, or pass base=..."
            ) from exc
        config = cls.config_class.from_dict(ref["config"])
        return cls(config)
    raise SaveLoadError(
        f"the save folder does not say how to rebuild its base model ({ref.get('class')}); "
        f"pass base=<a freshly built, unpruned model of that class> to netsculpt.load, or "
        f"save with base_factory='package.module:function'"
    )


def _inputs_layout(example_inputs: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors of the example inputs by key, and how to put them back together."""
    if isinstance(example_inputs, torch.Tensor):
        return {"0": example_inputs}, {"kind": "tensor"}
    if isinstance(example_inputs, (tuple, list)):
        tensors = {str(i): x for i, x in enumerate(example_inputs) if isinstance(x, torch.Tensor)}
        if len(tensors) != len(example_inputs):
            raise SaveLoadError(
                "example inputs given as a tuple must hold only tensors to be saved"
            )
        return tensors, {"kind": "tuple", "n": len(example_inputs)}
    if isinstance(example_inputs, dict):
        tensors = {k: v for k, v in example_inputs.items() if isinstance(v, torch.Tensor)}
        constants = {k: v for k, v in example_inputs.items() if not isinstance(v, torch.Tensor)}
        try:
            json.dumps(constants)
        except TypeError as exc:
            raise SaveLoadError(
                f"example input values must be tensors or JSON values to be saved: {exc}"
            ) from exc
        return tensors, {"kind": "dict", "keys": list(example_inputs), "constants": constants}
    raise SaveLoadError(f"cannot save example inputs of type {type(example_inputs).__name__}")


def load_inputs(path: str | Path) -> Any:
    """The example inputs saved beside a model (None when none were saved)."""
    from safetensors.torch import load_file

    folder = Path(path)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SaveLoadError(
            f"cannot read {str(folder / MANIFEST)!r} ({exc}); pass a folder written by "
            f"netsculpt.save"
        ) from exc
    layout = manifest.get("inputs")
    if not layout:
        return None
    file = folder / INPUTS
    if not file.is_file():
        raise SaveLoadError(f"{str(file)!r} is missing from the save folder; save again")
    if _sha256(file) != manifest.get("files", {}).get(INPUTS):
        raise ChecksumError(f"{str(file)!r} changed after it was saved; refusing to load it")
    tensors = load_file(str(file))
    if layout["kind"] == "tensor":
        return tensors["0"]
    if layout["kind"] == "tuple":
        return tuple(tensors[str(i)] for i in range(layout["n"]))
    return {k: tensors[k] if k in tensors else layout["constants"][k] for k in layout["keys"]}


def save(
    model: nn.Module,
    path: str | Path,
    *,
    base_factory: str | None = None,
    plan: Plan | None = None,
    example_inputs: Any = None,
) -> Path:
    """Write ``model`` (pruned by netsculpt or not) to the folder ``path``.

    Args:
        model: the model; a model made by :func:`netsculpt.apply` carries its plan.
        path: folder to create (files in it are overwritten).
        base_factory: ``"package.module:function"`` that rebuilds the unpruned base model,
            so that ``netsculpt.load(path)`` needs no ``base``. Models built from a
            transformers config are rebuilt from the saved config without it.
        plan: the plan to write; by default the one the model carries (a model netsculpt
            did not prune is written with an identity plan).
        example_inputs: optionally saved beside the model (safetensors), so that the
            command line can measure and export the folder without a factory.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    the_plan = plan or plan_of(model) or Plan(tensors={}, shapes={}, meta={"identity": True})
    ref = base_reference(model, base_factory)
    plan_path = folder / PLAN
    plan_path.write_text(the_plan.to_json(indent=1))
    weights_path = folder / WEIGHTS
    save_model(model, str(weights_path))
    files = {PLAN: _sha256(plan_path), WEIGHTS: _sha256(weights_path)}
    layout: dict[str, Any] | None = None
    if example_inputs is not None:
        from safetensors.torch import save_file

        tensors, layout = _inputs_layout(example_inputs)
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(folder / INPUTS))
        files[INPUTS] = _sha256(folder / INPUTS)
    manifest = {
        "format": FORMAT,
        "base": ref,
        "files": files,
        "inputs": layout,
        "torch": torch.__version__,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return folder


def load(path: str | Path, *, base: nn.Module | None = None, strict: bool = True) -> nn.Module:
    """Rebuild a model saved by :func:`save`; it is returned in eval mode.

    Args:
        path: the save folder.
        base: a freshly built, unpruned model of the saved architecture. Optional when the
            folder names a factory or a transformers config.
        strict: refuse weights that do not match the rebuilt model exactly.
    """
    folder = Path(path)
    manifest_path = folder / MANIFEST
    if not folder.is_dir():
        raise SaveLoadError(
            f"save folder {str(folder)!r} does not exist; pass the folder written by netsculpt.save"
        )
    if not manifest_path.is_file():
        raise SaveLoadError(
            f"{str(folder)!r} has no {MANIFEST}; it was not written by netsculpt.save (or the "
            f"manifest was deleted)"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise SaveLoadError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise SaveLoadError(
            f"{manifest_path} has format {manifest.get('format')!r}, expected {FORMAT!r}"
        )
    for name, digest in manifest.get("files", {}).items():
        file = folder / name
        if not file.is_file():
            raise SaveLoadError(f"{str(file)!r} is missing from the save folder; save again")
        if _sha256(file) != digest:
            raise ChecksumError(
                f"{str(file)!r} changed after it was saved (SHA-256 mismatch); refusing to load "
                f"it. Restore the original file or save the model again"
            )
    for required in (PLAN, WEIGHTS):
        if required not in manifest.get("files", {}):
            raise SaveLoadError(f"the manifest in {str(folder)!r} does not list {required}")
    the_plan = Plan.from_json((folder / PLAN).read_text())
    model = base if base is not None else _rebuild(manifest.get("base", {}))
    changes = the_plan.tensors or the_plan.attrs or the_plan.removed
    small = apply(model, the_plan) if changes else model
    try:
        load_model(small, str(folder / WEIGHTS), strict=strict)
    except RuntimeError as exc:
        raise SaveLoadError(
            f"the weights in {str(folder)!r} do not fit the rebuilt model: {exc}; pass the same "
            f"base architecture the model was pruned from"
        ) from exc
    small.eval()
    return small
