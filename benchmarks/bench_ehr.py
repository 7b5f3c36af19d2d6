"""EHR events: MIMIC-IV → store conversion throughput and peak memory; per-patient slice rate.

Usage (from the project root; needs the MIMIC-IV demo under $CLINSEQ_DATA/mimic_iv_demo)::

    .venv/bin/python benchmarks/bench_ehr.py [--scale 20] [--slices 20000]

1. Converts the demo (all tables present: ~220 k source rows) in a fresh child process: wall time,
   source rows/s (rows of the event tables read, d_* dictionaries not counted) and the child's peak RSS.
2. ``--scale K``: the same with labevents made K times longer (the demo's rows repeated, written as
   plain CSV), to see the throughput once fixed per-table costs are amortised. Not real data volume
   per patient, but real rows and the real code path.
3. Patient slices/s on the converted demo: whole timeline, a 7-day window, the same window with a
   code filter, and the zero-copy Arrow slice.

Prints a table and writes benchmarks/results/ehr_cpu.json.
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_results  # noqa: E402
from clinseq.utils import data_root  # noqa: E402


def _convert_child(src: str, out: str, queue: mp.Queue) -> None:
    import json

    from clinseq.io.mimic_iv import convert_mimic_iv

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    store = convert_mimic_iv(src, out, progress=False)
    wall = time.perf_counter() - t0
    report = json.loads((store / "manifest.json").read_text())["events"]
    rows = sum(t["source_rows"] for t in report["tables"].values())
    queue.put(
        {
            "wall_s": wall,
            "source_rows": rows,
            "events": report["n_events"],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_imports_mib": rss_before / 1024,
        }
    )


def measure_conversion(src: Path, out: Path) -> dict:
    ctx = mp.get_context("spawn")  # a fresh process: its peak RSS is this conversion's alone
    queue = ctx.Queue()
    proc = ctx.Process(target=_convert_child, args=(str(src), str(out), queue))
    proc.start()
    result = queue.get()
    proc.join()
    result["source_rows_per_s"] = result["source_rows"] / result["wall_s"]
    return result


def scaled_source(demo: Path, tmp: Path, scale: int) -> Path:
    src = tmp / f"mimic_x{scale}"
    shutil.copytree(demo / "hosp", src / "hosp", ignore=shutil.ignore_patterns("labevents.csv.gz"))
    shutil.copytree(demo / "icu", src / "icu")
    lines = gzip.decompress((demo / "hosp" / "labevents.csv.gz").read_bytes()).split(b"\n", 1)
    with open(src / "hosp" / "labevents.csv", "wb") as f:
        f.write(lines[0] + b"\n")
        body = lines[1] if lines[1].endswith(b"\n") else lines[1] + b"\n"
        for _ in range(scale):
            f.write(body)
    return src


def measure_slices(store: Path, n: int) -> list[dict]:
    from clinseq.timeline.events import EventIndex

    index = EventIndex.open(store)
    if index is None:
        sys.exit(f"{store} holds no events")
    pids = index.subject_ids
    rng = np.random.default_rng(0)
    picks = rng.choice(pids, size=n)
    # A 7-day window that ends at one of the patient's own events (so windows are not empty).
    windows = []
    for pid in picks[:1000]:
        times = index.patient_events(int(pid))["time"].drop_nulls()
        end = times[int(rng.integers(0, len(times)))]
        windows.append((int(pid), end - timedelta(days=7), end))
    windows = [windows[i % len(windows)] for i in range(n)]
    lab = "LAB//50912//mg/dL"  # creatinine
    cases = {
        "whole timeline (polars)": lambda i: index.patient_events(int(picks[i])),
        "7-day window (polars)": lambda i: index.patient_events(windows[i][0], windows[i][1], windows[i][2]),
        "7-day window + code filter": lambda i: index.patient_events(
            windows[i][0], windows[i][1], windows[i][2], codes=[lab]
        ),
        "7-day window (arrow, zero-copy)": lambda i: index.patient_arrow(
            windows[i][0], windows[i][1], windows[i][2]
        ),
    }
    rows = []
    for name, fn in cases.items():
        fn(0)
        n_events = 0
        t0 = time.perf_counter()
        for i in range(n):
            n_events += len(fn(i))
        dt = time.perf_counter() - t0
        rows.append(
            {
                "query": name,
                "slices": n,
                "slices_per_s": round(n / dt),
                "us_per_slice": round(dt / n * 1e6, 2),
                "mean_events_per_slice": round(n_events / n, 1),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scale", type=int, default=20, help="labevents repetitions for the scaled run (0 = skip)"
    )
    parser.add_argument("--slices", type=int, default=20000, help="queries per slice benchmark")
    args = parser.parse_args()
    demo = data_root() / "mimic_iv_demo"
    if not (demo / "hosp").is_dir():
        sys.exit(f"no MIMIC-IV demo at {demo}: set CLINSEQ_DATA (see data_cards/mimic_iv.md)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        conversions = [
            {"source": "MIMIC-IV demo 2.2 (no chartevents)", **measure_conversion(demo, tmp / "demo")}
        ]
        if args.scale > 0:
            src = scaled_source(demo, tmp, args.scale)
            conversions.append(
                {
                    "source": f"demo, labevents x{args.scale} (plain CSV)",
                    **measure_conversion(src, tmp / "scaled"),
                }
            )
        slices = measure_slices(tmp / "demo", args.slices)
    for row in conversions:
        for key in ("wall_s", "source_rows_per_s", "peak_rss_mib", "rss_after_imports_mib"):
            row[key] = round(row[key], 2)
    print("conversion (one child process; 2-core CPU shared with other work)")
    print_table(
        conversions, ["source", "source_rows", "events", "wall_s", "source_rows_per_s", "peak_rss_mib"]
    )
    print("\npatient slices (converted demo, 100 subjects)")
    print_table(slices, ["query", "slices", "slices_per_s", "us_per_slice", "mean_events_per_slice"])
    path = write_results(
        "ehr_cpu",
        {
            "conversion": conversions,
            "slices": slices,
            "targets": {"source_rows_per_s": 2_000_000, "peak_rss_mib": 1024, "slices_per_s": 50_000},
            "units": {
                "wall_s": "seconds",
                "source_rows_per_s": "source CSV rows per second",
                "peak_rss_mib": "MiB (max resident set size of the converting process)",
                "slices_per_s": "patient_events calls per second, one thread",
                "us_per_slice": "microseconds",
            },
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
