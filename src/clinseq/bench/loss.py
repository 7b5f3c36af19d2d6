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

Grouped rows (``result["grouped"]``): COMET's observation level — B samples × 2T = 400 rows (two views ×
T = 200 timestamps), groups = sample, ids = timestamp, q = k = u (N = 400·B, D = 128), raw dot products,
τ = 1, exclude_self, mean — with the rows laid out group by group (``*_grouped``: sorted groups, the scan
restricted to each block's groups) and the same rows shuffled (``*_full``: unsorted groups, the full
scan, what every grouped call cost before the restriction; same loss). ``chunked_*`` on the CPU (B = 16,
64, 256), ``fused_*`` too on CUDA (B = 64, 256, 1024). ``logits_per_pass`` counts what the method
computes per pass: the chunks' rows × columns (chunked), the visited tiles × tile area (fused, from the
kernel's own tile counters).
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from clinseq.bench import plots
from clinseq.bench.report import device_tag, print_table, resolve_device, results_dir, write_results
from clinseq.utils import ConfigError

__all__ = [
    "CPU_SIZES",
    "DIMS",
    "GPU_SIZES",
    "GROUPED_DIM",
    "GROUPED_ROWS",
    "MEMORY_CHECK_N",
    "measure",
    "measure_grouped",
    "run",
]

GPU_SIZES = (4096, 16384, 65536, 262144, 1048576)
CPU_SIZES = (1024, 4096)
DIMS = (128, 256)
MEMORY_CHECK_N = 16384  # the CPU acceptance check: chunked peak ≤ 10 % of naive peak at N = 16k, D = 128
TAU = 0.1
# COMET's observation level (grouped rows): samples B, 2T rows per sample, D.
GROUPED_SAMPLES_CPU = (16, 64, 256)
GROUPED_SAMPLES_GPU = (64, 256, 1024)
GROUPED_ROWS = 400
GROUPED_DIM = 128
GROUPED_METHODS_CPU = ("chunked_grouped", "chunked_full")
GROUPED_METHODS_GPU = ("fused_grouped", "fused_full", "chunked_grouped", "chunked_full")


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


