"""Isolating runs for issue 21.3: why COMET and PMQ probe below random init at the smoke budget.

One pretraining run of a recipe (its profile plus ``--set`` overrides, exactly as ``clinseq pretrain``),
then the linear probe (the recipe's protocol) of several featurizers of that one run side by side:

- ``pretrained`` / ``random init``: what the recipe probes (the encoder's own pooling: the mean of the
  last feature map for ``resnet1d``);
- ``pretrained max`` / ``random init max``: the same encoders with max pooling over time (the pooling
  COMET's trial/patient levels and its downstream embedding use);
- ``key encoder`` (PMQ): the momentum encoder instead of the query encoder;

and direct measurements of the weights and features: the relative distance ‖θ − θ₀‖ / ‖θ₀‖ of the
query and key encoders from their common initialisation, and the effective rank (exp of the entropy of
the normalised singular values) of each featurizer's standardised embeddings of the probe's examples.

    python benchmarks/bench_probe_isolate.py recipes/ptbxl/pmq.yaml --profile smoke --tag pmq_m099
    python benchmarks/bench_probe_isolate.py recipes/ptbxl/pmq.yaml --profile smoke \
        --set method.options.momentum=0.999 --tag pmq_m0999

Writes ``benchmarks/results/probe_isolate_<tag>.json`` (the run folder goes to ``runs/isolate/<tag>``).
Timings on a shared CPU are not meaningful; AUROCs are.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from clinseq.eval import EvalOptions, evaluate
from clinseq.models.base import Encoder
from clinseq.train import resolve_run

ROOT = Path(__file__).resolve().parents[1]


class MaxPooled(Encoder):
    """An encoder with ``feature_map`` pooled by the maximum over time instead of its own pooling."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.embed_dim = inner.embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.feature_map(x).amax(dim=-1)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


