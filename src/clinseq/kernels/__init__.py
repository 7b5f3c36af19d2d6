"""Kernels: grouped InfoNCE, fused in Triton on CUDA, with chunked and naive torch references.

- :func:`grouped_info_nce` — the one similarity/softmax primitive of every contrastive objective
  (SimCLR, PCLR, SupCon, poly-window, COMET, PMQ/MoCo queues, CLIP-style symmetric losses).
- :func:`cpc_info_nce` / :func:`cpc_ids` — CPC's K prediction steps in one launch.
- :func:`chunked_grouped_info_nce` (O(N·block) memory, the CPU path) and :func:`naive_grouped_info_nce`
  (dense, the tests' oracle) — torch references with the same arguments.

This layer imports nothing of clinseq but :mod:`clinseq.errors`; Triton is optional (CPU installs run the
chunked torch path).
"""

from clinseq.kernels.info_nce import (
    HAS_TRITON,
    TileConfig,
    cpc_ids,
    cpc_info_nce,
    grouped_info_nce,
    tile_config,
)
from clinseq.kernels.reference import chunked_grouped_info_nce, naive_grouped_info_nce

__all__ = [
    "HAS_TRITON",
    "TileConfig",
    "chunked_grouped_info_nce",
    "cpc_ids",
    "cpc_info_nce",
    "grouped_info_nce",
    "naive_grouped_info_nce",
    "tile_config",
]
