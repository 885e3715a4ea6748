"""The paper's LaTeX tables: architectures with parameter counts, and mean +- std per mode."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal

import pandas as pd

from psa.arch import Arch
from psa.modes import MODES
from psa.store.tables import model_title, std_sentence

WINNER_TOLERANCE = Decimal("0.01")  # a mode within this of the row's best mean shares the win
DEFAULT_ARCHITECTURE_LABEL = "tab:architecture_parameters"
DEFAULT_ACCURACY_LABEL = "tab:results_summary_stats"


def architecture_table(
    configs: Iterable[Arch],
    asymmetric: Iterable[Arch],
    model: str = "resmlp",
    caption: str | None = None,
    label: str = DEFAULT_ARCHITECTURE_LABEL,
) -> str:
    """A ``tabular`` of every configuration: its real parameter count and Matched/Asymmetric.

    For ResMLP a second column gives the plain-MLP-equivalent count that upstream tables printed
    (the count the configurations were matched on); for the plain MLP the two are the same.
    """
    title = model_title(model)
    mirrored = {arch.key for arch in asymmetric}
    caption = caption or f"Parameters of the {title} Architectures"
    columns = [r"\textbf{Architecture}", rf"\textbf{{{title} Parameters}}"]
    if model != "mlp":
        columns.append(r"\textbf{MLP-Equivalent Parameters}")
    columns.append(r"\textbf{Parameter Matching}")
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{l" + "r" * (len(columns) - 2) + "l}",
        r"\toprule",
        " & ".join(columns) + r" \\",
        r"\midrule",
    ]
    for arch in configs:
        cells = [arch.key, f"{arch.parameters(model):,}"]
        if model != "mlp":
            cells.append(f"{arch.mlp_parameters:,}")
        cells.append("Asymmetric" if arch.key in mirrored else "Matched")
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _printed(value: float) -> Decimal:
    return Decimal(repr(float(value))).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def winners(means: dict[str, float]) -> list[str]:
    """Modes whose printed mean is within 0.01 of the best printed mean, in mode order."""
    if not means:
        return []
    printed = {mode: _printed(mean) for mode, mean in means.items()}
    best = max(printed.values())
    return [mode for mode in MODES if mode in printed and best - printed[mode] <= WINNER_TOLERANCE]


def default_accuracy_caption(model: str, stats: pd.DataFrame, meta_loops: int | None) -> str:
    counts = sorted({int(n) for n in stats["n"]}) if len(stats) else [0]
    trials = str(counts[0]) if len(counts) == 1 else f"{counts[0]}--{counts[-1]}"
    loops = f" of {meta_loops} Meta-Loops" if meta_loops else ""
    return (
        r"Mean Peak Validation Accuracy (\%) with Standard Deviation over "
        f"{trials} Trials{loops} for {model_title(model)} Architectures"
    )


def trial_accuracy_table(
    stats: pd.DataFrame,
    order: Iterable[str],
    caption: str,
    label: str = DEFAULT_ACCURACY_LABEL,
    ddof: int = 0,
) -> tuple[str, list[str]]:
    """A ``longtable`` of mean +- std per mode and the winner, one row per architecture.

    ``stats`` has columns arch, mode, mean, std (numeric modes only; psa.results.summary's), the
    std of delta degrees of freedom ``ddof``, which the caption's last sentence states. Winners
    are the modes whose printed mean is within 0.01 of the row's best; their cells are bold and
    several are a tie. Returns the LaTeX and the architectures of ``order`` skipped for lack of
    data.
    """
    caption = f"{caption.rstrip().rstrip('.')}. {std_sentence(ddof)}"
    heading = (
        r"\textbf{Architecture} & "
        + " & ".join(rf"\textbf{{{mode}}}" for mode in MODES)
        + r" & \textbf{Winner} \\"
    )
    units = " & " + " & ".join([r"Mean $\pm$ Std (\%)"] * len(MODES)) + r" & \\"
    columns = len(MODES) + 2
    lines = [
        r"\tiny",
        r"\begin{longtable}{@{}l" + "c" * len(MODES) + "l@{}}",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}} \\",
        r"\toprule",
        heading,
        units,
        r"\midrule",
        r"\endfirsthead",
        "",
        rf"\multicolumn{{{columns}}}{{c}}%",
        r"{{\bfseries Table \thetable\ continued from previous page}} \\",
        r"\toprule",
        heading,
        units,
        r"\midrule",
        r"\endhead",
        "",
        r"\midrule",
        rf"\multicolumn{{{columns}}}{{r}}{{{{Continued on next page}}}} \\",
        r"\endfoot",
        "",
        r"\bottomrule",
        r"\endlastfoot",
    ]
    by_arch = {arch: rows.set_index("mode") for arch, rows in stats.groupby("arch", sort=False)}
    skipped = []
    for arch in order:
        rows = by_arch.get(arch)
        if rows is None or rows.empty:
            skipped.append(arch)
            continue
        best = winners({mode: rows.loc[mode, "mean"] for mode in rows.index})
        cells = []
        for mode in MODES:
            if mode not in rows.index:
                cells.append("N/A")
                continue
            value = f"{rows.loc[mode, 'mean']:.2f} \\pm {rows.loc[mode, 'std']:.2f}"
            # \bfseries does not reach inside math mode; \mathbf does.
            cells.append(f"$\\mathbf{{{value}}}$" if mode in best else f"${value}$")
        named = "/".join(rf"\texttt{{{mode}}}" for mode in best)
        winner = f"Tie: {named}" if len(best) > 1 else named
        lines.append(f"${arch}$ & " + " & ".join(cells) + f" & {winner} \\\\")
    lines.append(r"\end{longtable}")
    return "\n".join(lines) + "\n", skipped