def _grouped_inputs(samples: int, rows: int, dim: int, device: str, dtype, shuffled: bool):
    """COMET observation-level rows (b, view, t): groups = b, ids = t; shuffled: a random row order."""
    import torch

    gen = torch.Generator().manual_seed(0)
    n = samples * rows
    u = torch.randn(n, dim, generator=gen) / dim**0.5  # raw dot products of order 1, as τ_I = 1 expects
    groups = torch.arange(samples).repeat_interleave(rows)
    ids = torch.arange(rows).remainder(rows // 2).repeat(samples)
    if shuffled:
        perm = torch.randperm(n, generator=gen)
        u, groups, ids = u[perm], groups[perm], ids[perm]
    return u.to(device, dtype).requires_grad_(), ids.to(device), groups.to(device)


def _logits_per_pass(method: str, u, ids, groups) -> int:
    """Logits the method computes in its forward pass (rows × columns it multiplies)."""
    from clinseq.kernels import grouped_info_nce, reference

    if method.startswith("chunked"):
        n = u.shape[0]
        return sum((i1 - i0) * (hi - lo) for i0, i1, lo, hi in reference._chunks(groups, groups, n, n, None))
    gin = importlib.import_module("clinseq.kernels.info_nce")
    cfg = gin.tile_config("fwd", u.device, u.shape[1])
    with gin.count_visited_tiles() as log:  # a counting variant of the kernel, one extra launch
        grouped_info_nce(u.detach(), u.detach(), ids, ids, 1.0, q_groups=groups, k_groups=groups)
    return int(log[0][1].sum()) * cfg.block_m * cfg.block_n


def measure_grouped(
    method: str, samples: int, rows: int, dim: int, dtype_name: str, repeats: int, threads: int | None = None
) -> dict:
    """One COMET-shaped measurement (see the module docstring) in this process."""
    import torch

    from clinseq.bench import timing
    from clinseq.kernels import grouped_info_nce

    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    u, ids, groups = _grouped_inputs(
        samples, rows, dim, device, getattr(torch, dtype_name), method.endswith("_full")
    )
    backend = "triton" if method.startswith("fused") else "torch"

    def step():
        u.grad = None
        loss = grouped_info_nce(
            u, u, ids, ids, 1.0, exclude_self=True, q_groups=groups, k_groups=groups, backend=backend
        )
        loss.backward()
        return loss

    m = timing.measure(step, device, warmup=1, repeats=repeats)
    n = samples * rows
    logits = _logits_per_pass(method, u, ids, groups)
    return {
        "method": method,
        "samples": samples,
        "rows_per_group": rows,
        "n": n,
        "dim": dim,
        "dtype": dtype_name,
        "device": device,
        "ms": m.seconds * 1e3,
        "peak_mib": m.peak_mib,
        "logits_per_pass": logits,
        "work_fraction": logits / (n * n),
        "needed_fraction": rows / n,  # Σ_g n_g² / N²: the logits inside the groups
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "loss": float(m.result.detach().float()),
    }


def run_child(
    method: str,
    n: int,
    dim: int,
    dtype_name: str,
    repeats: int,
    timeout_s: float,
    threads: int | None,
    samples: int | None = None,
) -> dict:
    """Measure in a fresh process (a clean peak RSS / allocator; the interpreter needs its env var).

    With ``samples``, a grouped measurement (:func:`measure_grouped`) of ``samples`` groups of ``n`` rows.
    """
    # glibc returns freed blocks ≥ 128 KiB to the OS at once with a fixed mmap threshold, so the peak RSS
    # of the measured step is not hidden by heap pages that the warm-up step left resident.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    if method == "interpreted":
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    if samples is None:
        args: Any = [method, n, dim, dtype_name, repeats, threads]
        key = {"method": method, "n": n, "dim": dim}
    else:
        args = {"method": method, "samples": samples, "rows": n, "dim": dim, "dtype_name": dtype_name}
        args.update(repeats=repeats, threads=threads)
        key = {"method": method, "samples": samples, "rows_per_group": n, "n": samples * n, "dim": dim}
    cmd = [sys.executable, "-m", "clinseq.bench.loss", json.dumps(args)]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {**key, "skipped": f"timed out after {timeout_s:.0f} s"}
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["?"]
        return {**key, "skipped": f"failed: {tail[0][:200]}"}
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
    "samples": "samples B (groups of the COMET observation level)",
    "rows_per_group": "rows per group (2 views x T timestamps)",
    "logits_per_pass": "logits (row x column products of D) computed per pass",
    "work_fraction": "logits_per_pass / N^2 (1 = full scan)",
    "needed_fraction": "logits inside the groups / N^2 (sum_g n_g^2 / N^2)",
    "predicted_ms": "milliseconds per step predicted from the previous size (N^2 full scan, N restricted)",
    "speedup": "full-scan ms / group-restricted ms, same rows",
    "sweep_environment": "as environment: the run that measured rows and memory_check (kept by --parts)",
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


def _grouped_predicted_s(prev: dict | None, method: str, n: int) -> float | None:
    """Seconds of a step predicted from the same method's previous size: ∝ N² for the full scan, ∝ N
    for the group-restricted one (fixed rows per group)."""
    base_ms = None if prev is None else prev.get("ms", prev.get("predicted_ms"))
    if base_ms is None:
        return None
    power = 2 if method.endswith("_full") else 1
    return base_ms / 1e3 * (n / prev["n"]) ** power


def _run_grouped(
    cuda: bool,
    quick: bool,
    samples: tuple[int, ...] | None,
    repeats: int,
    budget_s: float,
    threads: int | None,
) -> dict[str, Any]:
    """The COMET-shaped rows: restricted (sorted groups) vs full scan (shuffled rows), per B."""
    samples = samples or ((GROUPED_SAMPLES_GPU[:1] if cuda else GROUPED_SAMPLES_CPU[:1]) if quick else None)
    samples = samples or (GROUPED_SAMPLES_GPU if cuda else GROUPED_SAMPLES_CPU)
    methods = GROUPED_METHODS_GPU if cuda else GROUPED_METHODS_CPU
    dtype_name = "bfloat16" if cuda else "float32"
    rows: list[dict] = []
    for method in methods:
        dtype = dtype_name if method.startswith("fused") else "float32"
        prev = None
        for b in samples:
            n = b * GROUPED_ROWS
            predicted = _grouped_predicted_s(prev, method, n)
            if prev is not None and predicted is None:
                row = {"method": method, "samples": b, "n": n, "skipped": "failed at a smaller size"}
            elif predicted is not None and predicted > budget_s:
                row = {
                    "method": method,
                    "samples": b,
                    "n": n,
                    "skipped": f"predicted {predicted:.0f} s per step > budget {budget_s:.0f} s",
                    "predicted_ms": predicted * 1e3,
                }
            else:
                row = run_child(
                    method, GROUPED_ROWS, GROUPED_DIM, dtype, repeats, budget_s * (repeats + 3), threads, b
                )
                print(json.dumps(row), flush=True)
            rows.append(row)
            prev = row
    # Speed-up of the restricted scan over the full scan of the same rows, per (backend, B).
    by_key = {(r["method"], r["samples"]): r for r in rows}
    speedups = []
    for method in methods:
        if not method.endswith("_grouped"):
            continue
        full_method = method.replace("_grouped", "_full")
        for b in samples:
            g, f = by_key.get((method, b), {}), by_key.get((full_method, b), {})
            if "ms" in g and ("ms" in f or "predicted_ms" in f):
                speedups.append(
                    {
                        "backend": method.split("_")[0],
                        "samples": b,
                        "n": b * GROUPED_ROWS,
                        "speedup": f.get("ms", f.get("predicted_ms")) / g["ms"],
                        "full_scan_measured": "ms" in f,
                    }
                )
    table = [
        {
            "method": r["method"],
            "B": r["samples"],
            "N": r["n"],
            "ms": r.get("ms"),
            "peak MiB": r.get("peak_mib"),
            "logits/pass": r.get("logits_per_pass"),
            "work fraction": r.get("work_fraction"),
            "loss": r.get("loss"),
            "note": r.get("skipped", ""),
        }
        for r in rows
    ]
    print_table(
        table,
        ["method", "B", "N", "ms", "peak MiB", "logits/pass", "work fraction", "loss", "note"],
        title=f"COMET observation level: B samples x {GROUPED_ROWS} rows, D = {GROUPED_DIM}",
    )
    for sp in speedups:
        kind = "measured" if sp["full_scan_measured"] else "full scan predicted"
        print(f"{sp['backend']} B={sp['samples']}: group-restricted {sp['speedup']:.1f}x faster ({kind})")
    return {
        "workload": f"COMET observation level: B samples x {GROUPED_ROWS} rows (2 views x T = "
        f"{GROUPED_ROWS // 2}), groups = sample, ids = timestamp, q = k = u (N = {GROUPED_ROWS}*B, D = "
        f"{GROUPED_DIM}), raw dot products, tau = 1, exclude_self, mean; fwd + bwd to u. *_grouped: rows "
        "sorted by group (restricted scan); *_full: the same rows shuffled (unsorted groups: full scan)",
        "repeats": repeats,
        "budget_s": budget_s,
        "rows": rows,
        "speedups": speedups,
    }


PARTS = ("sweep", "grouped")


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
    parts: tuple[str, ...] = PARTS,
    samples: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Run the loss-kernel sweep and the grouped (COMET-shaped) rows (see the module docstring).

    ``threads`` defaults to 1 on the CPU (per-core figures). ``parts`` selects ``"sweep"`` (the SimCLR
    rows and the memory check) and/or ``"grouped"`` (``samples``: the B values); a part not run keeps
    its figures from the existing result file, if there is one. Returns ``{"json": path, "figures":
    [...], "result": payload}``.
    """
    import torch

    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ConfigError(f"parts must be a non-empty subset of {PARTS}, got {parts!r}")
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
    tag = device_tag(device)
    previous = _previous_result(f"info_nce_{tag}", quick, out_dir) if set(parts) != set(PARTS) else {}
    if "sweep" in parts:
        sweep = _run_sweep(cuda, quick, sizes, dims, dtype_name, methods, repeats, budget_s, threads)
    else:
        sweep = {k: previous[k] for k in _SWEEP_KEYS if k in previous}
        if previous:
            sweep["sweep_environment"] = previous.get("sweep_environment", previous.get("environment"))
    if "grouped" in parts:
        grouped = _run_grouped(cuda, quick, samples, repeats, budget_s, threads)
    else:
        grouped = previous.get("grouped")
    payload = {
        **sweep,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
        "grouped": grouped,
        "units": UNITS,
    }
    path = write_results(f"info_nce_{tag}", payload, quick=quick, out_dir=out_dir)
    figure = _figure(path.with_suffix(".png"), payload.get("rows") or [], tag)
    figures = [figure] if figure is not None else []
    print(f"wrote {path}" + "".join(f", {f}" for f in figures))
    return {"json": path, "figures": figures, "result": payload}


# The sweep's fields of the result, kept as they were when only the grouped rows are re-run.
_SWEEP_KEYS = ("workload", "flops", "peak", "dtype", "repeats", "budget_s", "rows", "memory_check")


def _previous_result(name: str, quick: bool, out_dir: str | Path | None) -> dict[str, Any]:
    path = results_dir(quick, out_dir) / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _run_sweep(
    cuda: bool,
    quick: bool,
    sizes: tuple[int, ...],
    dims: tuple[int, ...],
    dtype_name: str,
    methods: tuple[str, ...],
    repeats: int,
    budget_s: float,
    threads: int | None,
) -> dict[str, Any]:
    """The SimCLR sweep over (method, N, D) and, on the CPU, the interpreter row and the memory check."""
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
    return {
        "workload": "SimCLR: q = k = z (N, D) l2-normalised, pair ids, exclude_self, tau = 0.1, mean; "
        "fwd + bwd to z",
        "flops": "4 GEMMs of 2*N*N*D per step",
        "peak": "beyond the inputs; workspace = peak minus z.grad (N*D)",
        "dtype": dtype_name,
        "repeats": repeats,
        "budget_s": budget_s,
        "rows": rows,
        "memory_check": memory_check,
    }


if __name__ == "__main__":  # a child of run_child: one measurement, printed as one JSON line
    _args = json.loads(sys.argv[1])
    print(json.dumps(measure_grouped(**_args) if isinstance(_args, dict) else measure(*_args)))
