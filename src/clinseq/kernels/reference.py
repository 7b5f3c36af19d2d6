"""PyTorch references of grouped InfoNCE: a chunked one (the CPU path) and a naive dense one (tests only).

Both compute exactly the loss of :func:`clinseq.kernels.grouped_info_nce` and take the same arguments
(the ``backend`` selector aside). With s_ij = q_i·k_j / τ,

    valid(i, j) = j ≠ i (when ``exclude_self``) and k_groups[j] == q_groups[i] (when groups are given)
    P(i)        = { valid j : k_ids[j] == q_ids[i] }
    L_i         = logsumexp_{valid j} s_ij − (1/|P(i)|) Σ_{p ∈ P(i)} s_ip          (SupCon's L_out)

and rows with |P(i)| = 0 are skipped (loss 0, no gradient). Accumulation is in float32 (float64 for
float64 inputs); the per-row losses and the reduced loss come back in that dtype.

- :func:`chunked_grouped_info_nce`: rows are processed ``chunk_rows`` at a time, forward and backward, in
  a custom ``autograd.Function`` that keeps only O(N) statistics (LSE, positive count) between the passes
  and recomputes each chunk's logits in backward, so memory is O(chunk_rows·M) instead of O(N·M)
  (autograd alone would keep every chunk's logits alive). It is what ``backend="torch"`` runs.
- :func:`naive_grouped_info_nce`: the dense N×M formula with plain autograd, written for clarity; it is
  the independent oracle of the tests and the "naive torch" row of the benchmark.
"""

from __future__ import annotations

import math

import torch

from clinseq.kernels._validation import (
    check_inputs,
    combine_symmetric,
    compute_dtype,
    reduce_rows,
    without_autocast,
)
from clinseq.utils import ConfigError

__all__ = ["chunked_grouped_info_nce", "naive_grouped_info_nce", "CHUNK_ELEMENTS"]

#: Default chunk budget of the chunked reference: chunk_rows·M ≤ 2²² logits (16 MiB in float32).
CHUNK_ELEMENTS = 1 << 22


