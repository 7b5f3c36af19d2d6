"""DDP: 2 gloo processes with keys gathered with gradient == one process on the global batch.

Each rank contrasts its local queries against the keys of both ranks (``gather_with_grad``), and the
parameter gradients are averaged over the ranks as DDP does. Loss and gradients must equal a single
process computing the objective on the whole batch (design: open_clip's gather_with_grad + local loss).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from clinseq.objectives.distributed import gather_no_grad, gather_with_grad, is_distributed

WORKER = Path(__file__).with_name("ddp_worker.py")


def _load_worker():
    spec = importlib.util.spec_from_file_location("clinseq_objectives_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gather_is_identity_without_a_process_group() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert not is_distributed()
    assert gather_with_grad(x, local_first=True) is x
    assert gather_no_grad(x) is x


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_two_gloo_ranks_match_one_process(tmp_path: Path) -> None:
    worker = _load_worker()
    reference = worker.run_cases(0, 1)  # single process, whole batch
    port = str(_free_port())
    # Rank 1 in a subprocess, rank 0 here (one interpreter start less); the timeout turns a crashed peer
    # into an error instead of a hang.
    peer = subprocess.Popen(
        [sys.executable, str(WORKER), "1", "2", port, str(tmp_path / "rank1.pt")],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=2, timeout=timedelta(seconds=60)
        )
        try:
            assert is_distributed()
            rank0 = worker.run_cases(0, 2)
        finally:
            dist.destroy_process_group()
    finally:
        out, _ = peer.communicate(timeout=120)
    assert peer.returncode == 0, out.decode()[-3000:]
    ranks = [rank0, torch.load(tmp_path / "rank1.pt", weights_only=False)]
    assert (
        set(ranks[1])
        == set(reference)
        == {"simclr", "pclr", "polywindow_loo", "clocs", "clip", "comet", "cpc", "pmq"}
    )
    for case, (loss, grads, extra) in reference.items():
        for r in range(2):
            got_loss, got_grads, got_extra = ranks[r][case]
            torch.testing.assert_close(got_loss, loss, rtol=0, atol=1e-10, msg=f"{case} loss (rank {r})")
            for g_got, g_ref in zip(got_grads, grads, strict=True):
                torch.testing.assert_close(g_got, g_ref, rtol=0, atol=1e-10, msg=f"{case} grad (rank {r})")
            if extra is not None:  # PMQ: every rank holds the same queue as the single process, in order
                for a, b in zip(got_extra, extra, strict=True):
                    torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=f"{case} queue (rank {r})")
