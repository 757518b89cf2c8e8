"""netsculpt._factories: the one place a factory string becomes code to call."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import netsculpt
from netsculpt._factories import is_dotted_spec, is_file_spec, resolve
from netsculpt.errors import FactoryError

SRC = Path(netsculpt.__file__).parent
WHAT = {"what": "test factory", "expects": "a function returning 42"}


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh package ``<name>.sub`` on sys.path; its name is unique to the test."""
    name = f"nsfactories_{abs(hash(str(tmp_path))):x}"
    sub = tmp_path / name / "sub"
    sub.mkdir(parents=True)
    (tmp_path / name / "__init__.py").write_text("")
    (sub / "__init__.py").write_text("")
    (sub / "models.py").write_text(
        "class Builder:\n"
        "    @staticmethod\n"
        "    def make():\n"
        "        return 42\n"
        "\n"
        "def build():\n"
        "    return 42\n"
        "\n"
        "NOT_CALLABLE = 7\n"
    )
    (sub / "broken.py").write_text("raise RuntimeError('boom while importing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def test_dotted_module_and_dotted_attribute(package: str) -> None:
    make = resolve(f"{package}.sub.models:Builder.make", **WHAT)
    assert make() == 42
    assert resolve(f"{package}.sub.models:build", **WHAT)() == 42


def test_file_spec_is_imported_when_allowed(tmp_path: Path) -> None:
    file = tmp_path / "my_factory.py"
    file.write_text("def build():\n    return 42\n")
    build = resolve(f"{file}:build", allow_files=True, **WHAT)
    assert build() == 42
    assert resolve(f"{file}:build", allow_files=True, **WHAT) is build  # imported once


def test_file_spec_is_refused_unless_allowed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    file = tmp_path / "runs_on_import.py"
    file.write_text(f"open({str(marker)!r}, 'w').close()\ndef build():\n    return 42\n")
    with pytest.raises(FactoryError) as info:
        resolve(f"{file}:build", **WHAT)
    message = str(info.value)
    assert "names the Python file" in message and "'package.module:factory'" in message
    assert not marker.exists()  # nothing in the file ran


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FactoryError, match="does not exist; check the path"):
        resolve(f"{tmp_path / 'absent.py'}:build", allow_files=True, **WHAT)


def test_missing_module() -> None:
    with pytest.raises(FactoryError) as info:
        resolve("no_such_pkg_xyz.models:build", **WHAT)
    message = str(info.value)
    assert message.startswith("cannot import test factory 'no_such_pkg_xyz.models:build'")
    assert "could not be imported (ModuleNotFoundError" in message
    assert "installed or on PYTHONPATH" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


@pytest.mark.parametrize("attr", ["nothing_here", "Builder.nothing_here", "nothing.make"])
def test_missing_attribute(package: str, attr: str) -> None:
    with pytest.raises(FactoryError) as info:
        resolve(f"{package}.sub.models:{attr}", **WHAT)
    message = str(info.value)
    assert f"names no callable {attr!r}" in message
    assert f"has no attribute {attr!r}" in message
    assert message.endswith("point it at a function returning 42")


def test_not_callable(package: str) -> None:
    with pytest.raises(FactoryError) as info:
        resolve(f"{package}.sub.models:NOT_CALLABLE", **WHAT)
    message = str(info.value)
    assert "names no callable 'NOT_CALLABLE': it is 7 (int), not a function or class" in message


@pytest.mark.parametrize(
    "spec",
    [
        "no_colon",
        ":build",
        "pkg.models:",
        ":",
        "",
        "pkg.models::build",
        "pkg models:build",
        "pkg-models:build",
        "pkg.models:build()",
        "pkg.models:1build",
        "pkg..models:build",
        "pkg/models:build",
        ".py:build",
        "pkg.models:build\n",
        None,
        5,
    ],
)
def test_malformed_strings(spec: object) -> None:
    with pytest.raises(FactoryError) as info:
        resolve(spec, **WHAT)
    message = str(info.value)
    assert message.startswith(f"test factory {spec!r} is not of the form")
    assert "'package.module:factory'; write e.g. 'mypkg.models:build'" in message


def test_malformed_message_lists_file_form_and_builtin_names() -> None:
    with pytest.raises(FactoryError) as info:
        resolve("resnet50", allow_files=True, builtins=("digits", "minilm"), **WHAT)
    assert str(info.value).startswith(
        "test factory 'resnet50' is neither a built-in name (digits, minilm) nor of the form "
        "'package.module:factory' or 'path/to/file.py:factory'"
    )


def test_errors_raised_while_importing_are_wrapped(package: str, tmp_path: Path) -> None:
    with pytest.raises(FactoryError) as info:
        resolve(f"{package}.sub.broken:build", **WHAT)
    assert "could not be imported (RuntimeError: boom while importing)" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)

    file = tmp_path / "broken_file.py"
    file.write_text("raise ValueError('bad file')\n")
    with pytest.raises(FactoryError) as info:
        resolve(f"{file}:build", allow_files=True, **WHAT)
    assert f"file {str(file)!r} could not be imported (ValueError: bad file)" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)
    assert not any(getattr(m, "__file__", None) == str(file) for m in list(sys.modules.values()))


def test_spec_predicates() -> None:
    assert is_dotted_spec("pkg.models:Builder.make")
    assert not is_dotted_spec("path/to/file.py:build")
    assert not is_dotted_spec(5)
    assert not is_dotted_spec("pkg.models:build\n")
    assert is_file_spec("path/to/file.py:build") and is_file_spec("./models:build")
    assert not is_file_spec("pkg.models:build")


# --- the rest of the package resolves factory strings only through _factories --------------

#: calls that import or execute code named by a string
_IMPORTERS = {"import_module", "__import__", "spec_from_file_location", "exec_module"}
_SPLITTERS = {"partition", "rpartition", "split"}


def _imports_after_splitting_on_colon(source: str) -> set[str]:
    """The importing calls in ``source`` if it also splits a string on ``":"``, else none."""
    importers: set[str] = set()
    splits_on_colon = False
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in _IMPORTERS:
            importers.add(name)
        if name in _SPLITTERS and any(
            isinstance(arg, ast.Constant) and arg.value == ":" for arg in node.args
        ):
            splits_on_colon = True
    return importers if splits_on_colon else set()


def test_the_detector_finds_the_pattern() -> None:
    old = (
        "import importlib\n"
        "def _resolve(spec):\n"
        "    module_name, _, attr = spec.partition(':')\n"
        "    return getattr(importlib.import_module(module_name), attr)\n"
    )
    assert _imports_after_splitting_on_colon(old) == {"import_module"}
    lazy = "import importlib\ndef f(m):\n    return importlib.import_module(m)\n"
    assert _imports_after_splitting_on_colon(lazy) == set()


def test_only_factories_module_resolves_factory_strings() -> None:
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "_factories.py":
            continue
        found = _imports_after_splitting_on_colon(path.read_text())
        if found:
            offenders[str(path.relative_to(SRC))] = sorted(found)
    assert offenders == {}, (
        "these modules split a string on ':' and import what it names; resolve factory "
        "strings with netsculpt._factories.resolve instead"
    )


def test_only_factories_module_executes_files() -> None:
    users = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "spec_from_file_location" in path.read_text() or "exec_module" in path.read_text()
    )
    assert users == ["_factories.py"]
