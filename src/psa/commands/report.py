"""Console entry points of the reporting tools: regimes, LaTeX tables and figures.

Each ``*_main(argv=None)`` parses its flags with argparse, reads results (never the engine) and
writes its output; bad input ends in one ``<command>: ...`` line on stderr and exit status 1 or 2,
with nothing overwritten. The plotting and model modules are imported inside each command so
``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from psa import reproduction
from psa.arch import ArchError, parse_key, read_config_file
from psa.arguments import add_shipped_flag, existing_path, refuse_shipped
from psa.atomic import write_text_atomically
from psa.cli import CommandParser
from psa.config import MODELS
from psa.errors import PsaError, UsageError, command_hint
from psa.modes import MODES
from psa.report.inputs import is_summary_file, read_mode_statistics, read_trials
from psa.report.style import add_figure_flags, figure_options
from psa.store import ResultsFormatError, ResultsStore, summary_name

RESULTS_DIR = Path("results")
# The paper's grid and its asymmetric architectures: the package's copies, so an installed psa
# has them too.
CONFIGURATIONS = reproduction.PAPER_GRID
ASYMMETRIC = reproduction.ASYMMETRIC
GRID_DEFAULT = f"default: the paper's grid, {reproduction.PAPER_GRID_NAME}"


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return CommandParser(
        prog=prog,
        description=description,
    )


def _add_model(parser: argparse.ArgumentParser, inferred: bool = True) -> None:
    source = "the records' model (psa results), else resmlp" if inferred else "resmlp"
    parser.add_argument(
        "--model",
        choices=MODELS,
        default=None,
        help=f"model the results are of; names and titles the output (default: {source})",
    )


def _records_models(source: Path) -> list[str]:
    """The models psa's trial records under ``source`` name (none for markdown tables)."""
    from psa.store import ResultsStore, read_records_table

    if source.is_dir() and not ResultsStore(source).record_files():
        return [m for m in MODELS if ResultsStore(source).table_path(m).exists()]
    if not source.is_dir() and (source.suffix != ".jsonl" or not source.is_file()):
        return []
    frame = read_records_table(source)
    return sorted(set(frame["model"].dropna())) if "model" in frame.columns else []


def _resolve_model(source: Path, flag: str | None, models: list[str] | None = None) -> str:
    """``--model`` if given (and present in psa records), else the records' only model."""
    models = _records_models(source) if models is None else models
    if not models:
        return flag or "resmlp"
    if flag is None:
        if len(models) > 1:
            raise ResultsFormatError(
                f"{source} holds results of models {', '.join(models)}; choose one with --model"
            )
        return models[0]
    if flag not in models:
        raise ResultsFormatError(
            f"{source} holds no {flag} results, only {', '.join(models)}; "
            f"pass --model {models[0]} or leave --model out"
        )
    return flag


def _add_trials_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trials-file",
        type=Path,
        default=RESULTS_DIR,
        help="trial table (.md, psa's or upstream's), sweep's trials.jsonl, or a results dir",
    )


def _add_zeror(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--zeror",
        type=float,
        default=None,
        help="ZeroR accuracy (%%) below which a net learned nothing (default: 11.02, the "
        "validation split's share of the digit 1)",
    )
    group.add_argument(
        "--zeror-from-data",
        action="store_true",
        help="compute ZeroR from the MNIST validation split in --data-dir",
    )
    parser.add_argument(
        "--data-dir", type=existing_path, default=None, help="MNIST dir for --zeror-from-data"
    )


def _zeror(args: argparse.Namespace) -> float:
    from psa.report.regimes import ZEROR_VALIDATION

    if args.zeror_from_data:
        from psa.data import validation_zeror

        return validation_zeror(args.data_dir)
    return ZEROR_VALIDATION if args.zeror is None else args.zeror


