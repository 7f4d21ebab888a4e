"""Plain-SQL versions of BigQuery ML's ML.EVALUATE, ML.CONFUSION_MATRIX and ML.ROC_CURVE.

BigQuery cannot run the ML.* evaluation functions on imported ONNX/TensorFlow models, so sqlml
computes them with ordinary SQL over a scored relation (ML.PREDICT output renamed to
`sqlml_label`, `sqlml_predicted`, `sqlml_probs`). The same generators emit DuckDB SQL, so both
engines give the same numbers.

Definitions (BigQuery ML documents the output columns, not every formula; where it is silent
the scikit-learn definition is used, so results can be checked against sklearn.metrics):

- Rows whose label is NULL are left out (they cannot be scored). No rows left: the query fails
  with "<function>: the evaluation set is empty". A label outside `Task.classes`, a
  probability array that is not `len(classes)` values in [0, 1], or a multiclass prediction
  outside the classes also fail inside the query with a message naming the column.
- Binary: a row is predicted positive (`classes[1]`) iff its positive-class probability is
  strictly greater than the threshold (default 0.5): ML.PREDICT's "predictions above the
  threshold are positive predictions". `sqlml_predicted` is not used. precision, recall and
  f1_score are those of the positive class.
- Multiclass: the prediction is `sqlml_predicted`; precision, recall and f1_score are macro
  averages (unweighted mean of the per-class scores) over the classes that occur in the labels
  or the predictions, like `f1_score(average='macro')`.
- 0/0 in precision, recall, f1_score and the ROC rates gives 0 (sklearn `zero_division=0`).
  BigQuery documents NaN for binary precision when no row is predicted positive; sqlml
  returns 0 instead, so one function has one convention.
- log_loss: mean of -ln(p of the true class), p clipped to [eps, 1 - eps] with eps the float64
  machine epsilon, as sklearn 1.9 `log_loss(y, P, labels=classes)` does (no renormalisation).
- roc_auc: exact AUC (Mann-Whitney U with tied scores counted one half, as sklearn). Binary:
  AUC of the positive-class probability. Multiclass: macro one-vs-rest AUC, the mean over
  classes of AUC(P[:, k], label == k); a class with no positive or no negative row has no AUC
  and is left out of the mean. No AUC at all: NULL.
- Regression, like sklearn: mean_squared_log_error is NULL when a label or prediction is
  <= -1 (sklearn raises); median_absolute_error is the exact median (the mean of the two
  middle values for an even count); r2_score and explained_variance follow sklearn's
  `force_finite=True` (1.0 for perfect predictions, 0.0 for a constant label otherwise).
- ML.CONFUSION_MATRIX: one row per class in `Task.classes` order (also classes that never
  occur), `expected_label` then one INT64 count column per predicted class, in the same order.
  BigQuery orders classes ascending; a fitted scikit-learn model's `classes_` (the usual
  source of `Task.classes`) is already sorted, so the two agree. Column names follow
  BigQuery: a label that is a valid column name is used as is; otherwise characters other
  than letters, digits and `_` become `_`, a leading digit gets a `_` prefix (`0` -> `_0`),
  and names are made unique (case-insensitively) with a `_1`, `_2`... suffix.
- ML.ROC_CURVE (binary only): columns threshold, recall, false_positive_rate, true_positives,
  false_positives, true_negatives, false_negatives, one row per threshold, ordered by
  threshold. Positive iff probability > threshold, the same rule as ML.EVALUATE and
  ML.CONFUSION_MATRIX, so a row equals the confusion matrix at that threshold. Without
  explicit thresholds BigQuery "chooses thresholds based on the percentile values of the
  prediction output"; sqlml takes the 0th, 1st, ..., 100th percentiles of the positive-class
  probability (nearest rank, PERCENTILE_DISC: the smallest score whose cumulative share is
  >= k/100), without duplicates.

Sources: cloud.google.com/bigquery/docs/reference/standard-sql/bigqueryml-syntax-evaluate,
-syntax-confusion, -syntax-roc and -syntax-predict.
"""

from __future__ import annotations

import math
import numbers
import re
import sys
from dataclasses import dataclass

from sqlml.errors import SqlCompileError
from sqlml.featurestats import string_literal

SCORED_LABEL = "sqlml_label"
SCORED_PREDICTED = "sqlml_predicted"
SCORED_PROBS = "sqlml_probs"

