"""``train.compile``: the encoder compiled with torch.compile trains to the same losses as in eager mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import tiny_config

# A one-block encoder without dropout: Inductor's random numbers differ from eager's, and a cold compile
# of the forward and backward graphs takes minutes per block on a loaded 2-core CPU.
TINY = [
    "model.encoder_kwargs={widths: [8], downsample: [], kernel_size: 7, dropout: 0.0}",
    "train.max_steps=3",
    "run.loggers=[jsonl]",
    "run.export_encoder=false",
]


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_compiled_and_eager_losses_agree(ptbxl_store, recipe_module, tmp_path: Path) -> None:
    eager = recipe_module.run(tiny_config(ptbxl_store.path, tmp_path / "eager", TINY))
    compiled_cfg = tiny_config(ptbxl_store.path, tmp_path / "compiled", [*TINY, "train.compile=true"])
    compiled = recipe_module.run(compiled_cfg)
    assert eager["train"].step == compiled["train"].step == 3
    a, b = _losses(tmp_path / "eager"), _losses(tmp_path / "compiled")
    assert len(a) == len(b) == 3
    assert b == pytest.approx(a, rel=1e-4, abs=1e-5)
    assert a[0] != a[-1]  # the steps trained: later losses are other numbers


def test_compile_without_an_encoder_is_a_config_error(tmp_path: Path) -> None:
    import torch

    from clinseq.errors import ConfigError
    from clinseq.train import Trainer
    from clinseq.train.config import OptimConfig, TrainConfig

    with pytest.raises(ConfigError, match="no .encoder module to compile"):
        Trainer(torch.nn.Linear(2, 2), None, TrainConfig(compile=True), OptimConfig(), tmp_path)
