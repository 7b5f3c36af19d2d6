"""PMQ: contrastive learning with a patient memory queue.

Sun, Yang & Dong 2025, "Enhancing contrastive learning-based electrocardiogram pretrained model with
patient memory queue" (arXiv 2506.06310). A MoCo-style objective whose queue also stores the *patient id*
of every key, so that keys of the same patient — in the batch and in the (much larger) queue — are
positives. With the query q = pred(proj(f(x¹))) of the online branch (``ProjectionHead`` +
``PredictionHead``), the key k = proj_m(f_m(x²)) of the momentum branch
(:class:`clinseq.objectives.MomentumEncoder`, m = 0.999), both l2-normalised, and the candidates
C = [keys of the batch; queue] (K = 16,384 queued keys, τ = 0.1):

    L_inst,i = −log( exp(q_i·k_i/τ) / Σ_{c ∈ C} exp(q_i·c/τ) )
    L_pat,i  = −(1/|P(i)|) Σ_{p ∈ P(i)} log( exp(q_i·p/τ) / Σ_{c ∈ C} exp(q_i·c/τ) ),
               P(i) = { c ∈ C : pid(c) = pid_i }   (batch keys of i's patient, k_i included, and queue)
    L        = τ · (mean_i L_inst,i + mean_i L_pat,i)

(the factor τ is the paper's scaling of the sum). The row's own key k_i belongs to its patient, so P(i)
is never empty and, when the patient has no other key in batch or queue, L_pat,i = L_inst,i. After the
loss the batch keys are enqueued with their patient ids (FIFO). The paper's views are the two adjacent
halves of a segment, with time masking (ratio 0.5) and frequency perturbation (ratio 0.1); that is
data-side (``clinseq.data``).

This module is derived from the paper's definition as design §5 states it, not ported from the
authors' code (which, the design notes, reads an attribute it never sets). What the loss in their
repository (github.com/3hiuwoo/PMQ) does, as we read it: it builds the B × (B + K) similarity of the
queries against [batch keys; queue] and takes as patient positives of row i the same-patient columns
*after the row* — batch keys k_j with j > i and every same-patient queued key (``np.triu(..., 1)`` of
the same-patient mask), not every j ≠ i, so the first of two same-patient rows sees the second's key
and the second does not see the first's. The instance term (the diagonal, k_i) is separate, and the
patient term is a mean over all (row, positive) pairs of the batch, not a per-row mean over P(i). In
``model/loss.py`` (``id_momentum_loss``, ``id_momentum_contrastive_loss``) the two terms are averaged,
(L_inst + L_pat) / 2; the loss of their ``tfp.py`` (``TFP2.loss_func``) returns 2·τ × the mean of its
terms (for two terms τ × their sum): the official code does scale the sum by τ, as the paper's
L = τ · (L_inst + L_pat) and this module (``scale_by_temperature=True``) do.

Usage::

    key_branch = MomentumEncoder(nn.Sequential(encoder, projection), momentum=0.999)
    q = predictor(projection(encoder(x1)));  k = key_branch(x2)
    out = pmq(q, k, patient_ids);  out.loss.backward();  opt.step()
    key_branch.update(nn.Sequential(encoder, projection))
"""

from __future__ import annotations

import torch

from clinseq.errors import ShapeError
from clinseq.models import l2_normalize
from clinseq.objectives._common import (
    check_embeddings,
    check_ids,
    check_positive_int,
    check_same_shape,
    mean_pair_cosine,
    retrieval_top1,
)
from clinseq.objectives.base import ContrastiveObjective, LossOutput
from clinseq.objectives.distributed import gather_no_grad, to_local_first
from clinseq.objectives.queue import KeyQueue

__all__ = ["PMQ"]


class PMQ(ContrastiveObjective):
    """``forward(q (B, D), k (B, D), patient_ids (B,), update=True) -> LossOutput``.

    Args:
        dim: query/key dimension D.
        queue_size: number of queued keys (default 16,384; ≥ the global batch size).
        temperature: τ (default 0.1).
        scale_by_temperature: multiply L_inst + L_pat by τ (the paper's L; default True).

    ``update=False`` leaves the queue untouched. Metrics: ``loss``, ``loss_inst``, ``loss_pat``,
    ``pos_cosine`` (q·k_i), ``top1`` (k_i is the most similar candidate), ``queue_fill``.
    """

    def __init__(
        self,
        dim: int,
        queue_size: int = 16384,
        temperature: float = 0.1,
        scale_by_temperature: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(temperature, **kwargs)
        self.dim = check_positive_int("dim", dim)
        self.scale_by_temperature = bool(scale_by_temperature)
        self.queue = KeyQueue(dim, check_positive_int("queue_size", queue_size), track_ids=True)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, patient_ids: torch.Tensor, update: bool = True
    ) -> LossOutput:
        check_embeddings("PMQ", "q", q, "(B, D)", 2)
        check_embeddings("PMQ", "k", k, "(B, D)", 2)
        check_same_shape("PMQ", "q", q, "k", k)
        if q.shape[1] != self.dim:
            raise ShapeError(f"PMQ was built for dim={self.dim}, got q of shape {tuple(q.shape)}")
        b = q.shape[0]
        pid = check_ids("PMQ", "patient_ids", patient_ids, b, q)
        uq = l2_normalize(q)
        uk = l2_normalize(k.detach())
        if self._distributed:
            batch_keys, batch_pid = gather_no_grad(uk), gather_no_grad(pid)  # rank order: enqueued as is
            local_keys, local_pid = to_local_first(batch_keys, b), to_local_first(batch_pid, b)
        else:
            batch_keys, batch_pid = local_keys, local_pid = uk, pid
        n_batch = local_keys.shape[0]
        queued = self.queue.keys.to(uq.dtype)
        keys = torch.cat([local_keys, queued])
        inst_q = torch.arange(b, device=q.device)
        inst_k = torch.cat([torch.arange(n_batch, device=q.device), inst_q.new_full((queued.shape[0],), -1)])
        pat_k = torch.cat([local_pid, self.queue.ids])
        kw = dict(exclude_self=False, k_requires_grad=False, normalized=True)
        loss_inst = self._nce(uq, keys, inst_q, inst_k, **kw)
        loss_pat = self._nce(uq, keys, pid, pat_k, **kw)
        loss = loss_inst + loss_pat
        if self.scale_by_temperature:
            loss = self.temperature * loss
        metrics = {
            "loss": loss.detach(),
            "loss_inst": loss_inst.detach(),
            "loss_pat": loss_pat.detach(),
            "pos_cosine": mean_pair_cosine(uq, uk),
            "queue_fill": len(self.queue) / self.queue.size,
        }
        if self.track_accuracy:
            metrics["top1"] = retrieval_top1(uq, keys, inst_q, inst_k, exclude_self=False)
        if update:
            self.queue.push(batch_keys, batch_pid)
        return LossOutput(loss, metrics)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, queue_size={self.queue.size}, " + super().extra_repr()
