"""Encoder throughput over sequence length: ResNet1d, CPCEncoder, PatchTransformer at 1 k → 1 M samples.

The suite is :mod:`clinseq.bench.encoder` (also ``clinseq bench encoder``); this script is its command
line. Forward and forward + backward: items/s, input samples/s, tokens/s, peak memory and the SDPA
backend; the SDPA backends forced one by one; gradient checkpointing; one hour of 19-channel EEG at 256 Hz
(68,400 tokens) forward + backward and through ``embed_chunked``. Usage (from the project root)::

    .venv/bin/python benchmarks/bench_encoder.py --device cuda     # the full sweep (bf16 autocast)
    .venv/bin/python benchmarks/bench_encoder.py --device cpu      # lengths while a step fits 30 s
    .venv/bin/python benchmarks/bench_encoder.py --quick           # 1 k, 4 k, 16 k: half a minute

Writes ``benchmarks/results/encoder_<device>.json`` and ``encoder_<device>.png`` (throughput and memory per
item against the length).
"""

from __future__ import annotations

import argparse

from clinseq.bench import encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--quick", action="store_true", help="lengths 1 k, 4 k, 16 k; 1.5 s per step at most")
    parser.add_argument("--lengths", type=int, nargs="*", help="samples per channel (default 1 k … 1 M)")
    parser.add_argument("--budget-s", type=float, default=None, help="skip steps predicted slower")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1)")
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results[/quick])")
    args = parser.parse_args()
    encoder.run(
        device=args.device,
        quick=args.quick,
        out_dir=args.out,
        lengths=tuple(args.lengths) if args.lengths else None,
        budget_s=args.budget_s,
        threads=args.threads,
    )


if __name__ == "__main__":
    main()
