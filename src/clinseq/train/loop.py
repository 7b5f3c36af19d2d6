"""The pretraining loop: AdamW + warmup/cosine, autocast, clipping, DDP, atomic checkpoints, exact resume.

A *method* (:mod:`clinseq.train.methods`) is an ``nn.Module`` whose ``forward(batch, generator=g)`` returns a
``LossOutput(loss, metrics)``; it owns the encoder, heads and objective. :class:`Trainer` runs it:

per step   batch → device (non-blocking) → autocast forward → (scaled) backward → unscale → clip the
           global gradient norm → optimizer step → scheduler step → ``method.on_after_step()`` (momentum
           encoders, EMA) → metrics accumulated as tensors
every ``log_every`` steps   one host synchronisation: the accumulated metrics are averaged over the
           interval and over ranks and written as one JSON line to ``metrics.jsonl`` (rank 0), and the
           tqdm bar shows them
every ``checkpoint_every`` steps and at the end   an atomic checkpoint (:mod:`clinseq.train.checkpoint`)

Data: any :class:`BatchSource`, e.g. :class:`~clinseq.data.epoch_loader.EpochLoader`, which keeps one
``DataLoader`` with persistent workers for the whole run and reads across epoch boundaries.

Exact resume: a checkpoint holds the step, the epoch and the number of batches consumed in it. On
resume the sampler is set to the same epoch and its first batches are skipped (samplers are
deterministic given (seed, epoch) and skipping only draws keys, no data), the RNG states are restored,
and every random choice inside a step comes from a generator seeded by (seed, step, rank). Skipping by
the *consumed* count, rather than the sampler's own position, is what keeps resume exact with
``DataLoader`` workers, which pull batches ahead of the loop (into the next epochs, too). A run stopped
at step k and resumed therefore gives the same losses as the uninterrupted run (bit-exactly on the CPU).

Host synchronisations: none per step in fp32/bf16 except what the method itself does; fp16 adds the
``GradScaler``'s inf check (one per step, inherent to loss scaling).
"""

from __future__ import annotations

import json
import math
import re
import time
import warnings
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from clinseq.errors import ConfigError, TrainingError
from clinseq.train.checkpoint import latest_checkpoint, load_checkpoint, restore_rng, save_checkpoint
from clinseq.train.config import OptimConfig, TrainConfig
from clinseq.train.distributed import DistContext, all_reduce_mean
from clinseq.train.loggers import METRICS_FILE, JsonlLogger, Loggers
from clinseq.train.optim import build_optimizer, warmup_cosine
from clinseq.train.summary import PhaseTimer, RunSummary

__all__ = [
    "TrainResult",
    "Trainer",
    "move_to_device",
    "read_metrics",
    "resolve_precision",
]


class BatchSource(Protocol):
    """What the trainer iterates: batches of one epoch, with the first ``skip`` left out."""

    def __len__(self) -> int: ...

    def iterate(self, epoch: int, skip: int = 0) -> Iterable[Any]: ...


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Tensors of a (nested) batch moved to ``device`` without blocking the host."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use a GradScaler)`` for a precision setting on a device.

    "auto": bf16 on CUDA when the GPU supports it, else fp16 with loss scaling; fp32 on the CPU (CPU
    bf16 autocast only pays off on CPUs with AMX/AVX512-BF16, so it is opt-in there). "bf16" and
    "fp16" force autocast to that type ("fp16" with a GradScaler); "fp32" disables autocast.
    """
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if precision == "fp32":
        return None, False
    if precision == "bf16":
        return torch.bfloat16, False
    if precision == "fp16":
        return torch.float16, True
    raise ConfigError(f"precision must be 'auto', 'fp32', 'bf16' or 'fp16', got {precision!r}")


def _batch_size(batch: Any) -> int:
    if isinstance(batch, Mapping):
        for key in ("x", "patient_id", "codes"):
            if key in batch and isinstance(batch[key], torch.Tensor):
                return int(batch[key].shape[0])
        for value in batch.values():
            size = _batch_size(value)
            if size:
                return size
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size(batch[0])
    return 0


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm of the gradients, as a tensor (no host sync)."""
    if not grads:
        return torch.zeros(())
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if get_total_norm is not None:
        return get_total_norm(grads, foreach=True)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


