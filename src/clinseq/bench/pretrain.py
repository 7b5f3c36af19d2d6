"""End-to-end pretraining throughput: loader → views → encoder → objective → backward → optimizer.

The recipes' own configuration (``recipes/ptbxl/pclr.yaml`` and ``cpc.yaml`` of the checkout, or the
``recipes`` folder given) on the real PTB-XL subset at 100 Hz, built with the library's own pieces
(``prepare_store``, ``build_data``, ``method_class(...).build``, ``Trainer``) and stepped with
``Trainer.train_step`` — the step ``clinseq pretrain`` runs: batch to the device, autocast forward
(views inside the task), backward, gradient clipping, AdamW, the schedule. Batches come from the recipe's
``EpochLoader`` over epochs, exactly as in ``Trainer.fit`` (one ``DataLoader`` with persistent workers
that read ahead across epochs).

Configurations: ``pclr`` (the recipe: Ribeiro ResNet, 256 patients × 2 windows of 5 s, no views, as in
the paper), ``pclr+views`` (the same with an ECG augmentation chain run on the device by the task:
amplitude scale, Gaussian noise, baseline wander, time mask — the SimCLR recipe's views without the crop)
and ``cpc`` (Mehari & Strodthoff's CPC, 128 windows of 2.5 s); ``<name>+compile`` is the same with
``train.compile: true`` (the encoder compiled with ``torch.compile``; the warm-up includes the compilation,
``warmup_s``). Loader settings are the recipe's (``num_workers: 8``, pinned memory on CUDA). ``quick``:
``pclr+views`` and ``cpc`` with the recipes' ``smoke`` profile (32 patients / windows per batch, small CPC,
``num_workers: 0``); compiled configurations run when named (``configs=("pclr+views",
"pclr+views+compile")``: a cold compilation takes minutes on a CPU). On the CPU, CPC always
runs its smoke profile: the full-scale CPC step (32,768 frames against as many, for each of 12 prediction
steps) is a GPU workload.

Per configuration, after ``warmup`` steps (worker start-up, autotuning), ``steps`` timed steps:

- ``windows_per_s``: batch items per second of wall clock (the "samples/s" of the step), ``step_ms``;
- ``loader_wait_ms``: host time per step blocked waiting for the next batch (the data-loader stall);
- ``busy_fraction``: on CUDA the fraction of the wall time the GPU is executing the steps — the sum over
  steps of the CUDA-event time from just before the step's first operation to just after its last, over
  the wall time of all steps (gaps between steps, where the GPU waits for the host or the loader, are
  idle; gaps inside a step are counted as busy, so this is an upper bound); on the CPU the fraction of the
  wall time the main process spends inside the step rather than waiting for data;
- ``compute_only_step_ms``: the same step repeated on one batch already in memory (no loader), the time a
  step takes when data are free; ``loader_overhead`` = step_ms / compute_only_step_ms − 1;
- ``loader_only_ms_per_batch``: the loader alone, batches pulled back to back with no step (after its
  read-ahead queue is drained): the sustained supply; a step slower than this never waits for data
  (on a machine where the workers do not share the step's cores);
- ``epochs_started``: epochs begun during the timed steps; ``loader_restarts``: how often the batch stream
  was (re)started (1: one ``DataLoader`` and one set of workers for the whole run).

Writes ``pretrain_<device>.json`` and a PNG of the step time split into compute and loader wait.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clinseq.bench.harness import (
    device_tag,
    need_data,
    print_table,
    repo_root,
    report,
    resolve_device,
    save_bars,
    synchronize,
)
from clinseq.errors import ConfigError

__all__ = ["CONFIGS", "QUICK_CONFIGS", "VIEWS", "run"]

#: The ECG chain of ``pclr+views`` (the SimCLR recipe's views without its crop: PCLR keeps 5 s windows).
VIEWS = [
    {"name": "amplitude_scale", "low": 0.8, "high": 1.25},
    {"name": "gaussian_noise", "snr_db": [15.0, 30.0], "p": 0.8},
    {"name": "baseline_wander", "amplitude": [0.0, 0.3], "p": 0.5},
    {"name": "time_mask", "fraction": 0.1, "n_spans": 2, "p": 0.5},
]
#: name → (recipe file under recipes/, extra config values, profile on the CPU). Full-scale CPC is a GPU
#: workload (128 windows × 250 frames = 32,768 queries against as many keys, for each of K = 12 steps):
#: on the CPU its step takes many minutes, so a CPU run uses the recipe's smoke profile for it.
CONFIGS: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "pclr": ("ptbxl/pclr.yaml", {}, None),
    "pclr+views": ("ptbxl/pclr.yaml", {"data": {"views": VIEWS}}, None),
    "cpc": ("ptbxl/cpc.yaml", {}, "smoke"),
}
#: The same step with the encoder compiled (``train.compile``): eager and compiled side by side.
CONFIGS.update(
    {
        f"{name}+compile": (recipe, {**values, "train": {"compile": True}}, profile)
        for name, (recipe, values, profile) in list(CONFIGS.items())
    }
)

QUICK_CONFIGS = ("pclr+views", "cpc")
_STEP_COLUMNS = [
    "config", "compile", "batch", "windows_per_s", "step_ms", "loader_wait_ms", "busy_fraction",
    "compute_only_step_ms", "loader_only_ms_per_batch",
]  # fmt: skip


def _recipes_dir(recipes: str | Path | None) -> Path:
    if recipes is not None:
        path = Path(recipes)
    else:
        root = repo_root()
        path = (root if root is not None else Path.cwd()) / "recipes"
    if not (path / "ptbxl" / "pclr.yaml").is_file():
        raise ConfigError(
            f"the pretrain suite runs the recipes' configs; no ptbxl/pclr.yaml under {path}: run it from a "
            "clinseq checkout, or pass recipes=<folder holding ptbxl/pclr.yaml and ptbxl/cpc.yaml>"
        )
    return path


def _batches(loader: Any) -> Iterator[tuple[int, Any]]:
    """(epoch, batch) over epochs, as ``Trainer.fit`` draws them."""
    if len(loader) == 0:
        raise ConfigError("the sampler yields no batch per epoch: too few patients for the batch layout")
    for epoch in itertools.count():
        for batch in loader.iterate(epoch):
            yield epoch, batch


def _batch_size(batch: Any) -> int:
    """Items in a batch of windows (``x`` is (B, C, T))."""
    return int(batch["x"].shape[0])


def _measure(
    trainer: Any, loader: Any, warmup: int, steps: int, compute_steps: int, loader_batches: int
) -> dict[str, Any]:
    import torch

    device = trainer.device
    cuda = device.type == "cuda"
    batches = _batches(loader)
    t0 = time.perf_counter()
    epoch, batch = 0, None
    for _ in range(warmup):
        epoch, batch = next(batches)
        trainer.train_step(batch)
    synchronize(device)
    warmup_s = time.perf_counter() - t0
    first_epoch = epoch
    waits, inside, events, items = [], [], [], 0
    t_start = time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        epoch, batch = next(batches)
        waits.append(time.perf_counter() - t)
        items += _batch_size(batch)
        if cuda:
            start = torch.cuda.Event(enable_timing=True)
            start.record()
        t = time.perf_counter()
        trainer.train_step(batch)
        inside.append(time.perf_counter() - t)
        if cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            events.append((start, end))
    synchronize(device)
    wall = time.perf_counter() - t_start
    busy = sum(s.elapsed_time(e) for s, e in events) / 1e3 if cuda else sum(inside)
    # The same step with data already in memory: what a step costs when the loader is free.
    t = time.perf_counter()
    for _ in range(compute_steps):
        trainer.train_step(batch)
    synchronize(device)
    compute_s = (time.perf_counter() - t) / max(compute_steps, 1)
    step_s = wall / steps
    # The loader alone: first drain what it read ahead during the steps, then time back-to-back batches.
    workers = getattr(loader, "num_workers", 0)
    for _ in range(workers * getattr(loader, "prefetch_factor", 0)):
        next(batches)
    t = time.perf_counter()
    for _ in range(loader_batches):
        next(batches)
    loader_only_s = (time.perf_counter() - t) / max(loader_batches, 1)
    return {
        "batch": _batch_size(batch),
        "steps": steps,
        "windows_per_s": items / wall,
        "step_ms": step_s * 1e3,
        "loader_wait_ms": sum(waits) / steps * 1e3,
        "loader_wait_fraction": sum(waits) / wall,
        "busy_fraction": min(busy / wall, 1.0),
        "compute_only_step_ms": compute_s * 1e3 if compute_steps else None,
        "loader_overhead": step_s / compute_s - 1 if compute_steps else None,
        "loader_only_ms_per_batch": loader_only_s * 1e3 if loader_batches else None,
        "epochs_started": epoch - first_epoch,
        "loader_restarts": getattr(loader, "restarts", None),
        "warmup_s": warmup_s,
    }


def run(
    *,
    device: str = "cpu",
    quick: bool = False,
    out_dir: str | Path | None = None,
    configs: tuple[str, ...] | None = None,
    warmup: int | None = None,
    steps: int | None = None,
    compute_steps: int | None = None,
    loader_batches: int | None = None,
    num_workers: int | None = None,
    recipes: str | Path | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Measure the pretraining step of each configuration (see the module docstring).

    Defaults: every configuration; CUDA 5 warm-up + 30 timed + 10 compute-only steps + 50 loader-only
    batches; CPU 2 + 3 + 2 + 10 (one torch thread, per-core figures); ``quick``: ``pclr+views`` and
    ``cpc``, 1 + 3 + 2 + 10 with the smoke profile. ``num_workers`` overrides the recipe's.
    Returns ``{"json": path, "figures": [...], "result": payload}``.
    """
    import torch

    from clinseq.train import Trainer, build_data, init_distributed, load_config, method_class, prepare_store

    device = resolve_device(device)
    cuda = device.startswith("cuda")
    # quick: PCLR with its views (the pipeline's every stage) and CPC; plain PCLR adds nothing to a check
    configs = configs or (QUICK_CONFIGS if quick else tuple(CONFIGS))
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise ConfigError(f"unknown pretrain configurations {unknown}; choose from {list(CONFIGS)}")
    recipes_dir = _recipes_dir(recipes)
    ptbxl = need_data("ptbxl", "pretrain", "the PTB-XL subset")
    warmup = warmup if warmup is not None else (5 if cuda else (1 if quick else 2))
    steps = steps or (30 if cuda else 3)
    compute_steps = compute_steps if compute_steps is not None else (10 if cuda else 2)
    loader_batches = loader_batches if loader_batches is not None else (50 if cuda else 10)
    if not cuda:
        torch.set_num_threads(threads or 1)
    tmp = Path(tempfile.mkdtemp(prefix="clinseq-bench-"))
    rows = []
    try:
        for name in configs:
            recipe, values, cpu_profile = CONFIGS[name]
            profile = "smoke" if quick else (None if cuda else cpu_profile)
            overrides = [
                f"data.root={ptbxl}",
                f"data.store={tmp / 'ptbxl100'}",
                f"run.device={'cuda' if cuda else 'cpu'}",
                f"run.out_dir={tmp / name}",
                "train.progress=false",
            ]
            if num_workers is not None:
                overrides.append(f"data.num_workers={num_workers}")
            config = load_config(recipes_dir / recipe, profile=profile, overrides=overrides, values=values)
            ctx = init_distributed(config.run.device)
            store = prepare_store(config, ctx, progress=False)  # converted once, reused by the next config
            method_cls = method_class(config.method.name)
            data = build_data(config, store, ctx, window_s=method_cls.read_window_s(config))
            torch.manual_seed(config.run.seed)
            method = method_cls.build(config, data)
            trainer = Trainer(
                method, data.loader, config.train, config.optim, tmp / name, ctx, seed=config.run.seed
            )
            layout = getattr(data.sampler, "batch_shape", "?")
            print(
                f"{name}: {config.model.encoder}, batch layout {layout}, {config.data.num_workers} loader "
                f"workers, {len(data.loader)} batches per epoch",
                flush=True,
            )
            try:
                result = _measure(trainer, data.loader, warmup, steps, compute_steps, loader_batches)
            finally:
                data.loader.close()  # its workers would otherwise run on into the next configuration
            rows.append(
                {
                    "config": name,
                    "recipe": f"recipes/{recipe}" + (f" --profile {profile}" if profile else ""),
                    "encoder": config.model.encoder,
                    "window_s": config.data.window_s,
                    "num_workers": config.data.num_workers,
                    "prefetch_factor": config.data.prefetch_factor,
                    "batches_per_epoch": len(data.loader),
                    "precision": str(trainer.autocast_dtype or "fp32").replace("torch.", ""),
                    "compile": config.train.compile,
                    **result,
                }
            )
            print_table(rows[-1:], _STEP_COLUMNS)
            del trainer, method, data
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    busy_name = "GPU busy" if cuda else "in-step (CPU)"
    print()
    columns = ["config", "encoder", "batch", "num_workers", *_STEP_COLUMNS[3:], "loader_overhead"]
    columns += ["epochs_started", "loader_restarts", "warmup_s"]
    print_table(rows, columns, title=f"pretraining step on {device} (busy_fraction = {busy_name})")
    tag = device_tag(device)
    payload = {
        "dataset": "PTB-XL subset (real, $CLINSEQ_DATA/ptbxl), 100 Hz, 12 leads, train split",
        "busy_fraction_means": "CUDA: share of wall time the GPU executes the steps (CUDA events); "
        "CPU: share of wall time the main process is inside the step (not waiting for data)",
        "settings": {
            "warmup": warmup,
            "steps": steps,
            "compute_steps": compute_steps,
            "loader_batches": loader_batches,
            "cpu_threads": None if cuda else torch.get_num_threads(),
        },
        "results": rows,
        "units": {
            "window_s": "seconds per window",
            "num_workers": "DataLoader worker processes",
            "batches_per_epoch": "batches",
            "batch": "windows per step",
            "steps": "timed steps",
            "windows_per_s": "windows (batch items) per wall-clock second",
            "step_ms": "wall-clock milliseconds per step",
            "loader_wait_ms": "milliseconds per step the host waits for the next batch",
            "loader_wait_fraction": "fraction of wall time waiting for batches",
            "busy_fraction": "fraction of wall time (see busy_fraction_means)",
            "compute_only_step_ms": "milliseconds per step on a batch already in memory",
            "loader_overhead": "step_ms / compute_only_step_ms - 1 (0 = the loader costs nothing)",
            "loader_only_ms_per_batch": "milliseconds per batch pulled from the loader with no step",
            "epochs_started": "epochs begun during the timed steps",
            "loader_restarts": "times the loader's batch stream was (re)started",
            "loader_batches": "batches of the loader-only measurement",
            "prefetch_factor": "batches each loader worker reads ahead",
            "warmup_s": "seconds of the warm-up steps (worker start-up and, compiled, the compilation)",
            "compile": "train.compile: the encoder compiled with torch.compile (Inductor)",
            "warmup": "untimed steps",
            "compute_steps": "steps of the compute-only measurement",
            "cpu_threads": "torch intra-op threads",
        },
    }
    labels = [f"{r['config']} (batch {r['batch']}, {r['num_workers']} workers)" for r in rows]
    split = {
        "in the step": [r["step_ms"] - r["loader_wait_ms"] for r in rows],
        "waiting for the loader": [r["loader_wait_ms"] for r in rows],
    }

    def figure(path: Path) -> Path | None:
        title = f"Pretraining step on {tag}: where the time goes (PTB-XL subset)"
        return save_bars(path, title, "milliseconds per step", labels, split)

    return report(f"pretrain_{tag}", payload, quick=quick, out_dir=out_dir, figure=figure)
