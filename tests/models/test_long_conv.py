"""S4D / SGConv encoders: overlap-save chunks equal one pass, causality, checkpointing, registry."""

from __future__ import annotations

import pytest
import torch

from clinseq.errors import ConfigError, ShapeError
from clinseq.models import S4DEncoder, SGConvEncoder
from clinseq.models.long_conv import LongConvEncoder

C = 3


def _model(name: str, **overrides) -> LongConvEncoder:
    torch.manual_seed(0)
    configs = {
        # bounded S4D kernels (kernel_len), bidirectional residual stack on 2-sample frames
        "s4d_residual": (S4DEncoder, {"dim": 8, "depth": 3, "stride": 2, "d_state": 8, "kernel_len": 25}),
        "s4d_wavenet_causal": (
            S4DEncoder,
            {
                "dim": 8,
                "depth": 2,
                "stack": "wavenet",
                "d_state": 8,
                "kernel_len": 40,
                "bidirectional": False,
            },
        ),
        # SGConv kernels are finite by construction (max_length), no kernel_len needed
        "sgconv_wavenet": (SGConvEncoder, {"dim": 8, "depth": 2, "kernel_dim": 4, "max_length": 32}),
        "sgconv_residual_causal": (
            SGConvEncoder,
            {
                "dim": 8,
                "depth": 3,
                "stack": "residual",
                "stride": 3,
                "kernel_dim": 8,
                "max_length": 256,
                "kernel_len": 30,
                "bidirectional": False,
            },
        ),  # fmt: skip
    }
    cls, kwargs = configs[name]
    return cls(C, **{**kwargs, **overrides})


MODELS = ["s4d_residual", "s4d_wavenet_causal", "sgconv_wavenet", "sgconv_residual_causal"]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("n_samples", "chunk_frames"), [(600, 50), (601, 7), (90, 1000), (1, 4)])
def test_overlap_save_chunks_equal_one_pass(name: str, n_samples: int, chunk_frames: int) -> None:
    model = _model(name).train()  # chunked inference switches to eval itself and restores the mode
    x = torch.randn(2, C, n_samples)
    chunk = chunk_frames * model.stride
    model.eval()
    with torch.no_grad():
        whole = model.feature_map(x)
    model.train()
    chunked = model.feature_map_chunked(x, chunk)
    assert model.training
    assert chunked.shape == whole.shape == (2, model.embed_dim, model.frames(n_samples))
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.embed_chunked(x, chunk), model.embed(x), rtol=1e-5, atol=1e-5)


def test_chunks_smaller_than_the_receptive_field_are_still_exact() -> None:
    model = _model("s4d_residual")
    past, future = model.receptive_field()
    assert (past, future) == (3 * 24, 3 * 25)  # three layers of 25 taps each way (frames)
    x = torch.randn(1, C, 2000)
    torch.testing.assert_close(
        model.feature_map_chunked(x, 2 * 5), model.eval().feature_map(x), atol=1e-5, rtol=1e-5
    )


def test_a_long_recording_in_chunks_equals_one_pass() -> None:
    # 2^16 samples (4.3 min of one ECG lead at 250 Hz) in 4096-sample chunks.
    model = _model("sgconv_residual_causal", max_length=1024, kernel_len=None)
    x = torch.randn(1, C, 1 << 16)
    torch.testing.assert_close(model.embed_chunked(x, 4095), model.embed(x), rtol=1e-5, atol=1e-5)


def test_chunked_inference_needs_bounded_kernels() -> None:
    model = S4DEncoder(C, dim=8, depth=1, d_state=8)  # kernel as long as the input
    assert model.receptive_field() is None
    with pytest.raises(ConfigError, match="kernel_len"):
        model.embed_chunked(torch.randn(1, C, 100), 50)
    with pytest.raises(ConfigError, match="multiple of stride=2"):
        _model("s4d_residual").embed_chunked(torch.randn(1, C, 100), 51)


@pytest.mark.parametrize("name", ["s4d_wavenet_causal", "sgconv_residual_causal"])
def test_causal_encoder_never_lets_an_output_see_a_later_input(name: str) -> None:
    model = _model(name, kernel_len=None).double().eval()
    x = torch.randn(2, C, 300, dtype=torch.float64)
    with torch.no_grad():
        base = model.feature_map(x)
        for t0 in (3, 150, 299):
            y = x.clone()
            y[..., t0:] = torch.randn_like(y[..., t0:])
            diff = (model.feature_map(y) - base).abs()
            frame = t0 // model.stride  # the first frame that holds a changed sample
            assert diff[..., :frame].max().item() < 1e-10
            assert diff[..., frame:].max().item() > 1e-4


def test_bidirectional_encoder_does_see_the_future() -> None:
    # The perturbation test above can fail: the same check on a bidirectional stack sees the change.
    model = _model("sgconv_wavenet").double().eval()
    x = torch.randn(1, C, 100, dtype=torch.float64)
    y = x.clone()
    y[..., 60:] += 1.0
    with torch.no_grad():
        assert (model.feature_map(y) - model.feature_map(x))[..., :60].abs().max().item() > 1e-4


@pytest.mark.parametrize("name", ["s4d_residual", "sgconv_wavenet"])
def test_checkpointing_gives_the_same_output_and_gradients(name: str) -> None:
    x = torch.randn(2, C, 128)
    grads, outs = [], []
    for ckpt in (False, True):
        model = _model(name, checkpointing=ckpt).train()
        out = model(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(outs[0], outs[1])
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-6, msg=n)


def test_encoders_are_in_the_registry_and_their_kwargs_are_checked() -> None:
    from clinseq.train.builders import ENCODERS, build_encoder
    from clinseq.train.config import ModelConfig

    assert {"s4d", "sgconv"} <= set(ENCODERS)
    model = build_encoder(ModelConfig(encoder="s4d", encoder_kwargs={"dim": 8, "depth": 1}), in_channels=12)
    assert isinstance(model, S4DEncoder) and model.embed_dim == 8
    model = build_encoder(ModelConfig(encoder="sgconv", encoder_kwargs={"stack": "residual"}), in_channels=4)
    assert isinstance(model, SGConvEncoder) and model.stack == "residual"
    with pytest.raises(ConfigError, match="d_stat"):
        build_encoder(ModelConfig(encoder="s4d", encoder_kwargs={"d_stat": 8}), in_channels=12)


def test_bad_configs_raise() -> None:
    with pytest.raises(ConfigError, match="stack must be one of"):
        S4DEncoder(C, stack="unet")
    with pytest.raises(ConfigError, match="dropout"):
        SGConvEncoder(C, dropout=1.0)
    with pytest.raises(ShapeError, match="in_channels=3, got 4 channels"):
        _model("sgconv_wavenet")(torch.randn(1, 4, 50))
