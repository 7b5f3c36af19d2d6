"""Atomic checkpoints: complete or absent, never half-written; RNG states; pruning; loading errors."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from clinseq.errors import ConfigError
from clinseq.train.checkpoint import (
    capture_rng,
    checkpoint_dirs,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)


def test_round_trip_and_pruning(tmp_path: Path) -> None:
    for step in (5, 10, 15):
        save_checkpoint(tmp_path, step, {"step": step, "w": torch.full((3,), float(step))}, keep=2)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-00000010", "step-00000015"]
    state, rng = load_checkpoint(tmp_path)  # a run folder resolves to its latest checkpoint
    assert state["step"] == 15 and torch.equal(state["w"], torch.full((3,), 15.0))
    assert rng is not None and set(rng) >= {"python", "numpy", "torch"}


def test_a_save_that_dies_leaves_the_previous_checkpoint_intact(tmp_path: Path, monkeypatch) -> None:
    save_checkpoint(tmp_path, 1, {"step": 1})
    real_save = torch.save

    def dying_save(obj, path, *args, **kwargs):
        if Path(path).name == "state.pt":
            Path(path).write_bytes(b"half a checkpo")  # a partial write, then the process "dies"
            raise OSError("disk full")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, {"step": 2})
    monkeypatch.setattr(torch, "save", real_save)
    # Only the temporary folder holds the partial file; the run still resumes from step 1.
    assert (tmp_path / "checkpoints" / "step-00000002.tmp").exists()
    assert latest_checkpoint(tmp_path).name == "step-00000001"
    assert load_checkpoint(tmp_path)[0]["step"] == 1
    # The next save clears the leftover and completes normally.
    save_checkpoint(tmp_path, 3, {"step": 3})
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    assert latest_checkpoint(tmp_path).name == "step-00000003"


def test_rng_states_restore_the_same_draws() -> None:
    state = capture_rng()
    first = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002 - the global state is the subject
    restore_rng(state)
    second = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def test_loading_without_a_checkpoint_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no completed checkpoint"):
        load_checkpoint(tmp_path)
