"""The smoke recipes on the real subsets, through `clinseq pretrain` (marked slow; CI runs them).

Each recipe runs its smoke profile with even fewer steps than the profile (the profile itself is sized
for ≤ 3 min on 2 CPU cores); one run of the PTB-XL poly-window recipe goes on to the linear probe and
prints both AUROCs with their CIs (the README's main job); one runs from a copy of recipes/ in another
folder (the recipe script is found beside the config, as for an installed clinseq); one is killed with
SIGKILL after a checkpoint and resumed, and must equal an uninterrupted run.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clinseq.cli import main
from clinseq.train import read_metrics

from .conftest import RECIPES, REPO

pytestmark = pytest.mark.slow

SMOKES = [
    ("ptbxl/pclr.yaml", "ptbxl"),
    ("ptbxl/simclr.yaml", "ptbxl"),
    ("ptbxl/polywindow.yaml", "ptbxl"),
    ("ptbxl/comet.yaml", "ptbxl"),
    ("ptbxl/pmq.yaml", "ptbxl"),
    ("ptbxl/cpc.yaml", "ptbxl"),
    ("ptbxl/sgconv.yaml", "ptbxl"),
    ("eeg/cpc.yaml", "eeg"),
    ("eeg/patient_contrast.yaml", "eeg"),
    ("eeg/sgconv.yaml", "eeg"),
    ("mimic_iv/patient_contrast.yaml", "mimic"),
]


@pytest.fixture()
def stores(request):
    def get(kind: str) -> Path:
        name = {"ptbxl": "ptbxl_store", "eeg": "eegmat_store", "mimic": "mimic_demo_store"}[kind]
        store = request.getfixturevalue(name)
        return Path(getattr(store, "path", store))

    return get


def _pretrain(config: Path | str, store: Path, out: Path, *extra: str) -> int:
    args = ["pretrain", str(config), "--profile", "smoke", "--out", str(out), "--set", f"data.store={store}"]
    args += ["--set", "train.progress=false"]
    for item in extra:
        args += ["--set", item]
    return main(args)


@pytest.mark.parametrize(("recipe", "kind"), SMOKES, ids=[r for r, _ in SMOKES])
def test_smoke_recipe_trains(recipe: str, kind: str, stores, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _pretrain(RECIPES / recipe, stores(kind), out, "train.max_steps=3", "eval.enabled=false") == 0
    metrics = read_metrics(out)
    assert metrics[-1]["step"] == 3 and all(math.isfinite(m["loss"]) for m in metrics)
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "step-00000003" / "state.pt").is_file()


def test_main_job_prints_both_aurocs_with_cis(ptbxl_store, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    rc = _pretrain(
        RECIPES / "ptbxl" / "polywindow.yaml", ptbxl_store.path, out, "train.max_steps=6", "eval.n_boot=50"
    )
    assert rc == 0
    printed = capsys.readouterr().out
    ci = r"0\.\d{3} \[0\.\d{3}, 0\.\d{3}\]"
    rows = [line for line in printed.splitlines() if re.match(r"^10 % \(", line)]
    assert rows and re.search(rf"{ci}\s+{ci}", rows[0]), printed  # pretrained and random init, each with a CI
    assert "pretrained" in printed and "random init" in printed
    assert (out / "eval" / "seed0" / "eval_ptbxl_superdiagnostic.json").is_file()


def test_runs_from_a_copy_of_the_recipes_elsewhere(eegmat_store, tmp_path: Path, monkeypatch) -> None:
    copy = tmp_path / "my_recipes"
    shutil.copytree(RECIPES, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(tmp_path)  # not the repository: the script is found relative to the config
    rc = _pretrain(
        copy / "eeg" / "patient_contrast.yaml", eegmat_store, tmp_path / "run", "train.max_steps=2"
    )
    assert rc == 0 and read_metrics(tmp_path / "run")[-1]["step"] == 2


def test_sigkill_then_resume_equals_uninterrupted(eegmat_store, tmp_path: Path) -> None:
    extra = ["train.max_steps=8", "train.log_every=1", "train.checkpoint_every=2"]
    recipe = RECIPES / "eeg" / "patient_contrast.yaml"
    assert _pretrain(recipe, eegmat_store, tmp_path / "whole", *extra) == 0

    killed = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "clinseq.cli",
        "pretrain",
        str(recipe),
        "--profile",
        "smoke",
        "--out",
        str(killed),
    ]
    for item in [f"data.store={eegmat_store}", "train.progress=false", *extra]:
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (killed / "checkpoints" / "step-00000004").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its 2nd checkpoint"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    assert main(["pretrain", "--resume", str(killed), "--set", "train.progress=false"]) == 0
    whole, resumed = read_metrics(tmp_path / "whole"), read_metrics(killed)
    assert [m["step"] for m in resumed] == list(range(1, 9))
    assert [m["loss"] for m in resumed] == [m["loss"] for m in whole]
