"""The budgeted results table (issue 21): every recipe of a modality × seeds at one profile, then the table.

Each (recipe, seed) is one ``recipes/pretrain.py`` run in a child process (``--profile P --set
run.seed=K --set eval.seeds=[K]``): pretraining, then the recipe's linear probe of the pretrained encoder
against the same encoder at random init on held-out subjects. A run is *finished* when its probe JSON
(``eval/seed<K>/eval_<task>.json``) exists for every task of the recipe; finished runs are kept, a run
with a checkpoint but no probe JSON is resumed (``--resume``), a folder without a checkpoint is started
again. So the script can be stopped and started again at any time, and run in the background::

    python benchmarks/bench_probe_table.py --modality ptbxl --profile cpu --seeds 0 1
    python benchmarks/bench_probe_table.py --modality ptbxl --profile cpu --seeds 0 1 --background
    python benchmarks/bench_probe_table.py --modality ptbxl --profile cpu --seeds 0 1 --aggregate-only

``--background`` starts the same command detached (its own session, survives the terminal) logging to
``--log`` (default ``<runs-dir>/bench_probe_table.log``); ``nohup python … &`` works as well. ``--jobs 2``
runs two children at once (each recipe's ``cpu`` profile uses one torch thread: two fit an idle
2-core machine).

Writes ``benchmarks/results/probe_table_<modality>_<profile>.json``: for each recipe, task, seed and label
fraction the macro AUROC/AUPRC of both encoders and their paired difference (pretrained − random init)
with its 95 % patient-bootstrap CI (the recipe's own bootstrap over test subjects), the mean Δ over the
seeds, and the pretraining loss and retrieval metric (``top1``-style metrics) over steps from each run's
``metrics.jsonl``; and ``probe_table_<modality>_<profile>.png`` (Δ AUROC vs label fraction; loss and
retrieval over steps).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPE_SCRIPT = ROOT / "recipes" / "pretrain.py"

#: modality → the recipes (under recipes/<folder>/) the table covers.
MODALITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ptbxl": ("ptbxl", ("pclr", "polywindow", "simclr", "cpc", "comet", "pmq")),
    "eeg": ("eeg", ("cpc", "patient_contrast", "sgconv")),
    "mimic_iv": ("mimic_iv", ("patient_contrast",)),
}

#: metrics.jsonl keys that are retrieval metrics (the share of queries whose positive ranks first).
RETRIEVAL_PREFIX = "top1"


# -- the plan: which runs exist, which are finished -------------------------------------------------
def slug(name: str) -> str:
    """The eval report's file-name form of a task name (``clinseq.eval.report.slug``)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "report"


def run_dir(runs_dir: Path, modality: str, profile: str, recipe: str, seed: int) -> Path:
    return Path(runs_dir) / modality / profile / recipe / f"seed{seed}"


def eval_paths(folder: Path, seed: int, tasks: Sequence[str]) -> list[Path]:
    """The probe JSONs a finished run holds (one per task)."""
    return [Path(folder) / "eval" / f"seed{seed}" / f"eval_{slug(t)}.json" for t in tasks]


def run_state(folder: Path, seed: int, tasks: Sequence[str]) -> str:
    """``done`` (every probe JSON), ``resume`` (a checkpoint, no probe yet), ``restart`` (a folder without a
    checkpoint: nothing to continue) or ``new``."""
    folder = Path(folder)
    if all(p.is_file() for p in eval_paths(folder, seed, tasks)):
        return "done"
    if any((folder / "checkpoints").glob("step-*")) if (folder / "checkpoints").is_dir() else False:
        return "resume"
    return "restart" if folder.exists() else "new"


def recipe_tasks(config: Path, profile: str) -> list[str]:
    from clinseq.train import load_config

    return list(load_config(config, profile=profile).eval.tasks)


def check_profiles(configs: Sequence[Path], profile: str) -> None:
    """Every config must define ``profile`` (a clear error before any run starts)."""
    import yaml

    missing = [
        str(c.relative_to(ROOT))
        for c in configs
        if profile not in ((yaml.safe_load(c.read_text()) or {}).get("profiles") or {})
    ]
    if missing:
        sys.exit(f"bench_probe_table: error: profile {profile!r} is not defined in {', '.join(missing)}")


