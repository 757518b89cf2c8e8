"""The files of a netsculpt folder: checked reads and writes, checksums, example inputs, and
rebuilding the base model a folder names.

Shared by the folders netsculpt writes: a pruned model (:mod:`netsculpt.export.save`), a
super-network (:mod:`netsculpt.supernets.io`) and a super-network training checkpoint
(:mod:`netsculpt.supernets._train_state`). Each keeps its own layout and error wording; the
checks are these, so every folder is read as data the same way:

* a member is a regular file inside the folder (never a link), read up to a size bound;
* a file is written through a temporary file renamed over it, so a reader never sees half;
* a file listed with a SHA-256 is checked against it before it is used;
* a safetensors file's header (names, dtypes, shapes) is checked against the model before
  its data is read;
* a base model named by a ``package.module:factory`` string is built only when the factory
  is one of netsculpt's own (:data:`BUILTIN_FACTORIES`) or the caller passes
  ``trust_code=True``; a transformers model is built from its saved config, looked up by
  class name among the classes ``transformers`` exports, first on the meta device and
  within a bound set by the saved weights.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import keyword
import os
import re
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model
from torch import nn

from netsculpt._factories import resolve
from netsculpt.errors import (
    ChecksumError,
    FactoryError,
    InputError,
    PlanError,
    SaveLoadError,
    UntrustedCodeError,
)

__all__ = [
    "BUILTIN_BASE_FACTORIES",
    "BUILTIN_FACTORIES",
    "HEX64",
    "MAX_BASE_GROWTH",
    "MAX_INPUTS",
    "check_bool",
    "check_layout",
    "check_path",
    "check_weights",
    "field_error",
    "header",
    "inputs_layout",
    "load_weights",
    "make_folder",
    "member",
    "read_bounded",
    "read_inputs",
    "rebuild_base",
    "resolve_factory",
    "sha256",
    "short",
    "verified",
    "write_atomic",
]

#: the unpruned base model of each built-in model name (the pretrained model of the task of
#: that name), as the factory a folder made from it names; transformers models (minilm) are
#: rebuilt from their saved config instead
BUILTIN_BASE_FACTORIES: Mapping[str, str] = MappingProxyType(
    {
        "digits": "netsculpt.tasks.digits:DigitsCNN",
        "mnist1d": "netsculpt.tasks.mnist1d:ResNet1D",
    }
)
#: factories that are part of netsculpt itself: loading runs them without trust_code
BUILTIN_FACTORIES = frozenset(BUILTIN_BASE_FACTORIES.values())
#: a SHA-256 as a folder's JSON lists it (use with fullmatch)
HEX64 = re.compile(r"[0-9a-f]{64}")
#: how many times larger than its saved weights a rebuilt transformers base model may be
MAX_BASE_GROWTH = 64
#: the most tensors or keys saved example inputs may have
MAX_INPUTS = 256

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
#: the exceptions safetensors raises for a file that does not fit a model
_LOAD_ERRORS = (SafetensorError, RuntimeError, OSError, ValueError, KeyError, TypeError)


def short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# arguments


def check_path(path: Any, what: str = "path") -> Path:
    if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
        raise InputError(
            f"{what} must be a folder path (str or pathlib.Path), got {type(path).__name__} "
            f"({short(path)})"
        )
    text = os.fspath(path)
    if not isinstance(text, str) or not text or "\0" in text:
        raise InputError(f"{what} must be a non-empty folder path, got {short(text)}")
    return Path(text)


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, got {short(value)}")
    return value


# ---------------------------------------------------------------------------------------------
# reading and writing a folder's files


def member(folder: Path, name: str) -> Path:
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


def read_bounded(path: Path, limit: int) -> bytes:
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


def verified(folder: Path, listing: Mapping[str, Any], name: str) -> Path:
    """The :func:`member` ``name`` once its SHA-256 is the one ``listing["files"]`` gives."""
    path = member(folder, name)
    if sha256(path) != listing["files"][name]:
        raise ChecksumError(
            f"{str(path)!r} changed after it was saved (SHA-256 mismatch); refusing to load "
            f"it. Restore the original file or save the model again"
        )
    return path


def write_atomic(path: Path, write: Any) -> None:
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
        raise SaveLoadError(f"cannot write {str(path)!r}: {short(str(exc), 200)}") from exc
    finally:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()


def make_folder(folder: Path, what: str, fix: str = "pass a folder path you can write to") -> None:
    """Create ``folder`` (and its parents); ``what`` names it in the error (``"save folder"``)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SaveLoadError(f"cannot create the {what} {str(folder)!r}: {exc}; {fix}") from exc
    if not folder.is_dir():
        raise SaveLoadError(f"{str(folder)!r} exists and is not a folder; pass another path")


