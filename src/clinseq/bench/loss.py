"""Grouped InfoNCE, forward + backward: fused Triton vs chunked torch vs naive torch vs torch.compile.

The workload is SimCLR's: z (N, D) l2-normalised, q = k = z, ids = pairs (row 2j and 2j+1 are the two
views of sample j), exclude_self=True, τ = 0.1, reduction="mean"; one step is loss + backward to z.
Figures per (method, N, D): median wall time of a step, TFLOP/s counting 4 GEMMs of 2·N·N·D (the
forward QKᵀ, the backward recompute, dQ and dK, whatever a method actually runs), and peak memory
beyond the inputs (CUDA: ``max_memory_allocated``; CPU: the peak RSS of a fresh child process, VmHWM
reset just before the step, minus its RSS then), with and without the gradient of z itself.

Methods: ``fused`` (Triton, CUDA only; q is k with one id tensor, so its one-pass self-contrast
backward: 3 GEMM units), ``fused_fixed_max`` (the same with ``normalized=True``), ``fused_general``
(equal ids in a copied tensor: the general dQ + dK backward, 5 units, the cost of any q ≠ k call),
``chunked`` (``backend="torch"``), ``naive`` (dense autograd), ``compiled`` (``torch.compile`` of the
naive one). ``interpreted`` runs the Triton kernel under TRITON_INTERPRET=1 on the CPU at one tiny size:
a check that the CPU build runs the kernel code, not a speed figure. Each measurement runs in a fresh
child process (a clean peak RSS / allocator; the interpreter needs its environment variable).
Configurations predicted (from the same method's previous size, ∝ N²·D) to exceed the budget or the
free memory are skipped and listed with the reason.

Sizes: CUDA N = 4k … 1M, D = 128 and 256, bf16; CPU N = 1k and 4k, fp32, plus the memory check (chunked
peak ≤ 10 % of naive at N = 16k, D = 128); quick: N = 1k and 4k, D = 128, chunked and naive (+ fused on
CUDA), no compile, no 16k check. Writes ``info_nce_<device>.json`` (``cpu``, ``h100``, ...) and a PNG of
time and peak memory against N.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from clinseq.bench import plots
from clinseq.bench.report import device_tag, print_table, resolve_device, write_results

__all__ = ["CPU_SIZES", "DIMS", "GPU_SIZES", "MEMORY_CHECK_N", "measure", "run"]

GPU_SIZES = (4096, 16384, 65536, 262144, 1048576)
CPU_SIZES = (1024, 4096)
DIMS = (128, 256)
MEMORY_CHECK_N = 16384  # the CPU acceptance check: chunked peak ≤ 10 % of naive peak at N = 16k, D = 128
TAU = 0.1


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _step_fn(method: str):
    import torch

    from clinseq.kernels import grouped_info_nce, naive_grouped_info_nce

    def naive(z, ids):
        return naive_grouped_info_nce(z, z, ids, ids, TAU, exclude_self=True)

    if method == "compiled":
        naive = torch.compile(naive, dynamic=False)
    backend = {
        "fused": "triton",
        "fused_fixed_max": "triton",
        "fused_general": "triton",
        "interpreted": "triton",
    }

    def step(z, ids):
        z.grad = None
        if method in ("naive", "compiled"):
            loss = naive(z, ids)
        else:
            # fused_general: equal ids in another tensor, so the kernel cannot take its one-pass
            # self-contrast backward and runs the general dQ + dK passes (the q ≠ k cost).
            loss = grouped_info_nce(
                z,
                z,
                ids,
                ids.clone() if method == "fused_general" else ids,
                TAU,
                exclude_self=True,
                backend=backend.get(method, "torch"),
                normalized=method == "fused_fixed_max",
            )
        loss.backward()
        return loss

    return step


def measure(method: str, n: int, dim: int, dtype_name: str, repeats: int, threads: int | None = None) -> dict:
    """One (method, N, D) measurement in this process."""
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    cuda = torch.cuda.is_available() and method != "interpreted"
    device = "cuda" if cuda else "cpu"
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(n, dim, generator=gen), dim=1).to(device, dtype).requires_grad_()
    ids = (torch.arange(n) // 2).to(device)
    step = _step_fn(method)
    grad_mib = n * dim * z.element_size() / 2**20

    t0 = time.perf_counter()
    step(z, ids)  # warm-up: Triton / inductor compilation, allocator
    if cuda:
        torch.cuda.synchronize()
    first_s = time.perf_counter() - t0
    z.grad = None
    if cuda:
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
            f.write("5")
        base = _rss_mib("VmRSS")
    times = []
    loss = None
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            loss = step(z, ids)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            loss = step(z, ids)
            times.append(time.perf_counter() - t)
    peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else _rss_mib("VmHWM") - base
    seconds = statistics.median(times)
    return {
        "method": method,
        "n": n,
        "dim": dim,
        "dtype": dtype_name,
        "device": device,
        "ms": seconds * 1e3,
        "tflops": 4 * 2 * n * n * dim / seconds / 1e12,
        "peak_mib": peak_mib,
        "workspace_mib": peak_mib - grad_mib,
        "first_call_s": first_s,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "loss": float(loss.detach().float()),
    }


def run_child(
    method: str, n: int, dim: int, dtype_name: str, repeats: int, timeout_s: float, threads: int | None
) -> dict:
    """Measure in a fresh process (a clean peak RSS / allocator; the interpreter needs its env var)."""
    # glibc returns freed blocks ≥ 128 KiB to the OS at once with a fixed mmap threshold, so the peak RSS
    # of the measured step is not hidden by heap pages that the warm-up step left resident.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    if method == "interpreted":
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    cmd = [
        sys.executable,
        "-m",
        "clinseq.bench.loss",
        json.dumps([method, n, dim, dtype_name, repeats, threads]),
    ]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"method": method, "n": n, "dim": dim, "skipped": f"timed out after {timeout_s:.0f} s"}
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["?"]
        return {"method": method, "n": n, "dim": dim, "skipped": f"failed: {tail[0][:200]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _free_mib(cuda: bool) -> float:
    if cuda:
        import torch

        return torch.cuda.mem_get_info()[0] / 2**20
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return info["MemAvailable"] / 1024


def _predicted_skip(prev: dict | None, n: int, dim: int, budget_s: float, free_mib: float) -> str | None:
    if prev is None or "ms" not in prev:
        return None if prev is None else "skipped at a smaller size"
    scale_n = (n / prev["n"]) ** 2
    seconds = prev["ms"] / 1e3 * scale_n * dim / prev["dim"]
    if seconds > budget_s:
        return f"predicted {seconds:.0f} s per step > budget {budget_s:.0f} s"
    mib = max(prev["peak_mib"], 0.0) * scale_n
    if prev["method"] in ("naive", "compiled") and mib > 0.8 * free_mib:
        return f"predicted {mib / 1024:.1f} GiB > 80 % of the {free_mib / 1024:.1f} GiB free"
    return None


UNITS = {
    "n": "rows of z (N)",
    "dim": "embedding width (D)",
    "ms": "milliseconds per loss + backward step (median)",
    "tflops": "TFLOP/s counting 4 GEMMs of 2*N*N*D",
    "peak_mib": "MiB beyond the inputs (CUDA max_memory_allocated; CPU peak RSS of the child)",
    "workspace_mib": "MiB: peak minus z.grad (N*D)",
    "first_call_s": "seconds of the first (warm-up/compile) call",
    "repeats": "timed steps",
    "threads": "torch CPU threads",
    "loss": "loss value (nats), a sanity check",
    "budget_s": "seconds: a step predicted longer is skipped",
    "load_average_at_start": "runnable processes (1, 5, 15 min averages)",
    "load_average_at_end": "runnable processes (1, 5, 15 min averages)",
    "chunked_peak_mib": "MiB",
    "naive_peak_mib": "MiB",
    "ratio": "chunked peak / naive peak",
}


def _figure(path: Path, rows: list[dict], tag: str) -> Path | None:
    panels = [
        plots.Panel(
            f"Grouped InfoNCE fwd+bwd time ({tag})", "N (rows)", "ms per step", reference_slopes=(2.0,)
        ),
        plots.Panel(f"Peak memory ({tag})", "N (rows)", "MiB beyond the inputs", reference_slopes=(1.0, 2.0)),
    ]
    methods = list(dict.fromkeys(r["method"] for r in rows if "ms" in r and r["method"] != "interpreted"))
    for i, method in enumerate(methods):
        for dim in sorted({r["dim"] for r in rows if r["method"] == method}):
            rs = sorted(
                {r["n"]: r for r in rows if r["method"] == method and r["dim"] == dim and "ms" in r}.values(),
                key=lambda r: r["n"],
            )
            if not rs:
                continue
            style = "-o" if dim == min(r["dim"] for r in rows) else "--s"
            xs = [r["n"] for r in rs]
            for panel, key in zip(panels, ("ms", "peak_mib"), strict=True):
                series = plots.Series(f"{method} D={dim}", xs, [r[key] for r in rs], style, plots.color(i))
                panel.series.append(series)
    return plots.save_panels(path, panels)


def run(
    *,
    device: str = "cpu",
    quick: bool = False,
    out_dir: str | Path | None = None,
    sizes: tuple[int, ...] | None = None,
    dims: tuple[int, ...] | None = None,
    dtype: str | None = None,
    methods: tuple[str, ...] | None = None,
    repeats: int | None = None,
    budget_s: float | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run the loss-kernel sweep (see the module docstring); ``threads`` defaults to 1 on the CPU (per-
    core figures). Returns ``{"json": path, "figures": [...], "result": payload}``."""
    import torch

    device = resolve_device(device)
    cuda = device.startswith("cuda")
    threads = threads if threads is not None else (None if cuda else 1)
    load_start = os.getloadavg()
    if quick:
        sizes = sizes or ((4096, 16384) if cuda else (1024, 4096))
        dims = dims or (128,)
        methods = methods or (("fused", "chunked", "naive") if cuda else ("chunked", "naive"))
    sizes = sizes or (GPU_SIZES if cuda else CPU_SIZES)
    dims = dims or DIMS
    dtype_name = dtype or ("bfloat16" if cuda else "float32")
    methods = methods or (
        ("fused", "fused_fixed_max", "fused_general", "chunked", "naive", "compiled")
        if cuda
        else ("chunked", "naive", "compiled")
    )
    repeats = repeats or ((3 if quick else 10) if cuda else (1 if quick else 2))
    budget_s = budget_s or ((5.0 if quick else 20.0) if cuda else (5.0 if quick else 60.0))
    rows: list[dict] = []
    for method in methods:
        for dim in dims:
            prev = None
            for n in sizes:
                reason = _predicted_skip(prev, n, dim, budget_s, _free_mib(cuda))
                if reason:
                    row = {"method": method, "n": n, "dim": dim, "skipped": reason}
                else:
                    row = run_child(method, n, dim, dtype_name, repeats, budget_s * (repeats + 3), threads)
                    print(json.dumps(row), flush=True)
                rows.append(row)
                prev = row

    memory_check = None
    if not cuda:
        # The interpreted kernel at one tiny size: it runs; its time is the interpreter's, not a GPU's.
        rows.append(run_child("interpreted", 256, 128, "float32", 1, 600, threads))
        if not quick:
            pair = {
                m: run_child(m, MEMORY_CHECK_N, 128, "float32", 1, 1200, threads)
                for m in ("chunked", "naive")
            }
            rows.extend(pair.values())
            if all("peak_mib" in r for r in pair.values()):
                ratio = pair["chunked"]["peak_mib"] / pair["naive"]["peak_mib"]
                memory_check = {
                    "n": MEMORY_CHECK_N,
                    "dim": 128,
                    "chunked_peak_mib": pair["chunked"]["peak_mib"],
                    "naive_peak_mib": pair["naive"]["peak_mib"],
                    "ratio": ratio,
                    "target": "<= 0.10",
                    "passed": ratio <= 0.10,
                }

    table = [
        {
            "method": r["method"],
            "N": r["n"],
            "D": r["dim"],
            "ms": r.get("ms"),
            "TFLOP/s": r.get("tflops"),
            "peak MiB": r.get("peak_mib"),
            "workspace MiB": r.get("workspace_mib"),
            "note": r.get(
                "skipped", "interpreter, not a speed figure" if r["method"] == "interpreted" else ""
            ),
        }
        for r in rows
    ]
    print_table(table, ["method", "N", "D", "ms", "TFLOP/s", "peak MiB", "workspace MiB", "note"])
    if memory_check:
        print(
            f"memory check N={MEMORY_CHECK_N}, D=128: chunked/naive peak = {memory_check['ratio']:.3f} "
            f"({'pass' if memory_check['passed'] else 'FAIL'}, target <= 0.10)"
        )
    tag = device_tag(device)
    payload = {
        "workload": "SimCLR: q = k = z (N, D) l2-normalised, pair ids, exclude_self, tau = 0.1, mean; "
        "fwd + bwd to z",
        "flops": "4 GEMMs of 2*N*N*D per step",
        "peak": "beyond the inputs; workspace = peak minus z.grad (N*D)",
        "dtype": dtype_name,
        "repeats": repeats,
        "budget_s": budget_s,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
        "memory_check": memory_check,
        "units": UNITS,
    }
    path = write_results(f"info_nce_{tag}", payload, quick=quick, out_dir=out_dir)
    figure = _figure(path.with_suffix(".png"), rows, tag)
    figures = [figure] if figure is not None else []
    print(f"wrote {path}" + "".join(f", {f}" for f in figures))
    return {"json": path, "figures": figures, "result": payload}


if __name__ == "__main__":  # a child of run_child: one measurement, printed as one JSON line
    print(json.dumps(measure(*json.loads(sys.argv[1]))))
