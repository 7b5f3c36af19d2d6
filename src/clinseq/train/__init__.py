"""Pretraining: typed configs, the training loop, checkpoints, DDP, and the method tasks.

=================================  ====================================================================
``load_config`` / ``PretrainConfig``  YAML → profile → ``--set`` overrides → validated dataclasses
``resolve_run`` / ``run_recipe``   what ``clinseq pretrain`` runs (new run or exact resume)
``validate_components``            every keyword mapping checked against its target's signature
``prepare_store`` / ``build_data``  the store (converted if needed), split, sampler, dataset, loader
``build_task`` / ``TASKS``         batch → views → encoder → heads → objective, one class per method
``Trainer``                        AdamW + warmup/cosine, autocast, clipping, DDP, JSONL metrics
``save_checkpoint`` …              atomic checkpoints, exact resume
``init_distributed``               torchrun environment → process group (gloo on CPU, NCCL on CUDA)
=================================  ====================================================================
"""

from clinseq.train.builders import (
    PretrainData,
    build_data,
    build_encoder,
    build_head,
    build_views,
    check_eval_store,
    prepare_store,
    pretrain_patients,
    validate_components,
)
from clinseq.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from clinseq.train.config import (
    DataConfig,
    EvalConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    PretrainConfig,
    RunConfig,
    TrainConfig,
    config_to_dict,
    load_config,
    save_config,
)
from clinseq.train.distributed import DistContext, cleanup_distributed, init_distributed
from clinseq.train.loop import EpochLoader, Trainer, TrainingError, TrainResult, read_metrics
from clinseq.train.optim import build_optimizer, warmup_cosine, warmup_cosine_factor
from clinseq.train.run import resolve_run, run_recipe
from clinseq.train.tasks import TASKS, Task, build_task, task_class

__all__ = [
    "TASKS",
    "DataConfig",
    "DistContext",
    "EpochLoader",
    "EvalConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "PretrainConfig",
    "PretrainData",
    "RunConfig",
    "Task",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "build_data",
    "build_encoder",
    "build_head",
    "build_optimizer",
    "build_task",
    "build_views",
    "check_eval_store",
    "cleanup_distributed",
    "config_to_dict",
    "init_distributed",
    "latest_checkpoint",
    "load_checkpoint",
    "load_config",
    "prepare_store",
    "pretrain_patients",
    "read_metrics",
    "resolve_run",
    "run_recipe",
    "save_checkpoint",
    "save_config",
    "task_class",
    "validate_components",
    "warmup_cosine",
    "warmup_cosine_factor",
]