KINDS = ("binary", "multiclass", "regression")
DIALECTS = ("duckdb", "bigquery")
DEFAULT_THRESHOLD = 0.5
_EPS = sys.float_info.epsilon  # sklearn 1.9 log_loss clips to [eps, 1 - eps] for float64

# BigQuery column names may not start with these (case-insensitive).
_RESERVED_PREFIXES = ("_table_", "_file_", "_partition", "_row_timestamp", "__root__")
_MAX_COLUMN = 300


@dataclass(frozen=True)
class Task:
    """What the scored relation holds: the model's task and its classes."""

    kind: str  # "binary" | "multiclass" | "regression"
    classes: tuple = ()  # labels in probability-array order; binary: (negative, positive)
    label: str = SCORED_LABEL  # the ground-truth column as the user named it (for messages)


class _Sql:
    """The few fragments that differ between DuckDB and BigQuery."""

    def __init__(self, dialect: str) -> None:
        self.bigquery = dialect == "bigquery"

    @property
    def float_type(self) -> str:
        return "FLOAT64" if self.bigquery else "DOUBLE"

    def to_float(self, expr: str) -> str:
        return f"CAST({expr} AS {self.float_type})"

    def ident(self, name: str) -> str:
        """Quote a name made only of letters, digits and underscores."""
        return f"`{name}`" if self.bigquery else f'"{name}"'

    def string(self, text: str) -> str:
        return string_literal(text, "bigquery" if self.bigquery else "duckdb")

    def literal(self, value: object) -> str:
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            return repr(value)
        return self.string(str(value))

    def item(self, array: str, position: int) -> str:
        """Element `position` (1-based) of an array; NULL when out of range.

        Positions are always literals: sqlglot 30.30 turns BigQuery `a[OFFSET(k - 1)]` into
        DuckDB `a[k - 1]` (off by one), while literal offsets translate correctly.
        """
        return f"{array}[SAFE_OFFSET({position - 1})]" if self.bigquery else f"{array}[{position}]"

    def error(self, message: str) -> str:
        return f"{'ERROR' if self.bigquery else 'error'}({self.string(message)})"

    def countif(self, condition: str) -> str:
        return f"{'COUNTIF' if self.bigquery else 'COUNT_IF'}({condition})"

    def intdiv(self, a: str, b: str) -> str:
        return f"DIV({a}, {b})" if self.bigquery else f"({a}) // ({b})"


# --- validation -----------------------------------------------------------------------------


def _check_common(scored: str, task: Task, dialect: str) -> tuple[_Sql, tuple]:
    if dialect not in DIALECTS:
        raise SqlCompileError(f"unknown SQL dialect {dialect!r}: use one of {', '.join(DIALECTS)}")
    if not isinstance(task, Task) or task.kind not in KINDS:
        kind = getattr(task, "kind", task)
        raise SqlCompileError(f"unknown task kind {kind!r}: use one of {', '.join(KINDS)}")
    if not isinstance(scored, str) or not scored.strip():
        raise SqlCompileError("the scored relation must be a SELECT statement")
    # numpy scalars (a fitted model's classes_) become plain Python values
    classes = tuple(c.item() if hasattr(c, "item") else c for c in task.classes or ())
    if task.kind == "regression":
        if classes:
            raise SqlCompileError("a regression task has no classes")
        return _Sql(dialect), classes
    if not classes:
        raise SqlCompileError(f"a {task.kind} task needs its class labels (Task.classes)")
    if task.kind == "binary" and len(classes) != 2:
        raise SqlCompileError(
            f"a binary task needs exactly 2 classes (negative, positive), got {len(classes)}"
        )
    if len(classes) < 2:
        raise SqlCompileError("a multiclass task needs at least 2 classes")
    kinds = {type(c) for c in classes}
    if len(kinds) != 1 or not kinds <= {int, str, bool}:  # type(True) is bool, not int
        raise SqlCompileError(f"class labels must all be int, all str or all bool, got {classes!r}")
    if len(set(classes)) != len(classes):
        raise SqlCompileError(f"duplicate class labels in {classes!r}")
    return _Sql(dialect), classes


def _check_threshold(value: object, what: str = "threshold") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SqlCompileError(f"{what} must be a number in [0, 1], got {value!r}")
    value = float(value)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise SqlCompileError(f"{what} must be in [0, 1], got {value!r}")
    return value


