"""Encoder throughput over sequence length: forward and forward + backward, peak memory, SDPA backends.

Input: random (B, 12, T) float32 signals, T = 1,024 … 1,048,576 samples per channel (10 s of 12-lead
ECG at 500 Hz is 5,000; one hour of EEG at 256 Hz is 921,600). The batch holds
``B = max(1, batch_samples // T)`` items, so every step sees about the same number of input samples until
T reaches ``batch_samples`` and one item from there on.

Encoders (``clinseq.models``) and what their *tokens* are (the sequence the encoder pools over):

- ``ResNet1d (PCLR)``: ``resnet1d_pclr`` — kernel 16, widths 64…320, down-sampling 4⁴; tokens = frames of
  the last feature map (T / 256).
- ``CPCEncoder (Mehari 2022)``: ``cpc_mehari2022`` — four kernel-1 convolutions of 512, a 2-layer LSTM
  of 512; tokens = frames = T (the LSTM runs over every sample).
- ``CPCEncoder (stride 160)``: van den Oord et al. 2018's encoder (kernels 10, 8, 4, 4, 4, strides 5, 4,
  2, 2, 2, 512 filters) with a GRU of 256; tokens = T / 160 frames.
- ``PatchTransformer``: the defaults (patch 50, dim 128, depth 4, 4 heads, channel-independent tokens,
  RoPE); tokens = 12 · T / 50. Also forward + backward with ``checkpointing=True``.
- ``S4DEncoder``: 4 residual S4D blocks of width 64 (d_state 64, bidirectional, kernels as long as the
  input), stride 1; tokens = frames = T. Also with ``checkpointing=True``.
- ``SGConvEncoder (SL-S4Wave)``: 4 WaveNet blocks of width 64, two bidirectional SGConv layers of 128
  channels each (kernel_dim 32, max_length 2^20: global kernels up to T = 1,048,576), stride 1; tokens =
  frames = T. Also with ``checkpointing=True``. Both apply their kernels by FFT: time ∝ T log T (a fitted
  exponent of 1 + 1/ln T ≈ 1.1 over these lengths), memory ∝ T.

Modes: ``forward`` = inference (eval mode, no gradients); ``forward+backward`` = train mode, the pooled
embedding's mean square backpropagated to every parameter (gradients set to None before each step, so
their memory is part of the peak). CUDA runs under bf16 autocast (the trainer's default there), the CPU
in fp32. The SDPA backend each PatchTransformer row ran is recorded (``backend``).

Figures per row: ``ms`` (median step), ``items_per_s`` (batch items — "samples/s" in the ML sense),
``input_samples_per_s`` (B·T per second, per channel), ``tokens_per_s``, ``peak_mib`` (beyond the memory in
use before the step: CUDA tensors, or the CPU process's resident set) and ``peak_mib_per_item``.
``scaling`` fits log(memory per item) and log(time per item) against log(T), over all measured lengths
and over the one-item lengths alone: exponent 1 is linear, 2 quadratic. ``models=(...)`` restricts the run
to the named encoders' sweeps (no SDPA or EEG sections) and writes ``encoder_<device>_<models>.json``.

Sections besides the sweep: ``sdpa`` — PatchTransformer forward + backward with each SDPA backend forced
(``flash``, ``efficient``, ``cudnn``, ``math``; a backend that does not take the input is listed as
unsupported); ``eeg_hour`` — one hour of 19-channel EEG at 256 Hz with one-second patches (19 · 3,600 =
68,400 tokens): forward + backward over the whole hour with checkpointing, forward, and chunked inference
(``embed_chunked``, 60 s chunks). A configuration predicted (from the same model's previous length, at the
fitted exponent) to take longer than the budget (CUDA 20 s, CPU 30 s, quick 1.5 s per step) or more than
80 % of the free memory is not run; its row says why. Nothing is extrapolated into a figure.

Every group of rows runs in a fresh Python process (:func:`clinseq.bench.harness.run_in_child`; in a
quick run one process per model): memory a group frees is not always returned to the operating system,
and would hide part of the next group's peak. Writes ``encoder_<device>.json`` and a PNG.
"""

