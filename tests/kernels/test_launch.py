"""How the kernels are launched: on the inputs' device, in the autocast dtype, with any Triton ≥ 3.0.

What can only go wrong on a GPU (a second device, CUDA autocast) is checked here through the code path:
each launch is intercepted and must sit inside the guard of the inputs' device; the dtype choice is
checked with autocast's state mocked. Triton releases before 3.4 (no ``triton.knobs``) are simulated by
removing the attribute in a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from clinseq.kernels import HAS_TRITON, grouped_info_nce
from clinseq.kernels import info_nce as gin

TRITON_RUNS = HAS_TRITON and (torch.cuda.is_available() or gin.INTERPRETED)
needs_triton = pytest.mark.skipif(
    not TRITON_RUNS, reason="Triton needs CUDA, or TRITON_INTERPRET=1 before clinseq.kernels is imported"
)
SRC = str(Path(__file__).resolve().parents[2] / "src")


# --- the device guard ------------------------------------------------------------------------------------


def test_guard_of_a_cuda_device_makes_it_current() -> None:
    guard = gin._on_device(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert isinstance(gin._on_device(torch.device("cpu")), contextlib.nullcontext)


class _Intercepted:
    """Stands in for a Triton kernel: records, per launch, the device guard active at that moment."""

    def __init__(self, kernel, name: str, active: list, launches: list) -> None:
        self.kernel, self.name, self.active, self.launches = kernel, name, active, launches

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            self.launches.append((self.name, self.active[-1] if self.active else None))
            return launch(*args, **kwargs)

        return run


@needs_triton
@pytest.mark.parametrize("symmetric", [False, True])
def test_every_launch_runs_inside_the_inputs_device_guard(monkeypatch: pytest.MonkeyPatch, symmetric) -> None:
    active: list = []
    launches: list = []

    @contextlib.contextmanager
    def guard(device):
        active.append(device)
        try:
            yield
        finally:
            active.pop()

    monkeypatch.setattr(gin, "_on_device", guard)
    for name in ("_forward_kernel", "_backward_kernel"):
        monkeypatch.setattr(gin, name, _Intercepted(getattr(gin, name), name, active, launches))
    q = torch.randn(40, 16, requires_grad=True)
    k = torch.randn(40, 16, requires_grad=True)
    tau = torch.tensor(0.1, requires_grad=True)
    ids = torch.arange(40)
    grouped_info_nce(q, k, ids, ids, tau, symmetric=symmetric, backend="triton").backward()
    names = [name for name, _ in launches]
    assert names.count("_forward_kernel") == (2 if symmetric else 1)
    assert names.count("_backward_kernel") == 2  # dQ (with dτ) and dK
    assert all(device == q.device for _, device in launches), launches


# --- autocast ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "dtype", "enabled", "autocast_dtype", "expected"),
    [
        ("cuda", torch.float32, True, torch.bfloat16, torch.bfloat16),  # F.normalize's fp32 under bf16
        ("cuda", torch.float32, True, torch.float16, torch.float16),
        ("cuda", torch.float16, True, torch.bfloat16, torch.float16),  # the caller's half stays
        ("cuda", torch.float32, False, torch.bfloat16, torch.float32),  # no autocast: IEEE fp32
        ("cpu", torch.float32, True, torch.bfloat16, torch.float32),  # CPU autocast: interpreter is fp32
    ],
)
def test_autocast_dtype_of_the_triton_path(
    monkeypatch: pytest.MonkeyPatch, device, dtype, enabled, autocast_dtype, expected
) -> None:
    monkeypatch.setattr(
        torch, "is_autocast_enabled", lambda device_type=None: enabled and device_type == "cuda"
    )
    monkeypatch.setattr(torch, "get_autocast_dtype", lambda device_type: autocast_dtype)
    x = types.SimpleNamespace(device=torch.device(device), dtype=dtype)
    assert gin._autocast_dtype(x) == expected


# --- Triton versions and recompiles -------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "expected"), [("1", True), ("0", False), (None, False)])
def test_interpret_flag_without_triton_knobs(monkeypatch: pytest.MonkeyPatch, env, expected) -> None:
    """Triton < 3.4 has no ``triton.knobs``: the flag comes from TRITON_INTERPRET, as there."""
    if env is None:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", env)
    assert gin._interpret_flag(types.SimpleNamespace()) is expected


_CHILD = """
import triton
if {drop_knobs}:
    del triton.knobs  # what Triton 3.0-3.3 look like to this module
import clinseq.kernels.info_nce as gin
fwd = [p.name for p in gin._forward_kernel.params if p.do_not_specialize] if not gin.INTERPRETED else None
bwd = [p.name for p in gin._backward_kernel.params if p.do_not_specialize] if not gin.INTERPRETED else None
print(gin.HAS_TRITON, gin.INTERPRETED, fwd, bwd)
"""


@pytest.mark.skipif(not HAS_TRITON, reason="needs the triton package")
@pytest.mark.parametrize("drop_knobs", [True, False])
@pytest.mark.parametrize("interpret", ["1", "0"])
def test_module_imports_with_and_without_triton_knobs(drop_knobs: bool, interpret: str) -> None:
    """The module imports (and reads the interpreter switch) with or without ``triton.knobs``; compiled,
    the row counts are not specialised, so N mod 16 does not trigger a recompile."""
    env = {**os.environ, "TRITON_INTERPRET": interpret, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": SRC}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(drop_knobs=drop_knobs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = out.stdout.strip().splitlines()[-1]
    if interpret == "1":
        assert line == "True True None None"
    else:
        assert line == "True False ['N', 'M'] ['NX', 'NY', 'NX_GRAD']"
