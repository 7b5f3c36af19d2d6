"""The ``clinseq`` command line: convert sources into stores, inspect them, pretrain, evaluate, benchmark.

Heavy modules are imported inside each command so that ``clinseq --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clinseq.bench import SUITES
from clinseq.errors import ClinseqError, ConfigError
from clinseq.io.sources import SOURCES, positive_int


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clinseq", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="convert a source dataset into a timeline store")
    kinds = convert.add_subparsers(dest="kind", required=True)
    for name, spec in SOURCES.items():
        kind = kinds.add_parser(name, help=spec.help)
        kind.add_argument("src", type=Path, help="source folder in its publisher's layout")
        kind.add_argument("out", type=Path, help="store folder to create (must not exist)")
        for option in spec.options:
            kind.add_argument(option.flag, **option.argparse_kwargs())
        kind.add_argument("--quiet", action="store_true", help="no progress bar")

    _add_download(commands)

    export = commands.add_parser("export", help="export a store's events (meds) or a run's encoder (encoder)")
    export_kinds = export.add_subparsers(dest="kind", required=True)
    export_meds = export_kinds.add_parser("meds", help="write the store's events as a MEDS v0.4 dataset")
    export_meds.add_argument("store", type=Path)
    export_meds.add_argument("out", type=Path)
    export_encoder = export_kinds.add_parser(
        "encoder",
        help="write a run's encoder alone: safetensors weights, encoder.json (name, arguments, input "
        "contract, training data) and a model card; clinseq.models.load_pretrained reads it",
    )
    export_encoder.add_argument("run", type=Path, help="run folder (config.yaml + checkpoints/)")
    export_encoder.add_argument("out", type=Path, help="folder to write")
    export_encoder.add_argument("--store", type=Path, help="the store (default the run's data.store)")

    info = commands.add_parser("info", help="print a store's summary")
    info.add_argument("store", type=Path)

    verify = commands.add_parser(
        "verify",
        help="check every file of a store against the sizes and checksums in its manifest",
        description="Reads every byte of the store: each signal part and table against the SHA-256 "
        "recorded as it was written, every other file against its size. Exit 2 on any mismatch.",
    )
    verify.add_argument("store", type=Path)

    pretrain = commands.add_parser(
        "pretrain",
        help="self-supervised pretraining from a recipe config (then a linear probe on PTB-XL)",
        description="Run a recipe: recipes/<family>/<method>.yaml names the script (recipe:, relative to the "
        "file), the data, the model, the method and the schedule. Under torchrun each process runs it.",
    )
    pretrain.add_argument("config", nargs="?", type=Path, help="recipe YAML, e.g. recipes/ptbxl/pclr.yaml")
    pretrain.add_argument("--profile", help="a named override set of the config, e.g. smoke")
    pretrain.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (type-checked), e.g. --set optim.lr=3e-4; repeatable",
    )
    pretrain.add_argument("--out", type=Path, help="run folder (default runs/<run.name>)")
    pretrain.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue RUN_DIR from its latest checkpoint, exactly"
    )

    evaluate = commands.add_parser(
        "eval",
        help="re-evaluate a run's checkpoint on labelled tasks (pretrained vs random init), no retraining",
        description="Linear probe of the run's latest checkpoint and of the same encoder at its random "
        "init, at label fractions, subject-level splits, AUROC/AUPRC with subject-bootstrap CIs. Writes "
        "RUN/eval/seed<k>/eval_<task>.json and a plot.",
    )
    evaluate.add_argument("run", type=Path, help="run folder (config.yaml + checkpoints/)")
    evaluate.add_argument(
        "--task", dest="tasks", action="append", default=[], metavar="NAME",
        help="a task of clinseq.eval.TASKS, e.g. ptbxl/superdiagnostic, eegmat/condition; repeatable "
        "(default: the run's eval.tasks, else the store's usual tasks)",
    )  # fmt: skip
    evaluate.add_argument(
        "--labels", action="append", default=[], type=Path, metavar="FILE",
        help="a labels table (Parquet/CSV): recording_id + labels, or the MEDS label schema; repeatable",
    )  # fmt: skip
    _add_run_options(evaluate)
    evaluate.add_argument("--out", type=Path, help="result folder (default RUN/eval)")
    evaluate.add_argument("--fractions", type=float, nargs="+", help="label fractions (default the run's)")
    evaluate.add_argument("--seeds", type=int, nargs="+", help="label-fraction seeds (default the run's)")
    evaluate.add_argument("--n-boot", type=int, help="bootstrap resamples (default the run's eval.n_boot)")
    evaluate.add_argument("--folds", type=int, help="subject folds when a task has no split")

    embed = commands.add_parser(
        "embed",
        help="write a run's embeddings of a store as Parquet (recording_id/patient_id + embedding)",
        description="One embedding per recording (mean over the run's windows), or per example of a task.",
    )
    embed.add_argument("store", type=Path, help="the store to embed")
    embed.add_argument("run", type=Path, help="run folder (config.yaml + checkpoints/)")
    embed.add_argument("out", type=Path, help="Parquet file to write")
    embed.add_argument("--task", help="embed this task's examples (default: every recording)")
    embed.add_argument("--labels", type=Path, metavar="FILE", help="embed the examples of a labels table")
    embed.add_argument(
        "--weights", choices=("pretrained", "random-init"), default="pretrained", help="which encoder"
    )
    embed.add_argument("--device", default=None, help="e.g. cuda (default cpu)")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")

    _add_meds_commands(commands)

    bench = commands.add_parser("bench", help="run throughput benchmarks (tables + JSON + PNG)")
    bench.add_argument("suites", nargs="+", choices=(*SUITES, "all"))
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    bench.add_argument("--quick", action="store_true", help="small sizes (minutes on a 2-core CPU)")
    bench.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="result folder (default benchmarks/results, or benchmarks/results/quick with --quick)",
    )
    return parser


def _add_download(commands) -> None:
    from clinseq.io.physionet import DATASETS

    download = commands.add_parser(
        "download",
        help="fetch a PhysioNet dataset into its publisher's layout, verified against its SHA256SUMS.txt",
        description="Fetch DATASET from PhysioNet (or --base-url / $CLINSEQ_PHYSIONET_URL, a mirror with "
        "PhysioNet's files/<db>/<version>/ layout) into DEST, exactly as `clinseq convert` reads it. Every "
        "file is checked against the dataset's SHA256SUMS.txt; running it again resumes (complete files are "
        "not fetched again). Credentialed sets: --user or $PHYSIONET_USER, password from "
        "$PHYSIONET_PASSWORD, ~/.netrc or a prompt.",
    )
    download.add_argument("dataset", choices=sorted(DATASETS), help="the dataset")
    download.add_argument("dest", type=Path, help="folder to fill (created; an earlier download is resumed)")
    download.add_argument(
        "--subset", dest="subsets", nargs="+", metavar="FOLDER",
        help="only these top-level folders (ptbxl: records100 records500; mimic-iv(-demo): hosp icu)",
    )  # fmt: skip
    download.add_argument(
        "--records", type=positive_int, metavar="N",
        help="only the first N units (ptbxl, mimic-iv-ecg(-demo): ECGs; eegmat, eegmmidb: subjects); the "
        "index tables are rewritten to them, the originals kept under DEST/.clinseq-download/originals/",
    )  # fmt: skip
    download.add_argument(
        "--base-url", help="replaces https://physionet.org (default $CLINSEQ_PHYSIONET_URL)"
    )
    download.add_argument("--version", dest="release", help="the release (default: the one clinseq reads)")
    download.add_argument("--user", help="PhysioNet user of a credentialed set (default $PHYSIONET_USER)")
    download.add_argument("--workers", type=positive_int, default=4, help="parallel transfers (default 4)")
    download.add_argument(
        "--on-error", choices=("raise", "skip"), default="raise",
        help="stop at the first file that fails (raise) or list it in DEST/.clinseq-download.json and go on",
    )  # fmt: skip
    download.add_argument("--quiet", action="store_true", help="no progress bar")


def _download(args: argparse.Namespace) -> None:
    from clinseq.io.download import PROVENANCE_FILE, download

    record = download(
        args.dataset, args.dest, subsets=args.subsets, records=args.records, base_url=args.base_url,
        version=args.release, user=args.user, workers=args.workers, on_error=args.on_error,
        progress=not args.quiet,
    )  # fmt: skip
    print(
        f"{args.dest}: {record['dataset']} {record['version']} from {record['url_root']}: "
        f"{record['files_verified']} files verified against SHA256SUMS.txt "
        f"({record['files_fetched_now']} fetched now, {record['files_already_present']} already there)"
    )
    for skipped in record["skipped"]:
        print(f"skipped {skipped['path']}: {skipped['reason']}")
    print(f"provenance: {args.dest / PROVENANCE_FILE}\nnext: {record['convert']}")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, help="the store to use (default the run's data.store)")
    parser.add_argument("--device", default=None, help="e.g. cuda (default cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_meds_commands(commands: argparse._SubParsersAction) -> None:
    """``clinseq meds …``: ACES labels, the MEDS-DEV model steps, meds-evaluation scoring."""
    meds = commands.add_parser(
        "meds",
        help="MEDS tasks: ACES labels, MEDS-DEV model steps (pretrain/train/predict), meds-evaluation",
        description="EHR tasks in MEDS terms. The MEDS-DEV model entry recipes/meds_dev/clinseq/model.yaml "
        "runs pretrain, train and predict; labels and evaluate need the [meds] extra (ACES, "
        "meds-evaluation).",
    )
    steps = meds.add_subparsers(dest="step", required=True)
    labels = steps.add_parser("labels", help="extract a task's labels with ACES (MEDS label schema Parquet)")
    labels.add_argument("task", help="a MEDS-DEV task name (e.g. mortality/in_icu/first_24h) or an ACES YAML")
    labels.add_argument("data", type=Path, help="a clinseq EHR store or a MEDS dataset")
    labels.add_argument("out", type=Path, help="labels Parquet file to write")
    labels.add_argument(
        "--predicates", type=Path, help="ACES predicates YAML (default for MEDS-DEV names: MIMIC-IV)"
    )
    pre = steps.add_parser(
        "pretrain", help="MEDS-DEV unsupervised train: import the dataset, pretrain a recipe"
    )
    pre.add_argument("dataset_dir", type=Path, help="MEDS dataset root (data/, metadata/)")
    pre.add_argument("output_dir", type=Path, help="receives store/ and run/")
    pre.add_argument(
        "--config", type=Path, required=True, help="recipe YAML, e.g. recipes/mimic_iv/patient_contrast.yaml"
    )
    pre.add_argument("--profile", help="a profile of the recipe, e.g. smoke")
    pre.add_argument("--demo", default="false", help="MEDS-DEV's {demo}: true selects the smoke profile")
    pre.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    train = steps.add_parser("train", help="MEDS-DEV supervised train: probe on frozen embeddings")
    predict = steps.add_parser("predict", help="MEDS-DEV supervised predict: predictions.parquet")
    for step in (train, predict):
        step.add_argument("dataset_dir", type=Path, help="MEDS dataset root (the one pretrained on)")
        step.add_argument("labels_dir", type=Path, help="MEDS label Parquet file(s) of the task")
        step.add_argument("output_dir", type=Path)
        step.add_argument("--init", type=Path, required=True, help="the previous step's output_dir")
    predict.add_argument("--split", default="held_out", help="MEDS split whose labels are predicted")
    evaluate = steps.add_parser("evaluate", help="score a predictions Parquet with meds-evaluation")
    evaluate.add_argument("predictions", type=Path)
    evaluate.add_argument("--out", type=Path, help="write the metrics JSON here")


def _meds(args: argparse.Namespace) -> int:
    if args.step == "labels":
        from clinseq.eval.meds_labels import aces_labels

        labels = aces_labels(args.task, args.data, predicates=args.predicates, out=args.out)
        print(
            f"wrote {args.out}: {labels.height} predictions, {int(labels['boolean_value'].sum())} positive, "
            f"{labels['subject_id'].n_unique()} subjects"
        )
        return 0
    if args.step == "evaluate":
        import json

        import polars as pl

        from clinseq.eval.meds_predictions import score_predictions

        if not args.predictions.is_file():
            raise ConfigError(f"{args.predictions}: no such predictions file")
        metrics = score_predictions(pl.read_parquet(args.predictions))
        text = json.dumps(metrics, indent=1, default=float)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
        for weighting, values in metrics.items():
            scalars = {k: round(float(v), 4) for k, v in values.items() if isinstance(v, (int, float))}
            print(weighting, scalars)
        return 0
    from clinseq.train import meds_dev

    if args.step == "pretrain":
        demo = str(args.demo).strip().lower() in ("1", "true", "yes")
        profile = args.profile or ("smoke" if demo else None)
        run = meds_dev.pretrain(
            args.dataset_dir, args.output_dir, args.config, profile=profile, overrides=args.overrides
        )
        print(f"pretrained {run}")
    elif args.step == "train":
        print(f"probe in {meds_dev.fit_probe(args.labels_dir, args.output_dir, args.init)}")
    else:
        print(f"wrote {meds_dev.predict(args.labels_dir, args.output_dir, args.init, split=args.split)}")
    return 0


def _tasks(args: argparse.Namespace, run) -> list:
    """The tasks named on the command line, else the run's eval.tasks, else the store's usual ones."""
    from clinseq.eval import LabelsTable, default_tasks, get_task

    tasks = [get_task(name) for name in args.tasks] + [LabelsTable(path) for path in args.labels]
    if tasks:
        return tasks
    names = run.config.eval.tasks if run.config.eval.enabled else []
    names = names or default_tasks(run.store.manifest.get("dataset"))
    if not names:
        raise ClinseqError(
            f"no task for a {run.store.manifest.get('dataset')!r} store: name one (--task) or bring labels "
            "(--labels FILE)"
        )
    return [get_task(name) for name in names]


def _encoder_options(run, device: str | None, progress: bool) -> dict:
    """How the run's recipe embedded: data.window_s and data.channels, unless its eval.options override."""
    options = {"window_s": run.config.data.window_s, "channels": run.config.data.channels}
    options.update({k: v for k, v in run.config.eval.options.items() if k in options})
    return {**options, "device": device, "progress": progress}