def child_command(config: Path, profile: str, seed: int, folder: Path, state: str) -> list[str]:
    if state == "resume":
        return [sys.executable, str(RECIPE_SCRIPT), "--resume", str(folder)]
    return [
        sys.executable, str(RECIPE_SCRIPT), str(config), "--profile", profile, "--out", str(folder),
        "--set", f"run.seed={seed}", "--set", f"eval.seeds=[{seed}]", "--set", "train.progress=false",
    ]  # fmt: skip


def _log(message: str) -> None:
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}", flush=True)


def run_one(config: Path, profile: str, seed: int, folder: Path, tasks: Sequence[str]) -> bool:
    """One (recipe, seed) run in a child process, its output appended to ``<folder>.log``."""
    state = run_state(folder, seed, tasks)
    if state == "done":
        return True
    if state == "restart":
        import shutil

        shutil.rmtree(folder)  # a folder without a checkpoint holds nothing to continue
    folder.parent.mkdir(parents=True, exist_ok=True)
    cmd = child_command(config, profile, seed, folder, "resume" if state == "resume" else "new")
    log = folder.parent / f"{folder.name}.log"
    _log(f"start {config.relative_to(ROOT)} seed {seed} ({state}) → {folder}; log {log}")
    t0 = time.time()
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    ok = rc == 0 and run_state(folder, seed, tasks) == "done"
    _log(f"{'done' if ok else f'FAILED (rc {rc})'} {config.stem} seed {seed} in {time.time() - t0:.0f} s")
    return ok


# -- aggregation (pure: reads finished run folders) ------------------------------------------------
def read_curves(folder: Path) -> dict[str, list]:
    """step, loss and every retrieval metric over steps from ``metrics.jsonl``."""
    path = Path(folder) / "metrics.jsonl"
    curves: dict[str, list] = {"step": [], "loss": []}
    if not path.is_file():
        return curves
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    keys = sorted({k for r in records for k in r if k.startswith(RETRIEVAL_PREFIX)})
    for k in keys:
        curves[k] = []
    for r in records:
        if "loss" not in r:
            continue
        curves["step"].append(r["step"])
        curves["loss"].append(r["loss"])
        for k in keys:
            curves[k].append(r.get(k))
    return curves


#: The plateau criterion: the loss fell by less than this share of its whole fall (mean of the first 10 %
#: of logged steps → mean of the last 20 %) during the last 20 % of the run (mean of steps 60–80 % → mean of
#: steps 80–100 %). A loss still falling at a constant rate would give ≈ 20 %; one that has settled, ≈ 0.
PLATEAU_SHARE = 0.10


def _settled(values: Sequence[float | None], falling: bool) -> dict[str, Any] | None:
    """Window means of one logged curve (first 10 %, 60–80 %, last 20 % of its points) and the share of
    its whole change (first 10 % → last 20 %, a fall for a loss, a rise for a retrieval metric) that
    happened in the last 20 %; None with fewer than 10 points or no change in that direction."""
    points = [v for v in values if v is not None and math.isfinite(v)]
    n = len(points)
    if n < 10:
        return None

    def window(a: float, b: float) -> float:
        part = points[int(a * n) : max(int(b * n), int(a * n) + 1)]
        return sum(part) / len(part)

    first, before, last = window(0.0, 0.1), window(0.6, 0.8), window(0.8, 1.0)
    change = (first - last) if falling else (last - first)
    late = (before - last) if falling else (last - before)
    share = late / change if change > 0 else None
    return {"first_10pct": first, "60_80pct": before, "last_20pct": last, "share_in_last_20pct": share}


def plateau(curves: dict[str, list]) -> dict[str, Any]:
    """Whether pretraining reached a plateau within the run (:data:`PLATEAU_SHARE`): for the loss (its
    fall) and the first retrieval metric (its rise), the share of the whole change that happened in the
    last 20 % of the run. A plateau needs both below the threshold (a loss can flatten early while the
    retrieval metric still climbs); None with fewer than 10 logged steps or a loss that did not fall."""
    loss = _settled(curves.get("loss", []), falling=True)
    keys = [k for k in curves if k.startswith(RETRIEVAL_PREFIX)]
    retrieval = _settled(curves[keys[0]], falling=False) if keys else None
    out: dict[str, Any] = {"n_logged": len(curves.get("loss", []))}
    if loss is None or loss["share_in_last_20pct"] is None:
        return out | {"plateau": None}
    out |= {
        "loss_first_10pct": loss["first_10pct"],
        "loss_60_80pct": loss["60_80pct"],
        "loss_last_20pct": loss["last_20pct"],
        "share_of_fall_in_last_20pct": loss["share_in_last_20pct"],
    }
    verdict = loss["share_in_last_20pct"] < PLATEAU_SHARE
    if retrieval is not None and retrieval["share_in_last_20pct"] is not None:
        out["retrieval_metric"] = keys[0]
        out["retrieval_last_20pct"] = retrieval["last_20pct"]
        out["share_of_retrieval_rise_in_last_20pct"] = retrieval["share_in_last_20pct"]
        verdict = verdict and retrieval["share_in_last_20pct"] < PLATEAU_SHARE
    return out | {"plateau": verdict}


