"""``clinseq bench``: the harness (units, JSON, tables, suites, devices, timing, child processes) and one
real quick run.

The quick run is ``clinseq bench all --quick`` exactly as CI runs it, once (about 2 min on 2 cores),
into a temporary results folder; its JSON files are checked for machine, versions, command and units, and
for properties of the figures that do not depend on speed (memory, token counts, consistency).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from clinseq.bench import ALL, SUITES, expand_suites, main
from clinseq.bench.harness import (
    RESULTS_ENV,
    PeakMemory,
    fit_exponent,
    format_value,
    measure,
    missing_units,
    predict,
    print_table,
    release_freed_memory,
    resolve_device,
    results_dir,
    run_in_child,
    script,
    write_results,
)
from clinseq.errors import ConfigError

PNG = b"\x89PNG\r\n\x1a\n"


# -- units, results, tables -----------------------------------------------------------------------------
def test_missing_units_finds_numbers_without_a_unit_and_inherits_from_enclosing_keys():
    payload = {
        "environment": {"cpu_count": 2},  # not checked
        "results": [{"name": "a", "ms": 1.5, "n": 3, "ok": True}, {"name": "b", "ms": 2.0, "extra": 7}],
        "per_view": {"GaussianNoise": 57.5, "TimeMask": 13.2},
        "load": [1.0, 2.0],
        "label": "text is not a figure",
        "units": {"ms": "milliseconds", "n": "rows", "per_view": "µs per window"},
    }
    assert missing_units(payload) == ["results[1].extra", "load[0]", "load[1]"]
    payload["units"].update(extra="items", load="processes")
    assert missing_units(payload) == []


def test_write_results_records_environment_and_refuses_figures_without_units(tmp_path):
    with pytest.raises(ConfigError, match=r"1 figure\(s\) without a unit: rows\[0\].seconds"):
        write_results("x", {"rows": [{"seconds": 1.0}], "units": {}}, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="no 'units' mapping"):
        write_results("x", {"rows": []}, out_dir=tmp_path)
    path = write_results(
        "x",
        {"rows": [{"seconds": 1.0, "ratio": float("nan")}], "units": {"seconds": "s", "ratio": "x"}},
        out_dir=tmp_path,
        command="clinseq bench x --device cpu",
    )
    record = json.loads(path.read_text())
    env = record["environment"]
    assert env["command"] == "clinseq bench x --device cpu"
    assert env["machine"]["cpu_count"] == os.cpu_count() and env["machine"]["device"] == "cpu"
    assert env["versions"]["torch"] == torch.__version__ and env["versions"]["python"]
    assert record["rows"][0] == {"seconds": 1.0, "ratio": None}  # NaN is not JSON: written as null
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]  # no temporary file left behind


def test_results_dir_quick_subfolder_and_environment_override(tmp_path, monkeypatch):
    monkeypatch.setenv(RESULTS_ENV, str(tmp_path / "r"))
    assert results_dir() == tmp_path / "r"
    assert results_dir(quick=True) == tmp_path / "r" / "quick"
    assert results_dir(quick=True, out_dir=tmp_path / "o") == tmp_path / "o"
    monkeypatch.delenv(RESULTS_ENV)
    assert results_dir().parts[-2:] == ("benchmarks", "results")


def test_print_table_aligns_text_left_and_numbers_right(capsys):
    rows = [{"name": "chunked", "ms": 41.17, "n": 1024}, {"name": "naive", "ms": 788.53, "n": 4096}]
    text = print_table(rows, ["name", "ms", "n", "note"], title="t")
    assert capsys.readouterr().out.strip() == text
    assert text.splitlines() == [
        "t",
        "name       ms      n  note",
        "chunked  41.2  1,024  -",
        "naive     789  4,096  -",
    ]
    assert [format_value(v) for v in (None, float("inf"), True, 0.0, 3.14159, 0.00123, 12345.6)] == [
        "-", "-", "yes", "0", "3.14", "1.23e-03", "12,346",
    ]  # fmt: skip


# -- suites, devices ------------------------------------------------------------------------------------
def test_expand_suites():
    assert SUITES == ("reads", "loader", "info_nce", "encoder", "pretrain", "ehr")  # the stems
    assert expand_suites(["all"]) == list(ALL)
    assert expand_suites(["encoder", "all", "ehr"]) == ["encoder", *[s for s in ALL if s != "encoder"], "ehr"]
    with pytest.raises(ConfigError, match="unknown benchmark suite 'gpu'; choose from reads, loader"):
        expand_suites(["gpu"])


def test_device_checks_give_the_fix():
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="must be 'cpu' or 'cuda', got 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="torch sees no GPU .* run with --device cpu"):
            resolve_device("cuda")
        with pytest.raises(ConfigError, match="torch sees no GPU"):
            main(["encoder"], device="cuda")


def test_cli_rejects_unknown_suite():
    done = subprocess.run(
        [sys.executable, "-m", "clinseq.cli", "bench", "nope"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "invalid choice: 'nope'" in done.stderr


def test_suites_without_their_data_fail_with_the_fix(tmp_path, monkeypatch):
    from clinseq.bench import ehr, loader, pretrain, reads

    monkeypatch.setenv("CLINSEQ_DATA", str(tmp_path))
    for suite in (reads, loader, pretrain, ehr):
        with pytest.raises(ConfigError, match="set CLINSEQ_DATA"):
            suite.run(quick=True, out_dir=tmp_path)


# -- scaling fits, timing, memory -----------------------------------------------------------------------
def test_fit_exponent_and_prediction():
    assert fit_exponent([(1e3, 5.0), (4e3, 20.0), (16e3, 80.0)]) == pytest.approx(1.0)
    assert fit_exponent([(1e3, 2.0), (4e3, 32.0)]) == pytest.approx(2.0)
    assert fit_exponent([(1e3, 2.0)]) is None and fit_exponent([(1e3, 2.0), (1e3, 3.0)]) is None
    assert predict([], 10, 2.0) is None
    assert predict([(100, 1.0)], 400, 2.0) == pytest.approx(16.0)  # the default exponent
    assert predict([(100, 1.0), (200, 2.0)], 800, 2.0) == pytest.approx(8.0)  # fitted: linear
    assert predict([(100, 1.0), (200, 8.0)], 400, 1.0) == pytest.approx(32.0)  # fitted 3, clamped to 2


def test_peak_memory_follows_an_allocation_on_the_cpu():
    import mmap

    release_freed_memory()
    with PeakMemory("cpu") as mem:
        # 64 MiB of fresh anonymous pages, all written: a torch tensor could land on pages the allocator
        # already holds resident (freed earlier in the process), which is no new memory at all.
        pages = mmap.mmap(-1, 64 * 2**20)
        chunk = b"\x01" * 2**20
        for _ in range(64):
            pages.write(chunk)
        pages.close()
    assert mem.peak_mib is not None and 60 <= mem.peak_mib <= 90
    with PeakMemory("cpu") as small:
        torch.ones(1024)
    assert small.peak_mib < 16


def test_measure_runs_warmup_then_timed_calls():
    calls = []
    m = measure(lambda: calls.append(1) or len(calls), "cpu", warmup=2, repeats=3, memory=False)
    assert len(calls) == 5 and len(m.times_s) == 3 and m.result == 5
    assert m.seconds == sorted(m.times_s)[1] and m.peak_mib is None


def test_run_in_child_returns_the_result_or_says_why_not():
    code, free, _ = run_in_child("clinseq.bench.harness:free_memory_mib", {"device": "cpu"})
    assert code == 0 and free > 0
    code, result, last = run_in_child("clinseq.bench.harness:resolve_device", {"device": "tpu"})
    assert code == 2 and result is None and "must be 'cpu' or 'cuda', got 'tpu'" in last


def test_script_options_follow_the_suite_signature(capsys):
    def run(*, device: str = "cpu", quick: bool = False, sizes: tuple[int, ...] | None = None, budget_s=None):
        return {"device": device, "quick": quick, "sizes": sizes}

    run.__annotations__["budget_s"] = "float | None"
    assert script(run, ["--quick", "--sizes", "1024", "4096", "--device", "cuda"]) == {
        "device": "cuda", "quick": True, "sizes": (1024, 4096),
    }  # fmt: skip
    assert script(run, []) == {"device": "cpu", "quick": False, "sizes": None}


# -- the real thing, once ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_bench_all_quick(tmp_path, ptbxl_root):
    from clinseq.utils import data_root

    if not (data_root() / "eeg" / "eegmat").exists():
        pytest.skip(
            "EEGMAT is absent (the reads suite needs it): https://physionet.org/content/eegmat/1.0.0/"
        )
    env = {**os.environ, RESULTS_ENV: str(tmp_path)}
    env.pop("TRITON_INTERPRET", None)  # the info_nce suite sets it for its interpreter child only
    done = subprocess.run(
        [sys.executable, "-m", "clinseq.cli", "bench", "all", "--quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout[done.stdout.rindex("clinseq bench all --device cpu --quick:") :]
    for suite in ALL:
        assert f"\n{suite} " in summary and "FAILED" not in summary

    quick = tmp_path / "quick"
    names = [f"{suite}_cpu" for suite in ALL]
    assert sorted(p.name for p in quick.glob("*.json")) == sorted(f"{n}.json" for n in names)
    results = {n: json.loads((quick / f"{n}.json").read_text()) for n in names}
    for name, r in results.items():
        env_record = r["environment"]
        assert env_record["command"] == "clinseq bench all --device cpu --quick", name
        assert env_record["machine"]["architecture"] and env_record["machine"]["cpu_count"] >= 1
        assert {"clinseq", "python", "torch", "numpy"} <= set(env_record["versions"])
        assert r["quick"] is True and r["units"] and missing_units(r) == [], name
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            continue
        assert (quick / f"{name}.png").read_bytes()[:8] == PNG, name

    # encoder: PatchTransformer token counts, the backend that ran, memory linear in the length
    enc = results["encoder_cpu"]
    pt = [r for r in enc["results"] if r["model"] == "PatchTransformer"]
    assert all(r["tokens_per_item"] == 12 * math.ceil(r["n_samples"] / 50) for r in pt)
    assert {r["backend"] for r in pt if "ms" in r} == {"flash"}
    scaling = {(r["model"], r["mode"], r["variant"]): r for r in enc["scaling"]}
    # memory per item against T (1 k … 16 k, 3 lengths): linear, with the flash kernel torch picks
    assert 0.7 <= scaling[("PatchTransformer", "forward+backward", "")]["memory_exponent"] <= 1.3
    sdpa = {r["backend_forced"]: r for r in enc["sdpa"]}
    assert sdpa["efficient"]["skipped"].startswith("unsupported")  # a CUDA-only kernel
    assert sdpa["math"]["backend"] == "math" and sdpa["flash"]["backend"] == "flash"
    assert sdpa["math"]["peak_mib"] > 1.5 * sdpa["flash"]["peak_mib"]  # the L × L scores
    chunked = [r for r in enc["eeg_hour"] if r["variant"].startswith("embed_chunked")]
    assert len(chunked) == 1 and chunked[0]["tokens_per_item"] == 19 * 60 * enc["settings"]["eeg_minutes"]
    for r in enc["results"] + enc["sdpa"]:
        assert ("ms" in r) != ("skipped" in r)  # every row measured or says why not

    # info_nce: the chunked reference needs far less memory than the dense one at N = 4096
    rows = {(r["method"], r["n"]): r for r in results["info_nce_cpu"]["rows"] if "peak_mib" in r}
    assert rows[("chunked", 4096)]["peak_mib"] < 0.5 * rows[("naive", 4096)]["peak_mib"]
    assert rows[("chunked", 4096)]["loss"] == pytest.approx(rows[("naive", 4096)]["loss"], rel=1e-5)

    # pretrain: every configuration, consistent figures
    pre = {r["config"]: r for r in results["pretrain_cpu"]["results"]}
    assert set(pre) == {"pclr+views", "cpc"}
    for r in pre.values():
        assert 0 <= r["busy_fraction"] <= 1 and 0 <= r["loader_wait_fraction"] <= 1
        assert r["busy_fraction"] + r["loader_wait_fraction"] <= 1.0001
        assert r["windows_per_s"] * r["step_ms"] / 1e3 == pytest.approx(r["batch"])
    assert pre["pclr+views"]["batch"] == 64 and pre["cpc"]["batch"] == 32  # the smoke profiles' layouts

    # reads: every reference window was checked against the store's (else the suite fails)
    reads = results["reads_cpu"]
    assert [r["windows"] for r in reads["ecg"]["results"]] == [2000, 2000, 200]


def test_ehr_scaling_series_and_resume_after_kill(tmp_path):
    """The scaling series at a small scale (demo x1, x2) with the kill-and-resume check at x2: a JSON
    with units, a plot when matplotlib is there, the inputs deleted, the resumed store identical."""
    from clinseq.bench import ehr
    from clinseq.utils import data_root

    demo = data_root() / "mimic_iv_demo"
    if not (demo / "hosp" / "patients.csv.gz").exists():
        pytest.skip("needs the MIMIC-IV demo under $CLINSEQ_DATA/mimic_iv_demo")
    work = tmp_path / "work"
    work.mkdir()
    out = ehr.run_scaling(
        demo,
        (1, 2),
        workers=2,
        repeat=1,
        max_memory="600M",
        resume_check=2,
        quick=True,
        out_dir=tmp_path / "results",
        work_dir=work,
    )
    payload = json.loads(out["json"].read_text())
    assert missing_units(payload) == []
    rows = payload["scaling"]
    assert [r["copies"] for r in rows] == [1, 2]
    assert rows[1]["source_rows"] == 2 * rows[0]["source_rows"] and rows[1]["subjects"] == 200
    assert all(r["peak_rss_mib"] > 0 and r["table_step_s"] and r["shard_step_s"] for r in rows)
    for r in rows:  # the gap to 2 M rows/s, per row and per step, from this run's own figures
        gap = r["gap"]
        assert gap["cpu_us_per_row"] == pytest.approx(r["cpu_s"] / r["source_rows"] * 1e6, rel=0.01)
        assert gap["ceiling_rows_per_s_on_2_cores"] == pytest.approx(
            2 * r["source_rows"] / r["cpu_s"], rel=0.01
        )
        assert gap["cpu_us_per_row_allowed_by_target"] == 1.0
        assert set(gap["step_thread_us_per_row"]) == {f"table {k}" for k in r["table_step_s"]} | {
            f"shard {k}" for k in r["shard_step_s"]
        }
    assert rows[-1]["floors"]["gzip_decompress_only"]["cpu_us_per_row"] > 0
    resume = payload["resume_after_kill"]
    assert resume["identical"] and all(resume["files_identical"].values())
    assert list(work.iterdir()) == []  # inputs and stores deleted


def test_ehr_suite_writes_every_figure_with_its_unit(tmp_path):
    """The conversion suite end to end at a small scale (the demo, and demo x1 as the "large" input with
    its floors): its JSON holds every figure with a unit (per-step timings included) and the assessment
    computed from the measured conversion."""
    from clinseq.bench import ehr
    from clinseq.utils import data_root

    if not (data_root() / "mimic_iv_demo" / "hosp" / "patients.csv.gz").exists():
        pytest.skip("needs the MIMIC-IV demo under $CLINSEQ_DATA/mimic_iv_demo")
    out = ehr.run(quick=True, copies=1, slices=200, out_dir=tmp_path / "results")
    payload = json.loads(out["json"].read_text())
    assert missing_units(payload) == []
    large = payload["conversion"][-1]
    assert large["table_step_s"] and large["shard_step_s"] and large["peak_rss_mib"] > 0
    assert payload["assessment"]["cpu_us_per_source_row"] == pytest.approx(
        large["cpu_s"] / large["source_rows"] * 1e6, rel=0.01
    )
