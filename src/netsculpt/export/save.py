"""``ns.save`` / ``ns.load``: a pruned model as a plan (JSON) plus weights (safetensors).

A save folder holds three files, and a fourth when example inputs are saved with it::

    netsculpt.json       manifest: format, base model reference, SHA-256 of the others
    plan.json            the plan (kept indices, attribute updates)
    model.safetensors    the pruned model's weights, with the SHA-256 of plan.json
    inputs.safetensors   optional: the example inputs (see :func:`load_inputs`)

Nothing is pickled. Loading builds the unpruned base model (given by the caller, rebuilt
from a transformers config, or, only when the caller trusts the folder, from a
``package.module:factory`` string), replays the plan on it and loads the weights.

A save folder is data. :func:`load` and :func:`load_inputs` never import, call or unpickle
anything the folder names unless the caller passes ``trust_code=True``; the transformers kind
accepts only model classes that ``transformers`` itself exports, looked up by name. Every
file is checked before anything is allocated: JSON size and depth are bounded, the manifest
and plan are validated field by field, the plan must fit the base model's shapes, the weights'
names, shapes and dtypes must fit the pruned model, and the plan must be the one the weights
were saved with. A folder that fails any check raises :class:`~netsculpt.errors.SaveLoadError`
(or :class:`~netsculpt.errors.PlanError` for a plan that does not fit the base model) naming
the file and field; nothing is half-loaded.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file, save_model
from torch import nn

from netsculpt._checks import check_finite_inputs, check_model
from netsculpt.errors import ChecksumError, FactoryError, InputError, PlanError, SaveLoadError
from netsculpt.export._folder import (
    BUILTIN_BASE_FACTORIES,
    BUILTIN_FACTORIES,
    HEX64,
    MAX_BASE_GROWTH,
    MAX_INPUTS,
    check_bool,
    check_layout,
    check_path,
    field_error,
    header,
    inputs_layout,
    load_weights,
    make_folder,
    member,
    read_bounded,
    read_inputs,
    rebuild_base,
    resolve_factory,
    sha256,
    short,
    verified,
    write_atomic,
)
from netsculpt.pruning._moe_config import base_config_values
from netsculpt.pruning.apply import apply, plan_of
from netsculpt.pruning.plan import MAX_JSON_BYTES, Plan, check_plan_data, parse_json

__all__ = [
    "BUILTIN_BASE_FACTORIES",
    "BUILTIN_FACTORIES",
    "MAX_BASE_GROWTH",
    "MAX_INPUTS",
    "base_reference",
    "load",
    "load_inputs",
    "read_manifest",
    "resolve_factory",
    "save",
]

MANIFEST = "netsculpt.json"
PLAN = "plan.json"
WEIGHTS = "model.safetensors"
INPUTS = "inputs.safetensors"
FORMAT = "netsculpt.save/2"
#: folders written before the plan digest was stored in the weights; still read
OLD_FORMATS = ("netsculpt.save/1",)
#: safetensors metadata key holding the SHA-256 of plan.json
PLAN_DIGEST = "netsculpt.plan_sha256"
#: the only files a manifest may list, all in the folder itself
KNOWN_FILES = (PLAN, WEIGHTS, INPUTS)

_MANIFEST_KEYS = frozenset({"format", "base", "files", "inputs", "torch"})
_FACTORY_FORM = re.compile(r"[^:\s]+:[A-Za-z_][\w.]*")


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


# ---------------------------------------------------------------------------------------------
# the manifest


def _check_base(ref: Any, path: Path) -> None:
    if not isinstance(ref, dict):
        raise field_error(path, "'base'", f"must be an object, got {short(ref)}")
    kind = ref.get("kind")
    if kind == "factory":
        spec = ref.get("factory")
        if not isinstance(spec, str) or len(spec) > 1000 or not _FACTORY_FORM.fullmatch(spec):
            raise field_error(
                path, "'base.factory'", f"must be 'package.module:function', got {short(spec)}"
            )
    elif kind == "transformers":
        if not isinstance(ref.get("class"), str):
            raise field_error(
                path, "'base.class'", f"must be a string, got {short(ref.get('class'))}"
            )
        if not isinstance(ref.get("config"), dict):
            raise field_error(path, "'base.config'", "must be an object")
    elif kind == "class":
        if not isinstance(ref.get("class", ""), str):
            raise field_error(path, "'base.class'", "must be a string")
    else:
        raise field_error(
            path, "'base.kind'", f"must be 'factory', 'transformers' or 'class', got {short(kind)}"
        )


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated manifest (``netsculpt.json``) of a save folder.

    Reads nothing but the manifest and runs nothing: it is a JSON object of the expected
    format, its ``files`` name only the known files by their SHA-256, and its ``base`` and
    ``inputs`` fields have the expected types. Raises :class:`SaveLoadError`.
    """
    folder = check_path(path)
    if not folder.is_dir():
        raise SaveLoadError(
            f"save folder {str(folder)!r} does not exist (or is not a folder); pass the folder "
            f"written by netsculpt.save"
        )
    if not (folder / MANIFEST).exists() and not (folder / MANIFEST).is_symlink():
        raise SaveLoadError(
            f"{str(folder)!r} has no {MANIFEST}; it was not written by netsculpt.save (or the "
            f"manifest was deleted)"
        )
    file = member(folder, MANIFEST)
    manifest = parse_json(
        read_bounded(file, MAX_JSON_BYTES), what=repr(str(file)), error=SaveLoadError
    )
    if not isinstance(manifest, dict):
        raise SaveLoadError(
            f"{str(file)!r} holds a JSON {_json_type(manifest)}, not an object; it was not "
            f"written by netsculpt.save"
        )
    found = manifest.get("format")
    if found != FORMAT and found not in OLD_FORMATS:
        raise SaveLoadError(
            f"{str(file)!r} has format {short(found)}, expected {FORMAT!r}; it was not written "
            f"by this version of netsculpt.save"
        )
    unknown = sorted(str(k) for k in manifest if k not in _MANIFEST_KEYS)
    if unknown:
        raise field_error(file, short(unknown[0]), "is not a field of a netsculpt manifest")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise field_error(file, "'files'", f"must be an object, got {short(files)}")
    for name, digest in files.items():
        if name not in KNOWN_FILES:
            raise field_error(
                file,
                f"'files'[{short(name)}]",
                f"names a file netsculpt does not write (only {', '.join(KNOWN_FILES)}, inside "
                f"the folder)",
            )
        if not isinstance(digest, str) or not HEX64.fullmatch(digest):
            raise field_error(file, f"'files'[{name!r}]", "must be a SHA-256 (64 hex digits)")
    for required in (PLAN, WEIGHTS):
        if required not in files:
            raise field_error(file, "'files'", f"does not list {required}")
    _check_base(manifest.get("base"), file)
    check_layout(manifest.get("inputs"), file)
    if manifest.get("inputs") is not None and INPUTS not in files:
        raise field_error(file, "'files'", f"does not list {INPUTS}, which 'inputs' needs")
    if not isinstance(manifest.get("torch", ""), str):
        raise field_error(file, "'torch'", "must be a string")
    return manifest