def read_probe(path: Path, pretrained: str = "pretrained") -> dict[str, dict[str, Any]]:
    """fraction → AUROC/AUPRC of both rows and their paired Δ (point, low, high), from one probe JSON."""
    payload = json.loads(Path(path).read_text())
    baseline = payload["baseline"]
    out: dict[str, dict[str, Any]] = {}
    for result in payload["reports"][pretrained]["results"]:
        out[f"{result['fraction']:g}"] = {
            "pretrained_auroc": result["macro_auroc"]["point"],
            "pretrained_auprc": result["macro_auprc"]["point"],
        }
    for result in payload["reports"][baseline]["results"]:
        row = out.setdefault(f"{result['fraction']:g}", {})
        row["baseline_auroc"] = result["macro_auroc"]["point"]
        row["baseline_auprc"] = result["macro_auprc"]["point"]
    for fraction, diff in payload["differences"][pretrained].items():
        row = out.setdefault(fraction, {})
        for metric in ("auroc", "auprc"):
            ci = diff[metric]
            row[f"delta_{metric}"] = {k: ci.get(k) for k in ("point", "low", "high")}
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def aggregate(
    runs_dir: Path, modality: str, profile: str, recipes: Sequence[str], seeds: Sequence[int],
    tasks_of: dict[str, list[str]],
) -> dict[str, Any]:  # fmt: skip
    """The table of every finished run (missing runs are listed, not invented)."""
    table: dict[str, Any] = {}
    missing = []
    for recipe in recipes:
        entry: dict[str, Any] = {"seeds": {}, "mean_over_seeds": {}}
        for seed in seeds:
            folder = run_dir(runs_dir, modality, profile, recipe, seed)
            tasks = tasks_of[recipe]
            if run_state(folder, seed, tasks) != "done":
                missing.append(f"{recipe} seed {seed}")
                continue
            probes = {t: read_probe(p) for t, p in zip(tasks, eval_paths(folder, seed, tasks), strict=True)}
            curves = read_curves(folder)
            entry["seeds"][str(seed)] = {"probe": probes, "curves": curves, "plateau": plateau(curves)}
        for task in tasks_of[recipe]:
            per_fraction: dict[str, dict[str, float | None]] = {}
            for s in entry["seeds"].values():
                for fraction, row in s["probe"][task].items():
                    acc = per_fraction.setdefault(fraction, {"delta_auroc": [], "delta_auprc": []})
                    acc["delta_auroc"].append(row["delta_auroc"]["point"])
                    acc["delta_auprc"].append(row["delta_auprc"]["point"])
            entry["mean_over_seeds"][task] = {
                f: {k: _mean(v) for k, v in acc.items()} | {"n_seeds": len(acc["delta_auroc"])}
                for f, acc in sorted(per_fraction.items(), key=lambda kv: float(kv[0]))
            }
        table[recipe] = entry
    return {
        "modality": modality,
        "profile": profile,
        "seeds": list(seeds),
        "recipes": table,
        "missing": missing,
    }