def _binary_threshold(task: Task, threshold: float | None, function: str) -> float | None:
    if task.kind != "binary":
        if threshold is not None:
            raise SqlCompileError(f"{function}: a threshold only applies to binary classifiers")
        return None
    return DEFAULT_THRESHOLD if threshold is None else _check_threshold(threshold)


def _clean(scored: str) -> str:
    return scored.strip().rstrip(";").rstrip()


# --- shared pieces --------------------------------------------------------------------------


def _case_index(sql: _Sql, column: str, classes: tuple) -> str:
    """1-based position of `column` in `classes`; NULL for any other value."""
    whens = " ".join(f"WHEN {sql.literal(c)} THEN {k}" for k, c in enumerate(classes, 1))
    return f"CASE {column} {whens} END"


def _classifier_ctes(
    sql: _Sql,
    scored: str,
    classes: tuple,
    kind: str,
    threshold: float | None,
    function: str,
    label: str = SCORED_LABEL,
) -> list[str]:
    """CTEs sqlml_rows (y, yhat, p1..pK as class positions) and sqlml_checks (n, ok).

    `ok` is TRUE or raises; the final SELECT filters on it so the checks always run.
    """
    k_count = len(classes)
    columns = [f"{_case_index(sql, SCORED_LABEL, classes)} AS y"]
    if kind == "multiclass":
        columns.append(f"{_case_index(sql, SCORED_PREDICTED, classes)} AS yhat")
    elif threshold is not None:
        positive = sql.item(SCORED_PROBS, 2)
        columns.append(f"CASE WHEN {positive} > {threshold!r} THEN 2 ELSE 1 END AS yhat")
    columns.append(f"ARRAY_LENGTH({SCORED_PROBS}) AS n_probs")
    columns += [f"{sql.item(SCORED_PROBS, k)} AS p{k}" for k in range(1, k_count + 1)]
    select = ",\n    ".join(columns)
    rows = (
        f"sqlml_rows AS (\n  SELECT\n    {select}\n  FROM (\n{scored}\n  ) AS sqlml_scored\n"
        f"  WHERE {SCORED_LABEL} IS NOT NULL\n)"
    )
    valid_probs = " AND ".join(
        [f"n_probs = {k_count}"] + [f"p{k} BETWEEN 0 AND 1" for k in range(1, k_count + 1)]
    )
    checks = [
        ("COUNT(*) = 0", f"{function}: the evaluation set is empty"),
        (
            f"{sql.countif('y IS NULL')} > 0",
            f"{function}: label column {label!r} has a value that is not one of the model "
            f"classes {list(classes)}",
        ),
        (
            f"{sql.countif(f'NOT COALESCE({valid_probs}, FALSE)')} > 0",
            f"{function}: {SCORED_PROBS} must hold {k_count} class probabilities in [0, 1]",
        ),
    ]
    if kind == "multiclass":
        checks.append(
            (
                f"{sql.countif('yhat IS NULL')} > 0",
                f"{function}: {SCORED_PREDICTED} has a value that is not one of the model classes",
            )
        )
    return [rows, _checks_cte(sql, checks)]


def _checks_cte(sql: _Sql, checks: list[tuple[str, str]]) -> str:
    whens = "\n".join(f"      WHEN {cond} THEN {sql.error(msg)}" for cond, msg in checks)
    return (
        "sqlml_checks AS (\n  SELECT\n    COUNT(*) AS n,\n    CASE\n"
        f"{whens}\n      ELSE TRUE\n    END AS ok\n  FROM sqlml_rows\n)"
    )


def _with(ctes: list[str], select: str) -> str:
    return "WITH " + ",\n".join(ctes) + "\n" + select


def _ratio(num: str, den: str) -> str:
    """num / den, 0 when den is 0 (sklearn zero_division=0)."""
    return f"CASE WHEN {den} > 0 THEN ({num}) / ({den}) ELSE 0.0 END"


def _class_columns(classes: tuple) -> list[str]:
    """BigQuery's confusion-matrix column names for the class labels."""
    used = {"expected_label"}
    names = []
    for label in classes:
        text = ("true" if label else "false") if isinstance(label, bool) else str(label)
        name = re.sub(r"[^A-Za-z0-9_]", "_", text)[: _MAX_COLUMN - 8]
        if not name or name[0].isdigit() or name.lower().startswith(_RESERVED_PREFIXES):
            name = "_" + name
        base, suffix = name, 0
        while name.lower() in used:
            suffix += 1
            name = f"{base}_{suffix}"
        used.add(name.lower())
        names.append(name)
    return names


