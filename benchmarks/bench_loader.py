"""``clinseq bench loader`` as a script, with every option of ``clinseq.bench.loader.run``.

``python benchmarks/bench_loader.py --help`` shows what the suite measures and its options; results go to
``benchmarks/results/loader_*.json`` (``results/quick/`` with ``--quick``).
"""

from clinseq.bench import loader
from clinseq.bench.harness import script

if __name__ == "__main__":
    script(loader.run)
