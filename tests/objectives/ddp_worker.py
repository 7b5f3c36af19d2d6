"""Worker of test_distributed.py: one gloo rank computing every case's loss and averaged gradients.

Run as ``python ddp_worker.py RANK WORLD_SIZE PORT OUT_FILE``; the test also imports :func:`run_cases`
and runs it in-process with world_size 1 on the whole batch (the single-process reference).
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn

from clinseq.objectives import CLOCS, COMET, CPC, PCLR, PMQ, CrossModalCLIP, PolyWindow, SimCLR

B_GLOBAL, D_IN, D = 8, 5, 4


def _data(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _net(seed: int, d_in: int = D_IN, d_out: int = D) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(d_in, d_out).double()


def _shard(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    n = x.shape[0] // world
    return x[rank * n : (rank + 1) * n]


def _grads(net: nn.Module, world: int) -> list[torch.Tensor]:
    # What DDP does after backward: average the parameter gradients over the ranks.
    grads = []
    for p in net.parameters():
        g = p.grad.clone()
        if world > 1:
            dist.all_reduce(g)
            g /= world
        grads.append(g)
    return grads


def run_cases(rank: int, world: int) -> dict[str, object]:
    """{case: (loss averaged over ranks, averaged gradients)} for this rank's shard of the global batch."""
    results: dict[str, object] = {}
    pid = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])  # every rank's shard keeps whole patients
    trial = torch.tensor([0, 0, 1, 2, 3, 3, 4, 5])
    x1, x2 = _data(1, B_GLOBAL, D_IN), _data(2, B_GLOBAL, D_IN)
    s1, s2, spid, strial = (_shard(t, rank, world) for t in (x1, x2, pid, trial))

    def record(name: str, loss: torch.Tensor, net: nn.Module, extra: object = None) -> None:
        loss.backward()
        total = loss.detach().clone()
        if world > 1:
            dist.all_reduce(total)
            total /= world
        results[name] = (total, _grads(net, world), extra)

    for name, objective, inputs in (
        ("simclr", SimCLR(0.2), lambda f: (f(s1), f(s2))),
        ("pclr", PCLR(0.2), lambda f: (f(torch.cat([s1, s2])), torch.cat([spid, spid]))),
        (
            "polywindow_loo",
            PolyWindow(0.2, "loo_mean"),
            lambda f: (f(torch.cat([s1, s2])), torch.cat([spid, spid])),
        ),
        ("clocs", CLOCS("cmsc", 0.2), lambda f: (torch.stack([f(s1), f(s2)], dim=1), spid)),
        ("clip", CrossModalCLIP(0.1, learnable_temperature=False), lambda f: (f(s1), f(s2))),
    ):
        net = _net(3)
        record(name, objective(*inputs(net)).loss, net)

    # COMET: observation-level sequences from a per-timestamp linear map of (B, T, D_IN) inputs.
    seq1, seq2 = _data(4, B_GLOBAL, 6, D_IN), _data(5, B_GLOBAL, 6, D_IN)
    net = _net(6)
    out = COMET((0.25,) * 4)(net(_shard(seq1, rank, world)), net(_shard(seq2, rank, world)), strial, spid)
    record("comet", out.loss, net)

    # CPC: z and c from two linear maps of the same sequence; predictors are parameters too.
    enc_z, enc_c = _net(7), _net(8, D_IN, 3)
    cpc = CPC(context_dim=3, z_dim=D, n_steps=2).double()
    torch.manual_seed(9)
    nn.init.normal_(cpc.predictors.weight)
    seq = _shard(seq1, rank, world)
    loss = cpc(enc_z(seq), enc_c(seq)).loss
    model = nn.ModuleList([enc_z, enc_c, cpc])
    record("cpc", loss, model)

    # PMQ: two steps, so that the second uses the queue filled (identically on every rank) by the first.
    net = _net(10)
    pmq = PMQ(dim=D, queue_size=12, temperature=0.2).double()
    pmq(net(s1), net(s2), spid)
    net.zero_grad()
    out = pmq(net(s2), net(s1), spid)
    record("pmq", out.loss, net, pmq.queue.ordered())
    return results


def _main() -> None:
    rank, world, port, out_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results = run_cases(rank, world)
    finally:
        dist.destroy_process_group()
    torch.save(results, out_file)


if __name__ == "__main__":
    _main()
