"""What the MIMIC-IV tables hold and how each becomes MEDS events: the :data:`TABLES` spec.

Johnson et al., "MIMIC-IV, a freely accessible electronic health record dataset", Sci Data 10, 1 (2023).
Codes follow the MEDS MIMIC-IV ETL conventions (``LAB//{itemid}//{valueuom}``,
``DIAGNOSIS//ICD//{icd_version}//{icd_code}``...), with a null code part written ``UNK``; the output was
checked against the official MEDS version of the demo (``tests/ehr/test_mimic_iv.py``). Also here: where
each table lies in the published layout (:func:`find_table`) and the code descriptions of the ``d_*``
dictionaries (:data:`DICTIONARIES`, :func:`describe_codes`). The pipeline that reads the tables is
:mod:`clinseq.io.mimic_iv`; the table → code map is also in ``data_cards/mimic_iv.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

UNK = "UNK"


def _code(*parts: str) -> pl.Expr:
    """``A//B//C`` from literal parts and ``"@column"`` parts; a null column value becomes ``UNK``."""
    exprs = [pl.col(p[1:]).fill_null(UNK) if p.startswith("@") else pl.lit(p) for p in parts]
    return exprs[0].alias("code") if len(exprs) == 1 else pl.concat_str(exprs, separator="//").alias("code")


def _number(column: str) -> pl.Expr:
    """A numeric text column as float32, correctly rounded (polars' direct text → float32 cast is not:
    it gives 20.253061 for "20.25306224822998", whose nearest float32 is 20.253063).

    Only finite values: text that is not a number, ``inf``, ``nan`` or a value beyond float32's range
    gives null here, and :meth:`EventKind.build` keeps its text (the values policy of
    ``data_cards/mimic_iv.md``)."""
    value = pl.col(column).cast(pl.Float64, strict=False).cast(pl.Float32)
    return pl.when(value.is_finite()).then(value)


def _text_unless_number(column: str) -> pl.Expr:
    """The text of a value column, kept only when it is not a number (a number is ``numeric_value``):
    the MEDS MIMIC-IV ETL's rule, so "NEG", "___" or ">100" stay while "98" is not stored twice."""
    return pl.when(pl.col(column).cast(pl.Float64, strict=False).is_null()).then(pl.col(column))


@dataclass(frozen=True)
class EventKind:
    """One kind of event a table row gives: its time, code parts (``"@col"`` = a column) and values.

    ``time`` None makes a static event (MEDS ``time`` null). A row gives this event when its time is
    not null; the others are dropped and counted (``dropped_no_usable_time`` in the manifest).
    """

    time: str | pl.Expr | None
    code: tuple[str, ...]
    numeric: pl.Expr | None = None
    text: pl.Expr | None = None

    def time_expr(self) -> pl.Expr:
        if self.time is None:
            return pl.lit(None, pl.Datetime("us"))
        return (pl.col(self.time) if isinstance(self.time, str) else self.time).cast(pl.Datetime("us"))

    @property
    def numeric_column(self) -> str | None:
        """The one text column the numeric value is parsed from (None: none, or a computed value)."""
        if self.numeric is None:
            return None
        roots = set(self.numeric.meta.root_names())
        return roots.pop() if len(roots) == 1 else None

    def numeric_unusable(self) -> pl.Expr:
        """True where the numeric source text is present but gives no finite float32 (not a number,
        ``inf``, ``nan``, an overflow): that text is kept in ``text_value`` rather than lost."""
        column = self.numeric_column
        if column is None:
            return pl.lit(False)
        raw = pl.col(column).str.strip_chars()
        return (raw.str.len_chars() > 0).fill_null(False) & self.numeric.is_null()

    def _text_value(self) -> pl.Expr:
        text = pl.lit(None, pl.String) if self.text is None else self.text.cast(pl.String)
        column = self.numeric_column
        if column is None:
            return text
        raw = pl.col(column).str.strip_chars()
        kept = pl.when(text.is_null()).then(raw).when(text.str.strip_chars() == raw).then(text)
        kept = kept.otherwise(pl.concat_str([text, pl.lit(f" [{column}="), raw, pl.lit("]")]))
        return pl.when(self.numeric_unusable()).then(kept).otherwise(text)

    def build(self, typed: pl.LazyFrame) -> pl.LazyFrame:
        """The events of this kind (the five MEDS columns), rows without a usable time removed."""
        out = typed.select(
            pl.col("subject_id"),
            self.time_expr().alias("time"),
            _code(*self.code),
            (pl.lit(None, pl.Float32) if self.numeric is None else self.numeric.cast(pl.Float32)).alias(
                "numeric_value"
            ),
            self._text_value().alias("text_value"),
        )
        return out if self.time is None else out.filter(pl.col("time").is_not_null())