def _relative_distance(a: torch.nn.Module, b: torch.nn.Module) -> float:
    num = sum(float((p - q).pow(2).sum()) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    den = sum(float(q.pow(2).sum()) for q in b.parameters())
    return (num / den) ** 0.5


def effective_rank(z: np.ndarray) -> float:
    """exp(entropy of σ / Σσ) of the column-standardised features (Roy & Vetterli 2007)."""
    z = (z - z.mean(0)) / (z.std(0) + 1e-8)
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _load_recipe():
    spec = importlib.util.spec_from_file_location("clinseq_recipe", ROOT / "recipes" / "pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--tag", required=True)
    parser.add_argument("--fractions", default="0.1,1.0")
    parser.add_argument(
        "--summarize", action="store_true",
        help="only summarise an existing run folder of --tag (its probe JSON; weights from its checkpoint)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    out = ROOT / "runs" / "isolate" / args.tag
    if args.summarize:
        return summarize(out, args.tag)
    shutil.rmtree(out, ignore_errors=True)
    overrides = [*args.overrides, "eval.enabled=false", "train.progress=false"]
    config, _ = resolve_run(args.config, profile=args.profile, overrides=overrides, out=out)
    recipe = _load_recipe().PretrainRecipe(config)
    t0 = time.time()
    try:
        recipe.setup()
        result = recipe.train()
        train_s = time.time() - t0
        method, enc0 = recipe.method, recipe.initial_encoder
        enc = method.encoder
        featurizers: dict[str, torch.nn.Module] = {"pretrained": enc}
        drift = {"query_vs_init": _relative_distance(enc, enc0)}
        key = getattr(method, "key_encoder", None)
        if key is not None:
            key_enc = key.target[0]
            featurizers["key encoder"] = key_enc
            drift["key_vs_init"] = _relative_distance(key_enc, enc0)
            drift["key_vs_query"] = _relative_distance(key_enc, enc)
        (out / "weight_drift.json").write_text(json.dumps(drift))  # kept if the probe fails
        if hasattr(enc, "feature_map"):
            featurizers["pretrained max"] = MaxPooled(enc)
            featurizers["random init max"] = MaxPooled(enc0)
        featurizers["random init"] = enc0
        options = EvalOptions(
            fractions=[float(f) for f in args.fractions.split(",")], seeds=config.eval.seeds,
            n_boot=config.eval.n_boot, device="cpu", progress=False,
            **{"window_s": config.data.window_s, "channels": config.data.channels, **config.eval.options},
        )  # fmt: skip
        task = config.eval.tasks[0]
        from clinseq.eval import EncoderFeatures

        feats: dict[str, np.ndarray] = {}

        def recorded(name, encoder):
            inner = EncoderFeatures(
                encoder, window_s=options.window_s, channels=options.channels, device="cpu", progress=False
            )

            def featurize(store, examples):
                feats[name] = inner(store, examples)
                return feats[name]

            return featurize

        rows = {name: recorded(name, e) for name, e in featurizers.items()}
        ev = evaluate(rows, recipe.store, task, options, out_dir=out / "eval")
    finally:
        recipe.cleanup()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    payload = {
        "command": "python benchmarks/bench_probe_isolate.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": "2-core CPU shared with ~7 other helpers (load average ~14): timings not meaningful, "
        "AUROCs are",
        "tag": args.tag,
        "steps": result.step,
        "train_wall_s": train_s,
        "weight_drift": drift,
        "loss_curve": [
            {
                k: r[k]
                for k in r
                if k
                in (
                    "step",
                    "loss",
                    "top1",
                    "loss_inst",
                    "loss_pat",
                    "pos_cosine",
                    "loss_observation",
                    "loss_sample",
                    "loss_trial",
                    "loss_patient",
                    "top1_trial",
                    "top1_patient",
                )
            }
            for r in lines
        ],
        "probe": _summary(ev),
        "effective_rank": {name: effective_rank(z) for name, z in feats.items()},
    }
    path = ROOT / "benchmarks" / "results" / f"probe_isolate_{args.tag}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(
        json.dumps(
            {k: payload[k] for k in ("tag", "steps", "weight_drift", "probe", "effective_rank")}, indent=1
        )
    )
    print(f"wrote {path}")
    return 0


def _summary(ev) -> dict:
    """featurizer → fraction → macro AUROC / AUPRC (seed 0) and Δ vs random init with its CI."""
    out: dict = {}
    for seed, reports in ev.reports.items():
        for name, rep in reports.items():
            for r in rep.results:
                out.setdefault(f"seed{seed}", {}).setdefault(name, {})[f"{r.fraction:g}"] = {
                    "auroc": r.auroc.to_dict(), "auprc": r.auprc.to_dict(),
                }  # fmt: skip
    return out


def summarize(out: Path, tag: str) -> int:
    """The result JSON of a run whose probe finished but whose summary did not (no effective ranks)."""
    from clinseq.train import load_config
    from clinseq.train.checkpoint import latest_checkpoint

    config = load_config(out / "config.yaml", overrides=["eval.enabled=false", "train.progress=false"])
    config.run.out_dir = str(ROOT / "runs" / "isolate" / f"{tag}_summary")
    shutil.rmtree(config.run.out_dir, ignore_errors=True)
    recipe = _load_recipe().PretrainRecipe(config)
    try:
        recipe.setup()  # the same initial weights (seed); then the run's last checkpoint
        ckpt = latest_checkpoint(out)
        state = torch.load(Path(ckpt) / "state.pt", map_location="cpu", weights_only=False)
        recipe.method.load_state_dict(state.get("method", state.get("task")))  # older runs: "task"
        recipe.trainer.step = int(Path(ckpt).name.split("-")[1])
        method, enc0 = recipe.method, recipe.initial_encoder
        drift = {"query_vs_init": _relative_distance(method.encoder, enc0)}
        key = getattr(method, "key_encoder", None)
        if key is not None:
            drift["key_vs_init"] = _relative_distance(key.target[0], enc0)
            drift["key_vs_query"] = _relative_distance(key.target[0], method.encoder)
        steps = recipe.trainer.step
    finally:
        recipe.cleanup()
    probe: dict = {}
    for path in sorted((out / "eval").glob("seed*/eval_*.json")):
        payload = json.loads(path.read_text())
        for name, rep in payload["reports"].items():
            for r in rep["results"]:
                probe.setdefault(path.parent.name, {}).setdefault(name, {})[f"{r['fraction']:g}"] = {
                    "auroc": r["macro_auroc"], "auprc": r["macro_auprc"],
                }  # fmt: skip
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    payload = {
        "command": f"python benchmarks/bench_probe_isolate.py {config.recipe_path()} … --tag {tag} "
        f"(run: see {out.relative_to(ROOT)}/config.yaml; summarised with --summarize)",
        "machine": "2-core CPU shared with ~7 other helpers (load average ~14): timings not meaningful, "
        "AUROCs are",
        "tag": tag,
        "steps": steps,
        "weight_drift": drift,
        "loss_curve": [{k: v for k, v in r.items() if k not in ("time", "samples_per_s")} for r in lines],
        "probe": probe,
        "effective_rank": "not measured (the run's first summary failed; --summarize reads the saved probe)",
    }
    path = ROOT / "benchmarks" / "results" / f"probe_isolate_{tag}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(json.dumps({k: payload[k] for k in ("tag", "steps", "weight_drift", "probe")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
