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
  (autograd alone would keep every chunk's logits alive). It is what ``backend="torch"`` runs. With
  groups and sorted ``k_groups`` on the CPU, each chunk multiplies only the key columns of its own
  groups, and with sorted groups on both sides the default chunks follow the groups: O(Σ_g n_g²·D)
  instead of O(N·M·D), the same restriction as the Triton kernel's, with the same result. The ranges
  are read on the host — free on the CPU, a device sync on CUDA, where every chunk keeps the full scan.
- :func:`naive_grouped_info_nce`: the dense N×M formula with plain autograd, written for clarity; it is
  the independent oracle of the tests and the "naive torch" row of the benchmark.
"""

from __future__ import annotations

import math

import torch

from clinseq.errors import ConfigError
from clinseq.kernels._group_ranges import tile_column_ranges
from clinseq.kernels._validation import (
    check_inputs,
    combine_symmetric,
    compute_dtype,
    reduce_rows,
    without_autocast,
)

__all__ = ["chunked_grouped_info_nce", "naive_grouped_info_nce", "CHUNK_BYTES", "chunk_elements"]

#: Memory budget of one chunk of the chunked reference, in bytes: a chunk's logits with the temporaries
#: each needs at once (:func:`chunk_elements`) stay under it whatever M and the dtype are. The number of
#: chunks is then about N·M / chunk_elements (at N = M = 2²⁰ in fp32, ~229 k chunks of ≥ 4 rows × M
#: columns each: every chunk is a GEMM of ≥ 4·M·D multiply-adds, far more than its loop overhead).
CHUNK_BYTES = 64 << 20


def chunk_elements(dtype: torch.dtype) -> int:
    """Logits per chunk in compute dtype ``dtype``: :data:`CHUNK_BYTES` over the bytes one logit holds
    at a pass's peak (the logit, its exp/where temporary and its gradient in ``dtype``, and the valid
    and positive masks: 3·itemsize + 2)."""
    itemsize = torch.finfo(dtype).bits // 8
    return max(1, CHUNK_BYTES // (3 * itemsize + 2))


def _masks(
    i0: int,
    n_chunk: int,
    lo: int,
    hi: int,
    q_ids: torch.Tensor,
    k_ids: torch.Tensor,
    q_groups: torch.Tensor | None,
    k_groups: torch.Tensor | None,
    exclude_self: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid, positive) boolean masks of rows [i0, i0 + n_chunk) against the columns [lo, hi)."""
    device = k_ids.device
    if q_groups is not None:
        valid = q_groups[i0 : i0 + n_chunk, None] == k_groups[None, lo:hi]
    else:
        valid = torch.ones(n_chunk, hi - lo, dtype=torch.bool, device=device)
    if exclude_self:
        # Row i meets its own column when it lies in both [i0, i0 + n_chunk) and [lo, hi); the count is
        # known on the host (no sync).
        first, last = max(i0, lo), min(i0 + n_chunk, hi)
        rows = torch.arange(first, max(first, last), device=device)
        valid[rows - i0, rows - lo] = False
    positive = valid & (q_ids[i0 : i0 + n_chunk, None] == k_ids[None, lo:hi])
    return valid, positive


Chunk = tuple[int, int, int, int]  # rows [i0, i1) against key columns [lo, hi)


