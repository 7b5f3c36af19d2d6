"""PatchTransformer: tokenisation, positions, attention, checkpointing and chunked embedding."""

from __future__ import annotations

import math

import pytest
import torch

from clinseq.errors import ConfigError
from clinseq.models import PatchTransformer, SelfAttention, apply_rotary


def _tiny(**kwargs) -> PatchTransformer:
    torch.manual_seed(0)
    options = dict(patch_len=10, dim=16, depth=2, n_heads=2)
    options.update(kwargs)
    return PatchTransformer(3, **options)


@pytest.mark.parametrize("tokenization", ["channel_independent", "mixed"])
@pytest.mark.parametrize("positions", ["rope", "learned"])
@pytest.mark.parametrize("n_samples", [1, 9, 10, 11, 99])
def test_shapes_and_token_count(tokenization: str, positions: str, n_samples: int) -> None:
    model = _tiny(tokenization=tokenization, positions=positions)
    pooled, tokens = model(torch.randn(2, 3, n_samples), return_tokens=True)
    n_patches = math.ceil(n_samples / 10)
    assert model.n_patches(n_samples) == n_patches
    assert tokens.shape == (2, n_patches * (3 if tokenization == "channel_independent" else 1), 16)
    assert tokens.shape[1] == model.n_tokens(n_samples)
    torch.testing.assert_close(pooled, tokens.mean(dim=1))


def test_channel_independent_tokens_are_channel_major() -> None:
    # Before attention, token c·n_patches + p holds channel c's patch p: perturbing channel 1, patch 2
    # of a 5-patch signal changes token 7 alone.
    model = _tiny()
    x = torch.randn(1, 3, 50)
    y = x.clone()
    y[0, 1, 20:30] += 1.0
    a, _ = model._tokens(x)
    b, _ = model._tokens(y)
    changed = (a - b).abs().sum(-1)[0].nonzero().flatten().tolist()
    assert changed == [1 * 5 + 2]


def test_learned_positions_limit_raises_with_fix() -> None:
    model = _tiny(positions="learned", max_patches=4)
    assert model(torch.randn(1, 3, 40)).shape == (1, 16)
    with pytest.raises(ConfigError, match="5 patches of 10; use positions='rope'"):
        model(torch.randn(1, 3, 41))


def test_sdpa_with_key_padding_mask_equals_truncated_sequence() -> None:
    torch.manual_seed(1)
    attn = SelfAttention(8, 2, rotary=True).eval()
    x = torch.randn(2, 7, 8)
    mask = torch.tensor([[True] * 4 + [False] * 3, [True] * 7])
    positions = torch.arange(7)
    with torch.no_grad():
        full = attn(x, mask, positions)
        truncated = attn(x[:1, :4], None, positions[:4])
        unmasked = attn(x[1:], None, positions)
    torch.testing.assert_close(full[:1, :4], truncated)
    torch.testing.assert_close(full[1:], unmasked)


def test_sdpa_attention_matches_explicit_softmax() -> None:
    torch.manual_seed(2)
    attn = SelfAttention(8, 2).eval()
    x = torch.randn(3, 5, 8)
    mask = torch.rand(3, 5) > 0.3
    mask[:, 0] = True
    with torch.no_grad():
        got = attn(x, mask)
        q, k, v = attn.qkv(x).view(3, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / 2.0  # sqrt(head_dim = 4)
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        want = attn.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(3, 5, 8))
    torch.testing.assert_close(got, want)


def test_rotary_scores_depend_on_position_difference_only() -> None:
    torch.manual_seed(3)
    q, k = torch.randn(1, 1, 6, 8), torch.randn(1, 1, 6, 8)
    pos = torch.arange(6)
    s0 = apply_rotary(q, pos) @ apply_rotary(k, pos).transpose(-1, -2)
    s1 = apply_rotary(q, pos + 37) @ apply_rotary(k, pos + 37).transpose(-1, -2)
    torch.testing.assert_close(s0, s1, rtol=1e-4, atol=1e-4)
    # and the rotation preserves norms but does change the vectors
    r = apply_rotary(q, pos + 1)
    torch.testing.assert_close(r.norm(dim=-1), q.norm(dim=-1))
    assert not torch.allclose(r, q)


@pytest.mark.parametrize("tokenization", ["channel_independent", "mixed"])
def test_checkpointing_gives_the_same_gradients(tokenization: str) -> None:
    plain = _tiny(tokenization=tokenization, depth=3)
    ckpt = _tiny(tokenization=tokenization, depth=3, checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 45)
    w = torch.randn(2, 16)
    grads, calls = [], []
    for model in (plain, ckpt):
        model.train()
        n_calls: list[int] = []
        model.blocks[0].register_forward_pre_hook(lambda mod, args, n=n_calls: n.append(1))
        (model(x) * w).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        calls.append(len(n_calls))
    assert calls == [1, 2]  # checkpointing really recomputes the block in backward
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


@pytest.mark.parametrize("n_samples", [60, 57])
def test_chunked_with_one_chunk_equals_embed(n_samples: int) -> None:
    model = _tiny()
    x = torch.randn(2, 3, n_samples)
    torch.testing.assert_close(model.embed_chunked(x, chunk_samples=60), model.embed(x))
    torch.testing.assert_close(model.embed_chunked(x, chunk_samples=1000), model.embed(x))