# --- ML.EVALUATE ----------------------------------------------------------------------------


def evaluate_sql(scored: str, task: Task, dialect: str, threshold: float | None = None) -> str:
    """ML.EVALUATE over a scored SELECT: one row of classification or regression metrics."""
    sql, classes = _check_common(scored, task, dialect)
    threshold = _binary_threshold(task, threshold, "ML.EVALUATE")
    if task.kind == "regression":
        return _evaluate_regression(sql, _clean(scored))
    ctes = _classifier_ctes(
        sql, _clean(scored), classes, task.kind, threshold, "ML.EVALUATE", task.label
    )
    k_count = len(classes)
    # Classes the averages run over: the positive class, or every class (macro).
    scored_classes = [2] if task.kind == "binary" else list(range(1, k_count + 1))
    class_rows = " UNION ALL ".join(f"SELECT {k} AS k" for k in scored_classes)
    ctes.append(f"sqlml_classes AS (\n  {class_rows}\n)")
    ctes.append(
        "sqlml_per_class AS (\n  SELECT\n    c.k,\n"
        f"    {sql.to_float(sql.countif('r.y = c.k'))} AS n_true,\n"
        f"    {sql.to_float(sql.countif('r.yhat = c.k'))} AS n_pred,\n"
        f"    {sql.to_float(sql.countif('r.y = c.k AND r.yhat = c.k'))} AS tp\n"
        "  FROM sqlml_classes AS c CROSS JOIN sqlml_rows AS r\n  GROUP BY c.k\n)"
    )
    present = "\n  WHERE n_true + n_pred > 0" if task.kind == "multiclass" else ""
    ctes.append(
        "sqlml_macro AS (\n  SELECT\n"
        f"    AVG({_ratio('tp', 'n_pred')}) AS precision,\n"
        f"    AVG({_ratio('tp', 'n_true')}) AS recall,\n"
        f"    AVG({_ratio('2 * tp', 'n_true + n_pred')}) AS f1_score\n"
        f"  FROM sqlml_per_class{present}\n)"
    )
    true_prob = "CASE y " + " ".join(f"WHEN {k} THEN p{k}" for k in range(1, k_count + 1)) + " END"
    clipped = f"LEAST(GREATEST({true_prob}, {_EPS!r}), {1 - _EPS!r})"
    ctes.append(
        "sqlml_totals AS (\n  SELECT\n"
        f"    {_ratio(sql.countif('y = yhat'), 'COUNT(*)')} AS accuracy,\n"
        f"    AVG(-LN({clipped})) AS log_loss\n"
        "  FROM sqlml_rows\n)"
    )
    ctes += _auc_ctes(sql, scored_classes)
    return _with(
        ctes,
        "SELECT\n  m.precision,\n  m.recall,\n  t.accuracy,\n  m.f1_score,\n  t.log_loss,\n"
        "  a.roc_auc\nFROM sqlml_checks\nLEFT JOIN sqlml_macro AS m ON TRUE\n"
        "LEFT JOIN sqlml_totals AS t ON TRUE\n"
        "LEFT JOIN (SELECT AVG(auc) AS roc_auc FROM sqlml_auc) AS a ON TRUE\n"
        "WHERE sqlml_checks.ok",
    )


def _auc_ctes(sql: _Sql, classes: list[int]) -> list[str]:
    """Exact one-vs-rest AUC per class k: P(score_pos > score_neg) + P(tie) / 2."""
    scores = "\n  UNION ALL\n  ".join(
        f"SELECT {k} AS k, p{k} AS score, y = {k} AS pos FROM sqlml_rows" for k in classes
    )
    cumulative = "SUM(nneg) OVER (PARTITION BY k ORDER BY score ROWS UNBOUNDED PRECEDING)"
    return [
        f"sqlml_scores AS (\n  {scores}\n)",
        "sqlml_score_groups AS (\n  SELECT\n    k,\n    score,\n"
        f"    {sql.to_float(sql.countif('pos'))} AS npos,\n"
        f"    {sql.to_float(sql.countif('NOT pos'))} AS nneg\n"
        "  FROM sqlml_scores\n  GROUP BY k, score\n)",
        # Each positive at this score beats every negative below it and ties half of those here.
        "sqlml_auc AS (\n  SELECT\n    k,\n"
        "    CASE WHEN SUM(npos) > 0 AND SUM(nneg) > 0\n"
        "      THEN SUM(wins) / (SUM(npos) * SUM(nneg)) END AS auc\n"
        f"  FROM (\n    SELECT k, npos, nneg, npos * ({cumulative} - 0.5 * nneg) AS wins\n"
        "    FROM sqlml_score_groups\n  ) AS ranked\n  GROUP BY k\n)",
    ]


