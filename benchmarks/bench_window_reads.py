"""Random 12-lead 1,000-sample windows: clinseq's store against ``wfdb.rdrecord(sampfrom, sampto)``.

Both read the same windows of the real PTB-XL 500 Hz records, in physical units (mV), in one process
on one core. Run from the project root::

    python benchmarks/bench_window_reads.py [--windows 20000] [--wfdb-windows 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import wfdb

from _common import print_table, write_results
from clinseq.io import PTBXLSource, convert
from clinseq.timeline import TimelineStore
from clinseq.utils import data_root

WINDOW = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=20_000, help="store windows to read")
    parser.add_argument("--wfdb-windows", type=int, default=1_000, help="wfdb windows to read")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    root = data_root() / "ptbxl"
    tmp = Path(tempfile.mkdtemp(prefix="clinseq-bench-"))
    try:
        store = TimelineStore.open(
            convert(PTBXLSource(root, 500), tmp / "ptbxl500", on_error="skip", progress=False)
        )
        rec = store.recordings
        rng = np.random.default_rng(args.seed)
        picks = rng.integers(0, rec.height, size=args.windows)
        ids = rec["recording_id"].to_numpy()[picks]
        n_samples = rec["n_samples"].to_numpy()[picks]
        starts = (rng.random(args.windows) * (n_samples - WINDOW + 1)).astype(np.int64)
        sources = rec["source"].to_numpy()[picks]

        store.read_window(int(ids[0]), 0, WINDOW)  # map the part once, outside the timing
        t0 = time.perf_counter()
        checksum = 0.0
        for rid, start in zip(ids.tolist(), starts.tolist(), strict=True):
            checksum += store.read_window(rid, start, WINDOW)[0, 0]
        store_s = time.perf_counter() - t0

        n_wfdb = min(args.wfdb_windows, args.windows)
        t0 = time.perf_counter()
        for i in range(n_wfdb):
            record = wfdb.rdrecord(
                str(root / sources[i]), sampfrom=int(starts[i]), sampto=int(starts[i]) + WINDOW
            )
            window = record.p_signal.T
            assert np.allclose(window, store.read_window(int(ids[i]), int(starts[i]), WINDOW), atol=1e-6)
        wfdb_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    store_rate, wfdb_rate = args.windows / store_s, n_wfdb / wfdb_s
    rows = [
        {"reader": "clinseq store (mmap, physical mV)", "windows": args.windows,
         "windows_per_s": round(store_rate), "us_per_window": round(1e6 / store_rate, 1)},
        {"reader": "wfdb.rdrecord(sampfrom, sampto)", "windows": n_wfdb,
         "windows_per_s": round(wfdb_rate), "us_per_window": round(1e6 / wfdb_rate, 1)},
    ]
    print_table(rows, ["reader", "windows", "windows_per_s", "us_per_window"])
    print(f"ratio store / wfdb: {store_rate / wfdb_rate:.1f}x  (targets: >= 50x and >= 20,000 windows/s)")
    path = write_results(
        "window_reads",
        {"window": {"channels": 12, "samples": WINDOW, "sampling_rate_hz": 500, "units": "mV"},
         "results": rows, "ratio_store_over_wfdb": store_rate / wfdb_rate,
         "units": {"windows_per_s": "windows/s", "us_per_window": "microseconds"}},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
