"""Random window reads: clinseq's store against the publishers' readers on the same windows, one core.

ECG: random 12-lead 1,000-sample windows of the real PTB-XL 500 Hz records, store vs
``wfdb.rdrecord(sampfrom, sampto)`` (physical mV). EEG: random 21-channel 1,000-sample windows of the
real EEGMAT EDF files, store vs mne ``raw.get_data(start, stop)`` — with each file opened once
(``preload=False``, mne's fastest random access) and opened per window (like ``wfdb.rdrecord``),
physical µV. Every reference window is checked against the store's. The process is pinned to one CPU
and numeric libraries to one thread (``threadpoolctl``; torch one thread). The data come from
``$CLINSEQ_DATA`` (``ptbxl/`` and ``eeg/eegmat/``), converted into a temporary store first.

Figures: windows/s by wall clock and per second of this process's CPU time (on a machine shared with
other jobs the wall rate includes waiting for the core), µs per window, and the store's speed-up over
each reference reader. Writes ``reads_cpu.json`` (+ ``reads_cpu.png``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from clinseq.bench.harness import need_data, print_table, report, resolve_device, save_bars

__all__ = ["WINDOW", "run"]

WINDOW = 1000


def pin_to_one_cpu() -> list[int]:
    """Pin this process to the first CPU it may use (Linux); returns the affinity set."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        return sorted(os.sched_getaffinity(0))
    return []


def random_windows(store: Any, n: int, rng: np.random.Generator):
    rec = store.recordings
    picks = rng.integers(0, rec.height, size=n)
    n_samples = rec["n_samples"].to_numpy()[picks]
    starts = (rng.random(n) * (n_samples - WINDOW + 1)).astype(np.int64)
    return rec["recording_id"].to_numpy()[picks], starts, rec["source"].to_numpy()[picks]