def _evaluate_regression(sql: _Sql, scored: str) -> str:
    rows = (
        "sqlml_rows AS (\n  SELECT\n"
        f"    {sql.to_float(SCORED_LABEL)} AS y,\n    {sql.to_float(SCORED_PREDICTED)} AS yhat\n"
        f"  FROM (\n{scored}\n  ) AS sqlml_scored\n  WHERE {SCORED_LABEL} IS NOT NULL\n)"
    )
    checks = _checks_cte(
        sql,
        [
            ("COUNT(*) = 0", "ML.EVALUATE: the evaluation set is empty"),
            (
                f"{sql.countif('yhat IS NULL')} > 0",
                f"ML.EVALUATE: {SCORED_PREDICTED} is NULL for a row with a label",
            ),
        ],
    )
    ctes = [rows, checks]
    if sql.bigquery:  # no exact MEDIAN aggregate in BigQuery: the analytic PERCENTILE_CONT is
        ctes.append(
            "sqlml_errors AS (\n  SELECT\n    y,\n    yhat,\n"
            "    PERCENTILE_CONT(ABS(y - yhat), 0.5) OVER () AS median_ae\n"
            "  FROM sqlml_rows\n)"
        )
        source, median = "sqlml_errors", "MAX(median_ae)"
    else:
        source, median = "sqlml_rows", "MEDIAN(ABS(y - yhat))"
    log_error = "CASE WHEN y > -1 AND yhat > -1 THEN POW(LN(1 + y) - LN(1 + yhat), 2) END"
    ctes.append(
        "sqlml_stats AS (\n  SELECT\n"
        "    AVG(ABS(y - yhat)) AS mae,\n"
        "    AVG((y - yhat) * (y - yhat)) AS mse,\n"
        f"    CASE WHEN {sql.countif('y <= -1 OR yhat <= -1')} = 0 THEN AVG({log_error}) END"
        " AS msle,\n"
        f"    {median} AS median_ae,\n"
        "    VAR_POP(y) AS var_y,\n"
        "    VAR_POP(y - yhat) AS var_err\n"
        f"  FROM {source}\n)"
    )

    def explained(num: str) -> str:  # 1 - num / var(y), with sklearn's force_finite=True
        return (
            f"CASE WHEN {num} = 0 THEN 1.0 WHEN s.var_y = 0 THEN 0.0 ELSE 1 - {num} / s.var_y END"
        )

    return _with(
        ctes,
        "SELECT\n  s.mae AS mean_absolute_error,\n  s.mse AS mean_squared_error,\n"
        "  s.msle AS mean_squared_log_error,\n  s.median_ae AS median_absolute_error,\n"
        f"  {explained('s.mse')} AS r2_score,\n"
        f"  {explained('s.var_err')} AS explained_variance\n"
        "FROM sqlml_checks\nLEFT JOIN sqlml_stats AS s ON TRUE\nWHERE sqlml_checks.ok",
    )


# --- ML.CONFUSION_MATRIX --------------------------------------------------------------------