def _eval(args: argparse.Namespace) -> None:
    from clinseq.eval import EvalOptions, evaluate
    from clinseq.train.restore import load_run

    run = load_run(args.run, store=args.store)
    tasks = _tasks(args, run)
    cfg = run.config.eval
    # As the recipe: the run's embedding settings, then its eval.options, then the command line.
    options = {**_encoder_options(run, args.device, not args.quiet), **cfg.options}
    if args.folds is not None:
        options["folds"] = args.folds
    options = EvalOptions(
        fractions=args.fractions or cfg.fractions,
        seeds=args.seeds or cfg.seeds,
        n_boot=cfg.n_boot if args.n_boot is None else args.n_boot,
        **options,
    )
    out = args.out or args.run / "eval"
    print(f"{args.run}: checkpoint step {run.step}; store {run.store.path}")
    for task in tasks:
        task.check_store(run.store)
        evaluate(run.featurizers, run.store, task, options, out_dir=out)
    print(f"wrote {out}")


def _embed(args: argparse.Namespace) -> None:
    from clinseq.eval import EncoderFeatures, LabelsTable, all_recordings, embedding_table, get_task
    from clinseq.train.restore import load_run

    run = load_run(args.run, store=args.store)
    if args.task and args.labels:
        raise ClinseqError("pass --task or --labels, not both")
    if args.task or args.labels:
        task = get_task(args.task) if args.task else LabelsTable(args.labels)
        task.check_store(run.store)
        examples = task.examples(run.store)
    elif run.config.data.sampler == "events":
        raise ClinseqError(
            f"{args.run} is an EHR run: its examples are (subject_id, prediction_time) labels; pass --task "
            "(e.g. mimic-iv/mortality/in_icu/first_24h) or --labels FILE (MEDS label schema)"
        )
    else:
        examples = all_recordings(run.store, run.config.data.modality)
    name = "pretrained" if args.weights == "pretrained" else "random init"
    if run.config.data.sampler == "events":  # the events up to each prediction time
        featurize = run.featurizers[name]
    else:
        embedding = {
            k: run.config.eval.options[k] for k in ("window_s", "channels") if k in run.config.eval.options
        }
        featurize = EncoderFeatures(
            run.encoders[name], **{**_encoder_options(run, args.device, not args.quiet), **embedding}
        )
    table = embedding_table(featurize(run.store, examples), examples)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.write_parquet(args.out)
    print(f"wrote {args.out}: {table.height} embeddings of dimension {len(table['embedding'][0])}")