def format_rows(result: dict[str, Any]) -> str:
    """The printed table: Δ AUROC [CI] per seed at each fraction, per recipe and task."""
    lines = ["recipe | task | fraction | Δ AUROC per seed [95 % CI] | mean Δ AUROC | mean Δ AUPRC"]
    for recipe, entry in result["recipes"].items():
        for task, per_fraction in entry["mean_over_seeds"].items():
            for fraction, mean in per_fraction.items():
                cells = []
                for seed, s in entry["seeds"].items():
                    d = s["probe"][task].get(fraction, {}).get("delta_auroc")
                    if d and d["point"] is not None:
                        ci = f" [{d['low']:+.3f}, {d['high']:+.3f}]" if d["low"] is not None else ""
                        cells.append(f"s{seed} {d['point']:+.3f}{ci}")
                ma, mp = mean["delta_auroc"], mean["delta_auprc"]
                lines.append(
                    f"{recipe} | {task} | {fraction} | {'; '.join(cells)} | "
                    f"{'' if ma is None else f'{ma:+.3f}'} | {'' if mp is None else f'{mp:+.3f}'}"
                )
    lines.append(
        f"plateau (share of the loss's fall and of the retrieval metric's rise in the last 20 % of steps, "
        f"both < {PLATEAU_SHARE:.0%}), per seed:"
    )
    for recipe, entry in result["recipes"].items():
        cells = []
        for seed, s in entry["seeds"].items():
            p = s.get("plateau") or {}
            share, rise = p.get("share_of_fall_in_last_20pct"), p.get("share_of_retrieval_rise_in_last_20pct")
            verdict = {True: "plateau", False: "still changing", None: "n/a"}[p.get("plateau")]
            detail = [f"loss {share:.0%}"] if share is not None else []
            detail += [f"retrieval {rise:.0%}"] if rise is not None else []
            cells.append(f"s{seed} {verdict}" + (f" ({', '.join(detail)})" if detail else ""))
        lines.append(f"{recipe}: {'; '.join(cells)}")
    if result["missing"]:
        lines.append(f"not finished: {', '.join(result['missing'])}")
    return "\n".join(lines)


