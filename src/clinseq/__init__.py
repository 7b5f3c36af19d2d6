"""clinseq: self-supervised learning on clinical sequences (ECG, EEG, EHR).

Layers, in the one direction data flows: ``io`` (sources) → ``timeline`` (the Arrow store) →
``data`` (datasets, samplers, views, splits) → ``models`` (encoders) → ``objectives`` (losses) →
``kernels`` (grouped InfoNCE) → ``train`` / ``eval``.
"""

__version__ = "0.1.0"