def _verified_bytes(folder: Path, manifest: Mapping[str, Any], name: str) -> bytes:
    path = member(folder, name)
    data = read_bounded(path, MAX_JSON_BYTES)
    if hashlib.sha256(data).hexdigest() != manifest["files"][name]:
        raise ChecksumError(
            f"{str(path)!r} changed after it was saved (SHA-256 mismatch); refusing to load "
            f"it. Restore the original file or save the model again"
        )
    return data


# ---------------------------------------------------------------------------------------------
# rebuilding the base model


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
        # the config of the unpruned model, on which load replays the plan
        return {
            "kind": "transformers",
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "config": {**config.to_dict(), **base_config_values(model)},
        }
    return {"kind": "class", "class": f"{type(model).__module__}.{type(model).__qualname__}"}


def _rebuild(
    ref: Mapping[str, Any],
    data: Mapping[str, Any],
    table: Mapping[str, tuple[str, tuple[int, ...]]],
    *,
    folder: Path,
    trust_code: bool,
) -> nn.Module:
    model = rebuild_base(
        ref,
        table,
        folder=folder,
        path=folder / MANIFEST,
        trust_code=trust_code,
        plan=data,
        folder_kind="save folder",
        loader="netsculpt.load",
    )
    if model is None:
        raise SaveLoadError(
            f"the save folder does not say how to rebuild its base model "
            f"({short(ref.get('class'))}); pass base=<a freshly built, unpruned model of that "
            f"class> to netsculpt.load, or save with base_factory='package.module:function'"
        )
    return model


