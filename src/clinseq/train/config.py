"""The typed pretraining configuration: YAML file → profile → ``--set`` overrides → validated dataclasses.

A recipe config is a YAML file whose sections mirror :class:`PretrainConfig`::

    recipe: ../pretrain.py          # the recipe script, relative to this file
    run:    {name, out_dir, seed, device}
    data:   {root, store, window_s, sampler, sampler_kwargs, views, ...}
    model:  {encoder, encoder_kwargs, projection_dim, ...}
    method: {name, objective, options}
    optim:  {lr, weight_decay, warmup_steps, ...}
    train:  {max_steps, precision, grad_clip_norm, log_every, checkpoint_every, ...}
    eval:   {enabled, tasks, fractions, ...}
    profiles:
      smoke: {train: {max_steps: 40}, ...}   # named override sets, applied before --set

Resolution order: the file's values, then the chosen profile (a nested mapping), then each
``--set a.b=c`` (the value parsed as YAML, so ``--set optim.lr=3e-4`` is a float and
``--set data.channels=[I,II]`` a list). Every key is checked against the dataclass fields (an unknown key
is rejected with the list of valid ones) and every value against the field's type (``int`` where an
``int`` is declared, ``float`` accepts ints, ``Literal`` choices are enforced). Free-form keyword
mappings (``encoder_kwargs``, ``sampler_kwargs``, ``method.objective``, ``method.options``) are checked
later against the signature of what they are passed to, before anything is built
(:func:`validate_components`).

Paths: ``{data}`` in ``data.root`` expands to :func:`clinseq.utils.data_root` (``$CLINSEQ_DATA``, default
``../shared/data``); other relative paths are relative to the working directory.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from clinseq.data.registry import SAMPLERS
from clinseq.errors import ConfigError
from clinseq.io.sources import SOURCES
from clinseq.models.registry import ENCODERS
from clinseq.train.builders import ENCODER_PROVIDED, SAMPLER_PROVIDED, view_factory
from clinseq.train.checks import check_kwargs, check_value, unknown_key
from clinseq.train.methods import METHODS
from clinseq.utils import data_root

__all__ = [
    "DataConfig",
    "EvalConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "PretrainConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "config_diff",
    "config_to_dict",
    "load_config",
    "parse_set",
    "save_config",
    "validate_components",
]

Precision = Literal["auto", "fp32", "bf16", "fp16"]
#: ``data.source``: the names of the source registry, checked like any ``Literal``.
SourceName = Literal[tuple(SOURCES)]  # type: ignore[valid-type]


@dataclass
class RunConfig:
    """Where the run lives and what it runs on.

    Attributes:
        name: run name (the default run folder is ``runs/<name>``).
        out_dir: run folder; None → ``runs/<name>``. Holds ``config.yaml``, ``metrics.jsonl``,
            ``checkpoints/`` and ``eval/``.
        seed: seeds model initialisation, samplers, views and the probe.
        device: "auto" (CUDA when available, else CPU), "cpu" or "cuda".
        num_threads: torch intra-op CPU threads; None leaves torch's default.
        loggers: where metrics go (:mod:`clinseq.train.loggers`): "jsonl" (``metrics.jsonl``),
            "tensorboard" (``RUN/tensorboard``, when the package is installed), "wandb", "mlflow"; a chosen
            tracker that is not installed is skipped with one warning.
        project: the wandb project / MLflow experiment name.
        tracking_uri: MLflow tracking URI; None → ``file:RUN/mlruns``.
        wandb_mode: "online" or "offline" (sync later with ``wandb sync``); None → wandb's default.
        export_encoder: write the encoder alone to ``RUN/encoder/`` at the end (safetensors + contract
            JSON + model card; :func:`clinseq.models.load_pretrained` reads it).
    """

    name: str = "run"
    out_dir: str | None = None
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = None
    loggers: list[Literal["jsonl", "tensorboard", "wandb", "mlflow"]] = field(
        default_factory=lambda: ["jsonl", "tensorboard"]
    )
    project: str = "clinseq"
    tracking_uri: str | None = None
    wandb_mode: Literal["online", "offline"] | None = None
    export_encoder: bool = True


@dataclass
class DataConfig:
    """The store, the split used for pretraining, windows, the sampler and the views.

    Attributes:
        root: the source dataset in its publisher's layout; ``{data}`` expands to the data root. Used
            only to convert ``store`` when it does not exist yet.
        source: converter for ``root``: a name of :data:`clinseq.io.sources.SOURCES` (e.g. "ptbxl",
            "mimic-iv").
        store: the timeline store folder (converted from ``root`` when absent).
        sampling_rate_hz: PTB-XL converts at 100 or 500 Hz; for other sources, recordings at other
            rates are left out (None keeps every recording, which must then share one rate).
        modality: keep recordings of this modality only ("ecg", "eeg"); None keeps all.
        split: "ptbxl" (strat_fold 1–8 train, 9 val, 10 test), "random" (by patient, seeded) or "store"
            (the store's own ``split`` column, e.g. a MEDS dataset's train / tuning / held_out).
        pretrain_splits: the splits whose patients' signals pretraining may read (default train only,
            so neither validation nor test patients are seen before the probe).
        window_s: window length in seconds (each view/crop the encoder sees).
        channels: channel names to keep, in order; None keeps all.
        sampler: a name of :data:`clinseq.data.registry.SAMPLERS`: "patient" (P patients × V
            recordings), "polywindow" (R recordings × M windows), "hierarchical" (patients → recordings
            → windows), "random" (independent windows) or "events" (EHR event windows, two per patient).
        sampler_kwargs: keyword arguments of the sampler (checked against its signature).
        views: augmentations applied by the method, e.g. ``[{name: gaussian_noise, snr_db: 20}]``.
        num_workers: DataLoader worker processes (0 reads in the main process). The workers persist for
            the whole run and read ahead across epochs; on a GPU use enough of them that a batch is
            read (divided by ``num_workers``) faster than a step runs (the recipes use 8).
        prefetch_factor: batches each worker reads ahead (with ``num_workers`` > 0).
        pin_memory: page-locked batches for asynchronous host → GPU copies; None = on CUDA only.
        max_events: EHR windows: events per window (also the EHR context length of ``ehr_context_s``).
        ehr_context_s: with a value, every ECG window also carries the patient's events in the
            ``ehr_context_s`` seconds before its recording (ECG ↔ EHR alignment; the store must hold both).
    """

    root: str | None = None
    source: SourceName = "ptbxl"
    store: str = "stores/ptbxl100"
    sampling_rate_hz: float | None = None
    modality: str | None = None
    split: Literal["ptbxl", "random", "store"] = "ptbxl"
    pretrain_splits: list[str] = field(default_factory=lambda: ["train"])
    window_s: float = 2.5
    channels: list[str] | None = None
    sampler: str = "patient"
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)
    views: list[dict[str, Any]] = field(default_factory=list)
    num_workers: int = 0
    prefetch_factor: int = 2
    pin_memory: bool | None = None
    max_events: int = 256
    ehr_context_s: float | None = None


@dataclass
class ModelConfig:
    """The encoder and the projection head.

    Attributes:
        encoder: a name of :data:`clinseq.models.registry.ENCODERS`: "resnet1d" (Ribeiro/PCLR),
            "xresnet1d", "cpc", "patch_transformer", "event_transformer", "s4d" (S4D stack) or "sgconv"
            (SGConv stack, SL-S4Wave shape).
        encoder_kwargs: constructor arguments of the encoder (checked against its signature;
            ``in_channels`` and, for EHR, ``vocab_size`` are filled in from the data).
        projection_dim: output width of the projection head (0 = no head: the loss sees the
            encoder's embedding).
        projection_hidden_dim: hidden width of the head (None = the encoder's ``embed_dim``).
        projection_layers: linear layers of the head (1 = a single linear map).
        projection_norm: "bn", "ln" or None inside the head (use "ln"/None for BatchNorm-free models).
        sync_batchnorm: convert BatchNorm to SyncBatchNorm under DDP on CUDA (on the CPU/gloo
            SyncBatchNorm is not available in torch, so each rank normalises its own batch there).
    """

    encoder: str = "resnet1d"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    projection_dim: int = 128
    projection_hidden_dim: int | None = None
    projection_layers: int = 2
    projection_norm: Literal["bn", "ln"] | None = "bn"
    sync_batchnorm: bool = True


@dataclass
class MethodConfig:
    """The pretraining method: the module gluing batch → views → encoder → heads → objective.

    Attributes:
        name: a name of :data:`clinseq.train.methods.METHODS` ("pclr", "simclr", "polywindow", "comet",
            "pmq", "cpc", "clocs", "ehr_patient_contrast", "ecg_ehr").
        objective: constructor arguments of the objective (checked against its signature).
        options: the method's own options (checked against the method class's signature).
    """

    name: str = "pclr"
    objective: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay.

    Attributes:
        lr: peak learning rate, reached at the end of warmup.
        weight_decay: decoupled weight decay of weight matrices/kernels; biases, norm parameters and
            embeddings of dimension ≤ 1 get none.
        betas, eps: AdamW's.
        warmup_steps: linear warmup from 0 to ``lr`` over this many optimizer steps.
        min_lr_ratio: the cosine ends at ``min_lr_ratio · lr`` at ``train.max_steps``.
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0


@dataclass
class TrainConfig:
    """Length of training, numerics, logging and checkpoints.

    Attributes:
        max_steps: optimizer steps in total (epochs repeat the sampler as needed).
        precision: "auto" (bf16 on CUDA when supported, else fp16 with a GradScaler; fp32 on CPU),
            "fp32", "bf16" (autocast) or "fp16" (autocast + GradScaler).
        grad_clip_norm: clip the global gradient norm to this value (None: no clipping; the norm is
            still logged).
        log_every: steps between metric lines (the only host synchronisation of the loop).
        checkpoint_every: steps between checkpoints (one is always written at the end).
        keep_checkpoints: how many recent checkpoints to keep.
        progress: tqdm progress bar on rank 0.
        find_unused_parameters: DDP's flag (needed when a task leaves parameters unused in a step).
        compile: wrap the encoder in ``torch.compile`` (in place: checkpoints and exports unchanged).
    """

    max_steps: int = 1000
    precision: Precision = "auto"
    grad_clip_norm: float | None = 1.0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    progress: bool = True
    find_unused_parameters: bool = False
    compile: bool = False


@dataclass
class EvalConfig:
    """Evaluation after pretraining: the pretrained encoder against the same one at random init, on
    labelled tasks of the pretraining store (:func:`clinseq.eval.evaluate`).

    Attributes:
        enabled: run the evaluation at the end of the recipe.
        tasks: task names of :data:`clinseq.eval.TASKS` (e.g. "ptbxl/superdiagnostic",
            "eegmat/condition", "eegmat/count_quality"); each is evaluated and printed in turn.
        fractions: label fractions of the training subjects (nested, by subject).
        seeds: label-fraction draws (one probe per seed and fraction).
        n_boot: bootstrap resamples (by subject) for the 95 % CIs.
        compare_random_init: also probe the same encoder at its initial (random) weights.
        options: further fields of ``clinseq.eval.EvalOptions`` (checked), e.g. ``{folds: 5}``.
    """

    enabled: bool = True
    tasks: list[str] = field(default_factory=lambda: ["ptbxl/superdiagnostic"])
    fractions: list[float] = field(default_factory=lambda: [0.1, 1.0])
    seeds: list[int] = field(default_factory=lambda: [0])
    n_boot: int = 1000
    compare_random_init: bool = True
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PretrainConfig:
    """A whole pretraining recipe (see the module docstring for the YAML layout)."""

    recipe: str = "../pretrain.py"
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: Where the config was read from (set by :func:`load_config`; not a YAML key).
    source_path: str | None = field(default=None, metadata={"internal": True})
    profile: str | None = field(default=None, metadata={"internal": True})

    # -- derived values -------------------------------------------------------------------------
    def run_dir(self) -> Path:
        """The run folder: ``run.out_dir`` or ``runs/<run.name>``."""
        return Path(self.run.out_dir) if self.run.out_dir else Path("runs") / self.run.name

    def data_root(self) -> Path | None:
        """``data.root`` with ``{data}`` expanded to the data root; None when unset."""
        if self.data.root is None:
            return None
        return Path(self.data.root.replace("{data}", str(data_root()))).expanduser()

    def recipe_path(self) -> Path:
        """The recipe script: ``recipe`` relative to the config file's folder (or absolute)."""
        path = Path(self.recipe).expanduser()
        if not path.is_absolute() and self.source_path is not None:
            path = Path(self.source_path).resolve().parent / path
        return path


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from a nested mapping, checking keys and types recursively."""
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{prefix or 'config'}: expected a mapping of keys to values, got {values!r}; "
            "check the YAML indentation"
        )
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise unknown_key(key, str(name), list(fields))
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value if value is not None else {}, f"{key}.")
        else:
            kwargs[name] = check_value(value, tp, key)
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Nested merge: mappings of dataclass sections merge key by key; other values replace."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict) and k not in _REPLACE_WHOLE:
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# Free-form keyword mappings are merged key by key too (a profile can change one sampler argument); only
# lists are replaced whole.
_REPLACE_WHOLE: set[str] = set()


def parse_set(item: str) -> tuple[list[str], Any]:
    """``"optim.lr=3e-4"`` → ``(["optim", "lr"], 0.0003)``; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value (e.g. --set optim.lr=3e-4), got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects a dotted key such as optim.lr, got {key!r} in {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc}); quote strings") from exc
    value = _yaml_float_fix(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    return key.split("."), value


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set key=value`` strings to a nested mapping of config values (unchecked; see load)."""
    out = copy.deepcopy(values)
    for item in overrides:
        path, value = parse_set(item)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"--set {item!r}: {part!r} holds {child!r}, not a section; set {'.'.join(path[:-1])} "
                    "as a whole instead"
                )
            node = child
        node[path[-1]] = value
    return out


def _yaml_float_fix(node: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; convert such strings back to floats."""
    if isinstance(node, dict):
        return {k: _yaml_float_fix(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_yaml_float_fix(v) for v in node]
    if isinstance(node, str):
        try:
            if any(c in node for c in "eE") and node[0] in "+-.0123456789":
                return float(node)
        except ValueError:
            return node
    return node


def load_config(
    path: str | Path | None = None,
    *,
    profile: str | None = None,
    overrides: Sequence[str] = (),
    values: Mapping[str, Any] | None = None,
) -> PretrainConfig:
    """Read, override and validate a recipe config.

    Args:
        path: the YAML file (None: start from ``values`` or the defaults).
        profile: name of an entry of the file's ``profiles:`` (e.g. "smoke") applied after the file.
        overrides: ``--set`` strings ``"section.key=value"`` applied last.
        values: a nested mapping used instead of (or, with ``path``, merged over) the file's values.

    Raises:
        ConfigError: unreadable YAML, an unknown key (with the valid ones), a value of the wrong type,
            an unknown profile (with the available ones).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"config file {path} does not exist; pass a YAML file such as recipes/ptbxl/pclr.yaml"
            )
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
        raw = _yaml_float_fix(raw)
    if values is not None:
        raw = _merge(raw, values)
    profiles = raw.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"profiles: expected a mapping of profile name → overrides, got {profiles!r}")
    if profile is not None:
        if profile not in profiles:
            raise ConfigError(
                f"unknown profile {profile!r} in {path}; available: {', '.join(sorted(profiles)) or 'none'}"
            )
        raw = _merge(raw, profiles[profile] or {})
    raw = apply_overrides(raw, overrides)
    config = _build(PretrainConfig, raw, "")
    config.source_path = str(path) if path is not None else None
    config.profile = profile
    _check_names(config)
    _check_ranges(config)
    return config


def _check_names(c: PretrainConfig) -> None:
    """The registered names: ``model.encoder``, ``data.sampler`` and ``method.name``."""
    for key, name, registry in (
        ("model.encoder", c.model.encoder, ENCODERS),
        ("data.sampler", c.data.sampler, SAMPLERS),
        ("method.name", c.method.name, METHODS),
    ):
        if name not in registry:
            raise unknown_key(f"{key}={name}", name, list(registry))


def _check_ranges(c: PretrainConfig) -> None:
    """Value checks the types alone cannot express."""

    def need(ok: bool, key: str, expected: str, got: Any, fix: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: expected {expected}, got {got!r}; {fix}")

    need(c.train.max_steps >= 1, "train.max_steps", "an integer >= 1", c.train.max_steps, "set a step count")
    need(c.train.log_every >= 1, "train.log_every", ">= 1", c.train.log_every, "e.g. 10")
    need(
        c.train.checkpoint_every >= 1, "train.checkpoint_every", ">= 1", c.train.checkpoint_every, "e.g. 500"
    )
    need(c.train.keep_checkpoints >= 1, "train.keep_checkpoints", ">= 1", c.train.keep_checkpoints, "e.g. 2")
    need(
        c.train.grad_clip_norm is None or c.train.grad_clip_norm > 0,
        "train.grad_clip_norm",
        "a positive norm or null",
        c.train.grad_clip_norm,
        "use null to disable clipping",
    )
    need(c.optim.lr > 0, "optim.lr", "> 0", c.optim.lr, "e.g. 1e-3")
    need(c.optim.weight_decay >= 0, "optim.weight_decay", ">= 0", c.optim.weight_decay, "e.g. 0.05")
    need(c.optim.warmup_steps >= 0, "optim.warmup_steps", ">= 0", c.optim.warmup_steps, "e.g. 100")
    need(0 <= c.optim.min_lr_ratio <= 1, "optim.min_lr_ratio", "in [0, 1]", c.optim.min_lr_ratio, "e.g. 0.0")
    need(
        len(c.optim.betas) == 2 and all(0 <= b < 1 for b in c.optim.betas),
        "optim.betas",
        "two values in [0, 1)",
        c.optim.betas,
        "e.g. [0.9, 0.999]",
    )
    need(c.data.window_s > 0, "data.window_s", "> 0 seconds", c.data.window_s, "e.g. 2.5")
    need(c.data.num_workers >= 0, "data.num_workers", ">= 0", c.data.num_workers, "0 reads in-process")
    need(c.data.prefetch_factor >= 1, "data.prefetch_factor", ">= 1", c.data.prefetch_factor, "e.g. 2")
    need(c.model.projection_dim >= 0, "model.projection_dim", ">= 0", c.model.projection_dim, "0 = no head")
    need(
        c.model.projection_layers >= 1, "model.projection_layers", ">= 1", c.model.projection_layers, "e.g. 2"
    )
    need(
        all(0 < f <= 1 for f in c.eval.fractions),
        "eval.fractions",
        "fractions in (0, 1]",
        c.eval.fractions,
        "e.g. [0.01, 0.1, 1.0]",
    )
    need(c.eval.n_boot >= 1, "eval.n_boot", ">= 1", c.eval.n_boot, "e.g. 1000")
    need(
        len(c.eval.seeds) >= 1 and len(set(c.eval.seeds)) == len(c.eval.seeds),
        "eval.seeds",
        "one or more different seeds",
        c.eval.seeds,
        "e.g. [0, 1, 2] (each writes eval/seed<k>/)",
    )


def config_to_dict(config: PretrainConfig) -> dict[str, Any]:
    """The config as plain nested dicts/lists (what ``config.yaml`` holds), internal fields left out."""

    def convert(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {
                f.name: convert(getattr(obj, f.name))
                for f in dataclasses.fields(obj)
                if not f.metadata.get("internal")
            }
        if isinstance(obj, (list, tuple)):
            return [convert(v) for v in obj]
        if isinstance(obj, dict):
            return {k: convert(v) for k, v in obj.items()}
        return obj

    return convert(config)


def save_config(config: PretrainConfig, path: str | Path, command: str | None = None) -> Path:
    """Write the resolved config as YAML (atomically), with a header naming its origin and command.

    ``recipe`` is written as an absolute path, so the saved file resolves the same script from the run
    folder (``clinseq pretrain --resume RUN_DIR`` reads it back).
    """
    path = Path(path)
    values = config_to_dict(config)
    values["recipe"] = str(config.recipe_path())
    header = [
        "# Resolved clinseq pretraining config (file → profile → --set overrides), as this run used it.",
        f"# from: {config.source_path}" + (f"  profile: {config.profile}" if config.profile else ""),
    ]
    if command:
        header.append(f"# command: {command}")
    text = (
        "\n".join(header) + "\n" + yaml.safe_dump(values, sort_keys=False, default_flow_style=None, width=110)
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def config_diff(a: PretrainConfig, b: PretrainConfig, ignore: Sequence[str] = ()) -> list[str]:
    """Dotted keys whose values differ between two configs (``ignore``: keys or section prefixes)."""
    out: list[str] = []

    def walk(x: Any, y: Any, key: str) -> None:
        if any(key == i or key.startswith(i + ".") for i in ignore):
            return
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                walk(x.get(k), y.get(k), f"{key}.{k}" if key else k)
        elif x != y:
            out.append(f"{key}: {x!r} → {y!r}")

    walk(config_to_dict(a), config_to_dict(b), "")
    return out


def validate_components(config: PretrainConfig) -> None:
    """Check every keyword mapping of ``config`` against what it configures (nothing is built)."""
    _check_names(config)
    check_kwargs(ENCODERS[config.model.encoder], config.model.encoder_kwargs, "model.encoder_kwargs",
                 provided=ENCODER_PROVIDED)  # fmt: skip
    provided = SAMPLER_PROVIDED
    if config.data.sampler == "events":  # one key per patient: PatientEventPairs gives its two windows
        provided = (*SAMPLER_PROVIDED, "windows_per_recording")
    check_kwargs(SAMPLERS[config.data.sampler], config.data.sampler_kwargs, "data.sampler_kwargs",
                 provided=provided)  # fmt: skip
    for i, view in enumerate(config.data.views):
        view_factory(view, f"data.views[{i}]")
    METHODS[config.method.name].validate(config)
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
