"""EHR events: MIMIC-IV → store conversion and patient slices/s — ``benchmarks/bench_ehr.py``, run as is.

That script (its owner's; conversion in fresh child processes, a replicated large input, the gzip and
parse floors, slice rates) stays the one implementation: this suite runs it in a subprocess with
``--copies 0 --repeat 1 --slices 2000`` for ``quick`` and with its own defaults otherwise, and its result
(``ehr_cpu.json``) goes where every other suite's goes (``benchmarks/_common.py`` delegates to
:func:`clinseq.bench.report.write_results`). It needs a clinseq checkout (``benchmarks/`` beside ``src/``)
and the MIMIC-IV demo under ``$CLINSEQ_DATA/mimic_iv_demo``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from clinseq.bench.report import COMMAND_ENV, RESULTS_ENV, repo_root, resolve_device, results_dir
from clinseq.utils import ClinseqError, ConfigError

__all__ = ["QUICK_ARGS", "QUICK_ENV", "run"]

QUICK_ARGS = ("--copies", "0", "--repeat", "1", "--slices", "2000")
#: Set for the script when it runs as part of a quick run: ``benchmarks/_common.py`` then writes to quick/.
QUICK_ENV = "CLINSEQ_BENCH_QUICK"


def run(
    *, device: str = "cpu", quick: bool = False, out_dir: str | Path | None = None, args: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Run ``benchmarks/bench_ehr.py`` (CPU work; ``device`` is checked and otherwise ignored)."""
    resolve_device(device)
    root = repo_root()
    script = None if root is None else root / "benchmarks" / "bench_ehr.py"
    if script is None or not script.is_file():
        raise ConfigError(
            "the ehr suite runs benchmarks/bench_ehr.py of a clinseq checkout, and this clinseq is installed "
            f"without one ({Path(__file__).resolve().parents[1]}); run it from a checkout (pip install -e .)"
        )
    env = {**os.environ, QUICK_ENV: "1" if quick else "0"}
    folder = results_dir(False, out_dir) if out_dir is not None else None
    if folder is not None:  # an explicit folder: quick results go there directly, as for the other suites
        env[RESULTS_ENV] = str(folder)
        env[QUICK_ENV] = "0"
    env.setdefault(
        COMMAND_ENV, " ".join(["python benchmarks/bench_ehr.py", *(QUICK_ARGS if quick else ()), *args])
    )
    cmd = [sys.executable, str(script), *(QUICK_ARGS if quick else ()), *args]
    done = subprocess.run(cmd, env=env, cwd=root)
    if done.returncode != 0:
        raise ClinseqError(
            f"benchmarks/bench_ehr.py failed with exit code {done.returncode} (its output is above)"
        )
    path = (folder or results_dir(quick)) / "ehr_cpu.json"
    return {"json": path, "figures": [], "result": json.loads(path.read_text())}