from __future__ import annotations

import gc
import os
import re
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clinseq.bench import harness
from clinseq.bench.harness import fit_exponent, format_value, measure, predict, print_table
from clinseq.errors import ClinseqError

__all__ = ["LENGTHS", "QUICK_LENGTHS", "Settings", "run", "run_group", "settings"]

LENGTHS = (1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576)
QUICK_LENGTHS = (1_024, 4_096, 16_384)
CHANNELS = 12
EEG = {"channels": 19, "sampling_rate_hz": 256, "patch_len": 256}  # one-second patches


@dataclass(frozen=True)
class Settings:
    """What one run measures: lengths (samples per channel), input samples per batch, repeats, the time
    budget of one step, autocast precision, PatchTransformer lengths of the SDPA-backend comparison, and
    the EEG recording's length in minutes."""

    lengths: tuple[int, ...]
    batch_samples: int
    warmup: int
    repeats: int
    budget_s: float
    precision: str
    sdpa_lengths: tuple[int, ...]
    eeg_minutes: int


def settings(device: str, quick: bool) -> Settings:
    """Defaults by device: the full sweep on CUDA; on the CPU the same lengths with a smaller batch (each
    length runs while its step is predicted to fit the budget); ``quick`` = minutes on a 2-core CPU."""
    if quick:
        return Settings(QUICK_LENGTHS, 4_096, 1, 1, 1.5, "fp32", (4_096,), 10)
    if device.startswith("cuda"):
        return Settings(LENGTHS, 65_536, 2, 5, 20.0, "bf16", (16_384, 65_536, 262_144), 60)
    return Settings(LENGTHS, 16_384, 1, 2, 30.0, "fp32", (4_096, 16_384), 60)


@dataclass(frozen=True)
class Spec:
    name: str
    build: Callable[[int], nn.Module]
    tokens: Callable[[nn.Module, int], int]
    token_kind: str
    time_exponent: float  # growth of one item's step time with T, before two lengths are measured
    variants: tuple[tuple[str, str], ...] = (("forward", ""), ("forward+backward", ""))


def _specs() -> list[Spec]:
    from clinseq.models import (
        CPCEncoder,
        PatchTransformer,
        S4DEncoder,
        SGConvEncoder,
        cpc_mehari2022,
        resnet1d_pclr,
    )

    def frames(m: Any, t: int) -> int:
        return int(m.frames(t))

    return [
        Spec("ResNet1d (PCLR)", resnet1d_pclr, frames, "last feature-map frames (T/256)", 1.0),
        Spec("CPCEncoder (Mehari 2022)", cpc_mehari2022, frames, "frames (T: stride 1)", 1.0),
        Spec(
            "CPCEncoder (stride 160)",
            lambda c: CPCEncoder(c, (512,) * 5, (10, 8, 4, 4, 4), (5, 4, 2, 2, 2), "bn", "gru", 256, 1),
            frames,
            "frames (T/160)",
            1.0,
        ),
        Spec(
            "PatchTransformer",
            lambda c: PatchTransformer(c),
            lambda m, t: int(m.n_tokens(t)),
            "channel-patch tokens (12·T/50)",
            2.0,
            (("forward", ""), ("forward+backward", ""), ("forward+backward", "checkpointing")),
        ),
        Spec(
            "S4DEncoder",
            lambda c: S4DEncoder(c, dim=64, depth=4, stack="residual", d_state=64),
            frames,
            "frames (T: stride 1)",
            1.1,
            (("forward", ""), ("forward+backward", ""), ("forward+backward", "checkpointing")),
        ),
        Spec(
            "SGConvEncoder (SL-S4Wave)",
            lambda c: SGConvEncoder(c, dim=64, depth=4, stack="wavenet", max_length=1 << 20),
            frames,
            "frames (T: stride 1)",
            1.1,
            (("forward", ""), ("forward+backward", ""), ("forward+backward", "checkpointing")),
        ),
    ]


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _step(model: nn.Module, x: torch.Tensor, mode: str, device: torch.device, precision: str):
    """The function one measurement times: inference, or forward + backward to every parameter."""
    params = [p for p in model.parameters() if p.requires_grad]
    if mode == "forward":
        model.eval()

        def forward() -> torch.Tensor:
            with torch.no_grad(), _autocast(device, precision):
                return model.pooled(x)

        return forward
    model.train()

    def forward_backward() -> torch.Tensor:
        for p in params:
            p.grad = None
        with _autocast(device, precision):
            y = model.pooled(x)
        loss = y.float().square().mean()
        loss.backward()
        return loss.detach()

    return forward_backward


