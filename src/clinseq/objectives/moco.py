"""MoCo: momentum contrast with a queue of negative keys.

He et al. 2020, "Momentum contrast for unsupervised visual representation learning" (arXiv 1911.05722),
eq. 1, and MoCo v2 (Chen et al. 2020, arXiv 2003.04297). A query q = f_q(x¹) and its key k⁺ = f_k(x²)
from a momentum encoder (:class:`clinseq.objectives.MomentumEncoder`, m = 0.999) are l2-normalised;

    L = −log( exp(q·k⁺/τ) / ( exp(q·k⁺/τ) + Σ_{k⁻} exp(q·k⁻/τ) ) )

averaged over the batch; keys get no gradient. After the loss the batch's keys are enqueued
(:class:`clinseq.objectives.KeyQueue`, FIFO) and the oldest dequeued. Defaults are MoCo v2's: K = 65,536
queued keys, τ = 0.2.

Negatives k⁻: the queue *and* the other keys of the current batch (of every rank under DDP). MoCo v1/v2
use only the queue; the current batch's keys are the freshest negatives there are (they enter the queue
right after the step) and MoCo v3 uses exactly them, so we keep both — one more batch of negatives than
v2. The queue holds no ids here (MoCo's negatives are instance-level); see PMQ for a patient-aware queue.
"""

from __future__ import annotations

import torch

from clinseq.errors import ShapeError
from clinseq.models import l2_normalize
from clinseq.objectives._common import (
    check_embeddings,
    check_positive_int,
    check_same_shape,
    mean_pair_cosine,
    retrieval_top1,
)
from clinseq.objectives.base import ContrastiveObjective, LossOutput
from clinseq.objectives.distributed import gather_no_grad, to_local_first
from clinseq.objectives.queue import KeyQueue

__all__ = ["MoCo"]


class MoCo(ContrastiveObjective):
    """``forward(q (B, D), k (B, D), update=True) -> LossOutput`` with k from the momentum encoder.

    Args:
        dim: key/query dimension D.
        queue_size: K, the number of queued negative keys (≥ the global batch size).
        temperature: τ (MoCo v2: 0.2; v1: 0.07).

    ``update=False`` leaves the queue untouched (e.g. the second direction of a symmetrised loss, or
    evaluation). The queue is a buffer: it moves with ``.to(device)`` and is saved in ``state_dict``.
    Metrics: ``loss``, ``pos_cosine`` (q·k⁺), ``top1`` (k⁺ is the most similar key), ``queue_fill``.
    """

    def __init__(self, dim: int, queue_size: int = 65536, temperature: float = 0.2, **kwargs) -> None:
        super().__init__(temperature, **kwargs)
        self.dim = check_positive_int("dim", dim)
        self.queue = KeyQueue(dim, check_positive_int("queue_size", queue_size), track_ids=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, update: bool = True) -> LossOutput:
        check_embeddings("MoCo", "q", q, "(B, D)", 2)
        check_embeddings("MoCo", "k", k, "(B, D)", 2)
        check_same_shape("MoCo", "q", q, "k", k)
        if q.shape[1] != self.dim:
            raise ShapeError(f"MoCo was built for dim={self.dim}, got q of shape {tuple(q.shape)}")
        b = q.shape[0]
        uq = l2_normalize(q)
        uk = l2_normalize(k.detach())
        batch_keys = gather_no_grad(uk) if self._distributed else uk  # rank order (what we enqueue)
        local_keys = to_local_first(batch_keys, b) if self._distributed else uk
        n_batch = local_keys.shape[0]
        queued = self.queue.keys.to(uq.dtype)
        keys = torch.cat([local_keys, queued])
        q_ids = torch.arange(b, device=q.device)
        # Batch key j has id j (row i's own key is column i: local block first); queue keys id -1.
        k_ids = torch.cat([torch.arange(n_batch, device=q.device), q_ids.new_full((queued.shape[0],), -1)])
        loss = self._nce(uq, keys, q_ids, k_ids, exclude_self=False, k_requires_grad=False, normalized=True)
        metrics = {
            "loss": loss.detach(),
            "pos_cosine": mean_pair_cosine(uq, uk),
            "queue_fill": len(self.queue) / self.queue.size,
        }
        if self.track_accuracy:
            metrics["top1"] = retrieval_top1(uq, keys, q_ids, k_ids, exclude_self=False)
        if update:
            self.queue.push(batch_keys)
        return LossOutput(loss, metrics)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, queue_size={self.queue.size}, " + super().extra_repr()
