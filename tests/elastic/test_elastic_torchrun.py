"""netsculpt train-supernet on two processes on one machine, started as torchrun starts it:
every process joins a gloo group, trains its share of each batch, and rank 0 alone saves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from supernet_io_helpers import TinyCNN
from typer.testing import CliRunner

import netsculpt as ns
from netsculpt.cli import app

HERE = Path(__file__).parent


def test_train_supernet_runs_on_two_processes(tmp_path: Path) -> None:
    folder, out = tmp_path / "supernet", tmp_path / "trained"
    made = CliRunner().invoke(
        app, ["elastic", "supernet_io_helpers:tiny_cnn", "--out", str(folder), "--depth"]
    )
    assert made.exit_code == 0, made.output
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", "-m", "netsculpt", "train-supernet", str(folder), "--task", "digits",
            "--budget", "3", "--trust-code", "--out", str(out), "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "trained on 2 processes" in done.stdout
    assert done.stdout.count("written:") == 1  # rank 0 alone saves
    before = ns.load_supernet(folder, base=TinyCNN())
    after = ns.load_supernet(out, base=TinyCNN())
    assert after.space.to_dict() == before.space.to_dict()
    assert not all(
        torch.equal(p, before.model.get_parameter(name))
        for name, p in after.model.named_parameters()
    )