def _run(parser: argparse.ArgumentParser, argv: list[str] | None, body: Callable) -> int:
    """Parse flags, run, and turn bad input into one line on stderr (no traceback)."""
    args = parser.parse_args(argv)
    _refuse_shipped_output(args)
    try:
        body(args)
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        raise PsaError(
            f"cannot use{where}: {error.strerror or error}; check the path and its permissions"
        ) from None
    return 0


def _refuse_shipped_output(args: argparse.Namespace) -> None:
    """The output goes into the shipped results set only with --add-to-shipped: --output-file's
    folder where one is given, else --output-dir's."""
    if getattr(args, "output_file", None) is not None:
        refuse_shipped("--output-file", args.output_file, args.add_to_shipped, file=True)
    elif getattr(args, "output_dir", None) is not None:
        refuse_shipped("--output-dir", args.output_dir, args.add_to_shipped)


def _emit(text: str, output_file: Path | None) -> None:
    if output_file is None:
        sys.stdout.write(text)
    else:
        write_text_atomically(output_file, text)
        print(f"wrote {output_file}", file=sys.stderr)


def _note(parser: argparse.ArgumentParser, message: str) -> None:
    print(f"{parser.prog}: note: {message}", file=sys.stderr)


def _require_file(parser: argparse.ArgumentParser, path: Path, flag: str, hint: str) -> None:
    if not path.exists():
        parser.error(f"{flag} {path} does not exist; {hint}")


def _trials(parser: argparse.ArgumentParser, args: argparse.Namespace) -> pd.DataFrame:
    _require_file(
        parser,
        args.trials_file,
        "--trials-file",
        f"run `{command_hint('sweep')}` first or pass a trial table, trials.jsonl or results dir",
    )
    args.model = _resolve_model(args.trials_file, args.model)
    return read_trials(args.trials_file, args.model)


