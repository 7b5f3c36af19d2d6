"""``clinseq bench reads`` as a script, with every option of ``clinseq.bench.reads.run``.

``python benchmarks/bench_reads.py --help`` shows what the suite measures and its options; results go to
``benchmarks/results/reads_*.json`` (``results/quick/`` with ``--quick``).
"""

from clinseq.bench import reads
from clinseq.bench.harness import script

if __name__ == "__main__":
    script(reads.run)
