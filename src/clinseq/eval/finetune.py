"""Fine-tuning option: a linear head (and optionally the encoder) trained with BCE-with-logits.

``fine_tune`` is the gradient-based counterpart of the linear probe, for the same label fractions:

- the head is ``Linear(D, K)`` on features standardised with the mean and standard deviation of the
  training recordings' embeddings under the **initial** encoder (a fixed affine map, so a random-init
  and a pretrained encoder start on the same footing);
- loss: ``BCEWithLogitsLoss`` averaged over examples and classes (multi-label); AdamW;
- ``train_encoder=False`` (default): the encoder stays frozen and the head trains on the recordings'
  window-averaged embeddings, computed once — a linear probe trained by gradient descent;
- ``train_encoder=True``: the encoder trains too (its own, smaller learning rate) on one random window
  of ``window_s`` seconds (or the whole recording) per recording per epoch; the caller's encoder is not
  modified (a deep copy is trained);
- after every epoch the validation macro AUROC (classes with both labels in the validation set) is
  computed from the window-averaged embeddings; training stops after ``patience`` epochs without
  improvement and the best epoch's weights are restored. Where no validation class has both labels, the
  validation BCE decides instead.

Prediction for a recording is ``head(mean of window embeddings)``, which for a linear head equals the
mean of the window logits. Runs are seeded: head initialisation, shuffling and crops depend on ``seed``
only (the global torch RNG state is restored afterwards).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch
from torch import nn
from tqdm.auto import tqdm

from clinseq.data.datasets import WindowDataset, WindowKey
from clinseq.errors import ConfigError
from clinseq.eval.embeddings import Preprocess, extract_embeddings, resolve_device
from clinseq.eval.metrics import auroc_per_class

if TYPE_CHECKING:
    from clinseq.models import Encoder
    from clinseq.timeline import TimelineStore

__all__ = ["FineTuned", "StandardisedLinear", "fine_tune"]


class StandardisedLinear(nn.Module):
    """``Linear(D, K)`` applied to ``(z − mean) / scale``, with ``mean`` and ``scale`` fixed buffers."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float().clone())
        self.register_buffer("scale", scale.float().clone())
        self.linear = nn.Linear(mean.shape[0], n_classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear((z - self.mean) / self.scale)


@dataclass
class FineTuned:
    """The result of :func:`fine_tune`: the (copied) encoder, the head and the training record.

    Attributes:
        encoder: the fine-tuned copy (the original encoder when ``train_encoder=False``).
        head: the trained :class:`StandardisedLinear`.
        best_epoch: the epoch whose weights were kept (1-based).
        history: one dict per epoch: ``epoch``, ``train_loss``, ``val_auroc`` (NaN if undefined),
            ``val_loss``.
    """

    encoder: Encoder
    head: StandardisedLinear
    window_s: float | None
    channels: Sequence[str] | Sequence[int] | None
    preprocess: Preprocess | None
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)

    def decision_function(
        self,
        store: TimelineStore,
        recording_ids: Sequence[int] | np.ndarray,
        *,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """(n, K) logits of the recordings (window-averaged embeddings through the head)."""
        z = extract_embeddings(
            self.encoder,
            store,
            recording_ids,
            window_s=self.window_s,
            channels=self.channels,
            preprocess=self.preprocess,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
        return self.head_logits(z)

    def head_logits(self, z: np.ndarray) -> np.ndarray:
        """(n, K) logits of precomputed embeddings ``z`` (n, D)."""
        device = next(self.head.parameters()).device
        with torch.no_grad():
            return self.head(torch.as_tensor(z, dtype=torch.float32, device=device)).cpu().numpy()


def fine_tune(
    encoder: Encoder,
    store: TimelineStore,
    train_ids: Sequence[int] | np.ndarray,
    y_train: np.ndarray,
    val_ids: Sequence[int] | np.ndarray,
    y_val: np.ndarray,
    *,
    train_encoder: bool = False,
    window_s: float | None = None,
    channels: Sequence[str] | Sequence[int] | None = None,
    preprocess: Preprocess | None = None,
    epochs: int = 50,
    patience: int = 5,
    lr: float = 1e-3,
    encoder_lr: float = 1e-4,
    weight_decay: float = 1e-2,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
) -> FineTuned:
    """Train a linear head (and optionally the encoder) on labelled recordings; early stopping on val.

    Args:
        encoder: the encoder; not modified (a copy is trained when ``train_encoder``).
        store: the store holding the recordings.
        train_ids, y_train: training recordings and their (n, K) multi-hot labels.
        val_ids, y_val: validation recordings and labels (early stopping).
        train_encoder: also train the encoder (else only the head, on frozen embeddings).
        window_s: window length in seconds for embeddings and training crops; None = whole recordings.
        channels, preprocess: as for :func:`~clinseq.eval.embeddings.extract_embeddings`.
        epochs: maximum number of epochs; patience: epochs without validation improvement before stopping.
        lr: head learning rate; encoder_lr: encoder learning rate (AdamW, ``weight_decay``).
        batch_size: recordings per step.
        device: default the encoder's device.
        seed: seeds head initialisation, shuffling and crops.
        progress: tqdm bar over epochs.

    Returns:
        :class:`FineTuned`.
    """
    train_ids = np.asarray(train_ids, np.int64)
    val_ids = np.asarray(val_ids, np.int64)
    y_train = np.asarray(y_train, np.float32)
    y_val = np.asarray(y_val, np.float32)
    if y_train.ndim != 2 or y_train.shape[0] != len(train_ids) or len(train_ids) == 0:
        raise ConfigError(
            f"y_train must be (n_train, K) for the {len(train_ids)} train_ids (n_train >= 1), "
            f"got {y_train.shape}"
        )
    if y_val.ndim != 2 or y_val.shape != (len(val_ids), y_train.shape[1]) or len(val_ids) == 0:
        raise ConfigError(
            f"y_val must be (n_val, {y_train.shape[1]}) for the {len(val_ids)} val_ids (n_val >= 1), "
            f"got {y_val.shape}"
        )
    for name, value in (("epochs", epochs), ("patience", patience), ("batch_size", batch_size)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    for name, value in (("lr", lr), ("encoder_lr", encoder_lr)):
        if not value > 0:
            raise ConfigError(f"{name} must be > 0, got {value}")
    if train_encoder and len(train_ids) < 2:
        raise ConfigError(
            "fine-tuning the encoder needs >= 2 training recordings (batch norm cannot train on one); "
            "use train_encoder=False or a larger label fraction"
        )
    device = resolve_device(encoder, device)
    embed_kwargs: dict[str, Any] = {
        "window_s": window_s,
        "channels": channels,
        "preprocess": preprocess,
        "device": device,
        "progress": False,
    }
    model = copy.deepcopy(encoder) if train_encoder else encoder
    z_train = extract_embeddings(model, store, train_ids, **embed_kwargs)
    z_val = extract_embeddings(model, store, val_ids, **embed_kwargs) if not train_encoder else None
    scale = z_train.std(axis=0)
    scale[scale < 1e-8] = 1.0  # a constant feature stays unscaled (StandardScaler's convention)

    rng = np.random.default_rng(seed)
    cuda_devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if (device.type == "cuda")
        else []
    )
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        head = StandardisedLinear(
            torch.from_numpy(z_train.mean(axis=0)), torch.from_numpy(scale), y_train.shape[1]
        )
        head.to(device)
        groups = [{"params": head.parameters(), "lr": lr}]
        if train_encoder:
            groups.append({"params": model.parameters(), "lr": encoder_lr})
            crops = _CropReader(store, train_ids, window_s, channels)
        optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
        loss_fn = nn.BCEWithLogitsLoss()
        y_train_t = torch.from_numpy(y_train).to(device)
        y_val_t = torch.from_numpy(y_val).to(device)
        z_train_t = torch.from_numpy(z_train).to(device)

        history: list[dict[str, float]] = []
        best_score, best_epoch, best_state, stale = -np.inf, 0, None, 0
        bar = tqdm(range(1, epochs + 1), desc="fine-tune", unit="epoch", disable=not progress, leave=False)
        for epoch in bar:
            order = rng.permutation(len(train_ids))
            # A trailing batch of one would break batch norm in train mode: fold it into the previous one.
            bounds = list(range(0, len(order), batch_size))
            if train_encoder and len(order) - bounds[-1] == 1 and len(bounds) > 1:
                bounds.pop()
            total = torch.zeros((), device=device)
            head.train()
            if train_encoder:  # a frozen encoder is the caller's own: leave its mode alone
                model.train()
            for j, b0 in enumerate(bounds):
                idx = order[b0 : bounds[j + 1] if j + 1 < len(bounds) else len(order)]
                if train_encoder:
                    x = crops.read(idx, rng).to(device, non_blocking=True)
                    if preprocess is not None:
                        x = preprocess(x)
                    z = model.pooled(x)
                else:
                    z = z_train_t[idx]
                loss = loss_fn(head(z), y_train_t[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(idx)
            head.eval()
            z_val_now = (
                z_val if not train_encoder else extract_embeddings(model, store, val_ids, **embed_kwargs)
            )
            with torch.no_grad():
                val_logits_t = head(torch.from_numpy(z_val_now).to(device))
                val_loss = float(loss_fn(val_logits_t, y_val_t))
            per_class = auroc_per_class(y_val, val_logits_t.cpu().numpy())
            val_auroc = float(np.nanmean(per_class)) if (~np.isnan(per_class)).any() else float("nan")
            # Macro AUROC over the classes with both labels; −BCE when no class has both.
            score = val_auroc if np.isfinite(val_auroc) else -val_loss
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": float(total) / len(train_ids),
                    "val_auroc": val_auroc,
                    "val_loss": val_loss,
                }
            )
            bar.set_postfix(val_auroc=f"{val_auroc:.3f}")
            if score > best_score:
                best_score, best_epoch, stale = score, epoch, 0
                best_state = (
                    copy.deepcopy(head.state_dict()),
                    copy.deepcopy(model.state_dict()) if train_encoder else None,
                )
            else:
                stale += 1
                if stale >= patience:
                    break
        bar.close()
    head.load_state_dict(best_state[0])
    if train_encoder:
        model.load_state_dict(best_state[1])
    head.eval()
    if train_encoder:
        model.eval()
    return FineTuned(model, head, window_s, channels, preprocess, best_epoch, history)


class _CropReader:
    """Random training crops of ``window_s`` seconds (whole recordings when None), one per recording."""

    def __init__(
        self,
        store: TimelineStore,
        recording_ids: np.ndarray,
        window_s: float | None,
        channels: Sequence[str] | Sequence[int] | None,
    ) -> None:
        rec = store.recordings.filter(pl.col("recording_id").is_in(recording_ids.tolist()))
        n_samples_of = dict(zip(rec["recording_id"].to_list(), rec["n_samples"].to_list(), strict=True))
        self.n_samples = np.array([n_samples_of[int(r)] for r in recording_ids], np.int64)
        if window_s is None:
            lengths = np.unique(self.n_samples)
            if len(lengths) != 1:
                raise ConfigError(
                    "whole-recording fine-tuning needs recordings of one length, got "
                    f"{lengths.tolist()[:10]} samples; pass window_s to train on crops"
                )
            rates = rec["sampling_rate_hz"].unique().to_list()
            window_s = float(lengths[0]) / float(rates[0])
        self.dataset = WindowDataset(store, window_s, channels, recording_ids=recording_ids)
        self.recording_ids = recording_ids

    def read(self, idx: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        room = self.n_samples[idx] - self.dataset.window_n_samples
        if (room < 0).any():
            short = self.recording_ids[idx][room < 0].tolist()
            raise ConfigError(f"recordings {short[:10]} are shorter than window_s; use a shorter window_s")
        starts = rng.integers(0, room + 1)
        keys = [WindowKey(int(r), int(s)) for r, s in zip(self.recording_ids[idx], starts, strict=True)]
        return self.dataset.fetch(keys)["x"]