def _convert(args: argparse.Namespace) -> Path:
    spec = SOURCES[args.kind]
    options = {option.keyword: getattr(args, option.keyword) for option in spec.options}
    return spec.convert(args.src, args.out, progress=not args.quiet, **options)


def _verify(store_path: Path) -> None:
    from clinseq.timeline import TimelineStore

    store = TimelineStore.open(store_path)
    problems = store.verify()
    if problems:
        raise ClinseqError(
            f"{store_path}: {len(problems)} problem(s):\n  "
            + "\n  ".join(problems)
            + "\nthe store is damaged: convert the source again"
        )
    n = len(store.manifest.get("files") or {})
    print(f"{store_path}: ok, {n} files match their recorded sizes and checksums")


def _os_error(exc: OSError) -> str:
    """One line for an operating-system error that reached the command line (a full disk, a folder
    where a file was expected, a permission): the file and the problem."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "convert":
            from clinseq.timeline import TimelineStore

            path = _convert(args)
            print(TimelineStore.open(path).summary())
        elif args.command == "download":
            _download(args)
        elif args.command == "export" and args.kind == "encoder":
            from clinseq.train.export import export_run_encoder

            print(f"wrote {export_run_encoder(args.run, args.out, store=args.store)}")
        elif args.command == "export":
            from clinseq.io.meds import export_meds

            print(f"wrote {export_meds(args.store, args.out)}")
        elif args.command == "pretrain":
            from clinseq.train.run import resolve_run, run_recipe

            config, resume = resolve_run(
                args.config, profile=args.profile, overrides=args.overrides, out=args.out, resume=args.resume
            )
            run_recipe(config, resume=resume)
        elif args.command == "eval":
            _eval(args)
        elif args.command == "embed":
            _embed(args)
        elif args.command == "meds":
            return _meds(args)
        elif args.command == "bench":
            from clinseq.bench import main as bench_main

            return bench_main(args.suites, device=args.device, quick=args.quick, out_dir=args.out)
        elif args.command == "info":
            from clinseq.timeline import TimelineStore

            print(TimelineStore.open(args.store).summary())
        elif args.command == "verify":
            _verify(args.store)
    except ClinseqError as exc:
        print(f"clinseq: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"clinseq: error: {_os_error(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
