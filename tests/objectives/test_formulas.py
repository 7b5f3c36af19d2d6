"""Every objective against an independent dense formula written here (plain matrices and loops, no kernel).

The formulas follow the papers' notation (cross-entropy over explicit logits, or the multi-positive
average written out per row); the objectives compute the same numbers through the grouped-InfoNCE
primitive. float64 to 1e-10 where the chunked torch backend runs in float64, float32 to 1e-5.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clinseq.objectives import (
    CLOCS,
    COMET,
    CPC,
    EBCL,
    PCLR,
    PMQ,
    CrossModalCLIP,
    MoCo,
    PatientWindowContrast,
    PolyWindow,
    SimCLR,
    SupCon,
)

F64 = dict(rtol=0, atol=1e-10)
F32 = dict(rtol=0, atol=1e-5)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _multi_positive(s: torch.Tensor, candidate: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Mean over rows with ≥ 1 positive of −(1/|P|) Σ_p log(exp(s_ip) / Σ_candidates exp(s_ij)), by loops."""
    losses = []
    for i in range(s.shape[0]):
        pos = [j for j in range(s.shape[1]) if positive[i, j]]
        if not pos:
            continue
        denom = sum(math.exp(s[i, j]) for j in range(s.shape[1]) if candidate[i, j])
        losses.append(-sum(math.log(math.exp(s[i, p]) / denom) for p in pos) / len(pos))
    return torch.tensor(sum(losses) / len(losses), dtype=torch.float64)


# ------------------------------------------------------------------------------------------ SimCLR
@pytest.mark.parametrize("dtype,tol", [(torch.float64, F64), (torch.float32, F32)])
def test_simclr_is_nt_xent(dtype: torch.dtype, tol: dict) -> None:
    g = torch.Generator().manual_seed(0)
    b, d, tau = 7, 5, 0.1
    z1, z2 = torch.randn(b, d, generator=g, dtype=dtype), torch.randn(b, d, generator=g, dtype=dtype)
    out = SimCLR(tau)(z1, z2)
    # Chen et al. eq. 1: 2B × 2B cosine logits, self excluded, target = the other view.
    u = _unit(torch.cat([z1, z2]).double())
    logits = (u @ u.T / tau).fill_diagonal_(-math.inf)
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    expected = F.cross_entropy(logits, target)
    torch.testing.assert_close(out.loss.double(), expected, **tol)
    torch.testing.assert_close(
        out.metrics["pos_cosine"].double(), F.cosine_similarity(z1, z2).mean().double()
    )
    top1 = (logits.argmax(dim=1) == target).double().mean()
    torch.testing.assert_close(out.metrics["top1"].double(), top1)


def test_simclr_gradient_matches_dense() -> None:
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    SimCLR(0.2)(z1, z2).loss.mul(3.0).backward()  # grad_output ≠ 1
    got = (z1.grad.clone(), z2.grad.clone())
    z1.grad = z2.grad = None
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (u @ u.T / 0.2) - torch.eye(12, dtype=torch.float64) * 1e9
    target = torch.cat([torch.arange(6, 12), torch.arange(6)])
    F.cross_entropy(logits, target).mul(3.0).backward()
    torch.testing.assert_close(got[0], z1.grad, **F64)
    torch.testing.assert_close(got[1], z2.grad, **F64)


# --------------------------------------------------------------------------- PCLR, SupCon, EHR, poly
def _stacked_dense(z: torch.Tensor, ids: torch.Tensor, tau: float) -> torch.Tensor:
    u = _unit(z.double())
    n = u.shape[0]
    candidate = ~torch.eye(n, dtype=torch.bool)
    positive = candidate & (ids[:, None] == ids[None, :])
    return _multi_positive(u @ u.T / tau, candidate, positive)


def test_pclr_patients_as_positives() -> None:
    g = torch.Generator().manual_seed(2)
    z = torch.randn(9, 6, generator=g, dtype=torch.float64)
    pid = torch.tensor([5, 5, 7, 7, 7, 11, 13, 13, 2])  # 11 and 2 have no other recording: skipped
    out = PCLR(0.1)(z, pid)
    torch.testing.assert_close(out.loss.double(), _stacked_dense(z, pid, 0.1), **F64)
    # With exactly two recordings per patient this is the paper's NT-Xent.
    z = torch.randn(8, 6, generator=g, dtype=torch.float64)
    pid = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    torch.testing.assert_close(PCLR(0.1)(z, pid).loss, SimCLR(0.1)(z[:4], z[4:]).loss, **F64)


