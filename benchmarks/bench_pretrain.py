"""End-to-end pretraining throughput: loader → views → encoder → objective → backward → optimizer.

The suite is :mod:`clinseq.bench.pretrain` (also ``clinseq bench pretrain``); this script is its command
line. The PTB-XL recipes (PCLR, PCLR with an ECG augmentation chain, CPC) with their own loader settings,
stepped by ``Trainer.train_step``: windows/s, loader wait per step, the fraction of the time the GPU (or,
on the CPU, the step) is busy, and the step on data already in memory. Usage (from the project root)::

    .venv/bin/python benchmarks/bench_pretrain.py --device cuda
    .venv/bin/python benchmarks/bench_pretrain.py --device cpu [--num-workers 2] [--steps 5]
    .venv/bin/python benchmarks/bench_pretrain.py --quick        # the recipes' smoke profile

Writes ``benchmarks/results/pretrain_<device>.json`` and a PNG of the step time split.
"""

from __future__ import annotations

import argparse

from clinseq.bench import pretrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--quick", action="store_true", help="the recipes' smoke profile, 3 timed steps")
    parser.add_argument("--configs", nargs="*", default=None, help=f"some of {list(pretrain.CONFIGS)}")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=None, help="timed steps")
    parser.add_argument("--compute-steps", type=int, default=None, help="steps on one in-memory batch")
    parser.add_argument("--num-workers", type=int, default=None, help="override the recipe's loader workers")
    parser.add_argument("--recipes", default=None, help="folder with ptbxl/pclr.yaml (default ./recipes)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1)")
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results[/quick])")
    args = parser.parse_args()
    pretrain.run(
        device=args.device,
        quick=args.quick,
        out_dir=args.out,
        configs=tuple(args.configs) if args.configs else None,
        warmup=args.warmup,
        steps=args.steps,
        compute_steps=args.compute_steps,
        num_workers=args.num_workers,
        recipes=args.recipes,
        threads=args.threads,
    )


if __name__ == "__main__":
    main()
