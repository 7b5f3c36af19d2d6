"""``python -m clinseq.bench SUITE [--device cpu|cuda] [--quick] [--out DIR]``: one suite in this process.

``clinseq bench`` starts one of these per suite; its last line of output is ``clinseq-bench-result: {...}``
(the result file and figures), which ``clinseq bench`` reads to print its summary.
"""

from __future__ import annotations

import argparse
import json
import sys

from clinseq.bench import MARKER, SUITES, run_suite
from clinseq.utils import ClinseqError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clinseq.bench", description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=tuple(SUITES))
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes on a 2-core CPU)")
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results[/quick])")
    args = parser.parse_args(argv)
    try:
        result = run_suite(args.suite, device=args.device, quick=args.quick, out_dir=args.out)
    except ClinseqError as exc:
        print(f"clinseq bench {args.suite}: error: {exc}", file=sys.stderr)
        return 2
    files = {"json": str(result["json"]), "figures": [str(f) for f in result["figures"]]}
    print(MARKER + json.dumps(files), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
