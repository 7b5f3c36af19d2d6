"""Run folders (issue 14.3, 8, 9): one run per folder (a lock naming the holder), a new run never mixes
into an earlier run's files, a truncated checkpoint on --resume is a one-line error. Real pipeline:
the PTB-XL subset store and the tiny configs of conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from clinseq.cli import main
from clinseq.errors import ConfigError
from clinseq.train import resolve_run

from .conftest import tiny_config, tiny_values


def _config_file(store: Path, run_dir: Path, tmp_path: Path, **train) -> Path:
    values = tiny_values(store, run_dir)
    values["train"].update(train)
    path = tmp_path / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_new_run_into_a_used_folder_is_refused(ptbxl_store, recipe_module, tmp_path, capsys):
    run_dir = tmp_path / "run"
    config = _config_file(ptbxl_store.path, run_dir, tmp_path, max_steps=2)
    assert main(["pretrain", str(config), "--out", str(run_dir)]) == 0
    n_lines = len((run_dir / "metrics.jsonl").read_text().splitlines())
    shutil.rmtree(run_dir / "checkpoints")  # a run killed before its first checkpoint
    assert main(["pretrain", str(config), "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "already holds files of an earlier run (config.yaml, metrics.jsonl) but no checkpoint" in err
    assert main(["pretrain", "--resume", str(run_dir)]) == 2
    assert f"delete {run_dir} and start the run again" in capsys.readouterr().err
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == n_lines  # untouched
    # the library's guard: a trainer at step 0 never appends to a used metrics.jsonl
    recipe = recipe_module.PretrainRecipe(tiny_config(ptbxl_store.path, run_dir))
    try:
        recipe.setup()
        with pytest.raises(ConfigError, match="holds the metrics of an earlier run"):
            recipe.trainer.fit()
    finally:
        recipe.cleanup()


HOLD = textwrap.dedent(
    """
    import sys, time
    from clinseq.train import lock_run_folder
    lock = lock_run_folder(sys.argv[1])
    print("held", flush=True)
    time.sleep(60)
    """
)


def test_second_run_on_a_folder_fails_at_once_naming_the_holder(ptbxl_store, tmp_path, capsys):
    run_dir = tmp_path / "run"
    config = _config_file(ptbxl_store.path, run_dir, tmp_path, max_steps=2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, env=env)
    try:
        assert holder.stdout.readline().strip() == b"held"
        assert main(["pretrain", str(config), "--out", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert f"run folder {run_dir} is being written by pid {holder.pid} on host" in err
        assert not (run_dir / "config.yaml").exists()  # nothing of the second run was written
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock is reclaimed
    assert main(["pretrain", str(config), "--out", str(run_dir)]) == 0
    assert not (run_dir / "run.lock").exists()


def test_truncated_checkpoint_on_resume(ptbxl_store, tmp_path, capsys):
    run_dir = tmp_path / "run"
    config = _config_file(ptbxl_store.path, run_dir, tmp_path, max_steps=4, checkpoint_every=2)
    assert main(["pretrain", str(config), "--out", str(run_dir)]) == 0
    state = run_dir / "checkpoints" / "step-00000004" / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    assert main(["pretrain", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"clinseq: error: {state}: unreadable checkpoint file, truncated or corrupt")
    assert "to resume from the previous checkpoint step-00000002" in err and "Traceback" not in err
    shutil.rmtree(state.parent)  # what the message says
    config_after, resume = resolve_run(None, resume=run_dir)
    assert resume
