"""Config → objects: the store, the pretraining split, sampler, dataset, loader, encoder, head and views.

Encoders and samplers are built from their registries (:data:`clinseq.models.registry.ENCODERS`,
:data:`clinseq.data.registry.SAMPLERS`); the views from the classes of :mod:`clinseq.data.views`. Every
keyword mapping was checked before by :func:`clinseq.train.config.validate_components`.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch
from torch import nn

from clinseq.data import views as views_module
from clinseq.data.datasets import WindowDataset, collate_windows
from clinseq.data.epoch_loader import EpochLoader
from clinseq.data.event_pairs import ECGContextPairs, PatientEventPairs, collate_event_pairs
from clinseq.data.event_sequences import CodeVocabulary, ValueNormalizer
from clinseq.data.registry import SAMPLERS
from clinseq.data.splits import assert_no_leakage, patient_split, ptbxl_split, split_of_store
from clinseq.errors import ConfigError, LockHeldError, StoreError
from clinseq.models import ProjectionHead
from clinseq.models.registry import ENCODERS
from clinseq.train.checks import check_kwargs, unknown_key
from clinseq.train.distributed import DistContext, barrier

if TYPE_CHECKING:
    from clinseq.timeline import TimelineStore
    from clinseq.train.config import DataConfig, ModelConfig, PretrainConfig

__all__ = [
    "ENCODER_PROVIDED",
    "SAMPLER_PROVIDED",
    "PretrainData",
    "build_data",
    "build_encoder",
    "build_head",
    "build_views",
    "check_eval_store",
    "prepare_store",
    "pretrain_patients",
    "view_factory",
]


# Arguments the builders fill in themselves (not allowed in the config's keyword mappings).
SAMPLER_PROVIDED = ("recordings", "window_s", "window_n_samples", "seed", "rank", "world_size")
ENCODER_PROVIDED = ("in_channels", "vocab_size")


# -- views ----------------------------------------------------------------------------------------------
def view_factory(
    spec: Mapping[str, Any], key: str
) -> tuple[Callable[..., Any], dict[str, Any], float | None]:
    """``(view class, its kwargs, probability p or None)`` of one ``data.views`` entry, checked."""
    factories = _view_names(views_module)
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(
            f"{key}: a view is a mapping with a 'name' (one of {', '.join(factories)}), got {spec!r}"
        )
    name = spec["name"]
    kwargs = {k: v for k, v in spec.items() if k not in ("name", "p")}
    if name not in factories:
        raise unknown_key(f"{key}.name={name}", str(name), list(factories))
    p = spec.get("p")
    if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1):
        raise ConfigError(f"{key}.p: expected a probability in [0, 1], got {p!r}")
    factory = factories[name]
    check_kwargs(factory, kwargs, key, provided=("sampling_rate_hz",))
    return factory, kwargs, p


def _view_names(module: Any) -> dict[str, Callable[..., Any]]:
    """View classes of :mod:`clinseq.data.views` by snake_case name (``GaussianNoise`` → gaussian_noise)."""
    import re

    base = module.View
    skip = {"View", "Compose", "RandomApply", "MultiView"}
    out = {}
    for name in dir(module):
        obj = getattr(module, name)
        if inspect.isclass(obj) and issubclass(obj, base) and name not in skip:
            out[re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()] = obj
    return out


def build_views(
    specs: Sequence[Mapping[str, Any]], sampling_rate_hz: float | None = None
) -> Callable[..., torch.Tensor] | None:
    """The composed view (augmentation) of ``data.views``, or None when the list is empty.

    Each entry is ``{name: <snake_case class of clinseq.data.views>, p: <probability>, **kwargs}``: the
    view is applied to each item with probability ``p`` (``RandomApply``; always when ``p`` is absent),
    in list order. Views that need the sampling rate (baseline wander, powerline noise) get the data's.
    """
    if not specs:
        return None
    from clinseq.data.views import Compose, RandomApply

    parts = []
    for i, spec in enumerate(specs):
        factory, kwargs, p = view_factory(spec, f"data.views[{i}]")
        if "sampling_rate_hz" in inspect.signature(factory).parameters:
            if sampling_rate_hz is None:
                raise ConfigError(
                    f"data.views[{i}] ({spec['name']}) needs the sampling rate of waveform data"
                )
            kwargs["sampling_rate_hz"] = sampling_rate_hz
        view = factory(**kwargs)
        parts.append(view if p is None else RandomApply(view, p=p))
    return parts[0] if len(parts) == 1 else Compose(parts)


# -- store and split ------------------------------------------------------------------------------------
def prepare_store(
    config: PretrainConfig, ctx: DistContext | None = None, progress: bool = True, poll_s: float = 2.0
) -> TimelineStore:
    """Open ``data.store``; convert it from ``data.root`` first when it does not exist (rank 0 only).

    When another process is converting the same store (its lock is held, e.g. two seeds of a recipe
    started at once), this waits for it, polling every ``poll_s`` seconds, and opens the store it wrote
    instead of failing; if that process dies before finishing, this one resumes the conversion.
    """
    from clinseq.timeline import TimelineStore

    ctx = ctx or DistContext()
    data = config.data
    store_path = Path(data.store)
    if not (store_path / "manifest.json").exists():
        root = config.data_root()
        if root is None:
            raise ConfigError(
                f"data.store={store_path} is not a store and data.root is not set; convert the source first "
                f"(clinseq convert {data.source} SRC {store_path}) or pass --set data.root=SRC"
            )
        if not root.exists():
            raise ConfigError(
                f"data.root={root} does not exist (data.store={store_path} has not been converted yet); "
                "point data.root at the source dataset, e.g. --set data.root={data}/ptbxl"
            )
        if ctx.is_main:
            _convert_or_wait(data, root, store_path, progress, poll_s)
        barrier(ctx)
    return TimelineStore.open(store_path)


def check_eval_store(config: PretrainConfig, store: TimelineStore) -> None:
    """Fail before training, not after it, when a task of ``eval.tasks`` cannot run on ``store``."""
    if not config.eval.enabled:
        return
    from clinseq.eval import get_task

    for name in config.eval.tasks:
        get_task(name).check_store(store)


def _convert_or_wait(data: DataConfig, root: Path, out: Path, progress: bool, poll_s: float) -> None:
    """Convert ``out``, or wait for the process already converting it (its lock held) to finish."""
    waiting_since = None
    while not (out / "manifest.json").exists():
        try:
            _convert(data, root, out, progress)
            return
        except StoreError:
            if (out / "manifest.json").exists():  # finished by the other run since the loop's check
                break
            raise
        except LockHeldError as exc:
            if waiting_since is None:
                waiting_since = time.monotonic()
                print(f"clinseq: {exc}; waiting for it and reusing its store", file=sys.stderr, flush=True)
            time.sleep(poll_s)
    if waiting_since is not None:
        waited = time.monotonic() - waiting_since
        print(f"clinseq: store {out} is ready after waiting {waited:.0f} s", file=sys.stderr, flush=True)


def _convert(data: DataConfig, root: Path, out: Path, progress: bool) -> Path:
    """Convert ``data.root`` with its source (:data:`clinseq.io.sources.SOURCES`) into the store ``out``."""
    from clinseq.io.sources import SOURCES

    spec = SOURCES[data.source]
    return spec.convert(root, out, progress=progress, **spec.pretrain_options_for(data.sampling_rate_hz))


def pretrain_patients(
    store: TimelineStore, config: PretrainConfig
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``(split, patient_ids)``: the patient split and the patients pretraining may read.

    "ptbxl" uses ``strat_fold`` (1–8 train, 9 val, 10 test); "random" splits patients 80/10/10 seeded by
    ``run.seed``; "store" is the store's own split (``patients.parquet``). Pretraining sees only
    ``data.pretrain_splits`` (default: train), so the patients the probe is evaluated on are never seen in
    pretraining.
    """
    if config.data.split == "ptbxl":
        split = ptbxl_split(store)
    elif config.data.split == "store":
        split = split_of_store(store)
    else:
        source: Any = store
        if store.patients.height == 0 and store.has_events:
            source = store.event_index.subject_ids
        split = patient_split(source, seed=config.run.seed)
    assert_no_leakage(split)
    unknown = [s for s in config.data.pretrain_splits if s not in split]
    if unknown:
        raise ConfigError(
            f"data.pretrain_splits: {unknown} are not splits of this store; expected some of {sorted(split)}"
        )
    patients = np.sort(np.concatenate([split[s] for s in config.data.pretrain_splits]))
    return split, patients