def _chunks(
    q_groups: torch.Tensor | None,
    k_groups: torch.Tensor | None,
    n_rows: int,
    n_cols: int,
    chunk_rows: int | None,
    elements: int | None = None,
) -> list[Chunk]:
    """The chunks of a pass: ``(i0, i1, lo, hi)``, rows [i0, i1) multiplied by key columns [lo, hi).

    ``elements`` is the logit budget of a chunk (default: :func:`chunk_elements` of float32). Without
    groups, every chunk has ``chunk_rows`` rows (default ``elements // M``) and all M
    columns. With groups on the CPU, a chunk multiplies only the columns that can share a group with its
    rows — [lo, hi) from :func:`clinseq.kernels._group_ranges.tile_column_ranges`, all columns when
    ``k_groups`` is unsorted — and, when both sides are sorted and ``chunk_rows`` is not given, chunks
    follow the groups (see :func:`_group_chunks`) so that none straddles two large groups. Ranges are
    read on the host: free on the CPU, but a device sync on CUDA, where the torch path (float64, D >
    1024) therefore keeps the full scan. The result is the same either way.
    """
    elements = elements if elements is not None else chunk_elements(torch.float32)
    fixed = chunk_rows if chunk_rows is not None else max(1, elements // max(n_cols, 1))
    starts = range(0, n_rows, fixed)
    if q_groups is None or k_groups is None or q_groups.device.type != "cpu" or n_rows == 0:
        return [(i0, min(i0 + fixed, n_rows), 0, n_cols) for i0 in starts]
    if chunk_rows is None and _is_sorted(q_groups) and _is_sorted(k_groups):
        return _group_chunks(q_groups, k_groups, elements)
    lo, hi = tile_column_ranges(q_groups, k_groups, fixed)
    return [
        (i0, min(i0 + fixed, n_rows), a, b) for i0, a, b in zip(starts, lo.tolist(), hi.tolist(), strict=True)
    ]


def _is_sorted(x: torch.Tensor) -> bool:
    return bool((x[1:] >= x[:-1]).all())


#: Consecutive groups are merged into one chunk while it holds at most this many logits: one chunk per
#: tiny group (singletons) would spend more on per-chunk overhead than on arithmetic.
SMALL_CHUNK_ELEMENTS = 1 << 16


def _group_chunks(q_groups: torch.Tensor, k_groups: torch.Tensor, elements: int) -> list[Chunk]:
    """Chunks along the groups of sorted rows against sorted columns (CPU tensors).

    A group of r rows whose columns are [lo, hi) is one chunk, split into pieces of
    ``elements // (hi − lo)`` rows when r·(hi − lo) exceeds the chunk budget; consecutive groups
    are merged while the merged chunk stays under ``SMALL_CHUNK_ELEMENTS`` logits. A fixed row count
    would cut most groups in two and multiply those chunks by the columns of both groups.
    """
    if q_groups.dtype != k_groups.dtype:
        q_groups, k_groups = q_groups.long(), k_groups.long()
    values, counts = torch.unique_consecutive(q_groups, return_counts=True)
    lo = torch.searchsorted(k_groups, values, side="left").tolist()
    hi = torch.searchsorted(k_groups, values, side="right").tolist()
    chunks: list[Chunk] = []
    i0 = 0
    for count, a, b in zip(counts.tolist(), lo, hi, strict=True):
        i1 = i0 + count
        if chunks:
            c0, _, c_lo, _ = chunks[-1]
            # Sorted on both sides: the merged chunk's columns are [c_lo, b).
            if (i1 - c0) * (b - c_lo) <= SMALL_CHUNK_ELEMENTS:
                chunks[-1] = (c0, i1, c_lo, b)
                i0 = i1
                continue
        step = max(1, elements // max(b - a, 1))
        chunks.extend((r0, min(r0 + step, i1), a, b) for r0 in range(i0, i1, step))
        i0 = i1
    return chunks


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
        chunk_rows: int | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cdt = compute_dtype(q.dtype)
        n_rows, n_cols = q.shape[0], k.shape[0]
        kf = k.to(cdt)
        lse = torch.empty(n_rows, dtype=cdt, device=q.device)
        psum = torch.empty(n_rows, dtype=cdt, device=q.device)
        pcnt = torch.empty(n_rows, dtype=torch.int64, device=q.device)
        inv_tau = tau.detach().reciprocal()
        chunks = _chunks(q_groups, k_groups, n_rows, n_cols, chunk_rows, chunk_elements(cdt))
        for i0, i1, lo, hi in chunks:
            s = (q[i0:i1].to(cdt) @ kf[lo:hi].T) * inv_tau
            valid, positive = _masks(i0, i1 - i0, lo, hi, q_ids, k_ids, q_groups, k_groups, exclude_self)
            # A chunk with no column (lo == hi) gets LSE = -inf and no positive: its rows are skipped.
            lse[i0:i1] = torch.logsumexp(s.masked_fill_(~valid, -math.inf), dim=1)
            psum[i0:i1] = torch.where(positive, s, 0.0).sum(dim=1)
            pcnt[i0:i1] = positive.sum(dim=1)
        has = pcnt > 0
        loss = torch.where(has, lse - psum / pcnt.clamp_min(1).to(cdt), 0.0)
        ctx.save_for_backward(q, k, tau, q_ids, k_ids, q_groups, k_groups, lse, pcnt)
        ctx.exclude_self, ctx.n_key_grad, ctx.chunks = exclude_self, n_key_grad, chunks
        ctx.mark_non_differentiable(pcnt)
        return loss, pcnt

    @staticmethod
    @without_autocast
    def backward(ctx, grad_loss: torch.Tensor, _grad_pcnt: torch.Tensor | None):
        q, k, tau, q_ids, k_ids, q_groups, k_groups, lse, pcnt = ctx.saved_tensors
        cdt = compute_dtype(q.dtype)
        n_cols = k.shape[0]
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
        for i0, i1, lo, hi in ctx.chunks:
            q_c = q[i0:i1].to(cdt)
            k_c = kf[lo:hi]
            s = (q_c @ k_c.T).div_(tau_d)
            valid, positive = _masks(i0, i1 - i0, lo, hi, q_ids, k_ids, q_groups, k_groups, ctx.exclude_self)
            rows = slice(i0, i1)
            # In place, one chunk-sized buffer: g_ij = dL/dx_ij (x = q·k) = a_i p_ij − b_i [j ∈ P(i)].
            g = s.masked_fill(~valid, -math.inf).sub_(lse_safe[rows, None]).exp_().mul_(a[rows, None])
            g.sub_(positive * b[rows, None])
            if dq is not None:
                torch.matmul(g, k_c, out=dq[rows])
            if dk is not None and lo < n_key_grad:
                top = min(hi, n_key_grad)  # queue columns (≥ n_key_grad) get no gradient
                dk[lo:top].addmm_(g[:, : top - lo].T, q_c)
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


def _check_chunk_rows(chunk_rows: int | None) -> int | None:
    if chunk_rows is not None and (
        isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1
    ):
        raise ConfigError(f"chunk_rows must be a positive int (rows per chunk) or None, got {chunk_rows!r}")
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
    (default: as many as fit :data:`CHUNK_BYTES` = 64 MiB with their temporaries — ``chunk_elements //
    M``, 4.8 M logits in float32, 2.6 M in float64; with sorted groups on both sides on the CPU, chunks
    that follow the groups, each within the same budget).
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
        _check_chunk_rows(chunk_rows),
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
        _check_chunk_rows(chunk_rows),
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