def _config_archs(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    return [arch.key for arch in read_config_file(path)]


def _format_regimes(classified: pd.DataFrame, counts: pd.DataFrame, zeror: float, fmt: str):
    columns = ["arch", "label", "rule", "muB", "muA"] + [f"{mode}_mean" for mode in MODES]
    table = classified[columns].rename(
        columns={"arch": "architecture", "label": "regime"}
        | {f"{mode}_mean": mode for mode in MODES}
    )
    if fmt == "json":
        payload = {
            "zeror": zeror,
            "architectures": json.loads(table.to_json(orient="records")),
            "counts": dict(zip(counts["label"], counts["count"].astype(int), strict=True)),
        }
        return json.dumps(payload, indent=2) + "\n", ""
    if fmt == "csv":
        count_lines = "".join(f"{row.label}: {row.count}\n" for row in counts.itertuples())
        return table.to_csv(index=False, float_format="%.4f"), count_lines
    lines = [
        "| " + " | ".join(table.columns) + " |",
        "|" + "|".join(":---" for _ in table.columns) + "|",
    ]
    for row in table.itertuples(index=False):
        cells = ["N/A" if pd.isna(v) else f"{v:.2f}" if isinstance(v, float) else v for v in row]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    lines += ["", f"ZeroR: {zeror:g}%", "", "| regime | count |", "|:---|---:|"]
    lines += [f"| {row.label} | {row.count} |" for row in counts.itertuples()]
    return "\n".join(lines) + "\n", ""


def classify_regimes_main(argv: list[str] | None = None) -> int:
    parser = _parser(
        "classify-regimes",
        "Classify each architecture into the four PSA regimes (spec section 4) and count them.",
    )
    _add_trials_file(parser)
    parser.add_argument(
        "--config-file",
        type=existing_path,
        default=None,
        help="architectures to classify, in order (default: those of the trials file); "
        "one without trials is 'unknown'",
    )
    _add_model(parser)
    _add_zeror(parser)
    parser.add_argument(
        "--format",
        choices=("md", "csv", "json"),
        default="md",
        help="markdown tables; or csv or json, alone on stdout (summaries go to stderr)",
    )
    parser.add_argument("--output-file", type=Path, default=None, help="write here, not stdout")
    add_shipped_flag(parser, "--output-file")

    def body(args):
        from psa.report.regimes import classify_trials, regime_counts

        long = _trials(parser, args)
        zeror = _zeror(args)
        classified = classify_trials(long, zeror, _config_archs(args.config_file))
        counts = regime_counts(classified)
        text, extra = _format_regimes(classified, counts, zeror, args.format)
        _emit(text, args.output_file)
        if extra:
            sys.stderr.write(extra)
        _note_missing_trials(parser, classified, args.trials_file, args.config_file)

    return _run(parser, argv, body)


def _note_missing_trials(
    parser: argparse.ArgumentParser, classified: pd.DataFrame, trials: Path, config: Path | None
) -> None:
    """Why rows are Unknown for want of trials, which the table says only row by row (98
    configurations against the 20 architectures of the shipped set: 78 such rows)."""
    trial_counts = classified[[f"{mode}_n" for mode in MODES]]
    absent = int(trial_counts.eq(0).all(axis=1).sum())
    partial = int(trial_counts.eq(0).any(axis=1).sum()) - absent
    of_all = f"of the {len(classified)} architectures" + (f" of {config}" if config else "")
    if absent:
        verb, it = ("has", "it is") if absent == 1 else ("have", "they are")
        _note(parser, f"{absent} {of_all} {verb} no trials in {trials}; {it} listed as Unknown")
    if partial:
        verb, it = ("lacks", "it is") if partial == 1 else ("lack", "they are")
        _note(
            parser,
            f"{partial} of the {len(classified)} architectures {verb} the trials of some modes "
            f"in {trials}; {it} listed as Unknown",
        )


def architecture_table_main(argv: list[str] | None = None) -> int:
    parser = _parser(
        "make-architecture-table",
        "Print the LaTeX table of configurations with their parameter counts.",
    )
    parser.add_argument(
        "--config-file",
        type=existing_path,
        default=CONFIGURATIONS,
        help=f"configurations, one per line ({GRID_DEFAULT})",
    )
    parser.add_argument(
        "--asymmetric-file",
        type=existing_path,
        default=ASYMMETRIC,
        help="configurations labelled Asymmetric (the rest are Matched; "
        f"default: {reproduction.ASYMMETRIC_NAME})",
    )
    _add_model(parser, inferred=False)
    parser.add_argument("--caption", default=None, help="table caption (default: by model)")
    parser.add_argument(
        "--label", default="tab:architecture_parameters", help="LaTeX label of the table"
    )
    parser.add_argument("--output-file", type=Path, default=None, help="write here, not stdout")
    add_shipped_flag(parser, "--output-file")

    def body(args):
        from psa.report.latex import architecture_table

        configs = read_config_file(args.config_file)
        mirrored = read_config_file(args.asymmetric_file)
        model = args.model or "resmlp"
        text = architecture_table(configs, mirrored, model, args.caption, args.label)
        _emit(text, args.output_file)

    return _run(parser, argv, body)


def trial_accuracy_table_main(argv: list[str] | None = None) -> int:
    parser = _parser(
        "make-trial-accuracy-table",
        "Print the LaTeX longtable of mean +- std per mode with the winning modes in bold.",
    )
    parser.add_argument(
        "--datafile",
        type=Path,
        default=None,
        help="summary (.md), trial table (.md), trials.jsonl or results dir "
        "(default: results/psa_<model>_summary.md)",
    )
    parser.add_argument(
        "--order",
        type=existing_path,
        default=CONFIGURATIONS,
        help=f"configurations file giving row order ({GRID_DEFAULT})",
    )
    _add_model(parser)
    parser.add_argument("--caption", default=None, help="table caption (default: from the data)")
    parser.add_argument(
        "--label", default="tab:results_summary_stats", help="LaTeX label of the table"
    )
    parser.add_argument(
        "--ddof",
        type=int,
        choices=(0, 1),
        default=0,
        help="the std's delta degrees of freedom: 0 the population std (upstream's), 1 the "
        "sample std (pandas'); the caption's last sentence says which (default: 0)",
    )
    parser.add_argument("--output-file", type=Path, default=None, help="write here, not stdout")
    add_shipped_flag(parser, "--output-file")

    def body(args):
        from psa import results
        from psa.report.latex import default_accuracy_caption, trial_accuracy_table

        datafile = args.datafile or RESULTS_DIR / summary_name(args.model or "resmlp")
        hint = f"run `{command_hint('sweep')}` first or pass --datafile"
        _require_file(parser, datafile, "--datafile", hint)
        args.model = _resolve_model(datafile, args.model)
        if not is_summary_file(datafile):
            stats = results.summary(read_trials(datafile, args.model), ddof=args.ddof)
        elif args.ddof == 0:
            stats = read_mode_statistics(datafile, args.model)
        else:
            raise UsageError(
                f"--datafile {datafile} is a summary, whose stds are population ones (ddof=0); "
                f"give its trial table, trials.jsonl or results dir for --ddof {args.ddof}"
            )
        order = _config_archs(args.order)
        extra = [arch for arch in dict.fromkeys(stats["arch"]) if arch not in order]
        if extra:
            _note(parser, f"{len(extra)} architectures not in {args.order} go last")
        caption = args.caption or default_accuracy_caption(
            args.model, stats, stats.attrs.get("meta_loops")
        )
        text, skipped = trial_accuracy_table(stats, order + extra, caption, args.label, args.ddof)
        if skipped:
            _note(parser, f"{len(skipped)} architectures of {args.order} have no results")
        _emit(text, args.output_file)

    return _run(parser, argv, body)


def _output_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output-file",
        type=Path,
        default=None,
        help="figure to write; its suffix (.png, .pdf, .svg) sets the format (default: "
        "<output-dir>/<P>_<name>.<format>); a CSV of the plotted data goes beside it",
    )


