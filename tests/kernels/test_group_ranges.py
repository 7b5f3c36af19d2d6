"""Group-restricted scan of grouped InfoNCE: exact, and it really skips the tiles of other groups.

With sorted (non-decreasing) column groups, each row block of the Triton kernel (forward, dQ) streams
only the key columns of its groups, each key block of the dK pass only the matching query rows, and each
chunk of the CPU torch reference multiplies only those columns. The oracle is the dense naive formula in
float64 (the full N×M scan, written independently); the fp32 kernel (under TRITON_INTERPRET=1 without a
GPU) and the fp32 chunked reference must match it to 1e-5 — loss, dQ, dK, dτ — with a random
grad_output. The work actually done is read from the kernel's own tile counters
(:func:`count_visited_tiles`) and from the reference's chunk masks, and compared with ranges computed
here by a plain scan.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from clinseq.kernels import (
    HAS_TRITON,
    TileConfig,
    chunked_grouped_info_nce,
    grouped_info_nce,
    naive_grouped_info_nce,
)
from clinseq.kernels import info_nce as gin
from clinseq.kernels import reference as ref
from clinseq.kernels._group_ranges import tile_column_ranges

from ._grads import assert_grads_close, loss_and_grads

CUDA = torch.cuda.is_available()
TRITON_RUNS = HAS_TRITON and (CUDA or gin.INTERPRETED)
DEVICE = "cuda" if CUDA else "cpu"
needs_triton = pytest.mark.skipif(
    not TRITON_RUNS, reason="Triton needs CUDA, or TRITON_INTERPRET=1 before clinseq.kernels is imported"
)


# ----------------------------------------------------------------------------------------------------
# The ranges themselves
# ----------------------------------------------------------------------------------------------------


def _scan_ranges(rows: list[int], cols: list[int], block: int) -> list[tuple[int, int]]:
    """[lo, hi) per row block by a plain scan: the columns whose group lies in the block's [min, max]."""
    if any(b < a for a, b in zip(cols, cols[1:], strict=False)):
        return [(0, len(cols))] * (-(-len(rows) // block))
    out = []
    for t in range(0, len(rows), block):
        g = rows[t : t + block]
        out.append((bisect.bisect_left(cols, min(g)), bisect.bisect_right(cols, max(g))))
    return out


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.integers(-3, 12), min_size=1, max_size=60),
    cols=st.lists(st.integers(-3, 12), min_size=0, max_size=60),
    block=st.integers(1, 17),
    sort_rows=st.booleans(),
    sort_cols=st.booleans(),
    wide_rows=st.booleans(),
)
def test_tile_column_ranges_match_a_scan_and_hold_every_candidate(
    rows: list[int], cols: list[int], block: int, sort_rows: bool, sort_cols: bool, wide_rows: bool
) -> None:
    rows = sorted(rows) if sort_rows else rows
    cols = sorted(cols) if sort_cols else cols
    row_t = torch.tensor(rows, dtype=torch.int64 if wide_rows else torch.int32)
    lo, hi = tile_column_ranges(row_t, torch.tensor(cols, dtype=torch.int32), block)
    assert lo.dtype == hi.dtype == torch.int32
    got = list(zip(lo.tolist(), hi.tolist(), strict=True))
    assert got == _scan_ranges(rows, cols, block)
    for t, (a, b) in enumerate(got):  # the property the kernel relies on: no candidate outside [lo, hi)
        block_groups = set(rows[t * block : (t + 1) * block])
        assert all(a <= j < b for j, g in enumerate(cols) if g in block_groups)


# ----------------------------------------------------------------------------------------------------
# Exactness against the dense formula
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupCase:
    """Rows laid out group by group: ``sizes`` = ((label, rows on the q side, rows on the k side), ...)."""

    name: str
    sizes: tuple[tuple[int, int, int], ...]
    n_ids: int = 3  # ids drawn in [0, n_ids): some rows with several positives, some with none
    d: int = 16
    shared: bool = False  # q is k (same tensor, ids and groups): the one-pass self-contrast backward
    exclude_self: bool = False
    symmetric: bool = False
    learn_tau: bool = True
    n_key_grad: int | None = None
    normalized: bool = False
    reduction: str = "none"
    tau: float = 0.2
    shuffle_q: bool = False  # q rows out of order (k stays sorted): only the k→q direction is restricted
    no_positive_group: int | None = None  # k rows of this label get ids no query has

    def __str__(self) -> str:
        return self.name