def _kind(
    time: str | pl.Expr | None,
    *code: str,
    numeric: pl.Expr | None = None,
    text: pl.Expr | None = None,
) -> EventKind:
    return EventKind(time, code, numeric, text)


#: Lookup columns a table gets from ``admissions``: its admission's discharge time, the subject's death.
Lookup = Literal["dischtime", "deathtime"]


@dataclass(frozen=True)
class TableSpec:
    """How one MIMIC-IV table becomes events.

    ``times`` are parsed as ``%Y-%m-%d %H:%M:%S`` and ``dates`` as ``%Y-%m-%d`` (MIMIC-IV's DATE
    columns); a table whose timestamps come in another shape (fractional seconds, a date in a
    timestamp column) is read again with a tolerant parser. ``integers`` must parse as integers.
    ``lookups`` are joined from ``admissions``: ``dischtime`` on ``hadm_id``, ``deathtime`` (the
    subject's first in-hospital death) on ``subject_id``.
    """

    folder: str
    required: tuple[str, ...]
    events: dict[str, EventKind]
    times: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()
    integers: tuple[str, ...] = ()
    lookups: tuple[Lookup, ...] = field(default_factory=tuple)


def _year_of_birth() -> pl.Expr:
    return pl.datetime(pl.col("anchor_year") - pl.col("anchor_age"), 1, 1)


#: A measured item of labevents or chartevents (same columns): ``LAB//{itemid}//{valueuom}``.
_LAB = _kind(
    "charttime", "LAB", "@itemid", "@valueuom", numeric=_number("valuenum"), text=_text_unless_number("value")
)


