"""AdamW parameter groups and the warmup + cosine schedule, against formulas written here."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clinseq.train.optim import build_optimizer, param_groups, warmup_cosine, warmup_cosine_factor


def expected_factor(step: int, warmup: int, total: int, floor: float) -> float:
    """The schedule restated: linear to 1 over `warmup` steps, cosine down to `floor` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    t = min((step - warmup) / (total - warmup), 1.0)
    return floor + (1 - floor) * (1 + math.cos(math.pi * t)) / 2


@pytest.mark.parametrize(
    ("warmup", "total", "floor"), [(10, 100, 0.0), (0, 50, 0.1), (7, 8, 0.05), (3, 1000, 0.0)]
)
def test_schedule_values(warmup: int, total: int, floor: float) -> None:
    for step in range(total + 5):
        assert warmup_cosine_factor(step, warmup, total, floor) == pytest.approx(
            expected_factor(step, warmup, total, floor), abs=1e-12
        )
    # landmarks: the peak right after warmup, half way down in the middle, the floor at the end
    assert warmup_cosine_factor(warmup, warmup, total, floor) == pytest.approx(1.0)
    if (total - warmup) % 2 == 0:
        assert warmup_cosine_factor(warmup + (total - warmup) // 2, warmup, total, floor) == pytest.approx(
            (1 + floor) / 2
        )
    assert warmup_cosine_factor(total, warmup, total, floor) == pytest.approx(floor)


def test_scheduler_drives_the_optimizer_learning_rate() -> None:
    model = nn.Linear(3, 2)
    opt = build_optimizer(model, lr=0.01, weight_decay=0.0)
    sched = warmup_cosine(opt, warmup_steps=4, max_steps=20, min_lr_ratio=0.1)
    used = []
    for _ in range(20):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert used == pytest.approx([0.01 * expected_factor(s, 4, 20, 0.1) for s in range(20)])
    # Optimizer + scheduler state (what a checkpoint holds) continue the same sequence after a restart.
    opt_a = build_optimizer(model, lr=0.01, weight_decay=0.0)
    sched_a = warmup_cosine(opt_a, 4, 20, 0.1)
    for _ in range(9):
        opt_a.step()
        sched_a.step()
    opt_b = build_optimizer(model, lr=0.01, weight_decay=0.0)
    sched_b = warmup_cosine(opt_b, 4, 20, 0.1)
    opt_b.load_state_dict(opt_a.state_dict())
    sched_b.load_state_dict(sched_a.state_dict())
    resumed = []
    for _ in range(11):
        resumed.append(opt_b.param_groups[0]["lr"])
        opt_b.step()
        sched_b.step()
    assert resumed == pytest.approx(used[9:])


def test_weight_decay_skips_biases_norms_and_frozen_parameters() -> None:
    model = nn.Sequential(
        nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.Flatten(), nn.LayerNorm(8), nn.Linear(8, 2)
    )
    model[4].weight.requires_grad_(False)
    groups = param_groups(model, weight_decay=0.1)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    kept = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}
    no_decay = (model[0].bias, model[1].weight, model[1].bias, model[3].weight, model[3].bias, model[4].bias)
    assert kept == {id(p) for p in no_decay}
    # The real effect: with zero gradients one AdamW step shrinks only the decayed weight, by lr·wd.
    opt = build_optimizer(model, lr=0.5, weight_decay=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        expected = before[name] * (1 - 0.5 * 0.1) if name == "0.weight" else before[name]
        torch.testing.assert_close(p.detach(), expected)
