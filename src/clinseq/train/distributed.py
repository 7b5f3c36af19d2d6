"""DDP under ``torchrun``: process-group setup from the environment, rank helpers, metric reduction.

``torchrun --nproc_per_node N recipes/pretrain.py CONFIG`` (or ``clinseq pretrain``) sets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them
and opens the process group: NCCL when the run uses CUDA, gloo on the CPU. Without those variables the
run is a single process (world size 1) and nothing is initialised.

Negatives across ranks: the objectives all-gather keys *with their gradient*
(``clinseq.objectives.distributed.gather_with_grad``), so that DDP's gradient average over ranks equals
one process on the global batch (tested with 2 gloo processes against one process).

BatchNorm: on CUDA the recipe converts BatchNorm layers to ``SyncBatchNorm`` (``model.sync_batchnorm``),
so that batch statistics are those of the global batch. torch's SyncBatchNorm has no CPU (gloo)
implementation: on the CPU each rank normalises with its own batch's statistics, which makes a BatchNorm
encoder differ slightly from one process on the global batch — use a BatchNorm-free encoder
(``patch_transformer``, ``cpc`` with ``norm: ln``, heads with ``projection_norm: ln``) where exact CPU
equivalence matters. Running statistics are kept per rank and checkpointed from rank 0; they only
affect evaluation-mode forwards.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from clinseq.errors import ConfigError

__all__ = ["DistContext", "all_reduce_mean", "barrier", "cleanup_distributed", "init_distributed"]


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: ``rank`` of ``world_size``, its device, whether DDP is on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files, logs and shows progress."""
        return self.rank == 0


def _resolve_device(device: str, local_rank: int) -> torch.device:
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device='cuda' but torch sees no CUDA device; use run.device=cpu or auto")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Read torchrun's environment, pick the device and open the process group when world size > 1.

    Each rank uses ``cuda:LOCAL_RANK`` on GPUs. Backend: NCCL for CUDA, gloo for CPU. Calling it again
    when a group is already open (e.g. a test that opened one) reuses that group.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = _resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistContext(device=dev)
    created = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(seconds=timeout_s),
            **({"device_id": dev} if dev.type == "cuda" else {}),
        )
        created = True
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=dev,
        initialized_here=created,
    )


def cleanup_distributed(ctx: DistContext) -> None:
    """Close the process group if :func:`init_distributed` opened it."""
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (a no-op in a single process)."""
    if ctx.distributed:
        dist.barrier()


def all_reduce_mean(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of a tensor over ranks (returns the input unchanged in a single process)."""
    if not ctx.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / ctx.world_size