# ---------------------------------------------------------------------------------------------
# example inputs


def load_inputs(path: str | os.PathLike[str]) -> Any:
    """The example inputs saved beside a model (None when none were saved)."""
    folder = check_path(path)
    manifest = read_manifest(folder)
    layout = manifest.get("inputs")
    if not layout:
        return None
    return read_inputs(
        verified(folder, manifest, INPUTS),
        layout,
        listed_in="the manifest's",
        again="save the model again",
    )


# ---------------------------------------------------------------------------------------------
# save and load


def _check_plan_fits(model: nn.Module, plan: Plan) -> None:
    """The plan's kept counts give the shapes ``model`` has (tensors still present)."""
    state = model.state_dict(keep_vars=True)
    for name in dict.fromkeys([*plan.tensors, *(g[0] for g in plan.gathers)]):
        t = state.get(name)
        original = plan.shapes.get(name)
        if t is None or original is None or len(original) != t.dim():
            continue
        expected = plan.kept_shape(name)
        if tuple(t.shape) != expected:
            raise InputError(
                f"the plan makes {name!r} of shape {expected}, but the model has "
                f"{tuple(t.shape)}; pass the plan the model was pruned with (or none: a model "
                f"made by netsculpt.apply carries its own)"
            )


def save(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    base_factory: str | None = None,
    plan: Plan | None = None,
    example_inputs: Any = None,
) -> Path:
    """Write ``model`` (pruned by netsculpt or not) to the folder ``path``.

    Args:
        model: the model; a model made by :func:`netsculpt.apply` carries its plan.
        path: folder to create (files in it are overwritten).
        base_factory: ``"package.module:function"`` that rebuilds the unpruned base model.
            Loading runs it only with ``netsculpt.load(path, trust_code=True)`` (or with
            ``base=...``, which does not need it). Models built from a transformers config
            are rebuilt from the saved config without it.
        plan: the plan to write; by default the one the model carries (a model netsculpt
            did not prune is written with an identity plan).
        example_inputs: optionally saved beside the model (safetensors), so that the
            command line can measure and export the folder without a factory.
    """
    import json

    check_model(model)
    folder = check_path(path)
    if base_factory is not None and (
        not isinstance(base_factory, str) or not _FACTORY_FORM.fullmatch(base_factory)
    ):
        raise FactoryError(
            f"base_factory must be 'package.module:function', got {short(base_factory)}; for "
            f"example 'myproject.models:build'"
        )
    if plan is not None and not isinstance(plan, Plan):
        raise InputError(
            f"plan must be a netsculpt.Plan or None, got {type(plan).__name__} ({short(plan)})"
        )
    the_plan = plan or plan_of(model) or Plan(tensors={}, shapes={}, meta={"identity": True})
    _check_plan_fits(model, the_plan)
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] | None = None
    if example_inputs is not None:
        check_finite_inputs(example_inputs)
        tensors, layout = inputs_layout(example_inputs)
    try:
        plan_bytes = the_plan.to_json(indent=1).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InputError(f"the plan cannot be written as JSON: {exc}") from exc
    make_folder(folder, "save folder")
    digest = hashlib.sha256(plan_bytes).hexdigest()
    write_atomic(folder / PLAN, lambda p: p.write_bytes(plan_bytes))
    write_atomic(
        folder / WEIGHTS, lambda p: save_model(model, str(p), metadata={PLAN_DIGEST: digest})
    )
    files = {PLAN: digest, WEIGHTS: sha256(folder / WEIGHTS)}
    if layout is not None:
        contiguous = {k: v.detach().contiguous() for k, v in tensors.items()}
        write_atomic(folder / INPUTS, lambda p: save_file(contiguous, str(p)))
        files[INPUTS] = sha256(folder / INPUTS)
    elif (folder / INPUTS).is_file() or (folder / INPUTS).is_symlink():
        (folder / INPUTS).unlink()  # inputs of an earlier save would not match
    manifest = {
        "format": FORMAT,
        "base": base_reference(model, base_factory),
        "files": files,
        "inputs": layout,
        "torch": torch.__version__,
    }
    text = json.dumps(manifest, indent=1).encode("utf-8")
    write_atomic(folder / MANIFEST, lambda p: p.write_bytes(text))
    return folder


