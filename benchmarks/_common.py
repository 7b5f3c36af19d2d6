"""What every benchmark records beside its figures: machine, versions, command — for scripts that write
their own results (``bench_ehr.py``). The suites themselves live in ``src/clinseq/bench/``; this module
delegates to :mod:`clinseq.bench.report`, so every result file has the same environment record and goes
to the same place (``$CLINSEQ_BENCH_RESULTS``, else ``benchmarks/results/``; ``quick/`` below it when
``clinseq bench --quick`` runs the script).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from clinseq.bench.report import environment, missing_units, print_table, results_dir
from clinseq.bench.report import write_results as _write_results

__all__ = ["RESULTS", "environment", "print_table", "write_results"]

RESULTS = results_dir()


def write_results(name: str, payload: dict) -> Path:
    """Write ``{"environment": ..., **payload}`` to ``<results>/<name>.json``.

    Figures without a unit in ``payload["units"]`` are listed on stderr (the suites of
    :mod:`clinseq.bench` refuse them; a script keeps its own payload as its owner wrote it).
    """
    missing = missing_units(payload, payload.get("units") or {})
    if missing:
        print(f"note: {name}: figures without a unit: {', '.join(missing[:12])}", file=sys.stderr)
    quick = os.environ.get("CLINSEQ_BENCH_QUICK") == "1"
    return _write_results(name, payload, quick=quick, require_units=False)
