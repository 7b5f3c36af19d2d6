"""KeyQueue (order, overwrite, ids, wrap-around, state_dict) and the momentum (EMA) update."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from clinseq.errors import ConfigError, ShapeError
from clinseq.objectives import PMQ, KeyQueue, MoCo, MomentumEncoder, ema_update


def _batch(start: int, n: int, dim: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys whose values encode their global index (key j = [j, -j]) and ids 100 + j."""
    idx = torch.arange(start, start + n)
    return torch.stack([idx.float(), -idx.float()], dim=1)[:, :dim], 100 + idx


def test_queue_fifo_order_overwrite_and_ids() -> None:
    q = KeyQueue(2, 5)
    assert len(q) == 0 and q.keys.shape == (0, 2)
    q.push(*_batch(0, 2))
    q.push(*_batch(2, 2))
    assert len(q) == 4 and not q.is_full
    torch.testing.assert_close(q.keys[:, 0], torch.tensor([0.0, 1, 2, 3]))  # empty slot not returned
    torch.testing.assert_close(q.ids, torch.tensor([100, 101, 102, 103]))
    # This batch straddles the end: slot 4 gets key 4, slots 0, 1 get keys 5, 6 (overwriting 0, 1).
    q.push(*_batch(4, 3))
    assert len(q) == 5 and q.is_full and int(q.ptr) == 2
    torch.testing.assert_close(q.queue_keys[:, 0], torch.tensor([5.0, 6, 2, 3, 4]))
    torch.testing.assert_close(q.queue_ids, torch.tensor([105, 106, 102, 103, 104]))
    keys, ids = q.ordered()  # oldest → newest: the last 5 keys pushed, none lost
    torch.testing.assert_close(keys[:, 0], torch.tensor([2.0, 3, 4, 5, 6]))
    torch.testing.assert_close(keys[:, 1], -keys[:, 0])
    torch.testing.assert_close(ids, torch.tensor([102, 103, 104, 105, 106]))
    # A batch exactly the size of the queue replaces everything, still in order.
    q.push(*_batch(7, 5))
    keys, ids = q.ordered()
    torch.testing.assert_close(ids, torch.arange(107, 112))
    torch.testing.assert_close(keys[:, 0], torch.arange(7, 12).float())


def test_queue_many_wraps_keep_the_last_entries() -> None:
    q = KeyQueue(2, 7)
    pushed = 0
    for n in (3, 5, 6, 1, 7, 4):
        q.push(*_batch(pushed, n))
        pushed += n
        keys, ids = q.ordered()
        expected = torch.arange(max(0, pushed - 7), pushed)
        torch.testing.assert_close(ids, 100 + expected)
        torch.testing.assert_close(keys[:, 0], expected.float())
        assert int(q.ptr) == pushed % 7 and int(q.filled) == min(pushed, 7)


def test_queue_rejects_what_it_would_drop_or_misread() -> None:
    q = KeyQueue(2, 4)
    with pytest.raises(ConfigError, match="cannot enqueue 5 keys into a queue of size 4: 1 keys"):
        q.push(*_batch(0, 5))
    with pytest.raises(ShapeError, match="tracks ids"):
        q.push(_batch(0, 2)[0])
    with pytest.raises(ShapeError, match=r"shape \(n, 2\), got \(3, 4\)"):
        q.push(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"ids must be an integer tensor of shape \(2,\)"):
        q.push(_batch(0, 2)[0], torch.zeros(3, dtype=torch.long))
    with pytest.raises(ShapeError, match="track_ids=False"):
        KeyQueue(2, 4, track_ids=False).push(*_batch(0, 2))
    with pytest.raises(ShapeError, match="holds no ids"):
        KeyQueue(2, 4, track_ids=False).ids  # noqa: B018
    with pytest.raises(ConfigError, match="size must be a positive int"):
        KeyQueue(2, 0)


