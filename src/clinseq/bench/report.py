"""What every benchmark result carries: machine, versions, command, each figure with its unit.

A result is one JSON file per suite, ``{"environment": {...}, <payload>}``:

- ``environment.machine``: platform, architecture, CPUs (and those this process may use), memory, the
  accelerator (name and memory) or "cpu", the load average when the file was written;
- ``environment.versions``: clinseq, Python, torch (+ its CUDA), numpy and the libraries a suite uses;
- ``environment.command``: the command that reproduces the file, e.g. ``clinseq bench encoder --device
  cpu``; ``environment.date``: UTC, ISO 8601;
- ``units``: the unit of every figure. Every number in the payload must have one, found under its own
  key or, for numbers inside a mapping or list, under the nearest enclosing key that has one:
  :func:`missing_units` lists the numbers that have none and :func:`write_results` refuses to write them.

Results go to :func:`results_dir`: ``$CLINSEQ_BENCH_RESULTS`` if set, else ``benchmarks/results/`` of the
checkout this package runs from (or of the working directory); quick runs write to its ``quick/``
subfolder, so that a CI run never overwrites the full results kept in the repository.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clinseq.utils import ConfigError

__all__ = [
    "RESULTS_ENV",
    "environment",
    "device_tag",
    "format_value",
    "missing_units",
    "print_table",
    "repo_root",
    "resolve_device",
    "results_dir",
    "write_results",
]

#: Environment variable that redirects every result file (CI and tests point it at a temporary folder).
RESULTS_ENV = "CLINSEQ_BENCH_RESULTS"
#: Environment variable through which ``clinseq bench`` hands its own command line to each suite's process.
COMMAND_ENV = "CLINSEQ_BENCH_COMMAND"

_LIBRARIES = ("numpy", "pyarrow", "polars", "wfdb", "mne", "triton", "matplotlib")


def repo_root() -> Path | None:
    """The clinseq checkout this package is imported from (``src/clinseq/`` beside ``benchmarks/``)."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "benchmarks").is_dir() and (root / "src" / "clinseq").is_dir() else None


def results_dir(quick: bool = False, out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder for result files: ``out_dir``, else ``$CLINSEQ_BENCH_RESULTS``, else the checkout's
    ``benchmarks/results`` (``./benchmarks/results`` outside a checkout); ``quick/`` below it for quick
    runs (not below an explicit ``out_dir``)."""
    if out_dir is not None:
        return Path(out_dir)
    env = os.environ.get(RESULTS_ENV)
    if env:
        base = Path(env)
    else:
        root = repo_root()
        base = (root if root is not None else Path.cwd()) / "benchmarks" / "results"
    return base / "quick" if quick else base


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _command() -> str:
    """This process's command line as a user would type it (``clinseq …``, ``python -m …``, ``python
    benchmarks/….py …``); ``clinseq bench`` passes its own to the suites' processes instead."""
    if os.environ.get(COMMAND_ENV):
        return os.environ[COMMAND_ENV]
    argv0 = Path(sys.argv[0])
    if argv0.suffix != ".py":  # a console script such as .venv/bin/clinseq
        return " ".join([argv0.name, *sys.argv[1:]])
    orig = getattr(sys, "orig_argv", [])  # Python ≥ 3.10: the interpreter's own arguments, "-m" kept
    if "-m" in orig[1:3]:
        return " ".join(["python", *orig[orig.index("-m") :]])
    root = repo_root()
    try:  # benchmarks/bench_x.py rather than an absolute path
        script = argv0.resolve().relative_to(root).as_posix() if root is not None else argv0.as_posix()
    except ValueError:
        script = argv0.as_posix()
    return " ".join(["python", script, *sys.argv[1:]])


def environment(command: str | None = None) -> dict[str, Any]:
    """Machine, versions, command and date (see the module docstring)."""
    import numpy
    import torch

    import clinseq

    machine: dict[str, Any] = {
        "platform": platform.platform(),
        "architecture": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
        "load_average_1_5_15_min": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        machine.update(device=props.name, device_memory_gib=round(props.total_memory / 2**30, 1))
        machine["device_count"] = torch.cuda.device_count()
    versions: dict[str, Any] = {
        "clinseq": clinseq.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": numpy.__version__,
    }
    for module in _LIBRARIES[1:]:
        if module in sys.modules or _importable(module):
            try:
                versions[module] = __import__(module).__version__
            except (ImportError, AttributeError):
                pass
    return {
        "machine": machine,
        "versions": versions,
        "command": command or _command(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _importable(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


def _is_figure(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def missing_units(payload: Mapping[str, Any], units: Mapping[str, str] | None = None) -> list[str]:
    """Paths (``a.b[2].c``) of the numbers in ``payload`` without a unit in ``units`` (default:
    ``payload["units"]``); a number inherits the unit of the nearest enclosing key that has one.
    ``environment`` and ``units`` themselves are not checked."""
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


def run_child_reporting(cmd: Sequence[str], env: Mapping[str, str], marker: str) -> tuple[int, Any]:
    """Run ``cmd`` in a child process, echoing its output live, and return ``(exit code, result)``.

    The child reports its result as one line ``marker + json``; that line is parsed (the last one wins)
    instead of echoed. ``result`` is None when no such line came.
    """
    result: Any = None
    with subprocess.Popen(list(cmd), env=dict(env), stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
        for line in proc.stdout or ():
            if line.startswith(marker):
                result = json.loads(line[len(marker) :])
            else:
                print(line, end="", flush=True)
    return proc.returncode, result


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf → None (JSON has no such numbers), tuples → lists, paths → str."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_results(
    name: str,
    payload: Mapping[str, Any],
    *,
    quick: bool = False,
    out_dir: str | os.PathLike[str] | None = None,
    command: str | None = None,
    require_units: bool = True,
) -> Path:
    """Write ``{"environment": environment(), "quick": quick, **payload}`` to ``<results_dir>/<name>.json``.

    Raises:
        ConfigError: (with ``require_units``) ``payload`` has no ``units`` mapping, or a number in it has
            no unit.
    """
    if require_units and not isinstance(payload.get("units"), Mapping):
        raise ConfigError(f"result {name!r} has no 'units' mapping; add units={{figure: unit, ...}}")
    missing = missing_units(payload) if require_units else []
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
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:,.0f}"
        if magnitude >= 0.01:
            return f"{value:.3g}"
        return f"{value:.2e}"
    return str(value)


def print_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Iterable[str],
    *,
    title: str | None = None,
    file: Any = None,
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
    lines = [] if title is None else [title]

    def line(values: Sequence[str]) -> str:
        parts = zip(values, widths, numeric, strict=True)
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in parts).rstrip()

    lines.append(line(columns))
    lines.extend(line(row) for row in cells)
    text = "\n".join(lines)
    print(text, file=file or sys.stdout, flush=True)
    return text


def device_tag(device: str) -> str:
    """Short name of a device for result file names: "cpu", or the GPU's ("h100", "a100", ...)."""
    import re

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