def _written(path: Path) -> None:
    from psa.report.plotting import csv_path

    print(path)
    print(csv_path(path))


def design_space_main(argv: list[str] | None = None) -> int:
    parser = _parser("make-figure-design-space", "Draw the tested design space (depth x width).")
    parser.add_argument(
        "--config-file",
        type=existing_path,
        default=CONFIGURATIONS,
        help=f"configurations to draw ({GRID_DEFAULT})",
    )
    _output_file(parser)
    parser.add_argument(
        "--output-dir", type=Path, default=RESULTS_DIR, help="folder the figure is written to"
    )
    _add_model(parser, inferred=False)
    add_figure_flags(parser, labels_default="on")
    add_shipped_flag(parser, "--output-file or --output-dir")

    def body(args):
        from psa.report.design_space import design_space_figure, design_space_path

        options = figure_options(args, args.output_file)
        configs = read_config_file(args.config_file)
        model = args.model or "resmlp"
        path = args.output_file or design_space_path(args.output_dir, model, options.fmt)
        data = design_space_figure(configs, path, model, options)
        if "note" in data.attrs:
            _note(parser, data.attrs["note"])
        if len(data) < len(configs):
            _note(parser, f"{len(configs) - len(data)} multi-stack configurations left out")
        _written(path)

    return _run(parser, argv, body)


