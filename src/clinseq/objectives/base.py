"""What every objective returns, and the small base class the contrastive objectives share."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from clinseq.kernels import grouped_info_nce
from clinseq.objectives._common import check_choice, check_temperature, mean_group_cosine, retrieval_top1
from clinseq.objectives.distributed import gather_no_grad, gather_with_grad, is_distributed

__all__ = ["ContrastiveObjective", "LossOutput"]

BACKENDS = ("auto", "triton", "torch", "naive")
#: Smallest fixed τ for which unit-norm inputs are flagged ``normalized`` to the kernel (exp(−2/τ) must
#: stay a normal fp32 number: 2/τ < 87).
NORMALIZED_MIN_TEMPERATURE = 0.025


@dataclass
class LossOutput:
    """A scalar ``loss`` to backpropagate and detached ``metrics`` (floats or 0-d tensors) to log.

    Metrics stay tensors in the hot path (no ``.item()`` host syncs); the train loop converts them
    when it logs.
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)


class ContrastiveObjective(nn.Module):
    """Shared plumbing: the temperature, the kernel backend and cross-rank gathering of keys.

    Args:
        temperature: τ of s_ij = z_i·z_j / τ (> 0).
        gather_distributed: when ``torch.distributed`` is initialised with more than one rank, contrast
            local queries against the keys of *all* ranks, gathered with their gradient
            (:func:`clinseq.objectives.distributed.gather_with_grad`; DDP then matches one process on
            the global batch). Off: each rank contrasts within its local batch only.
        backend: grouped-InfoNCE backend ("auto": Triton on CUDA, chunked torch elsewhere).
        track_accuracy: add the top-1 retrieval accuracy of the positives to the metrics (a small
            no-grad similarity pass on at most 2048 query rows).
    """

    def __init__(
        self,
        temperature: float,
        *,
        gather_distributed: bool = True,
        backend: str = "auto",
        track_accuracy: bool = True,
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        check_choice("backend", backend, BACKENDS)
        self.gather_distributed = bool(gather_distributed)
        self.backend = backend
        self.track_accuracy = bool(track_accuracy)

    # The temperature handed to the kernel; CLIP-style objectives override it with a learnable tensor.
    def tau(self) -> float | torch.Tensor:
        return self.temperature

    @property
    def _distributed(self) -> bool:
        return self.gather_distributed and is_distributed()

    def _nce(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_ids: torch.Tensor,
        k_ids: torch.Tensor,
        *,
        temperature: float | torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """grouped_info_nce with this objective's temperature and backend.

        ``normalized=True`` (unit rows: the kernel may use the fixed max 1/τ) is only passed on for a
        fixed τ ≥ ``NORMALIZED_MIN_TEMPERATURE``: below it exp(−2/τ) leaves fp32's normal range, and a
        learnable τ cannot be checked without a host sync.
        """
        tau = self.tau() if temperature is None else temperature
        if kwargs.get("normalized") and not (isinstance(tau, float) and tau >= NORMALIZED_MIN_TEMPERATURE):
            kwargs["normalized"] = False
        return grouped_info_nce(q, k, q_ids, k_ids, tau, backend=self.backend, **kwargs)

    def _gather(self, x: torch.Tensor, *ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Keys (with gradient) and ids of all ranks, this rank's block first; unchanged when local."""
        if not self._distributed:
            return (x, *ids)
        return (gather_with_grad(x, local_first=True), *(gather_no_grad(i, local_first=True) for i in ids))

    def _self_contrast(self, u: torch.Tensor, ids: torch.Tensor) -> LossOutput:
        """Multi-positive self-contrast of unit rows ``u`` (N, D): every row is a query against all rows
        (of all ranks under DDP) but itself, its positives the rows with an equal global id (SupCon's
        L_out; PCLR, patient-level contrast and poly-window's all-pairs form are this with their ids).

        Metrics: ``loss``, ``pos_cosine`` (mean cosine of same-id pairs), ``top1`` when tracked.
        """
        keys, key_ids = self._gather(u, ids)
        loss = self._nce(u, keys, ids, key_ids, exclude_self=True, normalized=True)
        metrics = {"loss": loss.detach(), "pos_cosine": mean_group_cosine(u, ids)}
        if self.track_accuracy:
            metrics["top1"] = retrieval_top1(u, u, ids, ids, exclude_self=True)
        return LossOutput(loss, metrics)

    def _gather_instances(self, x: torch.Tensor, ids: torch.Tensor, id_span: int) -> tuple[torch.Tensor, ...]:
        """Gather keys whose ids are local instance indices in [0, id_span): each rank's block gets its
        ids shifted by block_index · id_span so that items of different ranks never share an id."""
        if not self._distributed:
            return x, ids
        keys = self._gather(x)[0]
        n_blocks = keys.shape[0] // x.shape[0]
        offsets = torch.arange(n_blocks, device=ids.device).repeat_interleave(ids.shape[0]) * id_span
        return keys, ids.repeat(n_blocks) + offsets

    def _cross_view(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        a_ids: torch.Tensor,
        b_ids: torch.Tensor,
        *,
        a_groups: torch.Tensor | None = None,
        b_groups: torch.Tensor | None = None,
        normalized: bool = True,
        temperature: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Symmetric (CLIP-form) loss ½(L(a→b) + L(b→a)) over two aligned sets of rows.

        Positives are the rows of the other set with an equal id (the row's own partner included:
        ``exclude_self=False``). Under DDP each direction contrasts the local rows against the other
        set gathered from all ranks (two launches); otherwise one symmetric launch.
        """
        kw = dict(exclude_self=False, normalized=normalized, temperature=temperature)
        if not self._distributed:
            return self._nce(a, b, a_ids, b_ids, symmetric=True, q_groups=a_groups, k_groups=b_groups, **kw)
        groups = a_groups is not None
        b_all, b_ids_all, *bg = self._gather(b, b_ids, *((b_groups,) if groups else ()))
        a_all, a_ids_all, *ag = self._gather(a, a_ids, *((a_groups,) if groups else ()))
        ab = self._nce(
            a, b_all, a_ids, b_ids_all, q_groups=a_groups, k_groups=bg[0] if groups else None, **kw
        )
        ba = self._nce(
            b, a_all, b_ids, a_ids_all, q_groups=b_groups, k_groups=ag[0] if groups else None, **kw
        )
        return 0.5 * (ab + ba)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, backend={self.backend!r}"
