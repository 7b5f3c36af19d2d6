"""The kernels compile for Hopper without a GPU, at the table's tile sizes, without register spills.

The interpreted tests run the kernels' Python semantics; this one runs Triton's code generator down to
a cubin (see ``gpu_compile.py``), which catches code that only the compiler rejects and tile sizes that
spill. It runs in a subprocess because the test session interprets the kernels (TRITON_INTERPRET=1).
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


@pytest.mark.skipif(not CUOBJDUMP.exists(), reason="Triton's NVIDIA backend tools are not installed")
def test_kernels_compile_for_sm90_without_spills() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "0", "CUDA_VISIBLE_DEVICES": "", "TRITON_DEFAULT_FP_FUSION": "1"}
    rows = []
    # D = 256 (the benchmark's size, registers resident) and D = 1024 (the streamed-D backward).
    for dims, kinds in ((["256"], ["fwd", "dq", "dk"]), (["1024"], ["dq"])):
        out = subprocess.run(
            [sys.executable, str(SCRIPT), "--arch", "90", "--dims", *dims, "--kinds", *kinds],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        rows += [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [(r["kind"], r["dim"]) for r in rows] == [("fwd", 256), ("dq", 256), ("dk", 256), ("dq", 1024)]
    for r in rows:
        assert r["stack"] == 0 and r["local"] == 0, f"register spills: {r}"
        assert r["shared"] <= 227 * 1024, f"more shared memory than an H100 SM has: {r}"
