"""The contract every encoder keeps: pooled (B, embed_dim) output, embed() in eval without grad, grads."""

from __future__ import annotations

import pytest
import torch

from clinseq.errors import ShapeError
from clinseq.models import (
    CPCEncoder,
    EventTransformer,
    PatchTransformer,
    ResNet1d,
    S4DEncoder,
    SGConvEncoder,
    XResNet1d,
)

C = 3


def _tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "resnet1d":
        return ResNet1d(C, widths=(4, 6, 8), downsample=(4, 2), kernel_size=16, dropout=0.3)
    if name == "xresnet1d":
        return XResNet1d(
            C,
            layers=(1, 2),
            block_widths=(4, 6),
            stem_widths=(4, 4, 8),
            expansion=2,
            zero_init_residual=False,
        )
    if name == "cpc":
        return CPCEncoder(C, (8, 8), (4, 3), (2, 1), norm="bn", context="gru", context_dim=6, dropout=0.0)
    if name == "patch":
        return PatchTransformer(C, patch_len=8, dim=16, depth=2, n_heads=2, dropout=0.3)
    if name == "s4d":
        return S4DEncoder(C, dim=8, depth=2, stride=2, d_state=8, dropout=0.3)
    if name == "s4d_wavenet":
        return S4DEncoder(C, dim=8, depth=2, stack="wavenet", d_state=8, bidirectional=False, dropout=0.3)
    if name == "sgconv":
        # max_length = the gradient test's 64 samples, so that every scale's weights are used.
        return SGConvEncoder(C, dim=8, depth=2, kernel_dim=8, max_length=64, dropout=0.3)
    if name == "sgconv_residual":
        return SGConvEncoder(C, dim=8, depth=2, stack="residual", stride=4, kernel_dim=4, max_length=16)
    raise ValueError(name)


WAVEFORM = ["resnet1d", "xresnet1d", "cpc", "patch", "s4d", "s4d_wavenet", "sgconv", "sgconv_residual"]


def _pooled(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out.c.mean(dim=1) if isinstance(model, CPCEncoder) else out


@pytest.mark.parametrize("name", WAVEFORM)
@pytest.mark.parametrize("n_samples", [9, 64, 101])
def test_pooled_shape_for_any_length(name: str, n_samples: int) -> None:
    model = _tiny(name)
    x = torch.randn(3, C, n_samples)
    out = _pooled(model, x)
    assert out.shape == (3, model.embed_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", WAVEFORM)
def test_embed_is_eval_deterministic_without_grad_and_restores_mode(name: str) -> None:
    model = _tiny(name)
    model.train()
    x = torch.randn(4, C, 77)
    e1, e2 = model.embed(x), model.embed(x)
    assert model.training, "embed() must restore the training mode"
    assert not e1.requires_grad and e1.grad_fn is None
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(e1, _pooled(model, x))
    # Each item alone gives the same embedding: no batch statistics leak into embed().
    torch.testing.assert_close(model.embed(x[1:2]), e1[1:2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", WAVEFORM)
def test_gradient_reaches_every_parameter(name: str) -> None:
    model = _tiny(name)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.train()
    x = torch.randn(4, C, 64)
    out = model(x)
    tensors = [out.z, out.c] if isinstance(model, CPCEncoder) else [out]
    # A fixed random read-out: a plain sum would cancel through a final layer norm.
    loss = sum((t * torch.randn_like(t)).sum() for t in tensors)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


@pytest.mark.parametrize("name", WAVEFORM)
def test_bad_input_raises_with_expected_and_received(name: str) -> None:
    model = _tiny(name)
    with pytest.raises(ShapeError, match="in_channels=3, got 5 channels"):
        model(torch.randn(2, 5, 64))
    with pytest.raises(ShapeError, match=r"\(B, C, T\)"):
        model(torch.randn(C, 64))
    with pytest.raises(ShapeError, match="floating-point"):
        model(torch.ones(2, C, 64, dtype=torch.int16))


def test_event_transformer_embed_contract() -> None:
    torch.manual_seed(0)
    model = EventTransformer(vocab_size=20, dim=16, depth=1, n_heads=2, dropout=0.5).train()
    batch = {
        "codes": torch.randint(1, 20, (3, 5)),
        "time_delta_s": torch.rand(3, 5) * 100,
        "values": torch.randn(3, 5),
        "value_mask": torch.rand(3, 5) > 0.5,
        "padding_mask": torch.ones(3, 5, dtype=torch.bool),
    }
    e1, e2 = model.embed(batch), model.embed(batch)
    assert model.training and not e1.requires_grad
    assert e1.shape == (3, model.embed_dim)
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
