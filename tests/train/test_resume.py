"""Exact resume: a run stopped at step k and resumed gives the uninterrupted run's losses and weights.

Real pipeline: the PTB-XL subset store, the poly-window sampler, the window dataset, a small ResNet with
dropout (so the restored RNG state matters), AdamW + warmup/cosine, checkpoints on disk. The stop falls
in the middle of the second epoch, and the resumed half reads with DataLoader workers (which prefetch
ahead of the loop) while the uninterrupted run reads in-process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clinseq.errors import ConfigError, LockHeldError
from clinseq.train import read_metrics, resolve_run

from .conftest import tiny_config


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from clinseq.train import load_checkpoint

    return load_checkpoint(run_dir)[0]["method"]


def test_stop_at_k_and_resume_equals_uninterrupted(ptbxl_store, recipe_module, tmp_path: Path) -> None:
    store = ptbxl_store.path
    full = recipe_module.PretrainRecipe(tiny_config(store, tmp_path / "full"))
    full.setup()
    assert len(full.data.loader) == 3  # batches per epoch: 7 steps span three epochs
    full.trainer.fit()

    first = recipe_module.PretrainRecipe(tiny_config(store, tmp_path / "parts"))
    first.setup()
    first.trainer.fit(stop_at=4)  # mid-epoch: epoch 1, one batch consumed
    assert (first.trainer.epoch, first.trainer.batch_in_epoch) == (1, 1)
    del first

    config, resume = resolve_run(None, resume=tmp_path / "parts", overrides=["data.num_workers=2"])
    assert resume and config.data.num_workers == 2
    second = recipe_module.PretrainRecipe(config, resume=True)
    second.setup()
    assert second.trainer.step == 4
    second.trainer.fit()

    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "parts")
    assert [m["step"] for m in b] == list(range(1, 8))
    assert [m["loss"] for m in a] == [m["loss"] for m in b]  # bit-exact on the CPU
    assert [m["lr"] for m in a] == [m["lr"] for m in b]
    wa, wb = _weights(tmp_path / "full"), _weights(tmp_path / "parts")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def test_resume_refuses_a_config_that_changes_the_numbers(ptbxl_store, recipe_module, tmp_path: Path) -> None:
    run = recipe_module.PretrainRecipe(tiny_config(ptbxl_store.path, tmp_path / "r", ["train.max_steps=2"]))
    run.setup()
    run.trainer.fit()
    with pytest.raises(LockHeldError, match=r"run folder .*/r is being written by pid"):
        resolve_run(None, resume=tmp_path / "r")  # the run is still live: its folder is locked
    run.cleanup()
    with pytest.raises(ConfigError, match=r"optim\.lr: 0\.003 → 0\.1"):
        resolve_run(None, resume=tmp_path / "r", overrides=["optim.lr=0.1"])
    with pytest.raises(ConfigError, match="already holds a run with checkpoints; continue it with --resume"):
        resolve_run(tmp_path / "r" / "config.yaml")
    with pytest.raises(ConfigError, match="saved no checkpoint"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "config.yaml").write_text((tmp_path / "r" / "config.yaml").read_text())
        resolve_run(None, resume=tmp_path / "empty")
