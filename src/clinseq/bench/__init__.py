"""``clinseq bench``: one suite per measured thing, named by its stem, on one harness.

- ``reads``: random window reads, the store vs ``wfdb.rdrecord`` and mne, one core → ``reads_cpu.json``
- ``loader``: sampler → dataset → views → collate → DataLoader, windows/s → ``loader_cpu.json``
- ``info_nce``: grouped InfoNCE forward + backward, fused Triton / chunked / naive / compiled, time and
  memory over N, and COMET's grouped rows → ``info_nce_<device>.json``
- ``encoder``: ResNet1d, CPC and PatchTransformer over 1 k → 1 M input samples: items/s, tokens/s, peak
  memory, SDPA backends, checkpointing, one hour of EEG → ``encoder_<device>.json``
- ``pretrain``: a full PCLR / CPC step (loader → views → encoder → loss → backward → AdamW) on PTB-XL:
  windows/s, loader stalls, GPU-busy fraction → ``pretrain_<device>.json``
- ``ehr``: MIMIC-IV → store conversion and patient slices/s → ``ehr_cpu.json``

``all`` = reads, loader, info_nce, encoder, pretrain (``ehr``, the EHR conversion benchmark, runs when
named). Each suite module has ``run(*, device, quick, out_dir=None, **options) -> {"json": path,
"figures": [paths], "result": payload}``; ``benchmarks/bench_<stem>.py`` are its command lines. The
timing, memory, child-process, result and plotting code is :mod:`clinseq.bench.harness`. :func:`main` runs
each suite in a fresh process (suites pin CPUs, set threads and allocator options and measure their
process's peak memory). The package sits on top of every layer of clinseq; nothing in clinseq imports it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

from clinseq.errors import ConfigError

__all__ = ["ALL", "SUITES", "expand_suites", "main", "run_suite"]

#: Every suite, by the stem of what it measures (module ``clinseq.bench.<stem>``).
SUITES: tuple[str, ...] = ("reads", "loader", "info_nce", "encoder", "pretrain", "ehr")
#: What ``all`` runs, in this order.
ALL: tuple[str, ...] = SUITES[:-1]


def expand_suites(suites: Sequence[str]) -> list[str]:
    """Suite names in order, ``all`` expanded, duplicates dropped; unknown names raise ``ConfigError``."""
    names: list[str] = []
    for name in [suites] if isinstance(suites, str) else suites:
        if name not in (*SUITES, "all"):
            raise ConfigError(
                f"unknown benchmark suite {name!r}; choose from {', '.join([*SUITES, 'all'])} "
                "(e.g. clinseq bench encoder --quick)"
            )
        names.extend(ALL if name == "all" else [name])
    if not names:
        raise ConfigError("no benchmark suite given; e.g. clinseq bench all --quick")
    return list(dict.fromkeys(names))


def run_suite(
    name: str, *, device: str = "cpu", quick: bool = False, out_dir: str | Path | None = None, **options: Any
) -> dict[str, Any]:
    """Run one suite in this process."""
    if name not in SUITES:
        raise ConfigError(f"run_suite runs one of {', '.join(SUITES)}, got {name!r}; main() runs several")
    return import_module(f"clinseq.bench.{name}").run(device=device, quick=quick, out_dir=out_dir, **options)


def suite_files(name: str, device: str, quick: bool, out_dir: str | None) -> dict[str, Any]:
    """Run one suite and return only where it wrote (what :func:`main`'s child processes report)."""
    result = run_suite(name, device=device, quick=quick, out_dir=out_dir)
    return {"json": str(result["json"]), "figures": [str(f) for f in result["figures"]]}


def main(
    suites: Sequence[str], *, device: str = "cpu", quick: bool = False, out_dir: str | Path | None = None
) -> int:
    """Run the suites (each in a fresh process), stream their tables, print a summary.

    Returns 0 when every suite wrote its result, 1 otherwise (the failing suites' errors are printed
    above the summary). Raises ``ConfigError`` for an unknown suite or a device this machine lacks.
    """
    from clinseq.bench.harness import COMMAND_ENV, plots_available, print_table, resolve_device, run_in_child

    names = expand_suites(suites)
    device = resolve_device(device)
    command = " ".join(["clinseq bench", *suites, "--device", device, *(["--quick"] if quick else [])])
    env = {**os.environ, COMMAND_ENV: command}
    if not plots_available():
        print("matplotlib is not installed: no PNG figures (pip install 'clinseq[plot]')", flush=True)
    summary = []
    for name in names:
        print(f"\n=== clinseq bench {name} ({device}{', quick' if quick else ''}) ===", flush=True)
        t0 = time.perf_counter()
        kwargs = {
            "name": name,
            "device": device,
            "quick": quick,
            "out_dir": None if out_dir is None else str(out_dir),
        }
        code, files, _ = run_in_child("clinseq.bench:suite_files", kwargs, env=env)
        files = files or {}
        summary.append(
            {
                "suite": name,
                "status": "ok" if code == 0 and files else f"FAILED (exit {code})",
                "seconds": round(time.perf_counter() - t0, 1),
                "result": files.get("json", "-"),
                "figures": ", ".join(Path(f).name for f in files.get("figures", [])) or "-",
            }
        )
    print()
    print_table(summary, ["suite", "status", "seconds", "result", "figures"], title=f"{command}:")
    return 0 if all(s["status"] == "ok" for s in summary) else 1
