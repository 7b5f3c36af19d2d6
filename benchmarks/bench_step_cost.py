"""CPU seconds per pretraining step of a recipe profile: what sizes the ``cpu`` budget profiles (issue 21).

One process per recipe: the recipe's setup (store, loader, method), then ``--steps`` optimizer steps of
its own training loop, timed by the process's CPU time (``resource.getrusage``), not the wall clock: on a
machine shared with other jobs the wall clock also counts waiting for a core, while the CPU time of a
one-thread run (``run.num_threads: 1``, ``data.num_workers: 0``: everything runs on the main thread) is
close to the wall time the same steps take on an idle core. Setup is not counted; the first step is.

    python benchmarks/bench_step_cost.py --profile cpu --steps 8 ptbxl/pclr ptbxl/pmq

Writes ``benchmarks/results/step_cost_<profile>.json`` (one entry per recipe, merged with earlier ones).
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(recipe: str, profile: str, steps: int) -> dict:
    from clinseq.train import resolve_run

    spec = importlib.util.spec_from_file_location("clinseq_recipe", ROOT / "recipes" / "pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = ROOT / "runs" / "step_cost" / profile / recipe.replace("/", "_")
    shutil.rmtree(out, ignore_errors=True)
    overrides = [f"train.max_steps={steps}", "eval.enabled=false", "train.progress=false",
                 f"train.checkpoint_every={steps}", f"train.log_every={steps}"]  # fmt: skip
    config, _ = resolve_run(
        ROOT / "recipes" / f"{recipe}.yaml", profile=profile, overrides=overrides, out=out
    )
    run = module.PretrainRecipe(config)
    try:
        run.setup()
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        run.train()
        cpu, wall = _cpu_s() - cpu0, time.perf_counter() - wall0
    finally:
        run.cleanup()
    full = module.resolve_run(ROOT / "recipes" / f"{recipe}.yaml", profile=profile, out=out / "profile")[0]
    return {
        "recipe": recipe, "profile": profile, "steps": steps,
        "cpu_s_per_step": cpu / steps, "wall_s_per_step": wall / steps,
        "profile_max_steps": full.train.max_steps,
        "estimated_idle_train_min": cpu / steps * full.train.max_steps / 60,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+", help="e.g. ptbxl/pclr")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args(argv)
    path = ROOT / "benchmarks" / "results" / f"step_cost_{args.profile}.json"
    for recipe in args.recipes:
        row = measure(recipe, args.profile, args.steps)
        row["command"] = (
            f"python benchmarks/bench_step_cost.py --profile {args.profile} --steps {args.steps} {recipe}"
        )
        row["machine"] = (
            f"{os.cpu_count()}-core CPU, 1-min load average {os.getloadavg()[0]:.1f} at the end of the run; "
            "CPU time, not wall time, sizes the budget"
        )
        with open(
            ROOT / "runs" / "step_cost" / ".lock", "w"
        ) as lock:  # several recipes may be measured at once
            fcntl.flock(lock, fcntl.LOCK_EX)
            payload = json.loads(path.read_text()) if path.is_file() else {}
            payload[recipe] = row
            path.write_text(json.dumps(payload, indent=1))
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
