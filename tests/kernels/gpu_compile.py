"""Compile the grouped-InfoNCE kernels for a GPU target without a GPU and report register use and spills.

Triton's interpreter runs the kernels' Python, not its code generator: a kernel can pass every
interpreted test and still fail to compile, or spill registers badly at the table's tile sizes. This
script lowers the kernels to a cubin for sm90 / sm80 with the table's configurations and reads the
resources with the ``cuobjdump`` shipped in Triton's wheel::

    TRITON_INTERPRET=0 .venv/bin/python tests/kernels/gpu_compile.py --arch 90 --dims 128 256 1024

It prints one JSON line per kernel variant (``regs``, ``stack`` bytes: > 0 means spills, ``shared``).
``test_gpu_compile.py`` runs it in a subprocess (the test session itself interprets the kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from clinseq.kernels import info_nce as gin

_POINTERS = {
    # forward
    "Q": "x", "K": "x", "QID": "id", "KID": "id", "QGRP": "id", "KGRP": "id", "TAU": "*fp32",
    "LOSS": "*fp32", "LSE": "*fp32", "PCNT": "*i32", "COL_LO": "*i32", "COL_HI": "*i32", "TILES": "*i32",
    # backward
    "X": "x", "Y": "x", "XID": "id", "YID": "id", "XGRP": "id", "YGRP": "id", "LSE_X": "*fp32",
    "A_X": "*fp32", "B_X": "*fp32", "LSE_Y": "*fp32", "A_Y": "*fp32", "B_Y": "*fp32", "GSCALE": "*fp32",
    "DX": "x", "TAU_ROWS": "*fp32", "Y_LO": "*i32", "Y_HI": "*i32",
}  # fmt: skip
_CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def _signature(fn, constexprs: dict, dtype: str, id_dtype: str) -> dict[str, str]:
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in _POINTERS:
            kind = _POINTERS[name]
            sig[name] = f"*{dtype}" if kind == "x" else f"*{id_dtype}" if kind == "id" else kind
        else:
            sig[name] = "i32"  # sizes and strides
    return sig


def compile_variant(
    arch: int,
    kind: str,
    dim: int,
    *,
    dtype: str = "bf16",
    id_dtype: str = "i64",
    groups: bool = True,
    exclude_self: bool = True,
    symmetric: bool = True,
) -> dict:
    """Compile one pass at the table's configuration; return its resource usage."""
    generation = {90: "sm90", 80: "sm80"}.get(arch, "fallback")
    cfg = gin.table_config(generation, kind, dim)
    resident = cfg.block_d >= dim
    if kind == "fwd":
        fn = gin._forward_kernel
        const = dict(
            EXCLUDE_SELF=exclude_self,
            HAS_GROUPS=groups,
            NORMALIZED=False,
            COUNT_TILES=False,
            BLOCK_M=cfg.block_m,
            BLOCK_N=cfg.block_n,
            BLOCK_D=cfg.block_d,
            RESIDENT=resident,
            PRECISION="ieee",
        )
    else:
        fn = gin._backward_kernel
        rows_are_q = kind == "dq"
        block_x, block_y = (cfg.block_m, cfg.block_n) if rows_are_q else (cfg.block_n, cfg.block_m)
        const = dict(
            ROWS_ARE_Q=rows_are_q,
            EXCLUDE_SELF=exclude_self,
            HAS_GROUPS=groups,
            SYMMETRIC=symmetric,
            STORE_DX=True,
            TAU_GRAD=rows_are_q,
            COUNT_TILES=False,
            BLOCK_X=block_x,
            BLOCK_Y=block_y,
            BLOCK_D=cfg.block_d,
            BLOCK_DO=cfg.block_d if resident else cfg.block_do,
            RESIDENT=resident,
            PRECISION="ieee",
        )
    src = ASTSource(fn, _signature(fn, const, dtype, id_dtype), constexprs=const)
    kernel = triton.compile(
        src,
        target=GPUTarget("cuda", arch, 32),
        options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages),
    )
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        out = subprocess.run(
            [_CUOBJDUMP, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
    usage = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", out)
    if usage is None:
        raise RuntimeError(f"no resource line in cuobjdump output: {out[-500:]}")
    regs, stack, local = map(int, usage.groups())
    return {
        "arch": arch,
        "kind": kind,
        "dim": dim,
        "dtype": dtype,
        "ids": id_dtype,
        "groups": groups,
        "symmetric": symmetric,
        "config": cfg.__dict__,
        "regs": regs,
        "stack": stack,
        "local": local,
        "shared": kernel.metadata.shared,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="*", default=[90])
    parser.add_argument("--dims", type=int, nargs="*", default=[256])
    parser.add_argument("--kinds", nargs="*", default=["fwd", "dq", "dk"])
    parser.add_argument("--dtype", default="bf16")
    args = parser.parse_args()
    if gin.INTERPRETED:
        raise SystemExit("unset TRITON_INTERPRET: interpreted kernels cannot be compiled")
    for arch in args.arch:
        for dim in args.dims:
            for kind in args.kinds:
                print(json.dumps(compile_variant(arch, kind, dim, dtype=args.dtype)), flush=True)


if __name__ == "__main__":
    main()