def _masks(
    i0: int,
    n_chunk: int,
    n_cols: int,
    q_ids: torch.Tensor,
    k_ids: torch.Tensor,
    q_groups: torch.Tensor | None,
    k_groups: torch.Tensor | None,
    exclude_self: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid, positive) boolean masks of rows [i0, i0 + n_chunk) against all M columns."""
    device = k_ids.device
    if q_groups is not None:
        valid = q_groups[i0 : i0 + n_chunk, None] == k_groups[None, :]
    else:
        valid = torch.ones(n_chunk, n_cols, dtype=torch.bool, device=device)
    if exclude_self:
        # Row i0 + r meets its own column when i0 + r < M; the count is known on the host (no sync).
        rows = torch.arange(max(0, min(n_chunk, n_cols - i0)), device=device)
        valid[rows, rows + i0] = False
    positive = valid & (q_ids[i0 : i0 + n_chunk, None] == k_ids[None, :])
    return valid, positive


class _ChunkedInfoNCE(torch.autograd.Function):
    """Per-row losses (N,) and positive counts (N,) of one direction q → k, chunked over rows."""

    @staticmethod
    @without_autocast
    def forward(
        ctx,
        q: torch.Tensor,
        k: torch.Tensor,
        tau: torch.Tensor,
        q_ids: torch.Tensor,
        k_ids: torch.Tensor,
        q_groups: torch.Tensor | None,
        k_groups: torch.Tensor | None,
        exclude_self: bool,
        n_key_grad: int,
        chunk_rows: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cdt = compute_dtype(q.dtype)
        n_rows, n_cols = q.shape[0], k.shape[0]
        kf = k.to(cdt)
        lse = torch.empty(n_rows, dtype=cdt, device=q.device)
        psum = torch.empty(n_rows, dtype=cdt, device=q.device)
        pcnt = torch.empty(n_rows, dtype=torch.int64, device=q.device)
        inv_tau = tau.detach().reciprocal()
        for i0 in range(0, n_rows, chunk_rows):
            s = (q[i0 : i0 + chunk_rows].to(cdt) @ kf.T) * inv_tau
            valid, positive = _masks(i0, s.shape[0], n_cols, q_ids, k_ids, q_groups, k_groups, exclude_self)
            lse[i0 : i0 + chunk_rows] = torch.logsumexp(s.masked_fill_(~valid, -math.inf), dim=1)
            psum[i0 : i0 + chunk_rows] = torch.where(positive, s, 0.0).sum(dim=1)
            pcnt[i0 : i0 + chunk_rows] = positive.sum(dim=1)
        has = pcnt > 0
        loss = torch.where(has, lse - psum / pcnt.clamp_min(1).to(cdt), 0.0)
        ctx.save_for_backward(q, k, tau, q_ids, k_ids, q_groups, k_groups, lse, pcnt)
        ctx.exclude_self, ctx.n_key_grad, ctx.chunk_rows = exclude_self, n_key_grad, chunk_rows
        ctx.mark_non_differentiable(pcnt)
        return loss, pcnt

    @staticmethod
    @without_autocast
    def backward(ctx, grad_loss: torch.Tensor, _grad_pcnt: torch.Tensor | None):
        q, k, tau, q_ids, k_ids, q_groups, k_groups, lse, pcnt = ctx.saved_tensors
        cdt = compute_dtype(q.dtype)
        n_rows, n_cols = q.shape[0], k.shape[0]
        n_key_grad = ctx.n_key_grad if ctx.needs_input_grad[1] else 0
        need_q, need_tau = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
        kf = k.to(cdt)
        tau_d = tau.detach()
        has = pcnt > 0
        # Rows without a positive: LSE = +inf makes their softmax exactly 0 and a = b = 0 below.
        lse_safe = torch.where(has, lse, math.inf)
        a = torch.where(has, grad_loss.to(cdt) / tau_d, 0.0)  # dL/ds_ij = τ·(a_i p_ij − b_i [j ∈ P(i)])
        b = a / pcnt.clamp_min(1).to(cdt)
        dq = torch.empty(q.shape, dtype=cdt, device=q.device) if need_q else None
        dk = torch.zeros(n_key_grad, k.shape[1], dtype=cdt, device=q.device) if n_key_grad else None
        dtau = torch.zeros((), dtype=cdt, device=q.device)
        for i0 in range(0, n_rows, ctx.chunk_rows):
            q_c = q[i0 : i0 + ctx.chunk_rows].to(cdt)
            s = (q_c @ kf.T).div_(tau_d)
            valid, positive = _masks(
                i0, s.shape[0], n_cols, q_ids, k_ids, q_groups, k_groups, ctx.exclude_self
            )
            rows = slice(i0, i0 + s.shape[0])
            # In place, one chunk-sized buffer: g_ij = dL/dx_ij (x = q·k) = a_i p_ij − b_i [j ∈ P(i)].
            g = s.masked_fill(~valid, -math.inf).sub_(lse_safe[rows, None]).exp_().mul_(a[rows, None])
            g.sub_(positive * b[rows, None])
            if dq is not None:
                torch.matmul(g, kf, out=dq[rows])
            if dk is not None:
                dk.addmm_(g[:, :n_key_grad].T, q_c)
            if need_tau:
                dtau -= torch.dot(g.reshape(-1), s.reshape(-1))  # dL/dτ = −(1/τ) Σ dL/ds·s = −Σ g·s
        grad_k = None
        if dk is not None and n_key_grad == n_cols:
            grad_k = dk.to(k.dtype)
        elif dk is not None:
            grad_k = torch.zeros(k.shape, dtype=k.dtype, device=k.device)
            grad_k[:n_key_grad] = dk.to(k.dtype)
        return (
            dq.to(q.dtype) if dq is not None else None,
            grad_k,
            dtau if need_tau else None,
            *([None] * 7),
        )


def _chunk_rows(chunk_rows: int | None, n_cols: int) -> int:
    if chunk_rows is None:
        return max(1, CHUNK_ELEMENTS // max(n_cols, 1))
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be a positive int (rows per chunk), got {chunk_rows!r}")
    return chunk_rows


def chunked_grouped_info_nce(
    q: torch.Tensor,
    k: torch.Tensor,
    q_ids: torch.Tensor,
    k_ids: torch.Tensor,
    temperature: float | torch.Tensor,
    *,
    exclude_self: bool = True,
    k_requires_grad: bool = True,
    n_key_grad: int | None = None,
    symmetric: bool = False,
    reduction: str = "mean",
    q_groups: torch.Tensor | None = None,
    k_groups: torch.Tensor | None = None,
    normalized: bool = False,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Grouped InfoNCE in torch with O(chunk_rows·M) memory (``backend="torch"``).

    Arguments and result are those of :func:`clinseq.kernels.grouped_info_nce`; ``normalized`` is only
    a speed hint for the Triton kernel and changes nothing here. ``chunk_rows`` sets the rows per chunk
    (default: ``CHUNK_ELEMENTS // M``, i.e. 16 MiB of float32 logits per chunk).
    """
    c = check_inputs(
        q,
        k,
        q_ids,
        k_ids,
        temperature,
        exclude_self=exclude_self,
        k_requires_grad=k_requires_grad,
        n_key_grad=n_key_grad,
        symmetric=symmetric,
        reduction=reduction,
        q_groups=q_groups,
        k_groups=k_groups,
    )
    del normalized
    rows_qk, pcnt_qk = _ChunkedInfoNCE.apply(
        q,
        k,
        c.temperature,
        q_ids,
        k_ids,
        q_groups,
        k_groups,
        exclude_self,
        c.n_key_grad,
        _chunk_rows(chunk_rows, c.n_cols),
    )
    if not symmetric:
        return reduce_rows(rows_qk, pcnt_qk > 0, reduction)
    # k → q: keys become queries; with k_requires_grad=False k gets no gradient from either direction.
    k_q = k if c.n_key_grad else k.detach()
    rows_kq, pcnt_kq = _ChunkedInfoNCE.apply(
        k_q,
        q,
        c.temperature,
        k_ids,
        q_ids,
        k_groups,
        q_groups,
        exclude_self,
        c.n_rows,
        _chunk_rows(chunk_rows, c.n_rows),
    )
    return combine_symmetric(rows_qk, pcnt_qk > 0, rows_kq, pcnt_kq > 0, reduction)


