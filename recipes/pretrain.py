"""Self-supervised pretraining recipe: setup → train → evaluate → cleanup.

One script for every method; the YAML config says which (``method.name``), on what data, with which
encoder and for how long. Run it through the CLI or directly, on one process or under torchrun::

    clinseq pretrain recipes/ptbxl/pclr.yaml --profile smoke
    clinseq pretrain recipes/ptbxl/pclr.yaml --set data.root=/data/ptbxl --set optim.lr=3e-4 --out runs/pclr
    clinseq pretrain --resume runs/pclr
    torchrun --nproc_per_node 4 recipes/pretrain.py recipes/ptbxl/pclr.yaml

The run folder receives ``config.yaml`` (the resolved config), ``run_info.json`` (git commit, package
versions), ``metrics.jsonl`` (and ``tensorboard/``, wandb, MLflow: ``run.loggers``), ``checkpoints/``,
``summary.json`` (where the time went, throughput, peak memory), ``encoder/`` (the encoder alone:
safetensors + input contract + model card; ``clinseq.models.load_pretrained``) and
``eval/seed<k>/`` (for each task of ``eval.tasks``: a linear probe of the pretrained encoder against the
same encoder at its random initialisation, on held-out subjects, with bootstrap CIs; JSON + plot).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch

from clinseq.train import (
    PretrainConfig,
    Trainer,
    build_data,
    check_eval_store,
    cleanup_distributed,
    config_to_dict,
    init_distributed,
    lock_run_folder,
    method_class,
    prepare_store,
    resolve_run,
    save_config,
    validate_components,
)
from clinseq.train.export import evaluation_rows, export_encoder
from clinseq.train.loggers import build_loggers, run_info


class PretrainRecipe:
    """The four phases of a pretraining run, each a short method over library parts."""

    def __init__(self, config: PretrainConfig, resume: bool = False) -> None:
        self.config, self.resume = config, resume

    def setup(self) -> None:
        cfg = self.config
        validate_components(cfg)  # every keyword checked before anything is read or built
        self.ctx = init_distributed(cfg.run.device)
        self.threads = torch.get_num_threads()  # restored by cleanup (the recipe may run in-process)
        if cfg.run.num_threads:
            torch.set_num_threads(cfg.run.num_threads)
        self.run_dir = cfg.run_dir()
        if self.ctx.is_main:
            self.lock = lock_run_folder(self.run_dir)  # one run per folder; released by cleanup
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml", " ".join(sys.argv))

        self.store = prepare_store(cfg, self.ctx, progress=cfg.train.progress and self.ctx.is_main)
        check_eval_store(cfg, self.store)
        method_cls = method_class(cfg.method.name)
        # Methods that cut one read into adjacent segments (PMQ, CLOCS) read several windows at once.
        self.data = build_data(cfg, self.store, self.ctx, window_s=method_cls.read_window_s(cfg))

        torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank and on every resume
        method = method_cls.build(cfg, self.data)
        self.initial_encoder = copy.deepcopy(method.encoder)  # the random-init baseline of the probe
        if self.ctx.distributed and self.ctx.device.type == "cuda" and cfg.model.sync_batchnorm:
            method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
        self.method = method
        self.trainer = Trainer(
            method, self.data.loader, cfg.train, cfg.optim, self.run_dir, self.ctx,
            seed=cfg.run.seed, config=config_to_dict(cfg),
        )  # fmt: skip
        step = self.trainer.load_checkpoint() if self.resume else None
        if self.resume and self.ctx.is_main:
            print(f"resumed {self.run_dir} at step {step}")
        # Rank 0 only; a chosen tracker that is not installed is reported once and left out.
        self.loggers = build_loggers(
            cfg.run.loggers, self.run_dir, is_main=self.ctx.is_main, run_name=cfg.run.name,
            project=cfg.run.project, resume_step=step, tracking_uri=cfg.run.tracking_uri,
            wandb_mode=cfg.run.wandb_mode,
        )  # fmt: skip
        self.trainer.loggers = self.loggers
        self.loggers.log_config(config_to_dict(cfg), run_info(self.ctx.device, self.ctx.world_size))

    def train(self):
        return self.trainer.fit()

    def evaluate(self):
        """Probe on held-out subjects, every task of ``eval.tasks``: pretrained vs the same encoder at
        random init (rank 0)."""
        cfg = self.config
        if not (cfg.eval.enabled and self.ctx.is_main):
            return None
        from clinseq.eval import EvalOptions, evaluate
        from clinseq.train.restore import eval_featurizers

        encoders = {"pretrained": self.method.encoder}
        if cfg.eval.compare_random_init:
            encoders["random init"] = self.initial_encoder
        # Embedding defaults to the pretraining window and channels; eval.options may override them.
        embed = {"window_s": cfg.data.window_s, "channels": cfg.data.channels, "progress": cfg.train.progress}
        options = EvalOptions(
            fractions=cfg.eval.fractions, seeds=cfg.eval.seeds, n_boot=cfg.eval.n_boot,
            device=self.ctx.device, **{**embed, **cfg.eval.options},
        )  # fmt: skip
        # EHR runs: each encoder reads the events up to each prediction time, beside the code-count baseline.
        rows = eval_featurizers(cfg, self.data.dataset, encoders, self.ctx.device)
        # Each row is embedded once per task; every seed redraws only the label-fraction subjects.
        reports = {
            task: evaluate(rows, self.store, task, options, out_dir=self.run_dir / "eval")
            for task in cfg.eval.tasks
        }
        table = evaluation_rows(self.run_dir / "eval")
        for task in cfg.eval.tasks:
            self.loggers.log_table(f"eval/{task}", [r for r in table if r["task"] == task])
        return reports

    def export(self):
        """The encoder alone to ``RUN/encoder`` (rank 0; ``run.export_encoder``)."""
        cfg = self.config
        if not (cfg.run.export_encoder and self.ctx.is_main):
            return None
        return export_encoder(
            self.method.encoder, cfg, self.store, self.run_dir / "encoder", step=self.trainer.step,
            eval_dir=self.run_dir / "eval",
        )  # fmt: skip

    def summarize(self):
        """Print and keep the end-of-run summary: time per phase, throughput, peak memory (rank 0)."""
        summary = self.trainer.summary
        if summary is None or not self.ctx.is_main:
            return summary
        print(summary.format())
        summary.save(self.run_dir)
        self.loggers.log_table("run_summary", summary.rows())
        return summary

    def cleanup(self) -> None:
        """Stop the loader's workers, restore the thread count and close the process group (also after a
        failed setup)."""
        if hasattr(self, "loggers"):
            self.loggers.close()
        if hasattr(self, "data"):
            self.data.loader.close()
        if hasattr(self, "threads"):
            torch.set_num_threads(self.threads)
        if hasattr(self, "ctx"):
            cleanup_distributed(self.ctx)
        if hasattr(self, "lock"):
            self.lock.release()


def run(config: PretrainConfig, resume: bool = False) -> dict:
    """Run the recipe; returns ``{"train": TrainResult, "eval": {task: Evaluation} or None, "encoder": the
    exported folder or None, "summary": RunSummary}``."""
    recipe = PretrainRecipe(config, resume)
    try:
        recipe.setup()
        result = recipe.train()
        if recipe.ctx.is_main:
            loss = result.last_metrics.get("loss", float("nan"))
            print(f"trained {result.step} steps; last loss {loss:.4f}; run folder {result.run_dir}")
        recipe.trainer.eager_encoder()  # evaluation embeds other shapes: no recompilation
        t = time.perf_counter()
        reports = recipe.evaluate()
        if recipe.trainer.summary is not None:
            recipe.trainer.summary.add_phase("eval", time.perf_counter() - t)
        t = time.perf_counter()
        exported = recipe.export()
        if exported is not None:
            print(f"exported the encoder to {exported} (clinseq.models.load_pretrained)")
            recipe.trainer.summary.add_phase("export", time.perf_counter() - t)
        summary = recipe.summarize()
    finally:
        recipe.cleanup()
    return {"train": result, "eval": reports, "encoder": exported, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", help="recipe YAML (optional with --resume)")
    parser.add_argument("--profile", help="a profile of the config, e.g. smoke")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="run folder (default runs/<run.name>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its latest checkpoint")
    args = parser.parse_args(argv)
    config, resume = resolve_run(
        args.config, profile=args.profile, overrides=args.overrides, out=args.out, resume=args.resume
    )
    run(config, resume=resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
