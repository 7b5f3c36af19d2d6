"""Where a run's numbers go: one small logger interface, with ``metrics.jsonl`` as the default.

A :class:`MetricLogger` takes four calls: ``log_config`` once at the start (the resolved config and
:func:`run_info`: git commit, package versions, host), ``log_metrics(step, values)`` at every logging
interval, ``log_table(name, rows)`` for the evaluation tables at the end, and ``close``. Backends
(``run.loggers`` in the config, :data:`LOGGERS`):

==============  ===================================================================================
``jsonl``       ``RUN/metrics.jsonl`` (one JSON line per interval), ``RUN/run_info.json``,
                ``RUN/tables/<name>.json``; always available, the default
``tensorboard``  ``RUN/tensorboard/`` through torch's ``SummaryWriter`` (needs the ``tensorboard`` package):
                ``tensorboard --logdir RUN/tensorboard``
``wandb``       Weights & Biases (needs ``wandb``); files under ``RUN/wandb``; ``run.wandb_mode``
                ("online"/"offline", default wandb's own: the ``WANDB_MODE`` variable, else online)
``mlflow``      MLflow (needs ``mlflow`` or ``mlflow-skinny``); ``run.tracking_uri``, default
                ``file:RUN/mlruns`` (``mlflow ui --backend-store-uri RUN/mlruns``)
==============  ===================================================================================

A backend whose package is not installed is skipped with one warning (per backend and process); the
others carry on. Under DDP only rank 0 logs: :func:`build_loggers` returns an empty :class:`Loggers` on
the other ranks.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import subprocess
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from clinseq.errors import ConfigError

__all__ = [
    "LOGGERS",
    "JsonlLogger",
    "Loggers",
    "MLflowLogger",
    "MetricLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "build_loggers",
    "git_commit",
    "package_versions",
    "run_info",
]

METRICS_FILE = "metrics.jsonl"
RUN_INFO_FILE = "run_info.json"
#: Packages whose versions every run records (those installed).
PACKAGES = ("clinseq", "torch", "numpy", "polars", "pyarrow", "scikit-learn", "triton", "tensorboard",
            "wandb", "mlflow", "mlflow-skinny", "safetensors")  # fmt: skip


@runtime_checkable
class MetricLogger(Protocol):
    """One destination of a run's numbers (see the module docstring)."""

    name: str

    def log_config(self, config: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        """The resolved config (nested dicts) and :func:`run_info`, once at the start."""

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """Scalar values of one logging interval ending at optimizer step ``step``."""

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """A table (rows with the same keys), e.g. an evaluation result, under ``name``."""

    def close(self) -> None:
        """Flush and release (files, background processes)."""


# -- run information -----------------------------------------------------------------------------------
def git_commit(path: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the git checkout holding ``path`` (default: clinseq's source),
    or None outside a checkout / without git."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (absent packages left out) and Python's."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def run_info(device: Any = None, world_size: int = 1) -> dict[str, Any]:
    """What a run records besides its config: git commit, package versions, host, device, processes."""
    import torch

    info: dict[str, Any] = {
        "git": git_commit(),
        "packages": package_versions(),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "world_size": world_size,
        "device": str(device) if device is not None else None,
    }
    if device is not None and torch.device(device).type == "cuda":
        info["cuda"] = {"name": torch.cuda.get_device_name(device), "version": torch.version.cuda}
    return info


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite-or-not numeric values of ``metrics`` (bools and strings left out)."""
    return {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """``rows`` as a Markdown table (TensorBoard's text plugin renders it)."""
    if not rows:
        return "(empty)"
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


# -- backends ------------------------------------------------------------------------------------------
class JsonlLogger:
    """``RUN/metrics.jsonl`` (one line per interval, with ``step``), ``run_info.json``, ``tables/*.json``."""

    name = "jsonl"

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def log_config(self, config: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        # config.yaml is written by the recipe (with its header); run_info.json adds the rest.
        (self.run_dir / RUN_INFO_FILE).write_text(json.dumps(dict(info), indent=1, default=str))

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        with open(self.run_dir / METRICS_FILE, "a") as fh:
            fh.write(json.dumps({"step": step, **{k: v for k, v in metrics.items() if k != "step"}}) + "\n")

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        path = self.run_dir / "tables" / f"{_slug(name)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([dict(r) for r in rows], indent=1, default=str))

    def truncate(self, step: int) -> None:
        """Drop lines logged after ``step`` (an interrupted run's, logged again on resume)."""
        path = self.run_dir / METRICS_FILE
        if not path.exists():
            return
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """TensorBoard event files under ``RUN/tensorboard`` (torch's ``SummaryWriter``).

    Scalars as ``train/<name>``, the config and run information as text, tables as Markdown text. On a
    resumed run (``resume_step``) events after that step, written by the interrupted run, are purged.
    """

    name = "tensorboard"
    package = "tensorboard"

    def __init__(self, run_dir: str | Path, resume_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(run_dir) / "tensorboard"
        # Events at steps > resume_step were written after the checkpoint the run continues from.
        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge)

    def log_config(self, config: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        import yaml

        self.writer.add_text("config", "```\n" + yaml.safe_dump(dict(config), sort_keys=False) + "```", 0)
        self.writer.add_text("run_info", "```\n" + json.dumps(dict(info), indent=1, default=str) + "\n```", 0)

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in _scalars(metrics).items():
            if key not in ("step", "time"):
                self.writer.add_scalar(f"train/{key}", value, step)

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self.writer.add_text(name, _markdown(rows), 0)

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """Weights & Biases: config + run information as the run's config, metrics by step, tables as
    ``wandb.Table``. Files go under ``RUN/wandb``; ``mode`` "offline" syncs later (``wandb sync``)."""

    name = "wandb"
    package = "wandb"

    def __init__(self, run_dir: str | Path, project: str, run_name: str, mode: str | None = None) -> None:
        import wandb

        self._wandb = wandb
        self.run = wandb.init(
            project=project, name=run_name, dir=str(run_dir), mode=mode, reinit="create_new",
            resume="allow", id=_wandb_id(run_dir),
        )  # fmt: skip

    def log_config(self, config: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        self.run.config.update({**dict(config), "run_info": dict(info)}, allow_val_change=True)

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log({f"train/{k}": v for k, v in _scalars(metrics).items() if k != "step"}, step=step)

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        table = self._wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])
        self.run.log({name: table})

    def close(self) -> None:
        self.run.finish()


def _wandb_id(run_dir: str | Path) -> str:
    """A stable wandb run id per run folder (kept in ``RUN/wandb_id``), so a resumed run continues it."""
    path = Path(run_dir) / "wandb_id"
    if path.exists():
        return path.read_text().strip()
    import uuid

    run_id = uuid.uuid4().hex[:16]
    path.write_text(run_id)
    return run_id


class MLflowLogger:
    """MLflow: the flattened config as parameters, git commit and versions as tags, metrics by step,
    tables as JSON artifacts (``mlflow.log_table``). ``tracking_uri`` default ``file:RUN/mlruns``."""

    name = "mlflow"
    package = "mlflow"

    def __init__(self, run_dir: str | Path, project: str, run_name: str, tracking_uri: str | None) -> None:
        import mlflow

        self._mlflow = mlflow
        uri = tracking_uri or (Path(run_dir).resolve() / "mlruns").as_uri()
        if uri.startswith("file:"):
            # MLflow >= 3.x refuses the file store unless asked (it keeps it in maintenance mode); a local
            # run folder is what a file: URI here means.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(project)
        experiment_id = (
            experiment.experiment_id if experiment is not None else self.client.create_experiment(project)
        )
        id_file = Path(run_dir) / "mlflow_run_id"
        if id_file.exists():  # a resumed run continues its MLflow run
            self.run_id = id_file.read_text().strip()
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
            id_file.write_text(self.run_id)
        self.tracking_uri = uri

    def log_config(self, config: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        for key, value in _flatten(config).items():
            self.client.log_param(self.run_id, key[:250], str(value)[:500])
        git = info.get("git") or {}
        if git:
            self.client.set_tag(self.run_id, "mlflow.source.git.commit", git.get("commit"))
        for name, version in (info.get("packages") or {}).items():
            self.client.set_tag(self.run_id, f"version.{name}", version)
        self.client.log_dict(self.run_id, dict(info), "run_info.json")

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in _scalars(metrics).items():
            if key != "step" and math.isfinite(value):
                self.client.log_metric(self.run_id, key, value, step=step)

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self.client.log_dict(self.run_id, [dict(r) for r in rows], f"tables/{_slug(name)}.json")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# -- the set of a run's loggers ------------------------------------------------------------------------
#: ``run.loggers`` name → backend class (``jsonl`` is always available).
LOGGERS: dict[str, type] = {
    "jsonl": JsonlLogger,
    "tensorboard": TensorBoardLogger,
    "wandb": WandbLogger,
    "mlflow": MLflowLogger,
}
#: Backends already reported missing in this process (each is said once).
_WARNED: set[str] = set()


class Loggers:
    """Every logger of a run behind the one interface; empty on DDP ranks other than 0.

    A backend that raises while logging is reported once and dropped; the others carry on, so a
    tracker outage never stops training.
    """

    name = "loggers"

    def __init__(self, loggers: Sequence[MetricLogger] = ()) -> None:
        self.loggers = list(loggers)

    def __bool__(self) -> bool:
        return bool(self.loggers)

    @property
    def names(self) -> list[str]:
        return [lg.name for lg in self.loggers]

    def get(self, name: str) -> MetricLogger | None:
        return next((lg for lg in self.loggers if lg.name == name), None)

    def _each(self, call: Callable[[MetricLogger], None]) -> None:
        for logger in list(self.loggers):
            try:
                call(logger)
            except Exception as exc:  # noqa: BLE001 - a tracker must not stop training
                warnings.warn(
                    f"logger {logger.name} failed ({exc!r}); it is dropped for this run", stacklevel=3
                )
                self.loggers.remove(logger)

    def log_config(self, config: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        self._each(lambda lg: lg.log_config(config, info))

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        self._each(lambda lg: lg.log_metrics(step, metrics))

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self._each(lambda lg: lg.log_table(name, rows))

    def close(self) -> None:
        for logger in self.loggers:
            try:
                logger.close()
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"logger {logger.name} failed to close ({exc!r})", stacklevel=2)
        self.loggers = []


def _installed(package: str) -> bool:
    """Whether ``import package`` can succeed (without importing it)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def _warn_once(name: str, message: str) -> None:
    if name not in _WARNED:
        _WARNED.add(name)
        warnings.warn(message, stacklevel=3)


def build_loggers(
    names: Sequence[str],
    run_dir: str | Path,
    *,
    is_main: bool = True,
    run_name: str = "run",
    project: str = "clinseq",
    resume_step: int | None = None,
    tracking_uri: str | None = None,
    wandb_mode: str | None = None,
) -> Loggers:
    """The loggers named in ``names`` (``run.loggers``), those whose package is installed.

    Args:
        names: backends of :data:`LOGGERS`, e.g. ``["jsonl", "tensorboard"]``.
        run_dir: the run folder (files of ``jsonl``, ``tensorboard``, wandb's and the default MLflow store).
        is_main: False on DDP ranks other than 0: no logger at all.
        run_name, project: the run's and the project's (wandb project, MLflow experiment) names.
        resume_step: the step a resumed run continues from (TensorBoard drops later events).
        tracking_uri: MLflow tracking URI (default ``file:RUN/mlruns``).
        wandb_mode: "online"/"offline" (None: wandb's default).

    Raises:
        ConfigError: a name that is not a backend.
    """
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise ConfigError(f"run.loggers: unknown logger(s) {unknown}; choose from {list(LOGGERS)}")
    if not is_main:
        return Loggers()
    out: list[MetricLogger] = []
    for name in dict.fromkeys(names):
        cls = LOGGERS[name]
        package = getattr(cls, "package", None)
        if package is not None and not _installed(package):
            _warn_once(
                name,
                f"run.loggers: {name} is chosen but the {package!r} package is not installed; logging goes "
                f"on without it (pip install {package})",
            )
            continue
        try:
            if name == "jsonl":
                out.append(JsonlLogger(run_dir))
            elif name == "tensorboard":
                out.append(TensorBoardLogger(run_dir, resume_step=resume_step))
            elif name == "wandb":
                out.append(WandbLogger(run_dir, project, run_name, mode=wandb_mode))
            else:
                out.append(MLflowLogger(run_dir, project, run_name, tracking_uri))
        except Exception as exc:  # noqa: BLE001 - e.g. a tracking server out of reach
            if name == "jsonl":
                raise
            _warn_once(name, f"run.loggers: {name} could not start ({exc!r}); logging goes on without it")
    return Loggers(out)
