"""Input checks and reductions shared by the grouped-InfoNCE kernel and its torch references.

Every check names the expected value, the value received and the fix. A tensor argument with the wrong
shape, dtype or device (q, k, ids, groups, a temperature tensor, or an ``n_key_grad`` that does not fit
M) raises :class:`clinseq.errors.ShapeError`; a setting with a wrong value (reduction, a float
temperature ≤ 0, contradicting flags) raises :class:`clinseq.errors.ConfigError`. Both are ValueErrors.
Nothing here reads a device value on the host (no ``.item()``): checks look at shapes, dtypes and
devices only, and reductions stay tensors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from clinseq.errors import ConfigError, ShapeError

REDUCTIONS = ("mean", "sum", "none")
BACKENDS = ("auto", "triton", "torch", "naive")

_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class Checked:
    """The validated call: shapes, the key-gradient range and the temperature as a tensor."""

    n_rows: int
    n_cols: int
    dim: int
    #: Keys ``k[:n_key_grad]`` receive a gradient, ``k[n_key_grad:]`` none (0 = no dK at all).
    n_key_grad: int
    #: A 0-d tensor on q's device (float32, or float64 for float64 inputs); requires grad when the
    #: caller's temperature tensor does.
    temperature: torch.Tensor
    #: The caller's temperature tensor (to hand its gradient back in its own shape), or None for a float.
    temperature_in: torch.Tensor | None


F = TypeVar("F", bound=Callable)


def without_autocast(fn: F) -> F:
    """Run ``fn`` with autocast off on the device of its first tensor argument.

    The kernels cast their inputs to their own compute dtype (fp32 accumulation for fp16/bf16 inputs).
    Under an enclosing ``torch.autocast`` the torch matmuls would otherwise run in bf16/fp16 — losing the
    fp32 accumulation — and ``matmul(out=fp32 buffer)`` would fail on the dtype mismatch. A training step
    that calls ``.backward()`` inside its autocast block reaches the backward passes the same way.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), None)
        if device is None or not torch.is_autocast_enabled(device):
            return fn(*args, **kwargs)
        with torch.autocast(device_type=device, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float32 for half/bfloat16/float32 inputs, float64 for float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_ids(name: str, ids: object, length: int, length_name: str, device: torch.device) -> None:
    if not isinstance(ids, torch.Tensor):
        raise ShapeError(
            f"{name} must be an integer tensor of shape ({length_name},) = ({length},), got "
            f"{type(ids).__name__}; pass torch.as_tensor(...) of int64 ids"
        )
    if ids.dtype not in _INT_DTYPES:
        raise ShapeError(
            f"{name} must hold integers (int64 recommended), got dtype {ids.dtype}; convert with .long()"
        )
    if ids.shape != (length,):
        raise ShapeError(
            f"{name} must have shape ({length_name},) = ({length},), got {tuple(ids.shape)}; "
            "pass one id per row"
        )
    if ids.device != device:
        raise ShapeError(f"{name} must be on {device} like q, got {ids.device}; move it with .to(q.device)")


def check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    q_ids: torch.Tensor,
    k_ids: torch.Tensor,
    temperature: float | torch.Tensor,
    *,
    exclude_self: bool,
    k_requires_grad: bool,
    n_key_grad: int | None,
    symmetric: bool,
    reduction: str,
    q_groups: torch.Tensor | None,
    k_groups: torch.Tensor | None,
) -> Checked:
    """Validate a grouped-InfoNCE call (see :func:`clinseq.kernels.grouped_info_nce`)."""
    for name, x in (("q", q), ("k", k)):
        if not isinstance(x, torch.Tensor):
            raise ShapeError(f"{name} must be a float tensor of shape (rows, D), got {type(x).__name__}")
        if x.ndim != 2:
            raise ShapeError(
                f"{name} must be 2-D (rows, D), got shape {tuple(x.shape)}; flatten leading dims with "
                f"{name}.reshape(-1, {name}.shape[-1])"
            )
        if x.dtype not in _FLOAT_DTYPES:
            raise ShapeError(
                f"{name} must be float16, bfloat16, float32 or float64, got {x.dtype}; convert with .float()"
            )
    n_rows, dim = q.shape
    n_cols = k.shape[0]
    if k.shape[1] != dim:
        raise ShapeError(
            f"q and k must share the embedding size D: q is {tuple(q.shape)}, k is {tuple(k.shape)}; "
            "project both to the same D"
        )
    if dim == 0:
        raise ShapeError("D (the embedding size) must be >= 1, got 0")
    if k.dtype != q.dtype:
        raise ShapeError(
            f"q and k must have the same dtype, got q {q.dtype} and k {k.dtype}; cast one with .to(q.dtype)"
        )
    if k.device != q.device:
        raise ShapeError(f"q and k must be on the same device, got q on {q.device} and k on {k.device}")
    _check_ids("q_ids", q_ids, n_rows, "N", q.device)
    _check_ids("k_ids", k_ids, n_cols, "M", q.device)
    if (q_groups is None) != (k_groups is None):
        raise ShapeError(
            "q_groups and k_groups must be given together (both (N,) and (M,) integer tensors) or not at "
            f"all, got q_groups={'a tensor' if q_groups is not None else None} and "
            f"k_groups={'a tensor' if k_groups is not None else None}"
        )
    if q_groups is not None:
        _check_ids("q_groups", q_groups, n_rows, "N", q.device)
        _check_ids("k_groups", k_groups, n_cols, "M", q.device)
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")

    # Temperature: a positive float, or a one-element float tensor (its sign is not checked: that would
    # read the device value on the host).
    cdt = compute_dtype(q.dtype)
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1 or not temperature.is_floating_point():
            raise ShapeError(
                "temperature must be a positive float or a one-element float tensor, got a tensor of shape "
                f"{tuple(temperature.shape)} and dtype {temperature.dtype}"
            )
        if temperature.device != q.device:
            raise ShapeError(
                f"temperature must be on {q.device} like q, got {temperature.device}; move it with .to()"
            )
        tau = temperature.reshape(()).to(cdt)
        tau_in = temperature
    elif isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0 (e.g. 0.1), got {temperature}")
        tau = torch.full((), float(temperature), dtype=cdt, device=q.device)
        tau_in = None
    else:
        raise ShapeError(
            f"temperature must be a positive float or a one-element float tensor, got {type(temperature)}"
        )

    if n_key_grad is None:
        n_key_grad = n_cols if k_requires_grad else 0
    else:
        if isinstance(n_key_grad, bool) or not isinstance(n_key_grad, int) or not 0 <= n_key_grad <= n_cols:
            raise ShapeError(
                f"n_key_grad must be an int in [0, M] = [0, {n_cols}] (the number of leading key rows that "
                f"get a gradient), got {n_key_grad!r}"
            )
        if not k_requires_grad and n_key_grad > 0:
            raise ConfigError(
                f"k_requires_grad=False contradicts n_key_grad={n_key_grad}; pass one of them "
                "(k_requires_grad=False is n_key_grad=0)"
            )
    if symmetric and 0 < n_key_grad < n_cols:
        raise ShapeError(
            f"symmetric=True needs every key row to be a query too, so a partial n_key_grad ({n_key_grad} "
            f"of {n_cols}) is not supported; pass the queue-free keys, or symmetric=False"
        )
    del exclude_self  # any bool is valid (self = same row index, also when N != M)
    return Checked(n_rows, n_cols, dim, n_key_grad, tau, tau_in)


def reduce_rows(loss_rows: torch.Tensor, has_positive: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce per-row losses (0 at rows without a positive) as the public functions document.

    ``mean`` divides by the number of rows with a positive, clamped to 1 on the device so that a batch
    without any positive gives 0.0 rather than NaN, without a host sync.
    """
    if reduction == "none":
        return loss_rows
    total = loss_rows.sum()
    if reduction == "sum":
        return total
    return total / has_positive.sum().clamp_min(1).to(total.dtype)


def combine_symmetric(
    rows_qk: torch.Tensor,
    has_qk: torch.Tensor,
    rows_kq: torch.Tensor,
    has_kq: torch.Tensor,
    reduction: str,
) -> torch.Tensor:
    """½(L(q→k) + L(k→q)); for ``none`` the (N + M,) vector ½·cat(rows q→k, rows k→q) (its sum = ``sum``)."""
    if reduction == "none":
        return 0.5 * torch.cat([rows_qk, rows_kq])
    return 0.5 * (reduce_rows(rows_qk, has_qk, reduction) + reduce_rows(rows_kq, has_kq, reduction))
