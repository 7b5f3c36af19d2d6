"""The sampler registry: ``data.sampler`` name → batch-sampler class (the one place sampler names live).

The config schema (:mod:`clinseq.train.config`) validates ``data.sampler`` against it and the builders
construct from it; adding a sampler is one entry here.
"""

from __future__ import annotations

from clinseq.data.samplers import (
    HierarchicalSampler,
    PatientBatchSampler,
    PolyWindowSampler,
    RandomWindowSampler,
)

__all__ = ["SAMPLERS"]

#: ``data.sampler`` → class. ``events`` batches EHR patients (one key per patient; the dataset,
#: :class:`~clinseq.data.event_pairs.PatientEventPairs`, gives two event windows of each).
SAMPLERS: dict[str, type] = {
    "patient": PatientBatchSampler,
    "polywindow": PolyWindowSampler,
    "hierarchical": HierarchicalSampler,
    "random": RandomWindowSampler,
    "events": RandomWindowSampler,
}
