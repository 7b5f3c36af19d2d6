"""The ``clinseq`` command line: convert sources into stores, inspect them, pretrain, benchmark.

Heavy modules are imported inside each command so that ``clinseq --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clinseq.utils import ClinseqError


def _add_convert_options(parser: argparse.ArgumentParser, *, parallel: bool = True) -> None:
    parser.add_argument("src", type=Path, help="source folder in its publisher's layout")
    parser.add_argument("out", type=Path, help="store folder to create (must not exist)")
    if parallel:
        parser.add_argument("--workers", type=int, default=1, help="reader processes (default 1)")
        parser.add_argument(
            "--on-error",
            choices=("raise", "skip"),
            default="raise",
            help="stop at the first bad file (raise) or list it in the manifest and go on (skip)",
        )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _add_events_options(parser: argparse.ArgumentParser) -> None:
    """Parallelism and sharding of the EHR converters (defaults: the library's)."""
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="threads converting tables and sorting shards (default: the CPU count, at most 4)",
    )
    parser.add_argument(
        "--subjects-per-shard",
        type=_positive_int,
        default=None,
        metavar="N",
        help="subjects per events/data shard (default: the converter's)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clinseq", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="convert a source dataset into a timeline store")
    kinds = convert.add_subparsers(dest="kind", required=True)
    ptbxl = kinds.add_parser("ptbxl", help="PTB-XL (ptbxl_database.csv + records100/records500)")
    _add_convert_options(ptbxl)
    ptbxl.add_argument("--sampling-rate-hz", type=int, default=100, help="100 (records100) or 500")
    wfdb = kinds.add_parser("wfdb", help="any folder of WFDB records (RECORDS file or *.hea)")
    _add_convert_options(wfdb)
    wfdb.add_argument("--modality", default="ecg")
    mimic_ecg = kinds.add_parser("mimic-iv-ecg", help="MIMIC-IV-ECG (record_list.csv + files/p…/p…/s…)")
    _add_convert_options(mimic_ecg)
    eeg = kinds.add_parser("eeg", help="EEG files read through mne (EDF/BDF...; EEGMMIDB, TUH, EEGMAT)")
    _add_convert_options(eeg)
    eeg.add_argument("--layout", default="auto", help="auto, eegmmidb, tuh, eegmat or flat")
    eeg.add_argument("--resample-hz", type=float, default=None, help="resample every recording to this rate")
    mimic = kinds.add_parser("mimic-iv", help="MIMIC-IV hosp/ and icu/ tables → MEDS events")
    _add_convert_options(mimic, parallel=False)
    mimic.add_argument("--tables", nargs="+", default=None, help="only these tables (default: all present)")
    mimic.add_argument("--on-error", choices=("raise", "skip"), default="raise")
    _add_events_options(mimic)
    meds = kinds.add_parser("meds", help="import any MEDS v0.4 dataset")
    _add_convert_options(meds, parallel=False)
    _add_events_options(meds)

    export = commands.add_parser("export", help="export a store's events")
    export_kinds = export.add_subparsers(dest="kind", required=True)
    export_meds = export_kinds.add_parser("meds", help="write the store's events as a MEDS v0.4 dataset")
    export_meds.add_argument("store", type=Path)
    export_meds.add_argument("out", type=Path)

    info = commands.add_parser("info", help="print a store's summary")
    info.add_argument("store", type=Path)

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

    bench = commands.add_parser("bench", help="run throughput benchmarks (tables + JSON + PNG)")
    bench.add_argument(
        "suites", nargs="+", choices=("reads", "loader", "loss", "encoder", "pretrain", "ehr", "all")
    )
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


def _convert(args: argparse.Namespace) -> Path:
    from clinseq.io.convert import convert

    progress = not args.quiet
    if args.kind in ("mimic-iv", "meds"):
        # Only what was given is passed on: the converters keep their own defaults.
        options = {"workers": args.workers}
        if args.subjects_per_shard is not None:
            options["subjects_per_shard"] = args.subjects_per_shard
        if args.kind == "mimic-iv":
            from clinseq.io.mimic_iv import convert_mimic_iv

            return convert_mimic_iv(
                args.src, args.out, tables=args.tables, on_error=args.on_error, progress=progress, **options
            )
        from clinseq.io.meds import import_meds

        return import_meds(args.src, args.out, progress=progress, **options)
    if args.kind == "ptbxl":
        from clinseq.io.ptbxl import PTBXLSource

        source = PTBXLSource(args.src, sampling_rate_hz=args.sampling_rate_hz)
    elif args.kind == "wfdb":
        from clinseq.io.wfdb_folder import WFDBSource

        source = WFDBSource(args.src, modality=args.modality)
    elif args.kind == "mimic-iv-ecg":
        from clinseq.io.wfdb_folder import MIMICIVECGSource

        source = MIMICIVECGSource(args.src)
    else:
        from clinseq.io.eeg import EEGSource

        source = EEGSource(args.src, layout=args.layout, resample_hz=args.resample_hz)
    return convert(source, args.out, workers=args.workers, on_error=args.on_error, progress=progress)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "convert":
            from clinseq.timeline import TimelineStore

            path = _convert(args)
            print(TimelineStore.open(path).summary())
        elif args.command == "export":
            from clinseq.io.meds import export_meds

            print(f"wrote {export_meds(args.store, args.out)}")
        elif args.command == "pretrain":
            from clinseq.train.run import resolve_run, run_recipe

            config, resume = resolve_run(
                args.config, profile=args.profile, overrides=args.overrides, out=args.out, resume=args.resume
            )
            run_recipe(config, resume=resume)
        elif args.command == "bench":
            from clinseq.bench import main as bench_main

            return bench_main(args.suites, device=args.device, quick=args.quick, out_dir=args.out)
        elif args.command == "info":
            from clinseq.timeline import TimelineStore

            print(TimelineStore.open(args.store).summary())
    except ClinseqError as exc:
        print(f"clinseq: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
