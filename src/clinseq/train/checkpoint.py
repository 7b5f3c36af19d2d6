"""Atomic checkpoints: one folder per step, written under a temporary name and renamed into place.

Layout of a run folder::

    RUN_DIR/checkpoints/step-00000500/
        state.pt          method (encoder, heads, objective buffers such as queues, momentum encoder),
                          optimizer, scheduler, grad scaler, step, epoch, batches done in the epoch,
                          sampler state, the resolved config
        rng-rank0.pt      python / numpy / torch (CPU and CUDA) RNG states of rank 0
        rng-rank1.pt      … one per rank

A checkpoint folder exists under its final name only once every file in it is complete: rank 0 writes
into ``step-00000500.tmp``, every rank adds its RNG file, and rank 0 renames the folder (an atomic
``rename`` on POSIX file systems). A run killed while saving leaves only a ``.tmp`` folder, which is
ignored and removed by the next save. Ranks must share the file system of the run folder.

Files are read with ``torch.load(weights_only=True)``: only tensors and plain Python values are stored
(numpy's RNG state is converted to a tensor), so loading a checkpoint runs no pickled code.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clinseq.errors import ConfigError
from clinseq.train.distributed import DistContext, barrier

__all__ = [
    "CHECKPOINTS_DIR",
    "capture_rng",
    "checkpoint_dirs",
    "latest_checkpoint",
    "load_checkpoint",
    "restore_rng",
    "save_checkpoint",
]

CHECKPOINTS_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{8})$")


def capture_rng() -> dict[str, Any]:
    """The RNG states of python's ``random``, numpy's global generator and torch (CPU and CUDA)."""
    # The legacy global state is what third-party code (and np.random.* calls) draw from.
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng` captured."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Completed checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / "state.pt").is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The most recent completed checkpoint folder of a run, or None."""
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    state: Mapping[str, Any],
    ctx: DistContext | None = None,
    keep: int = 2,
) -> Path:
    """Write ``state`` (rank 0's) and every rank's RNG state as checkpoint ``step``, atomically.

    Must be called by every rank (it synchronises them). Keeps the ``keep`` most recent checkpoints.
    Returns the checkpoint folder.
    """
    ctx = ctx or DistContext()
    root = Path(run_dir) / CHECKPOINTS_DIR
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp"
    if ctx.is_main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():  # left by a run killed while saving
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier(ctx)
    torch.save(capture_rng(), tmp / f"rng-rank{ctx.rank}.pt")
    barrier(ctx)
    if ctx.is_main:
        torch.save(dict(state), tmp / "state.pt")
        if final.exists():  # the same step saved again (e.g. the final step after a resume)
            shutil.rmtree(final)
        tmp.rename(final)
        for old in checkpoint_dirs(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob("step-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    barrier(ctx)
    return final


def load_checkpoint(path: str | Path, ctx: DistContext | None = None) -> tuple[dict[str, Any], dict | None]:
    """``(state, rng)`` of a checkpoint folder (or of a run folder: its latest checkpoint).

    ``rng`` is this rank's RNG state, or None when the checkpoint was written by fewer ranks (a run
    resumed on more processes than it was saved with continues, but not bit-exactly).
    """
    ctx = ctx or DistContext()
    path = Path(path)
    if not (path / "state.pt").is_file():
        latest = latest_checkpoint(path)
        if latest is None:
            raise ConfigError(
                f"{path}: no completed checkpoint (expected "
                f"{path}/{CHECKPOINTS_DIR}/step-NNNNNNNN/state.pt); pass the run folder of a run that "
                "saved at least one checkpoint"
            )
        path = latest
    state = _load(path / "state.pt")
    rng_file = path / f"rng-rank{ctx.rank}.pt"
    rng = _load(rng_file) if rng_file.is_file() else None
    return state, rng


def _load(file: Path) -> Any:
    """``torch.load`` of a checkpoint file; a truncated or corrupt one is a ConfigError naming it and
    the way out (the previous checkpoint, when the run kept one)."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        folder = file.parent
        older = [d for d in checkpoint_dirs(folder.parent.parent) if d.name < folder.name]
        way_out = (
            f"delete {folder} to resume from the previous checkpoint {older[-1].name}"
            if older
            else f"it is the run's only checkpoint: delete {folder.parent.parent} and start the run again"
        )
        raise ConfigError(
            f"{file}: unreadable checkpoint file, truncated or corrupt ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); {way_out}"
        ) from exc
