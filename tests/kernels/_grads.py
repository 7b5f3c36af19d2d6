"""Loss and gradients of a grouped-InfoNCE implementation, and their comparison with a reference.

Shared by the kernel tests (imports nothing of clinseq: tests/conftest.py sets TRITON_INTERPRET before
clinseq.kernels is first imported).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Grads = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]


def loss_and_grads(
    fn: Callable[..., torch.Tensor],
    q64: torch.Tensor,
    k64: torch.Tensor,
    q_ids: torch.Tensor,
    k_ids: torch.Tensor,
    *,
    dtype: torch.dtype,
    device: str,
    tau: float,
    learn_tau: bool,
    shared: bool,
    seed: int = 0,
    **kwargs: Any,
) -> Grads:
    """``(loss, dq, dk, dτ)`` of ``fn`` on float64 inputs cast to ``dtype``, backpropagated with a random
    grad_output (some weights negative, none 1). ``shared``: q is k (no dk); ``learn_tau``: τ is a tensor
    that receives dτ (else dτ is None)."""
    q = q64.to(device, dtype).requires_grad_()
    k = q if shared else k64.to(device, dtype).requires_grad_()
    tau_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    temperature = torch.tensor(tau, dtype=tau_dtype, device=device, requires_grad=True) if learn_tau else tau
    loss = fn(q, k, q_ids.to(device), k_ids.to(device), temperature, **kwargs)
    weights = torch.rand(loss.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    (loss * (2 * weights - 0.5).to(device, loss.dtype)).sum().backward()
    return (
        loss.detach(),
        q.grad,
        None if shared else k.grad,
        temperature.grad if learn_tau else None,
    )


def assert_grads_close(
    got: Grads, want: Grads, what: str, atol: float, rtol: float, *, absent_may_be_zero: bool = False
) -> None:
    """Each of loss, dq, dk, dτ of ``got`` equals ``want``'s; where ``want`` has none, ``got`` has none
    either (or, with ``absent_may_be_zero``, only zeros)."""
    for name, g, w in zip(("loss", "dq", "dk", "dtau"), got, want, strict=True):
        if w is None:
            if absent_may_be_zero:
                assert g is None or not g.abs().any(), f"{what}: {name} should be absent or zero"
            else:
                assert g is None, f"{what}: {name} should be absent"
            continue
        assert g is not None, f"{what}: {name} missing"
        torch.testing.assert_close(
            g.double().cpu(),
            w.double().cpu(),
            atol=atol,
            rtol=rtol,
            msg=lambda m, n=name: f"{what}: {n}: {m}",
        )
