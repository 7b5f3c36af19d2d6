"""MIMIC-IV demo → events store: every table's rows vs its events, the official MEDS ETL, MEDS schema,
discharge-timed codes, bad input, resume."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import meds
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clinseq.errors import SourceError
from clinseq.io.mimic_iv import convert_mimic_iv
from clinseq.io.mimic_iv_tables import TABLES
from clinseq.timeline.events import EVENTS_ARROW

FMT = "%Y-%m-%d %H:%M:%S"


def _csv(root: Path, table: str) -> pl.DataFrame:
    return pl.read_csv(root / TABLES[table].folder / f"{table}.csv.gz", infer_schema=False)


def _events(store: Path) -> pl.DataFrame:
    return pl.read_parquet(store / "events" / "data" / "*.parquet")


def _manifest(store: Path) -> dict:
    return json.loads((store / "manifest.json").read_text())["events"]


def _arrow(store: Path) -> pa.Table:
    with pa.memory_map(str(store / EVENTS_ARROW)) as source:
        return pa.ipc.open_file(source).read_all()


def test_demo_has_100_subjects_and_splits(mimic_store: Path) -> None:
    patients = pl.read_parquet(mimic_store / "patients.parquet")
    assert patients.height == 100
    assert set(patients["split"].unique()) == {"train", "val", "test"}
    assert _events(mimic_store)["subject_id"].n_unique() == 100
    report = _manifest(mimic_store)
    assert report["n_subjects"] == 100
    assert json.loads((mimic_store / "manifest.json").read_text())["counts"]["recordings"] == 0
    assert not list(mimic_store.parent.glob("store.tmp-*"))  # the staging folder is gone


# -- per table: events written == source rows with a usable time ---------------------------------------
def _t(column: str) -> pl.Expr:
    return pl.col(column).is_not_null()


def _usable(root: Path) -> dict[tuple[str, str], tuple[pl.DataFrame, pl.Expr, pl.Expr]]:
    """(table, kind) → (source rows, which rows have a usable time, which events are of that kind),
    written from the MIMIC-IV documentation, independently of the converter."""
    admissions = _csv(root, "admissions")
    discharged = admissions.filter(_t("dischtime"))["hadm_id"].implode()
    died = admissions.filter(_t("deathtime"))["subject_id"].implode()
    omr_names = _csv(root, "omr")["result_name"].unique().implode()
    medication = pl.col("code").str.starts_with("MEDICATION//")
    start, stop = (pl.col("code").str.starts_with(f"MEDICATION//{k}//") for k in ("START", "STOP"))
    prescription = pl.col("code").str.starts_with("MEDICATION//PRESCRIPTION//")

    def code(prefix: str) -> pl.Expr:
        return pl.col("code").str.starts_with(prefix)

    rules: dict[tuple[str, str], tuple[pl.Expr, pl.Expr]] = {
        ("patients", "gender"): (pl.lit(True), code("GENDER//")),
        ("patients", "birth"): (_t("anchor_year") & _t("anchor_age"), code("MEDS_BIRTH")),
        ("patients", "death"): (_t("dod") | pl.col("subject_id").is_in(died), code("MEDS_DEATH")),
        ("admissions", "admission"): (_t("admittime"), code("HOSPITAL_ADMISSION//")),
        ("admissions", "discharge"): (_t("dischtime"), code("HOSPITAL_DISCHARGE//")),
        ("admissions", "ed_registration"): (_t("edregtime"), code("ED_REGISTRATION")),
        ("admissions", "ed_out"): (_t("edouttime"), code("ED_OUT")),
        ("transfers", "transfer"): (_t("intime"), code("TRANSFER_TO//")),
        ("diagnoses_icd", "diagnosis"): (pl.col("hadm_id").is_in(discharged), code("DIAGNOSIS//ICD//")),
        ("procedures_icd", "procedure"): (pl.col("hadm_id").is_in(discharged), code("PROCEDURE//ICD//")),
        ("drgcodes", "drg"): (pl.col("hadm_id").is_in(discharged), code("DRG//")),
        ("hcpcsevents", "hcpcs"): (_t("chartdate"), code("HCPCS//")),
        ("labevents", "lab"): (_t("charttime"), code("LAB//")),
        ("prescriptions", "prescription"): (_t("starttime"), prescription),
        ("pharmacy", "start"): (_t("starttime"), start),
        ("pharmacy", "stop"): (_t("stoptime"), stop),
        ("emar", "administration"): (_t("charttime"), medication & ~start & ~stop & ~prescription),
        ("omr", "omr"): (_t("chartdate"), pl.col("code").is_in(omr_names)),
        ("microbiologyevents", "micro"): (_t("charttime") | _t("chartdate"), code("MICROBIOLOGY//")),
        ("icustays", "icu_admission"): (_t("intime"), code("ICU_ADMISSION//")),
        ("icustays", "icu_discharge"): (_t("outtime"), code("ICU_DISCHARGE//")),
        ("inputevents", "infusion_start"): (_t("starttime"), code("INFUSION_START//")),
        ("inputevents", "infusion_end"): (_t("endtime"), code("INFUSION_END//")),
        ("inputevents", "weight"): (_t("starttime") & _t("patientweight"), code("SUBJECT_WEIGHT_AT")),
        ("outputevents", "output"): (_t("charttime"), code("SUBJECT_FLUID_OUTPUT//")),
        ("procedureevents", "start"): (_t("starttime"), code("PROCEDURE//START//")),
        ("procedureevents", "end"): (_t("endtime"), code("PROCEDURE//END//")),
    }
    return {key: (_csv(root, key[0]), usable, kind) for key, (usable, kind) in rules.items()}


def test_every_table_and_kind_is_covered(demo_root: Path) -> None:
    # The test below must see every event kind of every table (chartevents is absent from the demo).
    expected = {(t, k) for t, spec in TABLES.items() for k in spec.events if t != "chartevents"}
    assert set(_usable(demo_root)) == expected


def test_events_equal_source_rows_with_a_usable_time(mimic_store: Path, demo_root: Path) -> None:
    events = _events(mimic_store)
    report = _manifest(mimic_store)
    total = 0
    for (table, kind), (source, usable, of_kind) in _usable(demo_root).items():
        n_usable = source.filter(usable).height
        entry = report["tables"][table]
        assert entry["source_rows"] == source.height, table
        counts = {k: v for k, v in entry["events"][kind].items() if k != "numeric_kept_as_text"}
        assert counts == {
            "written": n_usable,
            "dropped_no_usable_time": source.height - n_usable,
        }, (table, kind)
        assert events.filter(of_kind).height == n_usable, (table, kind)
        total += n_usable
    assert total == events.height == report["n_events"]
    # The demo has rows without a usable time: the drop path is exercised (open prescriptions...).
    assert report["tables"]["pharmacy"]["events"]["stop"]["dropped_no_usable_time"] > 0


def test_lab_events_equal_the_rows_parsed_independently(mimic_store: Path, demo_root: Path) -> None:
    source = _csv(demo_root, "labevents")
    values = source["valuenum"].to_list()
    number = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)

    def is_number(text: str | None) -> bool:
        try:
            float(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return True

    expected = pl.DataFrame(
        {
            "subject_id": [int(s) for s in source["subject_id"]],
            "time": np.array([t.replace(" ", "T") for t in source["charttime"]], dtype="datetime64[us]"),
            "code": [
                f"LAB//{i}//{u or 'UNK'}" for i, u in zip(source["itemid"], source["valueuom"], strict=True)
            ],
            # float32 nearest to the decimal text (numpy's rounding, not the converter's).
            "numeric_value": pl.Series(number.astype(np.float32)).fill_nan(None),
            "text_value": [None if is_number(v) else v for v in source["value"]],
        },
        schema_overrides={"time": pl.Datetime("us"), "numeric_value": pl.Float32},
    )
    labs = _events(mimic_store).filter(pl.col("code").str.starts_with("LAB//"))
    key = ["subject_id", "time", "code", "numeric_value", "text_value"]
    assert labs.sort(key, nulls_last=False).equals(expected.sort(key, nulls_last=False))
    assert labs["text_value"].drop_nulls().is_in(["___", "NEG", "POS"]).any()  # kept when not a number


def test_death_is_timed_at_deathtime_else_dod(mimic_store: Path, demo_root: Path) -> None:
    admissions = _csv(demo_root, "admissions").filter(_t("deathtime"))
    deathtime = admissions.group_by("subject_id").agg(pl.col("deathtime").min())
    patients = _csv(demo_root, "patients").join(deathtime, on="subject_id", how="left")
    expected = (
        patients.filter(_t("dod") | _t("deathtime"))
        .select(
            pl.col("subject_id").cast(pl.Int64),
            pl.coalesce(
                pl.col("deathtime").str.to_datetime(FMT, time_unit="us"),
                pl.col("dod").str.to_date("%Y-%m-%d").cast(pl.Datetime("us")),
            ).alias("time"),
        )
        .sort("subject_id")
    )
    got = _events(mimic_store).filter(pl.col("code") == "MEDS_DEATH").select("subject_id", "time")
    assert got.sort("subject_id").equals(expected)
    assert deathtime.height > 0 and expected.height > deathtime.height  # both paths are exercised


def test_every_diagnosis_is_timed_at_its_admissions_discharge(mimic_store: Path, demo_root: Path) -> None:
    admissions = _csv(demo_root, "admissions").select(
        "hadm_id", "subject_id", pl.col("dischtime").str.to_datetime(FMT, time_unit="us")
    )
    for table, prefix in (("diagnoses_icd", "DIAGNOSIS//"), ("procedures_icd", "PROCEDURE//ICD//")):
        expected = (
            _csv(demo_root, table)
            .join(admissions, on=["hadm_id", "subject_id"], how="inner")
            .group_by(pl.col("subject_id").cast(pl.Int64), pl.col("dischtime").alias("time"))
            .len()
            .sort("subject_id", "time")
        )
        got = (
            _events(mimic_store)
            .filter(pl.col("code").str.starts_with(prefix))
            .group_by("subject_id", "time")
            .len()
            .sort("subject_id", "time")
        )
        assert got.equals(expected)
        assert got["len"].sum() == _csv(demo_root, table).height


# -- the official MEDS ETL's output for the same demo subjects -----------------------------------------
def test_codes_match_the_official_meds_etl(mimic_store: Path, meds_demo_root: Path) -> None:
    """The demo in MEDS (MEDS_transforms 0.0.9 ETL) holds 20 of the subjects: for every code family
    both ETLs produce, the distinct events are the same, except for documented choices."""
    official = pl.read_parquet(meds_demo_root / "data" / "**" / "*.parquet").select(
        "subject_id", "time", "code", "numeric_value", "text_value"
    )
    ours = _events(mimic_store).filter(pl.col("subject_id").is_in(official["subject_id"].unique().implode()))

    def family(frame: pl.DataFrame, prefix: str) -> pl.DataFrame:
        return frame.filter(pl.col("code").str.starts_with(prefix)).unique()

    families = [
        "LAB//5",  # labevents (the official LAB//22xxxx are chartevents, absent from our demo copy)
        "DIAGNOSIS//",
        "HOSPITAL_ADMISSION//",
        "HOSPITAL_DISCHARGE//",
        "ED_REGISTRATION",
        "ED_OUT",
        "TRANSFER_TO//",
        "ICU_ADMISSION//",
        "ICU_DISCHARGE//",
        "INFUSION_START//",
        "INFUSION_END//",
        "SUBJECT_WEIGHT_AT_INFUSION//",
        "SUBJECT_FLUID_OUTPUT//",
        "MEDICATION//START//",
        "MEDICATION//STOP//",
        "GENDER//",
        "MEDS_BIRTH",
        "MEDS_DEATH",
        "HCPCS//",
    ]
    for prefix in families:
        a, b = family(official, prefix), family(ours, prefix)
        assert a.height > 0, prefix
        assert a.sort(pl.all(), nulls_last=False).equals(b.sort(pl.all(), nulls_last=False)), prefix
    # emar administrations: MEDICATION//{medication}//{event_txt} (prescriptions are ours only).
    emar = ~pl.col("code").str.contains("^MEDICATION//(START|STOP|PRESCRIPTION)//")
    a = family(official, "MEDICATION//").filter(emar)
    b = family(ours, "MEDICATION//").filter(emar)
    assert a.height > 0 and a.sort(pl.all(), nulls_last=False).equals(b.sort(pl.all(), nulls_last=False))
    # Documented differences: ICD procedures at discharge (the ETL: chartdate), DRG codes as published
    # ("021"; the ETL's type inference drops the zero), omr numbers in numeric_value.
    for prefix in ("PROCEDURE//ICD//", "DRG//"):
        a, b = (f.filter(pl.col("code").str.starts_with(prefix)) for f in (official, ours))
        if prefix == "DRG//":
            b = b.with_columns(pl.col("code").str.replace(r"^(DRG//[^/]+//)0+(\d)", "${1}${2}"))
        assert a["code"].sort().equals(b["code"].sort()), prefix
    # The ETL keeps one of identical events; we keep every source row (the counts above are of rows).
    assert ours.height > ours.unique().height


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
    creatinine = codes.filter(pl.col("code") == "LAB//50912//mg/dL")["description"][0]
    assert creatinine.startswith("Creatinine, Blood")  # d_labitems: label, fluid, category
    assert codes["count"].sum() == _events(mimic_store).height


def test_shards_are_sorted_and_hold_whole_subjects(demo_root: Path, tmp_path: Path) -> None:
    store = convert_mimic_iv(
        demo_root, tmp_path / "s", tables=["patients", "transfers"], subjects_per_shard=30, progress=False
    )
    shards = sorted((store / "events" / "data").glob("*.parquet"))
    assert len(shards) == 4
    seen: set[int] = set()
    key = ["subject_id", "time", "code", "numeric_value", "text_value"]
    for shard in shards:
        frame = pl.read_parquet(shard)
        assert frame.equals(frame.sort(key, nulls_last=False))
        subjects = set(frame["subject_id"].unique())
        assert not subjects & seen
        seen |= subjects
    report = _manifest(store)
    assert set(report["tables"]) == {"patients", "transfers"}
    assert report["n_shards"] == 4


def test_missing_table_is_reported_and_skipped(mimic_store: Path) -> None:
    report = _manifest(mimic_store)
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
    for table in ("patients", "admissions", "diagnoses_icd", "transfers"):
        shutil.copy(demo_root / "hosp" / f"{table}.csv.gz", src / "hosp")
    return src


def _rewrite(path: Path, edit: Callable[[list[str]], list[str]]) -> Path:
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    path.unlink()
    plain = path.with_suffix("")  # now a plain .csv
    plain.write_text("\n".join(edit(lines)) + "\n")
    return plain


def _assert_no_store(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f"{out.name}.tmp-*/manifest.json"))


def _set_field(row: int, column: int, value: str) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        fields = lines[row].split(",")
        fields[column] = value
        lines[row] = ",".join(fields)
        return lines

    return edit


def test_unparsable_timestamp_names_file_column_and_row(demo_root: Path, tmp_path: Path) -> None:
    src = _mini_source(demo_root, tmp_path)
    _rewrite(src / "hosp" / "admissions.csv.gz", _set_field(3, 2, "2196-02-31 25:00:00"))  # admittime
    out = tmp_path / "out"
    with pytest.raises(SourceError, match=r"admissions\.csv.*'admittime', data row 3.*2196-02-31 25:00:00"):
        convert_mimic_iv(src, out, progress=False)
    _assert_no_store(out)
    # on_error="skip": the table is skipped, reported, and so are the tables that need its dischtime.
    store = convert_mimic_iv(src, out, on_error="skip", progress=False)
    report = _manifest(store)
    assert [s["table"] for s in report["skipped_tables"]] == ["admissions", "diagnoses_icd"]
    assert "admittime" in report["skipped_tables"][0]["reason"]
    assert set(report["tables"]) == {"patients", "transfers"}


def test_non_integer_subject_id(demo_root: Path, tmp_path: Path) -> None:
    src = _mini_source(demo_root, tmp_path)
    _rewrite(src / "hosp" / "patients.csv.gz", lambda lines: [*lines[:2], "P123" + lines[2][8:], *lines[3:]])
    out = tmp_path / "out"
    with pytest.raises(
        SourceError, match=r"patients\.csv.*'subject_id', data row 2.*'P123' is not an integer"
    ):
        convert_mimic_iv(src, out, progress=False)
    _assert_no_store(out)


def test_missing_required_column(demo_root: Path, tmp_path: Path) -> None:
    src = _mini_source(demo_root, tmp_path)
    _rewrite(
        src / "hosp" / "admissions.csv.gz", lambda lines: [lines[0].replace("dischtime", "disch"), *lines[1:]]
    )
    out = tmp_path / "out"
    with pytest.raises(SourceError, match=r"admissions\.csv.*missing required column\(s\) \['dischtime'\]"):
        convert_mimic_iv(src, out, progress=False)
    _assert_no_store(out)


def test_file_that_is_not_csv(demo_root: Path, tmp_path: Path) -> None:
    src = _mini_source(demo_root, tmp_path)
    (src / "hosp" / "transfers.csv.gz").write_bytes(gzip.compress(bytes(range(256)) * 64))
    out = tmp_path / "out"
    with pytest.raises(SourceError, match=r"transfers\.csv\.gz"):
        convert_mimic_iv(src, out, progress=False)
    _assert_no_store(out)


def test_timestamps_with_fractional_seconds_are_read(demo_root: Path, tmp_path: Path) -> None:
    """A timestamp shape MIMIC-IV does not publish, but other exports do: read by the tolerant pass."""
    src = _mini_source(demo_root, tmp_path)
    _rewrite(src / "hosp" / "transfers.csv.gz", _set_field(5, 5, "2150-01-01 10:00:00.250"))  # intime
    store = convert_mimic_iv(src, tmp_path / "out", tables=["transfers"], progress=False)
    times = _events(store)["time"]
    assert datetime(2150, 1, 1, 10, 0, 0, 250_000) in times.to_list()
    assert times.null_count() == 0


def test_unknown_table_name(demo_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown MIMIC-IV table"):
        convert_mimic_iv(demo_root, tmp_path / "out", tables=["labevent"], progress=False)


# -- atomic and resumable -------------------------------------------------------------------------------
def test_a_fixed_file_resumes_from_the_committed_tables(demo_root: Path, tmp_path: Path) -> None:
    src = _mini_source(demo_root, tmp_path)
    good = (src / "hosp" / "transfers.csv.gz").read_bytes()
    _rewrite(src / "hosp" / "transfers.csv.gz", _set_field(4, 5, "yesterday"))
    out = tmp_path / "out"
    with pytest.raises(SourceError, match=r"'intime', data row 4.*kept in .*out\.tmp-\d+ for a resume"):
        convert_mimic_iv(src, out, progress=False)
    _assert_no_store(out)
    (src / "hosp" / "transfers.csv").unlink()
    (src / "hosp" / "transfers.csv.gz").write_bytes(good)  # the user fixes the file and runs again
    store = convert_mimic_iv(src, out, progress=False)
    report = _manifest(store)
    # admissions was committed before the failure (and maybe the table running beside transfers).
    assert "admissions" in report["resumed_tables"] and "transfers" not in report["resumed_tables"]
    assert not list(tmp_path.glob("out.tmp-*"))
    fresh = convert_mimic_iv(src, tmp_path / "fresh", progress=False)
    assert _manifest(fresh)["resumed_tables"] == []
    assert _arrow(store).equals(_arrow(fresh))
    assert _events(store).equals(_events(fresh))


def test_a_crash_while_sorting_resumes_the_finished_shards(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _mini_source(demo_root, tmp_path)
    from clinseq.timeline import events_write as events_module

    real = events_module.EventIndexWriter.add_shard
    calls = {"n": 0}

    def crash_on_third_shard(self, shard, codes=None):  # a crash (kill, power loss) after two shards
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real(self, shard, codes)

    monkeypatch.setattr(events_module.EventIndexWriter, "add_shard", crash_on_third_shard)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        convert_mimic_iv(src, out, subjects_per_shard=20, workers=1, progress=False)
    _assert_no_store(out)
    tmp = next(tmp_path.glob("out.tmp-*"))
    assert len(list((tmp / "events" / "data").glob("*.parquet"))) >= 2
    os.rename(tmp, tmp.with_name("out.tmp-1"))  # as if that run had another process id
    monkeypatch.setattr(events_module.EventIndexWriter, "add_shard", real)
    store = convert_mimic_iv(src, out, subjects_per_shard=20, workers=1, progress=False)
    report = _manifest(store)
    assert report["resumed_tables"] == ["patients", "admissions", "transfers", "diagnoses_icd"]
    assert report["reused_shards"] >= 2
    fresh = convert_mimic_iv(src, tmp_path / "fresh", subjects_per_shard=20, progress=False)
    assert _manifest(fresh)["reused_shards"] == 0
    assert _arrow(store).equals(_arrow(fresh))
    assert _events(store).equals(_events(fresh))


def test_another_plan_does_not_reuse_staging(demo_root: Path, tmp_path: Path) -> None:
    src = _mini_source(demo_root, tmp_path)
    _rewrite(src / "hosp" / "transfers.csv.gz", _set_field(4, 5, "yesterday"))
    out = tmp_path / "out"
    with pytest.raises(SourceError):
        convert_mimic_iv(src, out, progress=False)
    store = convert_mimic_iv(src, out, tables=["patients"], progress=False)  # another conversion
    assert _manifest(store)["resumed_tables"] == []
    assert set(_manifest(store)["tables"]) == {"patients"}


def test_workers_must_be_positive(demo_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers must be >= 1"):
        convert_mimic_iv(demo_root, tmp_path / "out", workers=0, progress=False)
