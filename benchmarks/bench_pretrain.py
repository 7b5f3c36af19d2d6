"""``clinseq bench pretrain`` as a script, with every option of ``clinseq.bench.pretrain.run``.

``python benchmarks/bench_pretrain.py --help`` shows what the suite measures and its options; results go to
``benchmarks/results/pretrain_*.json`` (``results/quick/`` with ``--quick``).
"""

from clinseq.bench import pretrain
from clinseq.bench.harness import script

if __name__ == "__main__":
    script(pretrain.run)
