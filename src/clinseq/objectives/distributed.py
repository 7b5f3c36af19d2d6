"""Negatives from every rank: all-gather of keys with their gradient (multi-GPU / multi-process).

Contrastive losses want the negatives of the *global* batch. Under ``torch.distributed`` (DDP via
``torchrun``) each rank holds only its local batch, so the objectives gather the keys of all ranks and
contrast their *local* queries against them, as open_clip's ``gather_features(..., gather_with_grad=True,
local_loss=True)`` does.

Gradient scaling (why DDP then equals one process on the global batch). Let rank r compute
L_r = mean over its n local query rows, with keys gathered from all W ranks, and let
L = (1/W) Σ_r L_r, the mean over the global batch (equal n per rank). ``gather_with_grad`` is an
all-gather whose backward *sums* the incoming gradients of every rank's copy of the local keys (a
reduce-scatter), so rank r's parameters receive Σ_r' ∂L_r'/∂θ along the paths of its own samples. DDP
then *averages* the parameter gradients over the W ranks: (1/W) Σ_r' ∂L_r'/∂θ = ∂L/∂θ, exactly the
gradient of one process on the global batch. No extra factor is needed; do not divide by W again, and do
not gather with a plain (gradient-free) ``all_gather`` (the keys of other ranks would then be constants
and the key-side gradient would be missing). The equality is exact when every rank has the same number
of rows that have a positive (true for paired views; with free-form ids, rows without a positive make
the per-rank means weigh ranks slightly differently).

``local_first=True`` returns this rank's block first, so that row i of the local batch is also row i of
the gathered keys: ``exclude_self`` (j == i) of the grouped-InfoNCE primitive then still removes the
self-similarity of stacked batches (SimCLR's cat(z1, z2)).

All gathered tensors must have the same shape on every rank (use ``drop_last=True`` samplers).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["gather_no_grad", "gather_with_grad", "is_distributed", "rank", "to_local_first", "world_size"]


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available, initialised and has more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks (1 without an initialised process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without an initialised process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _all_gather_list(x: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return parts


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 (rank order); backward sums every rank's gradient of the local block."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.n_local = x.shape[0]
        return torch.cat(_all_gather_list(x), dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        n, r = ctx.n_local, dist.get_rank()
        grad = grad.contiguous()
        if dist.get_backend() == dist.Backend.NCCL:
            out = grad.new_empty((n, *grad.shape[1:]))
            dist.reduce_scatter_tensor(out, grad, op=dist.ReduceOp.SUM)
            return out
        # gloo has no reduce-scatter: all-reduce the whole gradient and keep this rank's block.
        total = grad.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[r * n : (r + 1) * n]


def to_local_first(x: torch.Tensor, n_local: int) -> torch.Tensor:
    """Reorder a rank-ordered gather (W·n_local rows) so that this rank's block comes first."""
    r = rank()
    if r == 0:
        return x
    return torch.cat([x[r * n_local : (r + 1) * n_local], x[: r * n_local], x[(r + 1) * n_local :]])


def gather_with_grad(x: torch.Tensor, *, local_first: bool = False) -> torch.Tensor:
    """All-gather ``x`` (n, ...) from every rank into (W·n, ...) with gradient flowing back to each rank.

    Without an initialised process group (or with one rank) ``x`` is returned unchanged. The backward
    pass sums the gradients that all ranks computed for this rank's block (see the module docstring for
    why DDP's averaging then gives the single-process gradient of the global batch).

    Args:
        x: the local tensor; the same shape on every rank.
        local_first: put this rank's block first (then rank order of the others) instead of rank order.
    """
    if not is_distributed():
        return x
    out = _GatherWithGrad.apply(x)
    return to_local_first(out, x.shape[0]) if local_first else out


@torch.no_grad()
def gather_no_grad(x: torch.Tensor, *, local_first: bool = False) -> torch.Tensor:
    """All-gather ``x`` without gradient (ids, momentum-encoder keys); ``x`` itself when not distributed."""
    if not is_distributed():
        return x
    out = torch.cat(_all_gather_list(x), dim=0)
    return to_local_first(out, x.shape[0]) if local_first else out