# ---------------------------------------------------------------------------------------------
# weights


def header(path: Path) -> tuple[dict[str, str], dict[str, tuple[str, tuple[int, ...]]]]:
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
            f"{str(path)!r} is not a readable safetensors file ({short(str(exc), 200)}); save "
            f"the model again"
        ) from exc
    return metadata, table


def check_weights(
    table: Mapping[str, tuple[str, tuple[int, ...]]], model: nn.Module, path: Path, strict: bool
) -> None:
    """Names, shapes and dtypes of the saved tensors fit ``model``, before reading any data."""
    target = model.state_dict(keep_vars=True)
    for name, (dtype, shape) in table.items():
        t = target.get(name)
        if t is None:
            if strict:
                raise SaveLoadError(
                    f"{str(path)!r} holds tensor {short(name)}, which the rebuilt model does "
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


def load_weights(
    model: nn.Module,
    path: Path,
    table: Mapping[str, tuple[str, tuple[int, ...]]],
    *,
    strict: bool,
    misfit: Callable[[Exception], str],
) -> None:
    """Load the safetensors file ``path`` (whose :func:`header` table is ``table``) into
    ``model``, on the model's device, once the names, shapes and dtypes are checked;
    ``misfit(error)`` words the SaveLoadError when safetensors still refuses it."""
    check_weights(table, model, path, strict)
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    try:
        with _module_versions(model):
            load_model(model, str(path), strict=strict, device=str(device))
    except _LOAD_ERRORS as exc:
        raise SaveLoadError(misfit(exc)) from exc


@contextlib.contextmanager
def _module_versions(model: nn.Module) -> Iterator[None]:
    """Load with each module's state-dict version, as ``torch.save`` keeps it.

    A safetensors file holds tensors only; some modules read their version while loading
    (torchvision's MNASNet refuses a state dict without one), so the rebuilt model's own
    versions (``state_dict()._metadata``) go with the tensors safetensors hands over.
    """
    versions = getattr(model.state_dict(), "_metadata", None)
    load = model.load_state_dict

    def with_versions(
        state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        state = collections.OrderedDict(state_dict)
        if versions is not None:
            state._metadata = versions  # type: ignore[attr-defined]
        return load(state, strict=strict, assign=assign)

    model.__dict__["load_state_dict"] = with_versions
    try:
        yield
    finally:
        del model.__dict__["load_state_dict"]


# ---------------------------------------------------------------------------------------------
# example inputs


def field_error(path: Path, field: str, problem: str) -> SaveLoadError:
    return SaveLoadError(
        f"{str(path)!r}: field {field} {problem}; the manifest is damaged or was not written by "
        f"netsculpt.save (save the model again)"
    )


def check_layout(layout: Any, path: Path) -> None:
    """The ``inputs`` field: how saved example inputs are put back together."""
    if layout is None:
        return
    if not isinstance(layout, dict):
        raise field_error(path, "'inputs'", f"must be an object or null, got {short(layout)}")
    kind = layout.get("kind")
    if kind == "tensor" and set(layout) == {"kind"}:
        return
    if kind == "tuple" and set(layout) == {"kind", "n"}:
        n = layout["n"]
        if type(n) is not int or not 0 <= n <= MAX_INPUTS:
            raise field_error(path, "'inputs.n'", f"must be an integer in [0, {MAX_INPUTS}]")
        return
    if kind == "dict" and set(layout) == {"kind", "keys", "constants"}:
        keys, constants = layout["keys"], layout["constants"]
        if (
            not isinstance(keys, list)
            or len(keys) > MAX_INPUTS
            or not all(isinstance(k, str) for k in keys)
            or len(set(keys)) != len(keys)
        ):
            raise field_error(
                path, "'inputs.keys'", f"must be at most {MAX_INPUTS} distinct strings"
            )
        if not isinstance(constants, dict) or not set(constants) <= set(keys):
            raise field_error(path, "'inputs.constants'", "must be an object keyed by inputs.keys")
        return
    raise field_error(
        path, "'inputs'", f"is not a known layout (kind {short(kind)}, fields {sorted(layout)})"
    )


def inputs_layout(example_inputs: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors of the example inputs by key, and how to put them back together."""
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
                f"be saved, got keys {short(list(example_inputs))}"
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


def read_inputs(file: Path, layout: Mapping[str, Any], *, listed_in: str, again: str) -> Any:
    """The example inputs saved in ``file``, put back together as ``layout`` (checked by
    :func:`check_layout`) says. ``listed_in`` names the file holding the layout
    (``"the manifest's"``) and ``again`` is the fix (``"save the model again"``)."""
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise SaveLoadError(
            f"{str(file)!r} is not a readable safetensors file ({short(str(exc), 200)}); {again}"
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
            f"{str(file)!r} holds tensors {short(sorted(tensors))}, but {listed_in} 'inputs' "
            f"needs {short(needed)}; {again}"
        )
    if layout["kind"] == "tensor":
        return tensors["0"]
    if layout["kind"] == "tuple":
        return tuple(tensors[k] for k in needed)
    return {k: tensors[k] if k in tensors else layout["constants"][k] for k in layout["keys"]}


# ---------------------------------------------------------------------------------------------
# rebuilding the base model


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
            f"factory {spec!r} raised {type(exc).__name__}: {short(str(exc), 200)}"
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
            f"{str(path)!r}: base.class {short(spec)} is not a transformers model class; "
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
            f"the plan changes {short(missing[0])}, which the model base.config builds does "
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


def rebuild_base(
    ref: Mapping[str, Any],
    table: Mapping[str, tuple[str, tuple[int, ...]]],
    *,
    folder: Path,
    path: Path,
    trust_code: bool,
    plan: Mapping[str, Any] | None = None,
    folder_kind: str,
    loader: str,
) -> nn.Module | None:
    """The base model a folder's checked ``base`` reference builds, or None when it names
    only a class (the caller then asks for ``base=``).

    A factory runs only when it is one of :data:`BUILTIN_FACTORIES` or ``trust_code`` is
    True. A transformers model is built from its config, first on the meta device, where
    every tensor the weights' header ``table`` and the ``plan`` data name must have the
    shape they expect, and the whole model must stay within :data:`MAX_BASE_GROWTH` times
    the saved weights.

    Args:
        ref: the folder's ``base`` field.
        table: the saved weights' :func:`header` table.
        folder, path: the folder, and the file holding ``ref`` (named in errors).
        trust_code: run a factory that is not netsculpt's own.
        plan: the plan data the base model must fit (its ``shapes``, ``removed`` and
            ``lowrank``), or None.
        folder_kind, loader: how an :class:`UntrustedCodeError` names the folder
            (``"save folder"``) and the function that takes ``base=`` (``"netsculpt.load"``).
    """
    kind = ref["kind"]
    if kind == "factory":
        spec = ref["factory"]
        if spec not in BUILTIN_FACTORIES and not trust_code:
            raise UntrustedCodeError(
                f"{folder_kind} {str(folder)!r} rebuilds its base model by calling "
                f"{short(spec)}, code named by the folder, which netsculpt does not run on its "
                f"own: pass base=<a freshly built, unpruned model> to {loader}, or "
                f"trust_code=True (--trust-code on the command line) if you trust where the "
                f"folder came from"
            )
        return _call_factory(spec)
    if kind != "transformers":
        return None
    data = plan if plan is not None else {"shapes": {}}
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
            f"({type(exc).__name__}: {short(str(exc), 200)}); pass base=... instead"
        ) from exc
    _check_probe(probe, data, table, path)
    del probe
    try:
        model: nn.Module = cls(config)
    except Exception as exc:  # noqa: BLE001
        raise SaveLoadError(
            f"{str(path)!r}: cannot build {cls.__name__} from base.config "
            f"({type(exc).__name__}: {short(str(exc), 200)}); pass base=... instead"
        ) from exc
    return model
