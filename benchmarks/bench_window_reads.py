"""Random window reads: clinseq's store against the publishers' readers on the same windows, one core.

The suite is :mod:`clinseq.bench.reads` (also ``clinseq bench reads``); this script is its command line.
ECG: random 12-lead 1,000-sample windows of the real PTB-XL 500 Hz records, store vs
``wfdb.rdrecord(sampfrom, sampto)``; EEG: random 21-channel windows of the real EEGMAT EDF files, store vs
mne. Run from the project root::

    python benchmarks/bench_window_reads.py [--windows 20000] [--wfdb-windows 1000] [--mne-windows 1000]

Writes ``benchmarks/results/window_reads.json`` (``results/quick/`` with ``--quick``) and a PNG.
"""

from __future__ import annotations

import argparse

from clinseq.bench import reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=None, help="store windows to read (each modality)")
    parser.add_argument("--wfdb-windows", type=int, default=None, help="wfdb windows to read")
    parser.add_argument("--mne-windows", type=int, default=None, help="mne windows to read (each variant)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2,000 / 200 / 200 windows")
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results[/quick])")
    args = parser.parse_args()
    reads.run(
        quick=args.quick,
        out_dir=args.out,
        windows=args.windows,
        wfdb_windows=args.wfdb_windows,
        mne_windows=args.mne_windows,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