def test_chunked_is_the_length_weighted_mean_of_chunk_embeddings() -> None:
    model = _tiny()
    x = torch.randn(2, 3, 235)  # 7 full chunks of 30 and a last one of 25
    got = model.embed_chunked(x, chunk_samples=30, chunks_per_batch=3)
    starts = range(0, 235, 30)
    want = sum(model.embed(x[..., s : s + 30]) * min(30, 235 - s) for s in starts) / 235
    torch.testing.assert_close(got, want)
    # the same through chunk_s and sampling_rate_hz
    torch.testing.assert_close(model.embed_chunked(x, chunk_s=0.3, sampling_rate_hz=100.0), got)


def test_chunked_bad_arguments_raise() -> None:
    model = _tiny()
    x = torch.randn(1, 3, 100)
    with pytest.raises(ConfigError, match="multiple of patch_len=10, got 25; use 20"):
        model.embed_chunked(x, chunk_samples=25)
    with pytest.raises(ConfigError, match="exactly one of"):
        model.embed_chunked(x)
    with pytest.raises(ConfigError, match="needs sampling_rate_hz"):
        model.embed_chunked(x, chunk_s=2.0)


def test_chunked_hour_scale_input_is_memory_bounded() -> None:
    # 19 EEG channels × 200,000 samples (13 min at 256 Hz): 380,000 channel-patch tokens in all, which
    # full attention could not hold (380k² scores); chunked, no forward sees more than one group.
    model = PatchTransformer(19, patch_len=50, dim=8, depth=1, n_heads=2, mlp_ratio=2.0)
    seen: list[int] = []
    model.blocks[0].register_forward_hook(lambda mod, args, out: seen.append(out.shape[0] * out.shape[1]))
    x = torch.randn(1, 19, 200_000)
    e = model.embed_chunked(x, chunk_samples=2_000, chunks_per_batch=10)
    assert e.shape == (1, 8) and torch.isfinite(e).all()
    assert len(seen) == 10  # 100 chunks in groups of 10
    assert max(seen) <= 10 * model.n_tokens(2_000) == 10 * 19 * 40


# -- attention backends and long sequences ----------------------------------------------------------------
class _LargestTensor:
    """Records the largest tensor any aten op produces (forward and backward) while active."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        record = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(t, torch.Tensor):
                        record.numel = max(record.numel, t.numel())
                return out

        self.numel = 0
        self.mode = Mode()

    def __enter__(self) -> _LargestTensor:
        self.mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.mode.__exit__(*exc)


@pytest.mark.parametrize("backends, quadratic", [(None, False), (("flash",), False), ("math", True)])
def test_forward_backward_never_stores_the_token_by_token_scores(backends, quadratic) -> None:
    # 2 channels × 600 patches = 1,200 tokens, 2 heads: the scores would be 2 · 1,200² = 2.9 M values,
    # every other tensor is at most tokens × 4 · dim = 1,200 × 64 = 77 k. torch's default choice on the
    # CPU (its flash kernel) must keep every tensor linear in the tokens; the forced math path must not
    # (which shows that the probe sees the scores when they exist).
    torch.manual_seed(0)
    model = PatchTransformer(2, patch_len=5, dim=16, depth=2, n_heads=2, attention_backends=backends)
    x = torch.randn(1, 2, 3000)
    tokens = model.n_tokens(3000)
    with _LargestTensor() as probe:
        model(x).square().sum().backward()
    scores = 2 * tokens * tokens
    assert (probe.numel >= scores) == quadratic, (probe.numel, scores)
    assert model.attention_backend(x) == ("math" if quadratic else "flash")


def test_forced_backends_agree_with_the_default() -> None:
    default = _tiny().eval()
    math_only = _tiny(attention_backends="math").eval()
    math_only.load_state_dict(default.state_dict())
    x = torch.randn(2, 3, 95)
    with torch.no_grad():
        torch.testing.assert_close(math_only(x), default(x), rtol=1e-5, atol=1e-5)


def test_attention_backend_follows_mode_and_autocast() -> None:
    model = _tiny(dropout=0.1)
    x = torch.randn(1, 3, 40)
    model.eval()
    assert model.attention_backend(x) == "flash"
    model.train()  # dropout on the CPU: only the math path takes it
    assert model.attention_backend(x) == "math"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _tiny().eval().attention_backend(x) == "flash"


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch explains why flash is not used
def test_restricted_backends_raise_instead_of_falling_back() -> None:
    model = _tiny(dropout=0.1, attention_backends=("flash", "efficient")).train()
    x = torch.randn(1, 3, 40)
    assert model.attention_backend(x) == "none"
    with pytest.raises(ConfigError, match=r"none of the allowed attention backends \('flash', 'efficient'\)"):
        model(x)
    model.eval()  # no dropout: flash takes it
    assert model(x).shape == (1, 16)
    with pytest.raises(ConfigError, match="non-empty selection of"):
        _tiny(attention_backends=("flash", "fast"))
