"""Timing and peak memory on the CPU and on CUDA, the same code for both.

- Time: on CUDA, ``torch.cuda.Event`` pairs around the measured call (the device's own clock; the host
  waits once, after the call); on the CPU, ``time.perf_counter``. The median of ``repeats`` calls after
  ``warmup`` calls is reported.
- Peak memory beyond what was allocated before the call: on CUDA ``torch.cuda.max_memory_allocated``
  after ``reset_peak_memory_stats`` (tensors only, not the allocator's cache); on the CPU the peak
  resident set size of the process (``VmHWM`` of ``/proc/self/status``, reset through
  ``/proc/self/clear_refs`` just before) minus the resident size then. glibc keeps freed heap pages
  unless told otherwise, so :func:`release_freed_memory` first sets its mmap threshold to 128 KiB (large
  tensors are then mapped and unmapped one by one and the resident size follows the live tensors).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "Measurement",
    "PeakMemory",
    "free_memory_mib",
    "measure",
    "release_freed_memory",
    "synchronize",
]

_MALLOC_SET = False


def release_freed_memory() -> bool:
    """Make glibc return freed blocks ≥ 128 KiB to the OS at once (for CPU peak-RSS figures).

    Returns whether it could (False off glibc). Idempotent; affects this process only.
    """
    global _MALLOC_SET
    if _MALLOC_SET:
        return True
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        # mallopt(M_MMAP_THRESHOLD = -3, ...) and (M_TRIM_THRESHOLD = -1, ...); fixed values also stop
        # glibc from raising the threshold after a large free.
        ok = libc.mallopt(-3, 128 * 1024) == 1 and libc.mallopt(-1, 128 * 1024) == 1
    except (OSError, AttributeError):
        return False
    _MALLOC_SET = ok
    return ok


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def free_memory_mib(device: torch.device | str) -> float:
    """Memory still available on the device: CUDA free memory, or the host's MemAvailable."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 2**20
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) for line in f}
        return info["MemAvailable"] / 1024
    except (OSError, KeyError):  # pragma: no cover - not Linux
        return float("inf")


def _status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return None


class PeakMemory:
    """Context manager: ``peak_mib`` = the peak memory of the block beyond what was in use at its start
    (None where it cannot be measured: a CPU without ``/proc``)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.peak_mib: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset VmHWM (the peak RSS) to the current RSS
                self._base = _status_mib("VmRSS")
            except OSError:  # pragma: no cover - not Linux
                self._base = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._base is not None:
            peak = _status_mib("VmHWM")
            self.peak_mib = None if peak is None else max(peak - self._base, 0.0)


@dataclass
class Measurement:
    """Median seconds of ``repeats`` timed calls, every call's seconds, the first (warm-up) call's wall
    seconds and the peak memory of one timed call (MiB beyond the memory in use before it)."""

    seconds: float
    times_s: list[float]
    first_call_s: float
    peak_mib: float | None
    result: Any = None


def _time_once(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, result
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def measure(
    fn: Callable[[], Any],
    device: torch.device | str,
    *,
    warmup: int = 1,
    repeats: int = 3,
    memory: bool = True,
    budget_s: float | None = None,
) -> Measurement:
    """Time ``fn()`` (see the module docstring); the first timed call also records the peak memory.

    ``budget_s``: stop repeating once the calls so far took longer than this (at least one timed call).
    Exceptions (e.g. ``torch.OutOfMemoryError``) propagate to the caller.
    """
    device = torch.device(device)
    t0 = time.perf_counter()
    result = None
    for _ in range(max(warmup, 0)):
        result = fn()
    synchronize(device)
    first = time.perf_counter() - t0
    times: list[float] = []
    peak = None
    for i in range(max(repeats, 1)):
        if i == 0 and memory:
            with PeakMemory(device) as mem:
                seconds, result = _time_once(fn, device)
            peak = mem.peak_mib
        else:
            seconds, result = _time_once(fn, device)
        times.append(seconds)
        if budget_s is not None and sum(times) > budget_s:
            break
    return Measurement(statistics.median(times), times, first, peak, result)
