"""Fault injection, the long setting (issue 14): kill N conversions and N training runs at random points
(SIGKILL), resume each and compare its digest with the uninterrupted run's.

    python benchmarks/fault_injection.py --seeds 20

Runs ``tests/test_fault_injection.py`` with ``CLINSEQ_FAULT_SEEDS=N`` (the CI setting is 2 conversions
and 1 training run), prints where each run was killed and how it resumed, and writes a summary to
``benchmarks/results/fault_injection.json``. Needs the real data (``$CLINSEQ_DATA``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="kills of each kind (default 20)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fault_injection.json")
    args = parser.parse_args(argv)
    env = {**os.environ, "CLINSEQ_FAULT_SEEDS": str(args.seeds)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        "tests/test_fault_injection.py",
    ]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = re.findall(r"(?:conversion|training) seed \d+: [^\n]*", proc.stdout)
    print("\n".join(lines))
    summary = re.findall(r"(\d+) (passed|failed|error)", proc.stdout)
    counts = {kind: int(n) for n, kind in summary}
    passed, failed = counts.get("passed", 0), counts.get("failed", 0)
    print(f"{passed} resumed runs equal the uninterrupted one, {failed} differ")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seeds": args.seeds, "counts": counts, "runs": lines}, indent=1))
    print(f"wrote {args.out}")
    if proc.returncode:
        print(proc.stdout[-4000:], proc.stderr[-2000:], file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