def heatmaps_main(argv: list[str] | None = None) -> int:
    parser = _parser(
        "make-figure-heatmaps",
        "Draw the six design-space heatmaps: baseline, ablation effects, instability, "
        "winning strategy, parameter matching and regimes, each with a CSV of its data.",
    )
    _add_trials_file(parser)
    parser.add_argument(
        "--config-file",
        type=existing_path,
        default=CONFIGURATIONS,
        help=f"architectures to place (single-stack L*W; {GRID_DEFAULT})",
    )
    parser.add_argument(
        "--asymmetric-file",
        type=existing_path,
        default=ASYMMETRIC,
        help="architectures drawn as triangles in Parameter Matching "
        f"(default: {reproduction.ASYMMETRIC_NAME})",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=RESULTS_DIR, help="folder the PNGs are written to"
    )
    _add_model(parser)
    _add_zeror(parser)
    parser.add_argument(
        "--alpha", type=float, default=0.05, help="significance level of the ablation tests"
    )
    _add_correction(parser, "Ablation Effects' ")
    add_figure_flags(
        parser, labels_default="on for Ablation_Effects, Parameter_Matching and Regimes"
    )
    add_shipped_flag(parser, "--output-dir")

    def body(args):
        from psa.report.heatmaps import heatmap_path, make_heatmaps

        options = figure_options(args)
        long = _trials(parser, args)
        configs = read_config_file(args.config_file)
        mirrored = read_config_file(args.asymmetric_file)
        archs = set(_config_archs(args.config_file))
        stray = sorted(set(long["arch"]) - archs)
        if stray:
            _note(parser, f"{len(stray)} architectures with results are not in {args.config_file}")
        if not set(long["arch"]) & archs:
            _note(parser, f"no architecture of {args.config_file} has results")
        data = make_heatmaps(
            long,
            configs,
            mirrored,
            args.output_dir,
            args.model,
            _zeror(args),
            args.alpha,
            options,
            args.correction,
        )
        for name, table in data.items():
            if "note" in table.attrs:
                _note(parser, f"{name}: {table.attrs['note']}")
            _written(heatmap_path(args.output_dir, args.model, name, options.fmt))

    return _run(parser, argv, body)


def _add_correction(parser: argparse.ArgumentParser, whose: str = "") -> None:
    parser.add_argument(
        "--correction",
        choices=("holm", "bh", "none"),
        default="holm",
        help=f"{whose}adjustment of p over every test of the grid: Holm (family-wise), "
        "Benjamini-Hochberg (false discovery rate) or none",
    )


def parse_targets(text: str) -> list[str]:
    """``"1*1024,18*18"`` or ``"[4*4, 2*8],18*18"`` -> canonical architecture keys."""
    pieces = re.findall(r"\[[^\]]*\]|[^,\s][^,]*", text)
    return list(dict.fromkeys(parse_key(piece).key for piece in pieces))


def targets_flag(text: str) -> list[str]:
    """``--targets``: a malformed architecture is a usage error, as ``--arch`` is elsewhere."""
    try:
        return parse_targets(text)
    except ArchError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def convergence_main(argv: list[str] | None = None) -> int:
    from psa.report.convergence import LATE_BREAKTHROUGH_TARGETS

    parser = _parser(
        "make-convergence-plots",
        "Plot per-loop validation accuracy of every trial, their mean and its 95%% confidence "
        "band, from train/sweep JSONL logs or SageMaker CloudWatch logs.",
    )
    parser.add_argument(
        "--logs-dir",
        type=existing_path,
        default=ResultsStore(RESULTS_DIR).logs_dir,
        help="a results dir, its logs/, a model dir, or a dir of CloudWatch job logs",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=RESULTS_DIR, help="folder the PNGs are written to"
    )
    _output_file(parser)
    parser.add_argument(
        "--targets",
        type=targets_flag,
        default=None,
        help="comma-separated architectures, one panel each (default: every architecture "
        f"logged; with --late-breakthroughs: {','.join(LATE_BREAKTHROUGH_TARGETS)})",
    )
    parser.add_argument(
        "--curve",
        choices=("lkg", "current"),
        default="lkg",
        help="running best (LKG) or the accuracy of each loop's candidate",
    )
    parser.add_argument(
        "--show",
        choices=("all", "best"),
        default="all",
        help="every trial, their mean and its 95%% CI, or only the trial with the highest "
        "peak per mode",
    )
    parser.add_argument(
        "--late-breakthroughs",
        action="store_true",
        help="write <P>_Plot_Late_Breakthroughs (deep nets that escape ZeroR late)",
    )
    parser.add_argument(
        "--trials-file",
        type=Path,
        default=None,
        help="trials for the regime badges (default: the bounties in the logs)",
    )
    parser.add_argument(
        "--model",
        choices=MODELS,
        default=None,
        help="model of the logs; names and titles the figure (default: the model the JSONL "
        "logs name, resmlp for CloudWatch logs)",
    )
    _add_zeror(parser)
    add_figure_flags(parser)
    add_shipped_flag(parser, "--output-file or --output-dir")

    def body(args):
        from psa.report.convergence import (
            convergence_figure,
            convergence_path,
            read_loop_logs,
        )

        options = figure_options(args, args.output_file)
        targets = args.targets or (
            parse_targets(",".join(LATE_BREAKTHROUGH_TARGETS)) if args.late_breakthroughs else None
        )
        logs = read_loop_logs(args.logs_dir, args.model or "resmlp")
        model = _resolve_model(args.logs_dir, args.model, sorted(set(logs["model"])))
        logs = logs[logs["model"] == model]
        logged = list(dict.fromkeys(logs["arch"]))
        targets = targets or logged
        absent = [arch for arch in targets if arch not in logged]
        if absent:
            _note(parser, f"no logs for {', '.join(absent)}; left out")
        targets = [arch for arch in targets if arch in logged]
        if not targets:
            parser.error(f"none of the targets has logs; logged: {', '.join(logged)}")
        bounties = None
        if args.trials_file is not None:
            _require_file(parser, args.trials_file, "--trials-file", "or leave it out")
            bounties = read_trials(args.trials_file, model)
        path = args.output_file or convergence_path(
            args.output_dir, model, args.late_breakthroughs, options.fmt
        )
        title = (
            "Late breakthroughs: deep narrow nets that leave ZeroR late"
            if args.late_breakthroughs
            else None
        )
        table = convergence_figure(
            logs, targets, path, model, args.curve, args.show, _zeror(args), bounties, title,
            options,
        )  # fmt: skip
        for page in table.attrs["paths"]:
            _written(page)

    return _run(parser, argv, body)