def pretrain_recordings(store: TimelineStore, config: PretrainConfig, patients: np.ndarray) -> pl.DataFrame:
    """Recordings of ``patients`` with the configured modality and sampling rate."""
    rec = store.recordings.filter(pl.col("patient_id").is_in(patients.tolist()))
    if config.data.modality is not None:
        rec = rec.filter(pl.col("modality") == config.data.modality)
    if config.data.sampling_rate_hz is not None and config.data.source != "eeg":
        rec = rec.filter(pl.col("sampling_rate_hz") == config.data.sampling_rate_hz)
    if rec.height == 0:
        raise ConfigError(
            f"{store.path}: no recordings left for pretraining (patients {len(patients)}, modality "
            f"{config.data.modality!r}, sampling_rate_hz {config.data.sampling_rate_hz}); check "
            "data.modality, data.sampling_rate_hz and data.pretrain_splits"
        )
    return rec


# -- models ---------------------------------------------------------------------------------------------
def build_encoder(
    model: ModelConfig, *, in_channels: int | None = None, vocab_size: int | None = None
) -> nn.Module:
    """The encoder of ``model.encoder`` with ``encoder_kwargs`` (input width filled in from the data)."""
    cls = ENCODERS[model.encoder]
    kwargs = dict(model.encoder_kwargs)
    check_kwargs(cls, kwargs, "model.encoder_kwargs", provided=ENCODER_PROVIDED, require=False)
    if model.encoder == "event_transformer":
        if vocab_size is None:
            raise ConfigError(
                "event_transformer needs the vocabulary size of an EHR store (data.sampler=events)"
            )
        return cls(vocab_size=vocab_size, **kwargs)
    if in_channels is None:
        raise ConfigError(f"{model.encoder} needs the number of input channels of the data")
    return cls(in_channels=in_channels, **kwargs)


