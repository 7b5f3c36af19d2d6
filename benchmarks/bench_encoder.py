"""``clinseq bench encoder`` as a script, with every option of ``clinseq.bench.encoder.run``.

``python benchmarks/bench_encoder.py --help`` shows what the suite measures and its options; results go to
``benchmarks/results/encoder_*.json`` (``results/quick/`` with ``--quick``).
"""

from clinseq.bench import encoder
from clinseq.bench.harness import script

if __name__ == "__main__":
    script(encoder.run)