#: table → how it becomes events. Each table is optional: a missing one is reported and skipped.
TABLES: dict[str, TableSpec] = {
    "patients": TableSpec(
        "hosp",
        ("subject_id", "gender", "anchor_age", "anchor_year", "dod"),
        {
            "gender": _kind(None, "GENDER", "@gender"),
            "birth": _kind(_year_of_birth(), "MEDS_BIRTH"),
            "death": _kind(pl.coalesce("deathtime", "dod"), "MEDS_DEATH"),
        },
        dates=("dod",),
        integers=("anchor_age", "anchor_year"),
        lookups=("deathtime",),
    ),
    "admissions": TableSpec(
        "hosp",
        (
            "subject_id",
            "hadm_id",
            "admittime",
            "dischtime",
            "deathtime",
            "admission_type",
            "admission_location",
            "discharge_location",
            "edregtime",
            "edouttime",
        ),
        {
            "admission": _kind("admittime", "HOSPITAL_ADMISSION", "@admission_type", "@admission_location"),
            "discharge": _kind("dischtime", "HOSPITAL_DISCHARGE", "@discharge_location"),
            "ed_registration": _kind("edregtime", "ED_REGISTRATION"),
            "ed_out": _kind("edouttime", "ED_OUT"),
        },
        times=("admittime", "dischtime", "deathtime", "edregtime", "edouttime"),
        integers=("hadm_id",),
    ),
    "transfers": TableSpec(
        "hosp",
        ("subject_id", "eventtype", "careunit", "intime"),
        {"transfer": _kind("intime", "TRANSFER_TO", "@eventtype", "@careunit")},
        times=("intime",),
    ),
    "diagnoses_icd": TableSpec(
        "hosp",
        ("subject_id", "hadm_id", "icd_code", "icd_version"),
        {"diagnosis": _kind("dischtime", "DIAGNOSIS", "ICD", "@icd_version", "@icd_code")},
        integers=("hadm_id",),
        lookups=("dischtime",),
    ),
    "procedures_icd": TableSpec(
        "hosp",
        ("subject_id", "hadm_id", "icd_code", "icd_version"),
        {"procedure": _kind("dischtime", "PROCEDURE", "ICD", "@icd_version", "@icd_code")},
        integers=("hadm_id",),
        lookups=("dischtime",),
    ),
    "drgcodes": TableSpec(
        "hosp",
        ("subject_id", "hadm_id", "drg_type", "drg_code", "description"),
        {"drg": _kind("dischtime", "DRG", "@drg_type", "@drg_code", "@description")},
        integers=("hadm_id",),
        lookups=("dischtime",),
    ),
    "hcpcsevents": TableSpec(
        "hosp",
        ("subject_id", "chartdate", "short_description"),
        {"hcpcs": _kind("chartdate", "HCPCS", "@short_description")},
        dates=("chartdate",),
    ),
    "labevents": TableSpec(
        "hosp",
        ("subject_id", "itemid", "charttime", "value", "valuenum", "valueuom"),
        {"lab": _LAB},
        times=("charttime",),
    ),
    "prescriptions": TableSpec(
        "hosp",
        ("subject_id", "starttime", "drug", "dose_val_rx"),
        {
            "prescription": _kind(
                "starttime",
                "MEDICATION",
                "PRESCRIPTION",
                "@drug",
                numeric=_number("dose_val_rx"),
                text=_text_unless_number("dose_val_rx"),
            )
        },
        times=("starttime",),
    ),
    "pharmacy": TableSpec(
        "hosp",
        ("subject_id", "starttime", "stoptime", "medication"),
        {
            "start": _kind("starttime", "MEDICATION", "START", "@medication"),
            "stop": _kind("stoptime", "MEDICATION", "STOP", "@medication"),
        },
        times=("starttime", "stoptime"),
    ),
    "emar": TableSpec(
        "hosp",
        ("subject_id", "charttime", "medication", "event_txt"),
        {"administration": _kind("charttime", "MEDICATION", "@medication", "@event_txt")},
        times=("charttime",),
    ),
    "omr": TableSpec(
        "hosp",
        ("subject_id", "chartdate", "result_name", "result_value"),
        {
            "omr": _kind(
                "chartdate",
                "@result_name",
                numeric=_number("result_value"),
                text=_text_unless_number("result_value"),
            )
        },
        dates=("chartdate",),
    ),
    "microbiologyevents": TableSpec(
        "hosp",
        (
            "subject_id",
            "chartdate",
            "charttime",
            "test_name",
            "org_name",
            "ab_name",
            "interpretation",
            "dilution_value",
        ),
        {
            "micro": _kind(
                pl.coalesce("charttime", "chartdate"),
                "MICROBIOLOGY",
                "@test_name",
                "@org_name",
                "@ab_name",
                numeric=_number("dilution_value"),
                text=pl.col("interpretation"),
            )
        },
        times=("chartdate", "charttime"),
    ),
    "icustays": TableSpec(
        "icu",
        ("subject_id", "first_careunit", "last_careunit", "intime", "outtime"),
        {
            "icu_admission": _kind("intime", "ICU_ADMISSION", "@first_careunit"),
            "icu_discharge": _kind("outtime", "ICU_DISCHARGE", "@last_careunit"),
        },
        times=("intime", "outtime"),
    ),
    "chartevents": TableSpec(
        "icu",
        ("subject_id", "itemid", "charttime", "value", "valuenum", "valueuom"),
        {
            # The MEDS ETL codes charted items like labs: LAB//{itemid}//{uom} (item ids do not overlap).
            "chart": _LAB
        },
        times=("charttime",),
    ),
    "inputevents": TableSpec(
        "icu",
        ("subject_id", "itemid", "starttime", "endtime", "amount", "rate", "patientweight"),
        {
            "infusion_start": _kind("starttime", "INFUSION_START", "@itemid", numeric=_number("rate")),
            "infusion_end": _kind("endtime", "INFUSION_END", "@itemid", numeric=_number("amount")),
            "weight": _kind(
                pl.when(pl.col("patientweight").is_not_null()).then(pl.col("starttime")),
                "SUBJECT_WEIGHT_AT_INFUSION",
                "KG",
                numeric=_number("patientweight"),
            ),
        },
        times=("starttime", "endtime"),
    ),
    "outputevents": TableSpec(
        "icu",
        ("subject_id", "itemid", "charttime", "value", "valueuom"),
        {
            "output": _kind(
                "charttime", "SUBJECT_FLUID_OUTPUT", "@itemid", "@valueuom", numeric=_number("value")
            )
        },
        times=("charttime",),
    ),
    "procedureevents": TableSpec(
        "icu",
        ("subject_id", "itemid", "starttime", "endtime", "value", "valueuom"),
        {
            "start": _kind("starttime", "PROCEDURE", "START", "@itemid", numeric=_number("value")),
            "end": _kind("endtime", "PROCEDURE", "END", "@itemid"),
        },
        times=("starttime", "endtime"),
    ),
}
#: Dictionaries whose descriptions go into ``events/metadata/codes.parquet``.
DICTIONARIES = {
    "d_labitems": "hosp",
    "d_items": "icu",
    "d_icd_diagnoses": "hosp",
    "d_icd_procedures": "hosp",
}


