"""Every python example in docs/extending.md runs, in order, as a reader would run it.

The blocks share one namespace, seeded with a tiny ``model`` and its ``example_inputs``
(the names the prose uses); the examples' own ``assert`` lines are the checks, and the
test adds a few on what they leave behind. README.md's example runs the same way, from an
empty folder (it trains the digits CNN once per cache, then runs a 12-trial search).
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

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
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


def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import netsculpt as ns

    blocks = python_blocks(REPO / "README.md")
    assert len(blocks) == 2, "README.md's Python API examples moved or split"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "readme"}
    run_blocks(REPO / "README.md", namespace)

    model, small, again = namespace["model"], namespace["small"], namespace["again"]
    x = namespace["example_inputs"]
    assert ns.count_params(small) < ns.count_params(model)
    torch.testing.assert_close(again(x), small(x))  # the folder reloads the same model
    assert (tmp_path / "out" / "model.onnx").is_file() and (tmp_path / "picked").is_dir()
    best = namespace["best"]
    assert 0.0 <= best.test_score <= 1.0 and best.score > 0.5
    # the super-network example: trained, sliced, saved, searched without retraining
    supernet, fast, front = namespace["supernet"], namespace["fast"], namespace["front"]
    assert front.kind == "supernet" and len(front.study.trials) == 12
    assert fast.latency_ms <= front.baseline.latency_ms / 1.5
    assert supernet.space.check(fast.arch) == fast.arch
    again = ns.load_supernet(tmp_path / "supernet", base=namespace["task"].pretrained_model())
    assert not supernet.training and not again.training  # eval, as the model was
    with torch.no_grad():
        torch.testing.assert_close(again(x), supernet(x))
