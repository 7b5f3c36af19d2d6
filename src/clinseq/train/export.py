"""A run's encoder as a shareable folder: its input contract, training record, model card and weights.

``clinseq export encoder RUN OUT`` (and ``RUN/encoder`` at the end of a run, ``run.export_encoder``)
write what :func:`clinseq.models.save_pretrained` describes. The contract comes from the run's config and
store (the recordings pretraining read: modality, channels in order, sampling rate, units) and its
``data.window_s``; the training record names the data (store, dataset, source, splits, patients,
recordings), the method and the steps; the model card adds the evaluation table of ``RUN/eval``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from clinseq.errors import ConfigError
from clinseq.models.pretrained import InputContract, save_pretrained
from clinseq.train.config import PretrainConfig

__all__ = ["encoder_spec", "evaluation_rows", "export_encoder", "export_run_encoder", "input_contract",
           "model_card"]  # fmt: skip


def input_contract(config: PretrainConfig, store: Any, encoder: nn.Module) -> InputContract:
    """The input contract of an encoder pretrained with ``config`` on ``store``."""
    from clinseq.train.builders import pretrain_patients, pretrain_recordings

    if config.data.sampler == "events":
        return InputContract(modality="ehr", vocab_size=getattr(encoder, "vocab_size", None))
    _, patients = pretrain_patients(store, config)
    rec = pretrain_recordings(store, config, patients)
    names, units = rec["channel_names"][0].to_list(), rec["units"][0].to_list()
    channels = config.data.channels
    if channels is None:
        picked = list(range(len(names)))
    elif all(isinstance(c, str) for c in channels):
        lookup = {n.casefold(): i for i, n in enumerate(names)}
        picked = [lookup[c.casefold()] for c in channels]
    else:
        picked = [int(c) for c in channels]
    rates = sorted(set(rec["sampling_rate_hz"].to_list()))
    if len(rates) != 1:
        raise ConfigError(
            f"{store.path}: pretraining recordings at several rates {rates} Hz; no single contract"
        )
    rate, window_s = float(rates[0]), float(config.data.window_s)
    modality = config.data.modality or rec["modality"][0]
    return InputContract(
        modality=modality,
        channels=[names[i] for i in picked],
        sampling_rate_hz=rate,
        window_s=window_s,
        window_samples=int(round(window_s * rate)),
        units=[units[i] for i in picked],
    )


def encoder_spec(config: PretrainConfig, encoder: nn.Module, contract: InputContract) -> dict[str, Any]:
    """``{"name", "kwargs", "wrapper"}``: how ``ENCODERS[name](**kwargs)`` rebuilds ``encoder``."""
    kwargs = dict(config.model.encoder_kwargs)
    wrapper = None
    if type(encoder).__name__ == "PerLeadEncoder":
        wrapper, kwargs["in_channels"] = "per_lead", 1
    elif contract.modality == "ehr":
        kwargs["vocab_size"] = contract.vocab_size
    else:
        kwargs["in_channels"] = len(contract.channels or [])
    return {"name": config.model.encoder, "kwargs": kwargs, "wrapper": wrapper}


def training_record(config: PretrainConfig, store: Any, step: int) -> dict[str, Any]:
    """The data, method and length of the pretraining (kept in ``encoder.json``)."""
    from clinseq.train.builders import pretrain_patients

    _, patients = pretrain_patients(store, config)
    manifest = getattr(store, "manifest", {}) or {}
    return {
        "data": {
            "store": str(getattr(store, "path", config.data.store)),
            "dataset": manifest.get("dataset"),
            "source": config.data.source,
            "split": config.data.split,
            "pretrain_splits": list(config.data.pretrain_splits),
            "n_patients": int(len(patients)),
            "window_s": config.data.window_s,
            "sampler": config.data.sampler,
            "views": [v.get("name") for v in config.data.views],
        },
        "method": config.method.name,
        "objective": dict(config.method.objective) if config.method.objective else None,
        "steps": int(step),
        "optim": {"lr": config.optim.lr, "weight_decay": config.optim.weight_decay},
        "seed": config.run.seed,
        "run": config.run.name,
    }


def evaluation_rows(eval_dir: str | Path) -> list[dict[str, Any]]:
    """Rows (task, seed, encoder, fraction, macro AUROC/AUPRC, 95 % CI) of ``RUN/eval/seed*/eval_*.json``."""
    rows = []
    for path in sorted(Path(eval_dir).glob("seed*/eval_*.json")):
        payload = json.loads(path.read_text())
        for name, report in payload.get("reports", {}).items():
            for r in report.get("results", []):
                auroc, auprc = r.get("macro_auroc") or {}, r.get("macro_auprc") or {}
                rows.append({
                    "task": payload.get("task"),
                    "seed": report.get("seed"),
                    "encoder": name,
                    "fraction": r.get("fraction"),
                    "auroc": auroc.get("point"),
                    "auroc_low": auroc.get("low"),
                    "auroc_high": auroc.get("high"),
                    "auprc": auprc.get("point"),
                    "n_train_subjects": r.get("n_train_subjects"),
                    "n_test_subjects": report.get("n_test_subjects"),
                })  # fmt: skip
    return rows


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else ("–" if v is None else str(v))


def model_card(
    spec: Mapping[str, Any],
    contract: InputContract,
    training: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
) -> str:
    """The Markdown model card: encoder, input, method, data, steps, evaluation, how to load."""
    data = training.get("data", {})
    lines = [
        f"# clinseq encoder: {spec['name']} pretrained with {training.get('method')}",
        "",
        "## Encoder",
        f"- registry name `{spec['name']}`"
        + (f" wrapped per lead (`{spec['wrapper']}`)" if spec.get("wrapper") else ""),
        f"- constructor arguments `{json.dumps(spec['kwargs'])}`",
        "",
        "## Input contract",
        f"- {contract.describe()}",
        '- values in physical units as the store reads them (`units="physical"`), one window per row',
        "",
        "## Training",
        f"- method `{training.get('method')}`, objective `{json.dumps(training.get('objective'))}`",
        f"- {training.get('steps')} optimizer steps, lr {training.get('optim', {}).get('lr')}, seed "
        f"{training.get('seed')}",
        f"- data: dataset `{data.get('dataset')}` (source `{data.get('source')}`), splits "
        f"{data.get('pretrain_splits')} of the `{data.get('split')}` split, {data.get('n_patients')} "
        "patients, "
        f"sampler `{data.get('sampler')}`, views {data.get('views')}",
        "",
        "## Evaluation",
    ]
    if rows:
        lines += [
            "Linear probe on held-out subjects (macro AUROC with 95 % subject-bootstrap CI).",
            "",
            "| task | seed | encoder | label fraction | AUROC [95 % CI] | AUPRC |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            ci = f"{_fmt(r['auroc'])} [{_fmt(r['auroc_low'])}, {_fmt(r['auroc_high'])}]"
            lines.append(
                f"| {r['task']} | {r['seed']} | {r['encoder']} | {_fmt(r['fraction'])} | {ci} "
                f"| {_fmt(r['auprc'])} |"
            )
    else:
        lines.append("Not evaluated (the run has no `eval/` results).")
    lines += [
        "",
        "## Use",
        "```python",
        "from clinseq.models import load_pretrained",
        'encoder = load_pretrained("path/to/this/folder", check=store)  # raises on a contract mismatch',
        "z = encoder.embed(x)  # x: (B, C, T) windows as above → (B, embed_dim)",
        "```",
        "",
    ]
    return "\n".join(lines)


def export_encoder(
    encoder: nn.Module,
    config: PretrainConfig,
    store: Any,
    out: str | Path,
    *,
    step: int,
    eval_dir: str | Path | None = None,
) -> Path:
    """Write ``encoder`` (pretrained with ``config`` on ``store`` for ``step`` steps) to ``out``."""
    contract = input_contract(config, store, encoder)
    spec = encoder_spec(config, encoder, contract)
    training = training_record(config, store, step)
    rows = evaluation_rows(eval_dir) if eval_dir is not None else []
    if rows:
        training["evaluation"] = rows
    card = model_card(spec, contract, training, rows)
    return save_pretrained(
        encoder, out, name=spec["name"], kwargs=spec["kwargs"], wrapper=spec["wrapper"], contract=contract,
        training=training, card=card,
    )  # fmt: skip


def export_run_encoder(run_dir: str | Path, out: str | Path, store: str | Path | None = None) -> Path:
    """``clinseq export encoder RUN OUT``: the latest checkpoint's encoder of a saved run."""
    from clinseq.train.restore import load_run

    run = load_run(run_dir, store=store)
    return export_encoder(
        run.encoders["pretrained"], run.config, run.store, out, step=run.step, eval_dir=Path(run_dir) / "eval"
    )