def confusion_matrix_sql(
    scored: str, task: Task, dialect: str, threshold: float | None = None
) -> str:
    """ML.CONFUSION_MATRIX: expected_label, then one count column per predicted class."""
    sql, classes = _check_common(scored, task, dialect)
    if task.kind == "regression":
        raise SqlCompileError("ML.CONFUSION_MATRIX needs a classification model, not regression")
    threshold = _binary_threshold(task, threshold, "ML.CONFUSION_MATRIX")
    function = "ML.CONFUSION_MATRIX"
    ctes = _classifier_ctes(
        sql, _clean(scored), classes, task.kind, threshold, function, task.label
    )
    class_rows = " UNION ALL ".join(
        f"SELECT {k} AS k, {sql.literal(c)} AS expected_label" for k, c in enumerate(classes, 1)
    )
    ctes.append(f"sqlml_classes AS (\n  {class_rows}\n)")
    counts = ",\n    ".join(
        f"{sql.countif(f'yhat = {k}')} AS n{k}" for k in range(1, len(classes) + 1)
    )
    ctes.append(
        f"sqlml_cells AS (\n  SELECT\n    y,\n    {counts}\n  FROM sqlml_rows\n  GROUP BY y\n)"
    )
    columns = ",\n  ".join(
        f"COALESCE(m.n{k}, 0) AS {sql.ident(name)}"
        for k, name in enumerate(_class_columns(classes), 1)
    )
    return _with(
        ctes,
        f"SELECT\n  c.expected_label,\n  {columns}\nFROM sqlml_checks\n"
        "CROSS JOIN sqlml_classes AS c\nLEFT JOIN sqlml_cells AS m ON m.y = c.k\n"
        "WHERE sqlml_checks.ok\nORDER BY c.k",
    )


# --- ML.ROC_CURVE ---------------------------------------------------------------------------


def roc_curve_sql(
    scored: str, task: Task, dialect: str, thresholds: list[float] | None = None
) -> str:
    """ML.ROC_CURVE for a binary classifier: confusion counts and rates per threshold."""
    sql, classes = _check_common(scored, task, dialect)
    if task.kind != "binary":
        raise SqlCompileError(f"ML.ROC_CURVE needs a binary classifier, not {task.kind}")
    ctes = _classifier_ctes(
        sql, _clean(scored), classes, "binary", None, "ML.ROC_CURVE", task.label
    )
    if thresholds is not None:
        if isinstance(thresholds, str | bytes) or not hasattr(thresholds, "__iter__"):
            raise SqlCompileError("thresholds must be a list of numbers in [0, 1]")
        values = sorted({_check_threshold(t, "a ROC threshold") for t in thresholds})
        if not values:
            raise SqlCompileError("thresholds must not be empty (leave it out for the default)")
        listed = " UNION ALL ".join(f"SELECT {sql.to_float(repr(v))} AS threshold" for v in values)
        ctes.append(f"sqlml_thresholds AS (\n  {listed}\n)")
    else:
        # Percentile k/100 (nearest rank) is the first score whose cumulative count reaches
        # k * n / 100: a score is one iff some integer k lies in (100 * before / n, 100 * cum / n].
        cum = "SUM(cnt) OVER (ORDER BY score ROWS UNBOUNDED PRECEDING)"
        ctes.append(
            "sqlml_thresholds AS (\n  SELECT score AS threshold\n  FROM (\n"
            f"    SELECT score, cnt, {cum} AS cum, SUM(cnt) OVER () AS total\n"
            "    FROM (SELECT p2 AS score, COUNT(*) AS cnt FROM sqlml_rows GROUP BY p2) AS g\n"
            "  ) AS c\n"
            f"  WHERE cum = cnt OR {sql.intdiv('100 * cum', 'total')}"
            f" > {sql.intdiv('100 * (cum - cnt)', 'total')}\n)"
        )
    above = "r.p2 > t.threshold"
    ctes.append(
        "sqlml_curve AS (\n  SELECT\n    t.threshold,\n"
        f"    {sql.countif(f'r.y = 2 AND {above}')} AS true_positives,\n"
        f"    {sql.countif(f'r.y = 1 AND {above}')} AS false_positives,\n"
        f"    {sql.countif(f'r.y = 1 AND NOT {above}')} AS true_negatives,\n"
        f"    {sql.countif(f'r.y = 2 AND NOT {above}')} AS false_negatives\n"
        "  FROM sqlml_thresholds AS t CROSS JOIN sqlml_rows AS r\n  GROUP BY t.threshold\n)"
    )
    recall = _ratio("v.true_positives", "v.true_positives + v.false_negatives")
    fpr = _ratio("v.false_positives", "v.false_positives + v.true_negatives")
    return _with(
        ctes,
        f"SELECT\n  v.threshold,\n  {recall} AS recall,\n  {fpr} AS false_positive_rate,\n"
        "  v.true_positives,\n  v.false_positives,\n  v.true_negatives,\n  v.false_negatives\n"
        "FROM sqlml_checks\nLEFT JOIN sqlml_curve AS v ON TRUE\nWHERE sqlml_checks.ok\n"
        "ORDER BY v.threshold",
    )
