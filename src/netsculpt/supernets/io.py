"""Save and load elastic super-networks: :func:`save_supernet` and :func:`load_supernet`.

A super-network folder holds three files::

    elastic.json           format, the ElasticConfig, the unit orders (each expert's own
                           for stacked expert neurons), the space, the fixed groups, the base
                           model's signature and how to rebuild it, and the SHA-256 of the
                           two other files
    supernet.safetensors   the super-network's weights (units in importance order; tied
                           weights stored once)
    inputs.safetensors     the example inputs

Usage (``supernet`` made by :func:`netsculpt.elastic`, ``build()`` your model's constructor)::

    import netsculpt as ns

    ns.save_supernet(supernet, "supernet/")
    supernet = ns.load_supernet("supernet/", base=build())

Loading does not order the units again: it loads the saved weights into the base model,
analyses it (:func:`netsculpt.analyze`) and rebuilds the :class:`Supernet` from the saved
orders, so the loaded super-network computes exactly what the saved one did for every
sub-network.

A folder is data. Nothing it names is imported or called unless ``trust_code=True`` (a
``package.module:factory`` string that rebuilds the base model; netsculpt's own built-in
factories excepted); without it the caller passes ``base=``, a freshly built, unpruned model
of the same architecture. A transformers model is rebuilt from its saved config, looked up
by class name among the classes ``transformers`` exports, as :func:`netsculpt.load` does.
Every field is checked as data before it is used: the orders are permutations of the
groups' sizes, the base model's parameter and buffer names and shapes match the signature
the folder records, and the space rebuilt on the base model is the one saved. A folder that
fails a check raises :class:`~netsculpt.errors.SaveLoadError` naming the file and field.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file, save_model
from torch import nn

from netsculpt import __version__
from netsculpt._checks import check_finite_inputs, check_model
from netsculpt._factories import is_dotted_spec
from netsculpt.errors import FactoryError, InputError, SaveLoadError
from netsculpt.export._folder import (
    HEX64,
    check_bool,
    check_layout,
    check_path,
    header,
    inputs_layout,
    load_weights,
    make_folder,
    member,
    read_bounded,
    read_inputs,
    rebuild_base,
    sha256,
    short,
    verified,
    write_atomic,
)
from netsculpt.export.save import base_reference
from netsculpt.graph.analysis import Graph, Group, analyze
from netsculpt.pruning._per_expert import expert_groups
from netsculpt.pruning.plan import MAX_JSON_BYTES, parse_json
from netsculpt.supernets.config import ElasticConfig
from netsculpt.supernets.space import BLOCK
from netsculpt.supernets.supernet import Supernet, _elastic_blocks, _elastic_groups

__all__ = ["architecture_signature", "load_supernet", "read_description", "save_supernet"]

DESCRIPTION = "elastic.json"
WEIGHTS = "supernet.safetensors"
INPUTS = "inputs.safetensors"
FORMAT = "netsculpt.supernet/1"
#: the files elastic.json lists, all in the folder itself
KNOWN_FILES = (WEIGHTS, INPUTS)

_KEYS = frozenset(
    {
        "format",
        "netsculpt",
        "torch",
        "config",
        "orders",
        "space",
        "fixed",
        "model",
        "base",
        "files",
        "inputs",
    }
)
#: fields a description may hold (written only where they apply)
_OPTIONAL_KEYS = frozenset({"expert_orders"})
#: longest name (group, class, choice) read from a folder
_MAX_NAME = 1000


def _class_name(model: nn.Module) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"


def _tensors(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    found = [(n, tuple(t.shape)) for n, t in model.named_parameters(remove_duplicate=False)]
    found += [(n, tuple(t.shape)) for n, t in model.named_buffers(remove_duplicate=False)]
    return sorted(found)


def architecture_signature(model: nn.Module) -> str:
    """SHA-256 of ``model``'s parameter and buffer names and shapes (tied names included).

    Two models of the same architecture (same class, same constructor arguments) have the
    same signature whatever their weights; a super-network folder records the signature of
    the model it was made from, and loading refuses a base model with another one.
    """
    text = "\n".join(f"{name} {list(shape)}" for name, shape in _tensors(model))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# save


def save_supernet(
    supernet: Supernet,
    path: str | os.PathLike[str],
    *,
    base_factory: str | None = None,
) -> Path:
    """Write ``supernet`` (made by :func:`netsculpt.elastic`) to the folder ``path``.

    Args:
        supernet: the super-network, trained or not.
        path: folder to create (files netsculpt wrote there before are overwritten).
        base_factory: ``"package.module:function"`` returning a freshly built, unpruned
            model of the architecture (or ``(model, example_inputs)``). Loading runs it only
            with ``load_supernet(path, trust_code=True)``; with ``base=`` it is not needed.
            A transformers model is rebuilt from its saved config without it.

    Returns:
        The folder.

    Raises:
        InputError: ``supernet`` is not a :class:`Supernet`, or its example inputs cannot be
            saved (not tensors, a tuple of tensors, or a dict of tensors and JSON values).
        FactoryError: ``base_factory`` is not of the form ``package.module:function``.
        SaveLoadError: the folder cannot be written.
    """
    if not isinstance(supernet, Supernet):
        raise InputError(
            f"save_supernet takes the Supernet made by ns.elastic, got "
            f"{type(supernet).__name__} ({short(supernet)}); to save an ordinary or extracted "
            f"model use ns.save"
        )
    folder = check_path(path)
    if base_factory is not None and not is_dotted_spec(base_factory):
        raise FactoryError(
            f"base_factory must be 'package.module:function', got {short(base_factory)}; for "
            f"example 'myproject.models:build' (a function on PYTHONPATH, not a file path)"
        )
    model = supernet.model
    check_finite_inputs(supernet.example_inputs)
    tensors, layout = inputs_layout(supernet.example_inputs)
    description: dict[str, Any] = {
        "format": FORMAT,
        "netsculpt": __version__,
        "torch": torch.__version__,
        "config": supernet.config.to_dict(),
        "orders": {name: [int(i) for i in order] for name, order in supernet.orders.items()},
        **(
            {
                "expert_orders": {
                    name: [[int(i) for i in row] for row in rows]
                    for name, rows in supernet.expert_orders.items()
                }
            }
            if supernet.expert_orders
            else {}
        ),
        "space": supernet.space.to_dict(),
        "fixed": dict(supernet.fixed),
        "model": {
            "class": _class_name(model),
            "signature": architecture_signature(model),
            "tensors": len(_tensors(model)),
        },
        "base": base_reference(model, base_factory),
        "files": {},
        "inputs": layout,
    }
    try:
        text = json.dumps(description, indent=1, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"the super-network cannot be described in JSON ({exc}); if its transformers "
            f"config holds values JSON cannot represent, pass base_factory=... (the config is "
            f"then not saved)"
        ) from exc
    make_folder(folder, "super-network folder")
    write_atomic(
        folder / WEIGHTS,
        lambda p: save_model(model, str(p), metadata={"netsculpt.format": FORMAT}),
    )
    contiguous = {k: v.detach().contiguous() for k, v in tensors.items()}
    write_atomic(folder / INPUTS, lambda p: save_file(contiguous, str(p)))
    description["files"] = {WEIGHTS: sha256(folder / WEIGHTS), INPUTS: sha256(folder / INPUTS)}
    text = json.dumps(description, indent=1, allow_nan=False)
    write_atomic(folder / DESCRIPTION, lambda p: p.write_bytes(text.encode("utf-8")))
    return folder


# ---------------------------------------------------------------------------------------------
# reading elastic.json as data


def _bad(path: Path, field: str, problem: str) -> SaveLoadError:
    return SaveLoadError(
        f"{str(path)!r}: field {field} {problem}; the file is damaged or was not written by "
        f"netsculpt.save_supernet (save the super-network again)"
    )


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_NAME


def _is_int(value: Any, low: int = 0) -> bool:
    return type(value) is int and value >= low


def _check_orders(orders: Any, path: Path) -> None:
    if not isinstance(orders, dict):
        raise _bad(path, "'orders'", f"must be an object, got {short(orders)}")
    for name, order in orders.items():
        field = f"'orders'[{short(name)}]"
        if not _is_name(name):
            raise _bad(path, field, "must be keyed by a group name")
        if not isinstance(order, list) or not order or not all(_is_int(i) for i in order):
            raise _bad(path, field, "must be a non-empty array of unit positions (integers >= 0)")
        if len(set(order)) != len(order) or max(order) >= len(order):
            raise _bad(
                path,
                field,
                f"is not a permutation of 0..{len(order) - 1} (every unit once); it cannot "
                f"order the group's {len(order)} units",
            )


def _check_expert_orders(expert_orders: Any, path: Path) -> None:
    """Per group, one order (a permutation of the group's units) per expert."""
    if not isinstance(expert_orders, dict):
        raise _bad(path, "'expert_orders'", f"must be an object, got {short(expert_orders)}")
    for name, rows in expert_orders.items():
        if not isinstance(rows, list) or not rows:
            raise _bad(
                path, f"'expert_orders'[{short(name)}]", "must be a non-empty array of orders"
            )
        _check_orders({f"{name}[{e}]": row for e, row in enumerate(rows)}, path)


def _check_choice(choice: Any, index: int, path: Path) -> str:
    field = f"'space.choices'[{index}]"
    keys = {"name", "kind", "options", "unit_width"}
    if not isinstance(choice, dict) or set(choice) != keys:
        raise _bad(path, field, f"must be an object with fields {sorted(keys)}")
    name, kind, options = choice["name"], choice["kind"], choice["options"]
    if not _is_name(name):
        raise _bad(path, f"{field}.name", f"must be a choice name, got {short(name)}")
    if not _is_int(choice["unit_width"], 1):
        raise _bad(path, f"{field}.unit_width", "must be an integer >= 1")
    if kind == "depth":
        if not name.startswith(BLOCK) or options != [False, True]:
            raise _bad(
                path, field, "must be a depth choice: 'block:<module>' with options [false, true]"
            )
    elif kind == "width":
        if (
            not isinstance(options, list)
            or not options
            or not all(_is_int(n, 1) for n in options)
            or options != sorted(set(options))
        ):
            raise _bad(path, f"{field}.options", "must be increasing unit counts (integers >= 1)")
    else:
        raise _bad(path, f"{field}.kind", f"must be 'width' or 'depth', got {short(kind)}")
    return str(name)


def _check_space(space: Any, path: Path) -> None:
    if not isinstance(space, dict) or set(space) != {"choices"}:
        raise _bad(path, "'space'", "must be an object with one field, 'choices'")
    choices = space["choices"]
    if not isinstance(choices, list):
        raise _bad(path, "'space.choices'", "must be an array")
    names = [_check_choice(c, i, path) for i, c in enumerate(choices)]
    if len(set(names)) != len(names):
        raise _bad(path, "'space.choices'", "names a choice twice")


def _check_base(ref: Any, path: Path) -> None:
    if not isinstance(ref, dict):
        raise _bad(path, "'base'", f"must be an object, got {short(ref)}")
    kind = ref.get("kind")
    expected = {
        "factory": {"kind", "factory"},
        "transformers": {"kind", "class", "config"},
        "class": {"kind", "class"},
    }.get(kind if isinstance(kind, str) else "")
    if expected is None:
        raise _bad(
            path, "'base.kind'", f"must be 'factory', 'transformers' or 'class', got {short(kind)}"
        )
    if set(ref) != expected:
        raise _bad(path, "'base'", f"of kind {kind!r} has fields {sorted(expected)}")
    if kind == "factory" and not is_dotted_spec(ref["factory"]):
        raise _bad(
            path,
            "'base.factory'",
            f"must be 'package.module:function', got {short(ref['factory'])}",
        )
    if "class" in ref and not _is_name(ref["class"]):
        raise _bad(path, "'base.class'", f"must be a class name, got {short(ref['class'])}")
    if kind == "transformers" and not isinstance(ref["config"], dict):
        raise _bad(path, "'base.config'", "must be an object")


def read_description(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked ``elastic.json`` of a super-network folder (``"config"`` as an
    :class:`ElasticConfig`); reads nothing else and runs nothing.

    Raises:
        SaveLoadError: the folder or file is missing, or a field is malformed.
    """
    folder = check_path(path)
    if not folder.is_dir():
        raise SaveLoadError(
            f"super-network folder {str(folder)!r} does not exist (or is not a folder); pass "
            f"the folder written by ns.save_supernet or 'netsculpt elastic --out'"
        )
    if not (folder / DESCRIPTION).exists() and not (folder / DESCRIPTION).is_symlink():
        hint = (
            "; it is a pruned-model folder: load it with ns.load"
            if (folder / "netsculpt.json").exists()
            else ""
        )
        raise SaveLoadError(
            f"{str(folder)!r} has no {DESCRIPTION}, so it is not a super-network folder written "
            f"by ns.save_supernet{hint}"
        )
    file = member(folder, DESCRIPTION)
    data = parse_json(read_bounded(file, MAX_JSON_BYTES), what=repr(str(file)), error=SaveLoadError)
    if not isinstance(data, dict):
        raise SaveLoadError(
            f"{str(file)!r} holds JSON that is not an object; it was not written by "
            f"ns.save_supernet"
        )
    if data.get("format") != FORMAT:
        raise SaveLoadError(
            f"{str(file)!r} has format {short(data.get('format'))}, expected {FORMAT!r}; it "
            f"was not written by this version of ns.save_supernet"
        )
    unknown = sorted(str(k) for k in data if k not in _KEYS | _OPTIONAL_KEYS)
    if unknown:
        raise _bad(file, short(unknown[0]), "is not a field of a super-network description")
    missing = sorted(_KEYS - set(data))
    if missing:
        raise _bad(file, repr(missing[0]), "is missing")
    for key in ("netsculpt", "torch"):
        if not _is_name(data[key]):
            raise _bad(file, repr(key), "must be a version string")
    try:
        data["config"] = ElasticConfig.from_dict(data["config"])
    except InputError as exc:
        raise _bad(file, "'config'", f"is not an ElasticConfig ({exc})") from exc
    _check_orders(data["orders"], file)
    _check_expert_orders(data.get("expert_orders", {}), file)
    _check_space(data["space"], file)
    fixed = data["fixed"]
    if not isinstance(fixed, dict) or not all(
        _is_name(k) and isinstance(v, str) for k, v in fixed.items()
    ):
        raise _bad(file, "'fixed'", "must map choice names to reasons (strings)")
    model = data["model"]
    if (
        not isinstance(model, dict)
        or set(model) != {"class", "signature", "tensors"}
        or not _is_name(model["class"])
        or not isinstance(model["signature"], str)
        or not HEX64.fullmatch(model["signature"])
        or not _is_int(model["tensors"])
    ):
        raise _bad(file, "'model'", "must be {class: name, signature: SHA-256, tensors: count}")
    _check_base(data["base"], file)
    files = data["files"]
    if not isinstance(files, dict) or set(files) != set(KNOWN_FILES):
        raise _bad(file, "'files'", f"must list exactly {', '.join(KNOWN_FILES)}")
    if not all(isinstance(d, str) and HEX64.fullmatch(d) for d in files.values()):
        raise _bad(file, "'files'", "must give each file's SHA-256 (64 hex digits)")
    if data["inputs"] is None:
        raise _bad(file, "'inputs'", "is null, but a super-network needs its example inputs")
    check_layout(data["inputs"], file)
    return data


# ---------------------------------------------------------------------------------------------
# the base model


def _rebuild(
    ref: Mapping[str, Any],
    table: Mapping[str, tuple[str, tuple[int, ...]]],
    folder: Path,
    *,
    trust_code: bool,
) -> nn.Module:
    """The base model the folder says how to build, running code only where allowed."""
    model = rebuild_base(
        ref,
        table,
        folder=folder,
        path=folder / DESCRIPTION,
        trust_code=trust_code,
        folder_kind="super-network folder",
        loader="ns.load_supernet",
    )
    if model is None:
        raise SaveLoadError(
            f"super-network folder {str(folder)!r} does not say how to rebuild its base model "
            f"({short(ref.get('class'))}); pass base=<a freshly built, unpruned model of that "
            f"class> to ns.load_supernet, or save with base_factory='package.module:function'"
        )
    return model


def _check_signature(
    model: nn.Module,
    saved: Mapping[str, Any],
    table: Mapping[str, tuple[str, tuple[int, ...]]],
    folder: Path,
) -> None:
    """``model`` has the parameter and buffer names and shapes the folder was made from."""
    if architecture_signature(model) == saved["signature"]:
        return
    here = dict(_tensors(model))
    first = next(
        (
            f"{name!r} is {list(shape)} there, {list(here[name])} here"
            if name in here
            else f"{name!r} is missing here"
            for name, (_dtype, shape) in sorted(table.items())
            if here.get(name) != shape
        ),
        None,
    )
    if first is None:
        extra = sorted(set(here) - set(table))
        first = f"{len(here)} tensors here, {saved['tensors']} there" + (
            f" ({extra[0]!r}, ...)" if extra else ""
        )
    raise SaveLoadError(
        f"super-network folder {str(folder)!r} was made from a {saved['class']}, but the base "
        f"model is a {_class_name(model)} of another architecture ({first}); pass base=<a "
        f"freshly built, unpruned {saved['class'].rpartition('.')[2]}> built as the "
        f"super-network's model was (same class and constructor arguments)"
    )


# ---------------------------------------------------------------------------------------------
# load


def load_supernet(
    path: str | os.PathLike[str],
    *,
    base: nn.Module | None = None,
    trust_code: bool = False,
) -> Supernet:
    """Rebuild a super-network saved by :func:`save_supernet`, in eval mode.

    The units are not ordered again: the saved weights go into the base model, which is
    analysed, and the :class:`Supernet` is rebuilt from the saved orders. Every sub-network
    computes what it computed in the saved super-network.

    Args:
        path: the super-network folder.
        base: a freshly built, unpruned model of the architecture the super-network was made
            from; it becomes the super-network's model (its weights are replaced). Optional
            when the folder holds a transformers config, or names a factory that is
            netsculpt's own or is trusted with ``trust_code=True``.
        trust_code: run the ``package.module:factory`` the folder names to rebuild the base
            model. Only for folders you trust as you would trust their Python code.

    Raises:
        UntrustedCodeError: the folder needs its factory run and ``trust_code`` is False.
        SaveLoadError: a file is missing, changed or malformed; the base model is of another
            architecture; or the space rebuilt on it is not the one saved.
    """
    folder = check_path(path)
    if base is not None:
        check_model(base, what="base")
    check_bool(trust_code, "trust_code")
    data = read_description(folder)
    config: ElasticConfig = data["config"]
    weights = verified(folder, data, WEIGHTS)
    _metadata, table = header(weights)
    example_inputs = read_inputs(
        verified(folder, data, INPUTS),
        data["inputs"],
        listed_in=f"{DESCRIPTION}'s",
        again="save the super-network again",
    )
    model = (
        base if base is not None else _rebuild(data["base"], table, folder, trust_code=trust_code)
    )
    _check_signature(model, data["model"], table, folder)
    load_weights(
        model,
        weights,
        table,
        strict=True,
        misfit=lambda exc: (
            f"the weights in {str(weights)!r} do not fit the base model: "
            f"{short(str(exc), 300)}; pass the architecture the super-network was made from"
        ),
    )
    model.eval()
    graph = analyze(
        model,
        example_inputs,
        exclude=list(config.exclude),
        protect_outputs=config.protect_outputs,
    )
    description = folder / DESCRIPTION
    try:
        groups = _elastic_groups(graph, config)
        blocks = _elastic_blocks(graph, config)
    except InputError as exc:
        raise SaveLoadError(
            f"{str(description)!r}: its config does not fit the base model ({exc}); pass the "
            f"architecture the super-network was made from"
        ) from exc
    _check_orders_fit(data["orders"], {g.name: g.size for g in groups}, description)
    expert_orders = data.get("expert_orders", {})
    _check_expert_orders_fit(expert_orders, model, graph, groups, description)
    supernet = Supernet(model, example_inputs, config, graph, data["orders"], blocks, expert_orders)
    _check_space_fits(supernet, data, description)
    return supernet.eval()


def _check_orders_fit(
    orders: Mapping[str, Sequence[int]], sizes: Mapping[str, int], path: Path
) -> None:
    """One order per elastic group of the base model, of the group's size."""
    extra = sorted(set(orders) - set(sizes))
    missing = sorted(set(sizes) - set(orders))
    if missing:
        raise SaveLoadError(
            f"{str(path)!r}: 'orders' has no entry for {missing[0]!r}, an elastic group of the "
            f"base model; the folder does not belong to this base model (save the "
            f"super-network again)"
        )
    if extra:
        raise SaveLoadError(
            f"{str(path)!r}: 'orders' orders group {extra[0]!r}, which is not an elastic group "
            f"of the base model; the folder does not belong to this base model (save the "
            f"super-network again)"
        )
    for name, size in sizes.items():
        if len(orders[name]) != size:
            raise SaveLoadError(
                f"{str(path)!r}: 'orders'[{name!r}] orders {len(orders[name])} units, but the "
                f"group has {size} in the base model; the folder does not belong to this base "
                f"model (save the super-network again)"
            )


def _check_expert_orders_fit(
    expert_orders: Mapping[str, Sequence[Sequence[int]]],
    model: nn.Module,
    graph: Graph,
    groups: Sequence[Group],
    path: Path,
) -> None:
    """The groups ordered per expert are the base model's expert-neuron groups, with one
    order per expert, each of the group's size."""
    experts = expert_groups(model, graph, groups)
    by_name = {g.name: g for g in groups}
    for name, rows in expert_orders.items():
        group = by_name.get(name)
        n = experts.get(group.uid) if group is not None else None
        if group is None or len(rows) != n or any(len(r) != group.size for r in rows):
            raise SaveLoadError(
                f"{str(path)!r}: 'expert_orders'[{name!r}] does not fit the base model (not "
                f"a group of stacked expert neurons with one order per expert of its size); "
                f"the folder does not belong to this base model (save the super-network again)"
            )


def _check_space_fits(supernet: Supernet, data: Mapping[str, Any], path: Path) -> None:
    """The space and fixed groups rebuilt on the base model are the ones saved."""
    saved = {c["name"]: c for c in data["space"]["choices"]}
    built = {c.name: c.to_dict() for c in supernet.space}
    for name in sorted(set(saved) | set(built)):
        if saved.get(name) != built.get(name):
            raise SaveLoadError(
                f"{str(path)!r}: the space rebuilt on the base model differs from the saved one "
                f"at choice {name!r} (saved {short(saved.get(name), 120)}, rebuilt "
                f"{short(built.get(name), 120)}); the folder was altered or does not belong to "
                f"this base model (or netsculpt version): save the super-network again"
            )
    if list(saved) != list(built) or data["fixed"] != supernet.fixed:
        raise SaveLoadError(
            f"{str(path)!r}: the choices' order or the fixed groups rebuilt on the base model "
            f"(fixed: {short(supernet.fixed, 120)}) differ from the saved ones "
            f"({short(data['fixed'], 120)}); save the super-network again"
        )
