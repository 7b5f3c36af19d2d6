"""A ring buffer of negative keys (and their ids) for MoCo-style objectives (MoCo, PMQ).

MoCo (He et al. 2020, arXiv 1911.05722) keeps the keys of past batches in a first-in first-out queue so
that the number of negatives is decoupled from the batch size; the patient memory queue of PMQ (Sun et
al. 2025, arXiv 2506.06310) also stores each key's patient id, so that queued keys of the same patient
serve as positives.

Contract:

- ``push(keys, ids)`` writes the batch at the write pointer, wrapping around the end: a batch that
  straddles the end is split, its first part filling the tail and the rest overwriting the *oldest*
  entries at the head. Nothing of a batch is ever dropped silently: a batch larger than the queue raises.
- Until the queue is full only the filled slots are returned (``keys``/``ids``), so empty slots never act
  as negatives. The slot order of ``keys`` is storage order; ``ordered()`` gives oldest → newest.
- Everything (keys, ids, write pointer, fill count) is a registered buffer, so the queue is part of the
  owning objective's ``state_dict`` and a resumed run continues with the same queue.
- Writes are device-side copies; the pointer arithmetic uses Python integers mirrored from the buffers
  (the batch size is a shape), so pushing never synchronises with the device.
"""

from __future__ import annotations

import torch
from torch import nn

from clinseq.errors import ConfigError, ShapeError

__all__ = ["KeyQueue"]


class KeyQueue(nn.Module):
    """FIFO ring buffer of ``size`` keys of dimension ``dim``, with optional int64 ids.

    Args:
        dim: key dimension D.
        size: capacity K (number of keys kept).
        track_ids: also store one int64 id per key (patient ids for PMQ; MoCo needs none).
        dtype: storage dtype of the keys (float32 by default, whatever the autocast dtype; keys are cast
            on push and the caller casts them back to its compute dtype on use).
    """

    def __init__(self, dim: int, size: int, *, track_ids: bool = True, dtype: torch.dtype = torch.float32):
        super().__init__()
        for name, value in (("dim", dim), ("size", size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"KeyQueue {name} must be a positive int, got {value!r}")
        if not dtype.is_floating_point:
            raise ConfigError(f"KeyQueue dtype must be a floating dtype (e.g. torch.float32), got {dtype}")
        self.dim, self.size, self.track_ids = dim, size, track_ids
        self.register_buffer("queue_keys", torch.zeros(size, dim, dtype=dtype))
        # Empty slots hold id -1; they are never returned, so the value only eases inspection.
        self.register_buffer("queue_ids", torch.full((size,), -1, dtype=torch.int64) if track_ids else None)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.int64))
        self.register_buffer("filled", torch.zeros((), dtype=torch.int64))
        self._ptr = 0
        self._filled = 0
        self.register_load_state_dict_post_hook(_sync_pointers)

    def __len__(self) -> int:
        """Number of keys held (≤ size)."""
        return self._filled

    @property
    def is_full(self) -> bool:
        return self._filled == self.size

    @property
    def keys(self) -> torch.Tensor:
        """(len, D) the keys held, in storage order (a view; do not modify)."""
        return self.queue_keys[: self._filled]

    @property
    def ids(self) -> torch.Tensor:
        """(len,) the ids held, aligned with ``keys``."""
        if self.queue_ids is None:
            raise ShapeError("this KeyQueue was built with track_ids=False and holds no ids")
        return self.queue_ids[: self._filled]

    def ordered(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Keys (and ids, or None) from the oldest to the newest entry (copies)."""
        if self.is_full:
            order = torch.arange(self._ptr, self._ptr + self.size, device=self.queue_keys.device) % self.size
        else:
            order = torch.arange(self._filled, device=self.queue_keys.device)
        ids = self.queue_ids[order] if self.queue_ids is not None else None
        return self.queue_keys[order], ids

    @torch.no_grad()
    def push(self, keys: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Enqueue a batch of keys (n, D) (detached, cast to the storage dtype) and their ids (n,).

        The oldest entries are overwritten once the queue is full. Raises ``ConfigError`` when n > size
        (part of the batch would be lost), ``ShapeError`` when keys or ids are mis-shaped, missing or
        unexpected.
        """
        if not isinstance(keys, torch.Tensor) or keys.ndim != 2 or keys.shape[1] != self.dim:
            got = tuple(keys.shape) if isinstance(keys, torch.Tensor) else type(keys).__name__
            raise ShapeError(f"KeyQueue.push expects keys of shape (n, {self.dim}), got {got}")
        n = keys.shape[0]
        if n > self.size:
            raise ConfigError(
                f"cannot enqueue {n} keys into a queue of size {self.size}: {n - self.size} keys of the "
                f"batch would be dropped; use queue_size >= the (global) batch size {n}"
            )
        if keys.device != self.queue_keys.device:
            raise ShapeError(
                f"keys are on {keys.device} but the queue is on {self.queue_keys.device}; move the objective "
                "that owns the queue to the keys' device (objective.to(device))"
            )
        if self.track_ids:
            if ids is None:
                raise ShapeError("this KeyQueue tracks ids (track_ids=True): pass ids of shape (n,)")
            if ids.shape != (n,) or ids.dtype.is_floating_point or ids.dtype == torch.bool:
                raise ShapeError(
                    f"ids must be an integer tensor of shape ({n},) like the keys, got {tuple(ids.shape)} "
                    f"{ids.dtype}"
                )
        elif ids is not None:
            raise ShapeError("this KeyQueue was built with track_ids=False; pass no ids")
        if n == 0:
            return
        keys = keys.detach().to(self.queue_keys.dtype)
        ids = ids.detach().to(device=self.queue_keys.device, dtype=torch.int64) if ids is not None else None
        start = self._ptr
        first = min(n, self.size - start)  # the part that fits before the end
        self.queue_keys[start : start + first] = keys[:first]
        if ids is not None:
            self.queue_ids[start : start + first] = ids[:first]
        if first < n:  # wrap around: the rest overwrites the oldest entries at the head
            self.queue_keys[: n - first] = keys[first:]
            if ids is not None:
                self.queue_ids[: n - first] = ids[first:]
        self._ptr = (start + n) % self.size
        self._filled = min(self.size, self._filled + n)
        self.ptr.fill_(self._ptr)
        self.filled.fill_(self._filled)

    def reset(self) -> None:
        """Empty the queue."""
        self._ptr = self._filled = 0
        self.ptr.zero_()
        self.filled.zero_()
        if self.queue_ids is not None:
            self.queue_ids.fill_(-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, size={self.size}, track_ids={self.track_ids}, filled={self._filled}"


def _sync_pointers(module: nn.Module, incompatible_keys) -> None:
    # Loading a checkpoint replaces the buffers; refresh the host-side mirrors once (a sync at load time
    # is fine, it never happens per step).
    del incompatible_keys
    if isinstance(module, KeyQueue):
        module._ptr = int(module.ptr)
        module._filled = int(module.filled)
        if not (0 <= module._ptr < module.size and 0 <= module._filled <= module.size):
            raise ConfigError(
                f"loaded queue state is inconsistent: ptr={module._ptr}, filled={module._filled} for a queue "
                f"of size {module.size}; the checkpoint belongs to a different queue_size"
            )
