"""Properties: CPC rewards knowing the future; COMET's levels are separable; metrics; input validation."""

from __future__ import annotations

import pytest
import torch

from clinseq.errors import ConfigError, ShapeError
from clinseq.models import CPCEncoder
from clinseq.objectives import (
    CLOCS,
    COMET,
    CPC,
    LEVELS,
    PCLR,
    PMQ,
    CrossModalCLIP,
    MoCo,
    PatientWindowContrast,
    PolyWindow,
    SimCLR,
    SupCon,
)


# --------------------------------------------------------------------------------------------- CPC
def _shifted_context(z: torch.Tensor, offsets: list[int]) -> torch.Tensor:
    """c_t = [z_{t+o} for o in offsets] (zeros outside the sequence)."""
    b, t, d = z.shape
    parts = []
    for o in offsets:
        part = torch.zeros_like(z)
        lo, hi = max(0, -o), min(t, t - o)
        part[:, lo:hi] = z[:, lo + o : hi + o]
        parts.append(part)
    return torch.cat(parts, dim=-1)


def test_cpc_predictor_that_knows_the_future_scores_lower() -> None:
    g = torch.Generator().manual_seed(0)
    b, t, dz, k_steps = 3, 24, 32, 3
    z = torch.randn(b, t, dz, generator=g)
    cpc = CPC(context_dim=k_steps * dz, z_dim=dz, n_steps=k_steps)
    with torch.no_grad():  # W_k reads block k of the context, scaled
        cpc.predictors.weight.zero_()
        for k in range(1, k_steps + 1):
            cpc.predictor_weight(k)[:, (k - 1) * dz : k * dz] = 2.0 * torch.eye(dz)
    knows_future = cpc(z, _shifted_context(z, [1, 2, 3]))  # block k holds z_{t+k}: the targets
    only_past = cpc(z, _shifted_context(z, [0, -1, -2]))  # block k holds z_{t-k+1}: causal, no future
    assert knows_future.loss < only_past.loss - 5.0
    assert knows_future.metrics["top1"] > 0.95 > 0.2 > only_past.metrics["top1"]
    for k in range(1, k_steps + 1):
        assert knows_future.metrics[f"loss_step{k}"] < only_past.metrics[f"loss_step{k}"]
    # A context that knows the future only partly (step 1 right, steps 2–3 wrong) lies in between.
    partial = cpc(z, _shifted_context(z, [1, -1, -2]))
    assert knows_future.loss < partial.loss < only_past.loss


def test_cpc_trains_with_the_encoder_and_uses_every_frame_as_negative() -> None:
    torch.manual_seed(0)
    enc = CPCEncoder(2, (8, 8), (3, 3), (2, 2), norm="ln", context="gru", context_dim=6)
    cpc = CPC(enc.embed_dim, enc.z_dim, n_steps=2)
    out = enc(torch.randn(3, 2, 64))
    res = cpc(out.z, out.c)
    res.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cpc.parameters())
    assert enc.encoder[0].weight.grad.abs().sum() > 0
    n_frames = out.z.shape[0] * out.z.shape[1]
    # Untrained, the loss is close to log(number of candidates): every frame of the batch is scored.
    assert abs(res.loss.item() - torch.log(torch.tensor(float(n_frames))).item()) < 1.5


# ------------------------------------------------------------------------------------------- COMET
def _comet_inputs():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(6, 8, 5, generator=g), torch.randn(6, 8, 5, generator=g)
    return z1, z2, torch.tensor([0, 0, 1, 1, 2, 3]), torch.tensor([0, 0, 0, 1, 1, 1])


@pytest.mark.parametrize("level", LEVELS)
def test_comet_zero_weight_changes_only_its_term(level: str) -> None:
    z1, z2, trial, patient = _comet_inputs()
    full = COMET((0.25,) * 4)(z1, z2, trial, patient)
    weights = {lvl: (0.0 if lvl == level else 0.25) for lvl in LEVELS}
    without = COMET(weights)(z1, z2, trial, patient)
    assert f"loss_{level}" not in without.metrics
    torch.testing.assert_close(
        without.loss, full.loss - 0.25 * full.metrics[f"loss_{level}"], rtol=0, atol=1e-6
    )
    for other in LEVELS:
        if other != level:
            assert torch.equal(without.metrics[f"loss_{other}"], full.metrics[f"loss_{other}"])


def test_comet_level_weights_scale_their_term_and_ids_only_when_needed() -> None:
    z1, z2, trial, patient = _comet_inputs()
    only_obs = COMET({"observation": 1.0})(z1, z2)  # no ids needed without trial/patient levels
    twice = COMET({"observation": 2.0})(z1, z2)
    torch.testing.assert_close(twice.loss, 2 * only_obs.loss)
    with pytest.raises(ShapeError, match="needs patient_ids"):
        COMET()(z1, z2, trial, None)
    # id_views replace (z1, z2) for the trial/patient levels only.
    g = torch.Generator().manual_seed(2)
    u1, u2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    a = COMET()(z1, z2, trial, patient)
    b = COMET()(z1, z2, trial, patient, id_views=(u1, u2))
    assert torch.equal(a.metrics["loss_observation"], b.metrics["loss_observation"])
    assert not torch.equal(a.metrics["loss_patient"], b.metrics["loss_patient"])
    # Without the hierarchy only the full-resolution scale is used; T = 1 works (no temporal negatives).
    flat = COMET(hierarchical=False)(z1, z2, trial, patient)
    assert not torch.equal(flat.metrics["loss_sample"], a.metrics["loss_sample"])
    one = COMET()(z1[:, :1], z2[:, :1], trial, patient)
    assert one.metrics["loss_observation"] == 0.0 and torch.isfinite(one.loss)


