"""Fault injection (issue 14): kill a conversion and a training run at random points (SIGKILL, several
seeds), resume them, and compare digests with an uninterrupted run.

Short by default (two conversions and one training run, a 40-record PTB-XL copy, a 6-step tiny run);
``CLINSEQ_FAULT_SEEDS=N`` kills N of each (``benchmarks/fault_injection.py --seeds N`` runs this file so).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).parent


def _helpers(path: Path):
    """A conftest's helper functions (conftests are not importable by name)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_fault_{path.parent.name}_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_N = int(os.environ.get("CLINSEQ_FAULT_SEEDS", "0"))
#: Kill points: 2 conversions and 1 training run by default (CI), N of each with CLINSEQ_FAULT_SEEDS=N.
CONVERT_SEEDS = list(range(_N or 2))
TRAIN_SEEDS = list(range(_N or 1))
PART = 48_000  # two 12 × 1000 int16 ECGs per part
N_RECORDS = 40
LOAD_S = 0.01  # a slowed load, so that a kill falls inside the conversion


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def store_digest(path: Path) -> str:
    """Every signal part's bytes (the manifest's checksums, checked), the tables' rows and the manifest
    less its time and resume note."""
    from clinseq.timeline import TimelineStore

    store = TimelineStore.open(path)
    assert store.verify() == []
    manifest = dict(store.manifest)
    for key in ("created_at", "resumed_from"):
        manifest.pop(key, None)
    files = manifest.pop("files")
    h = hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode())
    for rel in sorted(files):
        if rel.startswith("signals/"):
            h.update(f"{rel}:{files[rel]['sha256']}".encode())
    for table in (store.recordings, store.patients):
        h.update(str(table.schema).encode())
        h.update(table.hash_rows(seed=0).to_numpy().tobytes())
    return h.hexdigest()


SLOW_CONVERT = textwrap.dedent(
    f"""
    import sys, time
    from clinseq.io import PTBXLSource, convert
    load = PTBXLSource.load
    def slow(self, item):
        time.sleep({LOAD_S})
        return load(self, item)
    PTBXLSource.load = slow
    convert(PTBXLSource(sys.argv[1], 100), sys.argv[2], part_max_bytes={PART}, progress=False,
            workers=int(sys.argv[3]))
    """
)


@pytest.fixture(scope="module")
def fault_ptbxl(ptbxl_root, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fault") / "ptbxl"
    _helpers(HERE / "conftest.py").copy_mini_ptbxl(ptbxl_root, root, N_RECORDS)
    return root


@pytest.mark.parametrize("seed", CONVERT_SEEDS)
def test_killed_conversion_resumes_to_the_same_store(fault_ptbxl, tmp_path, seed):
    from clinseq.io import PTBXLSource, convert

    rng = random.Random(seed)
    reference = convert(PTBXLSource(fault_ptbxl, 100), tmp_path / "ref", part_max_bytes=PART, progress=False)
    out = tmp_path / "out"
    workers = rng.choice([1, 2])
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CONVERT, str(fault_ptbxl), str(out), str(workers)], env=_env()
    )
    # The kill point: once k parts are committed (k = 0: as the writer starts), then a random part of
    # the next part's time.
    k = rng.randrange(0, N_RECORDS * 2 * 12_000 // PART)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        done = list(tmp_path.glob("out.tmp-*/signals/*.commit.json"))
        if len(done) >= k and list(tmp_path.glob("out.tmp-*/signals")):
            break
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 2 * LOAD_S))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if not out.exists():  # killed before the end (the usual case): the same command resumes
        n = len(list(tmp_path.glob("out.tmp-*/signals/*.commit.json")))
        print(f"conversion seed {seed}: workers={workers}, killed after {n} committed part(s) (k={k})")
        convert(PTBXLSource(fault_ptbxl, 100), out, part_max_bytes=PART, progress=False)
    else:
        print(f"conversion seed {seed}: workers={workers}, had finished before the kill")
    assert store_digest(out) == store_digest(reference)


# -- training ------------------------------------------------------------------------------------------
def _weights_digest(run_dir: Path) -> str:
    from clinseq.train import load_checkpoint

    state = load_checkpoint(run_dir)[0]
    h = hashlib.sha256(str(state["step"]).encode())
    for name, tensor in sorted(state["method"].items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _losses(run_dir: Path) -> list[tuple[int, float, float]]:
    from clinseq.train import read_metrics

    return [(m["step"], m["loss"], m["lr"]) for m in read_metrics(run_dir)]


@pytest.fixture(scope="module")
def train_reference(ptbxl_store, tmp_path_factory):
    from clinseq.cli import main

    tiny_values = _helpers(HERE / "train" / "conftest.py").tiny_values
    root = tmp_path_factory.mktemp("train_fault")
    values = tiny_values(ptbxl_store.path, root / "ref")
    values["train"].update(max_steps=6, checkpoint_every=1, keep_checkpoints=2)
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(values))
    assert main(["pretrain", str(config), "--out", str(root / "ref")]) == 0
    # the time of one step (and its checkpoint), from the reference run's step times
    from clinseq.train import read_metrics

    times = [m["time"] for m in read_metrics(root / "ref")]
    step_s = sorted(b - a for a, b in zip(times, times[1:], strict=False))[len(times) // 2 - 1]
    return config, root / "ref", step_s


@pytest.mark.parametrize("seed", TRAIN_SEEDS)
def test_killed_training_resumes_to_the_same_weights(train_reference, tmp_path, seed):
    from clinseq.cli import main
    from clinseq.train.checkpoint import latest_checkpoint

    config, reference, step_s = train_reference
    rng = random.Random(1000 + seed)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "clinseq.cli", "pretrain", str(config), "--out", str(run_dir)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # The kill point: after k logged steps (k = 0: during the setup), then a random fraction of a step.
    k = rng.randrange(0, 6)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if k == 0 and (run_dir / "config.yaml").exists():
            break
        if metrics.exists() and len(metrics.read_text().splitlines()) >= k > 0:
            break
        time.sleep(0.005)
    time.sleep(rng.uniform(0, step_s))
    proc.send_signal(signal.SIGKILL)
    finished = proc.wait() == 0
    latest = latest_checkpoint(run_dir)
    print(
        f"training seed {seed}: killed after {k} logged step(s) + a fraction"
        f"{' (it had finished)' if finished else ''}; latest checkpoint {latest and latest.name}"
    )
    if latest is not None:
        assert main(["pretrain", "--resume", str(run_dir)]) == 0
    else:  # killed before its first checkpoint: what the error says, start again
        shutil.rmtree(run_dir, ignore_errors=True)
        assert main(["pretrain", str(config), "--out", str(run_dir)]) == 0
    assert _losses(run_dir) == _losses(reference)
    assert _weights_digest(run_dir) == _weights_digest(reference)
