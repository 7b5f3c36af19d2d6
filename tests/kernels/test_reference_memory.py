"""The chunked torch reference keeps O(chunk_rows·M) memory, the naive one O(N·M).

Each side runs forward + backward in a fresh process whose peak RSS (VmHWM, reset just before the step)
is compared. The acceptance figure (N = 16,384, D = 128: chunked ≤ 10 % of naive) takes minutes on two
CPU cores and is measured by ``benchmarks/bench_info_nce.py --device cpu``; here the same property at
N = 4,096 with 128-row chunks, which takes seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

_CHILD = r"""
import sys, torch
import torch.nn.functional as F
from clinseq.kernels import chunked_grouped_info_nce, naive_grouped_info_nce

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])

torch.set_num_threads(1)
n, d = 4096, 128
z = F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(0)), dim=1).requires_grad_()
ids = torch.arange(n) // 2

def step(z, ids):
    if sys.argv[1] == "chunked":
        loss = chunked_grouped_info_nce(z, z, ids, ids, 0.1, chunk_rows=128)
    else:
        loss = naive_grouped_info_nce(z, z, ids, ids, 0.1)
    loss.backward()
    return float(loss.detach())

# A tiny step first: the code pages of every kernel used are faulted in (RSS) before the measurement.
step(z[:256].detach().clone().requires_grad_(), ids[:256])
open("/proc/self/clear_refs", "w").write("5")
base = rss("VmRSS")
loss = step(z, ids)
print(rss("VmHWM") - base, loss)
"""


def _peak_kib(method: str) -> tuple[int, float]:
    # A fixed glibc mmap threshold returns freed blocks ≥ 128 KiB to the OS at once: RSS then follows
    # what is allocated, not what the heap kept from the warm-up step.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, method], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr
    peak, loss = out.stdout.split()
    return int(peak), float(loss)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset VmHWM")
def test_chunked_peak_memory_is_a_small_fraction_of_naive() -> None:
    chunked, loss_c = _peak_kib("chunked")
    naive, loss_n = _peak_kib("naive")
    assert loss_c == pytest.approx(loss_n, rel=1e-5)
    # The naive step holds several N×N float32 tensors (64 MiB each): at least 3 of them at its peak.
    assert naive >= 3 * 64 * 1024, naive
    assert chunked <= 0.10 * naive, (chunked, naive)


def test_chunks_follow_a_byte_budget() -> None:
    """Default chunks hold CHUNK_BYTES of logits and their temporaries (3 values + 2 mask bytes each) in
    the compute dtype, whatever M: float64 chunks have fewer rows than float32 ones at the same M."""
    import torch

    from clinseq.kernels import reference as ref

    rows = {}
    for dtype, per_logit in ((torch.float32, 14), (torch.float64, 26)):
        elements = ref.chunk_elements(dtype)
        assert elements * per_logit <= ref.CHUNK_BYTES < (elements + 1) * per_logit
        for n_cols in (1000, 1 << 20):
            chunks = ref._chunks(None, None, 4096, n_cols, None, elements)
            rows[dtype, n_cols] = chunks[0][1] - chunks[0][0]
            assert rows[dtype, n_cols] * n_cols * per_logit <= ref.CHUNK_BYTES
            assert (rows[dtype, n_cols] + 1) * n_cols * per_logit > ref.CHUNK_BYTES or rows[
                dtype, n_cols
            ] == 4096
    assert rows[torch.float64, 1 << 20] < rows[torch.float32, 1 << 20]
