"""Pictures of evaluation and drift reports (`sqlml evaluate --plot`, `sqlml drift --plot`).

matplotlib is an optional dependency (`pip install 'sqlml[plot]'`). Figures are drawn with the
object API and the Agg canvas, so nothing touches pyplot's global state or needs a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlml.errors import SqlmlError
from sqlml.reports import DriftReport, EvaluationReport, FeatureHistogram

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_CATEGORIES = 20  # bars per categorical histogram; the rest are summed into one bar
MAX_PANELS = 12  # features per drift picture
BASE_COLOR, STUDY_COLOR = "#4C72B0", "#DD8452"


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise SqlmlError(
            "drawing needs matplotlib: pip install 'sqlml[plot]' (or matplotlib)"
        ) from error
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def check_plot_path(path: str | Path) -> Path:
    """A writable picture path with a known format, checked before any work is done."""
    target = Path(path)
    if target.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise SqlmlError(f"plot file {str(target)!r} must end in .png, .svg or .pdf")
    if not target.parent.is_dir():
        raise SqlmlError(f"no folder {str(target.parent)!r} for the plot file {target.name!r}")
    if target.is_dir():
        raise SqlmlError(f"plot file {str(target)!r} is a folder")
    _figure(1, 1)  # matplotlib is there
    return target


def _save(figure: Figure, path: str | Path) -> Path:
    """Write to a temporary sibling, then rename: a failed draw leaves no half-written file."""
    target = check_plot_path(path)
    partial = target.with_name(f".{target.name}.partial{target.suffix}")
    try:
        figure.savefig(partial, format=target.suffix[1:].lower())
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


# -- evaluation ----------------------------------------------------------------------------------


def plot_evaluation(report: EvaluationReport, path: str | Path) -> Path:
    """Classifiers: ROC curve (binary) and confusion matrix; regression: predicted vs actual
    and the residuals."""
    figure = _figure(12, 5.2)
    left, right = figure.subplots(1, 2)
    if report.task == "regression":
        _predicted_vs_actual(left, report)
        _residuals(right, report)
    else:
        if report.roc is not None:
            _roc(left, report)
        else:
            _per_class(left, report)
        _confusion(right, report)
    figure.suptitle(f"{report.model} on {report.label}: {_headline(report)}")
    return _save(figure, path)


def _headline(report: EvaluationReport) -> str:
    keys = ("accuracy", "f1_score", "roc_auc", "r2_score", "mean_absolute_error")
    shown = [f"{k} {report.metrics[k]:.4f}" for k in keys if k in report.metrics]
    return ", ".join(shown)


def _roc(ax: Axes, report: EvaluationReport) -> None:
    rows = report.roc or []
    fpr = [0.0] + [float(r["false_positive_rate"]) for r in rows] + [1.0]
    tpr = [0.0] + [float(r["recall"]) for r in rows] + [1.0]
    auc = report.metrics.get("roc_auc")
    ax.plot(fpr, tpr, color=BASE_COLOR, lw=2, label=f"model (AUC {auc:.4f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="recall")
    ax.set_title("ROC curve (ML.ROC_CURVE)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)


def _per_class(ax: Axes, report: EvaluationReport) -> None:
    """Multiclass: recall and precision per class, from the confusion matrix."""
    matrix = report.confusion or []
    labels = [str(c) for c in report.classes]
    recall = [row[i] / max(1, sum(row)) for i, row in enumerate(matrix)]
    columns = [sum(row[i] for row in matrix) for i in range(len(labels))]
    precision = [matrix[i][i] / max(1, columns[i]) for i in range(len(labels))]
    positions = range(len(labels))
    ax.bar([p - 0.2 for p in positions], precision, width=0.4, color=BASE_COLOR, label="precision")
    ax.bar([p + 0.2 for p in positions], recall, width=0.4, color=STUDY_COLOR, label="recall")
    ax.set_xticks(list(positions), labels, rotation=30 if len(labels) > 6 else 0)
    ax.set(ylim=(0, 1.05), ylabel="per class")
    ax.set_title("precision and recall per class")
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)


def _confusion(ax: Axes, report: EvaluationReport) -> None:
    matrix = report.confusion or []
    labels = [str(c) for c in report.classes]
    image = ax.imshow(matrix, cmap="Blues")
    ax.figure.colorbar(image, ax=ax, shrink=0.8)
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            color = "white" if count > peak / 2 else "black"
            ax.text(j, i, f"{count:,}", ha="center", va="center", color=color)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="expected")
    ax.set_title("confusion matrix (ML.CONFUSION_MATRIX)")


def _predicted_vs_actual(ax: Axes, report: EvaluationReport) -> None:
    actual, predicted = report.actual or [], report.predicted or []
    ax.scatter(actual, predicted, s=6, alpha=0.4, color=BASE_COLOR)
    if actual:
        low, high = min(actual + predicted), max(actual + predicted)
        ax.plot([low, high], [low, high], color="grey", ls="--", lw=1, label="perfect")
        ax.legend(loc="upper left")
    ax.set(xlabel=f"actual {report.label}", ylabel="predicted")
    ax.set_title(f"predicted vs actual ({len(actual):,} rows sampled)")
    ax.grid(alpha=0.3)


def _residuals(ax: Axes, report: EvaluationReport) -> None:
    residuals = [p - a for a, p in zip(report.actual or [], report.predicted or [])]
    ax.hist(residuals, bins=40, color=BASE_COLOR)
    ax.axvline(0, color="grey", ls="--", lw=1)
    ax.set(xlabel="predicted - actual", ylabel="rows")
    ax.set_title("residuals")


# -- drift ---------------------------------------------------------------------------------------


def plot_drift(report: DriftReport, path: str | Path, inputs: list[str] | None = None) -> Path:
    """Base vs study histograms (as frequencies), one panel per input: the flagged ones, or
    `inputs`, or every input when none is flagged."""
    chosen = drift_panels(report, inputs)
    columns = min(3, max(1, len(chosen)))
    rows = max(1, -(-len(chosen) // columns))
    figure = _figure(5.2 * columns, 3.8 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    by_input = {row["input"]: row for row in report.rows}
    for ax, name in zip(axes, chosen):
        _histogram(ax, report.histograms[name], by_input.get(name), report)
    for ax in axes[len(chosen) :]:
        ax.set_visible(False)
    flagged = report.flagged
    summary = f"{len(flagged)} of {len(report.rows)} inputs over their threshold"
    figure.suptitle(f"{report.title}: {summary}")
    return _save(figure, path)


def drift_panels(report: DriftReport, inputs: list[str] | None = None) -> list[str]:
    """The inputs a drift picture shows: `inputs`, else the flagged ones, else all of them."""
    chosen = inputs if inputs is not None else (report.flagged or list(report.histograms))
    unknown = [name for name in chosen if name not in report.histograms]
    if unknown:
        raise SqlmlError(f"no compared input named {', '.join(map(repr, unknown))}")
    return chosen[:MAX_PANELS]


def _histogram(
    ax: Axes, histogram: FeatureHistogram, row: dict[str, Any] | None, report: DriftReport
) -> None:
    labels, base, study = _capped(histogram)
    base_total, study_total = max(1, sum(base)), max(1, sum(study))
    positions = range(len(labels))
    ax.bar(
        [p - 0.2 for p in positions], [n / base_total for n in base], width=0.4,
        color=BASE_COLOR, label=report.base_name,
    )  # fmt: skip
    ax.bar(
        [p + 0.2 for p in positions], [n / study_total for n in study], width=0.4,
        color=STUDY_COLOR, label=report.study_name,
    )  # fmt: skip
    ax.set_xticks(list(positions), labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("share of rows")
    title = histogram.input
    if row is not None and row.get("value") is not None:
        flag = "  ANOMALY" if row["is_anomaly"] else ""
        title += f"\n{row['metric']} {row['value']:.3f} (threshold {row['threshold']:g}){flag}"
    ax.set_title(title, fontsize=9, color="#B00020" if row and row.get("is_anomaly") else "black")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def _capped(histogram: FeatureHistogram) -> tuple[list[str], list[int], list[int]]:
    """At most MAX_CATEGORIES bars: the rest of the categories summed into one."""
    labels, base, study = histogram.buckets, histogram.base, histogram.study
    if histogram.kind != "categorical" or len(labels) <= MAX_CATEGORIES:
        return labels, base, study
    keep = MAX_CATEGORIES - 1
    rest = f"{len(labels) - keep} more"
    return (
        labels[:keep] + [rest],
        base[:keep] + [sum(base[keep:])],
        study[:keep] + [sum(study[keep:])],
    )