def find_table(src: Path, table: str, folder: str | None = None) -> Path | None:
    """``src/{folder}/{table}.csv.gz`` or ``.csv`` (the layout as published), else None."""
    base = src / (folder or TABLES[table].folder)
    for name in (f"{table}.csv.gz", f"{table}.csv"):
        if (base / name).exists():
            return base / name
    return None


def describe_codes(dictionaries: dict[str, pl.DataFrame]) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """Descriptions from the d_* dictionaries (d_labitems, d_items, d_icd_*, when present)."""

    def describe(counts: pl.DataFrame) -> pl.DataFrame:
        parts = pl.col("code").str.split("//")
        out = counts.with_columns(
            prefix=parts.list.get(0, null_on_oob=True),
            p1=parts.list.get(1, null_on_oob=True),
            p2=parts.list.get(2, null_on_oob=True),
            p3=parts.list.get(3, null_on_oob=True),
        ).with_columns(
            itemid=pl.when(
                pl.col("prefix").is_in(["LAB", "SUBJECT_FLUID_OUTPUT", "INFUSION_START", "INFUSION_END"])
            )
            .then(pl.col("p1"))
            .when((pl.col("prefix") == "PROCEDURE") & pl.col("p1").is_in(["START", "END"]))
            .then(pl.col("p2")),
            description=pl.lit(None, pl.String),
        )
        # LAB codes come from labevents (d_labitems) and chartevents (d_items): the item ids differ.
        if "d_labitems" in dictionaries:
            lab = dictionaries["d_labitems"].select(
                "itemid",
                pl.concat_str(["label", "fluid", "category"], separator=", ", ignore_nulls=True).alias("_d"),
            )
            out = _fill(out.join(lab, on="itemid", how="left"), pl.col("prefix") == "LAB")
        if "d_items" in dictionaries:
            icu = dictionaries["d_items"].select("itemid", pl.col("label").alias("_d"))
            out = _fill(out.join(icu, on="itemid", how="left"), pl.col("itemid").is_not_null())
        for name, prefix in (("d_icd_diagnoses", "DIAGNOSIS"), ("d_icd_procedures", "PROCEDURE")):
            if name not in dictionaries:
                continue
            icd = (
                dictionaries[name]
                .select(
                    pl.col("icd_version").alias("p2"),
                    pl.col("icd_code").str.strip_chars().alias("p3"),
                    pl.col("long_title").alias("_d"),
                    pl.lit(prefix).alias("prefix"),
                )
                .unique(["prefix", "p2", "p3"], keep="first")
            )
            out = _fill(out.join(icd, on=["prefix", "p2", "p3"], how="left"), pl.lit(True))
        # No ontology parents: MIMIC-IV's dictionaries do not give them (the MEDS ETL maps to OMOP).
        return out.with_columns(pl.lit(None, pl.List(pl.String)).alias("parent_codes")).select(
            "code", "count", "description", "parent_codes"
        )

    return describe


def _fill(frame: pl.DataFrame, where: pl.Expr) -> pl.DataFrame:
    """``description`` = ``_d`` where ``where`` holds and no description was found yet; drops ``_d``."""
    return frame.with_columns(
        pl.when(where & pl.col("description").is_null())
        .then(pl.col("_d"))
        .otherwise(pl.col("description"))
        .alias("description")
    ).drop("_d")
