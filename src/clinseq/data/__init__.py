"""Datasets, patient-aware samplers, views and patient-level splits (design §4).

=============================  =====================================================================
``WindowDataset``              windows of a store keyed by ``WindowKey(recording_id, start)``; batched
                               reads, ADC → mV/µV, transform in the workers; ``collate_windows``
``PatientBatchSampler``        P patients × V recordings (PCLR); ``short_patients="drop"|"fill"``
``PolyWindowSampler``          R recordings × M windows with bounded overlap (poly-window)
``HierarchicalSampler``        P patients × R recordings × M windows (COMET's levels)
``RandomWindowSampler``        one random window per recording (SimCLR, CPC, CLOCS, MoCo)
``views``                      RandomCrop, AmplitudeScale, GaussianNoise, BaselineWander, PowerlineNoise,
                               ChannelMask, TimeMask, FrequencyPerturbation; Compose, RandomApply, MultiView
splits                         ``patient_split``, ``ptbxl_split``, ``label_fraction_subset``,
                               ``assert_no_leakage``, ``recordings_of``
EHR                            ``EventSequenceDataset``, ``collate_events``, ``CodeVocabulary``,
                               ``ValueNormalizer`` (``clinseq.data.event_sequences``)
=============================  =====================================================================
"""

from clinseq.data.datasets import RANDOM_START, WindowDataset, WindowKey, adc_to_physical, collate_windows
from clinseq.data.event_sequences import CodeVocabulary, EventSequenceDataset, ValueNormalizer, collate_events
from clinseq.data.samplers import (
    HierarchicalSampler,
    PatientBatchSampler,
    PolyWindowSampler,
    RandomWindowSampler,
)
from clinseq.data.splits import (
    PTBXL_FOLDS,
    assert_no_leakage,
    label_fraction_subset,
    patient_split,
    ptbxl_split,
    recordings_of,
)
from clinseq.data.views import (
    AmplitudeScale,
    BaselineWander,
    ChannelMask,
    Compose,
    FrequencyPerturbation,
    GaussianNoise,
    MultiView,
    PowerlineNoise,
    RandomApply,
    RandomCrop,
    TimeMask,
    View,
)

__all__ = [
    "PTBXL_FOLDS",
    "RANDOM_START",
    "AmplitudeScale",
    "BaselineWander",
    "ChannelMask",
    "CodeVocabulary",
    "Compose",
    "EventSequenceDataset",
    "FrequencyPerturbation",
    "GaussianNoise",
    "HierarchicalSampler",
    "MultiView",
    "PatientBatchSampler",
    "PolyWindowSampler",
    "PowerlineNoise",
    "RandomApply",
    "RandomCrop",
    "RandomWindowSampler",
    "TimeMask",
    "ValueNormalizer",
    "View",
    "WindowDataset",
    "WindowKey",
    "adc_to_physical",
    "assert_no_leakage",
    "collate_events",
    "collate_windows",
    "label_fraction_subset",
    "patient_split",
    "ptbxl_split",
    "recordings_of",
]
