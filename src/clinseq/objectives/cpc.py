"""CPC: contrastive predictive coding — predict future frames from the causal context.

van den Oord, Li & Vinyals 2018, "Representation learning with contrastive predictive coding" (arXiv
1807.03748), eq. 4. An encoder gives frames z_t = g(x) and a GRU/LSTM the context c_t = g_ar(z_≤t)
(``clinseq.models.CPCEncoder``). Two variants:

``variant="oord"`` (default): van den Oord's K-step form. For each step k = 1..K a linear predictor W_k
(no bias, as f_k(x, c) = exp(zᵀ W_k c) in the paper) maps c_t to p_{t,k} = W_k c_t, scored against
*every* frame of the batch by a raw dot product (no normalisation, τ = 1):

    ℓ_{b,t,k} = log Σ_{b', t'} exp(p_{b,t,k}·z_{b',t'}/τ) − p_{b,t,k}·z_{b,t+k}/τ
    L = mean of ℓ over all kept (b, t, k), i.e. t + k < T       (K = 12 by default)

the positive being the true future frame z_{b,t+k} and the negatives every other (b', t') of the batch.
Predictions whose target lies past the end are dropped, so step k has B·(T − k) terms and every kept
prediction weighs the same. All K steps run in one launch of the fused kernel
(:func:`clinseq.kernels.cpc_info_nce`): this is the long-sequence case, B·T queries per step against B·T
keys, and the logits are never materialised.

``variant="mehari"``: the setup of Mehari & Strodthoff 2022 (Comput. Biol. Med. 141:105114) as their code
(github.com/tmehari/ssm_ecg, ``CPCModel.cpc_loss``) computes it. One step only, k = ``n_steps`` (12 in
their ECG pretraining), one predictor W (no bias); for each query (b, t), t < T − k, ``n_negatives``
(their 128) negatives are drawn uniformly, with replacement, from the frames of the whole batch at every
time position except t + k — in every sequence, so the positive is never its own negative (nor is the
same position of another sequence) — and the loss is the cross-entropy over [positive; negatives],
averaged over the batch and *summed* over t:

    ℓ_{b,t} = log( exp(p_{b,t}·z_{b,t+k}/τ) + Σ_{n} exp(p_{b,t}·z_{idx_{b,t,n}}/τ) ) − p_{b,t}·z_{b,t+k}/τ
    L = Σ_{t < T−k} mean_b ℓ_{b,t}

(the sum over t makes L grow with T; their default τ is 1). Negatives come from this process's batch
only (their code is single-device); ``loss_step{k}`` is the mean ℓ.
"""

from __future__ import annotations

import torch
from torch import nn

from clinseq.errors import ShapeError
from clinseq.kernels import cpc_ids, cpc_info_nce, grouped_info_nce
from clinseq.objectives._common import (
    check_choice,
    check_embeddings,
    check_positive_int,
    retrieval_top1,
)
from clinseq.objectives.base import ContrastiveObjective, LossOutput

__all__ = ["CPC", "VARIANTS"]

#: ``"oord"``: K steps, every frame a negative; ``"mehari"``: one step, sampled negatives, Σ over t.
VARIANTS = ("oord", "mehari")


