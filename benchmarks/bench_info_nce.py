"""``clinseq bench info_nce`` as a script, with every option of ``clinseq.bench.info_nce.run``.

``python benchmarks/bench_info_nce.py --help`` shows what the suite measures and its options; results go to
``benchmarks/results/info_nce_*.json`` (``results/quick/`` with ``--quick``).
"""

from clinseq.bench import info_nce
from clinseq.bench.harness import script

if __name__ == "__main__":
    script(info_nce.run)
