"""Small real-data configs for the loop tests: the real PTB-XL subset, a tiny encoder, a few steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clinseq.train import PretrainConfig, load_config

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "pretrain.py"


def tiny_values(store: Path, run_dir: Path) -> dict[str, Any]:
    """Poly-window on the validation patients of the real subset (49 patients, 3 batches per epoch)."""
    return {
        "recipe": str(RECIPE),
        "run": {"name": "tiny", "out_dir": str(run_dir), "seed": 3, "device": "cpu"},
        "data": {
            "store": str(store),
            "split": "ptbxl",
            "pretrain_splits": ["val"],
            "window_s": 2.5,
            "sampler": "polywindow",
            "sampler_kwargs": {"recordings_per_batch": 16, "windows_per_recording": 2},
        },
        "model": {
            "encoder": "resnet1d",
            "encoder_kwargs": {"widths": [8, 16, 16], "downsample": [4, 4], "kernel_size": 7, "dropout": 0.1},
            "projection_dim": 16,
        },
        "method": {"name": "polywindow"},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "train": {"max_steps": 7, "log_every": 1, "checkpoint_every": 100, "progress": False},
        "eval": {"enabled": False},
    }


def tiny_config(store: Path, run_dir: Path, overrides: list[str] | None = None) -> PretrainConfig:
    return load_config(values=tiny_values(store, run_dir), overrides=overrides or [])


@pytest.fixture(scope="session")
def recipe_module():
    """The recipe script recipes/pretrain.py, imported the way `clinseq pretrain` imports it."""
    from clinseq.train.run import load_recipe

    return load_recipe(load_config(values={"recipe": str(RECIPE)}))
