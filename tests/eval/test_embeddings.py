"""Embedding extraction on the real PTB-XL store: whole recordings and window averages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinseq.data.datasets import WindowDataset
from clinseq.errors import ConfigError
from clinseq.eval.embeddings import extract_embeddings, window_starts
from clinseq.models import ResNet1d


def _encoder() -> ResNet1d:
    torch.manual_seed(0)
    return ResNet1d(12, widths=(4, 8), downsample=(4,), kernel_size=8)


@pytest.mark.parametrize(
    ("n", "w", "expected"),
    [(1000, 250, [0, 250, 500, 750]), (1000, 300, [0, 300, 600, 700]), (1000, 1000, [0]), (7, 3, [0, 3, 4])],
)
def test_window_starts_cover_the_recording(n: int, w: int, expected: list[int]) -> None:
    starts = window_starts(n, w)
    assert starts.tolist() == expected
    covered = np.zeros(n, bool)
    for s in starts:
        covered[s : s + w] = True
    assert covered.all() and starts[-1] + w == n
    assert (np.diff(starts)[:-1] == w).all()  # non-overlapping except possibly the last one


def test_window_starts_reject_short_recordings() -> None:
    with pytest.raises(ConfigError, match="shorter than"):
        window_starts(100, 250)


def test_embeddings_equal_window_means_of_encoder_embed(ptbxl_store) -> None:
    encoder = _encoder()
    ids = ptbxl_store.recordings["recording_id"].to_numpy()[[7, 0, 3]]  # any order: rows follow it
    z_win = extract_embeddings(encoder, ptbxl_store, ids, window_s=3.0, batch_size=5, progress=False)
    z_whole = extract_embeddings(encoder, ptbxl_store, ids, progress=False)
    assert z_win.shape == z_whole.shape == (3, encoder.embed_dim) and z_win.dtype == np.float32
    for i, rid in enumerate(ids.tolist()):
        whole = torch.from_numpy(np.ascontiguousarray(ptbxl_store.read_window(rid, 0, 1000)))  # mV
        np.testing.assert_allclose(z_whole[i], encoder.embed(whole[None])[0].numpy(), rtol=1e-5, atol=1e-6)
        windows = torch.stack([whole[:, s : s + 300] for s in (0, 300, 600, 700)])
        np.testing.assert_allclose(z_win[i], encoder.embed(windows).mean(0).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(z_win, z_whole)


def test_extraction_is_deterministic_and_batch_size_free(ptbxl_store) -> None:
    encoder = _encoder()
    encoder.train()  # embed() must still use eval mode and restore the mode
    ids = ptbxl_store.recordings["recording_id"].to_numpy()[:20]
    a = extract_embeddings(encoder, ptbxl_store, ids, window_s=2.5, batch_size=7, progress=False)
    b = extract_embeddings(encoder, ptbxl_store, ids, window_s=2.5, batch_size=7, progress=False)
    c = extract_embeddings(encoder, ptbxl_store, ids, window_s=2.5, batch_size=64, progress=False)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)
    assert encoder.training
    dataset = WindowDataset(ptbxl_store, 2.5, recording_ids=ids)
    np.testing.assert_allclose(extract_embeddings(encoder, dataset, progress=False), a, rtol=1e-5, atol=1e-6)


def test_preprocess_and_channels_are_applied(ptbxl_store) -> None:
    ids = ptbxl_store.recordings["recording_id"].to_numpy()[:4]
    torch.manual_seed(0)
    encoder2 = ResNet1d(2, widths=(8, 16), downsample=(4,), kernel_size=16)
    z = extract_embeddings(
        encoder2, ptbxl_store, ids, channels=["II", "V1"], preprocess=lambda x: 2.0 * x, progress=False
    )
    names = ptbxl_store.recordings["channel_names"][0].to_list()
    x = torch.from_numpy(np.ascontiguousarray(ptbxl_store.read_window(int(ids[0]), 0, 1000)))
    x = x[[names.index("II"), names.index("V1")]]
    np.testing.assert_allclose(z[0], encoder2.embed(2.0 * x[None])[0].numpy(), rtol=1e-5, atol=1e-6)


def test_bad_input_raises_config_error(ptbxl_store) -> None:
    encoder = _encoder()
    ids = ptbxl_store.recordings["recording_id"].to_numpy()[:3]
    with pytest.raises(ConfigError, match="not in the store"):
        extract_embeddings(encoder, ptbxl_store, [ids[0], 10**9], progress=False)
    with pytest.raises(ConfigError, match="duplicates"):
        extract_embeddings(encoder, ptbxl_store, [ids[0], ids[0]], progress=False)
    with pytest.raises(ConfigError, match="shorter than"):
        extract_embeddings(encoder, ptbxl_store, ids, window_s=20.0, progress=False)
    with pytest.raises(ConfigError, match="window_s must be > 0"):
        extract_embeddings(encoder, ptbxl_store, ids, window_s=0.0, progress=False)
    augmented = WindowDataset(ptbxl_store, 2.5, transform=lambda x, generator=None: x, recording_ids=ids)
    with pytest.raises(ConfigError, match="no transform"):
        extract_embeddings(encoder, augmented, progress=False)
