"""netsculpt elastic / train-supernet / extract: a super-network folder made, trained and
sliced from the command line (two processes under torchrun: test_elastic_torchrun.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from supernet_io_helpers import TinyCNN
from typer.testing import CliRunner

import netsculpt as ns
from netsculpt.cli import app
from netsculpt.supernets.io import DESCRIPTION

runner = CliRunner()
SPEC = "supernet_io_helpers:tiny_cnn"


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "supernet"
    code, output = _run("elastic", SPEC, "--out", out, "--keep", "0.25,0.5,1", "--depth")
    assert code == 0, output
    assert "18 sub-networks" in output
    assert "block:block" in output and "keep or drop" in output
    assert "largest 2,986, smallest 98" in output  # every parameter of TinyCNN, and the least
    return out


def test_help() -> None:
    for command in ("elastic", "train-supernet", "extract"):
        code, output = _run(command, "--help")
        assert code == 0 and "Usage" in output, output


def test_elastic_writes_a_folder_ns_load_supernet_reads(folder: Path) -> None:
    data = json.loads((folder / DESCRIPTION).read_text())
    assert data["base"] == {"kind": "factory", "factory": SPEC}  # typed by the user
    assert data["config"]["keep"] == [0.25, 0.5, 1.0] and data["config"]["depth"] is True
    supernet = ns.load_supernet(folder, base=TinyCNN())
    assert supernet.space.size == 18


def test_extract_writes_an_ordinary_pruned_model_folder(folder: Path, tmp_path: Path) -> None:
    supernet = ns.load_supernet(folder, base=TinyCNN())
    arch = supernet.sample(3)
    code, output = _run(
        "extract", folder, "--arch", json.dumps(arch), "--out", tmp_path / "small",
        "--base", SPEC, "--onnx",
    )  # fmt: skip
    assert code == 0, output
    assert "batch-norm statistics are the super-network's shared ones" in output
    assert (tmp_path / "small" / "model.onnx").is_file()
    small = ns.load(tmp_path / "small", base=TinyCNN())
    expected = supernet.extract(arch)
    x = supernet.example_inputs
    torch.testing.assert_close(small(x), expected(x))
    assert ns.plan_of(small).to_dict() == ns.plan_of(expected).to_dict()
    # the folder names the user's factory: trusted, it rebuilds the base on its own
    assert ns.load(tmp_path / "small", trust_code=True) is not None


def test_extract_recomputes_batch_norm_on_the_task(folder: Path, tmp_path: Path) -> None:
    code, output = _run(
        "extract", folder, "--arch", "smallest", "--out", tmp_path / "bn", "--trust-code",
        "--task", "digits", "--calib", "2",
    )  # fmt: skip
    assert code == 0, output
    assert "validation score" in output and "(digits)" in output
    supernet = ns.load_supernet(folder, base=TinyCNN())
    shared = supernet.extract(supernet.smallest())
    small = ns.load(tmp_path / "bn", base=TinyCNN())
    assert not torch.allclose(small.stem[1].running_mean, shared.stem[1].running_mean)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--arch", "{not json"], "InputError: --arch '{not json' is neither"),
        (["--arch", '{"stem.0": 7}'], "InputError: --arch['stem.0'] = 7 is outside the space"),
        (["--arch", "smallest", "--calib", "2"], "--calib 2 needs --task"),
    ],
)
def test_extract_refuses_bad_archs(
    folder: Path, tmp_path: Path, args: list[str], words: str
) -> None:
    code, output = _run("extract", folder, *args, "--out", tmp_path / "x", "--base", SPEC)
    assert code == 2
    assert words in output and len(output.strip().splitlines()) == 1, output


def test_a_folder_naming_a_factory_needs_trust(folder: Path, tmp_path: Path) -> None:
    code, output = _run("extract", folder, "--arch", "largest", "--out", tmp_path / "x")
    assert code == 2
    assert output.startswith("UntrustedCodeError:") and "--trust-code" in output, output


def test_elastic_refuses_bad_options(tmp_path: Path) -> None:
    code, output = _run("elastic", SPEC, "--out", tmp_path / "x", "--keep", "half")
    assert code == 2 and "--keep 'half' is not a comma-separated list" in output, output
    code, output = _run("elastic", SPEC, "--out", tmp_path / "x", "--keep", "0.5,2")
    assert code == 2 and "keep fraction in (0, 1]" in output, output
    code, output = _run("train-supernet", tmp_path / "nowhere", "--task", "digits")
    assert code == 2 and "does not exist" in output, output


def test_train_supernet_trains_and_saves(folder: Path, tmp_path: Path) -> None:
    before = ns.load_supernet(folder, base=TinyCNN())
    out = tmp_path / "trained"
    code, output = _run(
        "train-supernet", folder, "--task", "digits", "--budget", "3", "--random", "1",
        "--seed", "0", "--base", SPEC, "--out", out, "--no-progress", "--checkpoint",
        tmp_path / "checkpoint",
    )  # fmt: skip
    assert code == 0, output
    assert "validation score: largest sub-network" in output
    assert any((tmp_path / "checkpoint").iterdir())
    after = ns.load_supernet(out, base=TinyCNN())
    assert after.orders == before.orders
    assert after.space.to_dict() == before.space.to_dict()
    changed = [
        name
        for name, p in after.model.named_parameters()
        if not torch.equal(p, before.model.get_parameter(name))
    ]
    assert changed  # the weights were trained
    # the folder names the factory it was made with, as the original did
    assert json.loads((out / DESCRIPTION).read_text())["base"]["factory"] == SPEC