def _shapes_of(model: nn.Module) -> dict[str, tuple[int, ...]]:
    out = {n: tuple(t.shape) for n, t in model.named_parameters(remove_duplicate=False)}
    out.update((n, tuple(t.shape)) for n, t in model.named_buffers(remove_duplicate=False))
    return out


def load(
    path: str | os.PathLike[str],
    *,
    base: nn.Module | None = None,
    strict: bool = True,
    trust_code: bool = False,
) -> nn.Module:
    """Rebuild a model saved by :func:`save`; it is returned in eval mode.

    The folder is data: nothing it names is imported or called unless ``trust_code=True``.

    Args:
        path: the save folder.
        base: a freshly built, unpruned model of the saved architecture. Optional when the
            folder holds a transformers config, or names a factory and ``trust_code=True``.
        strict: refuse weights that do not match the rebuilt model exactly.
        trust_code: run the ``package.module:factory`` the folder names to rebuild its
            base model. Only for folders you trust as you would trust their Python code.

    Raises:
        UntrustedCodeError: the folder needs its factory run and ``trust_code`` is False.
        SaveLoadError: a file is missing, changed, malformed or does not belong to the others.
        PlanError: the plan does not fit the base model.
    """
    folder = check_path(path)
    if base is not None:
        check_model(base, what="base")
    check_bool(strict, "strict")
    check_bool(trust_code, "trust_code")
    manifest = read_manifest(folder)
    plan_path = folder / PLAN
    plan_bytes = _verified_bytes(folder, manifest, PLAN)
    weights = verified(folder, manifest, WEIGHTS)
    metadata, table = header(weights)
    bound = metadata.get(PLAN_DIGEST)
    if bound is None and manifest["format"] == FORMAT:
        raise SaveLoadError(
            f"{str(weights)!r} does not record which plan.json it belongs to; the folder was "
            f"altered after saving: save the model again"
        )
    if bound is not None and bound != hashlib.sha256(plan_bytes).hexdigest():
        raise SaveLoadError(
            f"plan.json does not belong to model.safetensors in {str(folder)!r} (the weights "
            f"were saved with another plan); restore the original plan.json or save again"
        )
    data = parse_json(plan_bytes, what=repr(str(plan_path)), error=SaveLoadError)
    try:  # structure only: the sizes are checked against the base model below
        check_plan_data(data, limit=None)
    except PlanError as exc:
        raise SaveLoadError(f"{str(plan_path)!r}: {exc}") from exc
    if base is not None:
        model = base
    else:
        model = _rebuild(manifest["base"], data, table, folder=folder, trust_code=trust_code)
    the_plan = Plan.from_dict(data, shapes=_shapes_of(model))
    changes = (
        the_plan.tensors
        or the_plan.attrs
        or the_plan.removed
        or the_plan.lowrank
        or the_plan.lists
        or the_plan.gathers
    )
    small = apply(model, the_plan, inplace=base is None) if changes else model
    load_weights(
        small,
        weights,
        table,
        strict=strict,
        misfit=lambda exc: (
            f"the weights in {str(weights)!r} do not fit the rebuilt model: "
            f"{short(str(exc), 300)}; pass the same base architecture the model was pruned from"
        ),
    )
    small.eval()
    return small
