"""COMET: hierarchical contrast at the observation, sample, trial and patient levels.

Wang, Han, Wang & Zhang 2023, "Contrast everything: a hierarchical contrastive framework for medical
time-series", NeurIPS 2023 (arXiv 2310.14017). Medical time series nest four levels — patients have
trials (recordings), trials are cut into samples (windows), samples are sequences of observations
(timestamps) — and COMET contrasts at each:

    L = λ_O·L_O + λ_S·L_S + λ_R·L_R + λ_P·L_P,        λ = 0.25 each by default

Inputs are the observation-level representations z¹, z² (B, T, D) of two views of the same B samples
(COMET masks 5 random spans covering 10 % of the timestamps in each view; that happens in the encoder /
views, not here), with each sample's trial (recording) id and patient id.

- Observation level L_O (TS2Vec's temporal contrast): for sample i and timestamp t, the positive of
  z¹_{i,t} is z²_{i,t}; the negatives are all other timestamps of the same sample in both views:

      ℓ = log Σ_{(v',t') ≠ (v,t)} exp(z^v_{i,t}·z^{v'}_{i,t'}/τ_I) − z^v_{i,t}·z^{v̄}_{i,t}/τ_I

- Sample level L_S (TS2Vec's instance contrast, at every timestamp): the positive of z¹_{i,t} is z²_{i,t};
  the negatives are the other samples of the batch (both views) at the same timestamp.
- Trial level L_R: positives are the samples with the same trial id; patient level L_P: the samples with
  the same patient id. Both use the instance representation r_i (max over time of the representation, as
  COMET's downstream embedding), l2-normalised, cosine / τ (τ = 0.1), in the symmetric cross-view form
  ½(L(r¹ → r²) + L(r² → r¹)) with positives P(i) = { j : id_j = id_i } (the other view of i included)
  and each row averaging over its positives (SupCon's L_out).

Choices, from the authors' code (the paper leaves them open): observation and sample levels use raw dot
products (τ_I = 1, no normalisation) and are *hierarchical*: computed on z and again after each max-pool
of kernel 2 over time while more than one timestamp remains, each scale's mean loss weighted equally;
trial and patient levels may be computed on a separate pair of (unmasked) views (``id_views``), as the
authors do. Deviations, and why: the authors' code flattens the (T, D) map for the trial/patient levels,
which scales with T and exceeds the kernel's D ≤ 1024 — we pool over time instead; and it puts the
sample's own other view in the denominator but not among the positives of the trial/patient levels,
which penalises the one pair that certainly shares the trial — we count it as a positive.

All four levels run through the grouped-InfoNCE primitive: the observation level with groups = (scale,
sample) and ids = timestamp; the sample level with groups = (scale, timestamp) and ids = sample; each a
single launch over all scales.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from clinseq.errors import ConfigError, ShapeError
from clinseq.models import l2_normalize
from clinseq.objectives._common import (
    check_choice,
    check_embeddings,
    check_ids,
    check_same_shape,
    check_temperature,
    retrieval_top1,
)
from clinseq.objectives.base import ContrastiveObjective, LossOutput

__all__ = ["COMET", "LEVELS"]

#: Level order of ``level_weights`` given as a sequence.
LEVELS = ("observation", "sample", "trial", "patient")


def _weights(level_weights: Sequence[float] | Mapping[str, float]) -> dict[str, float]:
    if isinstance(level_weights, Mapping):
        unknown = set(level_weights) - set(LEVELS)
        if unknown:
            raise ConfigError(f"level_weights keys must be among {LEVELS}, got unknown {sorted(unknown)}")
        weights = {lvl: float(level_weights.get(lvl, 0.0)) for lvl in LEVELS}
    else:
        values = tuple(level_weights)
        if len(values) != len(LEVELS):
            raise ConfigError(
                f"level_weights must give 4 weights in the order {LEVELS} (or a mapping), got {values!r}"
            )
        weights = dict(zip(LEVELS, (float(v) for v in values), strict=True))
    for lvl, w in weights.items():
        if not w >= 0.0 or w == float("inf"):
            raise ConfigError(f"level weight of {lvl!r} must be a finite float >= 0, got {w!r}")
    if not any(weights.values()):
        raise ConfigError(f"at least one COMET level weight must be > 0, got {weights}")
    return weights


class COMET(ContrastiveObjective):
    """``forward(z1, z2, trial_ids, patient_ids, id_views=None) -> LossOutput``.

    Args:
        level_weights: λ per level, a 4-sequence in the order ``LEVELS`` = (observation, sample, trial,
            patient) or a mapping level → weight (missing levels 0). A zero weight skips its level
            entirely (not computed; its ids may be None).
        temperature: τ of the trial and patient levels (cosine / τ; default 0.1).
        instance_temperature: τ_I of the observation and sample levels (raw dot products; default 1).
        hierarchical: also compute the observation/sample levels on max-pooled scales (default True).
        id_pooling: "max" or "mean" over time to get r_i for the trial/patient levels.

    Forward args:
        z1, z2: (B, T, D) observation-level representations of the two (masked) views.
        trial_ids, patient_ids: (B,) integer ids (needed when their level has a weight > 0).
        id_views: optional pair of (B, T, D) or pooled (B, D) representations used by the trial and
            patient levels instead of (z1, z2) — COMET computes those levels on unmasked views.

    Metrics: ``loss``, ``loss_<level>`` for every computed level, ``top1_trial`` / ``top1_patient``.
    """

    def __init__(
        self,
        level_weights: Sequence[float] | Mapping[str, float] = (0.25, 0.25, 0.25, 0.25),
        temperature: float = 0.1,
        instance_temperature: float = 1.0,
        hierarchical: bool = True,
        id_pooling: str = "max",
        **kwargs,
    ) -> None:
        super().__init__(temperature, **kwargs)
        self.level_weights = _weights(level_weights)
        self.instance_temperature = check_temperature(instance_temperature, "instance_temperature")
        self.hierarchical = bool(hierarchical)
        check_choice("id_pooling", id_pooling, ("max", "mean"))
        self.id_pooling = id_pooling

    # -- observation and sample levels -------------------------------------------------------------
    def _scales(self, z1: torch.Tensor, z2: torch.Tensor) -> list[torch.Tensor]:
        """(2B, T_s, D) stacked views per scale: T, then ⌊T/2⌋, … while more than one timestamp."""
        x = torch.cat([z1, z2])
        scales = [x]
        if self.hierarchical:
            while x.shape[1] > 1:
                x = F.max_pool1d(x.transpose(1, 2), kernel_size=2).transpose(1, 2)
                if x.shape[1] > 1:
                    scales.append(x)
        return scales

    def _instance_levels(
        self, z1: torch.Tensor, z2: torch.Tensor, do_obs: bool, do_sample: bool
    ) -> dict[str, torch.Tensor]:
        if not (do_obs or do_sample):
            return {}
        b, _, d = z1.shape
        dev = z1.device
        scales = self._scales(z1, z2)
        wdt = torch.float64 if z1.dtype == torch.float64 else torch.float32  # the kernel's loss dtype
        obs_rows, obs_groups, obs_ids, smp_rows, smp_groups, smp_ids, weights = ([] for _ in range(7))
        obs_base = smp_base = 0
        for x in scales:
            ts = x.shape[1]
            views = x.reshape(2, b, ts, d)
            # Rows are laid out group by group (observation: (b, view, t); sample: (t, view, b)), so each
            # level's groups are contiguous blocks: a kernel can then skip tiles of foreign groups.
            obs_rows.append(views.permute(1, 0, 2, 3).reshape(2 * b * ts, d))
            obs_groups.append(obs_base + torch.arange(b, device=dev).repeat_interleave(2 * ts))
            obs_ids.append(torch.arange(ts, device=dev).repeat(2 * b))
            smp_rows.append(views.permute(2, 0, 1, 3).reshape(2 * b * ts, d))
            smp_groups.append(smp_base + torch.arange(ts, device=dev).repeat_interleave(2 * b))
            smp_ids.append(torch.arange(b, device=dev).repeat(2 * ts))
            # Each scale's rows share 1 / (n_scales · rows of the scale): the mean over scales of means.
            weights.append(torch.full((2 * b * ts,), 1.0 / (len(scales) * 2 * b * ts), device=dev, dtype=wdt))
            obs_base += b
            smp_base += ts
        w = torch.cat(weights)
        out: dict[str, torch.Tensor] = {}
        kw = dict(exclude_self=True, reduction="none", temperature=self.instance_temperature)
        if do_obs:
            # Negatives are timestamps of the same sample only: nothing to gather across ranks.
            u, ids, groups = torch.cat(obs_rows), torch.cat(obs_ids), torch.cat(obs_groups)
            per_row = self._nce(u, u, ids, ids, q_groups=groups, k_groups=groups, **kw)
            out["observation"] = (per_row * w).sum()
        if do_sample:
            u, ids, groups = torch.cat(smp_rows), torch.cat(smp_ids), torch.cat(smp_groups)
            keys, key_ids = self._gather_instances(u, ids, b)
            key_groups = groups.repeat(keys.shape[0] // u.shape[0])
            per_row = self._nce(u, keys, ids, key_ids, q_groups=groups, k_groups=key_groups, **kw)
            out["sample"] = (per_row * w).sum()
        return out

    # -- trial and patient levels ------------------------------------------------------------------
    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            return x
        return x.amax(dim=1) if self.id_pooling == "max" else x.mean(dim=1)

    def forward(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        trial_ids: torch.Tensor | None = None,
        patient_ids: torch.Tensor | None = None,
        id_views: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> LossOutput:
        check_embeddings("COMET", "z1", z1, "(B, T, D)", 3)
        check_embeddings("COMET", "z2", z2, "(B, T, D)", 3)
        check_same_shape("COMET", "z1", z1, "z2", z2)
        b = z1.shape[0]
        lw = self.level_weights
        losses = self._instance_levels(z1, z2, lw["observation"] > 0, lw["sample"] > 0)
        metrics: dict[str, torch.Tensor | float] = {}
        if lw["trial"] > 0 or lw["patient"] > 0:
            if id_views is None:
                r1, r2 = self._pool(z1), self._pool(z2)
            else:
                if not (isinstance(id_views, (tuple, list)) and len(id_views) == 2):
                    raise ShapeError("id_views must be a pair (view1, view2) of (B, T, D) or (B, D) tensors")
                for i, v in enumerate(id_views):
                    if not isinstance(v, torch.Tensor) or v.ndim not in (2, 3) or v.shape[0] != b:
                        got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                        raise ShapeError(f"id_views[{i}] must be (B={b}, T, D) or (B={b}, D), got {got}")
                check_same_shape("COMET", "id_views[0]", id_views[0], "id_views[1]", id_views[1])
                r1, r2 = self._pool(id_views[0]), self._pool(id_views[1])
            r1, r2 = l2_normalize(r1), l2_normalize(r2)
            for level, ids in (("trial", trial_ids), ("patient", patient_ids)):
                if lw[level] == 0:
                    continue
                if ids is None:
                    raise ShapeError(
                        f"COMET's {level} level has weight {lw[level]} > 0 and needs {level}_ids (B,); "
                        "pass them or set its weight to 0"
                    )
                ids = check_ids("COMET", f"{level}_ids", ids, b, z1)
                losses[level] = self._cross_view(r1, r2, ids, ids)
                if self.track_accuracy:
                    metrics[f"top1_{level}"] = retrieval_top1(r1, r2, ids, ids, exclude_self=False)
        loss = sum(lw[level] * value for level, value in losses.items())
        metrics = {
            "loss": loss.detach(),
            **{f"loss_{lvl}": v.detach() for lvl, v in losses.items()},
            **metrics,
        }
        return LossOutput(loss, metrics)

    def extra_repr(self) -> str:
        return (
            f"level_weights={self.level_weights}, instance_temperature={self.instance_temperature}, "
            f"hierarchical={self.hierarchical}, " + super().extra_repr()
        )