def _backend(model: nn.Module, x: torch.Tensor, mode: str, device: torch.device, precision: str) -> str:
    if not hasattr(model, "attention_backend"):
        return ""
    was = model.training
    model.train(mode != "forward")
    with _autocast(device, precision):
        name = model.attention_backend(x)
    model.train(was)
    return name


_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # torch.OutOfMemoryError: torch ≥ 2.5


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, _OOM) or "out of memory" in str(exc).lower()


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class _Runner:
    """Measures rows, predicting each one's time and memory from the rows before it (per group)."""

    def __init__(self, device: torch.device, s: Settings) -> None:
        self.device, self.s = device, s
        self.time_history: dict[tuple, list[tuple[int, float]]] = {}
        self.memory_history: dict[tuple, list[tuple[int, float]]] = {}

    def skip_reason(
        self, group: tuple, n: int, batch: int, time_exp: float, mem_exp: float, budget_s: float
    ) -> str | None:
        t = predict(self.time_history.get(group, []), n, time_exp)
        if t is not None and t * batch > budget_s:
            return f"not run: predicted {t * batch:,.0f} s per step > budget {budget_s:g} s"
        m = predict(self.memory_history.get(group, []), n, mem_exp)
        free = harness.free_memory_mib(self.device)
        if m is not None and m * batch > 0.8 * free:
            return f"not run: predicted {m * batch / 1024:,.1f} GiB > 80 % of {free / 1024:,.1f} GiB free"
        return None

    def measure(
        self, group: tuple, model: nn.Module, x: torch.Tensor, mode: str, n: int, tokens: int
    ) -> dict[str, Any]:
        batch = x.shape[0]
        backend = _backend(model, x, mode, self.device, self.s.precision)
        fn = _step(model, x, mode, self.device, self.s.precision)
        cpu_s: list[float] = []
        if self.device.type == "cpu":
            # The process's CPU time per call as well: on a machine shared with other jobs the wall clock
            # also counts the time this process waited for a core; its CPU time does not.
            step = fn

            def fn() -> Any:
                t = time.process_time()
                out = step()
                cpu_s.append(time.process_time() - t)
                return out

        try:
            m = measure(
                fn, self.device, warmup=self.s.warmup, repeats=self.s.repeats, budget_s=self.s.budget_s
            )
        except RuntimeError as exc:  # the CUDA out-of-memory error is a RuntimeError
            if not _is_oom(exc):
                raise
            _free(self.device)
            return {"batch": batch, "backend": backend, "skipped": "out of memory"}
        finally:
            for p in model.parameters():
                p.grad = None
        cpu_ms = statistics.median(cpu_s[-len(m.times_s) :]) * 1e3 if cpu_s else None
        # The budget predicts from the lesser of wall and CPU time: on a shared machine the wall clock also
        # counts time spent waiting for a core (which would cut a sweep short by load alone), and with
        # several threads the CPU time exceeds the wall clock.
        seconds = m.seconds if cpu_ms is None else min(m.seconds, cpu_ms / 1e3)
        self.time_history.setdefault(group, []).append((n, seconds / batch))
        if m.peak_mib is not None and m.peak_mib > 0:
            self.memory_history.setdefault(group, []).append((n, m.peak_mib / batch))
        return {
            "batch": batch,
            "backend": backend,
            "ms": m.seconds * 1e3,
            "items_per_s": batch / m.seconds,
            "input_samples_per_s": batch * n / m.seconds,
            "tokens_per_s": batch * tokens / m.seconds,
            "peak_mib": m.peak_mib,
            "peak_mib_per_item": None if m.peak_mib is None else m.peak_mib / batch,
            "timed_calls": len(m.times_s),
            "cpu_ms": cpu_ms,
        }

    def row(
        self, group: tuple, model: nn.Module, mode: str, shape: tuple[int, int, int], tokens: int, exps: tuple
    ) -> dict[str, Any]:
        """Measure ``model`` on a random (B, C, T) input, or say why not (predicted beyond the budget at
        the (time, memory) exponents ``exps``)."""
        batch, _, n = shape
        reason = self.skip_reason(group, n, batch, *exps, self.s.budget_s)
        if reason:
            return {"batch": batch, "skipped": reason}
        x = torch.randn(*shape, device=self.device)
        out = self.measure(group, model, x, mode, n, tokens)
        del x
        _free(self.device)
        return out