def format_markdown(result: dict[str, Any]) -> str:
    """The README's table: per recipe and task, Δ macro AUROC per seed at each label fraction (with the
    seeds' mean), and the plateau verdict per seed."""
    fractions = sorted(
        {f for e in result["recipes"].values() for t in e["mean_over_seeds"].values() for f in t}, key=float
    )
    head = ["objective", "task", *(f"Δ AUROC at {float(f):.0%} labels" for f in fractions), "plateau"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for recipe, entry in result["recipes"].items():
        seeds = list(entry["seeds"])
        for task, per_fraction in entry["mean_over_seeds"].items():
            cells = []
            for f in fractions:
                points = []
                for seed in seeds:
                    d = entry["seeds"][seed]["probe"][task].get(f, {}).get("delta_auroc") or {}
                    points.append("–" if d.get("point") is None else f"{d['point']:+.3f}")
                mean = (per_fraction.get(f) or {}).get("delta_auroc")
                cells.append(" / ".join(points) + ("" if mean is None else f" (mean {mean:+.3f})"))
            verdicts = []
            for seed in seeds:
                p = entry["seeds"][seed].get("plateau") or {}
                share, rise = (
                    p.get("share_of_fall_in_last_20pct"),
                    p.get("share_of_retrieval_rise_in_last_20pct"),
                )
                detail = [f"{share:.0%}"] if share is not None else []
                detail += [f"{rise:.0%}"] if rise is not None else []
                verdicts.append(
                    {True: "yes", False: "no", None: "n/a"}[p.get("plateau")]
                    + (f" ({' / '.join(detail)})" if detail else "")
                )
            lines.append(f"| {recipe} | {task} | " + " | ".join(cells) + f" | {' / '.join(verdicts)} |")
    seeds = ", ".join(str(s) for s in result["seeds"])
    lines.append("")
    lines.append(
        f"Seeds {seeds} (values per seed, in that order). Plateau: the share of the loss's fall (first 10 % "
        "of logged steps → last 20 %) and of the retrieval top-1's rise that happened in the last 20 % of "
        f"the run, in brackets in that order; yes when both are < {PLATEAU_SHARE:.0%}."
    )
    if result["missing"]:
        lines.append(f"Not finished: {', '.join(result['missing'])}.")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """Δ AUROC vs label fraction (per-seed CIs) beside the loss and retrieval curves."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, (recipe, entry) in enumerate(result["recipes"].items()):
        color = f"C{i}"
        tasks = list(entry["mean_over_seeds"])
        for t, task in enumerate(tasks):
            for j, s in enumerate(entry["seeds"].values()):
                rows = sorted(s["probe"][task].items(), key=lambda kv: float(kv[0]))
                xs = [float(f) * (1 + 0.04 * (j - 0.5)) for f, _ in rows]
                ys = [r["delta_auroc"]["point"] for _, r in rows]
                lo = [
                    r["delta_auroc"]["point"] - (r["delta_auroc"]["low"] or r["delta_auroc"]["point"])
                    for _, r in rows
                ]
                hi = [
                    (r["delta_auroc"]["high"] or r["delta_auroc"]["point"]) - r["delta_auroc"]["point"]
                    for _, r in rows
                ]
                label = (recipe if len(tasks) == 1 else f"{recipe} · {task}") if j == 0 else None
                axes[0].errorbar(
                    xs, ys, yerr=[lo, hi], color=color, marker="os^Dv"[t % 5], ls="-:"[t % 2], capsize=2,
                    label=label, alpha=0.8,
                )  # fmt: skip
        for j, s in enumerate(entry["seeds"].values()):
            c = s["curves"]
            label = recipe if j == 0 else None
            axes[1].plot(c["step"], c["loss"], color=color, alpha=0.8, label=label)
            keys = [k for k in c if k.startswith(RETRIEVAL_PREFIX)]
            if keys:
                axes[2].plot(
                    c["step"],
                    c[keys[0]],
                    color=color,
                    alpha=0.8,
                    label=f"{recipe} {keys[0]}" if j == 0 else None,
                )
    axes[0].axhline(0.0, color="k", lw=0.8)
    axes[0].set_xscale("log")
    axes[0].set(xlabel="label fraction", ylabel="Δ macro AUROC (pretrained − random init)", title="probe")
    axes[1].set(xlabel="step", ylabel="pretraining loss", title="loss")
    axes[2].set(xlabel="step", ylabel="retrieval top-1", title="retrieval")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{result['modality']} · profile {result['profile']} · seeds {result['seeds']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- entry point -----------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", choices=sorted(MODALITIES), default="ptbxl")
    parser.add_argument("--profile", default="cpu", help="the recipes' profile (cpu: the budget; smoke: CI)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--recipes", nargs="+", help="a subset of the modality's recipes (default all)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "probe_table")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--jobs", type=int, default=1, help="child runs at once (default 1)")
    parser.add_argument("--aggregate-only", action="store_true", help="only read finished runs, train none")
    parser.add_argument(
        "--markdown", action="store_true", help="also print the table as Markdown (the README's)"
    )
    parser.add_argument("--background", action="store_true", help="detach and log to --log")
    parser.add_argument(
        "--log", type=Path, help="log file of --background (default <runs-dir>/bench_probe_table.log)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    folder, all_recipes = MODALITIES[args.modality]
    recipes = list(args.recipes or all_recipes)
    unknown = sorted(set(recipes) - set(all_recipes))
    if unknown:
        sys.exit(
            f"bench_probe_table: error: {unknown} are not {args.modality} recipes; choose from {all_recipes}"
        )
    if args.background:
        log = args.log or args.runs_dir / "bench_probe_table.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        argv_rest = [a for a in (sys.argv[1:] if argv is None else list(argv)) if a != "--background"]
        with log.open("a") as fh:
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), *argv_rest],
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
                start_new_session=True, env=os.environ.copy(),
            )  # fmt: skip
        print(f"started in the background: pid {proc.pid}, log {log}")
        return 0
    configs = {r: ROOT / "recipes" / folder / f"{r}.yaml" for r in recipes}
    check_profiles(list(configs.values()), args.profile)
    tasks_of = {r: recipe_tasks(c, args.profile) for r, c in configs.items()}
    if not args.aggregate_only:
        todo = [
            (configs[r], s, run_dir(args.runs_dir, args.modality, args.profile, r, s), tasks_of[r])
            for r in recipes
            for s in args.seeds
        ]
        _log(
            f"{sum(run_state(f, s, t) == 'done' for _, s, f, t in todo)} of {len(todo)} runs already finished"
        )
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(lambda job: run_one(job[0], args.profile, job[1], job[2], job[3]), todo))
    result = aggregate(args.runs_dir, args.modality, args.profile, recipes, args.seeds, tasks_of)
    result["command"] = "python benchmarks/bench_probe_table.py " + " ".join(
        sys.argv[1:] if argv is None else list(argv)
    )
    result["machine"] = _machine()
    stem = f"probe_table_{args.modality}_{args.profile}"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{stem}.json"
    out.write_text(json.dumps(result, indent=1))
    figure = plot(result, args.results_dir / f"{stem}.png")
    print(format_rows(result))
    if args.markdown:
        print(format_markdown(result))
    _log(f"wrote {out}" + (f" and {figure}" if figure else ""))
    return 0 if not result["missing"] else 1


def _machine() -> dict[str, Any]:
    import platform

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load_average_1_5_15_min": load}


if __name__ == "__main__":
    sys.exit(main())