class Clock:
    """Wall time and this process's CPU time (user + system) of a block. On a machine shared with other
    jobs the wall time includes waiting for the core; the CPU time is what the reads themselves cost."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def time_store(store: Any, ids: np.ndarray, starts: np.ndarray, units: str) -> Clock:
    store.read_window(int(ids[0]), 0, WINDOW, units=units)  # map the part once, outside the timing
    checksum = 0.0
    with Clock() as clock:
        for rid, start in zip(ids.tolist(), starts.tolist(), strict=True):
            checksum += float(store.read_window(rid, start, WINDOW, units=units)[0, 0])
    return clock


def row(reader: str, n: int, clock: Clock) -> dict:
    return {
        "reader": reader,
        "windows": n,
        "windows_per_s": round(n / clock.wall),
        "windows_per_cpu_s": round(n / clock.cpu),
        "us_per_window": round(1e6 * clock.wall / n, 1),
    }


def ratio(a: dict, b: dict) -> dict[str, float]:
    """Speed-up of reader ``a`` over ``b``, by wall time and by CPU time."""
    return {
        "wall": round(a["windows_per_s"] / b["windows_per_s"], 1),
        "cpu": round(a["windows_per_cpu_s"] / b["windows_per_cpu_s"], 1),
    }


def check(reference: list[np.ndarray], store: Any, ids, starts, scale: float, what: str) -> None:
    """The reference reader's windows equal the store's (checked outside the timing)."""
    for window, rid, start in zip(reference, ids, starts, strict=False):
        want = store.read_window(int(rid), int(start), WINDOW)
        if not np.allclose(window * scale, want, rtol=1e-6, atol=1e-3 if scale != 1 else 1e-6):
            raise AssertionError(f"store and {what} disagree on recording {rid} at sample {start}")


def run(
    *,
    device: str = "cpu",
    quick: bool = False,
    out_dir: str | Path | None = None,
    windows: int | None = None,
    wfdb_windows: int | None = None,
    mne_windows: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the window-read comparison (CPU only: ``device`` is recorded, reads never touch a GPU).

    Defaults: 20,000 store windows per modality, 1,000 wfdb and 1,000 mne windows; ``quick``: 2,000 /
    200 / 200. Returns ``{"json": path, "figures": [...], "result": payload}``.
    """
    import mne
    import torch
    import wfdb
    from threadpoolctl import threadpool_limits

    from clinseq.io import EEGSource, PTBXLSource, convert
    from clinseq.timeline import TimelineStore

    resolve_device(device)
    windows = windows or (2_000 if quick else 20_000)
    wfdb_windows = wfdb_windows or (200 if quick else 1_000)
    mne_windows = mne_windows or (200 if quick else 1_000)
    ptbxl = need_data("ptbxl", "reads", "the PTB-XL subset")
    eegmat = need_data("eeg/eegmat", "reads", "the EEGMAT EDF files")
    cpus = pin_to_one_cpu()
    torch.set_num_threads(1)
    mne.set_log_level("ERROR")
    tmp = Path(tempfile.mkdtemp(prefix="clinseq-bench-"))
    rng = np.random.default_rng(seed)
    try:
        with threadpool_limits(1):
            # -- ECG: PTB-XL 500 Hz vs wfdb ------------------------------------------------------------
            ecg = TimelineStore.open(
                convert(PTBXLSource(ptbxl, 500), tmp / "ptbxl500", on_error="skip", progress=False)
            )
            ids, starts, sources = random_windows(ecg, windows, rng)
            ecg_store = time_store(ecg, ids, starts, "physical")
            ecg_adc = time_store(ecg, ids, starts, "adc")
            n_wfdb = min(wfdb_windows, windows)
            with Clock() as wfdb_clock:
                wfdb_read = [
                    wfdb.rdrecord(
                        str(ptbxl / sources[i]), sampfrom=int(starts[i]), sampto=int(starts[i]) + WINDOW
                    ).p_signal.T
                    for i in range(n_wfdb)
                ]
            check(wfdb_read, ecg, ids, starts, 1.0, "wfdb")

            # -- EEG: EEGMAT vs mne --------------------------------------------------------------------
            eeg = TimelineStore.open(convert(EEGSource(eegmat), tmp / "eegmat", progress=False))
            eids, estarts, esources = random_windows(eeg, windows, rng)
            eeg_store = time_store(eeg, eids, estarts, "physical")
            eeg_adc = time_store(eeg, eids, estarts, "adc")
            n_mne = min(mne_windows, windows)
            raws = {s: mne.io.read_raw_edf(eegmat / s, preload=False) for s in set(esources[:n_mne].tolist())}
            with Clock() as mne_open:
                mne_read = [
                    raws[esources[i]].get_data(start=int(estarts[i]), stop=int(estarts[i]) + WINDOW)
                    for i in range(n_mne)
                ]
            check(mne_read, eeg, eids, estarts, 1e6, "mne")  # mne returns V, the store µV
            with Clock() as mne_reopen:
                for i in range(n_mne):
                    raw = mne.io.read_raw_edf(eegmat / esources[i], preload=False)
                    raw.get_data(start=int(estarts[i]), stop=int(estarts[i]) + WINDOW)
            eeg_channels = int(eeg.recordings["n_channels"][0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ecg_rows = [
        row("clinseq store (mmap, physical mV)", windows, ecg_store),
        row("clinseq store (mmap, ADC int16 view)", windows, ecg_adc),
        row("wfdb.rdrecord(sampfrom, sampto)", n_wfdb, wfdb_clock),
    ]
    eeg_rows = [
        row("clinseq store (mmap, physical uV)", windows, eeg_store),
        row("clinseq store (mmap, ADC int16 view)", windows, eeg_adc),
        row("mne get_data(start, stop), file opened once", n_mne, mne_open),
        row("mne read_raw_edf + get_data per window", n_mne, mne_reopen),
    ]
    ratios = {
        "ecg_store_over_wfdb": ratio(ecg_rows[0], ecg_rows[2]),
        "eeg_store_over_mne_opened_once": ratio(eeg_rows[0], eeg_rows[2]),
        "eeg_store_over_mne_per_window": ratio(eeg_rows[0], eeg_rows[3]),
    }
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    columns = ["reader", "windows", "windows_per_s", "windows_per_cpu_s", "us_per_window"]
    print(f"ECG: PTB-XL 500 Hz, 12 leads x {WINDOW} samples; CPU affinity {cpus}; load average {load}")
    print_table(ecg_rows, columns)
    print(f"EEG: EEGMAT 500 Hz, {eeg_channels} channels x {WINDOW} samples")
    print_table(eeg_rows, columns)
    for name, value in ratios.items():
        print(f"ratio {name}: {value['wall']}x by wall time, {value['cpu']}x by CPU time")
    print("targets (ECG): >= 50x wfdb and >= 20,000 windows/s on one core")
    payload = {
        "one_core": {"cpu_affinity": cpus, "threads": "threadpoolctl limit 1, torch 1 thread"},
        # other jobs may share the machine's cores: wall-time rates then include waiting for the core
        "load_average_1_5_15_min": list(load) if load else None,
        "window": {"samples": WINDOW, "sampling_rate_hz": 500},
        "ecg": {"dataset": "ptbxl records500", "channels": 12, "units": "mV", "results": ecg_rows},
        "eeg": {"dataset": "eegmat", "channels": eeg_channels, "units": "uV", "results": eeg_rows},
        "ratios": ratios,
        "ratio_store_over_wfdb": ratios["ecg_store_over_wfdb"]["wall"],
        "targets": {"ecg_windows_per_s": 20_000, "ecg_ratio_over_wfdb": 50},
        "units": {
            "windows": "windows read",
            "windows_per_s": "windows per wall-clock second",
            "windows_per_cpu_s": "windows per second of this process's CPU time",
            "us_per_window": "wall-clock microseconds",
            "cpu_affinity": "CPU index",
            "load_average_1_5_15_min": "runnable processes (1, 5, 15 min averages)",
            "samples": "signal samples per channel",
            "sampling_rate_hz": "Hz",
            "channels": "signal channels",
            "ratios": "speed-up factor (x)",
            "ratio_store_over_wfdb": "speed-up factor (x), wall clock",
            "ecg_windows_per_s": "windows per wall-clock second",
            "ecg_ratio_over_wfdb": "speed-up factor (x)",
        },
    }
    labels = [f"ECG: {r['reader']}" for r in ecg_rows] + [f"EEG: {r['reader']}" for r in eeg_rows]
    title = f"Random {WINDOW}-sample window reads, one core (ECG: PTB-XL 12 leads; EEG: EEGMAT)"
    rates = {"windows/s": [r["windows_per_s"] for r in ecg_rows + eeg_rows]}

    def figure(path: Path) -> Path | None:
        return save_bars(path, title, "windows per second (log scale)", labels, rates, logx=True)

    return report("reads_cpu", payload, quick=quick, out_dir=out_dir, figure=figure)
