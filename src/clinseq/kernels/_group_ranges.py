"""Per-tile column ranges of grouped InfoNCE: where a block of rows finds all of its candidates.

With groups, row i's candidates are the columns j with ``col_groups[j] == row_groups[i]``. When
``col_groups`` is sorted (non-decreasing), each group's columns form one contiguous run, so a block of
rows whose groups lie in [g_min, g_max] finds every candidate in

    [lo, hi) = [first column of group ≥ g_min, end of the last column of group ≤ g_max)

and the columns outside it are invalid for every row of the block. Streaming only [lo, hi) instead of
all M columns gives exactly the full scan's result (the group mask still applies inside the range) and
cuts the work from O(N·M·D) to O(Σ_tiles rows·(hi − lo)·D): for rows laid out group by group on both
sides (COMET's observation and sample levels) that is O(Σ_g rows_g²·D).

Only the columns need to be sorted: a row block's range comes from its group minimum and maximum, so
unsorted rows stay exact (and tight when each block's groups are close). Sortedness is decided on the
device — no host sync — and when the columns are not sorted every range is [0, M): the full scan.
"""

from __future__ import annotations

import torch

__all__ = ["tile_column_ranges"]


def tile_column_ranges(
    row_groups: torch.Tensor, col_groups: torch.Tensor, block_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Column range [lo, hi) of each block of ``block_rows`` rows, as two int32 tensors (n_blocks,).

    Block t holds rows [t·block_rows, (t + 1)·block_rows) ∩ [0, N). Every column j with
    ``col_groups[j] == row_groups[i]`` for a row i of the block lies in [lo[t], hi[t]) when ``col_groups``
    is non-decreasing; otherwise (decided on the device, no sync) lo = 0 and hi = M. A block whose groups
    appear in no column gets lo == hi (nothing to stream). Cost: O(N + M + n_blocks·log M) on the device.

    Args:
        row_groups: (N,) integer groups of the rows (the program's own side), N ≥ 1.
        col_groups: (M,) integer groups of the columns (the streamed side), same device, M < 2³¹.
        block_rows: rows per block (the kernel's tile height, or the reference's chunk).
    """
    n_rows, n_cols = row_groups.shape[0], col_groups.shape[0]
    if row_groups.dtype != col_groups.dtype:  # searchsorted wants one dtype; int64 holds both
        row_groups, col_groups = row_groups.long(), col_groups.long()
    n_blocks = -(-n_rows // block_rows)
    # The last block is padded with its last row's group (a repeat changes neither min nor max).
    index = torch.arange(n_blocks * block_rows, device=row_groups.device).clamp_max_(n_rows - 1)
    g_min, g_max = torch.aminmax(row_groups[index].view(n_blocks, block_rows), dim=1)
    lo = torch.searchsorted(col_groups, g_min, side="left", out_int32=True)
    hi = torch.searchsorted(col_groups, g_max, side="right", out_int32=True)
    # On unsorted columns searchsorted's answer is meaningless (but in [0, M]): replace it by the full range.
    is_sorted = (col_groups[1:] >= col_groups[:-1]).all()
    lo = torch.where(is_sorted, lo, 0)
    hi = torch.where(is_sorted, hi, n_cols)
    return lo, hi
