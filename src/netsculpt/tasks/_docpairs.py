"""Query/document pairs built from the docstrings of Python's standard library.

Each public function, class and method with a long enough docstring in a fixed list of
standard-library modules gives one pair: the **query** is the docstring's first sentence
and the **document** is the rest. Pairs are deduplicated (one pair per object, and no
query or document text, compared without case, appears twice anywhere) and assigned to one
of three parts by a hash of the query text, so the parts share no query and no document,
and a pair that exists in two Python versions lands in the same part in both:

* ``"test"`` (30% of the hash range; 352 pairs on Python 3.11): the reported recall,
  ``MiniLMTask().evaluate(model, "test")``;
* ``"validation"`` (30%; 353 pairs on Python 3.11): what the search, early stopping and
  every selection score, ``MiniLMTask().evaluate(model)``;
* ``"train"`` (40%; 471 pairs on Python 3.11): calibration batches, example inputs and
  training batches.

Within a part, pairs are ordered by that hash (a fixed pseudo-random order). The first 256
test pairs are the 256 pairs the task scored before it had a separate validation part, and
the train part is unchanged. The pairs
depend only on the running Python's standard library (aliases, objects that other
packages patch into it and modules whose hooks are swapped at run time, such as ``sys``
and ``warnings``, are left out), so they are identical from run to run and machine to machine for
one Python version.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

__all__ = ["PACKAGE_MODULES", "STDLIB_MODULES", "TextPair", "docstring_pairs", "package_pairs"]

Part = Literal["train", "validation", "test", "packages"]

#: Where the parts end in the hash range [0, 1): test below 0.3, validation below 0.6.
_TEST_END = 0.3
_VALIDATION_END = 0.6

#: The standard-library modules whose docstrings make the pairs, walked in this order.
STDLIB_MODULES: tuple[str, ...] = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "bz2", "calendar",
    "cmath", "codecs", "collections", "colorsys", "concurrent.futures", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "dis",
    "email.message", "email.utils", "enum", "filecmp", "fnmatch", "fractions", "ftplib",
    "functools", "gc", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac",
    "html", "html.parser", "http.client", "http.cookiejar", "http.server", "imaplib",
    "inspect", "io", "ipaddress", "itertools", "json", "keyword", "linecache", "locale",
    "logging", "logging.handlers", "lzma", "mailbox", "math", "mimetypes", "multiprocessing",
    "numbers", "operator", "os", "os.path", "pathlib", "pdb", "pickle", "pickletools",
    "pkgutil", "platform", "plistlib", "poplib", "pprint", "queue", "quopri", "random", "re",
    "reprlib", "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "signal",
    "smtplib", "socket", "socketserver", "sqlite3", "ssl", "stat", "statistics", "string",
    "struct", "subprocess", "symtable", "sysconfig", "tabnanny", "tarfile",
    "tempfile", "textwrap", "threading", "time", "timeit", "token", "tokenize", "trace",
    "traceback", "tracemalloc", "types", "typing", "unicodedata", "unittest", "urllib.parse",
    "urllib.request", "uuid", "wave", "weakref", "webbrowser",
    "xml.dom.minidom", "xml.etree.ElementTree", "xml.sax", "zipfile", "zlib", "zoneinfo",
)  # fmt: skip

#: Modules of netsculpt's own dependencies whose docstrings make the out-of-domain pairs
#: (:func:`package_pairs`): scientific and tooling text that no part of the standard-library
#: pairs, and so no training, calibration or choice, has seen.
PACKAGE_MODULES: tuple[str, ...] = (
    "numpy", "numpy.linalg", "numpy.random", "scipy.linalg", "scipy.optimize",
    "scipy.signal", "sklearn.linear_model", "sklearn.preprocessing", "sklearn.model_selection",
    "sklearn.metrics", "sklearn.cluster", "sklearn.decomposition", "optuna.study",
    "optuna.samplers", "optuna.storages", "rich.console", "rich.progress", "rich.table",
    "onnx.helper", "safetensors.torch",
)  # fmt: skip

_MIN_QUERY = 24
_MAX_QUERY = 300
_MIN_DOCUMENT = 80
_MAX_DOCUMENT = 1000
# "name(args)" or "name(args) -> result": a signature line that some C docstrings start with
_SIGNATURE = re.compile(r"^[\w.]+\(.*\)(\s*->\s*.+)?$", re.DOTALL)
# a sentence end: . ! or ? then whitespace, then something that starts a new sentence
_SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z0-9(`'\"])")


@dataclass(frozen=True)
class TextPair:
    """One retrieval pair: ``query`` should retrieve ``document``; ``name`` is the source."""

    name: str
    query: str
    document: str
    part: Part


def _from_stdlib(obj: Any) -> bool:
    """False for objects that another package added to a stdlib namespace (a monkeypatch)."""
    target = obj.fget if isinstance(obj, property) else obj
    module = getattr(target, "__module__", None)
    return not isinstance(module, str) or module.partition(".")[0] in sys.stdlib_module_names


def _defined_here(module: ModuleType, attr: str, obj: Any) -> bool:
    """Whether ``module.attr`` is the object's own definition, not an alias or a replacement.

    Keeps ``json.dumps``, ``heapq.heappush`` (defined in ``_heapq``) and
    ``asyncio.sleep`` (defined in ``asyncio.tasks``), skips aliases such
    as ``uuid.int_`` and hooks that frameworks swap at run time (``threading.excepthook``).
    """
    if getattr(obj, "__name__", None) != attr:
        return False
    owner = getattr(obj, "__module__", None)
    if not isinstance(owner, str):
        return True
    name = module.__name__
    return (
        owner == name
        or owner.startswith(name + ".")  # a package re-exporting its submodules' names
        or owner.lstrip("_") == name.rpartition(".")[2]  # a C accelerator such as _heapq
    )


def _from_package(package: str) -> Callable[[Any], bool]:
    def check(obj: Any) -> bool:
        target = obj.fget if isinstance(obj, property) else obj
        module = getattr(target, "__module__", None)
        return isinstance(module, str) and module.partition(".")[0] == package

    return check


def _members(
    module_name: str, own: Callable[[Any], bool] = _from_stdlib
) -> Iterator[tuple[str, Any]]:
    try:
        module = importlib.import_module(module_name)
    except ImportError:  # absent from this Python build (e.g. no _ssl): fewer pairs
        return
    for attr, obj in sorted(vars(module).items()):
        if attr.startswith("_") or not (inspect.isclass(obj) or callable(obj)):
            continue
        if not _defined_here(module, attr, obj):
            continue
        yield f"{module_name}.{attr}", obj
        if inspect.isclass(obj):
            for member_name, member in sorted(vars(obj).items()):
                if member_name.startswith("_"):
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if not (callable(member) or isinstance(member, property)):
                    continue
                if own(member) and getattr(member, "__name__", member_name) == member_name:
                    yield f"{module_name}.{attr}.{member_name}", member


def _split(doc: str) -> tuple[str, str] | None:
    """``(first sentence, rest)`` of a docstring, or ``None`` when it does not make a pair."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", inspect.cleandoc(doc)) if p.strip()]
    while paragraphs and _SIGNATURE.match(paragraphs[0]):
        paragraphs.pop(0)
    if not paragraphs:
        return None
    summary = " ".join(paragraphs[0].split())
    if len(paragraphs) > 1 and _SENTENCE_END.search(summary) is None:
        # a PEP 257 summary paragraph, with or without a final full stop
        query, document = summary, " ".join(" ".join(paragraphs[1:]).split())
    else:
        text = " ".join(" ".join(paragraphs).split())
        end = _SENTENCE_END.search(text, _MIN_QUERY - 1)
        if end is None:
            return None
        query, document = text[: end.end()], text[end.end() :].strip()
    if len(query) < _MIN_QUERY:
        return None
    if len(query) > _MAX_QUERY or len(document) < _MIN_DOCUMENT:
        return None
    return query, document[:_MAX_DOCUMENT]


