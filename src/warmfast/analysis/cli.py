"""`warmfast report RUN_DIR_OR_CSVS... --output-dir DIR`: the analysis report of a run or of CSV files."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from warmfast.analysis.load import read_study_csvs
from warmfast.analysis.preprocess import PreprocessConfig
from warmfast.analysis.report import ReportSettings, analyse, write_report
from warmfast.analysis.store_reader import find_store, read_store
from warmfast.cli_common import output_dir_arg

log = logging.getLogger("warmfast.report")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="analyse judged outputs; HTML + Markdown report beside the published results",
        description="Inputs: CSV files or folders in the study's layout (<model>/<arm>/<task>_<arm>_outputs.csv), "
                    "or a warmfast run directory holding a results store.")
    p.add_argument("inputs", nargs="+", help="run directory, CSV files, or folders of *_outputs.csv")
    output_dir_arg(p, "--out", required=True, dest="out", help="output folder (report.html, summary.md, figures/, tables/)")
    p.add_argument("--sociot", help="CSV of SocioT warmth per checkpoint: model, epoch, warmth, se")
    p.add_argument("--benchmarks", help="CSV of capability benchmarks: model, benchmark, arm, accuracy, "
                                        "ci_lower, ci_upper")
    p.add_argument("--protocol", help="protocol.json whose refusal phrase list to use (default: the shipped copy)")
    p.add_argument("--refusal", choices=("compat", "clean"), default="clean",
                   help="refusal rule of this report's own figures: clean (ours, default: literal phrases) or "
                        "compat (the authors' phrases as regular expressions). Figures beside published values "
                        "always use compat; other settings add labelled columns")
    p.add_argument("--pool-neutral", action=argparse.BooleanOptionalAction, default=True,
                   help="pool the neutral-sentence prompts into the belief-absent unmodified paired cell (PROTOCOL; "
                        "default) or not (--no-pool-neutral, as the published tables). Figures beside published "
                        "values are always unpooled")
    p.add_argument("--m4-formula", choices=("published", "released-script"), default="published",
                   help="M4 of this report's own figures: the paper's full-data formula (default) or the authors' "
                        "released sample script (no context term)")
    p.add_argument("--judge", help="which judge's evaluations to use when a run store holds several")
    p.add_argument("--title", default="warmfast report: warmth study")
    p.set_defaults(func=run_report)


def _read_optional(path: str | None, what: str) -> pd.DataFrame | None:
    if path is None:
        return None
    if not Path(path).is_file():
        raise SystemExit(f"warmfast report: --{what} file {path} does not exist")
    return pd.read_csv(path)


def load_inputs(inputs: list[str], judge: str | None = None) -> tuple[pd.DataFrame, list[tuple[str, str]], list[str]]:
    """Run directories (or store files) through the store reader, everything else as CSV files or
    folders in the study's layout. Returns the judged frame, notes on rows left out, and warnings
    for the report's head (a run whose subject model judged its own answers)."""
    frames, notes, csvs, warnings = [], [], [], []
    for item in inputs:
        store = find_store(Path(item))
        if store is not None:
            export = read_store(store, judge)
            frames.append(export.judged)
            notes += export.notes
            warnings += export.warnings
        else:
            csvs.append(item)
    if csvs:
        frames.append(read_study_csvs(csvs))
    return pd.concat(frames, ignore_index=True), notes, warnings


def run_report(args: argparse.Namespace) -> int:
    judged, notes, warnings = load_inputs(args.inputs, args.judge)
    config = PreprocessConfig.from_protocol(args.protocol) if args.protocol else PreprocessConfig()
    settings = ReportSettings(args.refusal, args.pool_neutral, args.m4_formula)
    analysis = analyse(judged, config, input_notes=notes, settings=settings)
    for w in warnings:
        log.warning("warmfast report: %s", w)
    paths = write_report(analysis, args.out, [str(i) for i in args.inputs],
                         sociot=_read_optional(args.sociot, "sociot"),
                         benchmarks=_read_optional(args.benchmarks, "benchmarks"), title=args.title,
                         warnings=warnings)
    n_cannot = len(analysis.cannot)
    print(f"warmfast report: {len(judged)} judged rows -> {len(analysis.pre.rows)} analysed; "
          f"{len(analysis.paired)} paired cells; {n_cannot} item(s) could not be computed (see the report)")
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
    return 0
