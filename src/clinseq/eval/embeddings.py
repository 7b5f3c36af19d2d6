"""Frozen embeddings per recording for linear probes.

An encoder pretrained on short windows (poly-window: 2.5 s) still has to give one vector per 10 s ECG.
Two ways, chosen by ``window_s``:

- ``window_s=None`` (whole recording): the encoder sees the whole recording at once; all clinseq
  waveform encoders pool globally, so any length works. Right for encoders trained on full recordings
  (PCLR, CPC on 10 s).
- ``window_s=W``: the recording is cut into non-overlapping windows of W seconds that cover it — starts
  0, W, 2W, … and, when W does not divide the length, one last window ending at the last sample (it
  overlaps its neighbour, no sample is dropped or padded) — and the embedding is the mean of the window
  embeddings. Right for encoders trained on W-second windows: the probe sees the input distribution the
  encoder was trained on.

Extraction is deterministic: fixed window starts, fixed batch order, ``Encoder.embed`` (eval mode, no
gradients, batch norm with its running statistics so each window's embedding depends on that window
alone). Window embeddings are summed on the device with ``index_add_`` and copied to the host once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from clinseq.data.datasets import WindowDataset, WindowKey, collate_windows
from clinseq.errors import ConfigError

if TYPE_CHECKING:
    from clinseq.models import Encoder
    from clinseq.timeline import TimelineStore

__all__ = ["extract_embeddings", "resolve_device", "window_starts"]

#: A batch preprocessing step applied on the device before the encoder: ``x (B, C, T) -> x``.
Preprocess = Callable[[torch.Tensor], torch.Tensor]


def window_starts(n_samples: int, window_n_samples: int) -> np.ndarray:
    """Starts (in samples) of non-overlapping windows covering ``[0, n_samples)``.

    ``0, W, 2W, …`` while a whole window fits, plus ``n_samples − W`` when W does not divide the length
    (that last window overlaps the previous one). Example: n = 1000, W = 250 → [0, 250, 500, 750];
    n = 1000, W = 300 → [0, 300, 600, 700].
    """
    if window_n_samples < 1:
        raise ConfigError(f"window_n_samples must be >= 1, got {window_n_samples}")
    if n_samples < window_n_samples:
        raise ConfigError(
            f"recording of {n_samples} samples is shorter than the {window_n_samples}-sample window; "
            "use a shorter window_s or window_s=None (whole recording)"
        )
    starts = np.arange(0, n_samples - window_n_samples + 1, window_n_samples, dtype=np.int64)
    if starts[-1] + window_n_samples < n_samples:
        starts = np.append(starts, n_samples - window_n_samples)
    return starts


def resolve_device(encoder: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device``, or the device of the encoder's parameters when None."""
    if device is not None:
        return torch.device(device)
    param = next(encoder.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _plan(
    source: TimelineStore | WindowDataset,
    recording_ids: np.ndarray,
    window_s: float | None,
    channels: Sequence[str] | Sequence[int] | None,
) -> list[tuple[WindowDataset, list[WindowKey], list[int]]]:
    """Datasets, their window keys and the output row of each key (one dataset per window length)."""
    if isinstance(source, WindowDataset):
        if source.transform is not None or source.units != "physical":
            raise ConfigError(
                "extract_embeddings needs a WindowDataset with units='physical' and no transform "
                "(augmentations would make the embeddings random); build one without transform"
            )
        if channels is not None:
            raise ConfigError("channels is taken from the WindowDataset; build the dataset with them instead")
        if window_s is not None and round(window_s * source.sampling_rate_hz) != source.window_n_samples:
            raise ConfigError(
                f"window_s={window_s} disagrees with the dataset's window of {source.window_s} s; "
                "pass window_s=None to use the dataset's window"
            )
        store = source.store
        known = set(source.recording_ids.tolist())
    else:
        store = source
        known = set(store.recordings["recording_id"].to_list())
    missing = [int(r) for r in recording_ids if int(r) not in known]
    if missing:
        raise ConfigError(
            f"recording_ids not in the {'dataset' if store is not source else 'store'}: {missing[:20]}; "
            "pass ids from store.recordings (or the dataset's recording_ids)"
        )
    if isinstance(source, WindowDataset):
        datasets = [(source, recording_ids)]
    else:
        if window_s is not None:
            datasets = [
                (WindowDataset(store, window_s, channels, recording_ids=recording_ids), recording_ids)
            ]
        else:
            # Whole recordings: one dataset per recording length, since a batch must share T.
            rec = store.recordings.filter(pl.col("recording_id").is_in(recording_ids.tolist()))
            datasets = []
            for (n_samples, rate), group in rec.group_by(
                ["n_samples", "sampling_rate_hz"], maintain_order=True
            ):
                ids = group["recording_id"].to_numpy().astype(np.int64)
                datasets.append((WindowDataset(store, n_samples / rate, channels, recording_ids=ids), ids))

    row_of = {int(r): i for i, r in enumerate(recording_ids)}
    n_samples_of = dict(
        zip(store.recordings["recording_id"].to_list(), store.recordings["n_samples"].to_list(), strict=True)
    )
    plan = []
    for dataset, ids in datasets:
        keys, rows = [], []
        for rid in ids:
            for start in window_starts(int(n_samples_of[int(rid)]), dataset.window_n_samples):
                keys.append(WindowKey(int(rid), int(start)))
                rows.append(row_of[int(rid)])
        plan.append((dataset, keys, rows))
    return plan


def extract_embeddings(
    encoder: Encoder,
    source: TimelineStore | WindowDataset,
    recording_ids: Sequence[int] | np.ndarray | None = None,
    *,
    window_s: float | None = None,
    channels: Sequence[str] | Sequence[int] | None = None,
    preprocess: Preprocess | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """One embedding per recording: the encoder's pooled output, averaged over covering windows.

    Args:
        encoder: a clinseq encoder (``embed(x) -> (B, D)``); it is moved to ``device``.
        source: a store, or a :class:`~clinseq.data.datasets.WindowDataset` (physical units, no
            transform) whose window length is then used.
        recording_ids: recordings to embed, in the order of the output rows; default all of ``source``.
        window_s: window length in seconds; None → whole recordings from a store (see module docstring).
        channels: channel names or indices to feed (default all), as for ``WindowDataset``.
        preprocess: applied to each batch ``x`` (B, C, T), in mV for ECG, on the device before the
            encoder — use the same input normalisation as in pretraining.
        batch_size: windows per forward pass.
        device: where the encoder runs; default the device of its parameters.
        num_workers: ``DataLoader`` workers reading windows.
        progress: show a tqdm bar over batches.

    Returns:
        float32 array (n_recordings, embed_dim), row i for ``recording_ids[i]``.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1 windows, got {batch_size}")
    if window_s is not None and not window_s > 0:
        raise ConfigError(f"window_s must be > 0 seconds or None (whole recording), got {window_s}")
    if recording_ids is None:
        recording_ids = (
            source.recording_ids
            if isinstance(source, WindowDataset)
            else (source.recordings["recording_id"].to_numpy())
        )
    recording_ids = np.asarray(recording_ids, dtype=np.int64)
    if recording_ids.ndim != 1 or len(recording_ids) == 0:
        raise ConfigError(f"recording_ids must be a non-empty 1-D sequence, got shape {recording_ids.shape}")
    if len(np.unique(recording_ids)) != len(recording_ids):
        raise ConfigError("recording_ids contain duplicates; pass each recording once")
    device = resolve_device(encoder, device)
    encoder.to(device)
    plan = _plan(source, recording_ids, window_s, channels)

    n_batches = sum(-(-len(keys) // batch_size) for _, keys, _ in plan)
    sums: torch.Tensor | None = None
    counts = np.zeros(len(recording_ids), np.int64)
    bar = tqdm(total=n_batches, desc="embeddings", unit="batch", disable=not progress, leave=False)
    try:
        for dataset, keys, rows in plan:
            batches = [keys[i : i + batch_size] for i in range(0, len(keys), batch_size)]
            row_batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
            loader = DataLoader(
                dataset,
                batch_sampler=batches,
                collate_fn=collate_windows,
                num_workers=num_workers,
                pin_memory=device.type == "cuda",
            )
            for batch, batch_rows in zip(loader, row_batches, strict=True):
                x = batch["x"].to(device, non_blocking=True)
                if preprocess is not None:
                    x = preprocess(x)
                z = encoder.embed(x).float()
                if sums is None:
                    sums = torch.zeros(len(recording_ids), z.shape[1], device=device)
                sums.index_add_(0, torch.as_tensor(batch_rows, device=device), z)
                np.add.at(counts, batch_rows, 1)
                bar.update(1)
    finally:
        bar.close()
    if sums is None:  # unreachable: every recording has at least one window
        raise RuntimeError("no window was embedded")
    means = sums / torch.as_tensor(counts, dtype=sums.dtype, device=device)[:, None]
    return means.cpu().numpy()
