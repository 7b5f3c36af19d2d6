"""The whole input path in windows/s: sampler → WindowDataset (batched reads) → views → collate → DataLoader.

The suite is :mod:`clinseq.bench.loader` (also ``clinseq bench loader``); this script is its command line.
12-lead 1,000-sample windows of the real PTB-XL subset, augmented with a realistic ECG chain, through
``DataLoader(num_workers=2)`` and in one process. Run from the project root::

    python benchmarks/bench_loader.py [--windows 40000] [--batch-size 256] [--workers 2] [--quick]

Target: ≥ 10,000 windows/s with 2 workers on 2 cores. Writes ``benchmarks/results/loader_cpu.json``.
"""

from __future__ import annotations

import argparse

from clinseq.bench import loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=None, help="windows per measurement (40,000)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="4,096 windows per measurement")
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results[/quick])")
    args = parser.parse_args()
    loader.run(
        quick=args.quick,
        out_dir=args.out,
        windows=args.windows,
        batch_size=args.batch_size,
        workers=args.workers,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