# ------------------------------------------------------------------------------------------ metrics
def test_metrics_are_detached_tensors_and_track_alignment() -> None:
    g = torch.Generator().manual_seed(3)
    z = torch.randn(8, 16, generator=g, requires_grad=True)
    aligned = SimCLR()(z, z + 0.01 * torch.randn(8, 16, generator=g))
    random = SimCLR()(z, torch.randn(8, 16, generator=g))
    for out in (aligned, random):
        assert out.loss.requires_grad
        for name, value in out.metrics.items():
            assert isinstance(value, torch.Tensor) and not value.requires_grad and value.ndim == 0, name
    assert aligned.metrics["top1"] == 1.0 and aligned.metrics["pos_cosine"] > 0.99
    assert aligned.loss < random.loss
    assert "top1" not in SimCLR(track_accuracy=False)(z, z).metrics


# ------------------------------------------------------------------------------------------- errors
def test_temperature_and_options_are_validated() -> None:
    for bad in (0.0, -0.1, float("inf"), True, "0.1"):
        with pytest.raises(ConfigError, match="temperature must be a finite float > 0"):
            SimCLR(bad)
    with pytest.raises(ConfigError, match="instance_temperature must be a finite float > 0"):
        COMET(instance_temperature=0)
    with pytest.raises(ConfigError, match="variant must be one of"):
        PolyWindow(variant="pairs")
    with pytest.raises(ConfigError, match="mode must be one of"):
        CLOCS("cmxc")
    with pytest.raises(ConfigError, match="backend must be one of"):
        PCLR(backend="cuda")
    with pytest.raises(ConfigError, match="level_weights must give 4 weights"):
        COMET((0.5, 0.5))
    with pytest.raises(ConfigError, match="unknown"):
        COMET({"visit": 1.0})
    with pytest.raises(ConfigError, match="at least one COMET level weight must be > 0"):
        COMET((0, 0, 0, 0))
    with pytest.raises(ConfigError, match="must be a finite float >= 0"):
        COMET((-1, 1, 1, 1))
    with pytest.raises(ConfigError, match="queue_size must be a positive int"):
        PMQ(8, queue_size=0)
    with pytest.raises(ConfigError, match="learnable temperature starts at >= 0.01"):
        CrossModalCLIP(temperature=0.001)
    assert CrossModalCLIP(temperature=0.001, learnable_temperature=False).tau() == 0.001


def test_shapes_and_ids_are_validated_with_precise_messages() -> None:
    z = torch.randn(4, 3)
    with pytest.raises(
        ShapeError, match=r"SimCLR expects z1 and z2 of the same shape .* \(4, 3\) and \(5, 3\)"
    ):
        SimCLR()(z, torch.randn(5, 3))
    with pytest.raises(ShapeError, match=r"SimCLR expects z1 of shape \(B, D\), got shape \(4, 3, 2\)"):
        SimCLR()(torch.randn(4, 3, 2), z)
    with pytest.raises(ShapeError, match=r"PCLR expects patient_ids of shape \(N,\) = \(4,\)"):
        PCLR()(z, torch.tensor([0, 1, 2]))
    with pytest.raises(ShapeError, match="PCLR expects integer patient_ids, got dtype torch.float32"):
        PCLR()(z, torch.zeros(4))
    with pytest.raises(ShapeError, match="expects floating z"):
        PCLR()(torch.ones(4, 3, dtype=torch.long), torch.arange(4))
    with pytest.raises(ShapeError, match="as an integer tensor"):
        PolyWindow()(z, [0, 0, 1, 1])
    with pytest.raises(ShapeError, match="needs at least 2 views"):
        CLOCS()(torch.randn(4, 1, 3), torch.arange(4))
    with pytest.raises(ShapeError, match=r"SupCon expects labels of shape \(B,\) = \(4,\)"):
        SupCon()(torch.randn(4, 2, 3), torch.arange(8))
    with pytest.raises(ShapeError, match=r"PMQ was built for dim=8, got q of shape \(4, 3\)"):
        PMQ(8)(z, z, torch.arange(4))
    with pytest.raises(ShapeError, match=r"MoCo expects q and k of the same shape"):
        MoCo(3)(z, z[:2])
    with pytest.raises(ShapeError, match="T >= 2"):
        CPC(4, 3)(torch.randn(2, 1, 3), torch.randn(2, 1, 4))
    with pytest.raises(ShapeError, match=r"CPC was built for z \(B, T, 3\) and c \(B, T, 4\)"):
        CPC(4, 3)(torch.randn(2, 5, 3), torch.randn(2, 5, 5))
    with pytest.raises(ShapeError, match="needs T > 3 frames"):
        CPC(4, 3, n_steps=3, variant="mehari")(torch.randn(2, 3, 3), torch.randn(2, 3, 4))
    with pytest.raises(ConfigError, match="variant must be one of"):
        CPC(4, 3, variant="mehari2022")
    with pytest.raises(ShapeError, match=r"COMET expects z1 of shape \(B, T, D\)"):
        COMET()(z, z)
    with pytest.raises(ShapeError, match=r"CrossModalCLIP expects z_ecg and z_ehr of the same shape"):
        CrossModalCLIP()(z, torch.randn(4, 5))
    with pytest.raises(ShapeError, match="PatientWindowContrast expects patient_ids"):
        PatientWindowContrast()(z, z, torch.arange(3))
    with pytest.raises(ShapeError, match="got an empty z"):
        PCLR()(torch.randn(0, 3), torch.arange(0))
