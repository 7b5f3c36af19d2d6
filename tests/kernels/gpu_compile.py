"""Compile the grouped-InfoNCE kernels for GPU targets without a GPU: resources, spills, instructions.

Triton's interpreter runs the kernels' Python, not its code generator: a kernel can pass every
interpreted test and still fail to compile, ask for more shared memory than its GPU has (a launch then
fails with OutOfResources), spill registers, or miss the tensor-core instructions of its architecture.
This script lowers each pass to PTX and a cubin at the tile table's configuration for (architecture,
dtype, D) and reads the resources with the ``cuobjdump`` shipped in Triton's wheel::

    TRITON_INTERPRET=0 .venv/bin/python tests/kernels/gpu_compile.py \
        --arch 80 86 89 90 gfx942 --dtypes fp32 bf16 fp16 --dims 128 256 512 1024 \
        --json benchmarks/results/info_nce_compile_matrix.json

Each row: ``regs`` per thread, ``spill_bytes`` (stack + local: > 0 means register spills), ``shared``
bytes against the architecture's per-block limit (``fits``: no OutOfResources at launch), and the
instruction mix of the pass from its PTX: ``wgmma`` (Hopper warpgroup MMA), ``mma_sync`` (Ampere-style
warp MMA) and ``fma_f32`` (CUDA-core products: fp32 under the default IEEE precision) counts. Every
variant is the heaviest one (int64 ids, groups, exclude_self, symmetric, learnable τ in dQ); pointers, D
and strides carry the divisibility-by-16 hint a real launch with D % 16 == 0 gets, the row counts none
(``do_not_specialize``). D is a runtime argument, so two D that select the same table row compile to
the same binary: it is compiled once and the row says ``same_binary_as``.
``gfx942`` is AMD's MI300 (ROCm), which takes the table's fallback rows: it is lowered to AMDGCN with
the linker built into Triton, and its row reads VGPRs, VGPR spills, LDS (64 KB) and ``mfma`` counts from
the assembly's metadata.
``test_gpu_compile.py`` runs a subset of it in a subprocess (the test session interprets the kernels).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile

import torch
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
#: Integer arguments a real launch specialises as divisible by 16 (D and strides for D % 16 == 0).
_ALIGNED_INTS = {"D", "stride_q", "stride_k", "stride_x", "stride_y", "stride_dx"}
_CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")

#: Table key of each compiled architecture (gfx942 = AMD MI300 on ROCm, which takes the fallback rows).
GENERATION = {"80": "sm80", "86": "sm86", "89": "sm86", "90": "sm90", "gfx942": "fallback"}
#: Largest shared memory (LDS on AMD) per block, bytes: A100 163 KB, sm_86/89 99 KB, H100 227 KB,
#: MI300 64 KB.
SHARED_LIMIT = {"80": 163 * 1024, "86": 99 * 1024, "89": 99 * 1024, "90": 227 * 1024, "gfx942": 64 * 1024}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _signature(fn, constexprs: dict, dtype: str, id_dtype: str) -> tuple[dict[str, str], dict]:
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
            continue
        if name in _POINTERS:
            kind = _POINTERS[name]
            sig[name] = f"*{dtype}" if kind == "x" else f"*{id_dtype}" if kind == "id" else kind
            attrs[(i,)] = [["tt.divisibility", 16]]  # torch allocations are 256-byte aligned
        else:
            sig[name] = "i32"  # sizes and strides
            if name in _ALIGNED_INTS:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, attrs


def _constexprs(
    kind: str, cfg, dim: int, groups: bool, exclude_self: bool, symmetric: bool, normalized: bool
) -> dict:
    resident = cfg.block_d >= dim
    if kind == "fwd":
        return dict(
            EXCLUDE_SELF=exclude_self,
            HAS_GROUPS=groups,
            NORMALIZED=normalized,
            COUNT_TILES=False,
            BLOCK_M=cfg.block_m,
            BLOCK_N=cfg.block_n,
            BLOCK_D=cfg.block_d,
            RESIDENT=resident,
            PRECISION="ieee",
        )
    rows_are_q = kind == "dq"
    block_x, block_y = (cfg.block_m, cfg.block_n) if rows_are_q else (cfg.block_n, cfg.block_m)
    return dict(
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


def compile_variant(
    arch: str,
    kind: str,
    dim: int,
    *,
    dtype: str = "bf16",
    id_dtype: str = "i64",
    groups: bool = True,
    exclude_self: bool = True,
    symmetric: bool = True,
    normalized: bool = False,
) -> dict:
    """Compile one pass at the table's configuration for (arch, dtype, D); return its resources."""
    cfg = gin.table_config(GENERATION[arch], kind, dim, DTYPES[dtype])
    fn = gin._forward_kernel if kind == "fwd" else gin._backward_kernel
    const = _constexprs(kind, cfg, dim, groups, exclude_self, symmetric, normalized)
    sig, attrs = _signature(fn, const, dtype, id_dtype)
    kernel = triton.compile(
        ASTSource(fn, sig, constexprs=const, attrs=attrs),
        target=GPUTarget("hip", arch, 64) if arch.startswith("gfx") else GPUTarget("cuda", int(arch), 32),
        options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages),
    )
    shared = int(kernel.metadata.shared)
    common = {
        "dtype": dtype,
        "dim": dim,
        "kind": kind,
        "ids": id_dtype,
        "groups": groups,
        "symmetric": symmetric,
        "normalized": normalized if kind == "fwd" else None,
        "config": cfg.__dict__,
        "resident": cfg.block_d >= dim,
        "shared": shared,
        "shared_limit": SHARED_LIMIT[arch],
    }
    if arch.startswith("gfx"):
        return {"arch": arch, **common, **_amd_resources(kernel.asm["amdgcn"], shared, SHARED_LIMIT[arch])}
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
    ptx = kernel.asm["ptx"]
    threads = 32 * cfg.num_warps
    return {
        "arch": f"sm_{arch}",
        **common,
        "regs": regs,
        "stack": stack,
        "local": local,
        "spill_bytes": stack + local,
        # A launch fails with OutOfResources past the shared-memory limit or 64 K registers per block.
        "fits": shared <= SHARED_LIMIT[arch] and regs * threads <= 65536,
        "wgmma": len(re.findall(r"\bwgmma\.mma_async\b", ptx)),
        "mma_sync": len(re.findall(r"\bmma\.sync\b", ptx)),
        "fma_f32": len(re.findall(r"\bfma\.rn\.f32\b", ptx)),
    }