def _naive_direction(
    s: torch.Tensor,
    q_ids: torch.Tensor,
    k_ids: torch.Tensor,
    q_groups: torch.Tensor | None,
    k_groups: torch.Tensor | None,
    exclude_self: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    n_rows, n_cols = s.shape
    valid = torch.ones(n_rows, n_cols, dtype=torch.bool, device=s.device)
    if q_groups is not None:
        valid = q_groups[:, None] == k_groups[None, :]
    if exclude_self:
        idx = torch.arange(n_rows, device=s.device)
        valid = valid & (idx[:, None] != torch.arange(n_cols, device=s.device)[None, :])
    positive = valid & (q_ids[:, None] == k_ids[None, :])
    count = positive.sum(dim=1)
    has = count > 0
    # Skipped rows take the logsumexp over all columns (finite, gradient then zeroed by the where):
    # a row with no valid column would otherwise give logsumexp(-inf…) and NaN gradients.
    lse = torch.logsumexp(s.masked_fill(~(valid | ~has[:, None]), -math.inf), dim=1)
    mean_pos = (s * positive).sum(dim=1) / count.clamp_min(1)
    return torch.where(has, lse - mean_pos, 0.0), has


@without_autocast
def naive_grouped_info_nce(
    q: torch.Tensor,
    k: torch.Tensor,
    q_ids: torch.Tensor,
    k_ids: torch.Tensor,
    temperature: float | torch.Tensor,
    *,
    exclude_self: bool = True,
    k_requires_grad: bool = True,
    n_key_grad: int | None = None,
    symmetric: bool = False,
    reduction: str = "mean",
    q_groups: torch.Tensor | None = None,
    k_groups: torch.Tensor | None = None,
    normalized: bool = False,
) -> torch.Tensor:
    """Grouped InfoNCE as the dense N×M formula with autograd (the tests' oracle; O(N·M) memory).

    Same arguments and result as :func:`clinseq.kernels.grouped_info_nce`.
    """
    c = check_inputs(
        q,
        k,
        q_ids,
        k_ids,
        temperature,
        exclude_self=exclude_self,
        k_requires_grad=k_requires_grad,
        n_key_grad=n_key_grad,
        symmetric=symmetric,
        reduction=reduction,
        q_groups=q_groups,
        k_groups=k_groups,
    )
    del normalized
    cdt = compute_dtype(q.dtype)
    kf = k.to(cdt)
    if c.n_key_grad == 0:
        kf = kf.detach()
    elif c.n_key_grad < c.n_cols:
        kf = torch.cat([kf[: c.n_key_grad], kf[c.n_key_grad :].detach()])
    s = (q.to(cdt) @ kf.T) / c.temperature
    rows_qk, has_qk = _naive_direction(s, q_ids, k_ids, q_groups, k_groups, exclude_self)
    if not symmetric:
        return reduce_rows(rows_qk, has_qk, reduction)
    rows_kq, has_kq = _naive_direction(s.T, k_ids, q_ids, k_groups, q_groups, exclude_self)
    return combine_symmetric(rows_qk, has_qk, rows_kq, has_kq, reduction)
