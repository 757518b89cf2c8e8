"""Every python example in docs/extending.md runs, in order, as a reader would run it.

The blocks share one namespace, seeded with a tiny ``model`` and its ``example_inputs``
(the names the prose uses); the examples' own ``assert`` lines are the checks, and the
test adds a few on what they leave behind. README.md's examples are not run here: its
``ns.search`` snippet runs a 100-trial study with a SQLite storage.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from netsculpt.graph.ops import HANDLERS
from netsculpt.testing.zoo import ZOO

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line number, code)`` of every fenced python block in a markdown file."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in FENCE.finditer(text)]


def run_blocks(path: Path, namespace: dict[str, Any]) -> None:
    for line, code in python_blocks(path):
        try:
            exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
        except Exception:  # noqa: BLE001 - report which block failed, with its traceback
            pytest.fail(
                f"the example at {path.name} line {line} failed:\n{traceback.format_exc()}",
                pytrace=False,
            )


@pytest.fixture
def default_handlers() -> Iterator[None]:
    """The examples register a handler globally; the rest of the session keeps the defaults."""
    saved = HANDLERS.copy()
    yield
    HANDLERS.clear()
    HANDLERS.update(saved)


def test_fence_parser_finds_blocks_and_their_lines(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("text\n\n```python\na = 1\n```\n\n```bash\nls\n```\n```python\nb = 2\n```\n")
    assert python_blocks(doc) == [(4, "a = 1\n"), (11, "b = 2\n")]


def test_extending_examples_run(default_handlers: None) -> None:
    blocks = python_blocks(DOCS / "extending.md")
    assert len(blocks) >= 5, "docs/extending.md lost its examples"
    model, example_inputs = ZOO["mlp"]()
    namespace: dict[str, Any] = {
        "__name__": "docs_extending",
        "model": model,
        "example_inputs": example_inputs,
    }
    run_blocks(DOCS / "extending.md", namespace)

    # the custom op is real, and the group through it is prunable, not protected
    assert hasattr(torch.ops.mylib, "my_channel_scale")
    assert "mylib::my_channel_scale" in HANDLERS
    graph = namespace["graph"]
    conv1 = graph.group("conv1")
    assert conv1.prunable and not conv1.reason
    assert {"conv1.weight", "scale", "conv2.weight"} <= set(conv1.params)
    report = namespace["report"]
    assert report.n_groups == 1 and report.params_after < report.params_before
    # the importance example produced a plan with the registered criterion
    assert type(namespace["plan"]).__name__ == "Plan"