def _key(query: str) -> int:
    return int.from_bytes(hashlib.sha256(query.encode()).digest()[:8], "big")


def _part(key: int) -> Part:
    fraction = key / 2**64
    if fraction < _TEST_END:
        return "test"
    return "validation" if fraction < _VALIDATION_END else "train"


def _pairs(
    modules: Sequence[str],
    own: Callable[[str], Callable[[Any], bool]],
    part: Callable[[int], Part],
    seen_texts: set[str],
) -> list[tuple[int, TextPair]]:
    """``(hash, pair)`` for every object of ``modules`` whose docstring makes a pair, one per
    object, skipping any query or document text already in ``seen_texts`` (updated)."""
    seen_objects: set[int] = set()
    found: list[tuple[int, TextPair]] = []
    with warnings.catch_warnings():  # importing / reading deprecated names warns
        warnings.simplefilter("ignore")
        members = [
            (name, obj, getattr(obj, "__doc__", None))
            for module_name in modules
            for name, obj in _members(module_name, own(module_name))
        ]
    for name, obj, doc in members:
        if id(obj) in seen_objects or not isinstance(doc, str):
            continue
        seen_objects.add(id(obj))
        pair = _split(doc)
        if pair is None:
            continue
        query, document = pair
        if query.lower() in seen_texts or document.lower() in seen_texts:
            continue
        seen_texts.update((query.lower(), document.lower()))
        key = _key(query)
        found.append((key, TextPair(name, query, document, part(key))))
    return found


@functools.cache
def docstring_pairs() -> tuple[TextPair, ...]:
    """All pairs, deduplicated, ordered by part (test, validation, train), then by hash."""
    found = _pairs(STDLIB_MODULES, lambda _: _from_stdlib, _part, set())
    order = {"test": 0, "validation": 1, "train": 2}
    found.sort(key=lambda item: (order[item[1].part], item[0]))
    return tuple(pair for _, pair in found)


@functools.cache
def package_pairs() -> tuple[TextPair, ...]:
    """Out-of-domain pairs from the docstrings of :data:`PACKAGE_MODULES`, ordered by hash.

    Built like :func:`docstring_pairs` (one per object, no query or document text twice,
    nothing that appears among the standard-library pairs), all in part ``"packages"``:
    text a model recovered on the standard-library pairs has never seen. They depend on the
    installed versions of those packages; modules that are not installed give no pairs.
    """
    seen_texts = {t.lower() for p in docstring_pairs() for t in (p.query, p.document)}
    found = _pairs(
        PACKAGE_MODULES,
        lambda module: _from_package(module.partition(".")[0]),
        lambda _: "packages",
        seen_texts,
    )
    found.sort(key=lambda item: item[0])
    return tuple(pair for _, pair in found)
