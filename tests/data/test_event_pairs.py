"""EHR pairs on the real MIMIC-IV demo: two event windows per patient, and the EHR context of an ECG.

The ECG ↔ EHR pairs need MIMIC-IV-ECG waveforms with MIMIC-IV events of the same subjects, which the
shared data does not have: the context encoding is checked against ``EventSequenceDataset`` instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from clinseq.data.event_pairs import PatientEventPairs
from clinseq.data.event_sequences import EventSequenceDataset, encode_events
from clinseq.timeline import TimelineStore


def test_patient_event_pairs_give_two_windows_of_each_patient(mimic_demo_store: Path) -> None:
    store = TimelineStore.open(mimic_demo_store)
    patients = store.event_index.subject_ids[:12]
    pairs = PatientEventPairs.fit(store, patients, max_len=32, seed=0)
    batch = pairs.__getitems__([(i, -1) for i in range(6)])
    assert batch["codes"].shape == (12, 32)
    assert torch.equal(batch["patient_id"][:6], batch["patient_id"][6:])
    long = [i for i in range(6) if int(batch["padding_mask"][i].sum()) == 32]
    differ = [i for i in long if not torch.equal(batch["codes"][i], batch["codes"][i + 6])]
    assert long and differ  # patients with more than 32 events get two different crops


def test_ehr_context_encoding_matches_the_event_sequence_dataset(mimic_demo_store: Path) -> None:
    store = TimelineStore.open(mimic_demo_store)
    pid = int(store.event_index.subject_ids[3])
    pairs = PatientEventPairs.fit(store, [pid], max_len=64)
    events = store.patient(pid).events()
    assert events.height > 64
    # The dataset's second non-overlapping window (events 64..127) against our encoding of those events.
    ds = EventSequenceDataset(store.event_index, [pid], pairs.vocab, pairs.normalizer, max_len=64)
    item = ds[1]
    ours = encode_events(events.slice(64, 64), pairs.vocab, pairs.normalizer, 64)
    for key in ("codes", "time_delta_s", "values", "value_mask", "padding_mask"):
        np.testing.assert_array_equal(ours[key], item[key], err_msg=key)
    assert (ours["window_start_us"], ours["window_end_us"]) == (
        item["window_start_us"],
        item["window_end_us"],
    )