def _sweep(
    runner: _Runner, s: Settings, name: str, mode: str, variant: str, log: Callable[[dict], None]
) -> list[dict]:
    """One (model, mode, variant) over the lengths, ascending (each prediction uses the rows before)."""
    spec = next(sp for sp in _specs() if sp.name == name)
    device = runner.device
    torch.manual_seed(0)
    model = spec.build(CHANNELS).to(device)
    if hasattr(model, "checkpointing"):
        model.checkpointing = variant == "checkpointing"
    group = (spec.name, mode, variant)
    rows = []
    for n in s.lengths:
        batch = max(1, s.batch_samples // n)
        tokens = spec.tokens(model, n)
        row = {
            "model": spec.name,
            "mode": mode,
            "variant": variant,
            "n_samples": n,
            "channels": CHANNELS,
            "tokens_per_item": tokens,
        }
        row.update(runner.row(group, model, mode, (batch, CHANNELS, n), tokens, (spec.time_exponent, 1.0)))
        rows.append(row)
        log(row)
    return rows


def _sdpa(runner: _Runner, s: Settings, backend: str, log: Callable[[dict], None]) -> list[dict]:
    """PatchTransformer forward + backward with one SDPA backend forced, at ``s.sdpa_lengths``."""
    from clinseq.models import PatchTransformer

    rows = []
    device = runner.device
    torch.manual_seed(0)
    model = PatchTransformer(CHANNELS, attention_backends=(backend,)).to(device)
    group = ("sdpa", backend)
    for n in s.sdpa_lengths:
        batch = max(1, s.batch_samples // n)
        tokens = model.n_tokens(n)
        row = {
            "backend_forced": backend,
            "mode": "forward+backward",
            "n_samples": n,
            "channels": CHANNELS,
            "tokens_per_item": tokens,
            "batch": batch,
        }
        probe = torch.empty(batch, CHANNELS, n, device=device)
        runs = _backend(model, probe, "forward+backward", device, s.precision)
        del probe
        if runs == "none":
            row["skipped"] = f"unsupported: {backend} does not take this input on {device.type}"
        else:
            exps = (2.0, 2.0 if backend == "math" else 1.0)
            row.update(runner.row(group, model, "forward+backward", (batch, CHANNELS, n), tokens, exps))
        rows.append(row)
        log(row)
    return rows


#: The EEG cases, each measured in its own process: full attention over the whole recording (forward +
#: backward with and without checkpointing, forward), and chunked inference.
EEG_CASES = (
    ("forward+backward", "checkpointing"),
    ("forward+backward", ""),
    ("forward", ""),
    ("forward", "embed_chunked(chunk_s=60)"),
)


def _eeg_hour(
    runner: _Runner, s: Settings, quick: bool, mode: str, variant: str, log: Callable[[dict], None]
) -> list[dict]:
    """``s.eeg_minutes`` of 19-channel EEG at 256 Hz through a PatchTransformer with one-second patches
    (dim 128, depth 4, 4 heads): one of :data:`EEG_CASES`."""
    from clinseq.models import PatchTransformer

    device = runner.device
    rate, channels = EEG["sampling_rate_hz"], EEG["channels"]
    n = s.eeg_minutes * 60 * rate
    torch.manual_seed(0)
    model = PatchTransformer(channels, patch_len=EEG["patch_len"], dim=128, depth=4, n_heads=4).to(device)
    model.checkpointing = variant == "checkpointing"
    tokens = model.n_tokens(n)
    row: dict[str, Any] = {
        "recording": f"{s.eeg_minutes} min, {channels} ch, {rate} Hz",
        "n_samples": n,
        "channels": channels,
        "tokens_per_item": tokens,
        "mode": mode,
        "variant": variant,
        "batch": 1,
    }
    if variant.startswith("embed_chunked"):
        # 60 s chunks (1,140 tokens each), 8 chunks per forward; the signal stays on the CPU.
        row.update(method="independent 60 s chunks, length-weighted mean", tokens_per_chunk=60 * channels)
        signal = torch.randn(1, channels, n)

        def chunked() -> torch.Tensor:
            return model.embed_chunked(signal, chunk_s=60.0, sampling_rate_hz=float(rate))

        with _autocast(device, s.precision):
            cpu = device.type == "cpu"
            m = measure(chunked, device, warmup=0 if cpu else 1, repeats=1 if cpu else 3)
        row.update(
            backend=_backend(model, signal[..., : 60 * rate].to(device), "forward", device, s.precision),
            ms=m.seconds * 1e3,
            items_per_s=1 / m.seconds,
            input_samples_per_s=n / m.seconds,
            tokens_per_s=tokens / m.seconds,
            peak_mib=m.peak_mib,
            peak_mib_per_item=m.peak_mib,
            timed_calls=len(m.times_s),
        )
        log(row)
        return [row]
    row["method"] = "full attention over the recording"
    if quick and device.type == "cpu":
        row["skipped"] = "not run in --quick on the CPU"
        log(row)
        return [row]
    group = ("eeg", mode, variant)
    # A 5-minute piece first: it fixes the per-token cost from which the whole recording is predicted.
    probe_n = min(n, 5 * 60 * rate)
    if probe_n < n:
        probe = runner.row(group, model, mode, (1, channels, probe_n), model.n_tokens(probe_n), (2.0, 1.0))
        if "skipped" not in probe or probe["skipped"] == "out of memory":
            row["probe"] = {"n_samples": probe_n, **{k: probe.get(k) for k in ("ms", "peak_mib")}}
    row.update(runner.row(group, model, mode, (1, channels, n), tokens, (2.0, 1.0)))
    log(row)
    return [row]


def _scaling(rows: list[dict], sdpa: list[dict]) -> list[dict]:
    """Exponents of memory and time *per item* against T for each (model, mode, variant): over every
    measured length (per item = per step / batch; with several items per step, the parameters' gradients
    are shared, which pulls the exponent slightly below the per-item truth) and over the one-item lengths
    only, where there are two or more."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "ms" in r:
            groups.setdefault((r["model"], r["mode"], r["variant"]), []).append(r)
    for r in sdpa:
        if "ms" in r:
            groups.setdefault(("PatchTransformer", r["mode"], f"sdpa={r['backend_forced']}"), []).append(r)
    out = []
    for (model, mode, variant), rs in groups.items():
        one = [r for r in rs if r["batch"] == 1]
        mem_one = fit_exponent((r["n_samples"], r["peak_mib"]) for r in one) if len(one) >= 2 else None
        time_one = fit_exponent((r["n_samples"], r["ms"]) for r in one) if len(one) >= 2 else None
        cpu = [r for r in rs if r.get("cpu_ms")]
        cpu_one = [r for r in cpu if r["batch"] == 1]
        row = {
            "model": model,
            "mode": mode,
            "variant": variant,
            "n_samples": [r["n_samples"] for r in rs],
            "memory_exponent": fit_exponent((r["n_samples"], r["peak_mib_per_item"]) for r in rs),
            "memory_exponent_one_item": mem_one,
            "time_exponent": fit_exponent((r["n_samples"], r["ms"] / r["batch"]) for r in rs),
            "time_exponent_one_item": time_one,
            "cpu_time_exponent": fit_exponent((r["n_samples"], r["cpu_ms"] / r["batch"]) for r in cpu)
            if len(cpu) >= 2
            else None,
            "cpu_time_exponent_one_item": fit_exponent((r["n_samples"], r["cpu_ms"]) for r in cpu_one)
            if len(cpu_one) >= 2
            else None,
        }
        if row["memory_exponent"] is not None or row["time_exponent"] is not None:
            out.append(row)
    return out


UNITS = {
    "n_samples": "signal samples per channel (per item)",
    "channels": "signal channels",
    "batch": "items per step",
    "tokens_per_item": "encoder tokens per item (see 'models[].tokens')",
    "tokens_per_chunk": "tokens per chunk",
    "parameters": "trainable parameters",
    "ms": "milliseconds per step (median; CUDA events on CUDA, wall clock on the CPU)",
    "items_per_s": "batch items (input sequences) per second",
    "input_samples_per_s": "signal samples per channel per second (batch · T / step time)",
    "tokens_per_s": "encoder tokens per second",
    "peak_mib": "MiB beyond the memory in use before the step (CUDA: max_memory_allocated; CPU: peak RSS)",
    "peak_mib_per_item": "MiB per batch item (peak_mib / batch)",
    "timed_calls": "timed steps (after the warm-up)",
    "memory_exponent": "dimensionless: slope of log(peak MiB per item) vs log(T), all lengths; 1 = linear",
    "memory_exponent_one_item": "dimensionless: the same over the lengths run one item per step",
    "time_exponent": "dimensionless: slope of log(step time per item) vs log(T)",
    "time_exponent_one_item": "dimensionless: the same over the lengths run one item per step",
    "cpu_ms": "CPU milliseconds of this process per step (median over the timed steps; CPU only)",
    "cpu_time_exponent": "dimensionless: slope of log(CPU time per item) vs log(T), all lengths",
    "cpu_time_exponent_one_item": "dimensionless: the same over the lengths run one item per step",
    "batch_samples": "signal samples per channel per batch",
    "warmup": "untimed steps before timing",
    "repeats": "timed steps (at most)",
    "budget_s": "seconds: a step predicted longer is not run",
    "eeg_minutes": "minutes of EEG",
    "lengths": "signal samples per channel",
    "sdpa_lengths": "signal samples per channel",
    "probe": "the 5-minute piece measured first: n_samples, ms, peak MiB",
    "sampling_rate_hz": "Hz",
    "patch_len": "signal samples per patch",
    "cpu_threads": "torch intra-op threads (CPU figures are per this many cores)",
}


def _figure(path: Path, rows: list[dict], tag: str) -> Path | None:
    panels = [
        harness.Panel(f"Throughput ({tag})", "input samples per channel (T)", "input samples / s"),
        harness.Panel(
            f"Peak memory per item ({tag})",
            "input samples per channel (T)",
            "MiB per item",
            reference_slopes=(1.0, 2.0),
        ),
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["mode"], r["variant"]), []).append(r)
    names = list(dict.fromkeys(r["model"] for r in rows))
    for (model, mode, variant), rs in groups.items():
        label = f"{model} {'fwd' if mode == 'forward' else 'fwd+bwd'}{' ckpt' if variant else ''}"
        style = "-o" if mode == "forward" else ("--s" if not variant else ":^")
        xs, color = [r["n_samples"] for r in rs], f"C{names.index(model) % 10}"
        for panel, key in zip(panels, ("input_samples_per_s", "peak_mib_per_item"), strict=True):
            panel.series.append(harness.Series(label, xs, [r.get(key) for r in rs], style, color))
    return harness.save_panels(path, panels)


SWEEP_COLUMNS = [
    "model", "mode", "variant", "n_samples", "batch", "tokens_per_item", "backend", "ms", "cpu_ms",
    "input_samples_per_s", "tokens_per_s", "peak_mib", "peak_mib_per_item", "skipped",
]  # fmt: skip


def _log(row: dict) -> None:
    shown = [f"{k}={format_value(v)}" for k, v in row.items() if k in SWEEP_COLUMNS and v not in ("", None)]
    print("  " + ", ".join(shown), flush=True)


def _groups(
    quick: bool, models: tuple[str, ...] | None = None, modes: tuple[str, ...] | None = None
) -> list[dict[str, Any]]:
    """Every group of rows, in order; each is measured in a fresh process (see :func:`run`). A full run
    gives every (model, mode), SDPA backend and EEG case its own process; a quick run, whose largest
    step holds a few hundred MiB, one process per model, one for the SDPA backends and one per EEG case
    (saving a dozen interpreter starts). ``models`` / ``modes``: only these encoders' sweeps in these
    modes (no SDPA, no EEG)."""
    from clinseq.models.attention import SDPA_BACKENDS

    if models is not None or modes is not None:
        groups = []
        for g in _groups(quick):
            variants = [v for v in g.get("variants", []) if modes is None or v[0] in modes]
            if g["kind"] == "sweep" and (models is None or g["model"] in models) and variants:
                groups.append({**g, "variants": variants})
        return groups

    if quick:
        groups: list[dict[str, Any]] = [
            {"kind": "sweep", "model": spec.name, "variants": [list(v) for v in spec.variants]}
            for spec in _specs()
        ]
        groups.append({"kind": "sdpa", "backends": list(SDPA_BACKENDS)})
    else:
        groups = [
            {"kind": "sweep", "model": spec.name, "variants": [[mode, variant]]}
            for spec in _specs()
            for mode, variant in spec.variants
        ]
        groups += [{"kind": "sdpa", "backends": [b]} for b in SDPA_BACKENDS]
    groups += [{"kind": "eeg", "variants": [[m, v]]} for m, v in EEG_CASES]
    return groups


def run_group(
    group: dict[str, Any], device: str, settings: dict[str, Any], quick: bool, threads: int | None
) -> list[dict]:
    """Measure one group in this process (what each child of :func:`run` does)."""
    s = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})
    dev = torch.device(device)
    if dev.type == "cpu":
        harness.release_freed_memory()  # so that the peak RSS follows the live tensors
        torch.set_num_threads(threads or 1)
    runner = _Runner(dev, s)
    rows: list[dict] = []
    if group["kind"] == "sdpa":
        for backend in group["backends"]:
            rows += _sdpa(runner, s, backend, _log)
        return rows
    for mode, variant in group["variants"]:
        if group["kind"] == "sweep":
            rows += _sweep(runner, s, group["model"], mode, variant, _log)
        else:
            rows += _eeg_hour(runner, s, quick, mode, variant, _log)
    return rows


def _run_child(
    group: dict[str, Any], device: str, s: Settings, quick: bool, threads: int | None
) -> list[dict]:
    kwargs = {"group": group, "device": device, "settings": asdict(s), "quick": quick, "threads": threads}
    env = {**os.environ, **harness.MALLOC_ENV}
    code, rows, _ = harness.run_in_child("clinseq.bench.encoder:run_group", kwargs, env=env)
    if rows is None:
        raise ClinseqError(f"encoder group {group} failed in its process (exit {code}; output above)")
    return rows


def run(
    *,
    device: str = "cpu",
    quick: bool = False,
    out_dir: str | Path | None = None,
    lengths: tuple[int, ...] | None = None,
    budget_s: float | None = None,
    threads: int | None = None,
    models: tuple[str, ...] | None = None,
    modes: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Run the encoder suite, print its tables, write ``encoder_<device>.json`` (+ PNG); returns
    ``{"json": path, "figures": [paths], "result": payload}``.

    ``models``: measure only these encoders' sweeps (names as in the tables, e.g. ``S4DEncoder``), and
    ``modes`` only these modes ("forward", "forward+backward"); the result is then
    ``encoder_<device>_<names>[_<modes>].json``, beside (never over) the full run's file.

    Each group of rows (one model and mode over the lengths, one forced SDPA backend, one EEG case) runs
    in a fresh Python process: memory a group frees is not always returned to the OS (glibc keeps
    fragmented heap pages), which would hide part of the next group's peak on the CPU; a fresh process also
    starts every group from the same allocator and cache state on CUDA.
    """
    device = harness.resolve_device(device)
    names = [spec.name for spec in _specs()]
    if models is not None and not set(models) <= set(names):
        raise ClinseqError(f"unknown encoder(s) {sorted(set(models) - set(names))}; the suite has {names}")
    if modes is not None and not set(modes) <= {"forward", "forward+backward"}:
        raise ClinseqError(f"modes must be 'forward' and/or 'forward+backward', got {list(modes)}")
    s = settings(device, quick)
    if lengths or budget_s:
        s = replace(s, lengths=tuple(lengths or s.lengths), budget_s=budget_s or s.budget_s)
    threads = threads or (None if device.startswith("cuda") else 1)
    print(f"encoder sweep on {device} ({s.precision}), lengths {s.lengths}, batch_samples {s.batch_samples}")
    rows, sdpa, eeg = [], [], []
    for group in _groups(quick, models, modes):
        label = group.get("model") or ", ".join(group.get("backends", [])) or "EEG"
        what = "; ".join(" ".join(filter(None, v)) for v in group.get("variants", []))
        print(f"- {group['kind']}: {label}{': ' + what if what else ''}", flush=True)
        (mode, variant), *_ = group.get("variants", [["", ""]])
        if quick and device == "cpu" and group["kind"] == "eeg" and "chunked" not in variant:
            out = run_group(group, device, asdict(s), quick, threads)  # it only says "not run in --quick"
        else:
            out = _run_child(group, device, s, quick, threads)
        {"sweep": rows, "sdpa": sdpa, "eeg": eeg}[group["kind"]].extend(out)
    scaling = _scaling(rows, sdpa)
    model_info = []
    for spec in _specs():
        if models is not None and spec.name not in models:
            continue
        model = spec.build(CHANNELS)
        n_params = sum(p.numel() for p in model.parameters())
        model_info.append({"model": spec.name, "parameters": n_params, "tokens": spec.token_kind})

    print()
    print_table(rows, SWEEP_COLUMNS, title=f"encoders on {device}: throughput and peak memory over T")
    print()
    sdpa_cols = ["backend_forced", "n_samples", "batch", "tokens_per_item", "backend", "ms", "tokens_per_s"]
    print_table(sdpa, [*sdpa_cols, "peak_mib", "skipped"], title="SDPA backends, PatchTransformer fwd+bwd")
    print()
    eeg_cols = ["recording", "mode", "variant", "tokens_per_item", "backend", "ms", "peak_mib", "skipped"]
    print_table(eeg, eeg_cols, title="one recording of EEG through PatchTransformer(patch_len=256)")
    print()
    print_table(
        scaling,
        [
            "model",
            "mode",
            "variant",
            "memory_exponent",
            "memory_exponent_one_item",
            "time_exponent",
            "time_exponent_one_item",
            "cpu_time_exponent_one_item",
        ],
        title="scaling of memory and time per item with T (1 = linear, 2 = quadratic)",
    )

    tag = harness.device_tag(device)
    payload = {
        "settings": {**asdict(s), "channels": CHANNELS, "eeg": EEG, "cpu_threads": threads},
        "models": model_info,
        "results": rows,
        "sdpa": sdpa,
        "eeg_hour": eeg,
        "scaling": scaling,
        "units": UNITS,
    }
    figure = lambda path: _figure(path, rows, tag)  # noqa: E731
    name = f"encoder_{tag}"
    for subset in (models, modes):
        if subset is not None:
            name += "_" + "_".join(re.sub(r"[^a-z0-9]+", "", m.lower().split(" (")[0]) for m in subset)
    return harness.report(name, payload, quick=quick, out_dir=out_dir, figure=figure)
