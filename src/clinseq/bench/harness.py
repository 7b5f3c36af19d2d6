"""The benchmark harness: timing, peak memory, a child-process runner, result files, tables and plots.

Every suite (``clinseq.bench.<stem>``) measures with these pieces and nothing else:

- **Time** (:func:`measure`): on CUDA ``torch.cuda.Event`` pairs around the call (the device's clock),
  on the CPU ``time.perf_counter``; the median of ``repeats`` calls after ``warmup`` calls.
- **Peak memory** (:class:`PeakMemory`) beyond what was in use at the start of a block: on CUDA
  ``max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors, not the allocator's cache); on the
  CPU the process's peak resident set (``VmHWM`` of ``/proc/self/status``, reset through
  ``/proc/self/clear_refs``) minus its resident set then. glibc keeps freed heap pages unless told
  otherwise, so :func:`release_freed_memory` (or :data:`MALLOC_ENV` for a child) fixes its mmap
  threshold at 128 KiB: large tensors are then mapped and unmapped one by one.
- **A fresh process** (:func:`run_in_child`): ``python -m clinseq.bench.harness module:function JSON``
  calls ``function(**kwargs)`` and prints its JSON result on one marker line; the parent echoes the
  rest of the output live. Suites pin CPUs, set threads and allocator options and read their own peak
  memory, none of which may leak into the next measurement.
- **Results** (:func:`write_results`): one JSON file per suite, ``{"environment": {machine, versions,
  command, date}, "quick": ..., **payload}``, where every number of the payload has a unit in
  ``payload["units"]`` under its own key or the nearest enclosing key (:func:`missing_units`). Files go to
  :func:`results_dir`: ``$CLINSEQ_BENCH_RESULTS``, else ``benchmarks/results/`` of the checkout (or of
  the working directory), ``quick/`` below it for quick runs.
- **Tables and figures**: :func:`print_table`; :func:`save_panels` (log-log lines) and :func:`save_bars`
  (horizontal bars) write PNG with matplotlib when it is installed (``pip install 'clinseq[plot]'``).
- **Scripts**: :func:`script` turns a suite's ``run`` into the command line of ``benchmarks/bench_*.py``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import inspect
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import import_module
from pathlib import Path
from typing import Any

from clinseq.errors import ClinseqError, ConfigError
from clinseq.utils import data_root

#: Redirects every result file (CI and the tests point it at a temporary folder).
RESULTS_ENV = "CLINSEQ_BENCH_RESULTS"
#: ``clinseq bench`` hands its own command line to each suite's process through this variable.
COMMAND_ENV = "CLINSEQ_BENCH_COMMAND"
#: The line a child prints last: ``clinseq-bench-result: <json>``.
MARKER = "clinseq-bench-result: "
#: glibc returns freed blocks ≥ 128 KiB at once: a child's peak RSS follows its live tensors.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
_LIBRARIES = ("pyarrow", "polars", "wfdb", "mne", "triton", "matplotlib")


# -- time and memory -------------------------------------------------------------------------------------
def release_freed_memory() -> bool:
    """Make glibc return freed blocks ≥ 128 KiB to the OS at once, in this process (False off glibc)."""
    name = ctypes.util.find_library("c")
    try:  # mallopt(M_MMAP_THRESHOLD = -3, ...), mallopt(M_TRIM_THRESHOLD = -1, ...); fixed values
        libc = ctypes.CDLL(name) if name else None
        return bool(libc) and libc.mallopt(-3, 128 * 1024) == 1 and libc.mallopt(-1, 128 * 1024) == 1
    except (OSError, AttributeError):
        return False


def synchronize(device: Any) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def free_memory_mib(device: Any) -> float:
    """Memory still available on the device: CUDA free memory, or the host's MemAvailable."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[0] / 2**20
    value = _proc_field("/proc/meminfo", "MemAvailable:")
    return float("inf") if value is None else value


def _proc_field(path: str, name: str) -> float | None:
    """A ``kB`` field of a /proc file in MiB (None off Linux)."""
    try:
        with open(path) as f:
            return next((int(line.split()[1]) / 1024 for line in f if line.startswith(name)), None)
    except OSError:
        return None