class CPC(ContrastiveObjective):
    """Holds the predictors; ``forward(z (B, T, Dz), c (B, T, Dc)) -> LossOutput``.

    Args:
        context_dim: Dc, the size of c_t (``CPCEncoder.embed_dim``).
        z_dim: Dz, the size of z_t (``CPCEncoder.z_dim``).
        n_steps: K, the number of future steps predicted (default 12); with ``variant="mehari"`` the one
            step k predicted.
        temperature: τ (default 1.0: CPC's raw dot product).
        variant: ``"oord"`` (K steps, every frame a negative) or ``"mehari"`` (step k only, sampled
            negatives, summed over t); see the module docstring.
        n_negatives: negatives sampled per query with ``variant="mehari"`` (default 128).

    The predictors are one ``nn.Linear(context_dim, n_steps * z_dim, bias=False)`` whose rows
    [k·Dz, (k + 1)·Dz) are W_{k+1} (``predictor_weight(k)`` returns W_k, k = 1..K); with ``"mehari"`` one
    ``nn.Linear(context_dim, z_dim, bias=False)`` (``predictor_weight(n_steps)``). Metrics: ``loss``,
    ``loss_step{k}`` (mean loss of step k), ``top1`` (the true future frame scores highest: among every
    frame, on a strided subsample of at most 2048 predictions, or among the sampled candidates; with
    ``track_accuracy``).
    """

    def __init__(
        self,
        context_dim: int,
        z_dim: int,
        n_steps: int = 12,
        temperature: float = 1.0,
        variant: str = "oord",
        n_negatives: int = 128,
        **kwargs,
    ) -> None:
        super().__init__(temperature, **kwargs)
        check_choice("variant", variant, VARIANTS)
        self.variant = variant
        self.context_dim = check_positive_int("context_dim", context_dim)
        self.z_dim = check_positive_int("z_dim", z_dim)
        self.n_steps = check_positive_int("n_steps", n_steps)
        self.n_negatives = check_positive_int("n_negatives", n_negatives)
        n_predictors = 1 if variant == "mehari" else n_steps
        self.predictors = nn.Linear(context_dim, n_predictors * z_dim, bias=False)

    def predictor_weight(self, k: int) -> torch.Tensor:
        """W_k (Dz, Dc) for step k ∈ [1, K] (a view of the shared weight); ``"mehari"``: k = K only."""
        if self.variant == "mehari":
            if k != self.n_steps:
                raise ShapeError(f"CPC(variant='mehari') predicts step {self.n_steps} only, got k={k}")
            return self.predictors.weight
        if not 1 <= k <= self.n_steps:
            raise ShapeError(f"step k must be in [1, {self.n_steps}], got {k}")
        return self.predictors.weight[(k - 1) * self.z_dim : k * self.z_dim]

    def predict(self, c: torch.Tensor) -> torch.Tensor:
        """(K, B, T, Dz) predictions p_{t,k} = W_k c_t of every context frame (K = 1 for ``"mehari"``)."""
        b, t, _ = c.shape
        return self.predictors(c).reshape(b, t, -1, self.z_dim).permute(2, 0, 1, 3)

    def negative_indices(self, b: int, t: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """``"mehari"``: (B, T − k, n_negatives) indices into the B·T frames of z (row-major (b, t)) of the
        negatives of each query (b, t): uniform with replacement over the batch's frames at every position
        but t + k. Drawn from torch's global generator (``torch.manual_seed`` makes them repeatable)."""
        k, n = self.n_steps, self.n_negatives
        draw = torch.randint(0, b * (t - 1), (b, t - k, n), device=device)
        seq, pos = draw // (t - 1), draw % (t - 1)
        target = torch.arange(k, t, device=device).view(1, -1, 1)  # t + k of each query
        pos = pos + (pos >= target).long()  # skip the target position
        return seq * t + pos

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> LossOutput:
        check_embeddings("CPC", "z", z, "(B, T, Dz)", 3)
        check_embeddings("CPC", "c", c, "(B, T, Dc)", 3)
        b, t, dz = z.shape
        if dz != self.z_dim or c.shape[-1] != self.context_dim or c.shape[:2] != z.shape[:2]:
            raise ShapeError(
                f"CPC was built for z (B, T, {self.z_dim}) and c (B, T, {self.context_dim}) with the same B "
                f"and T, got z {tuple(z.shape)} and c {tuple(c.shape)}"
            )
        if t < 2:
            raise ShapeError(
                f"CPC needs at least 2 frames per sequence (T >= 2) to predict a future, got T={t}"
            )
        if self.variant == "mehari":
            return self._mehari(z, c)
        p = self.predict(c).to(z.dtype)
        if self._distributed:
            # Negatives from every rank: keys of other ranks get ids offset by their block (cpc_ids numbers
            # the local frames 0..B·T−1, and the local block comes first).
            q_ids, k_ids = cpc_ids(self.n_steps, b, t, device=z.device)
            keys, key_ids = self._gather_instances(z.reshape(b * t, dz), k_ids, b * t)
            rows = grouped_info_nce(
                p.reshape(-1, dz),
                keys,
                q_ids,
                key_ids,
                self.tau(),
                exclude_self=False,
                reduction="none",
                backend=self.backend,
            ).reshape(self.n_steps, b, t)
        else:
            rows = cpc_info_nce(p, z, self.tau(), reduction="none", backend=self.backend)
        kept = [b * max(t - k, 0) for k in range(1, self.n_steps + 1)]  # predictions with a target
        per_step = rows.sum(dim=(1, 2))
        loss = per_step.sum() / sum(kept)
        metrics: dict[str, torch.Tensor | float] = {"loss": loss.detach()}
        for k, n in enumerate(kept, start=1):
            if n:
                metrics[f"loss_step{k}"] = per_step[k - 1].detach() / n
        if self.track_accuracy:
            q_ids, k_ids = cpc_ids(self.n_steps, b, t, device=z.device)
            metrics["top1"] = retrieval_top1(
                p.reshape(-1, dz), z.reshape(b * t, dz), q_ids, k_ids, exclude_self=False
            )
        return LossOutput(loss, metrics)

    def _mehari(self, z: torch.Tensor, c: torch.Tensor) -> LossOutput:
        """Step k = n_steps, sampled negatives, Σ_t mean_b (see the module docstring)."""
        b, t, dz = z.shape
        k = self.n_steps
        if t <= k:
            raise ShapeError(
                f"CPC(variant='mehari') predicts {k} frames ahead and needs T > {k} frames, got T={t}"
            )
        p = self.predictors(c[:, : t - k]).to(z.dtype)  # (B, T − k, Dz)
        frames = z.reshape(b * t, dz)
        idx = self.negative_indices(b, t, z.device).reshape(b * (t - k), self.n_negatives)
        queries = p.reshape(b * (t - k), dz)
        # Scores of every query against every frame, gathered at its sampled negatives, a few rows at a
        # time: only the gathered (B·(T − k), n) scores are kept, never the (B·(T − k), n, Dz) frames.
        rows = max(1, 2**24 // (b * t))
        negatives = torch.cat(
            [
                (queries[i : i + rows] @ frames.T).gather(1, idx[i : i + rows])
                for i in range(0, len(idx), rows)
            ]
        )
        positive = (p * z[:, k:]).sum(dim=-1).reshape(-1, 1)
        logits = torch.cat([positive, negatives], dim=1) / self.tau()
        per_query = (torch.logsumexp(logits, dim=1) - logits[:, 0]).reshape(b, t - k)
        loss = per_query.mean(dim=0).sum()
        metrics: dict[str, torch.Tensor | float] = {
            "loss": loss.detach(),
            f"loss_step{k}": per_query.detach().mean(),
        }
        if self.track_accuracy:
            metrics["top1"] = (logits.detach().argmax(dim=1) == 0).float().mean()
        return LossOutput(loss, metrics)

    def extra_repr(self) -> str:
        extra = f", n_negatives={self.n_negatives}" if self.variant == "mehari" else ""
        return (
            f"context_dim={self.context_dim}, z_dim={self.z_dim}, n_steps={self.n_steps}, "
            f"variant={self.variant!r}{extra}, " + super().extra_repr()
        )
