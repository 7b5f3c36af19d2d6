"""DDP under torchrun with 2 gloo processes equals one process on the same global batch.

The recipe script itself is launched with ``torch.distributed.run`` (what ``torchrun`` runs). The
encoder is a BatchNorm-free patch transformer with a layer-norm projection head: on the CPU (gloo)
torch has no SyncBatchNorm, and per-rank BatchNorm statistics would differ from one process's by design.
The patient sampler gives rank r the r-th half of each global step's patients (windows drawn per global
step), PCLR gathers the keys of both ranks with their gradient, and DDP averages the gradients: the
losses and the weights after 3 steps match a single process with twice the patients per batch.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from clinseq.train import load_checkpoint, read_metrics

from .conftest import REPO, tiny_values

# Three Python processes (one single, two ranks) each import torch and read the store: ~15-40 s.
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(store: Path, run_dir: Path, patients_per_batch: int) -> dict:
    values = tiny_values(store, run_dir)
    values["run"]["num_threads"] = 1
    values["data"].update(
        pretrain_splits=["train"],
        sampler="patient",
        sampler_kwargs={
            "patients_per_batch": patients_per_batch,
            "views_per_patient": 2,
            "short_patients": "fill",
        },
    )
    values["model"] = {
        "encoder": "patch_transformer",
        "encoder_kwargs": {"patch_len": 25, "dim": 16, "depth": 1, "n_heads": 2},
        "projection_dim": 8,
        "projection_norm": "ln",
    }
    values["method"] = {"name": "pclr"}
    values["train"]["max_steps"] = 3
    return values


def _run(args: list[str], config: dict, path: Path) -> None:
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, *args, str(REPO / "recipes" / "pretrain.py"), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_two_gloo_ranks_equal_one_process(ptbxl_store, tmp_path: Path) -> None:
    store = ptbxl_store.path
    _run([], _config(store, tmp_path / "single", patients_per_batch=8), tmp_path / "single.yaml")
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    _run(launcher, _config(store, tmp_path / "ddp", patients_per_batch=4), tmp_path / "ddp.yaml")

    single, ddp = read_metrics(tmp_path / "single"), read_metrics(tmp_path / "ddp")
    assert [m["step"] for m in ddp] == [1, 2, 3]
    assert [m["loss"] for m in ddp] == pytest.approx([m["loss"] for m in single], rel=1e-5)
    assert ddp[0]["samples_per_s"] > 0
    w1, w2 = load_checkpoint(tmp_path / "single")[0], load_checkpoint(tmp_path / "ddp")[0]
    assert w2["world_size"] == 2 and w1["world_size"] == 1
    for name, value in w1["method"].items():
        torch.testing.assert_close(w2["method"][name], value, rtol=1e-4, atol=1e-5, msg=name)