def process_peak_rss_mib() -> float:
    """This process's peak resident set in MiB: ``VmHWM`` of its own address space. Not ``ru_maxrss``
    (its fallback off Linux): Linux carries that across ``exec``, so a child started from a large parent
    would report the parent's resident set at the fork as its own peak."""
    peak = _proc_field("/proc/self/status", "VmHWM:")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """Context manager: ``peak_mib`` = the block's peak memory beyond what was in use at its start (None
    where it cannot be measured: a CPU without ``/proc``)."""

    def __init__(self, device: Any) -> None:
        import torch

        self.device = torch.device(device)
        self.peak_mib: float | None = None

    def __enter__(self) -> PeakMemory:
        import torch

        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM (the peak RSS) := the current RSS
            self._base = _proc_field("/proc/self/status", "VmRSS:")
        except OSError:
            self._base = None
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        synchronize(self.device)
        if self.device.type == "cuda":
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20 - self._base
        elif self._base is not None:
            peak = _proc_field("/proc/self/status", "VmHWM:")
            self.peak_mib = None if peak is None else max(peak - self._base, 0.0)


@dataclass
class Measurement:
    """Median seconds of the timed calls, every timed call's seconds, the warm-up calls' wall seconds,
    the peak memory of the first timed call (MiB beyond the memory in use before it) and the last result."""

    seconds: float
    times_s: list[float]
    first_call_s: float
    peak_mib: float | None
    result: Any = None


def measure(
    fn: Callable[[], Any],
    device: Any,
    *,
    warmup: int = 1,
    repeats: int = 3,
    memory: bool = True,
    budget_s: float | None = None,
) -> Measurement:
    """Time ``fn()``: ``warmup`` calls, then up to ``repeats`` timed calls (fewer once they took longer
    than ``budget_s``; at least one); the first timed call also records the peak memory. Exceptions
    (e.g. ``torch.OutOfMemoryError``) propagate."""
    import torch

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
        mem = PeakMemory(device) if i == 0 and memory else None
        with mem or nullcontext():
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                result = fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t = time.perf_counter()
                result = fn()
                times.append(time.perf_counter() - t)
        peak = mem.peak_mib if mem is not None else peak
        if budget_s is not None and sum(times) > budget_s:
            break
    return Measurement(statistics.median(times), times, first, peak, result)


