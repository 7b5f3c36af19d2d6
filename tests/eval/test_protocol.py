"""The whole protocol on the real PTB-XL subset: folds, nested label fractions, CIs, JSON, table, plot."""

from __future__ import annotations

import json
import sys

import numpy as np
import polars as pl
import pytest
import torch

from clinseq.errors import ConfigError
from clinseq.eval import (
    EncoderFeatures,
    EvalOptions,
    FeatureTable,
    evaluate,
    extract_embeddings,
    format_table,
    get_task,
    plot_auroc_vs_label_fraction,
    ptbxl_task_labels,
)
from clinseq.models import ResNet1d

LABEL_SET = "superdiagnostic"
TASK = f"ptbxl/{LABEL_SET}"
QUIET = {"progress": False, "print_table": False}


def _encoder(seed: int = 0) -> ResNet1d:
    torch.manual_seed(seed)
    return ResNet1d(12, widths=(4, 8), downsample=(4,), kernel_size=8)


def _folds(store) -> pl.DataFrame:
    """Labelled recordings of the task with patient and fold, straight from the store's columns."""
    return store.recordings.filter(pl.col(f"labels_{LABEL_SET}").list.len() > 0).select(
        "recording_id", "patient_id", "strat_fold", f"labels_{LABEL_SET}"
    )


def _features(z: np.ndarray, recording_ids: np.ndarray) -> FeatureTable:
    return FeatureTable(
        pl.DataFrame({"recording_id": recording_ids, "embedding": list(z.astype(np.float32))})
    )


