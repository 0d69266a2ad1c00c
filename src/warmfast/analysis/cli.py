"""`warmfast report RUN_DIR_OR_CSVS... --output-dir DIR`: the analysis report of a run or of CSV files."""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from warmfast.cli_common import output_dir_arg


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
    p.add_argument("--no-pool-neutral", action="store_true",
                   help="leave the neutral-sentence prompts out of the belief-absent unmodified paired cell, "
                        "as the published tables did (PROTOCOL pools them; default)")
    p.add_argument("--judge", help="which judge's evaluations to use when a run store holds several")
    p.add_argument("--title", default="warmfast report: warmth study")
    p.set_defaults(func=run_report)


def _read_optional(path: str | None, what: str) -> pd.DataFrame | None:
    if path is None:
        return None
    if not Path(path).is_file():
        raise SystemExit(f"warmfast report: --{what} file {path} does not exist")
    return pd.read_csv(path)


def load_inputs(inputs: list[str], judge: str | None = None) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Run directories (or store files) through the store reader, everything else as CSV files or
    folders in the study's layout. Returns the judged frame and notes on rows left out."""
    from warmfast.analysis.load import read_study_csvs
    from warmfast.analysis.store_reader import find_store, read_store

    frames, notes, csvs = [], [], []
    for item in inputs:
        store = find_store(Path(item))
        if store is not None:
            export = read_store(store, judge)
            frames.append(export.judged)
            notes += export.notes
        else:
            csvs.append(item)
    if csvs:
        frames.append(read_study_csvs(csvs))
    return pd.concat(frames, ignore_index=True), notes


def run_report(args: argparse.Namespace) -> int:
    from warmfast.analysis.preprocess import PreprocessConfig
    from warmfast.analysis.report import analyse, write_report

    judged, notes = load_inputs(args.inputs, args.judge)
    config = PreprocessConfig.from_protocol(args.protocol) if args.protocol else PreprocessConfig()
    analysis = analyse(judged, config, input_notes=notes, pool_neutral=not args.no_pool_neutral)
    paths = write_report(analysis, args.out, [str(i) for i in args.inputs],
                         sociot=_read_optional(args.sociot, "sociot"),
                         benchmarks=_read_optional(args.benchmarks, "benchmarks"), title=args.title)
    n_cannot = len(analysis.cannot)
    print(f"warmfast report: {len(judged)} judged rows -> {len(analysis.pre.rows)} analysed; "
          f"{len(analysis.paired)} paired cells; {n_cannot} item(s) could not be computed (see the report)")
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
    return 0