def fit_exponent(points: Iterable[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(y) against log(x) over points with x, y > 0 (None below two x)."""
    pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y is not None and y > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def predict(history: list[tuple[float, float]], n: float, default_exponent: float) -> float | None:
    """The value at size ``n`` from measured (size, value) pairs: the last value scaled by
    (n / its size)^p, p fitted over the last two sizes (clamped to [1, 2]) or ``default_exponent``.
    Suites skip a configuration predicted beyond their time or memory budget; nothing predicted is
    ever written as a figure."""
    if not history:
        return None
    p = fit_exponent(history[-2:]) if len(history) >= 2 else None
    p = default_exponent if p is None else min(max(p, 1.0), 2.0)
    n0, v0 = history[-1]
    return v0 * (n / n0) ** p


# -- a fresh process ------------------------------------------------------------------------------------
def run_in_child(
    target: str,
    kwargs: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> tuple[int, Any, str]:
    """Run ``target`` (``"module:function"``) with ``kwargs`` in a fresh Python process, echoing its
    output live; returns ``(exit code, result, last line of other output)``, result None when the child
    reported none (it failed, or was killed after ``timeout_s``: exit code −9)."""
    cmd = [sys.executable, "-m", "clinseq.bench.harness", target, json.dumps(kwargs)]
    result, last = None, ""
    with subprocess.Popen(
        cmd,
        env=dict(env or os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        timer = threading.Timer(timeout_s, proc.kill) if timeout_s else None
        if timer is not None:
            timer.start()
        for line in proc.stdout or ():
            if line.startswith(MARKER):
                result = json.loads(line[len(MARKER) :])
            else:
                print(line, end="", flush=True)
                last = line.strip() or last
        if timer is not None:
            timer.cancel()
    return proc.returncode, result, last


def _child_main(argv: Sequence[str]) -> int:
    module, _, function = argv[0].partition(":")
    try:
        result = getattr(import_module(module), function)(**json.loads(argv[1]))
    except ClinseqError as exc:
        print(f"clinseq bench: error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(MARKER + json.dumps(_clean(result), default=str), flush=True)
    return 0


# -- results ---------------------------------------------------------------------------------------------
def repo_root() -> Path | None:
    """The clinseq checkout this package is imported from (``src/clinseq/`` beside ``benchmarks/``)."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "benchmarks").is_dir() and (root / "src" / "clinseq").is_dir() else None


def results_dir(quick: bool = False, out_dir: str | os.PathLike[str] | None = None) -> Path:
    """``out_dir``, else ``$CLINSEQ_BENCH_RESULTS``, else the checkout's (or ``./``) ``benchmarks/results``;
    ``quick/`` below the last two for quick runs."""
    if out_dir is not None:
        return Path(out_dir)
    base = os.environ.get(RESULTS_ENV) or (repo_root() or Path.cwd()) / "benchmarks" / "results"
    return Path(base) / "quick" if quick else Path(base)


def need_data(relative: str, suite: str, what: str) -> Path:
    """``$CLINSEQ_DATA/relative``, or ``ConfigError`` saying how to provide it."""
    path = data_root() / relative
    if not path.exists():
        raise ConfigError(
            f"the {suite} suite needs {what} at {path}; set CLINSEQ_DATA to the folder holding it "
            "(README.md, Data)"
        )
    return path


def _command() -> str:
    """This process's command line as a user would type it; ``clinseq bench`` passes its own instead."""
    if os.environ.get(COMMAND_ENV):
        return os.environ[COMMAND_ENV]
    argv0 = Path(sys.argv[0])
    if argv0.suffix != ".py":  # a console script such as .venv/bin/clinseq
        return " ".join([argv0.name, *sys.argv[1:]])
    root = repo_root()
    try:
        script = argv0.resolve().relative_to(root).as_posix() if root else argv0.as_posix()
    except ValueError:
        script = argv0.as_posix()
    return " ".join(["python", script, *sys.argv[1:]])


def environment(command: str | None = None) -> dict[str, Any]:
    """Machine (platform, CPUs, memory, threads, device, load average), versions, command, UTC date."""
    import numpy
    import torch

    import clinseq

    machine: dict[str, Any] = {
        "platform": platform.platform(),
        "architecture": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(m / 1024, 1) if (m := _proc_field("/proc/meminfo", "MemTotal:")) else None,
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
        "load_average_1_5_15_min": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        machine.update(device=props.name, device_memory_gib=round(props.total_memory / 2**30, 1))
        machine["device_count"] = torch.cuda.device_count()
    versions = {
        "clinseq": clinseq.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": numpy.__version__,
    }
    from importlib.util import find_spec

    for module in _LIBRARIES:
        if module in sys.modules or find_spec(module) is not None:
            versions[module] = getattr(import_module(module), "__version__", None)
    return {
        "machine": machine,
        "versions": versions,
        "command": command or _command(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _is_figure(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def missing_units(payload: Mapping[str, Any], units: Mapping[str, str] | None = None) -> list[str]:
    """Paths (``a.b[2].c``) of the numbers without a unit in ``units`` (default ``payload["units"]``); a
    number inherits the unit of the nearest enclosing key that has one. ``environment`` and ``units``
    themselves are not checked."""
    units = payload.get("units", {}) if units is None else units
    missing: list[str] = []

    def walk(value: Any, path: str, inherited: bool) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key), inherited or str(key) in units)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]", inherited)
        elif _is_figure(value) and not inherited:
            missing.append(path)

    for key, value in payload.items():
        if key not in ("environment", "units"):
            walk(value, str(key), str(key) in units)
    return missing


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf → None, tuples → lists, paths → str."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def write_results(
    name: str,
    payload: Mapping[str, Any],
    *,
    quick: bool = False,
    out_dir: str | os.PathLike[str] | None = None,
    command: str | None = None,
) -> Path:
    """Write ``{"environment": environment(), "quick": quick, **payload}`` to ``<results_dir>/<name>.json``.

    Raises:
        ConfigError: ``payload`` has no ``units`` mapping, or a number in it has no unit.
    """
    if not isinstance(payload.get("units"), Mapping):
        raise ConfigError(f"result {name!r} has no 'units' mapping; add units={{figure: unit, ...}}")
    missing = missing_units(payload)
    if missing:
        raise ConfigError(
            f"result {name!r}: {len(missing)} figure(s) without a unit: {', '.join(missing[:8])}; add their "
            "keys (or an enclosing key) to payload['units']"
        )
    folder = results_dir(quick, out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    record = {"environment": environment(command), "quick": quick, **payload}
    tmp = path.with_suffix(f".json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_clean(record), indent=1, default=str) + "\n")
    tmp.replace(path)  # never a half-written result
    return path


def report(
    name: str,
    payload: Mapping[str, Any],
    *,
    quick: bool,
    out_dir: str | os.PathLike[str] | None,
    figure: Callable[[Path], Path | None] | None = None,
) -> dict[str, Any]:
    """What every suite's ``run`` ends with: write the result, draw its figure next to it (``figure(png
    path)``), say where; returns ``{"json": path, "figures": [paths], "result": payload}``."""
    path = write_results(name, payload, quick=quick, out_dir=out_dir)
    drawn = figure(path.with_suffix(".png")) if figure is not None else None
    figures = [drawn] if drawn is not None else []
    print(f"wrote {path}" + "".join(f", {f}" for f in figures), flush=True)
    return {"json": path, "figures": figures, "result": payload}


def format_value(value: Any) -> str:
    """A table cell: integers with thousands separators, floats to 3 significant digits (whole numbers
    from 100 up, an exponent below 0.01), None / NaN as "-"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2e}"
    return str(value)


def print_table(
    rows: Sequence[Mapping[str, Any]], columns: Iterable[str], *, title: str | None = None, file: Any = None
) -> str:
    """Print ``rows`` as an aligned text table (numbers right-aligned) and return the text."""
    columns = list(columns)
    cells = [[format_value(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    numeric = [
        any(_is_figure(r.get(c)) for r in rows)
        and all(_is_figure(r.get(c)) or r.get(c) is None for r in rows)
        for c in columns
    ]

    def line(values: Sequence[str]) -> str:
        parts = zip(values, widths, numeric, strict=True)
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in parts).rstrip()

    text = "\n".join([*([title] if title is not None else []), line(columns), *map(line, cells)])
    print(text, file=file or sys.stdout, flush=True)
    return text


def device_tag(device: str) -> str:
    """Short device name for result files: "cpu", or the GPU's ("h100", "a100", ...)."""
    import torch

    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return "cpu"
    name = re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name(0).lower()).strip("_")
    return next((g for g in ("h100", "h200", "b200", "a100", "l40", "l4", "a10") if g in name), name)


def resolve_device(device: str) -> str:
    """``device`` checked: "cpu" or "cuda" (optionally "cuda:N"), CUDA only where torch sees a GPU."""
    import torch

    if device == "cpu":
        return device
    if not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ConfigError(f"--device must be 'cpu' or 'cuda', got {device!r}")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(
            f"--device {device} but torch sees no GPU (torch {torch.__version__}, {build}); run with "
            "--device cpu, or install a CUDA build of torch on a machine with a GPU"
        )
    return device


# -- figures ---------------------------------------------------------------------------------------------
def plots_available() -> bool:
    """Whether matplotlib can be imported (the JSON and tables are the results; figures a view of them)."""
    from importlib.util import find_spec

    return find_spec("matplotlib") is not None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


@dataclass
class Series:
    """One line: label, x and y (None where not measured), matplotlib style, colour (``f"C{i}"``)."""

    label: str
    x: Sequence[float]
    y: Sequence[float | None]
    style: str = "-o"
    color: str | None = None


@dataclass
class Panel:
    """One axes: title, axis labels, lines, log scales, and reference slopes (e.g. 1 = linear) drawn as
    dotted grey lines through the first point."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    logx: bool = True
    logy: bool = True
    reference_slopes: Sequence[float] = ()


def save_panels(path: Path, panels: Sequence[Panel]) -> Path | None:
    """Panels side by side in one PNG (150 dpi); one shared legend below when they share their labels."""
    if not plots_available() or not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        points = [
            [(x, y) for x, y in zip(s.x, s.y, strict=True) if y is not None and y > 0] for s in panel.series
        ]
        for s, pts in zip(panel.series, points, strict=True):
            if pts:
                ax.plot(*zip(*pts, strict=True), s.style, label=s.label, markersize=4, color=s.color)
        anchor = next((p[0] for p in points if p), None)
        if anchor is not None:
            (x0, y0), x1 = anchor, max(x for s in panel.series for x in s.x)
            for slope in panel.reference_slopes:
                ax.plot([x0, x1], [y0, y0 * (x1 / x0) ** slope], ":", color="grey", linewidth=1)
                ax.annotate(f"∝ n^{slope:g}", (x1, y0 * (x1 / x0) ** slope), fontsize=7, color="grey")
        ax.set_xscale("log" if panel.logx else "linear")
        ax.set_yscale("log" if panel.logy else "linear")
        ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel)
        ax.title.set_fontsize(10)
        ax.grid(True, which="both", alpha=0.3)
    labels = [[s.label for s in panel.series] for panel in panels]
    shared = all(ls == labels[0] for ls in labels) and any(labels[0])
    if shared:
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=7, frameon=False)
    else:
        for ax, ls in zip(axes[0], labels, strict=True):
            if any(ls):
                ax.legend(fontsize=7, loc="best", framealpha=0.6)
    rows = -(-len(labels[0]) // 4) if shared else 0
    fig.tight_layout(rect=(0, min(0.04 * rows + 0.02, 0.4) if shared else 0, 1, 1))
    return _save(fig, plt, path)


def save_bars(path: Path, title: str, xlabel: str, labels: list[str], segments: dict, logx: bool = False):
    """One PNG of horizontal bars, one per label, stacked segments (``segments[name][i]`` for label i)."""
    if not plots_available() or not labels:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(labels)))
    left = [0.0] * len(labels)
    for name, values in segments.items():
        widths = [0.0 if v is None or not math.isfinite(v) else v for v in values]
        ax.barh(labels, widths, left=left, label=name)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xscale("log" if logx else "linear")
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.grid(True, axis="x", alpha=0.3)
    if len(segments) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


# -- scripts ---------------------------------------------------------------------------------------------
def script(run: Callable[..., Any], argv: Sequence[str] | None = None) -> Any:
    """The command line of ``benchmarks/bench_<stem>.py``: one ``--option`` per keyword of ``run`` (a
    tuple takes several values, a bool is a flag), the suite's docstring as its help."""
    doc = inspect.getdoc(sys.modules[run.__module__]) or ""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(run)
    for name, param in inspect.signature(run).parameters.items():
        hint = hints[name]
        kind = hint if typing.get_origin(hint) is tuple else [a for a in typing.get_args(hint) or (hint,)][0]
        flags = ["--" + name.replace("_", "-"), *(["--out"] if name == "out_dir" else [])]
        if kind is bool:
            parser.add_argument(*flags, action="store_true", help="(a flag)")
            continue
        many = typing.get_origin(kind) is tuple
        item = typing.get_args(kind)[0] if many else kind
        item = item if item in (int, float) else str
        default = f"default: {param.default}" if param.default is not None else "default: by device/quick"
        parser.add_argument(
            *flags, type=item, nargs="+" if many else None, default=param.default, help=default
        )
    args = vars(parser.parse_args(argv))
    return run(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})


if __name__ == "__main__":  # run_in_child's other end
    sys.exit(_child_main(sys.argv[1:]))