def _group_inputs(case: GroupCase, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor([s[0] for s in case.sizes])
    q_groups = labels.repeat_interleave(torch.tensor([s[1] for s in case.sizes]))
    k_groups = q_groups if case.shared else labels.repeat_interleave(torch.tensor([s[2] for s in case.sizes]))
    q_ids = torch.randint(0, case.n_ids, (len(q_groups),), generator=gen)
    k_ids = q_ids if case.shared else torch.randint(0, case.n_ids, (len(k_groups),), generator=gen)
    if case.no_positive_group is not None:
        k_ids = torch.where(k_groups == case.no_positive_group, -1 - torch.arange(len(k_ids)), k_ids)
    q = F.normalize(torch.randn(len(q_groups), case.d, generator=gen, dtype=torch.float64), dim=1)
    k = q if case.shared else F.normalize(torch.randn(len(k_groups), case.d, generator=gen).double(), dim=1)
    if case.shuffle_q:
        perm = torch.randperm(len(q_groups), generator=gen)
        q, q_ids, q_groups = q[perm], q_ids[perm], q_groups[perm]
    return q, k, q_ids, k_ids, q_groups, k_groups


def _run(fn, case: GroupCase, dtype: torch.dtype, inputs=None, seed: int = 0, **extra):
    """Loss and (dq, dk, dτ) with a random grad_output (some weights negative)."""
    q64, k64, q_ids, k_ids, q_groups, k_groups = inputs if inputs is not None else _group_inputs(case, seed)
    return loss_and_grads(
        fn, q64, k64, q_ids, k_ids, dtype=dtype, device=DEVICE, tau=case.tau, learn_tau=case.learn_tau,
        shared=case.shared, seed=seed, exclude_self=case.exclude_self, symmetric=case.symmetric,
        reduction=case.reduction, n_key_grad=case.n_key_grad, normalized=case.normalized,
        q_groups=q_groups.to(DEVICE), k_groups=(q_groups if case.shared else k_groups).to(DEVICE), **extra,
    )  # fmt: skip


def _assert_close(got, want, what: str, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    assert_grads_close(got, want, what, atol, rtol)


GROUP_CASES = [
    # Uneven sizes, a group on one side only (an empty range), labels with gaps.
    GroupCase("uneven", ((0, 1, 2), (3, 7, 7), (4, 40, 33), (7, 3, 0), (9, 0, 5), (12, 25, 30))),
    # COMET's observation level: q is k, groups = sample, 2T rows each; uneven T here.
    GroupCase(
        "self-contrast-uneven",
        ((0, 5, 5), (1, 37, 37), (2, 1, 1), (3, 64, 64), (4, 20, 20)),
        shared=True,
        exclude_self=True,
    ),
    # COMET's sample level: groups = timestamp, 2B rows each (B = 12, T = 10), ids = sample-like.
    GroupCase(
        "sample-level", tuple((t, 24, 24) for t in range(10)), n_ids=12, shared=True, exclude_self=True
    ),
    GroupCase("singletons-symmetric", tuple((g, 1, 1) for g in range(90)), n_ids=2, symmetric=True),
    GroupCase("one-group", ((5, 70, 90),), exclude_self=True, normalized=True, reduction="mean"),
    GroupCase(
        "no-positive-group-queue",
        ((0, 30, 20), (1, 40, 50), (2, 15, 40)),
        no_positive_group=1,
        n_key_grad=60,
        reduction="sum",
    ),
    GroupCase(
        "symmetric-exclude-self",
        ((0, 33, 33), (1, 2, 2), (2, 61, 61), (3, 17, 17)),
        exclude_self=True,
        symmetric=True,
        reduction="mean",
        tau=0.1,
    ),
    GroupCase(
        "unsorted-q-symmetric",
        ((0, 30, 25), (1, 45, 50), (2, 20, 31)),
        symmetric=True,
        shuffle_q=True,
        tau=0.5,
    ),
]


@pytest.mark.parametrize("case", GROUP_CASES, ids=str)
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_restricted_scan_matches_dense_formula(case: GroupCase, backend: str) -> None:
    if backend == "triton" and not TRITON_RUNS:
        pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")
    want = _run(naive_grouped_info_nce, case, torch.float64)
    if backend == "triton":
        got = _run(grouped_info_nce, case, torch.float32, backend="triton")
    else:  # odd chunks: some lie in one group, some straddle two or three
        got = _run(chunked_grouped_info_nce, case, torch.float32, chunk_rows=13)
    _assert_close(got, want, f"{backend} {case}")


@needs_triton
def test_restricted_scan_with_streamed_d(monkeypatch: pytest.MonkeyPatch) -> None:
    """D above the contraction chunk (S summed over D chunks, a D-block grid axis in backward)."""
    monkeypatch.setattr(
        gin, "tile_config", lambda kind, device, dim, dtype=None: TileConfig(32, 16, 16, 32, 4, 1)
    )
    case = GroupCase(
        "streamed", ((0, 20, 9), (1, 50, 70), (2, 9, 20)), d=72, symmetric=True, exclude_self=True
    )
    _assert_close(
        _run(grouped_info_nce, case, torch.float32, backend="triton"),
        _run(naive_grouped_info_nce, case, torch.float64),
        str(case),
    )


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_restricted_scan_equals_the_full_scan_of_the_same_rows(backend: str) -> None:
    """The same rows in a shuffled order (unsorted groups: the full scan) give the same loss and the
    same gradients, permuted: restricting the scan changes the work, not the result."""
    if backend == "triton" and not TRITON_RUNS:
        pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")
    case = GroupCase("obs", tuple((b, 16, 16) for b in range(12)), n_ids=8, reduction="sum", symmetric=True)
    q, k, q_ids, k_ids, q_groups, k_groups = _group_inputs(case)
    perm_q = torch.randperm(len(q), generator=torch.Generator().manual_seed(7))
    perm_k = torch.randperm(len(k), generator=torch.Generator().manual_seed(8))
    # 16-row chunks on the torch path (its default chunk would hold every row at this size).
    if backend == "triton":
        fn, extra = grouped_info_nce, {"backend": "triton"}
    else:
        fn, extra = chunked_grouped_info_nce, {"chunk_rows": 16}
    sorted_run = _run(fn, case, torch.float32, (q, k, q_ids, k_ids, q_groups, k_groups), **extra)
    shuffled = (q[perm_q], k[perm_k], q_ids[perm_q], k_ids[perm_k], q_groups[perm_q], k_groups[perm_k])
    full_run = _run(fn, case, torch.float32, shuffled, **extra)
    torch.testing.assert_close(sorted_run[0], full_run[0], atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(sorted_run[1][perm_q], full_run[1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sorted_run[2][perm_k], full_run[2], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sorted_run[3], full_run[3], atol=1e-4, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------
# The work actually done
# ----------------------------------------------------------------------------------------------------


def _expected_tiles(rows: torch.Tensor, cols: torch.Tensor, block_rows: int, block_cols: int) -> list[int]:
    return [-(-(b - a) // block_cols) for a, b in _scan_ranges(rows.tolist(), cols.tolist(), block_rows)]


@needs_triton
def test_kernel_streams_only_the_tiles_of_its_groups() -> None:
    """COMET's observation level, B = 12 samples × 2T = 20 rows (N = M = 240): each pass's programs
    visit exactly the tiles of their range; the same call with unsorted groups visits all of them."""
    b, rows_per_sample, d = 12, 20, 16
    groups = torch.arange(b).repeat_interleave(rows_per_sample).to(DEVICE)
    ids = torch.arange(rows_per_sample).remainder(rows_per_sample // 2).repeat(b).to(DEVICE)
    gen = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(b * rows_per_sample, d, generator=gen), dim=1).to(DEVICE).requires_grad_()
    k = F.normalize(torch.randn(b * rows_per_sample, d, generator=gen), dim=1).to(DEVICE).requires_grad_()
    n = len(groups)
    fwd, dq, dk = (gin.tile_config(kind, q.device, d) for kind in ("fwd", "dq", "dk"))
    want = {
        "fwd": _expected_tiles(groups.cpu(), groups.cpu(), fwd.block_m, fwd.block_n),
        "dq": _expected_tiles(groups.cpu(), groups.cpu(), dq.block_m, dq.block_n),
        "dk": _expected_tiles(groups.cpu(), groups.cpu(), dk.block_n, dk.block_m),  # rows are keys
    }
    with gin.count_visited_tiles() as log:
        grouped_info_nce(q, k, ids, ids, 0.2, q_groups=groups, k_groups=groups, backend="triton").backward()
    got = {kind: tiles.tolist() for kind, tiles in log}
    assert got == want
    visited = sum(sum(v) for v in got.values())
    full_scan = sum(
        len(v) * -(-n // blk)
        for v, blk in zip(want.values(), (fwd.block_n, dq.block_n, dk.block_m), strict=True)
    )
    if not CUDA:  # 32×32 tiles under the interpreter: 8 row blocks × 8 key tiles per pass at full scan
        assert full_scan == 3 * 8 * 8 and visited <= full_scan / 3, (visited, full_scan)

    # Unsorted groups (one pair of rows swapped): every program falls back to the full scan, same result.
    swap = torch.arange(n, device=DEVICE)
    swap[[0, n - 1]] = swap[[n - 1, 0]]
    with gin.count_visited_tiles() as log:
        grouped_info_nce(
            q.detach(),
            k.detach(),
            ids,
            ids[swap],
            0.2,
            q_groups=groups,
            k_groups=groups[swap],
            backend="triton",
        )
    assert [(kind, set(t.tolist())) for kind, t in log] == [("fwd", {-(-n // fwd.block_n)})]


@needs_triton
def test_self_contrast_and_symmetric_passes_are_restricted_too() -> None:
    """The one-pass self-contrast backward and both directions of the symmetric forward use ranges."""
    groups = torch.arange(6).repeat_interleave(torch.tensor([40, 3, 50, 1, 60, 20])).to(DEVICE)
    ids = torch.randint(0, 5, (len(groups),), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    z = F.normalize(torch.randn(len(groups), 16, generator=torch.Generator().manual_seed(2)), dim=1)
    z = z.to(DEVICE).requires_grad_()
    fwd, dq = gin.tile_config("fwd", z.device, 16), gin.tile_config("dq", z.device, 16)
    with gin.count_visited_tiles() as log:
        loss = grouped_info_nce(z, z, ids, ids, 0.2, q_groups=groups, k_groups=groups, backend="triton")
        loss.backward()
    g = groups.cpu()
    assert [(kind, t.tolist()) for kind, t in log] == [
        ("fwd", _expected_tiles(g, g, fwd.block_m, fwd.block_n)),
        ("dq", _expected_tiles(g, g, dq.block_m, dq.block_n)),
    ]
    k = z.detach().flip(0).clone()  # groups of k descending: the q→k direction cannot be restricted
    with gin.count_visited_tiles() as log:
        grouped_info_nce(
            z.detach(),
            k,
            ids,
            ids.flip(0),
            0.2,
            q_groups=groups,
            k_groups=groups.flip(0),
            symmetric=True,
            backend="triton",
        )
    (kind_qk, qk), (kind_kq, kq) = log
    assert kind_qk == kind_kq == "fwd"
    assert set(qk.tolist()) == {-(-len(g) // fwd.block_n)}  # full scan
    assert kq.tolist() == _expected_tiles(g.flip(0), g, fwd.block_m, fwd.block_n)  # k rows → sorted q


def _count_logits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Logits (rows × columns) of every chunk the reference computes, from the masks it builds per chunk."""
    counts: list[int] = []
    masks = ref._masks

    def spy(*args, **kwargs):
        valid, positive = masks(*args, **kwargs)
        counts.append(valid.numel())
        return valid, positive

    monkeypatch.setattr(ref, "_masks", spy)
    return counts


def test_chunked_reference_multiplies_only_the_columns_of_its_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """B = 64 samples × 2T = 16 rows, 16-row chunks: one group per chunk, so forward and backward compute
    Σ_g 16·16 logits each — 1/64 of the full scan, which is what the same rows cost in shuffled order."""
    b, per, d = 64, 16, 8
    groups = torch.arange(b).repeat_interleave(per)
    ids = torch.arange(per).remainder(per // 2).repeat(b)
    z = F.normalize(torch.randn(b * per, d, generator=torch.Generator().manual_seed(0)), dim=1)
    counts = _count_logits(monkeypatch)
    x = z.clone().requires_grad_()
    chunked_grouped_info_nce(x, x, ids, ids, 0.5, q_groups=groups, k_groups=groups, chunk_rows=per).backward()
    n = b * per
    assert len(counts) == 2 * b and sum(counts) == 2 * b * per * per  # forward + backward, Σ_g n_g²
    counts.clear()
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    y = z[perm].clone().requires_grad_()
    chunked_grouped_info_nce(
        y, y, ids[perm], ids[perm], 0.5, q_groups=groups[perm], k_groups=groups[perm], chunk_rows=per
    ).backward()
    assert sum(counts) == 2 * n * n  # unsorted: the full scan, 64× the work
    torch.testing.assert_close(y.grad, x.grad[perm], atol=1e-6, rtol=1e-5)


def test_comet_instance_levels_take_the_restricted_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """COMET lays out its observation and sample levels group by group: on the CPU path they compute a
    small fraction of the logits that a full scan of the same rows would."""
    from clinseq.objectives import COMET

    b, t, d = 8, 12, 8
    gen = torch.Generator().manual_seed(0)
    z1 = torch.randn(b, t, d, generator=gen).requires_grad_()
    z2 = torch.randn(b, t, d, generator=gen).requires_grad_()
    comet = COMET(level_weights={"observation": 1.0, "sample": 1.0}, hierarchical=False, backend="torch")
    n = 2 * b * t  # rows per level
    # The default chunks follow the groups; unmerged here (tiny groups are merged into one chunk
    # below SMALL_CHUNK_ELEMENTS logits, which at these sizes would be all rows and all columns).
    monkeypatch.setattr(ref, "SMALL_CHUNK_ELEMENTS", 0)
    counts = _count_logits(monkeypatch)
    comet(z1, z2).loss.backward()
    # Observation level: B groups of 2T = 24 rows; sample level: T groups of 2B = 16 rows; each level
    # computes Σ_g n_g² logits per pass (forward and backward) instead of n².
    assert sum(counts) == 2 * (b * (2 * t) ** 2 + t * (2 * b) ** 2), (sum(counts), 2 * 2 * n * n)


def test_default_chunks_follow_the_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sorted groups on both sides, no chunk_rows: one chunk per group, tiny groups merged, big ones split
    within the budget — and the same loss and gradients as the dense formula."""
    monkeypatch.setattr(ref, "CHUNK_BYTES", 400 * 14)  # 400 float32 logits (3·4 + 2 bytes each)
    monkeypatch.setattr(ref, "SMALL_CHUNK_ELEMENTS", 30)
    case = GroupCase(
        "chunks",
        ((0, 1, 1), (1, 2, 2), (2, 1, 3), (3, 40, 35), (4, 3, 3), (5, 25, 30)),
        exclude_self=True,
        symmetric=True,
    )
    _, _, _, _, q_groups, k_groups = _group_inputs(case)
    # Rows: groups 0-2 → [0, 4), 3 → [4, 44), 4 → [44, 47), 5 → [47, 72); columns: [0, 6), [6, 41),
    # [41, 44), [44, 74). Groups 0-2 merge (4·6 ≤ 30 logits); group 3 splits into 400 // 35 = 11-row
    # pieces; group 4 stays alone ((47 − 37)·(44 − 6) > 30); group 5 splits into 400 // 30 = 13 rows.
    assert ref._chunks(q_groups, k_groups, 72, 74, None) == [
        (0, 4, 0, 6),
        (4, 15, 6, 41),
        (15, 26, 6, 41),
        (26, 37, 6, 41),
        (37, 44, 6, 41),
        (44, 47, 41, 44),
        (47, 60, 44, 74),
        (60, 72, 44, 74),
    ]
    _assert_close(
        _run(chunked_grouped_info_nce, case, torch.float32),
        _run(naive_grouped_info_nce, case, torch.float64),
        str(case),
    )
