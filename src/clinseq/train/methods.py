"""Pretraining methods: the glue between a batch and an objective, one small class per method.

A method is an ``nn.Module`` holding the encoder (what the linear probe evaluates), its heads and the
objective. ``forward(batch, generator=g)`` goes views → encoder → heads → objective and returns the
objective's ``LossOutput``; ``on_after_step()`` (when defined) runs after each optimizer step (momentum
encoders). Views (augmentations) are applied here, on the training device, with the per-step generator
of the loop, so that two views of one window can differ and a resumed run draws the same ones.

============================  ==============================  ===========================================
method (``method.name``)      sampler (``data.sampler``)      ids / positives
============================  ==============================  ===========================================
``pclr``                      patient (P × V recordings)      patient_id: other recordings of the patient
``simclr``                    random                          two views of each window
``polywindow``                polywindow (R × M windows)      recording_id: other windows of the ECG
``comet``                     hierarchical (P × R × M)        observation, sample, trial, patient levels
``pmq``                       patient or random               momentum keys + patient memory queue
``cpc``                       random                          future frames z_{t+k} of the same item
``clocs``                     random or patient               adjacent segments / leads; patient_id
``ehr_patient_contrast``      events (P patients × 2)         patient_id: two event windows
``ecg_ehr``                   patient (ECG + EHR context)     the ECG and its EHR context (CLIP)
============================  ==============================  ===========================================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from clinseq.data.views import TimeMask
from clinseq.errors import ConfigError
from clinseq.models import EventTransformer, PerLeadEncoder, PredictionHead
from clinseq.objectives import (
    CLOCS,
    COMET,
    CPC,
    PCLR,
    PMQ,
    CrossModalCLIP,
    MomentumEncoder,
    PatientWindowContrast,
    PolyWindow,
    SimCLR,
)
from clinseq.train.builders import build_encoder, build_head, build_views
from clinseq.train.checks import check_kwargs, unknown_key

if TYPE_CHECKING:
    from clinseq.objectives.base import LossOutput
    from clinseq.train.builders import PretrainData
    from clinseq.train.config import PretrainConfig

__all__ = [
    "METHODS",
    "CLOCSMethod",
    "COMETMethod",
    "CPCMethod",
    "ECGEHRMethod",
    "EHRPatientContrastMethod",
    "PCLRMethod",
    "PMQMethod",
    "PolyWindowMethod",
    "SimCLRMethod",
    "Method",
    "build_method",
    "method_class",
]

View = Callable[..., torch.Tensor]


class Method(nn.Module):
    """Base class: ``encoder`` (probed after pretraining), ``head`` and ``objective``.

    Class attributes:
        objective_class: the objective (a class of :mod:`clinseq.objectives`), built with the keyword
            arguments of ``method.objective``.
        samplers: the ``data.sampler`` values whose batch layout the method understands.
        needs_views: the method cannot work without ``data.views``.
    """

    objective_class: ClassVar[type[nn.Module]]
    samplers: ClassVar[tuple[str, ...]] = ()
    needs_views: ClassVar[bool] = False
    #: Constructor arguments the builder fills in (not allowed in ``method.options``).
    provided: ClassVar[tuple[str, ...]] = ("encoder", "head", "objective", "views")

    def __init__(self, encoder: nn.Module, head: nn.Module, objective: nn.Module, views: View | None = None):
        super().__init__()
        self.encoder, self.head, self.objective = encoder, head, objective
        self.views = views

    # -- configuration --------------------------------------------------------------------------
    @classmethod
    def read_window_s(cls, config: PretrainConfig) -> float:
        """Seconds the dataset reads per item: ``data.window_s``, or several windows for a method
        that cuts one read into adjacent segments (PMQ's two halves, CLOCS' segments)."""
        return config.data.window_s

    @classmethod
    def validate(cls, config: PretrainConfig) -> None:
        """Check ``method.objective``/``method.options`` against the signatures and the sampler choice."""
        check_kwargs(cls.objective_class, cls.objective_kwargs(config), "method.objective")
        check_kwargs(cls, config.method.options, "method.options", provided=cls.provided)
        if config.data.sampler not in cls.samplers:
            raise ConfigError(
                f"method {config.method.name!r} needs data.sampler in {cls.samplers} (its batch layout), "
                f"got {config.data.sampler!r}"
            )
        if cls.needs_views and not config.data.views:
            raise ConfigError(
                f"method {config.method.name!r} contrasts augmented views: set data.views, e.g. "
                "[{name: random_crop, n_samples: 250}, {name: gaussian_noise, snr_db: [15, 30]}]"
            )

    @classmethod
    def objective_kwargs(cls, config: PretrainConfig) -> dict[str, Any]:
        """Keyword arguments of the objective (``method.objective`` plus what the method derives)."""
        return dict(config.method.objective)

    @classmethod
    def build(cls, config: PretrainConfig, data: PretrainData) -> Method:
        """Encoder, head, objective and views from the config; the data give the input shape."""
        encoder = cls.build_encoder(config, data)
        head = build_head(config.model, encoder.embed_dim)
        objective = cls.objective_class(**cls.objective_kwargs(config))
        views = build_views(config.data.views, data.sampling_rate_hz)
        return cls(encoder, head, objective, views, **config.method.options)

    @classmethod
    def build_encoder(cls, config: PretrainConfig, data: PretrainData) -> nn.Module:
        return build_encoder(config.model, in_channels=data.n_channels, vocab_size=data.vocab_size)

    # -- helpers --------------------------------------------------------------------------------
    def view(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``x`` through the configured views (unchanged without views)."""
        return x if self.views is None else self.views(x, generator=generator)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """head(encoder(x)): the (B, D') projections the loss sees."""
        return self.head(self.encoder(x))

    def forward(
        self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> LossOutput:
        raise NotImplementedError


class PCLRMethod(Method):
    """PCLR: windows of different recordings of one patient are positives (``patient_id``).

    Batches come from :class:`~clinseq.data.samplers.PatientBatchSampler` (P patients × V recordings;
    with ``short_patients="fill"`` other windows of the same recording stand in for missing ECGs). Views
    are optional (the paper uses none). Also the EEG "patient contrast" recipe.
    """

    objective_class = PCLR
    samplers = ("patient", "hierarchical")

    def forward(self, batch, generator=None):
        z = self.project(self.view(batch["x"], generator))
        return self.objective(z, batch["patient_id"])


class PolyWindowMethod(Method):
    """Poly-window: the M windows of one recording are mutual positives (``recording_id``)."""

    objective_class = PolyWindow
    samplers = ("polywindow",)

    def forward(self, batch, generator=None):
        z = self.project(self.view(batch["x"], generator))
        return self.objective(z, batch["recording_id"])


class SimCLRMethod(Method):
    """SimCLR: two independent draws of the views of each window; the other view is the positive."""

    objective_class = SimCLR
    samplers = ("random", "patient", "polywindow")
    needs_views = True

    def forward(self, batch, generator=None):
        x = batch["x"]
        x1, x2 = self.view(x, generator), self.view(x, generator)
        z = self.project(torch.cat([x1, x2]))
        z1, z2 = z.chunk(2)
        return self.objective(z1, z2)


class COMETMethod(Method):
    """COMET: two masked views → observation-level features (B, T', D) → four contrast levels.

    The encoder must expose ``feature_map(x) -> (B, D, T')`` (``resnet1d``, ``xresnet1d``). The masked
    views are time-span masks (``mask_fraction`` of the samples in ``mask_spans`` spans, design §5),
    drawn independently per view; ``data.views`` (optional) are applied first. Trial ids are
    recording ids, patient ids patient ids (from :class:`~clinseq.data.samplers.HierarchicalSampler`).
    The projection head is not used: COMET contrasts the encoder's own time steps.
    """

    objective_class = COMET
    samplers = ("hierarchical",)

    def __init__(self, encoder, head, objective, views=None, mask_fraction: float = 0.1, mask_spans: int = 5):
        super().__init__(encoder, head, objective, views)
        if not hasattr(encoder, "feature_map"):
            raise ConfigError(
                f"COMET needs an encoder with feature_map() (observation-level features), got "
                f"{type(encoder).__name__}; use model.encoder=resnet1d or xresnet1d"
            )
        self.mask = TimeMask(fraction=mask_fraction, n_spans=mask_spans)

    @classmethod
    def validate(cls, config):
        if config.model.encoder not in ("resnet1d", "xresnet1d"):
            raise ConfigError(
                f"method 'comet' contrasts time steps of the encoder's feature map: model.encoder must be "
                f"resnet1d or xresnet1d, got {config.model.encoder!r}"
            )
        super().validate(config)

    def forward(self, batch, generator=None):
        x = self.view(batch["x"], generator)
        h1 = self.encoder.feature_map(self.mask(x, generator=generator)).transpose(1, 2)
        h2 = self.encoder.feature_map(self.mask(x, generator=generator)).transpose(1, 2)
        return self.objective(h1, h2, batch["recording_id"], batch["patient_id"])


class PMQMethod(Method):
    """PMQ: query q = pred(proj(f(x₁))), key k = momentum(proj ∘ f)(x₂), queue of keys with patient ids.

    Each item is one segment of ``2 × data.window_s``; x₁ and x₂ are its two adjacent halves (Sun et al.
    2025). ``data.views`` (the paper: time masking 0.5 and frequency perturbation 0.1) are drawn
    independently for each half. The key encoder is an exponential moving average of encoder + head
    (``momentum``, default 0.999), updated after every optimizer step; it and the queue live in the
    method's ``state_dict``, so a resumed run continues with them.
    """

    objective_class = PMQ
    samplers = ("patient", "random")

    def __init__(
        self,
        encoder,
        head,
        objective,
        views=None,
        momentum: float = 0.999,
        predictor_hidden_dim: int = 512,
        predictor_norm: str | None = "bn",
    ):
        super().__init__(encoder, head, objective, views)
        dim = _out_dim(head, encoder)
        self.predictor = PredictionHead(dim, predictor_hidden_dim, norm=predictor_norm)
        self.key_encoder = MomentumEncoder(nn.Sequential(encoder, head), momentum=momentum)

    @classmethod
    def read_window_s(cls, config):
        return 2 * config.data.window_s  # two adjacent halves

    @classmethod
    def validate(cls, config):
        if config.model.projection_dim == 0:
            raise ConfigError("method 'pmq' queues projections: set model.projection_dim > 0 (e.g. 128)")
        super().validate(config)

    @classmethod
    def objective_kwargs(cls, config):
        kwargs = dict(config.method.objective)
        if "dim" in inspect.signature(cls.objective_class).parameters and "dim" not in kwargs:
            kwargs["dim"] = config.model.projection_dim  # the queue stores projections
        return kwargs

    def forward(self, batch, generator=None):
        x = batch["x"]
        half = x.shape[-1] // 2
        x1 = self.view(x[..., :half], generator)
        x2 = self.view(x[..., half : 2 * half], generator)
        q = self.predictor(self.project(x1))
        k = self.key_encoder(x2)
        return self.objective(q, k, batch["patient_id"])

    def on_after_step(self) -> None:
        self.key_encoder.update(nn.Sequential(self.encoder, self.head))


class CPCMethod(Method):
    """CPC: the objective predicts z_{t+k} from the context c_t (K steps); negatives: every other (b, t').

    The encoder is a :class:`~clinseq.models.CPCEncoder` (``model.encoder=cpc``) returning (z, c); the
    objective holds the K linear predictors. No projection head (set ``model.projection_dim: 0``).
    """

    objective_class = CPC
    samplers = ("random", "patient", "polywindow")

    @classmethod
    def validate(cls, config):
        if config.model.encoder != "cpc":
            raise ConfigError(
                f"method 'cpc' needs model.encoder=cpc (z and context c), got {config.model.encoder!r}"
            )
        super().validate(config)

    @classmethod
    def objective_kwargs(cls, config):
        kwargs = dict(config.method.objective)
        params = inspect.signature(cls.objective_class).parameters
        enc = config.model.encoder_kwargs
        # The predictor widths follow the encoder's (CPCEncoder defaults: 512 channels, 512 context).
        if "z_dim" in params and "z_dim" not in kwargs:
            kwargs["z_dim"] = list(enc.get("channels", [512]))[-1]
        if "context_dim" in params and "context_dim" not in kwargs:
            kwargs["context_dim"] = enc.get("context_dim", 512)
        return kwargs

    def forward(self, batch, generator=None):
        z, c = self.encoder(self.view(batch["x"], generator))
        return self.objective(z, c)


class CLOCSMethod(Method):
    """CLOCS: views of one ECG without augmentation; positives share the patient id.

    - ``cmsc``: each item is ``n_segments`` adjacent, non-overlapping windows (the dataset reads
      ``n_segments × data.window_s``); the encoder sees one segment at a time.
    - ``cmlc``: the leads of one window, each encoded on its own (a 1-channel encoder wrapped by
      :class:`PerLeadEncoder`).
    - ``cmsmlc``: every (segment, lead) pair is a view.
    """

    objective_class = CLOCS
    samplers = ("random", "patient")

    def __init__(self, encoder, head, objective, views=None, n_segments: int = 2):
        super().__init__(encoder, head, objective, views)
        self.mode = getattr(objective, "mode", "cmsc")
        self.n_segments = n_segments if self.mode != "cmlc" else 1

    @classmethod
    def read_window_s(cls, config):
        if config.method.objective.get("mode", "cmsc") == "cmlc":
            return config.data.window_s
        return config.method.options.get("n_segments", 2) * config.data.window_s

    @classmethod
    def build_encoder(cls, config, data):
        if config.method.objective.get("mode", "cmsc") == "cmsc":
            return build_encoder(config.model, in_channels=data.n_channels)
        return PerLeadEncoder(build_encoder(config.model, in_channels=1))

    def forward(self, batch, generator=None):
        x = self.view(batch["x"], generator)
        b, c, t = x.shape
        s = self.n_segments
        seg = t // s
        segments = x[..., : s * seg].reshape(b, c, s, seg).permute(0, 2, 1, 3)  # (B, S, C, L)
        if self.mode == "cmsc":
            z = self.head(self.encoder(segments.reshape(b * s, c, seg))).view(b, s, -1)
        else:
            h = self.encoder.per_lead(segments.reshape(b * s, c, seg))  # (B·S, C, D)
            z = self.head(h.reshape(b * s * c, -1)).view(b, s, c, -1)
            if self.mode == "cmlc":
                z = z[:, 0]  # (B, C, D): the leads are the views
        return self.objective(z, batch["patient_id"])


class EHRPatientContrastMethod(Method):
    """EHR patient contrast: two event windows of one patient are positives (``patient_id``).

    Batches of :class:`~clinseq.data.event_pairs.PatientEventPairs` (``data.sampler=events``) hold 2P windows,
    the first P and the last P being two crops of the same P patients' timelines.
    """

    objective_class = PatientWindowContrast
    samplers = ("events",)

    def forward(self, batch, generator=None):
        z1, z2 = self.head(self.encoder(batch)).chunk(2)
        return self.objective(z1, z2, batch["patient_id"][: z1.shape[0]])


class ECGEHRMethod(Method):
    """ECG ↔ EHR context alignment (symmetric CLIP): an ECG window and the patient's events before it.

    Needs a store holding ECG recordings and events of the same patients (e.g. MIMIC-IV-ECG converted
    together with MIMIC-IV); batches from :class:`~clinseq.data.event_pairs.ECGContextPairs` carry ``x`` (the
    ECG) and the EHR fields of :mod:`clinseq.data.event_sequences`. ``encoder`` is the ECG encoder (what
    the probe evaluates); ``ehr_encoder`` an :class:`~clinseq.models.EventTransformer` with its own head.
    """

    objective_class = CrossModalCLIP
    samplers = ("patient", "random")
    provided = (*Method.provided, "ehr_encoder", "ehr_head")

    def __init__(self, encoder, head, objective, views=None, ehr_encoder=None, ehr_head=None):
        super().__init__(encoder, head, objective, views)
        if ehr_encoder is None or ehr_head is None:
            raise ConfigError("ECGEHRMethod needs ehr_encoder and ehr_head (built from model and data)")
        self.ehr_encoder, self.ehr_head = ehr_encoder, ehr_head

    @classmethod
    def build(cls, config, data):
        if data.vocab_size is None:
            raise ConfigError(
                "ecg_ehr needs a store with ECG recordings and EHR events of the same patients (MIMIC-IV-ECG "
                "+ MIMIC-IV); this store has no events"
            )
        encoder = cls.build_encoder(config, data)
        ehr_kwargs = dict(config.method.options.get("ehr_encoder_kwargs", {}))
        ehr_encoder = EventTransformer(vocab_size=data.vocab_size, **ehr_kwargs)
        dim = config.model.projection_dim or encoder.embed_dim
        ehr_head = nn.Linear(ehr_encoder.embed_dim, dim)
        objective = cls.objective_class(**cls.objective_kwargs(config))
        views = build_views(config.data.views, data.sampling_rate_hz)
        return cls(
            encoder, build_head(config.model, encoder.embed_dim), objective, views, ehr_encoder, ehr_head
        )

    @classmethod
    def validate(cls, config):
        options = dict(config.method.options)
        ehr_kwargs = options.pop("ehr_encoder_kwargs", {})
        check_kwargs(
            EventTransformer, ehr_kwargs, "method.options.ehr_encoder_kwargs", provided=("vocab_size",)
        )
        check_kwargs(cls.objective_class, cls.objective_kwargs(config), "method.objective")
        if options:
            name = next(iter(options))
            raise unknown_key(f"method.options.{name}", name, ["ehr_encoder_kwargs"])
        if config.data.sampler not in cls.samplers:
            raise ConfigError(
                f"method 'ecg_ehr' needs data.sampler in {cls.samplers}, got {config.data.sampler!r}"
            )
        if config.data.ehr_context_s is None:
            raise ConfigError(
                "method 'ecg_ehr' pairs each ECG with its EHR context: set data.ehr_context_s (seconds of "
                "history before the ECG, e.g. 31536000.0 for a year)"
            )

    def forward(self, batch, generator=None):
        z_ecg = self.project(self.view(batch["x"], generator))
        z_ehr = self.ehr_head(self.ehr_encoder(batch))
        return self.objective(z_ecg, z_ehr, batch["patient_id"])


def _out_dim(head: nn.Module, encoder: nn.Module) -> int:
    out = getattr(head, "out_dim", None)
    return int(out) if out is not None else int(encoder.embed_dim)


#: ``method.name`` → method class (the one place method names are written).
METHODS: dict[str, type[Method]] = {
    "pclr": PCLRMethod,
    "simclr": SimCLRMethod,
    "polywindow": PolyWindowMethod,
    "comet": COMETMethod,
    "pmq": PMQMethod,
    "cpc": CPCMethod,
    "clocs": CLOCSMethod,
    "ehr_patient_contrast": EHRPatientContrastMethod,
    "ecg_ehr": ECGEHRMethod,
}


def method_class(name: str) -> type[Method]:
    """The method class of ``method.name`` (a ``ConfigError`` listing the valid names otherwise)."""
    if name not in METHODS:
        raise unknown_key(f"method.name={name}", name, list(METHODS))
    return METHODS[name]


def build_method(config: PretrainConfig, data: PretrainData) -> Method:
    """The method of ``config.method`` for the data (input channels, vocabulary size, sampling rate)."""
    return method_class(config.method.name).build(config, data)
