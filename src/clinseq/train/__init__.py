"""Pretraining: typed configs, the methods, the training loop, checkpoints and DDP.

==========================================  ===========================================================
``load_config`` / ``PretrainConfig``        YAML → profile → ``--set`` overrides → validated dataclasses
``validate_components``                     every keyword mapping checked against its target's signature
``resolve_run`` / ``run_recipe``            what ``clinseq pretrain`` runs (new run or exact resume)
``prepare_store`` / ``build_data``          the store (converted if needed), split, sampler, dataset, loader
``METHODS`` / ``method_class`` / ``Method``  batch → views → encoder → heads → objective, one class per method
``Trainer`` / ``read_metrics``              AdamW + warmup/cosine, autocast, clipping, DDP, JSONL metrics
``load_checkpoint`` / ``latest_checkpoint``  atomic checkpoints, exact resume
``init_distributed``                        torchrun environment → process group (gloo on CPU, NCCL on CUDA)
==========================================  ===========================================================

The parts behind these (config sections, encoder/head/view builders, optimizer and schedule) are in the
submodules: :mod:`~clinseq.train.config`, :mod:`~clinseq.train.builders`, :mod:`~clinseq.train.optim`,
:mod:`~clinseq.train.checkpoint`, :mod:`~clinseq.train.distributed`.
"""

from clinseq.train.builders import PretrainData, build_data, check_eval_store, prepare_store
from clinseq.train.checkpoint import latest_checkpoint, load_checkpoint
from clinseq.train.config import (
    PretrainConfig,
    config_to_dict,
    load_config,
    save_config,
    validate_components,
)
from clinseq.train.distributed import cleanup_distributed, init_distributed
from clinseq.train.loop import Trainer, TrainResult, read_metrics
from clinseq.train.methods import METHODS, Method, build_method, method_class
from clinseq.train.run import lock_run_folder, resolve_run, run_recipe

__all__ = [
    "METHODS",
    "Method",
    "PretrainConfig",
    "PretrainData",
    "TrainResult",
    "Trainer",
    "build_data",
    "build_method",
    "check_eval_store",
    "cleanup_distributed",
    "config_to_dict",
    "init_distributed",
    "latest_checkpoint",
    "load_checkpoint",
    "load_config",
    "method_class",
    "prepare_store",
    "read_metrics",
    "resolve_run",
    "lock_run_folder",
    "run_recipe",
    "save_config",
    "validate_components",
]
