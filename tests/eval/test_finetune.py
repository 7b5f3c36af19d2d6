"""Fine-tuning on tiny real data: the head learns, early stopping keeps the best epoch, inputs untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinseq.data.splits import ptbxl_split
from clinseq.errors import ConfigError
from clinseq.eval.finetune import fine_tune
from clinseq.eval.labels import ptbxl_task_labels
from clinseq.eval.metrics import auroc_per_class
from clinseq.models import ResNet1d


@pytest.fixture(scope="module")
def tiny(ptbxl_store):
    labels = ptbxl_task_labels(ptbxl_store, "superdiagnostic")
    split = ptbxl_split(ptbxl_store)
    rec = ptbxl_store.recordings
    patient_of = dict(zip(rec["recording_id"].to_list(), rec["patient_id"].to_list(), strict=True))
    pid = np.array([patient_of[r] for r in labels.recording_ids.tolist()])
    train = np.flatnonzero(np.isin(pid, split["train"]))[:32]
    val = np.flatnonzero(np.isin(pid, split["val"]))
    ids, y = labels.recording_ids, labels.y
    return ptbxl_store, ids[train], y[train], ids[val], y[val]


def _encoder() -> ResNet1d:
    torch.manual_seed(0)
    return ResNet1d(12, widths=(4, 8), downsample=(4,), kernel_size=8)


def test_frozen_head_learns_and_keeps_the_best_epoch(tiny) -> None:
    store, tr_ids, y_tr, va_ids, y_va = tiny
    encoder = _encoder()
    encoder.train()
    kwargs = dict(epochs=25, patience=25, lr=3e-2, batch_size=16, seed=1, progress=False)
    tuned = fine_tune(encoder, store, tr_ids, y_tr, va_ids, y_va, **kwargs)
    losses = [h["train_loss"] for h in tuned.history]
    assert len(losses) == 25 and losses[-1] < 0.8 * losses[0]
    best = tuned.history[tuned.best_epoch - 1]
    assert best["val_auroc"] == max(h["val_auroc"] for h in tuned.history)
    logits = tuned.decision_function(store, va_ids)
    assert logits.shape == y_va.shape
    assert np.nanmean(auroc_per_class(y_va, logits)) == pytest.approx(best["val_auroc"], abs=1e-9)
    again = fine_tune(encoder, store, tr_ids, y_tr, va_ids, y_va, **kwargs)
    np.testing.assert_array_equal(again.decision_function(store, va_ids), logits)  # seeded
    assert tuned.encoder is encoder and encoder.training  # frozen: the caller's encoder, mode kept


def test_early_stopping_after_patience_epochs_without_improvement(tiny) -> None:
    store, tr_ids, y_tr, va_ids, y_va = tiny
    # A learning rate far below float32 resolution: validation AUROC never improves after epoch 1.
    tuned = fine_tune(
        _encoder(), store, tr_ids, y_tr, va_ids, y_va, lr=1e-20, epochs=20, patience=2, progress=False
    )
    assert len(tuned.history) == 3 and tuned.best_epoch == 1


def test_training_the_encoder_leaves_the_callers_encoder_untouched(tiny) -> None:
    store, tr_ids, y_tr, va_ids, y_va = tiny
    encoder = _encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    va_ids, y_va = va_ids[:20], y_va[:20]
    tuned = fine_tune(
        encoder,
        store,
        tr_ids,
        y_tr,
        va_ids,
        y_va,
        train_encoder=True,
        window_s=2.5,
        epochs=2,
        patience=5,
        batch_size=16,
        seed=0,
        progress=False,
    )
    for k, v in encoder.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert tuned.encoder is not encoder
    changed = [k for k, v in tuned.encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the fine-tuned copy must have trained"
    assert len(tuned.history) == 2 and 1 <= tuned.best_epoch <= 2
    assert tuned.decision_function(store, va_ids[:5]).shape == (5, y_tr.shape[1])


def test_bad_input_raises_config_error(tiny) -> None:
    store, tr_ids, y_tr, va_ids, y_va = tiny
    enc = _encoder()
    with pytest.raises(ConfigError, match="y_train"):
        fine_tune(enc, store, tr_ids, y_tr[:3], va_ids, y_va, progress=False)
    with pytest.raises(ConfigError, match="y_val"):
        fine_tune(enc, store, tr_ids, y_tr, va_ids, y_va[:, :2], progress=False)
    with pytest.raises(ConfigError, match="epochs"):
        fine_tune(enc, store, tr_ids, y_tr, va_ids, y_va, epochs=0, progress=False)
    with pytest.raises(ConfigError, match=">= 2 training recordings"):
        fine_tune(enc, store, tr_ids[:1], y_tr[:1], va_ids, y_va, train_encoder=True, progress=False)