@dataclass
class TrainResult:
    """Where training stopped: ``step``, ``epoch``, the run folder and the last checkpoint."""

    step: int
    epoch: int
    run_dir: Path
    checkpoint: Path | None
    last_metrics: dict[str, float]


class Trainer:
    """Runs a method for ``train.max_steps`` optimizer steps (see the module docstring).

    Args:
        method: the module to train (a :class:`~clinseq.train.methods.Method`);
            ``method(batch, generator=g) -> LossOutput``. It may define ``on_after_step()`` (called after
            every optimizer step, e.g. a momentum update).
        data: a :class:`BatchSource` (e.g. :class:`~clinseq.data.epoch_loader.EpochLoader`).
        train: loop settings (steps, precision, clipping, logging, checkpoints).
        optim: AdamW and schedule settings.
        run_dir: the run folder (``metrics.jsonl`` and ``checkpoints/`` go there).
        ctx: distributed context (:func:`clinseq.train.distributed.init_distributed`).
        seed: seeds the per-step generators handed to the method.
        config: the resolved config as a dict, stored in checkpoints.
        loggers: where metric lines go (:func:`clinseq.train.loggers.build_loggers`); default
            ``metrics.jsonl`` in the run folder on rank 0. The trainer does not close them.
    """

    def __init__(
        self,
        method: nn.Module,
        data: BatchSource,
        train: TrainConfig,
        optim: OptimConfig,
        run_dir: str | Path,
        ctx: DistContext | None = None,
        *,
        seed: int = 0,
        config: Mapping[str, Any] | None = None,
        loggers: Loggers | None = None,
    ) -> None:
        self.ctx = ctx or DistContext()
        self.device = self.ctx.device
        self.method = method.to(self.device)
        self.data, self.train_cfg, self.optim_cfg = data, train, optim
        self.run_dir = Path(run_dir)
        self.seed = int(seed)
        self.config = dict(config or {})
        if loggers is None:
            loggers = Loggers([JsonlLogger(self.run_dir)] if self.ctx.is_main else [])
        self.loggers = loggers
        #: Wall-clock seconds per phase of :meth:`fit` (data wait, step, log, checkpoint).
        self.timer = PhaseTimer()
        self.summary: RunSummary | None = None
        if train.compile:
            self._compile_encoder()
        self.autocast_dtype, use_scaler = resolve_precision(train.precision, self.device)
        self.model: nn.Module = self.method
        if self.ctx.distributed:
            self.model = DistributedDataParallel(
                self.method,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=train.find_unused_parameters,
                # Buffers (BatchNorm statistics, queues) are kept per rank and checkpointed from rank 0;
                # broadcasting them every forward would overwrite queue updates in flight.
                broadcast_buffers=False,
            )
        self.optimizer = build_optimizer(self.method, optim.lr, optim.weight_decay, optim.betas, optim.eps)
        self.scheduler = warmup_cosine(
            self.optimizer, optim.warmup_steps, train.max_steps, optim.min_lr_ratio
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self._params = [p for p in self.method.parameters() if p.requires_grad]
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.last_checkpoint: Path | None = None
        self.last_metrics: dict[str, float] = {}
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self._samples = 0
        self._lr = optim.lr

    def _compile_encoder(self) -> None:
        """``train.compile``: the method's encoder compiled in place (``nn.Module.compile``, TorchDynamo +
        Inductor). Its parameters and ``state_dict`` keys stay as they are, so checkpoints, resume and the
        exported encoder are the same as in eager mode."""
        encoder = getattr(self.method, "encoder", None)
        if not isinstance(encoder, nn.Module):
            raise ConfigError(
                f"train.compile: the method {type(self.method).__name__} has no .encoder module to compile"
            )
        encoder.compile()

    def eager_encoder(self) -> nn.Module | None:
        """The method's encoder back in eager mode (after training with ``train.compile``): evaluation
        embeds batches of other shapes, each of which a compiled module would compile again."""
        encoder = getattr(self.method, "encoder", None)
        if isinstance(encoder, nn.Module) and getattr(encoder, "_compiled_call_impl", None) is not None:
            encoder._compiled_call_impl = None  # what nn.Module.compile() set
        return encoder

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (RNG states are saved per rank beside it)."""
        state = {
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.ctx.world_size,
            "config": self.config,
        }
        data_state = getattr(self.data, "state_dict", None)
        if data_state is not None:
            state["sampler"] = data_state(self.batch_in_epoch)
        return state

    def save_checkpoint(self) -> Path:
        """Write an atomic checkpoint of the current step (every rank must call it)."""
        self.last_checkpoint = save_checkpoint(
            self.run_dir, self.step, self.state_dict(), self.ctx, keep=self.train_cfg.keep_checkpoints
        )
        return self.last_checkpoint

    def load_checkpoint(self, path: str | Path | None = None) -> int:
        """Restore from a checkpoint folder (default: this run's latest); returns the step."""
        path = Path(path) if path is not None else latest_checkpoint(self.run_dir)
        if path is None:
            raise ConfigError(f"{self.run_dir}: no checkpoint to resume from")
        state, rng = load_checkpoint(path, self.ctx)
        if state.get("world_size", 1) != self.ctx.world_size:
            raise ConfigError(
                f"checkpoint {path} was written by {state.get('world_size')} process(es), this run has "
                f"{self.ctx.world_size}; resume with the same number of processes (the per-rank samplers "
                "and RNG states depend on it)"
            )
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        if state.get("sampler") is not None and hasattr(self.data, "load_state_dict"):
            self.data.load_state_dict(state["sampler"])  # raises if the data no longer match
        if rng is not None:
            restore_rng(rng)
        self.last_checkpoint = Path(path)
        if self.ctx.is_main:
            self._truncate_metrics(self.step)
        return self.step

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after ``step`` by the interrupted run (they are logged again)."""
        JsonlLogger(self.run_dir).truncate(step)

    # -- one step -------------------------------------------------------------------------------
    def generator(self, step: int) -> torch.Generator:
        """The generator of ``step`` on this rank: seeded by (seed, step, rank), so resume is exact."""
        seed = ((self.seed * 1_000_003 + step) * 65_537 + self.ctx.rank) % (2**63 - 1)
        return torch.Generator(device=self.device).manual_seed(seed)

    def train_step(self, batch: Any) -> tuple[torch.Tensor, Mapping[str, Any], torch.Tensor]:
        """One optimizer step on ``batch``; returns detached (loss, metrics, gradient norm)."""
        batch = move_to_device(batch, self.device)
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else nullcontext()
        )
        with autocast:
            out = self.model(batch, generator=self.generator(self.step))
        loss = out.loss
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.train_cfg.grad_clip_norm
        if clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(self._params, clip, foreach=True)
        else:
            grad_norm = _total_norm([p.grad for p in self._params if p.grad is not None])
        self._lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used (a Python float)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # fp16: the GradScaler skips the optimizer step of an overflowing batch; the schedule still
            # advances (the usual practice), which torch would warn about.
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
            self.scheduler.step()
        after = getattr(self.method, "on_after_step", None)
        if after is not None:
            after()
        return loss.detach(), out.metrics, grad_norm.detach()

    def _accumulate(self, loss: torch.Tensor, metrics: Mapping[str, Any], grad_norm: torch.Tensor) -> None:
        values = {
            k: v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
            for k, v in metrics.items()
        }
        # The loss that was backpropagated wins over an objective's own "loss" metric.
        values.update(loss=loss, grad_norm=grad_norm)
        for k, v in values.items():
            v = v.float().to(self.device).reshape(())
            self._sums[k] = self._sums[k] + v if k in self._sums else v
        self._count += 1

    def _log(self, bar: Any, t_start: float) -> dict[str, float]:
        """Average the interval's metrics over steps and ranks (the one host sync) and write them."""
        keys = sorted(self._sums)
        stacked = torch.stack([self._sums[k] for k in keys]) / max(self._count, 1)
        stacked = all_reduce_mean(stacked, self.ctx)
        values = dict(zip(keys, stacked.tolist(), strict=True))
        elapsed = time.perf_counter() - t_start
        record = {
            "step": self.step,
            "epoch": self.epoch,
            "lr": self._lr,
            **values,
            "samples_per_s": self._samples * self.ctx.world_size / max(elapsed, 1e-9),
            "time": time.time(),
        }
        self._sums, self._count = {}, 0
        if not math.isfinite(values["loss"]):
            raise TrainingError(
                f"the loss is {values['loss']} at step {self.step}; lower optim.lr, raise "
                "optim.warmup_steps, set train.grad_clip_norm, or use train.precision=fp32 (resume from the "
                "last good checkpoint "
                f"in {self.run_dir / 'checkpoints'})"
            )
        if self.ctx.is_main:
            self.loggers.log_metrics(self.step, record)
            if bar is not None:
                bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{record['lr']:.2e}", refresh=False)
        self.last_metrics = {k: v for k, v in record.items() if isinstance(v, (int, float))}
        return record

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, stop_at: int | None = None) -> TrainResult:
        """Train until ``train.max_steps`` (or until ``stop_at`` steps, for a run in several parts).

        Returns where it stopped. A checkpoint is written every ``checkpoint_every`` steps and when it
        stops.
        """
        cfg = self.train_cfg
        end = cfg.max_steps if stop_at is None else min(stop_at, cfg.max_steps)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics = self.run_dir / METRICS_FILE
        if self.step == 0 and self.ctx.is_main and metrics.exists() and metrics.stat().st_size:
            raise ConfigError(
                f"{metrics} holds the metrics of an earlier run and this one starts at step 0: two runs "
                "never share one metrics.jsonl; resume the earlier run from its checkpoint, or give this "
                "one another run folder"
            )
        self.method.train()
        bar = None
        if cfg.progress and self.ctx.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=cfg.max_steps, initial=self.step, desc="pretrain", dynamic_ncols=True, mininterval=1.0
            )
        t_start = time.perf_counter()
        t_fit, first_step, samples = t_start, self.step, 0
        timer = self.timer
        self._samples = 0
        saved_at = -1
        try:
            while self.step < end:
                yielded = 0
                t_ready = time.perf_counter()
                for batch in self.data.iterate(self.epoch, skip=self.batch_in_epoch):
                    timer.add("data_wait", time.perf_counter() - t_ready)
                    yielded += 1
                    size = _batch_size(batch)
                    self._samples += size
                    samples += size
                    with timer("step"):
                        loss, metrics, grad_norm = self.train_step(batch)
                        self._accumulate(loss, metrics, grad_norm)
                    self.step += 1
                    self.batch_in_epoch += 1
                    if bar is not None:
                        bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == end:
                        with timer("log"):
                            self._log(bar, t_start)
                        t_start, self._samples = time.perf_counter(), 0
                    if self.step % cfg.checkpoint_every == 0 or self.step == end:
                        with timer("checkpoint"):
                            self.save_checkpoint()
                        saved_at = self.step
                    if self.step >= end:
                        break
                    t_ready = time.perf_counter()
                else:
                    if yielded == 0 and self.batch_in_epoch == 0:
                        raise ConfigError(
                            f"the sampler yielded no batch in epoch {self.epoch} (len {len(self.data)}); "
                            "too few patients/recordings for the batch layout: lower the batch size or "
                            "use more data"
                        )
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    continue
                break
            if saved_at != self.step and self.step > 0:
                with timer("checkpoint"):
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        self.summary = RunSummary.collect(
            timer, self.step - first_step, samples * self.ctx.world_size, time.perf_counter() - t_fit,
            self.device, self.ctx.world_size,
        )  # fmt: skip
        return TrainResult(self.step, self.epoch, self.run_dir, self.last_checkpoint, self.last_metrics)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The metric lines of a run's ``metrics.jsonl``, in order."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
