"""The numbers behind `sqlml evaluate` and `sqlml drift`, gathered with sqlml's own SQL.

An evaluation report runs ML.EVALUATE, ML.CONFUSION_MATRIX and ML.ROC_CURVE (or, for a
regression model, a sample of ML.PREDICT), so a picture shows exactly what the SQL returns. A
drift report runs the skew/drift comparison and the bucket counts it compared (see
`sqlml.drift`), so a histogram and its distance come from the same counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlml import drift
from sqlml.errors import ModelInputError, SqlCompileError
from sqlml.featurestats import OTHER, string_literal, strip_query
from sqlml.names import ModelRef, check_name

if TYPE_CHECKING:
    from sqlml.session import Database

SCATTER_SAMPLE = 5_000  # regression: predicted vs actual points drawn


@dataclass
class EvaluationReport:
    """A model scored against ground truth."""

    model: str
    task: str  # 'binary' | 'multiclass' | 'regression'
    label: str
    metrics: dict[str, float]
    classes: list[Any] = field(default_factory=list)
    confusion: list[list[int]] | None = None  # [expected][predicted], in `classes` order
    roc: list[dict[str, float]] | None = None  # ML.ROC_CURVE rows, by false positive rate
    actual: list[float] | None = None  # regression: a sample of labels ...
    predicted: list[float] | None = None  # ... and the predictions for them


@dataclass
class FeatureHistogram:
    """One compared input: bucket labels and the base and study counts in each."""

    input: str
    kind: str  # 'numerical' | 'categorical'
    buckets: list[str]
    base: list[int]
    study: list[int]


@dataclass
class DriftReport:
    """ML.VALIDATE_DATA_SKEW / _DRIFT rows and the histograms they compared."""

    title: str
    rows: list[dict[str, Any]]  # input, metric, threshold, value, is_anomaly
    histograms: dict[str, FeatureHistogram]
    base_name: str = "base"  # what the legend calls each side
    study_name: str = "study"

    @property
    def flagged(self) -> list[str]:
        return [row["input"] for row in self.rows if row["is_anomaly"]]


def source_sql(query: str | None = None, table: str | None = None) -> str:
    """An ML.* data argument: `(query)` or `TABLE "schema"."name"` (each part quoted, so a
    table name cannot carry SQL)."""
    if (query is None) == (table is None):
        raise ModelInputError("give the data as a query or as a table name, not both")
    if table is not None:
        parts = table.split(".")
        if not all(part.strip() for part in parts):
            raise ModelInputError(f"bad table name {table!r}")
        return "TABLE " + ".".join('"' + p.strip().replace('"', '""') + '"' for p in parts)
    return f"({strip_query(query or '')})"


def _rows(db: Database, sql: str) -> list[dict[str, Any]]:
    relation = db.sql(sql)
    if relation is None:
        raise SqlCompileError("expected a query")
    columns = relation.columns
    return [dict(zip(columns, row)) for row in relation.fetchall()]


# -- evaluation ----------------------------------------------------------------------------------


def evaluate_call(
    model: str, source: str, *, label: str | None = None, threshold: float | None = None
) -> str:
    """The arguments of ML.EVALUATE / CONFUSION_MATRIX / ROC_CURVE for these choices."""
    ref = ModelRef.parse(model)
    options = []
    if threshold is not None:
        options.append(f"{float(threshold)!r} AS threshold")
    if label is not None:
        options.append(f"{string_literal(label, 'duckdb')} AS label")
    struct = f", STRUCT({', '.join(options)})" if options else ""
    return f'MODEL "{ref}", {source}{struct}'


def evaluation_report(
    db: Database,
    model: str,
    source: str,
    *,
    label: str | None = None,
    threshold: float | None = None,
) -> EvaluationReport:
    """Evaluate `model` (name, name@alias or name@N) on `source` (see `source_sql`)."""
    ref = ModelRef.parse(model)
    layout = db.model_layout(ref)
    call = evaluate_call(model, source, label=label, threshold=threshold)
    metrics = _rows(db, f"SELECT * FROM ML.EVALUATE({call})")[0]
    signature = layout.signature
    task = "regression"
    if signature.is_classifier:
        task = "binary" if len(signature.classes) == 2 else "multiclass"
    report = EvaluationReport(
        str(ref), task, label or str(layout.label), {k: float(v) for k, v in metrics.items()}
    )
    if task == "regression":
        report.actual, report.predicted = _regression_sample(db, ref, source, report.label, layout)
        return report
    report.classes = list(signature.classes)
    matrix = _rows(db, f"SELECT * FROM ML.CONFUSION_MATRIX({call})")
    by_expected = {str(row["expected_label"]): row for row in matrix}
    names = [c for c in matrix[0] if c != "expected_label"] if matrix else []
    report.confusion = [
        [int(by_expected[str(c)][n]) if str(c) in by_expected else 0 for n in names]
        for c in report.classes
    ]
    if task == "binary":
        roc = _rows(db, f"SELECT * FROM ML.ROC_CURVE({call})")
        report.roc = sorted(roc, key=lambda r: (r["false_positive_rate"], r["recall"]))
    return report


def _regression_sample(
    db: Database, ref: ModelRef, source: str, label: str, layout: Any
) -> tuple[list[float], list[float]]:
    predicted = layout.predicted
    quoted_label = '"' + label.replace('"', '""') + '"'
    rows = _rows(
        db,
        f'SELECT CAST({quoted_label} AS DOUBLE) AS y, CAST("{predicted}" AS DOUBLE) AS p '
        f'FROM ML.PREDICT(MODEL "{ref}", {source}) '
        f"USING SAMPLE reservoir({SCATTER_SAMPLE} ROWS) REPEATABLE (7)",
    )
    return [r["y"] for r in rows], [r["p"] for r in rows]


# -- skew and drift ------------------------------------------------------------------------------


def skew_report(
    db: Database, model: str, study: str, options: Mapping[str, Any] | None = None
) -> DriftReport:
    """ML.VALIDATE_DATA_SKEW(MODEL model, (study), options) with its histograms."""
    ref = ModelRef.parse(model)
    check_name(ref.name)
    stats = db.feature_stats(ref)
    if not stats:
        raise SqlCompileError(
            f"no training statistics for {ref}; register it with training_data=... "
            "(a table, query or DataFrame)"
        )
    study = strip_query(study)
    kinds = {s.input: ("categorical" if s.kind == "categorical" else "numerical") for s in stats}
    sql = drift.validate_data_skew_sql(stats, study, options, "duckdb")
    counts = drift.validate_data_skew_sql(stats, study, options, "duckdb", histograms=True)
    report = _drift_report(db, f"{ref}: training vs serving data", sql, counts, kinds)
    report.base_name, report.study_name = "training", "serving"
    return report


def drift_report(
    db: Database, base: str, study: str, options: Mapping[str, Any] | None = None
) -> DriftReport:
    """ML.VALIDATE_DATA_DRIFT((base), (study), options) with its histograms."""
    base, study = strip_query(base), strip_query(study)
    columns = drift.column_kinds(db.describe(base))
    kinds = {name: ("categorical" if k == "categorical" else "numerical") for name, k in columns}
    sql = drift.validate_data_drift_sql(base, study, columns, options, "duckdb")
    counts = drift.validate_data_drift_sql(base, study, columns, options, "duckdb", histograms=True)
    return _drift_report(db, "base vs study data", sql, counts, kinds)


def _drift_report(
    db: Database, title: str, sql: str, counts_sql: str, kinds: Mapping[str, str]
) -> DriftReport:
    rows = _rows(db, sql)
    by_input: dict[str, list[dict[str, Any]]] = {}
    for row in _rows(db, counts_sql):
        by_input.setdefault(row["input"], []).append(row)
    histograms = {name: _histogram(name, kinds[name], by_input.get(name, [])) for name in kinds}
    return DriftReport(title, rows, histograms)


def _histogram(name: str, kind: str, rows: Sequence[dict[str, Any]]) -> FeatureHistogram:
    if kind == "categorical":
        ordered = sorted(rows, key=lambda r: (r["bucket"] == OTHER, -r["base_n"], r["bucket"]))
        labels = [OTHER if r["bucket"] == OTHER else r["bucket"][2:] for r in ordered]
        return FeatureHistogram(
            name, kind, labels, [r["base_n"] for r in ordered], [r["study_n"] for r in ordered]
        )
    found = {int(r["bucket"]): r for r in rows}
    if not found:
        return FeatureHistogram(name, kind, [], [], [])
    lo, hi, bins = float(rows[0]["lo"]), float(rows[0]["hi"]), int(rows[0]["bins"])
    width = (hi - lo) / bins
    keys = [0] if 0 in found else []  # edge bins only when the study reaches them
    keys += list(range(1, bins + 1)) + ([bins + 1] if bins + 1 in found else [])
    labels = []
    for k in keys:
        if k == 0:
            labels.append(f"< {lo:.4g}")
        elif k == bins + 1:
            labels.append(f"> {hi:.4g}")
        else:
            labels.append(f"{lo + width * (k - 1):.4g}..{lo + width * k:.4g}")
    base = [int(found[k]["base_n"]) if k in found else 0 for k in keys]
    study = [int(found[k]["study_n"]) if k in found else 0 for k in keys]
    return FeatureHistogram(name, kind, labels, base, study)
