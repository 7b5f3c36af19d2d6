"""Config → objects: the store, the pretraining split, sampler, dataset, loader, encoder, head and views.

Every free-form keyword mapping of a config (``model.encoder_kwargs``, ``data.sampler_kwargs``, the views,
``method.objective``, ``method.options``, ``eval.options``) is checked by :func:`validate_components`
against the signature (names and annotated types) of what it will be passed to, before anything is
built or read, so a typo fails in a second with the list of valid names rather than after a conversion.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch
from torch import nn

from clinseq.train.config import DataConfig, ModelConfig, PretrainConfig, check_value, unknown_key
from clinseq.train.distributed import DistContext, barrier
from clinseq.train.loop import EpochLoader
from clinseq.utils import ConfigError

if TYPE_CHECKING:
    from clinseq.timeline import TimelineStore

__all__ = [
    "ENCODERS",
    "SAMPLERS",
    "PretrainData",
    "build_data",
    "build_encoder",
    "build_head",
    "build_views",
    "check_eval_store",
    "check_kwargs",
    "prepare_store",
    "pretrain_patients",
    "validate_components",
]


# -- registries (lazy, so that importing clinseq.train stays cheap) -------------------------------------
def _encoders() -> dict[str, Callable[..., nn.Module]]:
    from clinseq.models import (
        CPCEncoder,
        EventTransformer,
        PatchTransformer,
        ResNet1d,
        S4DEncoder,
        SGConvEncoder,
        XResNet1d,
    )

    return {
        "resnet1d": ResNet1d,
        "xresnet1d": XResNet1d,
        "cpc": CPCEncoder,
        "patch_transformer": PatchTransformer,
        "event_transformer": EventTransformer,
        "s4d": S4DEncoder,
        "sgconv": SGConvEncoder,
    }


def _samplers() -> dict[str, Callable[..., Any]]:
    from clinseq.data.samplers import (
        HierarchicalSampler,
        PatientBatchSampler,
        PolyWindowSampler,
        RandomWindowSampler,
    )

    return {
        "patient": PatientBatchSampler,
        "polywindow": PolyWindowSampler,
        "hierarchical": HierarchicalSampler,
        "random": RandomWindowSampler,
        # EHR: batches of patients; each patient gives two event windows (see PatientEventPairs).
        "events": RandomWindowSampler,
    }


#: Encoder names of ``model.encoder`` (the classes of :mod:`clinseq.models`).
ENCODERS = ("resnet1d", "xresnet1d", "cpc", "patch_transformer", "event_transformer", "s4d", "sgconv")
#: Sampler names of ``data.sampler`` (the classes of :mod:`clinseq.data.samplers`).
SAMPLERS = ("patient", "polywindow", "hierarchical", "random", "events")

# Arguments the builders fill in themselves (not allowed in the config's keyword mappings).
_SAMPLER_PROVIDED = ("recordings", "window_s", "window_n_samples", "seed", "rank", "world_size")
_ENCODER_PROVIDED = ("in_channels", "vocab_size")


# -- signature checks -----------------------------------------------------------------------------------
def _hints(target: Callable[..., Any]) -> dict[str, Any]:
    target = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable annotations are simply not type-checked
        return {}


def _parameters(fn: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool, dict[str, Any]]:
    """Keyword parameters of ``fn`` (``{name: Parameter}``), whether it takes any ``**kwargs``, type hints.

    A class whose ``__init__`` ends in ``**kwargs`` forwards them to its base class (the objectives'
    ``super().__init__(temperature, **kwargs)``): the base classes' parameters are collected too, so
    that a misspelt base option is still caught.
    """
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    chain = (
        [c for c in fn.__mro__ if "__init__" in vars(c) and c is not object] if inspect.isclass(fn) else [fn]
    )
    var_kw = False
    for target in chain:
        sig = inspect.signature(target)
        for n, p in sig.parameters.items():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self" and n not in params:
                # Base-class parameters the subclass passes positionally are required only once.
                params[n] = (
                    p
                    if target is chain[0]
                    else p.replace(default=None if p.default is p.empty else p.default)
                )
        for n, h in _hints(target).items():
            hints.setdefault(n, h)
        var_kw = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
        if not var_kw or not inspect.isclass(fn):
            break
    else:
        var_kw = False  # every class forwards **kwargs up to nn.Module, which takes no options
    return params, var_kw, hints


def check_kwargs(
    fn: Callable[..., Any],
    kwargs: Mapping[str, Any],
    key: str,
    *,
    provided: Sequence[str] = (),
    require: bool = True,
) -> None:
    """Raise a ``ConfigError`` unless ``fn(**provided, **kwargs)`` matches ``fn``'s signature.

    Checks that every key is a parameter of ``fn`` (not one the builder ``provided`` itself), that the
    values have the annotated types, and (``require``) that no parameter without a default is missing.
    """
    params, var_kw, hints = _parameters(fn)
    valid = [n for n in params if n not in provided]
    for name, value in kwargs.items():
        if name in provided:
            raise ConfigError(
                f"{key}.{name} is set by clinseq from the rest of the config (it fills "
                f"{', '.join(provided)}); remove it from {key}"
            )
        if name not in params and not var_kw:
            raise unknown_key(f"{key}.{name}", name, valid)
        if name in hints:
            check_value(value, hints[name], f"{key}.{name}")
    if require:
        missing = [
            n for n, p in params.items() if p.default is p.empty and n not in kwargs and n not in provided
        ]
        if missing:
            raise ConfigError(f"{key} lacks required argument(s) {missing} of {getattr(fn, '__name__', fn)}")


def validate_components(config: PretrainConfig) -> None:
    """Check every keyword mapping of ``config`` against what it configures (nothing is built)."""
    encoders = _encoders()
    check_kwargs(encoders[config.model.encoder], config.model.encoder_kwargs, "model.encoder_kwargs",
                 provided=_ENCODER_PROVIDED)  # fmt: skip
    sampler = _samplers()[config.data.sampler]
    provided = _SAMPLER_PROVIDED
    if config.data.sampler == "events":
        provided = (*_SAMPLER_PROVIDED, "windows_per_recording")
    check_kwargs(sampler, config.data.sampler_kwargs, "data.sampler_kwargs", provided=provided)
    for i, view in enumerate(config.data.views):
        _view_factory(view, f"data.views[{i}]")
    from clinseq.train.tasks import task_class

    task = task_class(config.method.name)
    task.validate(config)
    if config.eval.enabled:
        from clinseq.eval import TASKS, EvalOptions

        if not config.eval.tasks:
            raise ConfigError(
                "eval.enabled is true but eval.tasks is empty; name a task or set eval.enabled=false"
            )
        for name in config.eval.tasks:
            if name not in TASKS:
                raise unknown_key(f"eval.tasks={name}", name, list(TASKS))
        # window_s and channels default to data.*, and an option may override them (e.g. a shorter window).
        fixed = ("fractions", "seeds", "n_boot", "device")
        for key in config.eval.options:
            if key in fixed:
                where = "run.device" if key == "device" else f"eval.{key}"
                raise ConfigError(f"eval.options.{key} is set by the recipe from {where}; set that instead")
            if key not in EvalOptions.fields():
                raise unknown_key(
                    f"eval.options.{key}", key, [k for k in EvalOptions.fields() if k not in fixed]
                )


# -- views ----------------------------------------------------------------------------------------------
def _view_factory(
    spec: Mapping[str, Any], key: str
) -> tuple[Callable[..., Any], dict[str, Any], float | None]:
    """``(view class, its kwargs, probability p or None)`` of one ``data.views`` entry, checked."""
    from clinseq.data import views as views_module

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
        factory, kwargs, p = _view_factory(spec, f"data.views[{i}]")
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
    config: PretrainConfig, ctx: DistContext | None = None, progress: bool = True
) -> TimelineStore:
    """Open ``data.store``; convert it from ``data.root`` first when it does not exist (rank 0 only)."""
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
            _convert(data, root, store_path, progress)
        barrier(ctx)
    return TimelineStore.open(store_path)


def check_eval_store(config: PretrainConfig, store: TimelineStore) -> None:
    """Fail before training, not after it, when a task of ``eval.tasks`` cannot run on ``store``."""
    if not config.eval.enabled:
        return
    from clinseq.eval import get_task

    for name in config.eval.tasks:
        get_task(name).check_store(store)


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
    from clinseq.data.splits import assert_no_leakage, patient_split, ptbxl_split, split_of_store

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
    cls = _encoders()[model.encoder]
    kwargs = dict(model.encoder_kwargs)
    check_kwargs(cls, kwargs, "model.encoder_kwargs", provided=_ENCODER_PROVIDED, require=False)
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
    from clinseq.models import ProjectionHead

    if model.projection_dim == 0:
        return nn.Identity()
    hidden = model.projection_hidden_dim or embed_dim
    return ProjectionHead(
        embed_dim, hidden, model.projection_dim, model.projection_layers, model.projection_norm
    )


# -- data -----------------------------------------------------------------------------------------------
@dataclass
class PretrainData:
    """What a task trains on: the store, the split, the pretraining recordings and the loader."""

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
        window_s: the length of what the dataset reads (default ``data.window_s``); a task that cuts one
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
    sampler_cls = _samplers()[data.sampler]
    common = {"seed": config.run.seed, "rank": ctx.rank, "world_size": ctx.world_size}
    pin = ctx.device.type == "cuda" if data.pin_memory is None else data.pin_memory
    loader_options = {"prefetch_factor": data.prefetch_factor}
    if data.sampler == "events":
        from clinseq.train.ehr import PatientEventPairs, collate_event_pairs

        dataset = PatientEventPairs.fit(store, patients, max_len=data.max_events, seed=config.run.seed)
        table = pl.DataFrame(
            {"recording_id": np.arange(len(dataset.patient_ids)), "patient_id": dataset.patient_ids}
        )
        sampler = sampler_cls(table, **data.sampler_kwargs, **common)
        loader = EpochLoader(
            dataset, sampler, collate_event_pairs, data.num_workers, pin, config.run.seed, **loader_options
        )
        return PretrainData(store, split, patients, loader, sampler, dataset, vocab_size=dataset.vocab_size)

    from clinseq.data.datasets import WindowDataset, collate_windows

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
        from clinseq.data.event_sequences import CodeVocabulary, ValueNormalizer
        from clinseq.train.ehr import ECGContextPairs

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
