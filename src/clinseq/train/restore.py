"""The encoders of a saved run, for evaluation without retraining (``clinseq eval RUN``, ``clinseq embed``).

A run folder holds the resolved ``config.yaml`` and ``checkpoints/step-N/state.pt``. :func:`load_run`
rebuilds the method exactly as the recipe did — the same data shape, then ``torch.manual_seed(run.seed)``
and the method's ``build`` — so that:

- ``"random init"`` is bit-for-bit the encoder the recipe compared against (its initial weights), and
- ``"pretrained"`` is that encoder with the latest checkpoint's weights loaded.

:func:`eval_featurizers` turns a run's encoders into the rows of its evaluation table: the encoders
themselves for waveforms, and for EHR runs (``data.sampler: events``) an event featurizer per encoder
(the pretraining vocabulary, events up to each prediction time) plus the code-count baseline.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clinseq.errors import ConfigError
from clinseq.timeline import TimelineStore
from clinseq.train.builders import build_data
from clinseq.train.checkpoint import latest_checkpoint, load_checkpoint
from clinseq.train.config import PretrainConfig, load_config
from clinseq.train.methods import method_class
from clinseq.train.run import CONFIG_FILE

__all__ = ["SavedRun", "eval_featurizers", "load_run"]


@dataclass
class SavedRun:
    """A run's config, its store and its encoders (``"pretrained"``, ``"random init"``), in eval mode."""

    run_dir: Path
    config: PretrainConfig
    store: TimelineStore
    encoders: dict[str, nn.Module]
    step: int
    #: The rows of the run's evaluation table (:func:`eval_featurizers`).
    featurizers: dict[str, Any] = field(default_factory=dict)


def eval_featurizers(
    config: PretrainConfig,
    dataset: Any,
    encoders: Mapping[str, nn.Module],
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """The rows of a run's evaluation table (module docstring); ``dataset`` is the pretraining dataset
    (for EHR runs a :class:`~clinseq.data.event_pairs.PatientEventPairs` with its vocabulary)."""
    if config.data.sampler != "events":
        return dict(encoders)
    from clinseq.eval import event_featurizers

    return event_featurizers(
        encoders, dataset.vocab, dataset.normalizer, config.data.max_events, device=device
    )


def load_run(run_dir: str | Path, store: str | Path | None = None) -> SavedRun:
    """Rebuild the encoders of the run in ``run_dir`` (see the module docstring).

    Args:
        run_dir: the run folder (``config.yaml`` + ``checkpoints/``).
        store: the store to open instead of the config's ``data.store`` (e.g. the run was made on another
            machine); it must hold data of the same shape (channels) as the run's.
    """
    run_dir = Path(run_dir)
    config_file = run_dir / CONFIG_FILE
    if not config_file.is_file():
        raise ConfigError(f"{run_dir}: no {CONFIG_FILE} there; pass the folder of a clinseq run")
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise ConfigError(f"{run_dir}: the run saved no checkpoint; nothing to evaluate")
    config = load_config(config_file)
    config.run.out_dir = str(run_dir)
    config.data.num_workers = 0  # nothing is iterated here
    store_path = Path(store) if store is not None else Path(config.data.store)
    if not (store_path / "manifest.json").is_file():
        raise ConfigError(
            f"{store_path} is not a store (the run's data.store); pass the store the run was trained on "
            "(--store STORE)"
        )
    opened = TimelineStore.open(store_path)
    method_cls = method_class(config.method.name)
    data = build_data(config, opened, window_s=method_cls.read_window_s(config))
    try:
        torch.manual_seed(config.run.seed)  # as the recipe: the same initial weights
        method = method_cls.build(config, data)
    finally:
        data.loader.close()
    initial = copy.deepcopy(method.encoder)
    state, _ = load_checkpoint(checkpoint)
    method.load_state_dict(state["method"])
    encoders = {"pretrained": method.encoder.eval(), "random init": initial.eval()}
    rows = eval_featurizers(config, data.dataset, encoders)
    return SavedRun(run_dir, config, opened, encoders, int(state.get("step", 0)), rows)
