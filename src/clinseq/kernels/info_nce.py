"""Grouped InfoNCE: fused Triton forward and backward, its launcher, autograd Function and dispatch.

The loss (design §5): with s_ij = q_i·k_j / τ (raw dot products — l2-normalise first if the objective
says so; CPC does not),

    valid(i, j) = j < M, j ≠ i (when ``exclude_self``), k_groups[j] == q_groups[i] (when groups are given)
    P(i)        = { valid j : k_ids[j] == q_ids[i] }
    L_i         = logsumexp_{valid j} s_ij − (1/|P(i)|) Σ_{p ∈ P(i)} s_ip

SupCon's L_out form (Khosla et al. 2020, arXiv 2004.11362, eq. 2); with one positive per row it is
InfoNCE / NT-Xent (van den Oord et al. 2018; Chen et al. 2020). Rows with |P(i)| = 0 are skipped: no
loss, no gradient, but they still serve as columns (negatives) for the other rows.

Kernel algorithm (design §6; no N×M tensor is ever stored):

- Forward, row-parallel: a program owns ``block_m`` query rows and streams key tiles of ``block_n``
  columns. Per tile it computes S = QKᵀ·log2(e)/τ with ``tl.dot`` (fp32 accumulation), builds the
  valid / positive masks by comparing id and group tiles, and updates the online log-sum-exp (m, l) in
  base 2 (``exp2``, log2 e folded into the scale) plus the positive sum and count. It stores per row
  the loss, the LSE (+inf at skipped rows, which makes their softmax exactly 0 in backward) and |P(i)|:
  O(N) memory. With ``normalized=True`` the max is fixed at 1/τ (|s| ≤ 1/τ for unit rows), so a tile
  needs no max reduction and no rescale — while τ ≥ 2·log2(e)/126 ≈ 0.0229 (:data:`NORMALIZED_MIN_TAU`),
  where every exp2 stays in fp32's normal range; below it (a learnable τ can get there) the program
  keeps the running max, decided on the device from τ.
- Backward, two deterministic passes that recompute S per tile, with G = dL/d(q·k) =
  (softmax − [j ∈ P(i)]/|P(i)|)·dL_i/τ over valid entries: a row-parallel pass accumulates dQ = G·K in
  registers (and Σ G∘S for dL/dτ), a column-parallel pass accumulates dK = Gᵀ·Q for the key rows that
  get a gradient only (queue columns are never visited). That is 5 GEMM units (forward 1, backward 2 ×
  (recompute + product)) instead of 4 with an fp32 atomic dK; we pay the extra unit because atomics would
  move (N/block_m)·M·D·4 bytes through L2 (34 GB at N = M = 65,536, D = 256, block_m = 128, ~11 ms of
  H100 bandwidth, more than the unit it saves), need an fp32 M×D buffer, and make dK non-deterministic.
- Symmetric (CLIP) form: the forward runs twice (rows, then columns as rows) and both backward passes
  add the k→q direction's G into the same tile, so the symmetric loss costs 6 units, not 2 × 5.
- Group-restricted scan: with groups, a program streams only the tiles of the column range
  [first column of its rows' smallest group, end of their largest group) when the column groups are
  sorted (non-decreasing), and all columns otherwise — decided on the device, without a host sync
  (:mod:`clinseq.kernels._group_ranges` computes the per-block ranges with ``searchsorted`` and
  a sortedness flag; the kernel reads two int32 bounds per program). Exact: the group mask still applies
  inside the range. For rows laid out group by group on both sides (COMET's observation level, B groups
  of 2T rows; its sample level, T groups of 2B rows) the cost drops from O((Σ_g n_g)²·D) to about
  O(Σ_g n_g·(n_g + block)·D) in every pass (forward, dQ, dK over the query range).
- Self-contrast (k *is* q — one autograd input — with the same ids and groups, all keys with gradient:
  SimCLR, PCLR, SupCon, poly-window): S is symmetric, so dz = (G + Gᵀ)·z comes from ONE row-parallel
  pass that adds G_ji = a_j·(exp(s_ij − lse_j) − [pos]/|P(j)|) with the rows' own statistics on the
  columns: 3 GEMM units in all (forward, recompute, product) instead of 5. Tensors that merely share
  memory (z and z.detach(), two leaves or two views of one storage) are two inputs with their own
  gradients and take the two-pass backward.
- fp16 safety: the per-row coefficients are scaled to a maximum of 2¹⁴ before G is cast to the input
  dtype for the tensor-core product, and the result is scaled back in fp32 (with reduction="mean",
  G ~ 1/(N·τ·M) ≈ 2·10⁻⁹ at N = M = 65,536 would otherwise underflow fp16).
- Resident or streamed D: per the table, the row block of the program's own operand stays in registers
  (2-byte dtypes, D ≤ 256), or the contraction loops over D chunks and the backward grid adds a D-block
  axis (recomputing S per block): fp32 always, and D > 256.
- Tile sizes come from a small fixed table keyed by (architecture, dtype, D) (:func:`tile_config`:
  sm90, sm80, sm86 for sm_86/87/89, fallback for anything else and every ROCm GPU), not from an autotune
  sweep at import; every row is compiled for its architecture without a GPU
  (``tests/kernels/gpu_compile.py``, ``benchmarks/results/info_nce_compile_matrix.json``). fp32 inputs
  use IEEE fp32 products (CUDA cores) unless ``torch.backends.cuda.matmul.allow_tf32`` is set (torch's
  own switch); inside a CUDA ``torch.autocast`` block fp32 inputs are cast to the autocast dtype first,
  so they run on tensor cores like the rest of the autocast step.
- Launches: each runs under ``torch.cuda.device(q.device)`` (Triton launches on torch's current
  device); the row counts are ``do_not_specialize`` (no recompile per N mod 16).

Which paths can reach the H100 target — arithmetic only, nothing here was measured (no GPU was lent):
N = M = 65,536, D = 256, bf16, forward + backward within 20 ms. One GEMM unit is 2·N·M·D =
2.2·10¹² FLOP; the two-sided loss (dQ and dK) is 5 units = 1.1·10¹³ FLOP, i.e. 550 TFLOP/s sustained
for 20 ms, 56 % of H100 SXM's 989 TFLOP/s dense bf16 peak. The softmax adds one exp2 per logit and pass
— 3 × N·M = 1.3·10¹⁰ — which at H100's ~3.9·10¹² special-function ops/s (Shah et al. 2024, FlashAttention-3,
arXiv 2407.08608) is 3.3 ms if it does not overlap the MMAs (Triton issues both from the same warps;
no ping-pong scheduling here), leaving 16.7 ms: 660 TFLOP/s, 67 % of peak. The repeated key streams
(N/block_m × 32 MB per pass) assume the 32 MB bf16 K stays in H100's 50 MB L2; from HBM (3.35 TB/s)
they alone would take ~5 ms per pass at block_m = 128. Per path:

- bf16/fp16 on the sm90 rows, two-sided (5 units): forward, dQ and dK all lower to wgmma (the compile
  matrix counts them; the dK pass owns 64 key rows so that it does too). Needs 56–67 % of peak
  sustained: reachable only if Triton's software pipeline keeps the tensor cores that busy beside the
  softmax — plausible, not shown.
- The same with a pass on mma.sync (the former 32-row dK): mma.sync reaches about 2/3 of Hopper's peak
  (Shah et al. 2024), so 3 units at 989 and 2 at ~660 TFLOP/s take 13.3 ms at the ceilings; with the
  exp2 time that needs ≥ 80 % of both ceilings: not a realistic path.
- Self-contrast (SimCLR/PCLR, 3 units = 6.6·10¹² FLOP, one exp2 in forward and two in the one backward
  pass): 330–395 TFLOP/s, 33–40 % of peak — the path most likely to meet 20 ms.
- Symmetric CLIP form (6 units, 6 exp2 per logit: 6.6 ms of them): 660–985 TFLOP/s, 67–100 % of
  peak: not realistic.
- fp32 at IEEE precision (CUDA cores, ~67 TFLOP/s peak): ≥ 164 ms, cannot. fp32 with TF32 (495 TFLOP/s
  dense peak): the two-sided loss cannot even at peak; self-contrast needs 67–80 % of it. fp32 inputs
  under CUDA bf16/fp16 autocast are cast, so they take the bf16 path.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from clinseq.errors import ConfigError, ShapeError
from clinseq.kernels._group_ranges import tile_column_ranges
from clinseq.kernels._validation import (
    BACKENDS,
    check_inputs,
    combine_symmetric,
    reduce_rows,
    without_autocast,
)
from clinseq.kernels.reference import chunked_grouped_info_nce, naive_grouped_info_nce


def _interpret_flag(triton_module: object) -> bool:
    """Whether Triton interprets kernels instead of compiling them (fixed when a kernel is defined).

    ``triton.knobs`` exists from Triton 3.4; older releases (the package allows 3.0) read the
    ``TRITON_INTERPRET`` environment variable directly, which is what this falls back to.
    """
    knobs = getattr(triton_module, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"  # Triton < 3.4's own test (runtime/jit.py)


try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
    #: Triton chooses between compiling and interpreting when a kernel is defined (at this import).
    INTERPRETED = _interpret_flag(triton)
except ImportError:  # CPU installs without triton run the chunked torch path
    triton = None
    tl = None
    HAS_TRITON = False
    INTERPRETED = False

__all__ = ["HAS_TRITON", "TileConfig", "cpc_ids", "cpc_info_nce", "grouped_info_nce", "tile_config"]

#: Largest embedding size the Triton kernel takes (the torch paths take any D).
MAX_TRITON_DIM = 1024
_LN2 = math.log(2.0)
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# ----------------------------------------------------------------------------------------------------
# Tile configurations
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TileConfig:
    """Tile sizes of one kernel pass.

    ``block_m`` query rows × ``block_n`` key rows per tile; ``block_d`` the contraction chunk (≥ D means
    the program's own rows stay in registers); ``block_do`` the width of the D block a backward program
    accumulates (= ``block_d`` when resident); ``num_warps`` / ``num_stages`` as in ``triton.Config``.
    """

    block_m: int
    block_n: int
    block_d: int
    block_do: int
    num_warps: int
    num_stages: int

    @property
    def resident(self) -> bool:
        return self.block_d == self.block_do


#: One table row: (largest D, block_m, block_n, num_warps, num_stages, chunk_d). The first row of a pass
#: whose D bound holds wins. block_m counts q rows and block_n k rows in every pass (the dK pass owns
#: block_n k rows per program and streams block_m q rows). chunk_d = 0: the program's own rows stay in
#: registers (block_d = D rounded up to a power of two); chunk_d > 0: the contraction streams D in
#: chunk_d-wide pieces and a backward program accumulates a _CHUNK_DO-wide block of its output columns
#: (the grid gets a D-block axis, S is recomputed per block).
_Row = tuple[int, int, int, int, int, int]

# Keyed by (architecture, element size class). fp16 and bf16 share rows (2-byte operands, same
# tensor-core shapes); fp32 has its own: with the default IEEE precision its products run on CUDA cores
# (FMA), operands pass through shared memory at 4 bytes, and resident 64×256 fp32 rows spill — so fp32
# always streams D in 32-wide chunks. Every row was compiled without a GPU for its architecture
# (benchmarks/results/info_nce_compile_matrix.json, tests/kernels/gpu_compile.py): it fits the shared
# memory of that architecture, and the spills are recorded there. None is tuned on hardware.
_FP32_ROWS: dict[str, tuple[_Row, ...]] = {
    "fwd": ((1024, 64, 32, 8, 2, 32),),
    "dq": ((1024, 64, 32, 8, 2, 32),),
    "dk": ((1024, 32, 64, 8, 2, 32),),
}
_TABLE: dict[tuple[str, str], dict[str, tuple[_Row, ...]]] = {
    # H100/H200 (sm_90, 227 KB of shared memory per block). Every pass owns ≥ 64 rows per program with
    # 8 warps, the shape Triton lowers to Hopper's wgmma (a program owning 32 rows gets mma.sync).
    ("sm90", "16bit"): {
        "fwd": ((256, 128, 32, 8, 3, 0), (1024, 64, 64, 8, 3, 64)),
        "dq": ((128, 128, 32, 8, 3, 0), (256, 64, 32, 8, 2, 0), (1024, 64, 32, 8, 2, 64)),
        "dk": ((128, 64, 64, 8, 3, 0), (256, 32, 64, 8, 2, 0), (1024, 32, 64, 8, 2, 64)),
    },
    ("sm90", "fp32"): _FP32_ROWS,
    # A100 (sm_80, 163 KB).
    ("sm80", "16bit"): {
        "fwd": ((256, 128, 32, 8, 2, 0), (1024, 64, 64, 8, 2, 64)),
        "dq": ((128, 64, 32, 8, 2, 0), (256, 64, 32, 8, 2, 0), (1024, 64, 32, 8, 2, 64)),
        "dk": ((128, 64, 64, 8, 2, 0), (256, 64, 32, 8, 2, 0), (1024, 64, 32, 8, 2, 64)),
    },
    ("sm80", "fp32"): _FP32_ROWS,
    # A10/A40/RTX 30 (sm_86), L4/L40S/RTX 40 (sm_89), Orin (sm_87): 99 KB (conservative for sm_87's 163).
    ("sm86", "16bit"): {
        "fwd": ((256, 64, 32, 4, 2, 0), (1024, 64, 64, 8, 2, 64)),
        "dq": ((256, 64, 32, 8, 2, 0), (1024, 64, 32, 8, 2, 64)),
        "dk": ((256, 32, 64, 8, 2, 0), (1024, 32, 64, 8, 2, 64)),
    },
    ("sm86", "fp32"): _FP32_ROWS,
    # Anything else (ROCm GPUs such as MI300's 64 KB LDS, sm_75, sm_100/120): small streamed tiles that
    # stay under 64 KB of shared memory (compiled for MI300, gfx942: ≤ 16 KB of LDS, no VGPR spills).
    ("fallback", "16bit"): {
        "fwd": ((1024, 64, 32, 4, 2, 32),),
        "dq": ((1024, 64, 32, 4, 2, 32),),
        "dk": ((1024, 32, 64, 4, 2, 32),),
    },
    ("fallback", "fp32"): _FP32_ROWS,
}
GENERATIONS = ("sm90", "sm80", "sm86", "fallback")
# Width of the output block a streamed-D backward program accumulates.
_CHUNK_DO = 128
#: normalized=True uses the fixed max log2(e)/τ only while log2(e)/τ ≤ this (τ ≥ ~0.0229): every
#: exp2(s·log2 e − log2(e)/τ) ≥ 2^(−2·63) then stays in fp32's normal range (flushed-to-zero otherwise).
_FIXED_MAX_SCALE: float = 63.0
#: The smallest τ for which normalized=True keeps its fixed max (below it: the running max).
NORMALIZED_MIN_TAU = 1.4426950408889634 / _FIXED_MAX_SCALE


def _size_class(dtype: torch.dtype) -> str:
    return "fp32" if dtype == torch.float32 else "16bit"


@functools.cache
def _generation(device_index: int) -> str:
    """The table's architecture key of CUDA device ``device_index``.

    ROCm builds of torch report AMD GPUs through ``torch.cuda`` too, with a capability that can collide
    with NVIDIA's (MI300: (9, 4)); they take the fallback rows, never the sm_90 ones.
    """
    if torch.version.hip is not None:
        return "fallback"
    major, minor = torch.cuda.get_device_capability(device_index)
    if (major, minor) == (9, 0):
        return "sm90"
    if (major, minor) == (8, 0):
        return "sm80"
    if major == 8:
        return "sm86"  # 8.6, 8.7, 8.9: ~100 KB of shared memory
    return "fallback"  # sm_75 and older, sm_100/120: untested


def _pow2(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())  # tl.dot needs ≥ 16 per dimension


def tile_config(kind: str, device: torch.device, dim: int, dtype: torch.dtype = torch.float32) -> TileConfig:
    """The fixed tile configuration of pass ``kind`` (``"fwd"``, ``"dq"``, ``"dk"``) for D = ``dim``
    and inputs of ``dtype`` on ``device`` (its architecture picks the table).

    Under the Triton interpreter (CPU) small 32×32 tiles keep the tests fast and still exercise several
    tiles per row and column.
    """
    if INTERPRETED or device.type != "cuda":
        block_d = _pow2(dim) if dim <= 128 else 64
        return TileConfig(32, 32, block_d, block_d if dim <= 128 else 64, 4, 1)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return table_config(_generation(index), kind, dim, dtype)


def table_config(generation: str, kind: str, dim: int, dtype: torch.dtype = torch.float32) -> TileConfig:
    """The configuration of pass ``kind`` for architecture ``generation`` (one of :data:`GENERATIONS`),
    D = ``dim`` and inputs of ``dtype``."""
    if dim > MAX_TRITON_DIM:
        raise ShapeError(f"the Triton kernel takes D <= {MAX_TRITON_DIM}, got D = {dim}")
    rows = _TABLE[(generation, _size_class(dtype))][kind]
    _, block_m, block_n, warps, stages, chunk_d = next(row for row in rows if dim <= row[0])
    if chunk_d == 0 or dim <= chunk_d:
        block_d = _pow2(dim)
        return TileConfig(block_m, block_n, block_d, block_d, warps, stages)
    return TileConfig(block_m, block_n, chunk_d, min(_CHUNK_DO, _pow2(dim)), warps, stages)


# ----------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------

if HAS_TRITON:
    _FIXED_MAX = tl.constexpr(_FIXED_MAX_SCALE)  # a kernel reads module constants only as constexpr

    @triton.jit
    def _dot_rows(
        A,
        B,
        offs_a,
        offs_b,
        n_a,
        n_b,
        D,
        stride_a,
        stride_b,
        BLOCK_A: tl.constexpr,
        BLOCK_B: tl.constexpr,
        BLOCK_D: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """A[offs_a] · B[offs_b]ᵀ (BLOCK_A, BLOCK_B) in fp32, streaming D in BLOCK_D chunks."""
        acc = tl.zeros((BLOCK_A, BLOCK_B), dtype=tl.float32)
        rows_a = offs_a.to(tl.int64)[:, None] * stride_a
        rows_b = offs_b.to(tl.int64)[:, None] * stride_b
        ok_a = (offs_a < n_a)[:, None]
        ok_b = (offs_b < n_b)[:, None]
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            d_ok = (offs_d < D)[None, :]
            a = tl.load(A + rows_a + offs_d[None, :], mask=ok_a & d_ok, other=0.0)
            b = tl.load(B + rows_b + offs_d[None, :], mask=ok_b & d_ok, other=0.0)
            acc = tl.dot(a, tl.trans(b), acc, input_precision=PRECISION)
        return acc

    @triton.jit
    def _load_rows(X, offs, n, D, stride, d0, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
        """X[offs, d0:d0 + BLOCK_D] (BLOCK, BLOCK_D), zero outside [0, n) × [0, D)."""
        offs_d = d0 + tl.arange(0, BLOCK_D)
        ptrs = X + offs.to(tl.int64)[:, None] * stride + offs_d[None, :]
        return tl.load(ptrs, mask=(offs < n)[:, None] & (offs_d < D)[None, :], other=0.0)

    @triton.jit
    def _online_lse(m_i, l_i, s2):
        """One tile's update of the running base-2 log-sum-exp (max ``m_i``, sum ``l_i``) of its rows."""
        m_new = tl.maximum(m_i, tl.max(s2, 1))
        # A row with no valid column so far keeps m = -inf: shift by 0 there (exp2(-inf) = 0).
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.exp2(m_i - m_use) + tl.sum(tl.exp2(s2 - m_use[:, None]), 1)
        return m_new, l_i

    @triton.jit
    def _scan_bounds(LO, HI, pid, n, HAS_GROUPS: tl.constexpr):
        """[lo, hi): the rows of the streamed side that program ``pid`` visits. With groups, only these can
        share a group with its rows (all of [0, n) unless that side's groups are sorted; see
        _group_ranges), so the tiles of other groups are never loaded."""
        if HAS_GROUPS:
            lo = tl.load(LO + pid)
            hi = tl.load(HI + pid)
        else:
            lo = 0
            hi = n
        return lo, hi

    @triton.jit
    def _tile_masks(
        offs_x, offs_y, x_ok, y_ok, x_ids, x_groups, Y_IDS, Y_GROUPS,
        EXCLUDE_SELF: tl.constexpr, HAS_GROUPS: tl.constexpr,
    ):  # fmt: skip
        """(valid, positive) masks of a (rows x, columns y) tile: the candidate and positive rules of the
        loss (module docstring), ``x_groups`` ignored without groups."""
        valid = x_ok[:, None] & y_ok[None, :]
        if EXCLUDE_SELF:
            valid = valid & (offs_x[:, None] != offs_y[None, :])
        if HAS_GROUPS:
            y_groups = tl.load(Y_GROUPS + offs_y, mask=y_ok, other=0)
            valid = valid & (x_groups[:, None] == y_groups[None, :])
        y_ids = tl.load(Y_IDS + offs_y, mask=y_ok, other=0)
        return valid, valid & (x_ids[:, None] == y_ids[None, :])

    # Row counts vary from call to call (the last batch, queues, CPC's dropped steps): without
    # do_not_specialize Triton compiles a variant per N mod 16 (and for N == 1). D and the strides keep
    # their specialisation: they are fixed per model and their divisibility by 16 allows wide loads.
    @triton.jit(do_not_specialize=["N", "M"])
    def _forward_kernel(
        Q,
        K,
        QID,
        KID,
        QGRP,
        KGRP,
        TAU,
        LOSS,
        LSE,
        PCNT,
        COL_LO,
        COL_HI,
        TILES,
        N,
        M,
        D,
        stride_q,
        stride_k,
        EXCLUDE_SELF: tl.constexpr,
        HAS_GROUPS: tl.constexpr,
        NORMALIZED: tl.constexpr,
        COUNT_TILES: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
        RESIDENT: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        pid = tl.program_id(0)
        offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = offs_m < N
        qid = tl.load(QID + offs_m, mask=row_ok, other=0)
        if HAS_GROUPS:
            qgrp = tl.load(QGRP + offs_m, mask=row_ok, other=0)
        else:
            qgrp = qid  # not read without groups
        scale = 1.4426950408889634 / tl.load(TAU)  # log2(e)/τ: exp2 below, no separate exp
        if RESIDENT:
            q = _load_rows(Q, offs_m, N, D, stride_q, 0, BLOCK_M, BLOCK_D)
        if NORMALIZED:
            # Fixed max log2(e)/τ (s·log2 e ≤ log2(e)/τ for unit rows) while exp2 cannot leave fp32's
            # normal range: exponents lie in [−2·scale, 0], so scale ≤ 63 (τ ≥ 2·log2(e)/126 ≈ 0.0229).
            # Below that (a learnable τ can get there) the running max takes over, decided on the device.
            m_i = tl.zeros([BLOCK_M], dtype=tl.float32) + tl.where(scale <= _FIXED_MAX, scale, float("-inf"))
        else:
            m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        psum = tl.zeros([BLOCK_M], dtype=tl.float32)
        pcnt = tl.zeros([BLOCK_M], dtype=tl.int32)
        lo, hi = _scan_bounds(COL_LO, COL_HI, pid, M, HAS_GROUPS)
        n_tiles = 0
        for start_n in range(lo, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            col_ok = offs_n < hi
            if RESIDENT:
                k = _load_rows(K, offs_n, hi, D, stride_k, 0, BLOCK_N, BLOCK_D)
                x = tl.dot(q, tl.trans(k), input_precision=PRECISION)
            else:
                x = _dot_rows(
                    Q, K, offs_m, offs_n, N, hi, D, stride_q, stride_k, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION
                )
            s2 = x * scale
            valid, pos = _tile_masks(
                offs_m, offs_n, row_ok, col_ok, qid, qgrp, KID, KGRP, EXCLUDE_SELF, HAS_GROUPS
            )
            s2 = tl.where(valid, s2, float("-inf"))
            if NORMALIZED:
                if scale <= _FIXED_MAX:
                    l_i += tl.sum(tl.exp2(s2 - m_i[:, None]), 1)
                else:
                    m_i, l_i = _online_lse(m_i, l_i, s2)
            else:
                m_i, l_i = _online_lse(m_i, l_i, s2)
            psum += tl.sum(tl.where(pos, s2, 0.0), 1)
            pcnt += tl.sum(pos.to(tl.int32), 1)
            if COUNT_TILES:
                n_tiles += 1
        if COUNT_TILES:
            tl.store(TILES + pid, n_tiles)
        has = pcnt > 0
        lse2 = m_i + tl.log2(tl.where(has, l_i, 1.0))  # a row with a positive has l ≥ its exp2 > 0
        loss = tl.where(has, (lse2 - psum / tl.maximum(pcnt, 1).to(tl.float32)) * 0.6931471805599453, 0.0)
        tl.store(LOSS + offs_m, loss, mask=row_ok)
        tl.store(LSE + offs_m, tl.where(has, lse2, float("inf")), mask=row_ok)
        tl.store(PCNT + offs_m, pcnt, mask=row_ok)

    @triton.jit
    def _grad_tile(
        s2, valid, pos, lse_r, a_r, b_r, lse_c, a_c, b_c, ROWS_ARE_Q: tl.constexpr, SYMMETRIC: tl.constexpr
    ):
        """G (normalised) of a tile; *_r are per tile-row vectors, *_c per tile-column vectors.

        The q→k direction's statistics belong to the q side, the k→q direction's to the k side: when
        the tile's rows are q (dQ pass) the q→k terms use *_r; in the dK pass (rows are k) they use *_c.
        """
        if ROWS_ARE_Q:
            p = tl.where(valid, tl.exp2(s2 - lse_r[:, None]), 0.0)
            g = a_r[:, None] * p - tl.where(pos, b_r[:, None], 0.0)
            if SYMMETRIC:
                p_t = tl.where(valid, tl.exp2(s2 - lse_c[None, :]), 0.0)
                g += a_c[None, :] * p_t - tl.where(pos, b_c[None, :], 0.0)
        else:
            p = tl.where(valid, tl.exp2(s2 - lse_c[None, :]), 0.0)
            g = a_c[None, :] * p - tl.where(pos, b_c[None, :], 0.0)
            if SYMMETRIC:
                p_t = tl.where(valid, tl.exp2(s2 - lse_r[:, None]), 0.0)
                g += a_r[:, None] * p_t - tl.where(pos, b_r[:, None], 0.0)
        return g

    @triton.jit(do_not_specialize=["NX", "NY", "NX_GRAD"])
    def _backward_kernel(
        X,
        Y,
        XID,
        YID,
        XGRP,
        YGRP,
        TAU,
        LSE_X,
        A_X,
        B_X,
        LSE_Y,
        A_Y,
        B_Y,
        GSCALE,
        DX,
        TAU_ROWS,
        Y_LO,
        Y_HI,
        TILES,
        NX,
        NY,
        NX_GRAD,
        D,
        stride_x,
        stride_y,
        stride_dx,
        ROWS_ARE_Q: tl.constexpr,
        EXCLUDE_SELF: tl.constexpr,
        HAS_GROUPS: tl.constexpr,
        SYMMETRIC: tl.constexpr,
        STORE_DX: tl.constexpr,
        TAU_GRAD: tl.constexpr,
        COUNT_TILES: tl.constexpr,
        BLOCK_X: tl.constexpr,
        BLOCK_Y: tl.constexpr,
        BLOCK_D: tl.constexpr,
        BLOCK_DO: tl.constexpr,
        RESIDENT: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """dX = G·Y for the program's BLOCK_X rows of X, streaming Y; one kernel, two roles.

        dQ pass: X = q, Y = k (ROWS_ARE_Q). dK pass: X = k, Y = q, and the tile is Sᵀ, so dK = Gᵀ·Q
        needs no transpose. LSE/A/B_X are the statistics of X's own direction (q→k for q, k→q for k),
        LSE/A/B_Y those of Y's; the k→q ones are used only when SYMMETRIC.
        """
        pid_x = tl.program_id(0)
        pid_d = tl.program_id(1)
        offs_x = pid_x * BLOCK_X + tl.arange(0, BLOCK_X)
        x_ok = offs_x < NX
        xid = tl.load(XID + offs_x, mask=x_ok, other=0)
        if HAS_GROUPS:
            xgrp = tl.load(XGRP + offs_x, mask=x_ok, other=0)
        else:
            xgrp = xid  # not read without groups
        # Rows past the end read LSE = +inf and A = B = 0, so their G is exactly 0.
        if ROWS_ARE_Q or SYMMETRIC:
            lse_x = tl.load(LSE_X + offs_x, mask=x_ok, other=float("inf"))
            a_x = tl.load(A_X + offs_x, mask=x_ok, other=0.0)
            b_x = tl.load(B_X + offs_x, mask=x_ok, other=0.0)
        else:
            lse_x = tl.zeros([BLOCK_X], dtype=tl.float32)
            a_x = lse_x
            b_x = lse_x
        scale = 1.4426950408889634 / tl.load(TAU)
        if RESIDENT:
            x_rows = _load_rows(X, offs_x, NX, D, stride_x, 0, BLOCK_X, BLOCK_D)
        acc = tl.zeros([BLOCK_X, BLOCK_DO], dtype=tl.float32)
        tau_acc = tl.zeros([BLOCK_X], dtype=tl.float32)
        lo, hi = _scan_bounds(Y_LO, Y_HI, pid_x, NY, HAS_GROUPS)
        n_tiles = 0
        for start_y in range(lo, hi, BLOCK_Y):
            offs_y = start_y + tl.arange(0, BLOCK_Y)
            y_ok = offs_y < hi
            if RESIDENT:
                y_rows = _load_rows(Y, offs_y, hi, D, stride_y, 0, BLOCK_Y, BLOCK_D)
                xy = tl.dot(x_rows, tl.trans(y_rows), input_precision=PRECISION)
            else:
                xy = _dot_rows(
                    X, Y, offs_x, offs_y, NX, hi, D, stride_x, stride_y, BLOCK_X, BLOCK_Y, BLOCK_D, PRECISION
                )
            s2 = xy * scale
            valid, pos = _tile_masks(
                offs_x, offs_y, x_ok, y_ok, xid, xgrp, YID, YGRP, EXCLUDE_SELF, HAS_GROUPS
            )
            if SYMMETRIC or not ROWS_ARE_Q:
                lse_y = tl.load(LSE_Y + offs_y, mask=y_ok, other=float("inf"))
                a_y = tl.load(A_Y + offs_y, mask=y_ok, other=0.0)
                b_y = tl.load(B_Y + offs_y, mask=y_ok, other=0.0)
            else:
                lse_y = tl.zeros([BLOCK_Y], dtype=tl.float32)
                a_y = lse_y
                b_y = lse_y
            g = _grad_tile(s2, valid, pos, lse_x, a_x, b_x, lse_y, a_y, b_y, ROWS_ARE_Q, SYMMETRIC)
            if TAU_GRAD:
                tau_acc += tl.sum(g * s2, 1)
            if STORE_DX:
                if RESIDENT:
                    acc = tl.dot(g.to(Y.dtype.element_ty), y_rows, acc, input_precision=PRECISION)
                else:
                    y_blk = _load_rows(Y, offs_y, hi, D, stride_y, pid_d * BLOCK_DO, BLOCK_Y, BLOCK_DO)
                    acc = tl.dot(g.to(Y.dtype.element_ty), y_blk, acc, input_precision=PRECISION)
            if COUNT_TILES:
                n_tiles += 1
        if COUNT_TILES:
            if pid_d == 0:
                tl.store(TILES + pid_x, n_tiles)
        if STORE_DX:
            acc = acc * tl.load(GSCALE)
            offs_do = pid_d * BLOCK_DO + tl.arange(0, BLOCK_DO)
            ptrs = DX + offs_x.to(tl.int64)[:, None] * stride_dx + offs_do[None, :]
            mask = (offs_x < NX_GRAD)[:, None] & (offs_do < D)[None, :]
            tl.store(ptrs, acc.to(DX.dtype.element_ty), mask=mask)
        if TAU_GRAD:
            if pid_d == 0:  # every D block computed the same sums
                tl.store(TAU_ROWS + offs_x, tau_acc, mask=x_ok)


# ----------------------------------------------------------------------------------------------------
# Launchers and autograd Function
# ----------------------------------------------------------------------------------------------------


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not INTERPRETED and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _rows_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _on_device(device: torch.device) -> contextlib.AbstractContextManager:
    """The guard of every launch: Triton launches on torch's *current* CUDA device, which on a multi-GPU
    machine need not be the inputs' (a process on cuda:1 whose current device is cuda:0 would read cuda:1
    pointers from cuda:0). ``torch.cuda.device`` makes the inputs' device current for the launch."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


#: Set by :func:`count_visited_tiles`: launches then record how many tiles each program streamed.
_TILE_LOG: list[tuple[str, torch.Tensor]] | None = None


@contextlib.contextmanager
def count_visited_tiles() -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Debug aid: record, per kernel launch, the number of streamed tiles of every program.

    Inside the block each launch appends ``(pass, tiles)`` to the yielded list: ``pass`` is ``"fwd"``,
    ``"dq"`` or ``"dk"`` (the dK pass's rows are keys), ``tiles`` an int32 tensor with one entry per row
    block of the pass (the key tiles a forward or dQ program visited, the query tiles of a dK program).
    It compiles separate counting variants of the kernels (a constexpr), so it shows what the real
    loop does, e.g. that a group-restricted scan skips the tiles of other groups. Not thread-safe.
    """
    global _TILE_LOG
    previous, _TILE_LOG = _TILE_LOG, []
    try:
        yield _TILE_LOG
    finally:
        _TILE_LOG = previous


def _tile_counter(kind: str, n_blocks: int, device: torch.device) -> torch.Tensor | None:
    if _TILE_LOG is None:
        return None
    tiles = torch.full((n_blocks,), -1, dtype=torch.int32, device=device)
    _TILE_LOG.append((kind, tiles))
    return tiles


def _launch_forward(q, k, q_ids, k_ids, q_groups, k_groups, tau, exclude_self, normalized):
    n_rows, dim = q.shape
    loss = torch.empty(n_rows, dtype=torch.float32, device=q.device)
    lse = torch.empty(n_rows, dtype=torch.float32, device=q.device)
    pcnt = torch.empty(n_rows, dtype=torch.int32, device=q.device)
    cfg = tile_config("fwd", q.device, dim, q.dtype)
    has_groups = q_groups is not None
    n_prog = triton.cdiv(n_rows, cfg.block_m)
    # Per row block, the key columns that can share its groups (see _group_ranges); without groups the
    # kernel never reads these pointers.
    col_lo, col_hi = tile_column_ranges(q_groups, k_groups, cfg.block_m) if has_groups else (pcnt, pcnt)
    tiles = _tile_counter("fwd", n_prog, q.device)
    with _on_device(q.device):  # Triton launches on torch's current device
        _forward_kernel[(n_prog,)](
            q,
            k,
            q_ids,
            k_ids,
            q_groups if has_groups else q_ids,
            k_groups if has_groups else k_ids,
            tau,
            loss,
            lse,
            pcnt,
            col_lo,
            col_hi,
            tiles if tiles is not None else pcnt,
            n_rows,
            k.shape[0],
            dim,
            q.stride(0),
            k.stride(0),
            EXCLUDE_SELF=exclude_self,
            HAS_GROUPS=has_groups,
            NORMALIZED=normalized,
            COUNT_TILES=tiles is not None,
            BLOCK_M=cfg.block_m,
            BLOCK_N=cfg.block_n,
            BLOCK_D=cfg.block_d,
            RESIDENT=cfg.block_d >= dim,
            PRECISION=_precision(q.dtype),
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
        )
    return loss, lse, pcnt


def _launch_backward(
    rows_are_q,
    x,
    y,
    x_ids,
    y_ids,
    x_groups,
    y_groups,
    tau,
    stats_x,
    stats_y,
    gscale,
    exclude_self,
    symmetric,
    n_x_grad,
    store_dx,
    tau_grad,
):
    """One backward pass over the rows of x: returns (dx or None, per-row Σ G∘S or None)."""
    n_x, dim = x.shape
    cfg = tile_config("dq" if rows_are_q else "dk", x.device, dim, x.dtype)
    # The pass names q rows "m" and k rows "n" in the table; in the dK pass x holds the k rows.
    block_x, block_y = (cfg.block_m, cfg.block_n) if rows_are_q else (cfg.block_n, cfg.block_m)
    resident = cfg.block_d >= dim
    block_do = cfg.block_d if resident else cfg.block_do
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device) if store_dx else None
    tau_rows = torch.empty(n_x, dtype=torch.float32, device=x.device) if tau_grad else None
    n_prog = triton.cdiv(n_x_grad if not tau_grad else n_x, block_x)
    n_dblk = triton.cdiv(dim, block_do) if store_dx else 1
    has_groups = x_groups is not None
    lse_x, a_x, b_x = stats_x
    lse_y, a_y, b_y = stats_y
    y_lo, y_hi = tile_column_ranges(x_groups, y_groups, block_x) if has_groups else (lse_x, lse_x)
    tiles = _tile_counter("dq" if rows_are_q else "dk", n_prog, x.device)
    with _on_device(x.device):  # Triton launches on torch's current device
        _backward_kernel[(n_prog, n_dblk)](
            x,
            y,
            x_ids,
            y_ids,
            x_groups if has_groups else x_ids,
            y_groups if has_groups else y_ids,
            tau,
            lse_x,
            a_x,
            b_x,
            lse_y,
            a_y,
            b_y,
            gscale,
            dx if store_dx else x,
            tau_rows if tau_grad else lse_x,
            y_lo,
            y_hi,
            tiles if tiles is not None else lse_x,
            n_x,
            y.shape[0],
            n_x_grad,
            dim,
            x.stride(0),
            y.stride(0),
            dim,
            ROWS_ARE_Q=rows_are_q,
            EXCLUDE_SELF=exclude_self,
            HAS_GROUPS=has_groups,
            SYMMETRIC=symmetric,
            STORE_DX=store_dx,
            TAU_GRAD=tau_grad,
            COUNT_TILES=tiles is not None,
            BLOCK_X=block_x,
            BLOCK_Y=block_y,
            BLOCK_D=cfg.block_d,
            BLOCK_DO=block_do,
            RESIDENT=resident,
            PRECISION=_precision(x.dtype),
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
        )
    if dx is not None and n_x_grad < n_x:
        dx[n_x_grad:] = 0  # queue rows: the kernel never visits them
    return dx, tau_rows


def _coefficients(grad_rows, lse, pcnt, inv_tau):
    """Per-row (a, b) of G = a·softmax − b·[positive] (before normalisation), 0 at skipped rows."""
    has = pcnt > 0
    grad_rows = grad_rows.float() if grad_rows is not None else torch.zeros_like(lse)
    a = torch.where(has, grad_rows * inv_tau, 0.0)
    return a, a / pcnt.clamp_min(1).float(), has


class _TritonGroupedInfoNCE(torch.autograd.Function):
    """Per-row losses and positive counts of q→k (and of k→q when symmetric) from the fused kernels."""

    @staticmethod
    @without_autocast
    def forward(
        ctx,
        q,
        k,
        tau,
        q_ids,
        k_ids,
        q_groups,
        k_groups,
        exclude_self,
        n_key_grad,
        symmetric,
        normalized,
        self_contrast,
    ):
        tau32 = tau.detach().float().reshape(1)
        ctx.self_contrast = self_contrast
        loss, lse, pcnt = _launch_forward(
            q, k, q_ids, k_ids, q_groups, k_groups, tau32, exclude_self, normalized
        )
        if symmetric:
            loss_t, lse_t, pcnt_t = _launch_forward(
                k, q, k_ids, q_ids, k_groups, q_groups, tau32, exclude_self, normalized
            )
        else:
            loss_t, lse_t, pcnt_t = loss[:0], lse[:0], pcnt[:0]
        ctx.save_for_backward(q, k, tau32, q_ids, k_ids, q_groups, k_groups, lse, pcnt, lse_t, pcnt_t)
        ctx.exclude_self, ctx.n_key_grad, ctx.symmetric = exclude_self, n_key_grad, symmetric
        ctx.mark_non_differentiable(pcnt, pcnt_t)
        return loss, pcnt, loss_t, pcnt_t

    @staticmethod
    @without_autocast
    def backward(ctx, grad_loss, _g_pcnt, grad_loss_t, _g_pcnt_t):
        q, k, tau32, q_ids, k_ids, q_groups, k_groups, lse, pcnt, lse_t, pcnt_t = ctx.saved_tensors
        symmetric = ctx.symmetric
        need_q, need_k, need_tau = ctx.needs_input_grad[:3]
        n_key_grad = ctx.n_key_grad if need_k else 0
        inv_tau = tau32.reciprocal()
        a, b, _ = _coefficients(grad_loss, lse, pcnt, inv_tau)
        if symmetric:
            a_t, b_t, _ = _coefficients(grad_loss_t, lse_t, pcnt_t, inv_tau)
            gscale = torch.maximum(a.abs().amax(), a_t.abs().amax())
        else:
            a_t = b_t = lse_t = lse[:0]
            gscale = a.abs().amax()
        # Scaled coefficients put |G| ≤ 2·2¹⁴ (below fp16's 65504, and typical softmax entries ~2¹⁴/M in
        # fp16's normal range) before its cast for the tensor-core product; the pass multiplies back.
        # Powers of two and one fp32 scale: no rounding beyond the cast itself.
        gscale = (gscale * 2.0**-14).clamp_min(torch.finfo(torch.float32).tiny).reshape(1)
        inv_g = gscale.reciprocal()
        stats_q = (lse, a * inv_g, b * inv_g)
        stats_k = (lse_t, a_t * inv_g, b_t * inv_g) if symmetric else (lse, lse, lse)
        dq = dk = dtau = None
        if ctx.self_contrast:
            # q is k (same tensor, ids and groups): S is symmetric, so dz_i = Σ_j (G_ij + G_ji)·z_j and
            # G_ji = a_j·(exp(s_ij − lse_j) − [pos]/|P(j)|) — the symmetric kernel with the rows' own
            # statistics on the columns. One backward pass (2 GEMM units) instead of dQ and dK (4).
            dz, tau_rows = _launch_backward(
                True,
                q,
                q,
                q_ids,
                q_ids,
                q_groups,
                q_groups,
                tau32,
                stats_q,
                stats_q,
                gscale,
                ctx.exclude_self,
                True,
                q.shape[0],
                need_q or need_k,
                need_tau,
            )
            if need_tau:
                # Σ_ij (G_ij + G_ji)·s_ij counts every (i, j) twice: halve it.
                dtau = (-0.5 * _LN2 * gscale * tau_rows.sum()).reshape(())
            return dz, None, dtau, *([None] * 9)
        if need_q or need_tau:
            dq, tau_rows = _launch_backward(
                True,
                q,
                k,
                q_ids,
                k_ids,
                q_groups,
                k_groups,
                tau32,
                stats_q,
                stats_k,
                gscale,
                ctx.exclude_self,
                symmetric,
                q.shape[0],
                need_q,
                need_tau,
            )
            if need_tau:
                # dL/dτ = −(1/τ) Σ dL/ds·s = −Σ G∘(q·k)/τ, with S kept as s·log2(e) in the kernel.
                dtau = (-_LN2 * gscale * tau_rows.sum()).reshape(())
        if n_key_grad:
            # dK pass: rows are k; the q→k statistics sit on the columns (q), the k→q ones on the rows.
            dk, _ = _launch_backward(
                False,
                k,
                q,
                k_ids,
                q_ids,
                k_groups,
                q_groups,
                tau32,
                stats_k if symmetric else (lse, lse, lse),
                stats_q,
                gscale,
                ctx.exclude_self,
                symmetric,
                n_key_grad,
                True,
                False,
            )
        return dq if need_q else None, dk, dtau, *([None] * 9)


# ----------------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------------


def _resolve_backend(backend: str, q: torch.Tensor, dim: int) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    triton_ok = HAS_TRITON and (q.is_cuda or (INTERPRETED and q.device.type == "cpu"))
    if backend == "auto":
        fits = q.dtype in _TRITON_DTYPES and dim <= MAX_TRITON_DIM
        return "triton" if triton_ok and q.is_cuda and fits else "torch"
    if backend == "triton":
        if not HAS_TRITON:
            raise ConfigError("backend='triton' needs the triton package; install it or pass backend='torch'")
        if not triton_ok:
            raise ConfigError(
                f"backend='triton' runs on CUDA tensors (or on the CPU under TRITON_INTERPRET=1 set before "
                f"clinseq.kernels is imported), got a tensor on {q.device}; use backend='auto' or 'torch'"
            )
        if q.dtype not in _TRITON_DTYPES:
            raise ShapeError(
                f"backend='triton' takes float16, bfloat16 or float32 inputs, got {q.dtype}; "
                "use backend='torch' for float64"
            )
        if dim > MAX_TRITON_DIM:
            raise ShapeError(
                f"backend='triton' takes D <= {MAX_TRITON_DIM}, got D = {dim}; use backend='torch'"
            )
    return backend


def grouped_info_nce(
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
    backend: str = "auto",
) -> torch.Tensor:
    """Multi-positive InfoNCE over id groups without materialising the N×M logits.

    With s_ij = q_i·k_j / τ (raw dot products: l2-normalise q and k first when the objective says so)::

        valid(i, j) = not (exclude_self and j == i) and (k_groups[j] == q_groups[i] if groups given)
        P(i)        = { valid j : k_ids[j] == q_ids[i] }
        L_i         = logsumexp_{valid j} s_ij − (1/|P(i)|) Σ_{p ∈ P(i)} s_ip

    This is SupCon's L_out (Khosla et al. 2020, arXiv 2004.11362); with one positive per row it is
    InfoNCE / NT-Xent (van den Oord et al. 2018, arXiv 1807.03748; Chen et al. 2020, arXiv 2002.05709).
    Rows without a positive are skipped: loss 0 and no gradient, though they remain columns (negatives)
    of the other rows.

    Args:
        q: (N, D) queries, float16/bfloat16/float32 (float64 on the torch backends).
        k: (M, D) keys, same dtype and device as ``q``. For SimCLR-style losses pass the stacked views
            as both ``q`` and ``k`` (the same tensor object) with ``exclude_self=True``; passing the same
            id tensor (and group tensor) as well lets the kernel run one backward pass instead of two.
            A ``k`` that only shares ``q``'s memory (``q.detach()``, another view or leaf) is a separate
            input: it gets its own gradient, or none.
        q_ids: (N,) integer ids; ``k_ids``: (M,) integer ids. Positives are equal ids. The kernel
            compares them at their own width: pass int32 (both sides) when the ids fit, it needs fewer
            registers per tile than int64; int64 is never narrowed.
        temperature: τ > 0, a float or a one-element tensor; a tensor that requires grad receives
            dL/dτ (learnable temperature). A tensor's sign is not checked (that would sync the device).
        exclude_self: drop column j == i (same index) from row i's candidates: use it when q and k are
            the same stacked batch. Defined for N ≠ M as well (j == i < min(N, M)).
        k_requires_grad: False treats ``k`` as a constant (momentum-encoder keys): no dK is computed,
            even if ``k`` requires grad. Same as ``n_key_grad=0``.
        n_key_grad: only the first ``n_key_grad`` key rows get a gradient, the rest none, and the kernel
            never computes theirs. This is how a queue is passed (PMQ, MoCo): ``k = torch.cat([batch_keys,
            queue])``, ``k_ids = torch.cat([batch_ids, queue_ids])``, ``n_key_grad=len(batch_keys)``
            (queue ids of -1 or any id no query has make pure negatives). ``None`` (default) means all
            rows when ``k_requires_grad``. Relying on ``torch.cat`` of a detached queue instead would be
            correct too, but would compute a full M×D dK that ``cat`` then throws away.
        symmetric: CLIP form ½(L(q→k) + L(k→q)): the k→q direction uses k as queries against q with
            ids, groups and ``exclude_self`` swapped consistently. Needs ``n_key_grad`` None, 0 or M.
        reduction: ``"mean"`` over the rows that have a positive (0.0, not NaN, when none has; decided on
            the device), ``"sum"``, or ``"none"``: the (N,) per-row losses with 0 at skipped rows; with
            ``symmetric`` the (N + M,) vector ½·cat(q→k rows, k→q rows), whose sum is ``"sum"``.
        q_groups, k_groups: optional (N,) / (M,) integer tensors, given together: a column is a
            candidate of row i only if its group equals row i's (COMET's observation level: groups =
            sample index; TS2Vec-style instance contrast: groups = timestamp). No N×M mask is built.
            Lay rows out group by group with non-decreasing groups on both sides when you can: the
            Triton kernel then streams, for each block of rows, only the columns of that block's groups
            (and the dK pass only the matching query rows), O(Σ_g n_g²·D) instead of O(N·M·D); the CPU
            torch path does the same per chunk. Detected on the device, no keyword and no host sync;
            unsorted groups give the same result with a full scan.
        normalized: promise that every row of q and k has unit l2 norm (|q_i·k_j| ≤ 1). The kernel then
            uses the fixed max 1/τ instead of a running max while τ ≥ ``NORMALIZED_MIN_TAU`` (≈ 0.0229:
            2^(−2·log2(e)/τ) stays in fp32's normal range), and the running max below it (decided on
            the device, so a learnable τ may cross it). Only a speed hint: the result is the same when
            the promise holds, wrong (overflow) when it does not. Never assumed.
        backend: ``"auto"`` (Triton on CUDA for fp16/bf16/fp32 and D ≤ 1024, the chunked torch path
            otherwise), ``"triton"`` (CUDA, or CPU under ``TRITON_INTERPRET=1`` for tests), ``"torch"``
            (chunked, O(N·block) memory) or ``"naive"`` (dense, for tests).

    Returns:
        The loss in float32 (float64 for float64 inputs on the torch backends): a 0-d tensor for
        ``"mean"``/``"sum"``, per-row losses for ``"none"``.

    Raises:
        ShapeError: on tensors whose shapes, dtypes or devices do not fit (q, k, ids, groups, a
            temperature tensor, ``n_key_grad`` beyond M, D or a dtype the Triton backend does not take).
        ConfigError: on settings that do not fit (reduction, backend, a float temperature ≤ 0,
            contradicting flags). Each message gives the expected value, the value received and the fix.
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
    chosen = _resolve_backend(backend, q, c.dim)
    if chosen == "triton" and (c.n_rows == 0 or c.n_cols == 0):
        chosen = "torch"  # nothing to fuse; an empty launch grid is an error in Triton
    kwargs = dict(
        exclude_self=exclude_self,
        n_key_grad=c.n_key_grad,
        symmetric=symmetric,
        reduction=reduction,
        q_groups=q_groups,
        k_groups=k_groups,
        normalized=normalized,
    )
    if chosen == "torch":
        return chunked_grouped_info_nce(q, k, q_ids, k_ids, temperature, **kwargs)
    if chosen == "naive":
        return naive_grouped_info_nce(q, k, q_ids, k_ids, temperature, **kwargs)

    def as_index(x: torch.Tensor | None, other: torch.Tensor | None) -> torch.Tensor | None:
        # Ids are compared in the kernel at their own width: int32 (when both sides fit) costs half the
        # registers of int64 per compared tile; nothing is narrowed that the caller passed as int64.
        if x is None:
            return None
        wide = torch.int64 in (x.dtype, other.dtype)
        return x.to(torch.int64 if wide else torch.int32).contiguous()

    # Self-contrast (SimCLR, PCLR, SupCon, poly-window: one stacked batch as q and k, one id tensor):
    # the loss matrix is one, and so is the backward pass. Only when k IS q — one autograd input: equal
    # memory is not enough (z and z.detach() share it, but only z carries a gradient, and the one-pass
    # backward would hand k's gradient to q).
    self_contrast = (
        k is q
        and _same_values(q_ids, k_ids)
        and (q_groups is None or _same_values(q_groups, k_groups))
        and c.n_key_grad == c.n_cols
    )
    # Under CUDA autocast, fp32 inputs (F.normalize returns fp32) are cast to the autocast dtype so that
    # the products run on tensor cores; accumulation stays fp32, and the cast's backward returns fp32
    # gradients to the caller.
    run_dtype = _autocast_dtype(q)
    qc = _rows_contiguous(q.to(run_dtype))
    kc = qc if self_contrast else _rows_contiguous(k.to(run_dtype))
    qi = as_index(q_ids, k_ids)
    ki = qi if self_contrast else as_index(k_ids, q_ids)
    qg = as_index(q_groups, k_groups)
    kg = qg if self_contrast else as_index(k_groups, q_groups)
    loss, pcnt, loss_t, pcnt_t = _TritonGroupedInfoNCE.apply(
        qc,
        kc,
        c.temperature,
        qi,
        ki,
        qg,
        kg,
        bool(exclude_self),
        c.n_key_grad,
        bool(symmetric) and not self_contrast,
        bool(normalized),
        self_contrast,
    )
    if symmetric and self_contrast:  # k→q is q→k itself
        return combine_symmetric(loss, pcnt > 0, loss, pcnt > 0, reduction)
    if symmetric:
        return combine_symmetric(loss, pcnt > 0, loss_t, pcnt_t > 0, reduction)
    return reduce_rows(loss, pcnt > 0, reduction)


def _autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the Triton path computes ``x`` in: the autocast dtype for fp32 inputs inside a CUDA
    ``torch.autocast`` block (fp16 or bf16), else ``x.dtype``. CPU autocast is left alone (the
    interpreter runs fp32 only, and the CPU has no tensor cores to feed)."""
    if x.device.type != "cuda" or x.dtype != torch.float32 or not torch.is_autocast_enabled("cuda"):
        return x.dtype
    dtype = torch.get_autocast_dtype("cuda")
    return dtype if dtype in (torch.float16, torch.bfloat16) else x.dtype


def _same_values(a: torch.Tensor, b: torch.Tensor | None) -> bool:
    """True when integer tensors a and b hold the same values by construction (same object, or the same
    view of memory). For ids and groups only: they carry no gradient, so aliasing is all that matters."""
    if a is b:
        return True
    return (
        b is not None
        and a.device == b.device
        and a.dtype == b.dtype
        and a.shape == b.shape
        and a.stride() == b.stride()
        and a.data_ptr() == b.data_ptr()
    )


def cpc_ids(
    n_steps: int, batch_size: int, n_frames: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids of CPC's stacked prediction steps: ``(q_ids (K·B·T,), k_ids (B·T,))``.

    Key (b, t) — row b·T + t of ``z.reshape(B·T, D)`` — has id b·T + t. Query (k, b, t) — row
    (k·B + b)·T + t of ``predictions.reshape(K·B·T, D)``, predicting step k + 1 — has id b·T + t + k + 1,
    the id of its target z[b, t + k + 1], or -1 (no positive: skipped) when t + k + 1 ≥ T. Ids are int32
    (int64 only if B·T does not fit).
    """
    for name, value in (("n_steps", n_steps), ("batch_size", batch_size), ("n_frames", n_frames)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive int, got {value!r}")
    # int32 whenever B·T fits: the kernel then compares ids at half the register cost of int64.
    dtype = torch.int32 if batch_size * n_frames + n_steps < 2**31 else torch.int64
    step = torch.arange(1, n_steps + 1, device=device, dtype=dtype)[:, None, None]
    t = torch.arange(n_frames, device=device, dtype=dtype)[None, None, :]
    b = torch.arange(batch_size, device=device, dtype=dtype)[None, :, None]
    target = t + step
    q_ids = torch.where(target < n_frames, b * n_frames + target, -1)
    return q_ids.reshape(-1), torch.arange(batch_size * n_frames, device=device, dtype=dtype)


def cpc_info_nce(
    predictions: torch.Tensor,
    z: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    *,
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """CPC's InfoNCE for all K prediction steps in one launch (van den Oord et al. 2018, arXiv 1807.03748).

    Prediction p_{k,b,t} = W_k c_{b,t} (``predictions[k - 1, b, t]``, k = 1..K) scores every frame of the
    batch: its positive is z[b, t + k], every other (b', t') is a negative (Mehari & Strodthoff 2022's ECG
    setup), and ``L = logsumexp_{b',t'} p·z_{b',t'}/τ − p·z_{b,t+k}/τ`` with raw (unnormalised) dot
    products, so the kernel keeps a running max. Predictions whose target lies past the end
    (t + k ≥ T) are dropped: they have no positive and are skipped (ids from :func:`cpc_ids`).

    Args:
        predictions: (K, B, T, D) predictions of steps 1..K from every context frame.
        z: (B, T, D) encoder frames (the keys; they get a gradient).
        temperature: τ (default 1.0, as in CPC), float or one-element tensor (learnable if it requires
            grad).
        reduction: ``"mean"`` over the K·B·T − B·Σ_k min(k, T) kept predictions (each step weighted by its
            count), ``"sum"``, or ``"none"``: (K, B, T) losses with 0 at dropped predictions (average
            them per step if you want the per-step mean).
        backend: as in :func:`grouped_info_nce`.
    """
    if not isinstance(predictions, torch.Tensor) or predictions.ndim != 4:
        raise ShapeError(
            "predictions must be a (K, B, T, D) tensor (K prediction steps), got "
            f"{tuple(predictions.shape) if isinstance(predictions, torch.Tensor) else type(predictions)}"
        )
    if not isinstance(z, torch.Tensor) or z.ndim != 3 or tuple(z.shape) != tuple(predictions.shape[1:]):
        raise ShapeError(
            f"z must be (B, T, D) = {tuple(predictions.shape[1:])} to match predictions, got "
            f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z)}"
        )
    n_steps, batch, n_frames, dim = predictions.shape
    q_ids, k_ids = cpc_ids(n_steps, batch, n_frames, device=z.device)
    loss = grouped_info_nce(
        predictions.reshape(-1, dim),
        z.reshape(-1, dim),
        q_ids,
        k_ids,
        temperature,
        exclude_self=False,
        reduction=reduction,
        backend=backend,
    )
    return loss.reshape(n_steps, batch, n_frames) if reduction == "none" else loss
