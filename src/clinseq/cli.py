"""The ``clinseq`` command line: convert sources into stores, inspect them, pretrain, benchmark.

Heavy modules are imported inside each command so that ``clinseq --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clinseq.io.sources import SOURCES
from clinseq.utils import ClinseqError


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
    spec = SOURCES[args.kind]
    options = {option.keyword: getattr(args, option.keyword) for option in spec.options}
    return spec.convert(args.src, args.out, progress=not args.quiet, **options)


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
