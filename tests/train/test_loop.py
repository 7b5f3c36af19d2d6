"""The loop on the real PTB-XL subset: metrics lines, schedule, gradient norm, precision, NaN stop."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from clinseq.errors import TrainingError
from clinseq.objectives import LossOutput
from clinseq.train import read_metrics
from clinseq.train.loop import move_to_device, resolve_precision
from clinseq.train.optim import warmup_cosine_factor

from .conftest import tiny_config


def test_metrics_lines_follow_the_schedule(ptbxl_store, recipe_module, tmp_path: Path) -> None:
    config = tiny_config(ptbxl_store.path, tmp_path / "run", ["train.max_steps=4", "train.log_every=2"])
    recipe = recipe_module.PretrainRecipe(config)
    recipe.setup()
    result = recipe.trainer.fit()
    lines = read_metrics(tmp_path / "run")
    assert [m["step"] for m in lines] == [2, 4] and result.step == 4
    for m in lines:
        assert {"loss", "grad_norm", "pos_cosine", "top1", "lr", "samples_per_s", "epoch"} <= set(m)
        assert math.isfinite(m["loss"]) and m["samples_per_s"] > 0
        # the rate logged is the one the interval's last step used: step s ran with factor(s - 1)
        assert m["lr"] == pytest.approx(3e-3 * warmup_cosine_factor(m["step"] - 1, 2, 4))
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_logged_gradient_norm_is_the_norm_before_clipping(ptbxl_store, recipe_module, tmp_path: Path) -> None:
    recipe = recipe_module.PretrainRecipe(
        tiny_config(ptbxl_store.path, tmp_path / "run", ["train.grad_clip_norm=1e-3"])
    )
    recipe.setup()
    trainer = recipe.trainer
    batch = next(iter(trainer.data.iterate(0)))
    reference = copy.deepcopy(trainer.method)
    torch.manual_seed(0)
    out = reference(move_to_device(batch, trainer.device), generator=trainer.generator(0))
    out.loss.backward()
    expected = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in reference.parameters() if p.grad is not None])
    )
    torch.manual_seed(0)  # the same dropout masks
    before = {n: p.detach().clone() for n, p in trainer.method.named_parameters()}
    loss, _, grad_norm = trainer.train_step(batch)
    torch.testing.assert_close(loss, out.loss.detach())
    torch.testing.assert_close(grad_norm, expected)
    assert grad_norm > 1e-3  # so the clip was active, and the step still moved the weights
    assert any(not torch.equal(before[n], p) for n, p in trainer.method.named_parameters())


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_runs_the_encoder_in_low_precision(
    ptbxl_store, recipe_module, tmp_path, precision, dtype
) -> None:
    config = tiny_config(
        ptbxl_store.path, tmp_path / "run", [f"train.precision={precision}", "train.max_steps=2"]
    )
    recipe = recipe_module.PretrainRecipe(config)
    recipe.setup()
    seen = []
    recipe.trainer.method.encoder.stem.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    recipe.trainer.fit()
    assert seen and set(seen) == {dtype}
    assert recipe.trainer.scaler.is_enabled() == (precision == "fp16")
    assert all(math.isfinite(m["loss"]) for m in read_metrics(tmp_path / "run"))


def test_precision_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == (None, False)  # fp32 on the CPU unless asked
    assert resolve_precision("bf16", cpu) == (torch.bfloat16, False)
    assert resolve_precision("fp16", cpu) == (torch.float16, True)


def test_a_nan_loss_stops_training_with_advice(ptbxl_store, recipe_module, tmp_path: Path) -> None:
    recipe = recipe_module.PretrainRecipe(
        tiny_config(ptbxl_store.path, tmp_path / "run", ["train.max_steps=3"])
    )
    recipe.setup()
    method = recipe.trainer.method
    forward = method.forward

    def nan_at_step_2(batch, generator=None):
        out = forward(batch, generator)
        bad = recipe.trainer.step == 1
        return LossOutput(out.loss * (float("nan") if bad else 1.0), out.metrics)

    method.forward = nan_at_step_2
    with pytest.raises(TrainingError, match=r"the loss is nan at step 2; lower optim\.lr"):
        recipe.trainer.fit()


def test_a_run_stopped_and_continued_in_process_keeps_its_stream(
    ptbxl_store, recipe_module, tmp_path
) -> None:
    config = tiny_config(ptbxl_store.path, tmp_path / "run", ["data.num_workers=1", "train.max_steps=5"])
    recipe = recipe_module.PretrainRecipe(config)
    recipe.setup()
    try:
        recipe.trainer.fit(stop_at=2)  # mid-epoch; the workers have read ahead into the next epoch
        result = recipe.trainer.fit()
        assert (result.step, result.epoch) == (5, 1) and recipe.data.loader.restarts == 1
    finally:
        recipe.cleanup()
