"""The whole protocol on the real PTB-XL subset: folds, nested label fractions, CIs, JSON, table, plot."""

from __future__ import annotations

import json
import sys

import numpy as np
import polars as pl
import pytest
import torch

from clinseq.eval import (
    compare_encoders,
    compare_encoders_over_seeds,
    evaluate_encoder,
    evaluate_features,
    extract_embeddings,
    format_table,
    plot_auroc_vs_label_fraction,
    ptbxl_task_labels,
)
from clinseq.models import ResNet1d
from clinseq.utils import ConfigError

TASK = "superdiagnostic"


def _encoder(seed: int = 0) -> ResNet1d:
    torch.manual_seed(seed)
    return ResNet1d(12, widths=(4, 8), downsample=(4,), kernel_size=8)


def _folds(store) -> pl.DataFrame:
    """Labelled recordings of the task with patient and fold, straight from the store's columns."""
    return store.recordings.filter(pl.col(f"labels_{TASK}").list.len() > 0).select(
        "recording_id", "patient_id", "strat_fold", f"labels_{TASK}"
    )


@pytest.fixture(scope="module")
def evaluated(ptbxl_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_run")
    encoder = _encoder()
    report = evaluate_encoder(
        encoder,
        ptbxl_store,
        TASK,
        (0.01, 0.1, 1.0),
        seed=3,
        n_boot=200,
        out_dir=out,
        name="random init",
        progress=False,
    )
    return encoder, report, out


def test_report_numbers_class_counts_and_files(ptbxl_store, evaluated) -> None:
    _, report, out = evaluated
    folds = _folds(ptbxl_store)
    test = folds.filter(pl.col("strat_fold") == 10)
    test_labels = test.explode(f"labels_{TASK}")[f"labels_{TASK}"]
    positives = test_labels.value_counts()
    both = sorted(c for c, n in positives.iter_rows() if 0 < n < test.height)
    assert report.classes == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert report.evaluated_classes == both
    assert report.n_test_recordings == test.height
    assert report.n_test_patients == test["patient_id"].n_unique()
    assert report.n_val_recordings == folds.filter(pl.col("strat_fold") == 9).height
    assert [r.fraction for r in report.results] == [0.01, 0.1, 1.0]
    for r in report.results:
        for ci in (r.auroc, r.auprc):
            assert 0.0 <= ci.low <= ci.point <= ci.high <= 1.0
            assert ci.n_boot == 200
        assert r.metrics.n_classes_evaluated == len(both)
        assert r.C in (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)

    saved = json.loads((out / f"eval_random_init_{TASK}.json").read_text())
    assert saved["n_classes_evaluated"] == len(both) and len(saved["results"]) == 3
    assert saved["results"][2]["macro_auroc"]["point"] == pytest.approx(report.results[2].auroc.point)
    assert (out / "auroc_vs_label_fraction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_label_fractions_are_nested_training_patients_without_leakage(ptbxl_store, evaluated) -> None:
    _, report, _ = evaluated
    folds = _folds(ptbxl_store)
    train_patients = set(folds.filter(pl.col("strat_fold") <= 8)["patient_id"].to_list())
    held_out = set(folds.filter(pl.col("strat_fold") >= 9)["patient_id"].to_list())
    previous: set[int] = set()
    for r in report.results:
        chosen = set(r.train_patient_ids.tolist())
        assert chosen <= train_patients and not chosen & held_out
        assert previous <= chosen  # 1 % ⊂ 10 % ⊂ 100 %
        assert r.n_train_patients == len(chosen)
        previous = chosen
    assert previous == train_patients  # 100 % = every labelled training patient
    # fractions of the training patients that have a label for the task
    assert [r.n_train_patients for r in report.results] == [
        int(np.ceil(f * len(train_patients))) for f in (0.01, 0.1, 1.0)
    ]


def test_features_holding_the_label_score_one_and_noise_chance(ptbxl_store) -> None:
    """The plumbing check: labels → folds → probe → metrics, with features that contain the answer."""
    labels = ptbxl_task_labels(ptbxl_store, TASK)
    rng = np.random.default_rng(0)
    informative = labels.y + 0.1 * rng.normal(size=labels.y.shape)
    noise = rng.normal(size=(len(labels.y), 16))
    good = evaluate_features(informative, labels.recording_ids, ptbxl_store, TASK, (1.0,), n_boot=200)
    bad = evaluate_features(noise, labels.recording_ids, ptbxl_store, TASK, (1.0,), n_boot=200)
    assert good.results[0].auroc.point > 0.98 and good.results[0].auroc.low > 0.95
    chance = bad.results[0].auroc
    assert chance.low < 0.5 < chance.high and abs(chance.point - 0.5) < 0.12


def test_evaluate_features_matches_evaluate_encoder_and_table(ptbxl_store, evaluated) -> None:
    encoder, report, _ = evaluated
    labels = ptbxl_task_labels(ptbxl_store, TASK)
    z = extract_embeddings(encoder, ptbxl_store, labels.recording_ids, progress=False)
    same = evaluate_features(z, labels.recording_ids, ptbxl_store, TASK, (0.01, 0.1, 1.0), seed=3, n_boot=200)
    for a, b in zip(report.results, same.results, strict=True):
        assert a.auroc.point == pytest.approx(b.auroc.point, abs=1e-6)
        assert (a.auroc.low, a.auroc.high) == pytest.approx((b.auroc.low, b.auroc.high), abs=1e-6)
    same.name = "copy"
    table = format_table({"random init": report, "copy": same})
    lines = table.splitlines()
    assert "macro AUROC" in lines[0] and f"{len(report.evaluated_classes)}/5 classes" in lines[0]
    assert "Δ random init − copy" in lines[1] and len(lines) == 2 + 3
    assert "+0.000 [+0.000, +0.000]" in lines[4]  # the same model: zero paired difference


def test_compare_encoders_prints_and_writes(ptbxl_store, tmp_path, capsys) -> None:
    reports = compare_encoders(
        {"a": _encoder(1), "b": _encoder(2)},
        ptbxl_store,
        "rhythm",
        (1.0,),
        n_boot=50,
        out_dir=tmp_path,
        progress=False,
        C=0.01,  # evaluate_encoder options pass through
    )
    printed = capsys.readouterr().out
    assert "PTB-XL rhythm" in printed and "Δ a − b" in printed and "macro AUPRC" in printed
    saved = json.loads((tmp_path / "eval_rhythm.json").read_text())
    assert saved["baseline"] == "b" and set(saved["reports"]) == {"a", "b"}
    diff = saved["differences"]["a"]["1"]["auroc"]["point"]
    assert diff == pytest.approx(reports["a"].results[0].auroc.point - reports["b"].results[0].auroc.point)
    assert (tmp_path / "auroc_vs_label_fraction.png").exists()
    assert reports["a"].results[0].C == 0.01 and reports["a"].results[0].details["val_auroc_by_C"] == {}


def test_seeds_share_one_embedding_per_encoder_and_equal_separate_runs(
    ptbxl_store, tmp_path, monkeypatch
) -> None:
    import clinseq.eval.report as report_module

    embedded = []
    extract = report_module.extract_embeddings

    def counting(encoder, *args, **kwargs):
        embedded.append(encoder)
        return extract(encoder, *args, **kwargs)

    monkeypatch.setattr(report_module, "extract_embeddings", counting)
    encoders = {"a": _encoder(1), "b": _encoder(2)}
    options = {"n_boot": 50, "progress": False, "print_table": False}
    over = compare_encoders_over_seeds(
        encoders, ptbxl_store, TASK, (0.1, 1.0), seeds=[0, 5], out_dir=tmp_path / "over", **options
    )
    assert embedded == [encoders["a"], encoders["b"]]  # once per encoder, for both seeds and fractions
    for seed in (0, 5):
        single = compare_encoders(
            encoders, ptbxl_store, TASK, (0.1, 1.0), seed=seed, out_dir=tmp_path / f"single{seed}", **options
        )
        assert json.dumps({n: r.to_dict() for n, r in over[seed].items()}) == json.dumps(
            {n: r.to_dict() for n, r in single.items()}
        )
        name = f"eval_{TASK}.json"
        assert (tmp_path / "over" / f"seed{seed}" / name).read_bytes() == (
            tmp_path / f"single{seed}" / name
        ).read_bytes()
    assert len(embedded) == 2 + 2 * 2  # the separate runs embed again, each of them
    drawn = [set(over[s]["a"].result(0.1).train_patient_ids.tolist()) for s in (0, 5)]
    assert drawn[0] != drawn[1]  # the seeds do draw different label subsets
    with pytest.raises(ConfigError, match="seeds must differ"):
        compare_encoders_over_seeds(encoders, ptbxl_store, TASK, seeds=[1, 1])


def test_fine_tune_method(ptbxl_store) -> None:
    report = evaluate_encoder(
        _encoder(),
        ptbxl_store,
        TASK,
        (0.1,),
        method="fine_tune",
        n_boot=50,
        progress=False,
        finetune_options={"epochs": 3, "lr": 1e-2},
    )
    r = report.results[0]
    assert report.method == "fine_tune" and r.C is None and 1 <= r.details["best_epoch"] <= 3
    assert 0.0 <= r.auroc.low <= r.auroc.point <= r.auroc.high <= 1.0


def test_plot_is_skipped_without_matplotlib(evaluated, tmp_path, monkeypatch, capsys) -> None:
    _, report, _ = evaluated
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import now raises ImportError
    assert plot_auroc_vs_label_fraction({"x": report}, tmp_path / "p.png") is None
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert not (tmp_path / "p.png").exists()


def test_bad_input_raises_config_error(ptbxl_store) -> None:
    enc = _encoder()
    with pytest.raises(ConfigError, match="fractions"):
        evaluate_encoder(enc, ptbxl_store, TASK, (0.0, 1.0), progress=False)
    with pytest.raises(ConfigError, match="method"):
        evaluate_encoder(enc, ptbxl_store, TASK, method="knn", progress=False)
    with pytest.raises(ConfigError, match="finetune_options"):
        evaluate_encoder(enc, ptbxl_store, TASK, finetune_options={"epochs": 1}, progress=False)
    labels = ptbxl_task_labels(ptbxl_store, TASK)
    with pytest.raises(ConfigError, match="features lack"):
        evaluate_features(np.zeros((3, 2)), labels.recording_ids[:3], ptbxl_store, TASK)
    with pytest.raises(ConfigError, match="baseline"):
        compare_encoders({"a": enc}, ptbxl_store, TASK, baseline="b")
