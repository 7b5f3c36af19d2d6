"""MIMIC-IV demo → events store: counts per table, discharge-timed diagnoses, MEDS schema, bad input."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import meds
import polars as pl
import pyarrow.parquet as pq
import pytest

from clinseq.io.mimic_iv import TABLES, convert_mimic_iv
from clinseq.utils import SourceError


def _csv(root: Path, table: str) -> pl.DataFrame:
    return pl.read_csv(root / TABLES[table].folder / f"{table}.csv.gz", infer_schema=False)


def _events(store: Path) -> pl.DataFrame:
    return pl.read_parquet(store / "events" / "data" / "*.parquet")


def test_demo_has_100_subjects_and_splits(mimic_store: Path) -> None:
    patients = pl.read_parquet(mimic_store / "patients.parquet")
    assert patients.height == 100
    assert set(patients["split"].unique()) == {"train", "val", "test"}
    assert _events(mimic_store)["subject_id"].n_unique() == 100
    manifest = json.loads((mimic_store / "manifest.json").read_text())
    assert manifest["events"]["n_subjects"] == 100
    assert manifest["counts"]["recordings"] == 0


@pytest.mark.parametrize(
    ("table", "time_column", "prefix"),
    [
        ("labevents", "charttime", "LAB//"),
        ("transfers", "intime", "TRANSFER_TO//"),
        ("outputevents", "charttime", "SUBJECT_FLUID_OUTPUT//"),
        ("admissions", "edregtime", "ED_REGISTRATION"),
        ("patients", "dod", "MEDS_DEATH"),
    ],
)
def test_events_equal_source_rows_with_a_time(
    mimic_store: Path, demo_root: Path, table: str, time_column: str, prefix: str
) -> None:
    source = _csv(demo_root, table)
    usable = source.filter(pl.col(time_column).is_not_null()).height
    written = _events(mimic_store).filter(pl.col("code").str.starts_with(prefix)).height
    assert written == usable
    report = json.loads((mimic_store / "manifest.json").read_text())["events"]["tables"][table]
    assert report["source_rows"] == source.height
    kinds = report["events"]
    assert sum(k["written"] for k in kinds.values()) >= written
    assert all(k["written"] + k["dropped_no_usable_time"] == source.height for k in kinds.values())


def test_pharmacy_stop_rows_without_stoptime_are_dropped_and_counted(
    mimic_store: Path, demo_root: Path
) -> None:
    source = _csv(demo_root, "pharmacy")
    report = json.loads((mimic_store / "manifest.json").read_text())["events"]["tables"]["pharmacy"]
    n_null = source.filter(pl.col("stoptime").is_null()).height
    assert n_null > 0  # the demo has open prescriptions: the drop path is exercised
    assert report["events"]["stop"]["dropped_no_usable_time"] == n_null
    stops = _events(mimic_store).filter(pl.col("code").str.starts_with("MEDICATION//STOP//")).height
    assert stops == source.height - n_null


def test_lab_values_and_units(mimic_store: Path, demo_root: Path) -> None:
    source = _csv(demo_root, "labevents").filter(pl.col("charttime").is_not_null())
    labs = _events(mimic_store).filter(pl.col("code").str.starts_with("LAB//"))
    assert labs["numeric_value"].is_not_null().sum() == source["valuenum"].is_not_null().sum()
    assert labs["text_value"].is_not_null().sum() == source["value"].is_not_null().sum()
    first = source.row(0, named=True)
    code = f"LAB//{first['itemid']}//{first['valueuom'] or 'UNK'}"
    assert code in set(labs["code"].unique())


def test_every_diagnosis_is_timed_at_its_admissions_discharge(mimic_store: Path, demo_root: Path) -> None:
    fmt = "%Y-%m-%d %H:%M:%S"
    admissions = _csv(demo_root, "admissions").select(
        "hadm_id", "subject_id", pl.col("dischtime").str.to_datetime(fmt, time_unit="us")
    )
    expected = (
        _csv(demo_root, "diagnoses_icd")
        .join(admissions, on=["hadm_id", "subject_id"], how="inner")
        .group_by(pl.col("subject_id").cast(pl.Int64), pl.col("dischtime").alias("time"))
        .len()
        .sort("subject_id", "time")
    )
    got = (
        _events(mimic_store)
        .filter(pl.col("code").str.starts_with("DIAGNOSIS//"))
        .group_by("subject_id", "time")
        .len()
        .sort("subject_id", "time")
    )
    assert got.equals(expected)
    assert got["len"].sum() == _csv(demo_root, "diagnoses_icd").height


def test_events_pass_the_meds_schema(mimic_store: Path) -> None:
    events = mimic_store / "events"
    for shard in sorted((events / "data").glob("*.parquet")):
        meds.DataSchema.validate(pq.read_table(shard))
    meds.CodeMetadataSchema.validate(pq.read_table(events / "metadata" / "codes.parquet"))
    meds.SubjectSplitSchema.validate(pq.read_table(events / "metadata" / "subject_splits.parquet"))
    meds.DatasetMetadataSchema.validate(json.loads((events / "metadata" / "dataset.json").read_text()))
    # Every code has an entry, and dictionary descriptions were joined (labs, ICD, ICU items).
    codes = pl.read_parquet(events / "metadata" / "codes.parquet")
    assert set(_events(mimic_store)["code"].unique()) == set(codes["code"])
    described = codes.filter(pl.col("description").is_not_null())["code"]
    for prefix in ("LAB//", "DIAGNOSIS//ICD//", "PROCEDURE//ICD//", "INFUSION_START//"):
        assert described.str.starts_with(prefix).any(), prefix


def test_shards_are_sorted_and_hold_whole_subjects(demo_root: Path, tmp_path: Path) -> None:
    store = convert_mimic_iv(
        demo_root, tmp_path / "s", tables=["patients", "transfers"], subjects_per_shard=30, progress=False
    )
    shards = sorted((store / "events" / "data").glob("*.parquet"))
    assert len(shards) == 4
    seen: set[int] = set()
    for shard in shards:
        frame = pl.read_parquet(shard)
        assert frame.equals(frame.sort("subject_id", "time", "code", nulls_last=False, maintain_order=True))
        subjects = set(frame["subject_id"].unique())
        assert not subjects & seen
        seen |= subjects
    report = json.loads((store / "manifest.json").read_text())["events"]
    assert set(report["tables"]) == {"patients", "transfers"}


def test_missing_table_is_reported_and_skipped(mimic_store: Path) -> None:
    report = json.loads((mimic_store / "manifest.json").read_text())["events"]
    assert "icu/chartevents.csv[.gz]" in report["missing_tables"]  # absent from the demo copy
    assert "chartevents" not in report["tables"]


def test_static_events_have_null_time(mimic_store: Path) -> None:
    gender = _events(mimic_store).filter(pl.col("code").str.starts_with("GENDER//"))
    assert gender.height == 100
    assert gender["time"].is_null().all()


# -- bad input ------------------------------------------------------------------------------------------
def _mini_source(demo_root: Path, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "hosp").mkdir(parents=True)
    for table in ("patients", "admissions", "diagnoses_icd"):
        shutil.copy(demo_root / "hosp" / f"{table}.csv.gz", src / "hosp")
    return src


def _rewrite(path: Path, edit: Callable[[list[str]], list[str]]) -> None:
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    path.unlink()
    path.with_suffix("").write_text("\n".join(edit(lines)) + "\n")  # now a plain .csv


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f"{out.name}.tmp-*"))


def test_unparsable_timestamp_names_file_column_and_row(demo_root: Path, tmp_path: Path) -> None:
    src = _mini_source(demo_root, tmp_path)

    def edit(lines: list[str]) -> list[str]:
        fields = lines[3].split(",")
        fields[2] = "2196-02-31 25:00:00"  # admittime of data row 3
        lines[3] = ",".join(fields)
        return lines

    _rewrite(src / "hosp" / "admissions.csv.gz", edit)
    out = tmp_path / "out"
    with pytest.raises(SourceError, match=r"admissions\.csv.*'admittime', data row 3.*2196-02-31 25:00:00"):
        convert_mimic_iv(src, out, progress=False)
    _assert_nothing_written(out)
    # on_error="skip": the table is skipped, reported, and so are the tables that need its dischtime.
    store = convert_mimic_iv(src, out, on_error="skip", progress=False)
    report = json.loads((store / "manifest.json").read_text())["events"]
    assert [s["table"] for s in report["skipped_tables"]] == ["admissions", "diagnoses_icd"]
    assert "admittime" in report["skipped_tables"][0]["reason"]


def test_non_integer_subject_id(demo_root: Path, tmp_path: Path) -> None:
    src = _mini_source(demo_root, tmp_path)
    _rewrite(
        src / "hosp" / "patients.csv.gz",
        lambda lines: [lines[0], lines[1], "P123" + lines[2][8:], *lines[3:]],
    )
    out = tmp_path / "out"
    with pytest.raises(
        SourceError, match=r"patients\.csv.*'subject_id', data row 2.*'P123' is not an integer"
    ):
        convert_mimic_iv(src, out, progress=False)
    _assert_nothing_written(out)


def test_missing_required_column(demo_root: Path, tmp_path: Path) -> None:
    src = _mini_source(demo_root, tmp_path)
    _rewrite(
        src / "hosp" / "admissions.csv.gz", lambda lines: [lines[0].replace("dischtime", "disch"), *lines[1:]]
    )
    out = tmp_path / "out"
    with pytest.raises(SourceError, match=r"admissions\.csv.*missing required column\(s\) \['dischtime'\]"):
        convert_mimic_iv(src, out, progress=False)
    _assert_nothing_written(out)


def test_file_that_is_not_csv(demo_root: Path, tmp_path: Path) -> None:
    src = _mini_source(demo_root, tmp_path)
    (src / "hosp" / "patients.csv.gz").write_bytes(gzip.compress(bytes(range(256)) * 64))
    out = tmp_path / "out"
    with pytest.raises(SourceError, match=r"patients\.csv\.gz"):
        convert_mimic_iv(src, out, progress=False)
    _assert_nothing_written(out)


def test_unknown_table_name(demo_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown MIMIC-IV table"):
        convert_mimic_iv(demo_root, tmp_path / "out", tables=["labevent"], progress=False)