def _amd_resources(amdgcn: str, shared: int, limit: int) -> dict:
    """Registers, spills and matrix instructions of an AMD kernel from its assembly's metadata."""

    def field(name: str) -> int:
        found = re.search(rf"\.{name}:\s*(\d+)", amdgcn)
        return int(found.group(1)) if found else 0

    vgprs, spills = field("vgpr_count"), field("vgpr_spill_count")
    return {
        "regs": vgprs,
        "sgpr_spills": field("sgpr_spill_count"),  # to VGPR lanes, not memory
        "spill_bytes": 4 * spills,  # VGPR spills to scratch memory, bytes per lane
        "fits": shared <= limit and vgprs <= 512,
        "mfma": len(re.findall(r"\bv_mfma_", amdgcn)),
        "wgmma": 0,
        "mma_sync": 0,
        "fma_f32": len(re.findall(r"\bv_(?:pk_)?fma_f32\b", amdgcn)),
    }


def compile_matrix(archs, dtypes, dims, kinds, normalized=False, log=print) -> list[dict]:
    """Every (arch, dtype, D, pass) of the matrix; identical binaries are compiled once."""
    rows: list[dict] = []
    done: dict[tuple, dict] = {}
    for arch in archs:
        for dtype in dtypes:
            for dim in dims:
                for kind in kinds:
                    cfg = gin.table_config(GENERATION[arch], kind, dim, DTYPES[dtype])
                    key = (arch, dtype, kind, cfg, cfg.block_d >= dim)
                    if key in done:
                        row = {**done[key], "dim": dim, "same_binary_as": done[key]["dim"]}
                    else:
                        row = done[key] = compile_variant(arch, kind, dim, dtype=dtype, normalized=normalized)
                    rows.append(row)
                    log(json.dumps(row))
    return rows


def summary(rows: list[dict]) -> str:
    """One line per (arch, dtype, D): fits, spills and instruction mix of fwd / dq / dk."""
    lines = [f"{'arch':7} {'dtype':5} {'D':>5}  pass: regs spill shared/limit KB  wgmma mma.sync|mfma fma"]
    for r in rows:
        lines.append(
            f"{r['arch']:7} {r['dtype']:5} {r['dim']:>5}  {r['kind']:3}: {r['regs']:>3} "
            f"{r['spill_bytes']:>5} {r['shared'] / 1024:6.1f}/{r['shared_limit'] / 1024:.0f}"
            f"{'' if r['fits'] else ' OUT OF RESOURCES'}"
            f"  {r['wgmma']:>4} {r['mma_sync'] + r.get('mfma', 0):>4} {r['fma_f32']:>5}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="*", default=["90"], choices=sorted(GENERATION))
    parser.add_argument("--dtypes", nargs="*", default=["bf16"], choices=sorted(DTYPES))
    parser.add_argument("--dims", type=int, nargs="*", default=[256])
    parser.add_argument("--kinds", nargs="*", default=["fwd", "dq", "dk"])
    parser.add_argument(
        "--normalized", action="store_true", help="forward with normalized=True (fixed max, device fallback)"
    )
    parser.add_argument("--json", help="write the matrix, with versions and command, to this file")
    args = parser.parse_args()
    if gin.INTERPRETED:
        raise SystemExit("unset TRITON_INTERPRET: interpreted kernels cannot be compiled")
    rows = compile_matrix(args.arch, args.dtypes, args.dims, args.kinds, args.normalized)
    print(summary(rows), file=sys.stderr)
    if args.json:
        report = {
            "what": "grouped-InfoNCE passes compiled for NVIDIA targets without a GPU (no run, no timing)",
            "command": "TRITON_INTERPRET=0 python tests/kernels/gpu_compile.py " + " ".join(sys.argv[1:]),
            "triton": triton.__version__,
            "torch": torch.__version__,
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "shared_limit_bytes": {f"sm_{a}": v for a, v in SHARED_LIMIT.items()},
            "variant": "int64 ids, groups, exclude_self, symmetric; dq with dL/dtau; IEEE precision",
            "rows": rows,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
