"""The logger interface: metrics.jsonl always, TensorBoard written and read back with its own event reader,
wandb/MLflow when installed (local file store / offline mode), a missing tracker reported once."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest

from clinseq.errors import ConfigError
from clinseq.train import loggers as loggers_module
from clinseq.train.loggers import (
    JsonlLogger,
    Loggers,
    MetricLogger,
    TensorBoardLogger,
    build_loggers,
    package_versions,
    run_info,
)

CONFIG = {"run": {"name": "t", "seed": 3}, "optim": {"lr": 0.001, "betas": [0.9, 0.99]}}
ROWS = [
    {"task": "ptbxl/superdiagnostic", "encoder": "pretrained", "fraction": 0.1, "auroc": 0.71},
    {"task": "ptbxl/superdiagnostic", "encoder": "random init", "fraction": 0.1, "auroc": 0.62},
]


def _log_some(loggers: Loggers) -> None:
    loggers.log_config(CONFIG, run_info())
    for step in (2, 4, 6):
        loggers.log_metrics(step, {"step": step, "loss": 1.0 / step, "lr": 1e-3 * step, "time": 1.5e9})
    loggers.log_table("eval/ptbxl", ROWS)
    loggers.close()


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Each test sees the 'said once' state of a new process."""
    monkeypatch.setattr(loggers_module, "_WARNED", set())


def _event_reader(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _text(acc, tag: str) -> str:
    return acc.Tensors(tag)[0].tensor_proto.string_val[0].decode()


def test_jsonl_and_tensorboard_are_written_and_read_back(tmp_path: Path, fresh_warnings) -> None:
    pytest.importorskip("tensorboard", reason="the dev extra installs tensorboard")
    loggers = build_loggers(["jsonl", "tensorboard"], tmp_path)
    assert loggers.names == ["jsonl", "tensorboard"]
    assert all(isinstance(lg, MetricLogger) for lg in loggers.loggers)
    _log_some(loggers)

    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4, 6]
    assert [x["loss"] for x in lines] == [0.5, 0.25, 1 / 6]
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["packages"]["torch"] and info["packages"]["clinseq"]
    assert info["git"] is None or len(info["git"]["commit"]) == 40
    assert json.loads((tmp_path / "tables" / "eval_ptbxl.json").read_text()) == ROWS

    acc = _event_reader(tmp_path / "tensorboard")
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [2, 4, 6]
    assert [e.value for e in loss] == pytest.approx([0.5, 0.25, 1 / 6])
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx([2e-3, 4e-3, 6e-3])
    assert "train/time" not in acc.Tags()["scalars"] and "train/step" not in acc.Tags()["scalars"]
    assert "lr: 0.001" in _text(acc, "config/text_summary")
    assert '"torch"' in _text(acc, "run_info/text_summary")
    table = _text(acc, "eval/ptbxl/text_summary")
    assert "| task | encoder | fraction | auroc |" in table and "| random init | 0.1 | 0.62 |" in table


def test_tensorboard_resume_purges_the_interrupted_steps(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    first = TensorBoardLogger(tmp_path)
    for step in (1, 2, 3, 4):
        first.log_metrics(step, {"loss": float(step)})
    first.close()
    resumed = TensorBoardLogger(tmp_path, resume_step=2)  # the checkpoint was at step 2
    for step in (3, 4):
        resumed.log_metrics(step, {"loss": 10.0 * step})
    resumed.close()
    loss = _event_reader(tmp_path / "tensorboard").Scalars("train/loss")
    assert [(e.step, e.value) for e in loss] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]


def test_an_absent_tracker_is_reported_once_and_the_others_carry_on(
    tmp_path: Path, monkeypatch, fresh_warnings
) -> None:
    # An uninstalled package: the import system refuses it (as when it is not installed).
    for name in ("tensorboard", "wandb", "mlflow"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.warns(UserWarning) as caught:
        first = build_loggers(["jsonl", "tensorboard", "wandb", "mlflow"], tmp_path / "a")
        second = build_loggers(["jsonl", "tensorboard", "wandb", "mlflow"], tmp_path / "b")
    messages = [str(w.message) for w in caught]
    for name in ("tensorboard", "wandb", "mlflow"):
        assert sum(f"run.loggers: {name} is chosen but" in m for m in messages) == 1, messages
    assert len(messages) == 3
    assert first.names == second.names == ["jsonl"]
    _log_some(first)
    assert len((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()) == 3
    assert not (tmp_path / "a" / "tensorboard").exists()


def test_only_rank_0_logs(tmp_path: Path) -> None:
    loggers = build_loggers(["jsonl", "tensorboard"], tmp_path, is_main=False)
    assert not loggers and loggers.names == []
    _log_some(loggers)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_tracker_is_dropped_and_the_others_carry_on(tmp_path: Path) -> None:
    class Broken:
        name = "broken"

        def log_metrics(self, step, metrics):
            raise ConnectionError("tracking server unreachable")

        def close(self):
            pass

    loggers = Loggers([Broken(), JsonlLogger(tmp_path)])
    with pytest.warns(UserWarning, match="logger broken failed"):
        loggers.log_metrics(1, {"loss": 1.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loggers.log_metrics(2, {"loss": 0.5})
    assert loggers.names == ["jsonl"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_unknown_logger_name_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown logger.*comet.*jsonl"):
        build_loggers(["jsonl", "comet"], tmp_path)


def test_versions_name_the_installed_packages() -> None:
    versions = package_versions()
    import torch

    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"] == torch.__version__
    assert "not-a-package" not in package_versions(("not-a-package",))


def test_mlflow_local_file_store(tmp_path: Path, fresh_warnings) -> None:
    mlflow = pytest.importorskip("mlflow", reason="mlflow is optional (pip install mlflow-skinny)")
    uri = (tmp_path / "mlruns").as_uri()
    loggers = build_loggers(["mlflow"], tmp_path, run_name="tiny", project="clinseq-test", tracking_uri=uri)
    assert loggers.names == ["mlflow"]
    run_id = loggers.get("mlflow").run_id
    _log_some(loggers)
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.001" and run.data.params["run.seed"] == "3"
    assert run.data.tags["version.torch"]
    history = client.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(2, 0.5), (4, 0.25), (6, pytest.approx(1 / 6))]
    table = Path(client.download_artifacts(run_id, "tables/eval_ptbxl.json", str(tmp_path / "dl")))
    assert json.loads(table.read_text()) == ROWS


def test_wandb_offline(tmp_path: Path, monkeypatch, fresh_warnings) -> None:
    pytest.importorskip("wandb", reason="wandb is optional")
    monkeypatch.setenv("WANDB_SILENT", "true")
    loggers = build_loggers(
        ["wandb"], tmp_path, run_name="tiny", project="clinseq-test", wandb_mode="offline"
    )
    assert loggers.names == ["wandb"]
    run = loggers.get("wandb").run
    _log_some(loggers)
    assert run.config["optim"]["lr"] == 0.001
    files = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    assert (tmp_path / "wandb_id").read_text().strip() in files[0].name
