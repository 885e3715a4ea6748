"""Console entry points of the reporting tools: regimes, LaTeX tables and figures.

Each ``*_main(argv=None)`` parses its flags with argparse, reads results (never the engine) and
writes its output; bad input ends in one ``psa: ...`` line on stderr and exit status 1 or 2,
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

from psa.arch import ArchError, canonical_arch, read_config_file
from psa.atomic import write_text_atomically
from psa.cli import CommandParser
from psa.markdown import read_mode_statistics, read_trials
from psa.modes import MODES
from psa.store import ResultsFormatError, summary_name

RESULTS_DIR = Path("results")
CONFIGURATIONS = Path("reproduction/configurations.txt")
ASYMMETRIC = Path("reproduction/asymmetric.txt")
MODELS = ("resmlp", "mlp")


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return CommandParser(
        prog=prog,
        description=description,
    )


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", choices=MODELS, default="resmlp", help="model the results are of"
    )


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
        "--data-dir", type=Path, default=None, help="MNIST dir for --zeror-from-data"
    )


def _zeror(args: argparse.Namespace) -> float:
    from psa.report.regimes import ZEROR_VALIDATION

    if args.zeror_from_data:
        from psa.data import validation_zeror

        return validation_zeror(args.data_dir)
    return ZEROR_VALIDATION if args.zeror is None else args.zeror


def _add_dpi(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dpi", type=int, default=300, help="resolution of the PNGs")


def _run(parser: argparse.ArgumentParser, argv: list[str] | None, body: Callable) -> int:
    """Parse flags, run, and turn bad input into one line on stderr (no traceback)."""
    args = parser.parse_args(argv)
    try:
        body(args)
    except (ResultsFormatError, ArchError) as error:
        sys.exit(f"{parser.prog}: {error}")
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        sys.exit(
            f"{parser.prog}: cannot use{where}: {error.strerror or error}; "
            "check the path and its permissions"
        )
    return 0


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
        "run `sweep` first or pass a trial table, trials.jsonl or results dir",
    )
    return read_trials(args.trials_file, args.model)


def _config_archs(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    return [canonical_arch(stacks) for stacks in read_config_file(path)]


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
        type=Path,
        default=None,
        help="architectures to classify, in order (default: those of the trials file); "
        "one without trials is 'unknown'",
    )
    _add_model(parser)
    _add_zeror(parser)
    parser.add_argument("--format", choices=("md", "csv", "json"), default="md")
    parser.add_argument("--output-file", type=Path, default=None, help="write here, not stdout")

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

    return _run(parser, argv, body)


def architecture_table_main(argv: list[str] | None = None) -> int:
    parser = _parser(
        "make-architecture-table",
        "Print the LaTeX table of configurations with their parameter counts.",
    )
    parser.add_argument("--config-file", type=Path, default=CONFIGURATIONS)
    parser.add_argument(
        "--asymmetric-file",
        type=Path,
        default=ASYMMETRIC,
        help="configurations labelled Asymmetric (the rest are Matched)",
    )
    _add_model(parser)
    parser.add_argument("--caption", default=None, help="table caption (default: by model)")
    parser.add_argument("--label", default="tab:architecture_parameters")
    parser.add_argument("--output-file", type=Path, default=None, help="write here, not stdout")

    def body(args):
        from psa.report.latex import architecture_table

        configs = read_config_file(args.config_file)
        mirrored = read_config_file(args.asymmetric_file)
        text = architecture_table(configs, mirrored, args.model, args.caption, args.label)
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
        "--order", type=Path, default=CONFIGURATIONS, help="configurations file giving row order"
    )
    _add_model(parser)
    parser.add_argument("--caption", default=None, help="table caption (default: from the data)")
    parser.add_argument("--label", default="tab:results_summary_stats")
    parser.add_argument("--output-file", type=Path, default=None, help="write here, not stdout")

    def body(args):
        from psa.report.latex import default_accuracy_caption, trial_accuracy_table

        datafile = args.datafile or RESULTS_DIR / summary_name(args.model)
        _require_file(parser, datafile, "--datafile", "run `sweep` first or pass --datafile")
        stats = read_mode_statistics(datafile, args.model)
        order = _config_archs(args.order)
        extra = [arch for arch in dict.fromkeys(stats["arch"]) if arch not in order]
        if extra:
            _note(parser, f"{len(extra)} architectures not in {args.order} go last")
        caption = args.caption or default_accuracy_caption(
            args.model, stats, stats.attrs.get("meta_loops")
        )
        text, skipped = trial_accuracy_table(stats, order + extra, caption, args.label)
        if skipped:
            _note(parser, f"{len(skipped)} architectures of {args.order} have no results")
        _emit(text, args.output_file)

    return _run(parser, argv, body)


def design_space_main(argv: list[str] | None = None) -> int:
    parser = _parser("make-figure-design-space", "Draw the tested design space (depth x width).")
    parser.add_argument("--config-file", type=Path, default=CONFIGURATIONS)
    parser.add_argument(
        "--output-file",
        type=Path,
        default=None,
        help="PNG to write (default: results/<ResMLP|SimpleMLP>_Testing_Design_Space.png)",
    )
    _add_model(parser)
    _add_dpi(parser)

    def body(args):
        from psa.report.design_space import design_space_figure, design_space_path

        configs = read_config_file(args.config_file)
        path = args.output_file or design_space_path(RESULTS_DIR, args.model)
        data = design_space_figure(configs, path, args.model, args.dpi)
        if len(data) < len(configs):
            _note(parser, f"{len(configs) - len(data)} multi-stack configurations left out")
        print(path)

    return _run(parser, argv, body)


def heatmaps_main(argv: list[str] | None = None) -> int:
    parser = _parser(
        "make-figure-heatmaps",
        "Draw the six design-space heatmaps: baseline, ablation effects, instability, "
        "winning strategy, parameter matching and regimes.",
    )
    _add_trials_file(parser)
    parser.add_argument(
        "--config-file",
        type=Path,
        default=CONFIGURATIONS,
        help="architectures to place (single-stack L*W)",
    )
    parser.add_argument(
        "--asymmetric-file",
        type=Path,
        default=ASYMMETRIC,
        help="architectures drawn as triangles in Parameter Matching",
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    _add_model(parser)
    _add_zeror(parser)
    parser.add_argument(
        "--alpha", type=float, default=0.05, help="significance level of the ablation t-tests"
    )
    _add_dpi(parser)

    def body(args):
        from psa.report.heatmaps import heatmap_path, make_heatmaps

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
            long, configs, mirrored, args.output_dir, args.model, _zeror(args), args.alpha, args.dpi
        )
        for name in data:
            print(heatmap_path(args.output_dir, args.model, name))

    return _run(parser, argv, body)


def parse_targets(text: str) -> list[str]:
    """``"1*1024,18*18"`` or ``"[4*4, 2*8],18*18"`` -> canonical architecture keys."""
    pieces = re.findall(r"\[[^\]]*\]|[^,\s][^,]*", text)
    return list(dict.fromkeys(canonical_arch(piece.strip()) for piece in pieces))


def convergence_main(argv: list[str] | None = None) -> int:
    from psa.report.convergence import LATE_BREAKTHROUGH_TARGETS

    parser = _parser(
        "make-convergence-plots",
        "Plot per-loop validation accuracy of every trial from train/sweep JSONL logs or "
        "SageMaker CloudWatch logs.",
    )
    parser.add_argument(
        "--logs-dir",
        type=Path,
        default=RESULTS_DIR / "logs",
        help="a results dir, its logs/, a model dir, or a dir of CloudWatch job logs",
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--targets",
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
        help="every trial and their mean, or only the trial with the highest peak per mode",
    )
    parser.add_argument(
        "--late-breakthroughs",
        action="store_true",
        help="write <P>_Plot_Late_Breakthroughs.png (deep nets that escape ZeroR late)",
    )
    parser.add_argument(
        "--trials-file",
        type=Path,
        default=None,
        help="trials for the regime badges (default: the bounties in the logs)",
    )
    _add_model(parser)
    _add_zeror(parser)
    _add_dpi(parser)

    def body(args):
        from psa.report.convergence import (
            convergence_figure,
            convergence_path,
            read_loop_logs,
        )

        targets_text = args.targets or (
            ",".join(LATE_BREAKTHROUGH_TARGETS) if args.late_breakthroughs else None
        )
        targets = parse_targets(targets_text) if targets_text else None
        logs = read_loop_logs(args.logs_dir, args.model)
        logs = logs[logs["model"] == args.model]
        if logs.empty:
            raise ResultsFormatError(f"no {args.model} logs under {args.logs_dir}")
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
            bounties = read_trials(args.trials_file, args.model)
        path = convergence_path(args.output_dir, args.model, args.late_breakthroughs)
        title = (
            "Late breakthroughs: deep narrow nets that leave ZeroR late"
            if args.late_breakthroughs
            else None
        )
        convergence_figure(
            logs,
            targets,
            path,
            args.model,
            args.curve,
            args.show,
            _zeror(args),
            bounties,
            title,
            args.dpi,
        )
        print(path)

    return _run(parser, argv, body)