def compare_modes_main(argv: list[str] | None = None) -> int:
    from psa.report.compare_format import DEFAULT_LABEL, FORMATS

    parser = _parser(
        "compare-modes",
        "Per architecture, test each mode against a baseline mode: n, mean difference with its "
        "95%% confidence interval, the test (paired t for paired trials, Welch's t otherwise), "
        "p, p adjusted over the whole grid, and an effect size.",
    )
    _add_trials_file(parser)
    parser.add_argument(
        "--config-file",
        type=existing_path,
        default=None,
        help="architectures to compare, in order (default: those of the trials)",
    )
    parser.add_argument("--baseline", choices=MODES, default="none", help="mode compared against")
    parser.add_argument(
        "--modes",
        default=None,
        help="comma-separated modes to compare (default: every mode but the baseline)",
    )
    _add_correction(parser)
    _add_model(parser)
    parser.add_argument("--format", choices=FORMATS, default="md", help="output format")
    parser.add_argument("--caption", default=None, help="LaTeX caption (default: from the data)")
    parser.add_argument("--label", default=DEFAULT_LABEL, help="LaTeX label")
    parser.add_argument("--output-file", type=Path, default=None, help="write here, not stdout")
    add_shipped_flag(parser, "--output-file")

    def body(args):
        from psa.report.compare import compare_modes
        from psa.report.compare_format import render
        from psa.report.inputs import is_paired

        modes = None
        if args.modes:
            modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
            unknown = [mode for mode in modes if mode not in MODES]
            if unknown:
                parser.error(
                    f"--modes names unknown modes {', '.join(unknown)}; use {','.join(MODES)}"
                )
        long = _trials(parser, args)
        order = _config_archs(args.config_file)
        if order is not None:
            missing = [arch for arch in order if arch not in set(long["arch"])]
            if missing:
                _note(parser, f"{len(missing)} architectures of {args.config_file} have no trials")
        table = compare_modes(long, is_paired(long), args.baseline, modes, args.correction, order)
        _emit(render(table, args.format, args.caption, args.label), args.output_file)

    return _run(parser, argv, body)