@pytest.fixture(scope="module")
def evaluated(ptbxl_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_run")
    encoder = _encoder()
    options = EvalOptions(fractions=(0.01, 0.1, 1.0), seeds=(3,), n_boot=200, **QUIET)
    result = evaluate({"random init": encoder}, ptbxl_store, TASK, options, out_dir=out)
    return encoder, result.reports[3]["random init"], out


def test_report_numbers_class_counts_and_files(ptbxl_store, evaluated) -> None:
    _, report, out = evaluated
    folds = _folds(ptbxl_store)
    test = folds.filter(pl.col("strat_fold") == 10)
    test_labels = test.explode(f"labels_{LABEL_SET}")[f"labels_{LABEL_SET}"]
    positives = test_labels.value_counts()
    both = sorted(c for c, n in positives.iter_rows() if 0 < n < test.height)
    assert report.task == TASK and report.protocol == "split"
    assert report.classes == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert report.evaluated_classes == both
    assert report.n_test_examples == test.height
    assert report.n_test_subjects == test["patient_id"].n_unique()
    assert report.n_val_examples == folds.filter(pl.col("strat_fold") == 9).height
    assert [r.fraction for r in report.results] == [0.01, 0.1, 1.0]
    for r in report.results:
        for ci in (r.auroc, r.auprc):
            assert 0.0 <= ci.low <= ci.point <= ci.high <= 1.0
            assert ci.n_boot == 200
        assert r.metrics.n_classes_evaluated == len(both)
        assert r.C in (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)

    saved = json.loads((out / "seed3" / "eval_ptbxl_superdiagnostic.json").read_text())
    mine = saved["reports"]["random init"]
    assert mine["n_classes_evaluated"] == len(both) and len(mine["results"]) == 3
    assert mine["results"][2]["macro_auroc"]["point"] == pytest.approx(report.results[2].auroc.point)
    png = out / "seed3" / "auroc_ptbxl_superdiagnostic.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_label_fractions_are_nested_training_patients_without_leakage(ptbxl_store, evaluated) -> None:
    _, report, _ = evaluated
    folds = _folds(ptbxl_store)
    train_patients = set(folds.filter(pl.col("strat_fold") <= 8)["patient_id"].to_list())
    held_out = set(folds.filter(pl.col("strat_fold") >= 9)["patient_id"].to_list())
    previous: set[int] = set()
    for r in report.results:
        chosen = set(r.train_subject_ids.tolist())
        assert chosen <= train_patients and not chosen & held_out
        assert previous <= chosen  # 1 % ⊂ 10 % ⊂ 100 %
        assert r.n_train_subjects == len(chosen)
        previous = chosen
    assert previous == train_patients  # 100 % = every labelled training patient
    # fractions of the training patients that have a label for the task
    assert [r.n_train_subjects for r in report.results] == [
        int(np.ceil(f * len(train_patients))) for f in (0.01, 0.1, 1.0)
    ]


def test_features_holding_the_label_score_one_and_noise_chance(ptbxl_store) -> None:
    """The plumbing check: labels → folds → probe → metrics, with features that contain the answer."""
    labels = ptbxl_task_labels(ptbxl_store, LABEL_SET)
    rng = np.random.default_rng(0)
    informative = labels.y + 0.1 * rng.normal(size=labels.y.shape)
    noise = rng.normal(size=(len(labels.y), 16))
    featurizers = {
        "good": _features(informative, labels.recording_ids),
        "bad": _features(noise, labels.recording_ids),
    }
    result = evaluate(featurizers, ptbxl_store, TASK, EvalOptions(fractions=(1.0,), n_boot=200, **QUIET))
    good, bad = result.reports[0]["good"], result.reports[0]["bad"]
    assert good.results[0].auroc.point > 0.98 and good.results[0].auroc.low > 0.95
    chance = bad.results[0].auroc
    assert chance.low < 0.5 < chance.high and abs(chance.point - 0.5) < 0.12


def test_precomputed_features_equal_the_encoder_and_table(ptbxl_store, evaluated) -> None:
    encoder, report, _ = evaluated
    labels = ptbxl_task_labels(ptbxl_store, LABEL_SET)
    z = extract_embeddings(encoder, ptbxl_store, labels.recording_ids, progress=False)
    options = EvalOptions(fractions=(0.01, 0.1, 1.0), seeds=(3,), n_boot=200, **QUIET)
    same = evaluate({"copy": _features(z, labels.recording_ids)}, ptbxl_store, TASK, options).reports[3][
        "copy"
    ]
    for a, b in zip(report.results, same.results, strict=True):
        assert a.auroc.point == pytest.approx(b.auroc.point, abs=1e-6)
        assert (a.auroc.low, a.auroc.high) == pytest.approx((b.auroc.low, b.auroc.high), abs=1e-6)
    table = format_table({"random init": report, "copy": same})
    lines = table.splitlines()
    assert "macro AUROC" in lines[0] and f"{len(report.evaluated_classes)}/5 classes" in lines[0]
    assert "Δ random init − copy" in lines[1] and len(lines) == 2 + 3
    assert "+0.000 [+0.000, +0.000]" in lines[4]  # the same model: zero paired difference


def test_two_encoders_print_and_write(ptbxl_store, tmp_path, capsys) -> None:
    options = EvalOptions(fractions=(1.0,), n_boot=50, progress=False, C=0.01)
    result = evaluate(
        {"a": _encoder(1), "b": _encoder(2)}, ptbxl_store, "ptbxl/rhythm", options, out_dir=tmp_path
    )
    printed = capsys.readouterr().out
    assert "ptbxl/rhythm" in printed and "Δ a − b" in printed and "macro AUPRC" in printed
    saved = json.loads((tmp_path / "seed0" / "eval_ptbxl_rhythm.json").read_text())
    assert saved["baseline"] == "b" and set(saved["reports"]) == {"a", "b"}
    reports = result.reports[0]
    diff = saved["differences"]["a"]["1"]["auroc"]["point"]
    assert diff == pytest.approx(reports["a"].results[0].auroc.point - reports["b"].results[0].auroc.point)
    assert (tmp_path / "seed0" / "auroc_ptbxl_rhythm.png").exists()
    assert reports["a"].results[0].C == 0.01 and reports["a"].results[0].details["val_auroc_by_C"] == {}


def test_seeds_share_one_embedding_per_encoder_and_equal_separate_runs(
    ptbxl_store, tmp_path, monkeypatch
) -> None:
    import clinseq.eval.features as features_module

    embedded = []
    extract = features_module.extract_embeddings

    def counting(encoder, *args, **kwargs):
        embedded.append(encoder)
        return extract(encoder, *args, **kwargs)

    monkeypatch.setattr(features_module, "extract_embeddings", counting)
    encoders = {"a": _encoder(1), "b": _encoder(2)}
    over = evaluate(
        encoders, ptbxl_store, TASK, EvalOptions(fractions=(0.1, 1.0), seeds=(0, 5), n_boot=50, **QUIET),
        out_dir=tmp_path / "over",
    )  # fmt: skip
    assert embedded == [encoders["a"], encoders["b"]]  # once per encoder, for both seeds and fractions
    for seed in (0, 5):
        options = EvalOptions(fractions=(0.1, 1.0), seeds=(seed,), n_boot=50, **QUIET)
        single = evaluate(encoders, ptbxl_store, TASK, options, out_dir=tmp_path / "single")
        assert json.dumps({n: r.to_dict() for n, r in over.reports[seed].items()}) == json.dumps(
            {n: r.to_dict() for n, r in single.reports[seed].items()}
        )
        name = "eval_ptbxl_superdiagnostic.json"
        assert (tmp_path / "over" / f"seed{seed}" / name).read_bytes() == (
            tmp_path / "single" / f"seed{seed}" / name
        ).read_bytes()
    assert len(embedded) == 2 + 2 * 2  # the separate runs embed again, each of them
    drawn = [set(over.reports[s]["a"].result(0.1).train_subject_ids.tolist()) for s in (0, 5)]
    assert drawn[0] != drawn[1]  # the seeds do draw different label subsets
    with pytest.raises(ConfigError, match="seeds must differ"):
        EvalOptions(seeds=[1, 1])


def test_fine_tune_method(ptbxl_store) -> None:
    options = EvalOptions(
        fractions=(0.1,), n_boot=50, method="fine_tune", finetune={"epochs": 3, "lr": 1e-2}, **QUIET
    )
    report = evaluate({"x": _encoder()}, ptbxl_store, TASK, options).reports[0]["x"]
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
        EvalOptions(fractions=(0.0, 1.0))
    with pytest.raises(ConfigError, match="method"):
        EvalOptions(method="knn")
    with pytest.raises(ConfigError, match="finetune options"):
        EvalOptions(finetune={"epochs": 1})
    labels = ptbxl_task_labels(ptbxl_store, LABEL_SET)
    with pytest.raises(ConfigError, match="features table lacks 1"):
        evaluate(
            {"f": _features(np.zeros((len(labels.y) - 1, 2)), labels.recording_ids[1:])}, ptbxl_store, TASK
        )
    with pytest.raises(ConfigError, match="baseline"):
        evaluate({"a": enc}, ptbxl_store, TASK, EvalOptions(baseline="b"))
    with pytest.raises(ConfigError, match="did you mean 'ptbxl/superdiagnostic'"):
        get_task("ptbxl/superdiag")
    with pytest.raises(ConfigError, match="reads eegmat stores"):
        evaluate({"a": enc}, ptbxl_store, "eegmat/condition")
    with pytest.raises(ConfigError, match="returned shape"):
        evaluate({"a": lambda store, examples: np.zeros((2, 2))}, ptbxl_store, TASK)
    assert isinstance(EncoderFeatures(enc), EncoderFeatures)