def test_supcon_paper_equation() -> None:
    g = torch.Generator().manual_seed(3)
    b, v, d = 6, 2, 5
    z = torch.randn(b, v, d, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    out = SupCon(0.1)(z, labels)
    # Khosla et al. eq. 2, anchors = all B·V views (contrast_mode "all"), written with loops.
    u = _unit(z.reshape(b * v, d))
    y = labels.repeat_interleave(v)
    s = u @ u.T / 0.1
    total, count = 0.0, 0
    for i in range(b * v):
        others = [a for a in range(b * v) if a != i]
        pos = [p for p in others if y[p] == y[i]]
        log_den = math.log(sum(math.exp(s[i, a]) for a in others))
        total += -sum(s[i, p].item() - log_den for p in pos) / len(pos)
        count += 1
    torch.testing.assert_close(out.loss.double(), torch.tensor(total / count, dtype=torch.float64), **F64)


def test_patient_window_contrast() -> None:
    g = torch.Generator().manual_seed(4)
    z1, z2 = (
        torch.randn(5, 4, generator=g, dtype=torch.float64),
        torch.randn(5, 4, generator=g, dtype=torch.float64),
    )
    pid = torch.tensor([3, 1, 3, 8, 9])  # patient 3 twice: all four of its windows are positives
    out = PatientWindowContrast(0.1)(z1, z2, pid)
    expected = _stacked_dense(torch.cat([z1, z2]), torch.cat([pid, pid]), 0.1)
    torch.testing.assert_close(out.loss.double(), expected, **F64)


def test_polywindow_all_pairs() -> None:
    g = torch.Generator().manual_seed(5)
    z = torch.randn(10, 6, generator=g, dtype=torch.float64)
    rec = torch.tensor([4, 4, 4, 4, 9, 9, 9, 9, 1, 1])
    out = PolyWindow(0.1, "all_pairs")(z, rec)
    torch.testing.assert_close(out.loss.double(), _stacked_dense(z, rec, 0.1), **F64)


def test_polywindow_loo_mean() -> None:
    g = torch.Generator().manual_seed(6)
    z = torch.randn(11, 5, generator=g, dtype=torch.float64)
    rec = torch.tensor([2, 7, 2, 7, 2, 7, 2, 7, 5, 5, 3])  # interleaved; 3 is a singleton
    tau = 0.1
    out = PolyWindow(tau, "loo_mean")(z, rec)
    u = _unit(z)
    n = len(rec)
    members = {r: [i for i in range(n) if rec[i] == r] for r in rec.tolist()}
    position = [members[rec[i].item()].index(i) for i in range(n)]
    loo = {}
    for i in range(n):
        others = [j for j in members[rec[i].item()] if j != i]
        if others:
            loo[i] = _unit(sum(u[j] for j in others) / len(others))
    # Window → its LOO mean against the LOO means of other recordings at the same position; and back.
    terms_a, terms_b = [], []
    for i in loo:
        same_pos = [j for j in loo if position[j] == position[i]]
        lse_a = math.log(sum(math.exp(u[i] @ loo[j] / tau) for j in same_pos))
        terms_a.append(lse_a - (u[i] @ loo[i]).item() / tau)
        lse_b = math.log(sum(math.exp(loo[i] @ u[j] / tau) for j in range(n) if position[j] == position[i]))
        terms_b.append(lse_b - (loo[i] @ u[i]).item() / tau)
    expected = 0.5 * (sum(terms_a) / len(terms_a) + sum(terms_b) / len(terms_b))
    torch.testing.assert_close(out.loss.double(), torch.tensor(expected, dtype=torch.float64), **F64)


# -------------------------------------------------------------------------------------------- CLOCS
@pytest.mark.parametrize("mode,shape", [("cmsc", (6, 2, 5)), ("cmlc", (6, 4, 5)), ("cmsmlc", (6, 2, 3, 5))])
def test_clocs_view_pairs(mode: str, shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(7)
    z = torch.randn(*shape, generator=g, dtype=torch.float64)
    pid = torch.tensor([0, 1, 0, 2, 3, 1])
    out = CLOCS(mode, 0.1)(z, pid)
    views = z.reshape(6, -1, 5)
    v = views.shape[1]
    positive = pid[:, None] == pid[None, :]  # diagonal and same-patient off-diagonal (eqs. 2–3)
    every = torch.ones(6, 6, dtype=torch.bool)
    terms = []
    for a in range(v):
        for b in range(v):
            if a != b:
                s = _unit(views[:, a]) @ _unit(views[:, b]).T / 0.1
                terms.append(_multi_positive(s, every, positive))
    torch.testing.assert_close(out.loss.double(), torch.stack(terms).mean(), **F64)


# ---------------------------------------------------------------------------------- CLIP, EBCL
def test_clip_objectives_are_symmetric_cross_entropy() -> None:
    g = torch.Generator().manual_seed(8)
    a, b = (
        torch.randn(7, 4, generator=g, dtype=torch.float64),
        torch.randn(7, 4, generator=g, dtype=torch.float64),
    )
    logits = _unit(a) @ _unit(b).T
    target = torch.arange(7)
    for objective in (EBCL(), CrossModalCLIP().double()):
        tau = objective.tau()  # learnable: exp(-log(1/0.07)) as stored
        tau = float(tau.detach()) if isinstance(tau, torch.Tensor) else tau
        expected = 0.5 * (F.cross_entropy(logits / tau, target) + F.cross_entropy(logits.T / tau, target))
        torch.testing.assert_close(objective(a, b).loss.double(), expected, **F64)


def test_clip_patient_ids_and_learnable_temperature_gradient() -> None:
    g = torch.Generator().manual_seed(9)
    a = torch.randn(6, 4, generator=g, dtype=torch.float64)
    b = torch.randn(6, 4, generator=g, dtype=torch.float64)
    pid = torch.tensor([1, 2, 1, 3, 4, 5])
    obj = CrossModalCLIP(temperature=0.07).double()
    out = obj(a, b, pid)
    positive = pid[:, None] == pid[None, :]
    every = torch.ones(6, 6, dtype=torch.bool)
    tau = float(obj.tau().detach())
    s = _unit(a) @ _unit(b).T / tau
    expected = 0.5 * (_multi_positive(s, every, positive) + _multi_positive(s.T, every, positive.T))
    torch.testing.assert_close(out.loss.double(), expected, **F64)
    # d loss / d logit_scale against the dense formula with autograd.
    out.loss.backward()
    scale = obj.logit_scale.detach().clone().requires_grad_(True)
    logits = (_unit(a) @ _unit(b).T) * scale.exp()
    logp_ab = logits.log_softmax(dim=1)
    logp_ba = logits.T.log_softmax(dim=1)
    dense = 0.5 * (
        -(logp_ab * positive).sum(1).div(positive.sum(1)).mean()
        - (logp_ba * positive).sum(1).div(positive.sum(1)).mean()
    )
    dense.backward()
    torch.testing.assert_close(obj.logit_scale.grad, scale.grad, **F64)


# --------------------------------------------------------------------------------------- MoCo, PMQ
def test_moco_against_dense_logits_with_queue() -> None:
    g = torch.Generator().manual_seed(10)
    moco = MoCo(dim=4, queue_size=9, temperature=0.2).double()
    history = [torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    for k in history[:2]:
        moco(torch.randn(5, 4, generator=g, dtype=torch.float64), k)  # fills the queue with 10 → 9 keys
    queue_before = moco.queue.keys.clone()
    q = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    out = moco(q, history[2])
    keys = torch.cat([_unit(history[2]), queue_before])
    logits = _unit(q) @ keys.T / 0.2
    expected = F.cross_entropy(logits, torch.arange(5))  # positive = own key, negatives = the rest
    torch.testing.assert_close(out.loss, expected, **F64)
    gq = torch.autograd.grad(out.loss, q)[0]
    torch.testing.assert_close(gq, torch.autograd.grad(expected, q)[0], **F64)


def test_pmq_instance_and_patient_terms() -> None:
    g = torch.Generator().manual_seed(11)
    tau = 0.1
    pmq = PMQ(dim=4, queue_size=8, temperature=tau).double()
    old_pid = torch.tensor([1, 2, 3, 1, 4, 2])
    pmq(
        torch.randn(6, 4, generator=g, dtype=torch.float64),
        torch.randn(6, 4, generator=g, dtype=torch.float64),
        old_pid,
    )
    queue_keys, queue_ids = pmq.queue.keys.clone(), pmq.queue.ids.clone()
    q = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(5, 4, generator=g, dtype=torch.float64)
    pid = torch.tensor([1, 2, 1, 9, 4])  # patient 9 has no other key: L_pat = L_inst for that row
    out = pmq(q, k, pid)
    cand = torch.cat([_unit(k), queue_keys])
    logp = (_unit(q) @ cand.T / tau).log_softmax(dim=1)
    l_inst = -logp[torch.arange(5), torch.arange(5)].mean()
    cand_pid = torch.cat([pid, queue_ids])
    same = pid[:, None] == cand_pid[None, :]
    l_pat = (-(logp * same).sum(1) / same.sum(1)).mean()
    torch.testing.assert_close(out.metrics["loss_inst"], l_inst.detach(), **F64)
    torch.testing.assert_close(out.metrics["loss_pat"], l_pat.detach(), **F64)
    expected = tau * (l_inst + l_pat)
    torch.testing.assert_close(out.loss, expected, **F64)
    torch.testing.assert_close(
        torch.autograd.grad(out.loss, q)[0], torch.autograd.grad(expected, q)[0], **F64
    )


# --------------------------------------------------------------------------------------------- CPC
def test_cpc_against_loops() -> None:
    g = torch.Generator().manual_seed(12)
    b, t, dz, dc, k_steps = 2, 6, 3, 4, 3
    cpc = CPC(dc, dz, n_steps=k_steps).double()
    z = torch.randn(b, t, dz, generator=g, dtype=torch.float64)
    c = torch.randn(b, t, dc, generator=g, dtype=torch.float64)
    out = cpc(z, c)
    terms, per_step = [], {}
    for k in range(1, k_steps + 1):
        w = cpc.predictor_weight(k).detach()
        for bi in range(b):
            for ti in range(t - k):
                p = w @ c[bi, ti]
                scores = torch.stack([p @ z[bj, tj] for bj in range(b) for tj in range(t)])
                term = torch.logsumexp(scores, 0) - p @ z[bi, ti + k]
                terms.append(term)
                per_step.setdefault(k, []).append(term)
    torch.testing.assert_close(out.loss.detach(), torch.stack(terms).mean(), **F64)
    for k, v in per_step.items():
        torch.testing.assert_close(out.metrics[f"loss_step{k}"], torch.stack(v).mean(), **F64)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_cpc_mehari_against_loops(tau: float) -> None:
    """Mehari & Strodthoff's CPC: one step k, sampled negatives (never at position t + k), Σ_t mean_b."""
    g = torch.Generator().manual_seed(13)
    b, t, dz, dc, k, n_neg = 3, 7, 3, 4, 2, 5
    cpc = CPC(dc, dz, n_steps=k, temperature=tau, variant="mehari", n_negatives=n_neg).double()
    z = torch.randn(b, t, dz, generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.randn(b, t, dc, generator=g, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(3)
    idx = cpc.negative_indices(b, t)
    torch.manual_seed(3)  # forward draws the same negatives
    out = cpc(z, c)
    w = cpc.predictor_weight(k)
    loss = 0.0
    for ti in range(t - k):
        terms = []
        for bi in range(b):
            p = w @ c[bi, ti]
            negatives = [z[j // t, j % t] for j in idx[bi, ti].tolist()]
            assert all(j % t != ti + k for j in idx[bi, ti].tolist())  # never the target's position
            scores = torch.stack([p @ z[bi, ti + k], *(p @ n for n in negatives)]) / tau
            terms.append(-torch.log_softmax(scores, 0)[0])  # cross-entropy, target = the positive
        loss = loss + torch.stack(terms).mean()  # mean over the batch, summed over t
    torch.testing.assert_close(out.loss, loss, **F64)
    for x in (z, c):
        torch.testing.assert_close(
            torch.autograd.grad(out.loss, x, retain_graph=True)[0],
            torch.autograd.grad(loss, x, retain_graph=True)[0],
            **F64,
        )


def test_cpc_mehari_negatives_cover_every_other_frame() -> None:
    b, t, k = 2, 5, 3
    cpc = CPC(4, 3, n_steps=k, variant="mehari", n_negatives=4000)
    torch.manual_seed(0)
    idx = cpc.negative_indices(b, t)
    assert idx.shape == (b, t - k, 4000)
    for ti in range(t - k):
        drawn = set(idx[:, ti].flatten().tolist())
        allowed = {bj * t + tj for bj in range(b) for tj in range(t) if tj != ti + k}
        assert drawn == allowed  # all other frames of the batch, any sequence, and nothing else


# ------------------------------------------------------------------------------------------- COMET
def _ts2vec_temporal(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Observation level: per sample, 2T × 2T dot products, self excluded, positive = other view, same t."""
    b, t, _ = z1.shape
    z = torch.cat([z1, z2], dim=1)
    sim = z @ z.transpose(1, 2)
    sim = sim - torch.eye(2 * t, dtype=z.dtype) * 1e9
    logp = sim.log_softmax(dim=-1)
    idx = torch.arange(t)
    return -(logp[:, idx, t + idx].mean() + logp[:, t + idx, idx].mean()) / 2


def _ts2vec_instance(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Sample level: per timestamp, 2B × 2B dot products, self excluded, positive = other view."""
    b = z1.shape[0]
    z = torch.cat([z1, z2], dim=0).transpose(0, 1)
    sim = z @ z.transpose(1, 2) - torch.eye(2 * b, dtype=z.dtype) * 1e9
    logp = sim.log_softmax(dim=-1)
    idx = torch.arange(b)
    return -(logp[:, idx, b + idx].mean() + logp[:, b + idx, idx].mean()) / 2


def _hierarchical(fn, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    total, d = 0.0, 0
    while z1.shape[1] > 1:
        total = total + fn(z1, z2)
        d += 1
        z1 = F.max_pool1d(z1.transpose(1, 2), kernel_size=2).transpose(1, 2)
        z2 = F.max_pool1d(z2.transpose(1, 2), kernel_size=2).transpose(1, 2)
    return total / d


def test_comet_four_levels_against_dense() -> None:
    g = torch.Generator().manual_seed(13)
    b, t, d = 5, 7, 4
    z1, z2 = (
        torch.randn(b, t, d, generator=g, dtype=torch.float64),
        torch.randn(b, t, d, generator=g, dtype=torch.float64),
    )
    trial = torch.tensor([0, 0, 1, 2, 2])
    patient = torch.tensor([0, 0, 0, 1, 1])
    weights = (0.1, 0.2, 0.3, 0.4)
    out = COMET(weights, temperature=0.1)(z1, z2, trial, patient)
    obs = _hierarchical(_ts2vec_temporal, z1, z2)
    smp = _hierarchical(_ts2vec_instance, z1, z2)
    r1, r2 = _unit(z1.amax(dim=1)), _unit(z2.amax(dim=1))
    s = r1 @ r2.T / 0.1
    every = torch.ones(b, b, dtype=torch.bool)
    levels = {"observation": obs, "sample": smp}
    for name, ids in (("trial", trial), ("patient", patient)):
        pos = ids[:, None] == ids[None, :]
        levels[name] = 0.5 * (_multi_positive(s, every, pos) + _multi_positive(s.T, every, pos))
    for name, value in levels.items():
        torch.testing.assert_close(out.metrics[f"loss_{name}"].double(), value.double(), **F64)
    expected = sum(
        w * levels[name]
        for w, name in zip(weights, ("observation", "sample", "trial", "patient"), strict=True)
    )
    torch.testing.assert_close(out.loss.double(), expected.double(), **F64)


def test_comet_float32_and_gradient() -> None:
    g = torch.Generator().manual_seed(14)
    z1 = torch.randn(4, 6, 3, generator=g, requires_grad=True)
    z2 = torch.randn(4, 6, 3, generator=g, requires_grad=True)
    out = COMET((0.5, 0.5, 0, 0))(z1, z2)
    out.loss.backward()
    got = z1.grad.clone()
    z1.grad = None
    dense = 0.5 * _hierarchical(_ts2vec_temporal, z1, z2) + 0.5 * _hierarchical(_ts2vec_instance, z1, z2)
    torch.testing.assert_close(out.loss, dense.detach(), **F32)
    dense.backward()
    torch.testing.assert_close(got, z1.grad, **F32)
