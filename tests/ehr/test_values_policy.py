"""EHR values policy (issue 14.10, data_cards/mimic_iv.md): nothing is lost silently. On a copy of the
demo's patients and first lab rows, edited: inf / nan / overflowing / non-numeric ``valuenum``,
duplicated ``patients`` rows, events of a subject absent from ``patients``; and a MEDS file with
time-zone-aware times. Also: a conversion that finds none of its tables is an error (14.7)."""

from __future__ import annotations

import csv
import gzip
import io
import shutil
from pathlib import Path

import polars as pl
import pytest

from clinseq.cli import main
from clinseq.errors import SourceError
from clinseq.io.meds import import_meds
from clinseq.io.mimic_iv import convert_mimic_iv

N_LAB_ROWS = 40


def _rows(path: Path, n: int | None = None) -> list[list[str]]:
    with gzip.open(path, "rt", newline="") as f:
        rows = list(csv.reader(f))
    return rows if n is None else rows[: n + 1]


def _write(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_text(buffer.getvalue())


@pytest.fixture
def edited_demo(demo_root: Path, tmp_path: Path) -> tuple[Path, dict]:
    patients = _rows(demo_root / "hosp" / "patients.csv.gz")
    labs = _rows(demo_root / "hosp" / "labevents.csv.gz", N_LAB_ROWS)
    header = labs[0]
    value, valuenum = header.index("value"), header.index("valuenum")
    edits = {1: "inf", 2: "nan", 3: "1e40", 4: "abc"}  # data rows whose valuenum is replaced
    for row, text in edits.items():
        labs[row][valuenum] = text
    originals = {text: labs[row][value] for row, text in edits.items()}
    absent = ["99999999", *labs[5][2:]]  # a lab row of a subject that patients does not list
    labs.append([labs[5][0] + "9", *absent])
    ph = patients[0]
    conflicting = list(patients[1])
    conflicting[ph.index("anchor_age")] = str(int(conflicting[ph.index("anchor_age")]) + 1)
    patients += [list(patients[2]), conflicting]  # one identical repeat, one conflicting row
    root = tmp_path / "mimic"
    _write(root / "hosp" / "patients.csv", patients)
    _write(root / "hosp" / "labevents.csv", labs)
    return root, {
        "originals": originals,
        "conflicting": int(patients[1][0]),
        "n_patients": len(patients) - 3,
    }


def test_values_policy_keeps_and_counts(edited_demo, tmp_path):
    root, info = edited_demo
    with pytest.warns(UserWarning, match="conflicting rows"):
        out = convert_mimic_iv(root, tmp_path / "store", tables=["patients", "labevents"], progress=False)
    import json

    manifest = json.loads((out / "manifest.json").read_text())["events"]
    lab = manifest["tables"]["labevents"]
    assert lab["source_rows"] == N_LAB_ROWS + 1
    assert lab["events"]["lab"]["numeric_kept_as_text"] == 4
    events = pl.read_parquet(out / "events" / "data" / "*.parquet").filter(
        pl.col("code").str.starts_with("LAB")
    )
    assert events.height == N_LAB_ROWS + 1  # nothing dropped
    assert events["numeric_value"].is_finite().fill_null(True).all()  # no inf/nan stored as a number
    texts = set(events["text_value"].drop_nulls())
    for text, original in info["originals"].items():
        # the value column's text was a number, so the unusable valuenum text itself is kept
        assert text in texts or f"{original} [valuenum={text}]" in texts, text
    patients = manifest["patients"]
    assert patients["duplicate_rows_identical"] == 1
    assert patients["duplicate_rows_conflicting"] == 1
    assert patients["conflicting_subject_ids"] == [info["conflicting"]]
    assert patients["subjects_with_events_not_in_patients"] == 1
    assert patients["subject_ids_not_in_patients"] == [99999999]
    assert 99999999 in events["subject_id"].to_list()
    store_patients = pl.read_parquet(out / "patients.parquet")
    assert store_patients["patient_id"].is_unique().all()
    assert store_patients.height == info["n_patients"] + 1  # the absent subject gets a row too


def test_no_table_found_is_an_error(demo_root, ptbxl_root, tmp_path, capsys):
    with pytest.raises(SourceError, match="hosp/ is itself a MIMIC-IV module folder: pass its parent"):
        convert_mimic_iv(demo_root / "hosp", tmp_path / "a", progress=False)
    assert main(["convert", "mimic-iv", str(ptbxl_root), str(tmp_path / "b"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "none of the MIMIC-IV tables asked for is here (looked for hosp/patients.csv[.gz]" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_meds_tz_aware_times_are_converted_and_counted(meds_demo_root, tmp_path):
    src = tmp_path / "meds"
    shutil.copytree(meds_demo_root, src)
    first = sorted((src / "data").rglob("*.parquet"))[0]
    frame = pl.read_parquet(first)
    naive = frame["time"]
    aware = frame.with_columns(pl.col("time").dt.replace_time_zone("America/New_York", ambiguous="earliest"))
    aware.write_parquet(first)
    with pytest.warns(UserWarning, match="time-zone-aware times converted to UTC"):
        out = import_meds(src, tmp_path / "store", progress=False)
    import json

    tz = json.loads((out / "manifest.json").read_text())["events"]["tz_aware_times"]
    rel = str(first.relative_to(src))
    assert tz == {rel: {"time_zone": "America/New_York", "events": int(naive.is_not_null().sum())}}
    events = pl.read_parquet(out / "events" / "data" / "*.parquet")
    subject = frame["subject_id"].drop_nulls()[0]
    want = (
        aware.filter(pl.col("subject_id") == subject)
        .select(pl.col("time").dt.convert_time_zone("UTC").dt.replace_time_zone(None).dt.cast_time_unit("us"))
        .drop_nulls()["time"]
        .sort()
    )
    got = events.filter(pl.col("subject_id") == subject)["time"].drop_nulls().sort()
    assert got.to_list() == want.to_list()


def test_corrupt_meds_dataset_json_is_a_clean_error(meds_demo_root, tmp_path, capsys):
    src = tmp_path / "meds"
    shutil.copytree(meds_demo_root, src)
    (src / "metadata" / "dataset.json").write_text('{"dataset_name": ')
    assert main(["convert", "meds", str(src), str(tmp_path / "store"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "dataset.json: not a readable MEDS dataset.json" in err and "Traceback" not in err
