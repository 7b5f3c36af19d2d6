"""Where a run's time went: phase timers and the end-of-run summary (``RUN/summary.json`` + a table).

Phases (wall-clock seconds on the host, rank 0):

- ``data_wait``: blocked waiting for the next batch (the loader could not keep up);
- ``step``: inside the training step (forward, backward, optimizer); on CUDA the host returns before
  the device finishes, so device time that the host did not wait for shows up in ``log`` (the one
  synchronisation per interval) or in the next ``data_wait``;
- ``log``: metric averaging over steps/ranks (the host synchronisation) and writing to the loggers;
- ``checkpoint``: writing checkpoints; ``eval``: the evaluation after training; ``export``: the encoder
  export.

Throughput: samples (batch items of this rank times the world size) and optimizer steps per second of
training wall time. Peak memory: the host's resident set of this process (``ru_maxrss``) and of its
finished children (loader workers, whose RSS is counted when they exit), and on CUDA the peak of memory
allocated by tensors (``torch.cuda.max_memory_allocated``) and reserved by the caching allocator.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["PhaseTimer", "RunSummary", "peak_host_memory_mib"]

SUMMARY_FILE = "summary.json"


class PhaseTimer:
    """Accumulated wall-clock seconds per named phase: ``with timer("step"): ...`` or ``timer.add``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - t)

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds
        self.counts[phase] += 1


def peak_host_memory_mib() -> dict[str, float]:
    """Peak resident set size (MiB) of this process and of its finished children (``getrusage``)."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20  # KiB on Linux, bytes on macOS
    return {
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale,
    }


@dataclass
class RunSummary:
    """The end-of-run summary (see the module docstring). Seconds, MiB, items per second."""

    steps: int
    samples: int
    train_s: float
    phases_s: dict[str, float]
    samples_per_s: float
    steps_per_s: float
    peak_host_mib: dict[str, float]
    peak_device_mib: dict[str, float] | None = None
    device: str = "cpu"
    world_size: int = 1
    extra_s: dict[str, float] = field(default_factory=dict)

    @classmethod
    def collect(
        cls, timer: PhaseTimer, steps: int, samples: int, train_s: float, device: torch.device,
        world_size: int = 1,
    ) -> RunSummary:  # fmt: skip
        """The summary of ``steps`` steps over ``samples`` items (all ranks) in ``train_s`` seconds."""
        device_mem = None
        if device.type == "cuda":
            device_mem = {
                "allocated": torch.cuda.max_memory_allocated(device) / 2**20,
                "reserved": torch.cuda.max_memory_reserved(device) / 2**20,
            }
        return cls(
            steps=steps,
            samples=samples,
            train_s=train_s,
            phases_s=dict(timer.seconds),
            samples_per_s=samples / train_s if train_s > 0 else float("nan"),
            steps_per_s=steps / train_s if train_s > 0 else float("nan"),
            peak_host_mib=peak_host_memory_mib(),
            peak_device_mib=device_mem,
            device=str(device),
            world_size=world_size,
        )

    def add_phase(self, phase: str, seconds: float) -> None:
        """A phase after training (``eval``, ``export``)."""
        self.extra_s[phase] = self.extra_s.get(phase, 0.0) + seconds
        self.peak_host_mib = peak_host_memory_mib()

    def rows(self) -> list[dict[str, Any]]:
        """The time table: phase, seconds, share of the training wall time (phases after training: none)."""
        rows = []
        inside = sum(self.phases_s.values())
        total = max(self.train_s, 1e-9)
        for phase, s in self.phases_s.items():
            rows.append({"phase": phase, "seconds": round(s, 3), "share": round(s / total, 3)})
        other = self.train_s - inside
        rows.append({"phase": "other (loop)", "seconds": round(other, 3), "share": round(other / total, 3)})
        for phase, s in self.extra_s.items():
            rows.append({"phase": phase, "seconds": round(s, 3), "share": None})
        return rows

    def format(self) -> str:
        """The printed summary."""
        lines = [
            f"run summary: {self.steps} steps, {self.samples} samples in {self.train_s:.1f} s of training "
            f"on {self.device}" + (f" x {self.world_size} processes" if self.world_size > 1 else ""),
            f"  throughput  {self.samples_per_s:.1f} samples/s, {self.steps_per_s:.2f} steps/s",
        ]
        for row in self.rows():
            share = f"{100 * row['share']:5.1f} %" if row["share"] is not None else "  after"
            lines.append(f"  {row['phase']:<14}{row['seconds']:10.2f} s  {share}")
        host = self.peak_host_mib
        lines.append(
            f"  peak host memory  {host['self']:.0f} MiB (this process), {host['children']:.0f} MiB "
            "(largest finished child: loader workers)"
        )
        if self.peak_device_mib is not None:
            dev = self.peak_device_mib
            lines.append(
                f"  peak device memory  {dev['allocated']:.0f} MiB allocated, "
                f"{dev['reserved']:.0f} MiB reserved"
            )
        return "\n".join(lines)

    def save(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / SUMMARY_FILE
        path.write_text(json.dumps({**asdict(self), "table": self.rows()}, indent=1))
        return path
