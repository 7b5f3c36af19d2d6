"""Input checks, id/group helpers and metrics shared by the objectives (private).

Nothing here reads a device value on the host: group structure is computed with sorts, scans and
scatters on the device, and metrics stay 0-d tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from clinseq.errors import ConfigError, ShapeError

_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


# --------------------------------------------------------------------------------------------- checks
def check_temperature(value: float, name: str = "temperature") -> float:
    """A finite float > 0, else ``ConfigError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ConfigError(f"{name} must be a finite float > 0 (e.g. 0.1), got {value!r}")
    return float(value)


def check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return value


def check_embeddings(owner: str, name: str, z: object, layout: str, ndim: int) -> torch.Tensor:
    """``z`` must be a floating tensor with ``ndim`` axes; ``layout`` names them, e.g. "(B, D)"."""
    if not isinstance(z, torch.Tensor):
        raise ShapeError(
            f"{owner} expects {name} as a float tensor of shape {layout}, got {type(z).__name__}"
        )
    if z.ndim != ndim:
        raise ShapeError(
            f"{owner} expects {name} of shape {layout}, got shape {tuple(z.shape)}; "
            + ("pool over time first (e.g. encoder(x))" if z.ndim > ndim else "add the missing axis")
        )
    if not z.is_floating_point():
        raise ShapeError(f"{owner} expects floating {name}, got dtype {z.dtype}; use .float()")
    if any(s == 0 for s in z.shape):
        raise ShapeError(f"{owner} got an empty {name} of shape {tuple(z.shape)}; every axis must be >= 1")
    return z


def check_same_shape(owner: str, name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ShapeError(
            f"{owner} expects {name_a} and {name_b} of the same shape (paired views), got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_ids(
    owner: str, name: str, ids: object, n: int, like: torch.Tensor, n_desc: str = "B"
) -> torch.Tensor:
    """``ids`` must be an integer tensor of shape (n,) on ``like``'s device."""
    if not isinstance(ids, torch.Tensor):
        raise ShapeError(
            f"{owner} expects {name} as an integer tensor of shape ({n_desc},) = ({n},), got "
            f"{type(ids).__name__}; pass torch.as_tensor(ids)"
        )
    if ids.dtype not in _INT_DTYPES:
        raise ShapeError(f"{owner} expects integer {name}, got dtype {ids.dtype}; convert with .long()")
    if ids.shape != (n,):
        raise ShapeError(
            f"{owner} expects {name} of shape ({n_desc},) = ({n},), one per item, got {tuple(ids.shape)}"
        )
    if ids.device != like.device:
        raise ShapeError(f"{owner}: {name} is on {ids.device} but the embeddings on {like.device}; move it")
    return ids.long()


def check_choice(name: str, value: object, choices: tuple[object, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")


# ----------------------------------------------------------------------------------------- groups
def group_structure(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For (N,) integer ids: (rep, position, count), each (N,) int64, computed on the device.

    ``rep[i]`` is a representative index in [0, N) shared by exactly the items with the same id (the
    sorted position of the group's first element); ``position[i]`` is i's rank among the items of its
    group in order of appearance (0, 1, …); ``count[i]`` is the size of i's group.
    """
    n = ids.shape[0]
    arange = torch.arange(n, device=ids.device)
    sorted_ids, order = torch.sort(ids, stable=True)
    new = torch.ones(n, dtype=torch.bool, device=ids.device)
    new[1:] = sorted_ids[1:] != sorted_ids[:-1]
    start = torch.cummax(torch.where(new, arange, 0), dim=0).values
    rep = torch.empty_like(order)
    rep[order] = start
    position = torch.empty_like(order)
    position[order] = arange - start
    sizes = torch.zeros(n, dtype=torch.int64, device=ids.device).index_add_(0, rep, torch.ones_like(rep))
    return rep, position, sizes[rep]


# ---------------------------------------------------------------------------------------- metrics
@torch.no_grad()
def retrieval_top1(
    q: torch.Tensor,
    k: torch.Tensor,
    q_ids: torch.Tensor,
    k_ids: torch.Tensor,
    *,
    exclude_self: bool,
    q_groups: torch.Tensor | None = None,
    k_groups: torch.Tensor | None = None,
    max_rows: int = 2048,
    chunk_elements: int = 1 << 23,
) -> torch.Tensor:
    """Top-1 retrieval accuracy: the fraction of query rows whose most similar valid key is a positive.

    Same validity/positive rules as the grouped-InfoNCE primitive; rows without a positive are left
    out. A metric only (no gradient): it is estimated on at most ``max_rows`` evenly strided query rows,
    processed in chunks of ≤ ``chunk_elements`` similarities, so its cost stays small next to the loss.
    """
    n, m = q.shape[0], k.shape[0]
    step = max(1, -(-n // max_rows))
    rows = torch.arange(0, n, step, device=q.device)
    kf = k.float()
    hits = torch.zeros((), device=q.device)
    counted = torch.zeros((), device=q.device)
    chunk = max(1, chunk_elements // max(m, 1))
    cols = torch.arange(m, device=q.device)
    for c0 in range(0, rows.shape[0], chunk):
        r = rows[c0 : c0 + chunk]
        s = q[r].float() @ kf.T
        valid = torch.ones_like(s, dtype=torch.bool)
        if q_groups is not None:
            valid &= q_groups[r, None] == k_groups[None, :]
        if exclude_self:
            valid &= r[:, None] != cols[None, :]
        positive = valid & (q_ids[r, None] == k_ids[None, :])
        best = s.masked_fill(~valid, -math.inf).argmax(dim=1)
        has = positive.any(dim=1)
        hits += (positive.gather(1, best[:, None]).squeeze(1) & has).sum()
        counted += has.sum()
    return hits / counted.clamp_min(1)


@torch.no_grad()
def mean_pair_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of the rows of ``a`` with the matching rows of ``b``."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1).mean()


@torch.no_grad()
def mean_group_cosine(z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean cosine over all pairs (i ≠ j) with equal ids, in O(N·D) (no N×N matrix).

    With unit rows, Σ_{i≠j, same id} z_i·z_j = Σ_groups (‖Σ_g z‖² − n_g); divided by Σ_g n_g(n_g − 1).
    Returns 0 when no id repeats.
    """
    u = F.normalize(z.float(), dim=-1)
    rep, _, count = group_structure(ids)
    sums = torch.zeros_like(u).index_add_(0, rep, u)
    # Each item contributes its group's sum dotted with itself, minus its own norm (1):
    # Σ_i (S_g(i)·z_i − 1) = Σ_g (‖S_g‖² − n_g).
    pair_dots = ((sums[rep] * u).sum(dim=-1) - 1.0).sum()
    n_pairs = (count - 1).sum()  # Σ_i (n_g(i) − 1) = Σ_g n_g(n_g − 1)
    return pair_dots / n_pairs.clamp_min(1)
