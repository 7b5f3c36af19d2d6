"""``clinseq bench``: the throughput suites behind one command — tables, JSON with units, PNG figures.

- ``reads``: random window reads, the store vs ``wfdb.rdrecord`` and mne, one core
  → ``window_reads.json``
- ``loader``: sampler → dataset → views → collate → DataLoader, windows/s → ``loader_cpu.json``
- ``loss``: grouped InfoNCE forward + backward, fused Triton / chunked / naive / compiled, time and memory
  over N → ``info_nce_<device>.json``
- ``encoder``: ResNet1d, CPC and PatchTransformer over 1 k → 1 M input samples: items/s, tokens/s, peak
  memory, SDPA backends, checkpointing, one hour of EEG → ``encoder_<device>.json``
- ``pretrain``: a full PCLR / CPC step (loader → views → encoder → loss → backward → AdamW) on PTB-XL:
  windows/s, loader stalls, GPU-busy fraction → ``pretrain_<device>.json``
- ``ehr``: MIMIC-IV → store conversion and patient slices/s (``benchmarks/bench_ehr.py``) → ``ehr_cpu.json``

``all`` = reads, loader, loss, encoder, pretrain (the sequence-throughput suites; ``ehr`` is a conversion
benchmark of the EHR path with its own owner and runs only when named). Each suite is a module with
``run(*, device, quick, out_dir=None, **options) -> {"json": path, "figures": [paths], "result": payload}``;
``benchmarks/bench_*.py`` are thin command-line wrappers of the same functions (their own flags).

:func:`main` runs each suite in its own Python process (``python -m clinseq.bench SUITE``): the suites pin
CPUs, set thread counts and allocator options, and measure peak memory of their process, which must not
leak from one suite into the next. Results: see :mod:`clinseq.bench.report` (``benchmarks/results/``,
``quick/`` for quick runs, ``$CLINSEQ_BENCH_RESULTS`` to redirect). The package imports every layer of
clinseq (it sits on top, like ``train`` and ``eval``); nothing in clinseq imports it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

from clinseq.bench.report import COMMAND_ENV, print_table, resolve_device, run_child_reporting
from clinseq.utils import ConfigError

__all__ = ["ALL", "SUITES", "expand_suites", "main", "run_suite"]

#: suite name → module of ``clinseq.bench`` holding its ``run``.
SUITES: dict[str, str] = {
    "reads": "clinseq.bench.reads",
    "loader": "clinseq.bench.loader",
    "loss": "clinseq.bench.loss",
    "encoder": "clinseq.bench.encoder",
    "pretrain": "clinseq.bench.pretrain",
    "ehr": "clinseq.bench.ehr",
}
#: What ``all`` runs, in this order.
ALL: tuple[str, ...] = ("reads", "loader", "loss", "encoder", "pretrain")
#: The line a suite's process prints last: ``clinseq-bench-result: {"json": ..., "figures": [...]}``.
MARKER = "clinseq-bench-result: "


def expand_suites(suites: Sequence[str]) -> list[str]:
    """Suite names in order, ``all`` expanded, duplicates dropped; unknown names raise ``ConfigError``."""
    if isinstance(suites, str):
        suites = [suites]
    names: list[str] = []
    for name in suites:
        if name == "all":
            names.extend(ALL)
        elif name in SUITES:
            names.append(name)
        else:
            raise ConfigError(
                f"unknown benchmark suite {name!r}; choose from {', '.join([*SUITES, 'all'])} "
                "(e.g. clinseq bench encoder --quick)"
            )
    if not names:
        raise ConfigError("no benchmark suite given; e.g. clinseq bench all --quick")
    return list(dict.fromkeys(names))


def run_suite(
    name: str, *, device: str = "cpu", quick: bool = False, out_dir: str | Path | None = None, **options: Any
) -> dict[str, Any]:
    """Run one suite in this process (what ``python -m clinseq.bench NAME`` does)."""
    if name not in SUITES:
        raise ConfigError(f"run_suite runs one of {', '.join(SUITES)}, got {name!r}; main() runs several")
    return import_module(SUITES[name]).run(device=device, quick=quick, out_dir=out_dir, **options)


def _command(suites: Sequence[str], device: str, quick: bool) -> str:
    return " ".join(["clinseq bench", *suites, "--device", device, *(["--quick"] if quick else [])])


def main(
    suites: Sequence[str],
    *,
    device: str = "cpu",
    quick: bool = False,
    out_dir: str | Path | None = None,
) -> int:
    """Run the suites (each in a fresh process), stream their tables, print a summary.

    Returns 0 when every suite wrote its result, 1 otherwise (the failing suites' errors are printed
    above the summary). Raises ``ConfigError`` for an unknown suite or a device this machine lacks.
    """
    names = expand_suites(suites)
    device = resolve_device(device)
    command = _command(list(suites), device, quick)
    env = {**os.environ, COMMAND_ENV: command}
    from clinseq.bench import plots

    if not plots.available():
        print("matplotlib is not installed: no PNG figures (pip install 'clinseq[plot]')", flush=True)
    summary = []
    for name in names:
        print(f"\n=== clinseq bench {name} ({device}{', quick' if quick else ''}) ===", flush=True)
        cmd = [sys.executable, "-m", "clinseq.bench", name, "--device", device]
        cmd += ["--quick"] if quick else []
        cmd += ["--out", str(out_dir)] if out_dir is not None else []
        t0 = time.perf_counter()
        returncode, reported = run_child_reporting(cmd, env, MARKER)
        result: dict[str, Any] = reported or {}
        ok = returncode == 0 and bool(result)
        summary.append(
            {
                "suite": name,
                "status": "ok" if ok else f"FAILED (exit {returncode})",
                "seconds": round(time.perf_counter() - t0, 1),
                "result": result.get("json", "-"),
                "figures": ", ".join(Path(f).name for f in result.get("figures", [])) or "-",
            }
        )
    print()
    print_table(summary, ["suite", "status", "seconds", "result", "figures"], title=f"{command}:")
    return 0 if all(s["status"] == "ok" for s in summary) else 1