def build_head(model: ModelConfig, embed_dim: int) -> nn.Module:
    """The projection head (``ProjectionHead``), or ``nn.Identity`` when ``projection_dim`` is 0."""
    if model.projection_dim == 0:
        return nn.Identity()
    hidden = model.projection_hidden_dim or embed_dim
    return ProjectionHead(
        embed_dim, hidden, model.projection_dim, model.projection_layers, model.projection_norm
    )


# -- data -----------------------------------------------------------------------------------------------
@dataclass
class PretrainData:
    """What a method trains on: the store, the split, the pretraining recordings and the loader."""

    store: TimelineStore
    split: dict[str, np.ndarray]
    patients: np.ndarray
    loader: EpochLoader
    sampler: Any
    dataset: Any
    recordings: pl.DataFrame | None = None
    n_channels: int | None = None
    sampling_rate_hz: float | None = None
    vocab_size: int | None = None
    window_s: float | None = None


def build_data(
    config: PretrainConfig,
    store: TimelineStore,
    ctx: DistContext | None = None,
    *,
    window_s: float | None = None,
) -> PretrainData:
    """The sampler, dataset and loader of ``config.data`` over the pretraining patients of ``store``.

    Args:
        window_s: the length of what the dataset reads (default ``data.window_s``); a method that cuts one
            read into two adjacent segments (PMQ, CLOCS-CMSC) asks for twice the window.
    """
    ctx = ctx or DistContext()
    data = config.data
    if data.ehr_context_s is not None and not store.has_events:
        raise ConfigError(
            f"data.ehr_context_s is set but {store.path} holds no events: ECG ↔ EHR pairs need a store "
            "with ECG recordings and EHR events of the same patients (MIMIC-IV-ECG + MIMIC-IV)"
        )
    split, patients = pretrain_patients(store, config)
    sampler_cls = SAMPLERS[data.sampler]
    common = {"seed": config.run.seed, "rank": ctx.rank, "world_size": ctx.world_size}
    pin = ctx.device.type == "cuda" if data.pin_memory is None else data.pin_memory
    loader_options = {"prefetch_factor": data.prefetch_factor}
    if data.sampler == "events":
        dataset = PatientEventPairs.fit(store, patients, max_len=data.max_events, seed=config.run.seed)
        table = pl.DataFrame(
            {"recording_id": np.arange(len(dataset.patient_ids)), "patient_id": dataset.patient_ids}
        )
        sampler = sampler_cls(table, **data.sampler_kwargs, **common)
        loader = EpochLoader(
            dataset, sampler, collate_event_pairs, data.num_workers, pin, config.run.seed, **loader_options
        )
        return PretrainData(store, split, patients, loader, sampler, dataset, vocab_size=dataset.vocab_size)

    window_s = data.window_s if window_s is None else window_s
    recordings = pretrain_recordings(store, config, patients)
    sampler = sampler_cls(recordings, window_s=window_s, **data.sampler_kwargs, **common)
    dataset = WindowDataset(
        store,
        window_s,
        channels=data.channels,
        seed=config.run.seed,
        recording_ids=recordings["recording_id"],
    )
    n_channels, rate, vocab_size = dataset.n_channels, dataset.sampling_rate_hz, None
    if data.ehr_context_s is not None:
        ehr_patients = np.intersect1d(patients, store.event_index.subject_ids)
        vocab = CodeVocabulary.fit(store.event_index, ehr_patients)
        normalizer = ValueNormalizer.fit(store.event_index, ehr_patients)
        dataset = ECGContextPairs(dataset, store, vocab, normalizer, data.ehr_context_s, data.max_events)
        vocab_size = dataset.vocab_size
    loader = EpochLoader(
        dataset, sampler, collate_windows, data.num_workers, pin, config.run.seed, **loader_options
    )
    return PretrainData(
        store,
        split,
        patients,
        loader,
        sampler,
        dataset,
        recordings=recordings,
        n_channels=n_channels,
        sampling_rate_hz=rate,
        vocab_size=vocab_size,
        window_s=window_s,
    )
