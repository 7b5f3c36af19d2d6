"""Grouped InfoNCE (``clinseq.kernels.grouped_info_nce``), forward + backward: time and memory against N.

The sweep is SimCLR's workload: z (N, D) l2-normalised, q = k = z, ids = pairs (rows 2j and 2j+1 are the
two views of sample j), exclude_self=True, τ = 0.1, mean; one step is loss + backward to z. Figures per
(method, N, D): median ms per step, TFLOP/s counting 4 GEMMs of 2·N·N·D (the forward QKᵀ, the backward
recompute, dQ and dK, whatever a method actually runs), and peak memory beyond the inputs (CUDA
``max_memory_allocated``; CPU the peak RSS of the child) with and without the gradient of z itself.

Methods: ``fused`` (Triton, CUDA only; q is k with one id tensor: its one-pass self-contrast backward),
``fused_fixed_max`` (the same with ``normalized=True``), ``fused_general`` (equal ids in a copied tensor:
the general dQ + dK backward, the cost of any q ≠ k call), ``chunked`` (``backend="torch"``), ``naive``
(dense autograd), ``compiled`` (``torch.compile`` of the naive one). ``interpreted`` runs the Triton
kernel under TRITON_INTERPRET=1 on the CPU at N = 256: a check that the kernel code runs, not a speed
figure. Every measurement runs in a fresh process (a clean peak RSS and allocator; the interpreter needs
its environment variable). A configuration predicted (from the same method's previous size, ∝ N²) to
exceed the time budget or, for the dense ones, 80 % of the free memory is skipped with the reason.

Sizes: CUDA N = 4k … 1M, D = 128 and 256, bf16; CPU N = 1k and 4k, fp32, plus the memory check (chunked
peak ≤ 10 % of naive at N = 16k, D = 128); quick: N = 1k and 4k (CUDA 4k, 16k), D = 128, chunked and
naive (+ fused on CUDA), no compile, no 16k check.

Grouped rows (``result["grouped"]``): COMET's observation level — B samples × 400 rows (two views × T =
200 timestamps), groups = sample, ids = timestamp, q = k = u (N = 400·B, D = 128), raw dot products, τ =
1, exclude_self, mean — laid out group by group (``*_grouped``: the scan restricted to each block's
groups) and the same rows shuffled (``*_full``: the full scan, what every grouped call cost before the
restriction; same loss). ``chunked_*`` on the CPU (B = 16, 64, 256), ``fused_*`` too on CUDA (B = 64,
256, 1024). ``logits_per_pass`` counts what a method computes per pass: the chunks' rows × columns
(chunked), the visited tiles × tile area (fused, from the kernel's tile counters).

Writes ``info_nce_<device>.json`` (``cpu``, ``h100``, ...) and a PNG of time and peak memory against N.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from clinseq.bench import harness
from clinseq.errors import ConfigError

__all__ = ["CPU_SIZES", "DIMS", "GPU_SIZES", "MEMORY_CHECK_N", "PARTS", "measure", "measure_grouped", "run"]

GPU_SIZES = (4096, 16384, 65536, 262144, 1048576)
CPU_SIZES = (1024, 4096)
DIMS = (128, 256)
MEMORY_CHECK_N = 16384  # the CPU acceptance check: chunked peak ≤ 10 % of naive peak at N = 16k, D = 128
TAU = 0.1
GROUPED_ROWS, GROUPED_DIM = 400, 128  # COMET's observation level: rows per sample, D
PARTS = ("sweep", "grouped")


def _loss_fn(method: str):
    import torch

    from clinseq.kernels import grouped_info_nce
    from clinseq.kernels.reference import naive_grouped_info_nce

    def naive(z, ids):
        return naive_grouped_info_nce(z, z, ids, ids, TAU, exclude_self=True)

    if method in ("naive", "compiled"):
        return torch.compile(naive, dynamic=False) if method == "compiled" else naive
    backend = "triton" if method.startswith("fused") or method == "interpreted" else "torch"

    def kernel(z, ids):  # fused_general: equal ids in another tensor, so the general dQ + dK backward
        k_ids = ids.clone() if method == "fused_general" else ids
        normalized = method == "fused_fixed_max"
        return grouped_info_nce(
            z, z, ids, k_ids, TAU, exclude_self=True, backend=backend, normalized=normalized
        )

    return kernel


def measure(method: str, n: int, dim: int, dtype_name: str, repeats: int, threads: int | None = None) -> dict:
    """One (method, N, D) row of the sweep, in this process."""
    import time

    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() and method != "interpreted" else "cpu"
    gen = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(n, dim, generator=gen), dim=1).to(device, getattr(torch, dtype_name))
    z.requires_grad_()
    ids = (torch.arange(n) // 2).to(device)
    loss_fn = _loss_fn(method)

    def step():
        z.grad = None
        loss = loss_fn(z, ids)
        loss.backward()
        return loss

    t0 = time.perf_counter()
    step()  # warm-up: Triton / inductor compilation, allocator
    harness.synchronize(device)
    first_s = time.perf_counter() - t0
    z.grad = None  # the peak below includes the step's own z.grad
    m = harness.measure(step, device, warmup=0, repeats=repeats)
    grad_mib = n * dim * z.element_size() / 2**20
    return {
        "method": method,
        "n": n,
        "dim": dim,
        "dtype": dtype_name,
        "device": device,
        "ms": m.seconds * 1e3,
        "tflops": 4 * 2 * n * n * dim / m.seconds / 1e12,
        "peak_mib": m.peak_mib,
        "workspace_mib": m.peak_mib - grad_mib,
        "first_call_s": first_s,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "loss": float(m.result.detach().float()),
    }


def measure_grouped(
    method: str, samples: int, rows: int, dim: int, dtype_name: str, repeats: int, threads: int | None = None
) -> dict:
    """One COMET-shaped row (see the module docstring), in this process."""
    import torch

    from clinseq.kernels import grouped_info_nce, tile_config
    from clinseq.kernels.info_nce import count_visited_tiles
    from clinseq.kernels.reference import _chunks

    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)
    n = samples * rows
    u = torch.randn(n, dim, generator=gen) / dim**0.5  # raw dot products of order 1, as τ = 1 expects
    groups = torch.arange(samples).repeat_interleave(rows)
    ids = torch.arange(rows).remainder(rows // 2).repeat(samples)
    if method.endswith("_full"):  # the same rows in a random order: unsorted groups, the full scan
        perm = torch.randperm(n, generator=gen)
        u, groups, ids = u[perm], groups[perm], ids[perm]
    u = u.to(device, getattr(torch, dtype_name)).requires_grad_()
    ids, groups = ids.to(device), groups.to(device)
    backend = "triton" if method.startswith("fused") else "torch"

    def step():
        u.grad = None
        loss = grouped_info_nce(
            u, u, ids, ids, 1.0, exclude_self=True, q_groups=groups, k_groups=groups, backend=backend
        )
        loss.backward()
        return loss

    m = harness.measure(step, device, warmup=1, repeats=repeats)
    if backend == "torch":  # the chunks' rows × columns
        logits = sum((i1 - i0) * (hi - lo) for i0, i1, lo, hi in _chunks(groups, groups, n, n, None))
    else:  # visited tiles × tile area, from a counting variant of the kernel (one extra launch)
        cfg = tile_config("fwd", u.device, dim, u.dtype)
        with count_visited_tiles() as log:
            grouped_info_nce(u.detach(), u.detach(), ids, ids, 1.0, q_groups=groups, k_groups=groups)
        logits = int(log[0][1].sum()) * cfg.block_m * cfg.block_n
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


def _in_child(function: str, key: dict, timeout_s: float, **kwargs: Any) -> dict:
    """``measure`` or ``measure_grouped`` in a fresh process; a row saying why when it gives none."""
    env = {**os.environ, **harness.MALLOC_ENV}
    env.pop("TRITON_INTERPRET", None)
    if kwargs["method"] == "interpreted":
        env["TRITON_INTERPRET"] = "1"
    code, row, last = harness.run_in_child(
        f"clinseq.bench.info_nce:{function}", kwargs, env=env, timeout_s=timeout_s
    )
    if row is None:
        why = f"timed out after {timeout_s:.0f} s" if code == -9 else f"failed: {last[:200] or code}"
        return {**key, "skipped": why}
    print(json.dumps(row), flush=True)
    return row


def _sweep_row(
    method: str, n: int, dim: int, dtype: str, repeats: int, timeout_s: float, threads: int | None
) -> dict:
    key = {"method": method, "n": n, "dim": dim}
    return _in_child("measure", key, timeout_s, dtype_name=dtype, repeats=repeats, threads=threads, **key)


def _skip(prev: dict | None, n: int, power: float, budget_s: float, free_mib: float | None = None) -> dict:
    """Why not to run size ``n`` of a method whose previous size gave ``prev`` (∝ N^power), or {}."""
    if prev is None:
        return {}
    base_ms = prev.get("ms", prev.get("predicted_ms"))
    if base_ms is None:
        return {"skipped": "skipped at a smaller size"}
    seconds = harness.predict([(prev["n"], base_ms / 1e3)], n, power)
    if seconds > budget_s:
        return {
            "skipped": f"predicted {seconds:.0f} s per step > budget {budget_s:.0f} s",
            "predicted_ms": seconds * 1e3,
        }
    mib = harness.predict([(prev["n"], max(prev.get("peak_mib") or 0.0, 1e-9))], n, power)
    if free_mib is not None and mib > 0.8 * free_mib:
        return {"skipped": f"predicted {mib / 1024:.1f} GiB > 80 % of the {free_mib / 1024:.1f} GiB free"}
    return {}


def _run_sweep(cuda, quick, sizes, dims, dtype, methods, repeats, budget_s, threads) -> dict[str, Any]:
    """The SimCLR sweep over (method, N, D) and, on the CPU, the interpreter row and the memory check."""
    rows: list[dict] = []
    for method in methods:
        for dim in dims:
            prev = None
            for n in sizes:
                dense = method in ("naive", "compiled")
                why = _skip(
                    prev,
                    n,
                    2.0,
                    budget_s,
                    harness.free_memory_mib("cuda" if cuda else "cpu") if dense else None,
                )
                why.pop("predicted_ms", None)
                row = {"method": method, "n": n, "dim": dim, **why} if why else None
                rows.append(
                    row or _sweep_row(method, n, dim, dtype, repeats, budget_s * (repeats + 3), threads)
                )
                prev = rows[-1]
    memory_check = None
    if not cuda:  # the interpreted kernel at one tiny size: it runs; its time is the interpreter's
        rows.append(_sweep_row("interpreted", 256, 128, "float32", 1, 600, threads))
        if not quick:
            pair = {
                m: _sweep_row(m, MEMORY_CHECK_N, 128, "float32", 1, 1200, threads)
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
    harness.print_table(table, list(table[0]))
    if memory_check:
        verdict = "pass" if memory_check["passed"] else "FAIL"
        print(
            f"memory check N={MEMORY_CHECK_N}, D=128: chunked/naive peak = {memory_check['ratio']:.3f} "
            f"({verdict}, target <= 0.10)"
        )
    return {
        "workload": "SimCLR: q = k = z (N, D) l2-normalised, pair ids, exclude_self, tau = 0.1, mean; "
        "fwd + bwd to z",
        "flops": "4 GEMMs of 2*N*N*D per step",
        "peak": "beyond the inputs; workspace = peak minus z.grad (N*D)",
        "dtype": dtype,
        "repeats": repeats,
        "budget_s": budget_s,
        "rows": rows,
        "memory_check": memory_check,
    }


def _run_grouped(cuda, quick, samples, repeats, budget_s, threads) -> dict[str, Any]:
    """The COMET-shaped rows: restricted (sorted groups) vs full scan (shuffled rows), per B."""
    default = (64, 256, 1024) if cuda else (16, 64, 256)
    samples = samples or (default[:1] if quick else default)
    methods = ("fused_grouped", "fused_full") * cuda + ("chunked_grouped", "chunked_full")
    rows: list[dict] = []
    for method in methods:
        dtype, prev = ("bfloat16" if cuda and method.startswith("fused") else "float32"), None
        for b in samples:
            key = {"method": method, "samples": b, "n": b * GROUPED_ROWS}
            why = _skip(prev, b * GROUPED_ROWS, 2.0 if method.endswith("_full") else 1.0, budget_s)
            if why.get("skipped") == "skipped at a smaller size":
                why["skipped"] = "failed at a smaller size"
            if why:
                row = {**key, **why}
            else:
                kw = dict(method=method, samples=b, rows=GROUPED_ROWS, dim=GROUPED_DIM, dtype_name=dtype)
                row = _in_child(
                    "measure_grouped", key, budget_s * (repeats + 3), repeats=repeats, threads=threads, **kw
                )
            rows.append(row)
            prev = row
    by_key = {(r["method"], r["samples"]): r for r in rows}
    speedups = []
    for method in [m for m in methods if m.endswith("_grouped")]:
        for b in samples:
            g, f = by_key[(method, b)], by_key[(method.replace("_grouped", "_full"), b)]
            full_ms = f.get("ms", f.get("predicted_ms"))
            if "ms" in g and full_ms is not None:
                speedups.append(
                    {
                        "backend": method.split("_")[0],
                        "samples": b,
                        "n": b * GROUPED_ROWS,
                        "speedup": full_ms / g["ms"],
                        "full_scan_measured": "ms" in f,
                    }
                )
    names = {
        "samples": "B",
        "n": "N",
        "peak_mib": "peak MiB",
        "logits_per_pass": "logits/pass",
        "work_fraction": "work fraction",
        "skipped": "note",
    }
    table = [{names.get(k, k): r.get(k) for k in ("method", *names, "ms", "loss")} for r in rows]
    columns = ["method", "B", "N", "ms", "peak MiB", "logits/pass", "work fraction", "loss", "note"]
    harness.print_table(
        table, columns, title=f"COMET observation level: B samples x {GROUPED_ROWS} rows, D = {GROUPED_DIM}"
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
_SWEEP_KEYS = ("workload", "flops", "peak", "dtype", "repeats", "budget_s", "rows", "memory_check")


def _figure(path: Path, rows: list[dict], tag: str) -> Path | None:
    time_panel = harness.Panel(
        f"Grouped InfoNCE fwd+bwd time ({tag})", "N (rows)", "ms per step", reference_slopes=(2.0,)
    )
    memory = harness.Panel(
        f"Peak memory ({tag})", "N (rows)", "MiB beyond the inputs", reference_slopes=(1.0, 2.0)
    )
    measured = [r for r in rows if "ms" in r and r["method"] != "interpreted"]
    smallest_dim = min((r["dim"] for r in measured), default=0)
    for i, method in enumerate(dict.fromkeys(r["method"] for r in measured)):
        for dim in sorted({r["dim"] for r in measured if r["method"] == method}):
            rs = sorted(
                {r["n"]: r for r in measured if (r["method"], r["dim"]) == (method, dim)}.values(),
                key=lambda r: r["n"],
            )
            for panel, key in ((time_panel, "ms"), (memory, "peak_mib")):
                style = "-o" if dim == smallest_dim else "--s"
                panel.series.append(
                    harness.Series(
                        f"{method} D={dim}", [r["n"] for r in rs], [r[key] for r in rs], style, f"C{i % 10}"
                    )
                )
    return harness.save_panels(path, [time_panel, memory])


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
    """Run the sweep and the grouped (COMET-shaped) rows (see the module docstring).

    ``threads`` defaults to 1 on the CPU (per-core figures). ``parts`` selects ``"sweep"`` (the SimCLR
    rows and the memory check) and/or ``"grouped"`` (``samples``: the B values); a part not run keeps
    its figures from the existing result file, if there is one.
    """
    import torch

    if not parts or any(p not in PARTS for p in parts):
        raise ConfigError(f"parts must be a non-empty subset of {PARTS}, got {parts!r}")
    device = harness.resolve_device(device)
    cuda = device.startswith("cuda")
    threads = threads if threads is not None else (None if cuda else 1)
    load_start = os.getloadavg()
    if quick:
        sizes = sizes or ((4096, 16384) if cuda else (1024, 4096))
        dims = dims or (128,)
        methods = methods or (("fused", "chunked", "naive") if cuda else ("chunked", "naive"))
    sizes = sizes or (GPU_SIZES if cuda else CPU_SIZES)
    dims = dims or DIMS
    dtype = dtype or ("bfloat16" if cuda else "float32")
    gpu_methods = ("fused", "fused_fixed_max", "fused_general")
    methods = methods or (gpu_methods * cuda + ("chunked", "naive", "compiled"))
    repeats = repeats or ((3 if quick else 10) if cuda else (1 if quick else 2))
    budget_s = budget_s or ((5.0 if quick else 20.0) if cuda else (5.0 if quick else 60.0))
    tag = harness.device_tag(device)
    previous: dict[str, Any] = {}
    old = harness.results_dir(quick, out_dir) / f"info_nce_{tag}.json"
    if set(parts) != set(PARTS) and old.exists():
        previous = json.loads(old.read_text())
    if "sweep" in parts:
        sweep = _run_sweep(cuda, quick, sizes, dims, dtype, methods, repeats, budget_s, threads)
    else:
        sweep = {k: previous[k] for k in _SWEEP_KEYS if k in previous}
        if previous:
            sweep["sweep_environment"] = previous.get("sweep_environment", previous.get("environment"))
    grouped = (
        _run_grouped(cuda, quick, samples, repeats, budget_s, threads)
        if "grouped" in parts
        else previous.get("grouped")
    )
    payload = {
        **sweep,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
        "grouped": grouped,
        "units": UNITS,
    }
    figure = lambda path: _figure(path, payload.get("rows") or [], tag)  # noqa: E731
    return harness.report(f"info_nce_{tag}", payload, quick=quick, out_dir=out_dir, figure=figure)
