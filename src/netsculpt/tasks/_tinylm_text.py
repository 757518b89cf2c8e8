"""The text of the ``tinylm`` task: docstrings of Python's standard library, split by source.

Each **source** is one top-level standard-library module or package (``json``, ``email``,
``asyncio``, ...; every ``.py`` file of a package belongs to its source). Its text is the
module, class and function docstrings of its files, read with :mod:`ast` from the source
files (nothing is imported or run), in sorted file order and :func:`ast.walk` order, joined
by blank lines. A docstring already seen in an earlier source (sorted by name) is left out,
so boilerplate does not repeat.

A source belongs to one part, fixed by a hash of its name (independent of the hash seed and
of every other source): **test** below 0.1 of the hash range, **validation** below 0.2,
**train** above. So no source, and no file, gives text to two parts. The text of each part
is encoded as UTF-8 bytes and cut into non-overlapping windows of ``seq_len + 1`` bytes per
source (the tail shorter than a window is dropped); a validation window equal to a train
window, and a test window equal to a train or validation window, is dropped too, so no two
parts hold an identical sequence. Within a part, windows are ordered by a hash of their
bytes: a fixed pseudo-random order, so the first ``n`` windows mix many sources.

The text depends only on the running Python's standard library: identical from run to run
(for one Python version), and :func:`corpus_fingerprint` changes when it does not.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

__all__ = ["LMSplits", "Part", "corpus_fingerprint", "lm_splits", "source_part", "source_texts"]

Part = Literal["train", "validation", "test"]

#: Where the parts end in the hash range [0, 1) of a source name.
_TEST_END = 0.1
_VALIDATION_END = 0.2

#: Standard-library names left out: the test suite, IDLE, demos and deprecated converters
#: (code samples and GUI text rather than documentation).
_SKIPPED = frozenset({"test", "idlelib", "turtledemo", "lib2to3", "pydoc_data", "this"})

_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def source_part(name: str) -> Part:
    """The part a source belongs to, from the SHA-256 of its name."""
    fraction = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64
    if fraction < _TEST_END:
        return "test"
    return "validation" if fraction < _VALIDATION_END else "train"


def _files(name: str) -> list[Path]:
    """The ``.py`` files of the top-level standard-library module ``name`` (none if it has
    no Python source); found with :func:`importlib.util.find_spec`, which imports nothing for
    a top-level name."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    origin = getattr(spec, "origin", None)
    if spec is None or not isinstance(origin, str) or not origin.endswith(".py"):
        return []  # built-in or compiled: no source text
    path = Path(origin)
    if path.name != "__init__.py":
        return [path]
    return sorted(
        (p for p in path.parent.rglob("*.py") if not {"test", "tests"} & set(p.parts)),
        key=lambda p: p.relative_to(path.parent).as_posix(),
    )


def _docstrings(path: Path) -> list[str]:
    try:
        with warnings.catch_warnings():  # invalid escape sequences in old sources warn
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, _DOC_NODES):
            doc = ast.get_docstring(node, clean=True)
            if doc and doc.strip():
                found.append(doc.strip())
    return found


@functools.cache
def source_texts() -> tuple[tuple[str, str], ...]:
    """``(source name, text)`` for every standard-library source with docstrings, sorted."""
    names = sorted(
        n for n in sys.stdlib_module_names if not n.startswith("_") and n not in _SKIPPED
    )
    seen: set[str] = set()
    out = []
    for name in names:
        docs = []
        for path in _files(name):
            for doc in _docstrings(path):
                if doc not in seen:
                    seen.add(doc)
                    docs.append(doc)
        if docs:
            out.append((name, "\n\n".join(docs) + "\n\n"))
    return tuple(out)


@dataclass(frozen=True)
class LMSplits:
    """Byte windows ``[N, seq_len + 1]`` (int64) of each part and the sources they came from.

    ``dropped`` counts the validation and test windows left out because an identical window
    is in an earlier part.
    """

    seq_len: int
    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor
    sources: dict[str, tuple[str, ...]]
    dropped: dict[str, int]
    fingerprint: str

    def part(self, name: Part) -> torch.Tensor:
        """The windows of part ``name``."""
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]


def _windows(text: str, size: int) -> list[bytes]:
    data = text.encode("utf-8")
    return [data[i : i + size] for i in range(0, len(data) - size + 1, size)]


def _order_key(window: bytes) -> bytes:
    return hashlib.sha256(window).digest()


@functools.cache
def lm_splits(seq_len: int) -> LMSplits:
    """The three parts cut into windows of ``seq_len + 1`` bytes (see the module docstring)."""
    texts = source_texts()
    size = seq_len + 1
    parts: dict[Part, list[bytes]] = {"train": [], "validation": [], "test": []}
    sources: dict[Part, list[str]] = {"train": [], "validation": [], "test": []}
    for name, text in texts:
        part = source_part(name)
        sources[part].append(name)
        parts[part].extend(_windows(text, size))
    dropped: dict[str, int] = {}
    earlier: set[bytes] = set(parts["train"])
    for part in ("validation", "test"):
        kept = [w for w in parts[part] if w not in earlier]  # type: ignore[index]
        dropped[part] = len(parts[part]) - len(kept)  # type: ignore[index]
        parts[part] = kept  # type: ignore[index]
        earlier.update(kept)

    def tensor(windows: list[bytes]) -> torch.Tensor:
        ordered = sorted(windows, key=_order_key)
        if not ordered:
            return torch.empty(0, size, dtype=torch.long)
        flat = torch.frombuffer(bytearray(b"".join(ordered)), dtype=torch.uint8)
        return flat.view(len(ordered), size).long()

    return LMSplits(
        seq_len=seq_len,
        train=tensor(parts["train"]),
        validation=tensor(parts["validation"]),
        test=tensor(parts["test"]),
        sources={k: tuple(v) for k, v in sources.items()},
        dropped=dropped,
        fingerprint=corpus_fingerprint(),
    )


@functools.cache
def corpus_fingerprint() -> str:
    """SHA-256 (16 hex digits) of every source's name, part and text: changes with the text."""
    digest = hashlib.sha256()
    for name, text in source_texts():
        digest.update(f"{name}\0{source_part(name)}\0".encode())
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]
