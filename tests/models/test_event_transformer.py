"""EventTransformer: padding invariance, truncation equality, value/time handling, checkpointing."""

from __future__ import annotations

import pytest
import torch

from clinseq.errors import ShapeError
from clinseq.models import EventTransformer, TimeDeltaEmbedding

VOCAB = 30


def _model(**kwargs) -> EventTransformer:
    torch.manual_seed(0)
    options = dict(dim=16, depth=2, n_heads=2)
    options.update(kwargs)
    return EventTransformer(VOCAB, **options).eval()


def _batch(lengths: list[int], max_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded batch with random real events and *garbage* (non-zero) padding content."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    real = torch.arange(max_len)[None, :] < torch.tensor(lengths)[:, None]
    return {
        "codes": torch.where(real, torch.randint(2, VOCAB, (b, max_len), generator=g), 0),
        "time_delta_s": torch.rand(b, max_len, generator=g) * 3600.0,
        "values": torch.randn(b, max_len, generator=g),
        "value_mask": torch.rand(b, max_len, generator=g) > 0.4,
        "padding_mask": real,
        "patient_id": torch.arange(b),
    }


def _take(batch: dict[str, torch.Tensor], rows, cols) -> dict[str, torch.Tensor]:
    return {k: (v[rows][:, cols] if v.ndim == 2 else v[rows]) for k, v in batch.items()}


def test_output_shape_and_tokens() -> None:
    model = _model()
    pooled, tokens = model(_batch([3, 7, 1], 7), return_tokens=True)
    assert pooled.shape == (3, 16) and tokens.shape == (3, 7, 16)


@pytest.mark.parametrize("positions", ["rope", "none"])
def test_padded_positions_are_ignored(positions: str) -> None:
    model = _model(positions=positions)
    batch = _batch([2, 5, 3], 6)
    other = {k: v.clone() for k, v in batch.items()}
    pad = ~batch["padding_mask"]
    other["codes"][pad] = torch.randint(1, VOCAB, (int(pad.sum()),))
    other["time_delta_s"][pad] = 1e6
    other["values"][pad] = 99.0
    other["value_mask"][pad] = True
    with torch.no_grad():
        a, b = model(batch), model(other)
    torch.testing.assert_close(a, b)


def test_padded_batch_equals_each_sequence_truncated() -> None:
    model = _model()
    lengths = [4, 6, 1]
    batch = _batch(lengths, 6)
    with torch.no_grad():
        full = model(batch)
        for i, n in enumerate(lengths):
            alone = model(_take(batch, slice(i, i + 1), slice(0, n)))
            torch.testing.assert_close(full[i : i + 1], alone, rtol=1e-5, atol=1e-5)


def test_left_padding_equals_right_padding() -> None:
    model = _model()
    right = _batch([3, 5], 5)
    # Move each row's real events to the end (left padding).
    left = {k: v.clone() for k, v in right.items()}
    for i, n in enumerate([3, 5]):
        for key in ("codes", "time_delta_s", "values", "value_mask", "padding_mask"):
            left[key][i] = torch.roll(right[key][i], 5 - n)
    with torch.no_grad():
        torch.testing.assert_close(model(left), model(right), rtol=1e-5, atol=1e-5)


def test_event_order_matters_with_rope_only() -> None:
    batch = _batch([5], 5)
    batch["time_delta_s"][:] = 60.0  # equal gaps so a permutation changes order, not time deltas
    perm = torch.tensor([3, 0, 4, 1, 2])
    shuffled = _take(batch, slice(None), perm)
    with torch.no_grad():
        rope, none = _model(positions="rope"), _model(positions="none")
        assert not torch.allclose(rope(batch), rope(shuffled), atol=1e-4)
        # Without positions the encoder is permutation-invariant (a set of events).
        torch.testing.assert_close(none(batch), none(shuffled), rtol=1e-5, atol=1e-5)


def test_values_count_only_where_the_mask_says_so() -> None:
    model = _model()
    batch = _batch([6], 6)
    batch["value_mask"][:] = torch.tensor([[True, False, True, False, False, True]])
    with torch.no_grad():
        base = model(batch)
        hidden = {**batch, "values": batch["values"].clone()}
        hidden["values"][0, 1] += 5.0  # masked out
        torch.testing.assert_close(model(hidden), base)
        shown = {**batch, "values": batch["values"].clone()}
        shown["values"][0, 2] += 5.0  # present
        assert not torch.allclose(model(shown), base)
        # a present value equal to 0 (the code's mean) still differs from an absent value
        zero_present = {
            **batch,
            "values": torch.zeros(1, 6),
            "value_mask": torch.ones(1, 6, dtype=torch.bool),
        }
        absent = {**zero_present, "value_mask": torch.zeros(1, 6, dtype=torch.bool)}
        assert not torch.allclose(model(zero_present), model(absent))


@pytest.mark.parametrize("kind", ["sinusoidal", "mlp"])
def test_time_embedding_is_log_scaled_and_clamps_negative(kind: str) -> None:
    torch.manual_seed(0)
    emb = TimeDeltaEmbedding(8, kind)
    dt = torch.tensor([0.0, -5.0, 60.0, 86400.0, 3.15e7])
    out = emb(dt)
    assert out.shape == (5, 8) and torch.isfinite(out).all()
    torch.testing.assert_close(out[1], out[0])  # negative gaps read as 0
    assert not torch.allclose(out[3], out[4])  # a day and a year are distinguishable


def test_empty_window_gives_zeros() -> None:
    model = _model()
    batch = _batch([0, 3], 4)
    with torch.no_grad():
        out = model(batch)
    torch.testing.assert_close(out[0], torch.zeros(16))
    assert torch.isfinite(out).all()


def test_gradients_and_checkpointing() -> None:
    batch = _batch([4, 6, 2], 6)
    w = torch.randn(3, 16)
    grads, calls = [], []
    for ckpt in (False, True):
        model = _model(checkpointing=ckpt).train()
        n_calls: list[int] = []
        model.blocks[1].register_forward_pre_hook(lambda mod, args, n=n_calls: n.append(1))
        (model(batch) * w).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        calls.append(len(n_calls))
    assert calls == [1, 2]  # the checkpointed block is recomputed in backward
    for name, g in grads[0].items():
        assert g.abs().sum() > 0, f"{name} got no gradient"
        torch.testing.assert_close(grads[1][name], g, msg=name)
    # The padding row of the code table never receives gradient.
    assert grads[0]["code_embed.weight"][0].abs().sum() == 0


def test_bad_batches_raise() -> None:
    model = _model()
    batch = _batch([2], 3)
    with pytest.raises(ShapeError, match="lacks \\['value_mask'\\]"):
        model({k: v for k, v in batch.items() if k != "value_mask"})
    with pytest.raises(ShapeError, match=r"\[0, vocab_size=30\), got \[0, 30\]"):
        model({**batch, "codes": torch.tensor([[0, 30, 2]])})
    with pytest.raises(ShapeError, match="must be bool"):
        model({**batch, "padding_mask": batch["padding_mask"].float()})
    with pytest.raises(ShapeError, match="shape of batch\\['codes'\\]"):
        model({**batch, "values": torch.zeros(1, 4)})
    with pytest.raises(ShapeError, match="dict batch"):
        model(torch.zeros(1, 3))
