"""The kernels compile for NVIDIA GPUs without a GPU: they fit, do not spill, and use the right MMAs.

The interpreted tests run the kernels' Python semantics; this one runs Triton's code generator down to
PTX and a cubin (``gpu_compile.py``), which catches code only the compiler rejects, tile sizes that need
more shared memory than the GPU has (OutOfResources at launch) or spill registers, and passes that miss
Hopper's wgmma. It compiles a subset, the cases issue 20 found broken; the full matrix {sm_80, sm_86,
sm_89, sm_90, and AMD's gfx942} × {fp32, bf16, fp16} × D ∈ {128, 256, 512, 1024} is the script's (its result:
``benchmarks/results/info_nce_compile_matrix.json``). It runs in a subprocess because the test session
interprets the kernels (TRITON_INTERPRET=1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
SCRIPT = Path(__file__).with_name("gpu_compile.py")
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def _compile(arch: str, dtype: str, dim: str, *kinds: str, extra: tuple[str, ...] = ()) -> list[dict]:
    env = {**os.environ, "TRITON_INTERPRET": "0", "CUDA_VISIBLE_DEVICES": "", "TRITON_DEFAULT_FP_FUSION": "1"}
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--arch",
            arch,
            "--dtypes",
            dtype,
            "--dims",
            dim,
            "--kinds",
            *kinds,
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _compile_free_config(generation: str, kind: str, dim: int) -> dict:
    import torch

    from clinseq.kernels import info_nce as gin

    return gin.table_config(generation, kind, dim, torch.bfloat16).__dict__


@pytest.mark.skipif(not CUOBJDUMP.exists(), reason="Triton's NVIDIA backend tools are not installed")
def test_compile_subset_fits_without_spills_and_with_hopper_mma() -> None:
    # sm_90 bf16 at the benchmark's D = 256, every pass: wgmma, no mma.sync (the dK pass had mma.sync).
    hopper = _compile("90", "bf16", "256", "fwd", "dq", "dk")
    # fp32 once took the bf16 rows: sm_86/89's backward needed 107 KB (> 99 KB), sm_80's forward spilled.
    fp32 = _compile("86", "fp32", "256", "dq") + _compile("80", "fp32", "256", "fwd")
    # normalized=True: the fixed max with its on-device fallback to the running max (a runtime branch).
    normalized = _compile("90", "bf16", "256", "fwd", extra=("--normalized",))
    assert normalized[0]["normalized"] and normalized[0]["spill_bytes"] == 0 and normalized[0]["fits"]
    # AMD MI300 (gfx942) takes the fallback rows, which must fit its 64 KB of LDS (the sm_90 rows need 112).
    (mi300,) = _compile("gfx942", "bf16", "256", "dq")
    assert mi300["config"] == _compile_free_config("fallback", "dq", 256)
    assert mi300["fits"] and mi300["shared"] <= 64 * 1024 and mi300["spill_bytes"] == 0 and mi300["mfma"] > 0
    assert [(r["arch"], r["kind"]) for r in hopper + fp32] == [
        ("sm_90", "fwd"),
        ("sm_90", "dq"),
        ("sm_90", "dk"),
        ("sm_86", "dq"),
        ("sm_80", "fwd"),
    ]
    for r in hopper + fp32:
        assert r["fits"], f"OutOfResources at launch: {r}"
        assert r["spill_bytes"] == 0, f"register spills: {r}"
    for r in hopper:
        assert r["wgmma"] > 0 and r["mma_sync"] == 0, f"{r['kind']} misses Hopper's wgmma: {r}"
    for r in fp32:  # IEEE fp32 products: CUDA-core FMAs, no tensor-core instruction
        assert r["fma_f32"] > 0 and r["wgmma"] == r["mma_sync"] == 0, r
