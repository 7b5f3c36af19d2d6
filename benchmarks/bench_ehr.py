"""``clinseq bench ehr`` as a script, with every option of ``clinseq.bench.ehr.run``.

``python benchmarks/bench_ehr.py --help`` shows what the suite measures and its options; results go to
``benchmarks/results/ehr_*.json`` (``results/quick/`` with ``--quick``).
"""

from clinseq.bench import ehr
from clinseq.bench.harness import script

if __name__ == "__main__":
    script(ehr.run)
