"""The MEDS-DEV model entry (recipes/meds_dev/clinseq/model.yaml) end to end on the real MIMIC-IV demo:
its three commands, formatted as the MEDS-DEV harness formats them, run in order; the predictions pass
meds-evaluation's schema and scoring."""

from __future__ import annotations

import shlex
from pathlib import Path

import polars as pl
import pytest
import yaml

from clinseq.cli import main as clinseq_main

pytest.importorskip("aces", reason="needs ACES: pip install -e '.[meds]' (the dev extra brings it)")
meds_evaluation_schema = pytest.importorskip(
    "meds_evaluation.schema", reason="needs meds-evaluation ([meds])"
)

MODEL_DIR = Path(__file__).resolve().parents[2] / "recipes" / "meds_dev" / "clinseq"


def _run(command: str) -> None:
    """Run one model.yaml command (``clinseq …``) in this process, as the shell would run it."""
    argv = shlex.split(command)
    assert argv[0] == "clinseq", command
    assert clinseq_main(argv[1:]) == 0, command


@pytest.mark.slow
def test_meds_dev_model_commands_run_end_to_end(mimic_store: Path, tmp_path: Path) -> None:
    model = yaml.safe_load((MODEL_DIR / "model.yaml").read_text())
    commands = model["commands"]
    dataset_dir = mimic_store / "events"  # a store's events/ folder is a MEDS v0.4 dataset (100 subjects)
    labels_dir = tmp_path / "labels"
    assert (
        clinseq_main(
            [
                "meds",
                "labels",
                "mortality/in_icu/first_24h",
                str(dataset_dir),
                str(labels_dir / "0.parquet"),
            ]
        )
        == 0
    )
    unsup, train, pred = tmp_path / "unsupervised", tmp_path / "train", tmp_path / "predict"
    common = {"dataset_dir": dataset_dir, "model_dir": MODEL_DIR, "demo": True}
    # The model's own command, with fewer steps than its demo (smoke) profile, as the smoke-recipe tests do.
    _run(commands["unsupervised"]["train"].format(output_dir=unsup, **common) + " --set train.max_steps=3")
    assert (unsup / "run" / "config.yaml").is_file() and (unsup / "store" / "manifest.json").is_file()
    run_config = yaml.safe_load((unsup / "run" / "config.yaml").read_text())
    assert run_config["data"]["split"] == "store"  # tuning / held-out subjects never pretrained on
    supervised = commands["supervised"]
    _run(
        supervised["train"].format(
            labels_dir=labels_dir, output_dir=train, model_initialization_dir=unsup, **common
        )
    )
    _run(
        supervised["predict"].format(
            labels_dir=labels_dir, output_dir=pred, model_initialization_dir=train, split="held_out", **common
        )
    )
    predictions = pl.read_parquet(pred / "predictions.parquet")
    meds_evaluation_schema.PredictionSchema.align(predictions.to_arrow())
    held_out = pl.read_parquet(dataset_dir / "metadata" / "subject_splits.parquet").filter(
        pl.col("split") == "held_out"
    )
    labels = pl.read_parquet(labels_dir)
    expected = labels.filter(pl.col("subject_id").is_in(held_out["subject_id"].to_list()))
    assert predictions.select(expected.columns).sort(expected.columns).equals(expected.sort(expected.columns))
    assert predictions["predicted_boolean_probability"].is_between(0, 1).all()
    assert (
        clinseq_main(
            ["meds", "evaluate", str(pred / "predictions.parquet"), "--out", str(tmp_path / "m.json")]
        )
        == 0
    )
    assert (tmp_path / "m.json").is_file()
