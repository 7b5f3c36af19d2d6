"""The whole input path in windows/s: sampler → WindowDataset (batched reads) → views → collate → DataLoader.

12-lead 1,000-sample windows (2 s at 500 Hz) of the real PTB-XL subset, converted into a temporary store,
read in physical units (mV) and augmented with a realistic ECG chain, through ``DataLoader(num_workers=2)``
and in one process. Rates are measured after the first batch (so worker start-up is excluded; it is
reported separately). Each worker uses one torch thread (DataLoader's default); the in-process rows are
measured with one torch thread too, so they are per-core figures. Besides the wall-clock rate, the CPU
time of the main process and the workers over the same span gives windows per CPU-second: on a shared
machine the wall-clock rate depends on what else runs, the CPU cost per window does not.

Target: ≥ 10,000 windows/s with 2 workers on 2 cores. Writes ``loader_cpu.json`` (+ PNG).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from clinseq.bench.harness import need_data, print_table, report, resolve_device, save_bars

__all__ = ["RATE", "WINDOW_S", "ecg_chain", "pmq_chain", "run"]

RATE, WINDOW_S = 500.0, 2.0  # 1,000 samples


def ecg_chain():
    """A SimCLR-style ECG chain (cf. Mehari & Strodthoff 2022's ECG views), amplitudes in mV."""
    from clinseq.data import (
        AmplitudeScale,
        BaselineWander,
        ChannelMask,
        Compose,
        GaussianNoise,
        PowerlineNoise,
        RandomApply,
        TimeMask,
    )

    return Compose(
        [
            RandomApply(AmplitudeScale(0.8, 1.25, per_channel=True), 0.5),
            GaussianNoise((20.0, 40.0)),
            RandomApply(BaselineWander(RATE, amplitude=(0.0, 0.3)), 0.5),
            RandomApply(PowerlineNoise(RATE, 50.0, amplitude=(0.0, 0.05)), 0.5),
            RandomApply(ChannelMask(0.25), 0.5),
            TimeMask(0.1, 5),
        ]
    )


def pmq_chain():
    """PMQ's views: time masking 0.5 and frequency perturbation 0.1 (design §5)."""
    from clinseq.data import Compose, FrequencyPerturbation, TimeMask

    return Compose([TimeMask(0.5, 1), FrequencyPerturbation(0.1)])


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of other processes (the loader's workers), from /proc (Linux)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def measure(loader: Any, sampler: Any, n_windows: int) -> dict:
    """Iterate (over epochs) until ``n_windows`` windows have arrived, timing all but the first batch."""
    t0 = time.perf_counter()
    seen, checksum, started = 0, 0.0, False
    t_first = cpu0 = 0.0
    pids: list[int] = []
    for epoch in range(10**6):
        sampler.set_epoch(epoch)
        iterator = iter(loader)
        pids = [w.pid for w in getattr(iterator, "_workers", [])]
        for batch in iterator:
            if not started:  # the first batch pays for worker start-up: time from here
                started, t_first = True, time.perf_counter()
                cpu0 = time.process_time() + _cpu_seconds(pids)
                continue
            seen += batch["x"].shape[0]
            checksum += float(batch["x"][0, 0, 0])  # touch the data
            if seen >= n_windows:
                break
        if seen >= n_windows:
            break
    elapsed = time.perf_counter() - t_first
    cpu = time.process_time() + _cpu_seconds(pids) - cpu0
    return {
        "windows": seen,
        "seconds": round(elapsed, 3),
        "windows_per_s": round(seen / elapsed),
        "cpu_s": round(cpu, 3),
        "windows_per_cpu_s": round(seen / cpu),
        "first_batch_s": round(t_first - t0, 3),
    }


def run(
    *,
    device: str = "cpu",
    quick: bool = False,
    out_dir: str | Path | None = None,
    windows: int | None = None,
    batch_size: int = 256,
    workers: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure the loader configurations (CPU work: ``device`` is recorded only).

    ``windows`` per measurement: 40,000 by default, 4,096 with ``quick``. Returns ``{"json": path,
    "figures": [...], "result": payload}``.
    """
    import torch
    from torch.utils.data import DataLoader

    from clinseq.data import PatientBatchSampler, RandomWindowSampler, WindowDataset, collate_windows
    from clinseq.io import PTBXLSource, convert
    from clinseq.timeline import TimelineStore

    resolve_device(device)
    windows = windows or (4_096 if quick else 40_000)
    ptbxl = need_data("ptbxl", "loader", "the PTB-XL subset")
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="clinseq-bench-"))
    rows = []
    try:
        store = TimelineStore.open(
            convert(PTBXLSource(ptbxl, 500), tmp / "ptbxl500", on_error="skip", progress=False)
        )
        n_rec = store.recordings.height
        # Enough visits per recording that one epoch holds all the windows of a measurement.
        visits = -(-2 * windows // n_rec)

        def random_sampler() -> RandomWindowSampler:
            return RandomWindowSampler(
                store.recordings, batch_size, windows_per_recording=visits, window_s=WINDOW_S, seed=seed
            )

        def patient_sampler() -> PatientBatchSampler:
            # PCLR layout on a subset where most patients have one ECG: short_patients="fill".
            return PatientBatchSampler(
                store.recordings, batch_size // 2, 2, short_patients="fill", window_s=WINDOW_S, seed=seed
            )

        def one(transform, sampler_fn, n_workers: int, n_windows: int) -> dict:
            dataset = WindowDataset(store, WINDOW_S, transform=transform, seed=seed)
            sampler = sampler_fn()
            loader = DataLoader(
                dataset,
                batch_sampler=sampler,
                collate_fn=collate_windows,
                num_workers=n_workers,
                persistent_workers=n_workers > 0,
            )
            return measure(loader, sampler, n_windows)

        configs = [
            ("read only", None, random_sampler, 0),
            ("read + ECG chain", ecg_chain(), random_sampler, 0),
            ("read only", None, random_sampler, workers),
            ("read + ECG chain", ecg_chain(), random_sampler, workers),
            ("read + PMQ chain", pmq_chain(), random_sampler, workers),
        ]
        for name, transform, sampler_fn, n_workers in configs:
            result = one(transform, sampler_fn, n_workers, windows)
            rows.append({"path": name, "sampler": "RandomWindowSampler", "workers": n_workers, **result})
            print_table(rows[-1:], list(rows[-1]))
        result = one(ecg_chain(), patient_sampler, workers, windows // 4)
        rows.append(
            {"path": "read + ECG chain", "sampler": "PatientBatchSampler(fill)", "workers": workers, **result}
        )

        # What limits it: the chain alone on one core, on batches already in memory.
        x = WindowDataset(store, WINDOW_S).fetch(random_sampler().batch_at(0))["x"]
        generator = torch.Generator().manual_seed(0)
        per_view = {}
        for view in [*ecg_chain().views, *pmq_chain().views]:
            view(x, generator)
            t0 = time.perf_counter()
            for _ in range(5):
                view(x, generator)
            per_view[repr(view)] = round((time.perf_counter() - t0) / 5 / x.shape[0] * 1e6, 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    columns = ["path", "sampler", "workers", "windows", "windows_per_s", "windows_per_cpu_s", "first_batch_s"]
    print_table(rows, columns)
    print("\nper-view cost, one core (µs per 12 × 1,000 window):")
    for name, us in per_view.items():
        print(f"  {us:8.1f}  {name}")
    headline = next(r for r in rows if r["workers"] == workers and r["path"] == "read + ECG chain")
    load = os.getloadavg()[0]
    print(
        f"\n{workers} workers, read + ECG chain: {headline['windows_per_s']:,} windows/s measured "
        f"(target ≥ 10,000), {headline['windows_per_cpu_s']:,} windows per CPU-second, so "
        f"{2 * headline['windows_per_cpu_s']:,} windows/s on 2 otherwise idle cores; load average "
        f"{load:.1f} on {os.cpu_count()} CPUs during the run"
    )
    payload = {
        "window": {"channels": 12, "samples": int(RATE * WINDOW_S), "sampling_rate_hz": RATE, "units": "mV"},
        "batch_size": batch_size,
        "results": rows,
        "view_us_per_window": per_view,
        "load_average_1min_at_end": load,
        "units": {
            "channels": "signal channels",
            "samples": "signal samples per channel",
            "sampling_rate_hz": "Hz",
            "batch_size": "windows per batch",
            "workers": "DataLoader worker processes (0 = in the main process)",
            "windows": "windows delivered",
            "seconds": "wall-clock seconds",
            "windows_per_s": "windows/s (wall clock)",
            "cpu_s": "CPU seconds of the main process and the workers",
            "windows_per_cpu_s": "windows per CPU-second of the main process and workers",
            "first_batch_s": "seconds (includes worker start-up)",
            "view_us_per_window": "microseconds per 12 x 1,000 window, one core",
            "load_average_1min_at_end": "runnable processes (1 min average)",
        },
    }
    labels = [f"{r['path']}, {r['sampler']}, {r['workers']} workers" for r in rows]
    title = f"Input path, PTB-XL 12 x 1,000 windows, batch {batch_size}"

    def figure(path: Path) -> Path | None:
        rates = {"windows/s": [r["windows_per_s"] for r in rows]}
        return save_bars(path, title, "windows per second (wall clock)", labels, rates)

    return report("loader_cpu", payload, quick=quick, out_dir=out_dir, figure=figure)