def test_queue_state_dict_round_trip_resumes_the_ring() -> None:
    q = KeyQueue(2, 5)
    q.push(*_batch(0, 4))
    q.push(*_batch(4, 3))
    state = copy.deepcopy(q.state_dict())
    assert set(state) == {"queue_keys", "queue_ids", "ptr", "filled"}
    resumed = KeyQueue(2, 5)
    resumed.load_state_dict(state)
    assert len(resumed) == 5 and int(resumed.ptr) == 2
    for queue in (q, resumed):  # the same next push gives the same ring
        queue.push(*_batch(7, 2))
    for a, b in zip(q.ordered(), resumed.ordered(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(RuntimeError, match="size mismatch"):
        KeyQueue(2, 6).load_state_dict(state)


@pytest.mark.parametrize("objective", [MoCo(dim=3, queue_size=8), PMQ(dim=3, queue_size=8)])
def test_objective_queues_update_flag_and_state(objective: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)

    def step(update: bool) -> torch.Tensor:
        q, k = torch.randn(3, 3, generator=g), torch.randn(3, 3, generator=g)
        args = (q, k, torch.tensor([1, 2, 1])) if isinstance(objective, PMQ) else (q, k)
        return objective(*args, update=update).loss

    step(True)
    assert len(objective.queue) == 3
    before = objective.queue.keys.clone()
    step(False)
    assert len(objective.queue) == 3 and torch.equal(objective.queue.keys, before)
    step(True)
    step(True)  # 9 keys into 8 slots: wraps
    assert len(objective.queue) == 8 and int(objective.queue.ptr) == 1
    keys = objective.state_dict()
    assert "queue.queue_keys" in keys and "queue.ptr" in keys
    fresh = type(objective)(dim=3, queue_size=8)
    fresh.load_state_dict(keys)
    torch.testing.assert_close(fresh.queue.keys, objective.queue.keys)
    # Queued keys are the l2-normalised momentum keys.
    torch.testing.assert_close(fresh.queue.keys.norm(dim=1), torch.ones(8))
    if isinstance(objective, PMQ):
        ids, _ = fresh.queue.ids.sort()
        torch.testing.assert_close(ids, torch.tensor([1, 1, 1, 1, 1, 2, 2, 2]))  # batch ids 1, 2, 1 → kept


# ------------------------------------------------------------------------------------------ momentum
def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()


def test_ema_update_is_exact() -> None:
    online, target = _net(), _net()
    with torch.no_grad():  # make the two differ, in values exactly representable in binary
        for p in target.parameters():
            p.copy_(torch.randint(-8, 8, p.shape).double() / 4)
        for p in online.parameters():
            p.copy_(torch.randint(-8, 8, p.shape).double() / 4)
    online(torch.randn(5, 3, dtype=torch.float64))  # moves batch-norm running stats
    before = {n: p.clone() for n, p in target.named_parameters()}
    ema_update(online, target, 0.75)
    for name, p in target.named_parameters():
        expected = 0.75 * before[name] + 0.25 * dict(online.named_parameters())[name]
        assert torch.equal(p, expected), name  # dyadic values: exact
    for (name, b_on), (_, b_tg) in zip(online.named_buffers(), target.named_buffers(), strict=True):
        assert torch.equal(b_on, b_tg), name  # buffers copied, not averaged


def test_ema_update_random_values_and_limits() -> None:
    online, target = _net(), _net()
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    m = 0.999
    expected = [
        m * t.detach() + (1 - m) * o.detach()
        for t, o in zip(target.parameters(), online.parameters(), strict=True)
    ]
    ema_update(online, target, m)
    for p, e in zip(target.parameters(), expected, strict=True):
        torch.testing.assert_close(p, e, rtol=0, atol=1e-15)
    ema_update(online, target, 0.0)  # m = 0 copies
    for p, o in zip(target.parameters(), online.parameters(), strict=True):
        assert torch.equal(p, o)
    with pytest.raises(ConfigError, match=r"momentum must be a float in \[0, 1\]"):
        ema_update(online, target, 1.5)
    with pytest.raises(ShapeError, match="same parameters"):
        ema_update(online, nn.Linear(3, 4), 0.9)


def test_momentum_encoder_is_a_frozen_copy_updated_after_each_step() -> None:
    online = _net()
    key = MomentumEncoder(online, momentum=0.9)
    assert all(not p.requires_grad for p in key.parameters())
    x = torch.randn(6, 3, dtype=torch.float64)
    out = key(x)
    assert not out.requires_grad
    torch.testing.assert_close(out, online(x))  # identical at start (both in train mode)
    opt = torch.optim.SGD(online.parameters(), lr=0.5)
    snapshot = [p.detach().clone() for p in key.target.parameters()]
    online(x).pow(2).sum().backward()
    opt.step()
    key.update(online)
    for p, before, o in zip(key.target.parameters(), snapshot, online.parameters(), strict=True):
        torch.testing.assert_close(p, 0.9 * before + 0.1 * o.detach(), rtol=0, atol=1e-15)
    # Its state_dict carries the averaged weights (resume keeps them).
    fresh = MomentumEncoder(_net(), momentum=0.9)
    fresh.load_state_dict(key.state_dict())
    for a, b in zip(fresh.parameters(), key.parameters(), strict=True):
        assert torch.equal(a, b)
