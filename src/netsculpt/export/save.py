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

import contextlib
import hashlib
import keyword
import os
import re
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from netsculpt._checks import check_finite_inputs, check_model
from netsculpt._factories import resolve
from netsculpt.errors import (
    ChecksumError,
    FactoryError,
    InputError,
    PlanError,
    SaveLoadError,
    UntrustedCodeError,
)
from netsculpt.pruning.apply import apply, plan_of
from netsculpt.pruning.plan import MAX_JSON_BYTES, Plan, check_plan_data, parse_json

__all__ = [
    "BUILTIN_FACTORIES",
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
#: factories that are part of netsculpt itself: loading runs them without trust_code
BUILTIN_FACTORIES = frozenset(
    {"netsculpt.tasks.digits:DigitsCNN", "netsculpt.tasks.mnist1d:ResNet1D"}
)
#: how many times larger than its saved weights a rebuilt transformers base model may be
MAX_BASE_GROWTH = 64
#: the most tensors or keys saved example inputs may have
MAX_INPUTS = 256

_MANIFEST_KEYS = frozenset({"format", "base", "files", "inputs", "torch"})
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FACTORY_FORM = re.compile(r"[^:\s]+:[A-Za-z_][\w.]*")
# config fields that make transformers load code or kernels from elsewhere: never read
_UNSAFE_CONFIG_KEYS = frozenset(
    {
        "auto_map",
        "trust_remote_code",
        "custom_pipelines",
        "attn_implementation",
        "experts_implementation",
        "quantization_config",
    }
)
_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# argument checks


def _check_path(path: Any, what: str = "path") -> Path:
    if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
        raise InputError(
            f"{what} must be a folder path (str or pathlib.Path), got {type(path).__name__} "
            f"({_short(path)})"
        )
    text = os.fspath(path)
    if not isinstance(text, str) or not text or "\0" in text:
        raise InputError(f"{what} must be a non-empty folder path, got {_short(text)}")
    return Path(text)


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, got {_short(value)}")
    return value


# ---------------------------------------------------------------------------------------------
# the folder's files


def _member(folder: Path, name: str) -> Path:
    """``folder / name`` when it is a regular file in the folder itself (never a link)."""
    path = folder / name
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise SaveLoadError(
            f"{str(path)!r} is missing from the save folder; save the model again"
        ) from None
    except OSError as exc:
        raise SaveLoadError(f"cannot read {str(path)!r}: {exc}") from exc
    if stat.S_ISLNK(info.st_mode):
        raise SaveLoadError(
            f"{str(path)!r} is a symbolic link; netsculpt reads only regular files inside a "
            f"save folder: copy the file itself into the folder"
        )
    if not stat.S_ISREG(info.st_mode):
        raise SaveLoadError(f"{str(path)!r} is not a regular file; save the model again")
    if path.resolve().parent != folder.resolve():
        raise SaveLoadError(f"{str(path)!r} resolves outside the save folder; refusing to read it")
    return path


def _read_bounded(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise SaveLoadError(f"cannot read {str(path)!r}: {exc}") from exc
    if len(data) > limit:
        raise SaveLoadError(
            f"{str(path)!r} is larger than the {limit} bytes netsculpt reads; it is not a file "
            f"netsculpt wrote"
        )
    return data


def _field_error(path: Path, field: str, problem: str) -> SaveLoadError:
    return SaveLoadError(
        f"{str(path)!r}: field {field} {problem}; the manifest is damaged or was not written by "
        f"netsculpt.save (save the model again)"
    )


def _check_layout(layout: Any, path: Path) -> None:
    """The ``inputs`` field: how saved example inputs are put back together."""
    if layout is None:
        return
    if not isinstance(layout, dict):
        raise _field_error(path, "'inputs'", f"must be an object or null, got {_short(layout)}")
    kind = layout.get("kind")
    if kind == "tensor" and set(layout) == {"kind"}:
        return
    if kind == "tuple" and set(layout) == {"kind", "n"}:
        n = layout["n"]
        if type(n) is not int or not 0 <= n <= MAX_INPUTS:
            raise _field_error(path, "'inputs.n'", f"must be an integer in [0, {MAX_INPUTS}]")
        return
    if kind == "dict" and set(layout) == {"kind", "keys", "constants"}:
        keys, constants = layout["keys"], layout["constants"]
        if (
            not isinstance(keys, list)
            or len(keys) > MAX_INPUTS
            or not all(isinstance(k, str) for k in keys)
            or len(set(keys)) != len(keys)
        ):
            raise _field_error(
                path, "'inputs.keys'", f"must be at most {MAX_INPUTS} distinct strings"
            )
        if not isinstance(constants, dict) or not set(constants) <= set(keys):
            raise _field_error(path, "'inputs.constants'", "must be an object keyed by inputs.keys")
        return
    raise _field_error(
        path, "'inputs'", f"is not a known layout (kind {_short(kind)}, fields {sorted(layout)})"
    )


def _check_base(ref: Any, path: Path) -> None:
    if not isinstance(ref, dict):
        raise _field_error(path, "'base'", f"must be an object, got {_short(ref)}")
    kind = ref.get("kind")
    if kind == "factory":
        spec = ref.get("factory")
        if not isinstance(spec, str) or len(spec) > 1000 or not _FACTORY_FORM.fullmatch(spec):
            raise _field_error(
                path, "'base.factory'", f"must be 'package.module:function', got {_short(spec)}"
            )
    elif kind == "transformers":
        if not isinstance(ref.get("class"), str):
            raise _field_error(
                path, "'base.class'", f"must be a string, got {_short(ref.get('class'))}"
            )
        if not isinstance(ref.get("config"), dict):
            raise _field_error(path, "'base.config'", "must be an object")
    elif kind == "class":
        if not isinstance(ref.get("class", ""), str):
            raise _field_error(path, "'base.class'", "must be a string")
    else:
        raise _field_error(
            path, "'base.kind'", f"must be 'factory', 'transformers' or 'class', got {_short(kind)}"
        )


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated manifest (``netsculpt.json``) of a save folder.

    Reads nothing but the manifest and runs nothing: it is a JSON object of the expected
    format, its ``files`` name only the known files by their SHA-256, and its ``base`` and
    ``inputs`` fields have the expected types. Raises :class:`SaveLoadError`.
    """
    folder = _check_path(path)
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
    file = _member(folder, MANIFEST)
    manifest = parse_json(
        _read_bounded(file, MAX_JSON_BYTES), what=repr(str(file)), error=SaveLoadError
    )
    if not isinstance(manifest, dict):
        raise SaveLoadError(
            f"{str(file)!r} holds a JSON {_json_type(manifest)}, not an object; it was not "
            f"written by netsculpt.save"
        )
    found = manifest.get("format")
    if found != FORMAT and found not in OLD_FORMATS:
        raise SaveLoadError(
            f"{str(file)!r} has format {_short(found)}, expected {FORMAT!r}; it was not written "
            f"by this version of netsculpt.save"
        )
    unknown = sorted(str(k) for k in manifest if k not in _MANIFEST_KEYS)
    if unknown:
        raise _field_error(file, _short(unknown[0]), "is not a field of a netsculpt manifest")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise _field_error(file, "'files'", f"must be an object, got {_short(files)}")
    for name, digest in files.items():
        if name not in KNOWN_FILES:
            raise _field_error(
                file,
                f"'files'[{_short(name)}]",
                f"names a file netsculpt does not write (only {', '.join(KNOWN_FILES)}, inside "
                f"the folder)",
            )
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise _field_error(file, f"'files'[{name!r}]", "must be a SHA-256 (64 hex digits)")
    for required in (PLAN, WEIGHTS):
        if required not in files:
            raise _field_error(file, "'files'", f"does not list {required}")
    _check_base(manifest.get("base"), file)
    _check_layout(manifest.get("inputs"), file)
    if manifest.get("inputs") is not None and INPUTS not in files:
        raise _field_error(file, "'files'", f"does not list {INPUTS}, which 'inputs' needs")
    if not isinstance(manifest.get("torch", ""), str):
        raise _field_error(file, "'torch'", "must be a string")
    return manifest


def _verified(folder: Path, manifest: Mapping[str, Any], name: str) -> Path:
    path = _member(folder, name)
    if _sha256(path) != manifest["files"][name]:
        raise ChecksumError(
            f"{str(path)!r} changed after it was saved (SHA-256 mismatch); refusing to load "
            f"it. Restore the original file or save the model again"
        )
    return path


def _verified_bytes(folder: Path, manifest: Mapping[str, Any], name: str) -> bytes:
    path = _member(folder, name)
    data = _read_bounded(path, MAX_JSON_BYTES)
    if hashlib.sha256(data).hexdigest() != manifest["files"][name]:
        raise ChecksumError(
            f"{str(path)!r} changed after it was saved (SHA-256 mismatch); refusing to load "
            f"it. Restore the original file or save the model again"
        )
    return data


def _header(path: Path) -> tuple[dict[str, str], dict[str, tuple[str, tuple[int, ...]]]]:
    """The metadata and tensor table (dtype, shape) of a safetensors file, data unread."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            table = {}
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                piece = f.get_slice(key)
                table[key] = (str(piece.get_dtype()), tuple(int(s) for s in piece.get_shape()))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise SaveLoadError(
            f"{str(path)!r} is not a readable safetensors file ({_short(str(exc), 200)}); save "
            f"the model again"
        ) from exc
    return metadata, table


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
        return {
            "kind": "transformers",
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "config": config.to_dict(),
        }
    return {"kind": "class", "class": f"{type(model).__module__}.{type(model).__qualname__}"}


def resolve_factory(spec: str) -> Any:
    """Import ``package.module:function`` and return the function (dotted paths allowed).

    This imports and runs code: call it only with a string the user typed or wrote in their
    own code, never with one read from a file (``netsculpt.load`` does so only with
    ``trust_code=True``).

    Raises:
        FactoryError: the string is malformed, its module does not import, or it names no
            callable.
    """
    return resolve(
        spec,
        what="model factory",
        expects="a function returning the model or (model, example_inputs)",
    )


def _call_factory(spec: str) -> nn.Module:
    fn = resolve_factory(spec)
    try:
        made = fn()
    except Exception as exc:
        raise FactoryError(
            f"factory {spec!r} raised {type(exc).__name__}: {_short(str(exc), 200)}"
        ) from exc
    model = made[0] if isinstance(made, tuple) and made else made
    if not isinstance(model, nn.Module):
        raise FactoryError(
            f"factory {spec!r} returned {type(made).__name__}, not a model or "
            f"(model, example_inputs)"
        )
    return model


def _transformers_class(spec: str, path: Path) -> Any:
    """A model class that ``transformers`` itself exports, found by name: nothing imported."""
    name = spec.rpartition(".")[2]
    if (
        not spec.startswith("transformers.")
        or not name.isidentifier()
        or keyword.iskeyword(name)
        or name.startswith("_")
    ):
        raise SaveLoadError(
            f"{str(path)!r}: base.class {_short(spec)} is not a transformers model class; "
            f"pass base=<a freshly built, unpruned model> to netsculpt.load"
        )
    try:
        import transformers
    except ImportError as exc:
        raise SaveLoadError(
            f"the save folder holds a transformers model ({name}); install transformers, or pass "
            f"base=<a freshly built, unpruned model> to netsculpt.load"
        ) from exc
    try:
        cls = getattr(transformers, name)
    except Exception as exc:  # noqa: BLE001 - transformers' lazy import may raise anything
        raise SaveLoadError(
            f"{str(path)!r}: base.class {spec!r}: transformers {transformers.__version__} "
            f"exports no {name!r} ({type(exc).__name__}); install the transformers version the "
            f"model was saved with, or pass base=..."
        ) from exc
    if not isinstance(cls, type) or not issubclass(cls, transformers.PreTrainedModel):
        raise SaveLoadError(
            f"{str(path)!r}: base.class {spec!r} names transformers.{name}, which is not a model "
            f"class (a subclass of transformers.PreTrainedModel); pass base=... instead"
        )
    return cls


def _safe_config(value: Any) -> Any:
    """A config dict without the fields that make transformers fetch or import code."""
    if isinstance(value, dict):
        return {
            k: _safe_config(v)
            for k, v in value.items()
            if isinstance(k, str) and not k.startswith("_") and k not in _UNSAFE_CONFIG_KEYS
        }
    if isinstance(value, list):
        return [_safe_config(v) for v in value]
    return value


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _check_probe(
    probe: nn.Module,
    data: Mapping[str, Any],
    table: Mapping[str, tuple[str, tuple[int, ...]]],
    path: Path,
) -> None:
    """The base model built on the meta device fits the plan and weights (no allocation).

    Every tensor the plan or the weights name has the shape they expect, and the whole base
    model is at most :data:`MAX_BASE_GROWTH` times the size of the saved weights (whose
    size the file itself bounds), so the real build cannot be made arbitrarily large.
    """
    declared = {name: tuple(shape) for name, shape in data["shapes"].items()}
    replaced = [m for m, _ in data.get("removed", [])] + [m for m, _ in data.get("lowrank", [])]
    saved = sum(_numel(s) for _, s in table.values())
    total = 0
    seen: set[int] = set()
    tensors: list[tuple[str, torch.Tensor]] = [*probe.named_parameters(remove_duplicate=False)]
    tensors += [*probe.named_buffers(remove_duplicate=False)]
    for name, t in tensors:
        shape = tuple(t.shape)
        inside = any(name.startswith(m + ".") for m in replaced)
        expected = declared.get(name) or (table[name][1] if name in table and not inside else None)
        if expected is not None and shape != expected:
            raise SaveLoadError(
                f"{str(path)!r}: base.config builds {name!r} of shape {shape}, but the plan and "
                f"weights expect {expected}; the config does not belong to these weights"
            )
        if id(t) not in seen:
            total += t.numel()
        seen.add(id(t))
    if total > MAX_BASE_GROWTH * saved + 2**26:
        raise SaveLoadError(
            f"{str(path)!r}: base.config builds a model of {total} values, more than "
            f"{MAX_BASE_GROWTH} times the {saved} values model.safetensors holds; the config "
            f"does not belong to these weights"
        )
    missing = sorted(set(declared) - {name for name, _ in tensors})
    if missing:
        raise PlanError(
            f"the plan changes {_short(missing[0])}, which the model base.config builds does "
            f"not have; apply a plan to the same architecture it was made for"
        )


@contextlib.contextmanager
def _registration_budget(budget: int, path: Path) -> Iterator[None]:
    """Stop a model build (in this thread) that registers more than ``budget`` modules or
    more than ``budget`` parameters and buffers: a hostile config cannot make it run away."""
    from torch.nn.modules import module as torch_module

    thread = threading.get_ident()
    counts = {"modules": 0, "tensors": 0}

    def count(kind: str) -> None:
        if threading.get_ident() != thread:
            return
        counts[kind] += 1
        if counts[kind] > budget:
            raise SaveLoadError(
                f"{str(path)!r}: base.config builds a model of more than {budget} {kind}, far "
                f"more than the plan and weights hold; the config does not belong to these weights"
            )

    handles = [
        torch_module.register_module_module_registration_hook(lambda *a: count("modules")),
        torch_module.register_module_parameter_registration_hook(lambda *a: count("tensors")),
        torch_module.register_module_buffer_registration_hook(lambda *a: count("tensors")),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _rebuild(
    ref: Mapping[str, Any],
    data: Mapping[str, Any],
    table: Mapping[str, tuple[str, tuple[int, ...]]],
    *,
    folder: Path,
    trust_code: bool,
) -> nn.Module:
    path = folder / MANIFEST
    kind = ref["kind"]
    if kind == "factory":
        spec = ref["factory"]
        if spec not in BUILTIN_FACTORIES and not trust_code:
            raise UntrustedCodeError(
                f"save folder {str(folder)!r} rebuilds its base model by calling {_short(spec)}, "
                f"code named by the folder, which netsculpt does not run on its own: pass "
                f"base=<a freshly built, unpruned model> to netsculpt.load, or trust_code=True "
                f"(--trust-code on the command line) if you trust where the folder came from"
            )
        return _call_factory(spec)
    if kind == "transformers":
        cls = _transformers_class(ref["class"], path)
        # a config can ask for any number of layers: count what the meta build registers
        budget = 8 * (len(table) + len(data["shapes"])) + 1024
        try:
            config = cls.config_class.from_dict(_safe_config(ref["config"]))
            with _registration_budget(budget, path), torch.device("meta"):
                probe = cls(config)
        except SaveLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - a config from a file can fail in any way
            raise SaveLoadError(
                f"{str(path)!r}: cannot build {cls.__name__} from base.config "
                f"({type(exc).__name__}: {_short(str(exc), 200)}); pass base=... instead"
            ) from exc
        _check_probe(probe, data, table, path)
        del probe
        try:
            model: nn.Module = cls(config)
        except Exception as exc:  # noqa: BLE001
            raise SaveLoadError(
                f"{str(path)!r}: cannot build {cls.__name__} from base.config "
                f"({type(exc).__name__}: {_short(str(exc), 200)}); pass base=... instead"
            ) from exc
        return model
    raise SaveLoadError(
        f"the save folder does not say how to rebuild its base model "
        f"({_short(ref.get('class'))}); pass base=<a freshly built, unpruned model of that "
        f"class> to netsculpt.load, or save with base_factory='package.module:function'"
    )


def _check_weights(
    table: Mapping[str, tuple[str, tuple[int, ...]]], model: nn.Module, path: Path, strict: bool
) -> None:
    """Names, shapes and dtypes of the saved tensors fit ``model``, before reading any data."""
    target = model.state_dict(keep_vars=True)
    for name, (dtype, shape) in table.items():
        t = target.get(name)
        if t is None:
            if strict:
                raise SaveLoadError(
                    f"{str(path)!r} holds tensor {_short(name)}, which the rebuilt model does "
                    f"not have; pass the base architecture the model was pruned from"
                )
            continue
        if tuple(t.shape) != shape:
            raise SaveLoadError(
                f"{str(path)!r}: tensor {name!r} has shape {shape}, the rebuilt model expects "
                f"{tuple(t.shape)}; the weights do not belong to this plan and base model"
            )
        want = _SAFETENSORS_DTYPES.get(t.dtype, str(t.dtype))
        if dtype != want and not (dtype in _FLOAT_DTYPES and t.dtype.is_floating_point):
            raise SaveLoadError(
                f"{str(path)!r}: tensor {name!r} is stored as {dtype}, the rebuilt model holds "
                f"{want}; the weights do not belong to this model"
            )


# ---------------------------------------------------------------------------------------------
# example inputs


def _inputs_layout(example_inputs: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors of the example inputs by key, and how to put them back together."""
    import json

    if isinstance(example_inputs, torch.Tensor):
        return {"0": example_inputs}, {"kind": "tensor"}
    if isinstance(example_inputs, (tuple, list)):
        tensors = {str(i): x for i, x in enumerate(example_inputs) if isinstance(x, torch.Tensor)}
        if len(tensors) != len(example_inputs) or len(tensors) > MAX_INPUTS:
            raise InputError(
                f"example inputs given as a tuple must hold only tensors (at most {MAX_INPUTS}) "
                f"to be saved"
            )
        return tensors, {"kind": "tuple", "n": len(example_inputs)}
    if isinstance(example_inputs, dict):
        if not all(isinstance(k, str) for k in example_inputs) or len(example_inputs) > MAX_INPUTS:
            raise InputError(
                f"example inputs given as a dict must have string keys (at most {MAX_INPUTS}) to "
                f"be saved, got keys {_short(list(example_inputs))}"
            )
        tensors = {k: v for k, v in example_inputs.items() if isinstance(v, torch.Tensor)}
        constants = {k: v for k, v in example_inputs.items() if not isinstance(v, torch.Tensor)}
        try:
            json.dumps(constants, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"example input values must be tensors or JSON values to be saved: {exc}"
            ) from exc
        return tensors, {"kind": "dict", "keys": list(example_inputs), "constants": constants}
    raise InputError(
        f"cannot save example inputs of type {type(example_inputs).__name__}; pass a tensor, a "
        f"tuple of tensors or a dict of tensors and JSON values"
    )


def load_inputs(path: str | os.PathLike[str]) -> Any:
    """The example inputs saved beside a model (None when none were saved)."""
    folder = _check_path(path)
    manifest = read_manifest(folder)
    layout = manifest.get("inputs")
    if not layout:
        return None
    file = _verified(folder, manifest, INPUTS)
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise SaveLoadError(
            f"{str(file)!r} is not a readable safetensors file ({_short(str(exc), 200)}); save "
            f"the model again"
        ) from exc
    if layout["kind"] == "tensor":
        needed = ["0"]
    elif layout["kind"] == "tuple":
        needed = [str(i) for i in range(layout["n"])]
    else:
        needed = [k for k in layout["keys"] if k not in layout["constants"]]
    missing = [k for k in needed if k not in tensors]
    if missing or len(tensors) != len(needed):
        raise SaveLoadError(
            f"{str(file)!r} holds tensors {_short(sorted(tensors))}, but the manifest's 'inputs' "
            f"needs {_short(needed)}; save the model again"
        )
    if layout["kind"] == "tensor":
        return tensors["0"]
    if layout["kind"] == "tuple":
        return tuple(tensors[k] for k in needed)
    return {k: tensors[k] if k in tensors else layout["constants"][k] for k in layout["keys"]}


# ---------------------------------------------------------------------------------------------
# save and load


def _write_atomic(path: Path, write: Any) -> None:
    """Write through a temporary file and rename it over ``path`` (a link there is replaced,
    never followed)."""
    try:
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(handle)
    except OSError as exc:
        raise SaveLoadError(f"cannot write in {str(path.parent)!r}: {exc}") from exc
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise SaveLoadError(f"cannot write {str(path)!r}: {exc}") from exc
    except (SafetensorError, ValueError, RuntimeError, TypeError) as exc:
        raise SaveLoadError(f"cannot write {str(path)!r}: {_short(str(exc), 200)}") from exc
    finally:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()


def _check_plan_fits(model: nn.Module, plan: Plan) -> None:
    """The plan's kept counts give the shapes ``model`` has (tensors still present)."""
    state = model.state_dict(keep_vars=True)
    for name, dims in plan.tensors.items():
        t = state.get(name)
        original = plan.shapes.get(name)
        if t is None or original is None or len(original) != t.dim():
            continue
        expected = tuple(len(dims[d]) if d in dims else s for d, s in enumerate(original))
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
    folder = _check_path(path)
    if base_factory is not None and (
        not isinstance(base_factory, str) or not _FACTORY_FORM.fullmatch(base_factory)
    ):
        raise FactoryError(
            f"base_factory must be 'package.module:function', got {_short(base_factory)}; for "
            f"example 'myproject.models:build'"
        )
    if plan is not None and not isinstance(plan, Plan):
        raise InputError(
            f"plan must be a netsculpt.Plan or None, got {type(plan).__name__} ({_short(plan)})"
        )
    the_plan = plan or plan_of(model) or Plan(tensors={}, shapes={}, meta={"identity": True})
    _check_plan_fits(model, the_plan)
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] | None = None
    if example_inputs is not None:
        check_finite_inputs(example_inputs)
        tensors, layout = _inputs_layout(example_inputs)
    try:
        plan_bytes = the_plan.to_json(indent=1).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InputError(f"the plan cannot be written as JSON: {exc}") from exc
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SaveLoadError(
            f"cannot create the save folder {str(folder)!r}: {exc}; pass a folder path you can "
            f"write to"
        ) from exc
    if not folder.is_dir():
        raise SaveLoadError(f"{str(folder)!r} exists and is not a folder; pass another path")
    digest = hashlib.sha256(plan_bytes).hexdigest()
    _write_atomic(folder / PLAN, lambda p: p.write_bytes(plan_bytes))
    _write_atomic(
        folder / WEIGHTS, lambda p: save_model(model, str(p), metadata={PLAN_DIGEST: digest})
    )
    files = {PLAN: digest, WEIGHTS: _sha256(folder / WEIGHTS)}
    if layout is not None:
        contiguous = {k: v.detach().contiguous() for k, v in tensors.items()}
        _write_atomic(folder / INPUTS, lambda p: save_file(contiguous, str(p)))
        files[INPUTS] = _sha256(folder / INPUTS)
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
    _write_atomic(folder / MANIFEST, lambda p: p.write_bytes(text))
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
    folder = _check_path(path)
    if base is not None:
        check_model(base, what="base")
    _check_bool(strict, "strict")
    _check_bool(trust_code, "trust_code")
    manifest = read_manifest(folder)
    plan_path = folder / PLAN
    plan_bytes = _verified_bytes(folder, manifest, PLAN)
    weights = _verified(folder, manifest, WEIGHTS)
    metadata, table = _header(weights)
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
    changes = the_plan.tensors or the_plan.attrs or the_plan.removed or the_plan.lowrank
    small = apply(model, the_plan, inplace=base is None) if changes else model
    _check_weights(table, small, weights, strict)
    try:
        load_model(small, str(weights), strict=strict)
    except (SafetensorError, RuntimeError, OSError, ValueError, KeyError, TypeError) as exc:
        raise SaveLoadError(
            f"the weights in {str(weights)!r} do not fit the rebuilt model: "
            f"{_short(str(exc), 300)}; pass the same base architecture the model was pruned from"
        ) from exc
    small.eval()
    return small
