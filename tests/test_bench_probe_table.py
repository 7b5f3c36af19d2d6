"""benchmarks/bench_probe_table.py: which runs are finished or resumable, and the table built from them.

The run folders here are tiny hand-written ones in the layout the recipe writes (``metrics.jsonl``,
``checkpoints/step-*``, ``eval/seed<k>/eval_<task>.json`` as ``Evaluation.save`` writes it); the runs
themselves are produced by the real recipe when the script runs (not here: ~15 min each).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TASK = "ptbxl/superdiagnostic"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_probe_table", REPO / "benchmarks" / "bench_probe_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ci(point: float, half: float = 0.02) -> dict:
    return {"point": point, "low": point - half, "high": point + half, "n_boot": 100, "confidence": 0.95}


def _result(fraction: float, auroc: float) -> dict:
    return {"fraction": fraction, "macro_auroc": _ci(auroc), "macro_auprc": _ci(auroc - 0.3)}


def _finished_run(folder: Path, seed: int, delta: dict[float, float], losses: list[float]) -> None:
    """A run folder as the recipe leaves it: metrics, a checkpoint, the probe JSON of the seed."""
    (folder / "checkpoints" / "step-00000020").mkdir(parents=True)
    lines = [{"step": 10 * (i + 1), "loss": v, "top1": 0.1 * i, "lr": 1e-3} for i, v in enumerate(losses)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    base = {f: 0.7 for f in delta}
    payload = {
        "task": TASK,
        "baseline": "random init",
        "reports": {
            "pretrained": {"results": [_result(f, base[f] + d) for f, d in delta.items()]},
            "random init": {"results": [_result(f, base[f]) for f in delta]},
        },
        "differences": {
            "pretrained": {
                f"{f:g}": {"auroc": _ci(d, 0.05), "auprc": _ci(d / 2, 0.05)} for f, d in delta.items()
            }
        },
    }
    out = folder / "eval" / f"seed{seed}"
    out.mkdir(parents=True)
    (out / "eval_ptbxl_superdiagnostic.json").write_text(json.dumps(payload))


def test_run_states_decide_what_is_kept_resumed_or_restarted(bench, tmp_path: Path) -> None:
    done = bench.run_dir(tmp_path, "ptbxl", "cpu", "pclr", 0)
    _finished_run(done, 0, {0.1: 0.02, 1.0: 0.05}, [5.0, 4.0])
    assert bench.run_state(done, 0, [TASK]) == "done"
    assert bench.run_state(done, 0, [TASK, "ptbxl/diagnostic"]) == "resume"  # a task's probe is missing

    partial = bench.run_dir(tmp_path, "ptbxl", "cpu", "pmq", 1)
    (partial / "checkpoints" / "step-00000150").mkdir(parents=True)
    assert bench.run_state(partial, 1, [TASK]) == "resume"
    assert bench.child_command(REPO / "recipes/ptbxl/pmq.yaml", "cpu", 1, partial, "resume")[-2:] == [
        "--resume",
        str(partial),
    ]

    empty = bench.run_dir(tmp_path, "ptbxl", "cpu", "cpc", 0)
    empty.mkdir(parents=True)
    assert bench.run_state(empty, 0, [TASK]) == "restart"
    assert bench.run_state(tmp_path / "absent", 0, [TASK]) == "new"
    cmd = bench.child_command(REPO / "recipes/ptbxl/cpc.yaml", "cpu", 3, empty, "new")
    assert ["--profile", "cpu"] == cmd[3:5] and "run.seed=3" in cmd and "eval.seeds=[3]" in cmd


def test_a_finished_run_is_not_run_again(bench, tmp_path: Path, monkeypatch) -> None:
    folder = bench.run_dir(tmp_path, "ptbxl", "cpu", "pclr", 0)
    _finished_run(folder, 0, {1.0: 0.05}, [5.0])

    def fail(*args, **kwargs):
        raise AssertionError("a finished run was started again")

    monkeypatch.setattr(bench.subprocess, "call", fail)
    assert bench.run_one(REPO / "recipes/ptbxl/pclr.yaml", "cpu", 0, folder, [TASK])


def test_aggregate_reads_deltas_cis_and_curves_and_lists_missing_runs(bench, tmp_path: Path) -> None:
    _finished_run(
        bench.run_dir(tmp_path, "ptbxl", "cpu", "pclr", 0), 0, {0.1: 0.02, 1.0: 0.06}, [5.0, 4.0, 3.5]
    )
    _finished_run(bench.run_dir(tmp_path, "ptbxl", "cpu", "pclr", 1), 1, {0.1: 0.04, 1.0: -0.02}, [5.1, 4.2])
    _finished_run(bench.run_dir(tmp_path, "ptbxl", "cpu", "pmq", 0), 0, {0.1: -0.01, 1.0: -0.03}, [1.0])
    tasks = {"pclr": [TASK], "pmq": [TASK]}
    result = bench.aggregate(tmp_path, "ptbxl", "cpu", ["pclr", "pmq"], [0, 1], tasks)

    assert result["missing"] == ["pmq seed 1"]
    pclr = result["recipes"]["pclr"]
    mean = pclr["mean_over_seeds"][TASK]
    assert mean["0.1"]["delta_auroc"] == pytest.approx(0.03) and mean["0.1"]["n_seeds"] == 2
    assert mean["1"]["delta_auroc"] == pytest.approx(0.02)
    assert mean["1"]["delta_auprc"] == pytest.approx(0.01)
    seed0 = pclr["seeds"]["0"]
    assert seed0["probe"][TASK]["1"]["delta_auroc"] == pytest.approx(
        {"point": 0.06, "low": 0.01, "high": 0.11}
    )
    assert seed0["probe"][TASK]["1"]["pretrained_auroc"] == pytest.approx(0.76)
    assert seed0["probe"][TASK]["1"]["baseline_auroc"] == pytest.approx(0.7)
    assert seed0["curves"]["step"] == [10, 20, 30] and seed0["curves"]["loss"] == [5.0, 4.0, 3.5]
    assert seed0["curves"]["top1"] == pytest.approx([0.0, 0.1, 0.2])
    assert result["recipes"]["pmq"]["mean_over_seeds"][TASK]["1"]["n_seeds"] == 1

    table = bench.format_rows(result)
    assert "pclr | ptbxl/superdiagnostic | 1 | s0 +0.060 [+0.010, +0.110]; s1 -0.020" in table
    assert "not finished: pmq seed 1" in table
    markdown = bench.format_markdown(result)
    assert (
        "| pclr | ptbxl/superdiagnostic | +0.020 / +0.040 (mean +0.030) | +0.060 / -0.020 (mean +0.020) |"
        in markdown
    )
    assert "Not finished: pmq seed 1." in markdown
    figure = bench.plot(result, tmp_path / "table.png")
    assert figure is None or figure.stat().st_size > 0


def test_a_profile_missing_from_a_recipe_is_an_error_before_any_run(bench) -> None:
    with pytest.raises(SystemExit, match="profile 'nonexistent' is not defined in recipes/ptbxl/pclr.yaml"):
        bench.check_profiles([REPO / "recipes/ptbxl/pclr.yaml"], "nonexistent")
    bench.check_profiles([REPO / "recipes/ptbxl" / f"{r}.yaml" for r in bench.MODALITIES["ptbxl"][1]], "cpu")


def test_plateau_tells_a_settled_loss_from_one_still_falling(bench) -> None:
    steps = list(range(10, 410, 10))  # 40 logged steps
    settled = [1.0 + 4.0 * 0.8**i for i in range(40)]  # exponential: ~0 of its fall in the last 20 %
    falling = [5.0 - 0.1 * i for i in range(40)]  # linear: ~20 % of its fall in the last 20 %
    a = bench.plateau({"step": steps, "loss": settled})
    b = bench.plateau({"step": steps, "loss": falling})
    assert a["plateau"] is True and a["share_of_fall_in_last_20pct"] < 0.01
    assert b["plateau"] is False and b["share_of_fall_in_last_20pct"] == pytest.approx(
        0.8 / 3.4
    )  # (2.25 - 1.45) / (4.85 - 1.45)
    assert b["loss_first_10pct"] == pytest.approx(sum(falling[:4]) / 4)
    assert bench.plateau({"step": steps[:5], "loss": falling[:5]})["plateau"] is None  # too short to tell
    assert bench.plateau({"step": steps, "loss": [1.0] * 40})["plateau"] is None  # never fell
    # A settled loss with a retrieval metric still climbing is not a plateau; with it settled too, it is.
    climbing = [0.01 * i for i in range(40)]
    c = bench.plateau({"step": steps, "loss": settled, "top1": climbing})
    assert c["plateau"] is False and c["share_of_retrieval_rise_in_last_20pct"] == pytest.approx(0.8 / 3.4)
    flat_top1 = [1.0 - 0.8**i for i in range(40)]
    assert bench.plateau({"step": steps, "loss": settled, "top1": flat_top1})["plateau"] is True
