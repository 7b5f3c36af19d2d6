"""Grouped InfoNCE, forward + backward: fused Triton vs chunked torch vs naive torch vs torch.compile.

The suite is :mod:`clinseq.bench.loss` (also ``clinseq bench loss``); this script is its command line.
Usage (from the project root)::

    .venv/bin/python benchmarks/bench_info_nce.py --device cuda    # the full GPU sweep (bf16)
    .venv/bin/python benchmarks/bench_info_nce.py --device cpu     # CPU sizes (fp32) + the 16k memory check
    .venv/bin/python benchmarks/bench_info_nce.py --quick          # N = 1k, 4k, D = 128: a minute
    .venv/bin/python benchmarks/bench_info_nce.py --device cpu --parts grouped   # only the COMET rows

(Before ``clinseq bench`` existed, ``--quick`` meant what ``--device cpu`` means now.) Prints a table and
writes ``benchmarks/results/info_nce_<device>.json`` (``cpu``, ``h100``, ...) and a PNG of time and peak
memory against N. ``--parts`` runs the SimCLR sweep (``sweep``) and/or the COMET-shaped rows
(``grouped``: group-restricted vs full scan over B samples × 400 rows); a part not run keeps its
figures from the existing result file.
"""

from __future__ import annotations

import argparse

from clinseq.bench import loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--quick", action="store_true", help="small sizes, no compile, no 16k check")
    parser.add_argument("--sizes", type=int, nargs="*", help="N values (default: by device)")
    parser.add_argument("--dims", type=int, nargs="*", default=None)
    parser.add_argument("--dtype", default=None, help="bfloat16 on CUDA, float32 on the CPU by default")
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--budget-s", type=float, default=None, help="skip steps predicted slower")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1 on the CPU)")
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results[/quick])")
    parser.add_argument(
        "--parts", nargs="*", default=list(loss.PARTS), choices=loss.PARTS, help="what to (re-)measure"
    )
    parser.add_argument("--samples", type=int, nargs="*", default=None, help="B values of the grouped rows")
    args = parser.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    loss.run(
        device=device,
        quick=args.quick,
        out_dir=args.out,
        sizes=tuple(args.sizes) if args.sizes else None,
        dims=tuple(args.dims) if args.dims else None,
        dtype=args.dtype,
        methods=tuple(args.methods) if args.methods else None,
        repeats=args.repeats,
        budget_s=args.budget_s,
        threads=args.threads,
        parts=tuple(args.parts),
        samples=tuple(args.samples) if args.samples else None,
    )


if __name__ == "__main__":
    main()
