"""Resolve what ``clinseq pretrain`` runs: the config (new run or resume) and the recipe script.

``clinseq pretrain CONFIG [--profile NAME] [--set key=value ...] [--out RUN_DIR]`` starts a run;
``clinseq pretrain [CONFIG] --resume RUN_DIR [--set ...]`` continues one from its latest checkpoint with
the resolved ``RUN_DIR/config.yaml`` it saved. A resumed run must compute exactly what the original would
have, so only settings that do not change the numbers may differ (:data:`RESUME_MAY_CHANGE`); any other
difference between the saved config and CONFIG/``--set`` is an error listing the keys.

The recipe script is found relative to the config file (its ``recipe:`` key, default ``../pretrain.py``
beside ``recipes/<family>/``), so an installed clinseq runs the recipes of a checkout or any copy of the
``recipes/`` folder; the script must define ``run(config, resume=False)``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from clinseq.errors import ConfigError
from clinseq.timeline.lock import FolderLock
from clinseq.train.checkpoint import latest_checkpoint
from clinseq.train.config import PretrainConfig, config_diff, load_config

__all__ = [
    "CONFIG_FILE",
    "RESUME_MAY_CHANGE",
    "RUN_FILES",
    "RUN_LOCK",
    "load_recipe",
    "lock_run_folder",
    "resolve_run",
    "run_recipe",
]

CONFIG_FILE = "config.yaml"

#: Keys a resumed run may change: they affect speed, logging and files, never the computed values.
RESUME_MAY_CHANGE = (
    "train.progress",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "data.num_workers",
    "data.prefetch_factor",
    "data.pin_memory",
    "run.out_dir",
    "run.name",
    "run.loggers",
    "run.project",
    "run.tracking_uri",
    "run.wandb_mode",
    "run.export_encoder",
    "recipe",
    "eval",
)


def resolve_run(
    config_path: str | Path | None,
    *,
    profile: str | None = None,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    resume: str | Path | None = None,
) -> tuple[PretrainConfig, bool]:
    """``(config, resume)`` for a new run or a resumed one (see the module docstring).

    Raises:
        ConfigError: no config and no run folder; a new run pointed at a folder that already holds
            checkpoints; a resumed run whose settings differ from the saved ones in a key that is not in
            :data:`RESUME_MAY_CHANGE`; a run folder without a checkpoint.
    """
    if resume is not None:
        run_dir = Path(resume)
        _check_not_running(run_dir)
        saved_file = run_dir / CONFIG_FILE
        if not saved_file.is_file():
            raise ConfigError(f"--resume {run_dir}: no {CONFIG_FILE} there; pass the folder of a clinseq run")
        if latest_checkpoint(run_dir) is None:
            raise ConfigError(
                f"--resume {run_dir}: the run saved no checkpoint yet, so there is nothing to resume; delete "
                f"{run_dir} and start the run again (or start it with another --out)"
            )
        saved = load_config(saved_file)
        if config_path is not None:
            wanted = load_config(config_path, profile=profile, overrides=overrides)
        else:
            wanted = load_config(saved_file, overrides=overrides)
        wanted.run.out_dir = str(run_dir)
        saved.run.out_dir = str(run_dir)
        diffs = config_diff(saved, wanted, ignore=RESUME_MAY_CHANGE)
        if diffs:
            raise ConfigError(
                f"--resume {run_dir}: the config differs from the one the run was started with, so the "
                "resumed run could not continue it exactly:\n  "
                + "\n  ".join(diffs)
                + "\nstart a new run (--out) "
                "to change these; only " + ", ".join(RESUME_MAY_CHANGE) + " may change on resume"
            )
        wanted.source_path = wanted.source_path or str(saved_file)
        return wanted, True
    if config_path is None:
        raise ConfigError("pass a config file (e.g. recipes/ptbxl/pclr.yaml) or --resume RUN_DIR")
    config = load_config(config_path, profile=profile, overrides=overrides)
    if out is not None:
        config.run.out_dir = str(out)
    run_dir = config.run_dir()
    _check_not_running(run_dir)
    if latest_checkpoint(run_dir) is not None:
        raise ConfigError(
            f"{run_dir} already holds a run with checkpoints; continue it with --resume "
            f"{run_dir}, or pass another --out RUN_DIR"
        )
    used = [name for name in RUN_FILES if (run_dir / name).exists()]
    if used:
        raise ConfigError(
            f"{run_dir} already holds files of an earlier run ({', '.join(used)}) but no checkpoint to "
            f"resume from; a new run there would mix two runs: delete {run_dir} (or those files) to start "
            "afresh, or pass another --out RUN_DIR"
        )
    return config, False


#: What a run writes into its folder; a new run refuses a folder that holds any of them.
RUN_FILES = (CONFIG_FILE, "metrics.jsonl", "checkpoints")
#: The lock file of a run folder (held by rank 0 while the run writes; removed at its end).
RUN_LOCK = "run.lock"


def _check_not_running(run_dir: Path) -> None:
    """Raise LockHeldError (naming the holder) when a live run holds the folder's lock."""
    if (run_dir / RUN_LOCK).exists():
        FolderLock(run_dir / RUN_LOCK, f"run folder {run_dir}").acquire().release()


def lock_run_folder(run_dir: str | Path) -> FolderLock:
    """Take the run folder's exclusive lock (rank 0, before anything is written into it): a second run
    on the same folder, new or resumed, fails at once naming the holder. Release it when the run ends
    (a killed run's lock is released by the kernel)."""
    run_dir = Path(run_dir)
    return FolderLock(run_dir / RUN_LOCK, f"run folder {run_dir}").acquire()


def load_recipe(config: PretrainConfig) -> ModuleType:
    """Import the recipe script named by ``config.recipe`` (relative to the config file)."""
    path = config.recipe_path()
    if not path.is_file():
        raise ConfigError(
            f"recipe script {path} not found (config key recipe={config.recipe!r}, relative to "
            f"{config.source_path}); keep the config beside the recipes/ scripts or pass "
            "--set recipe=/path/to/recipes/pretrain.py"
        )
    name = f"clinseq_recipe_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import recipe script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise ConfigError(f"recipe script {path} defines no run(config, resume=False) function")
    return module


def run_recipe(config: PretrainConfig, resume: bool = False) -> Any:
    """Run the recipe script of ``config`` (what ``clinseq pretrain`` does after resolving the config)."""
    return load_recipe(config).run(config, resume=resume)
