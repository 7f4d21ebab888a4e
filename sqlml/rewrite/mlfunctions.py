"""ML.EVALUATE, ML.CONFUSION_MATRIX, ML.ROC_CURVE, ML.TOP_K and the statistics functions as
plain SQL over ML.PREDICT, for DuckDB and for BigQuery.

BigQuery runs only ML.PREDICT on imported ONNX/TensorFlow models, so every other ML.* function
becomes SQL over it: the same expansion serves both targets. A call expands to a subquery in
the target dialect; its ML.PREDICT is then rewritten like any other (`rewrite.duckdb`,
`rewrite.bigquery`). The metric SQL itself comes from `sqlml.metrics`, the statistics from
`sqlml.featurestats` and `sqlml.drift`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import sqlglot
from sqlglot import exp

from sqlml import drift, featurestats, metrics
from sqlml.dialect import MLCall, ModelArg, Sqlml, TableArg
from sqlml.errors import ModelInputError, SqlCompileError
from sqlml.names import ModelRef
from sqlml.outputs import OutputLayout
from sqlml.sqltext import literal_value, model_ref, struct_options

_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL",
            "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT")  # fmt: skip
EVALUATION_OPTIONS = {"threshold", "label", "engine"}
TOP_K_OPTIONS = {"k", "partition_by", "class", "score", "order_by", "engine"}


class MLBinder(Protocol):
    """What the expansion needs to know about models and queries."""

    def model_layout(self, ref: ModelRef) -> OutputLayout:
        """The model's outputs; raises for an unknown model."""
        ...

    def feature_stats(self, ref: ModelRef) -> list[featurestats.FeatureStats]: ...

    def describe(self, sql: str) -> list[tuple[str, str]] | None:
        """(name, DuckDB type) of a sqlml query's columns, or None when unknown (BigQuery)."""
        ...

    def log_slices(self, model: str) -> list[tuple[int, str, int]]:
        """(version, window, rows with ground truth) of the prediction log (DuckDB only)."""
        ...


@dataclass(frozen=True)
class Target:
    """A dialect, and how a sqlml SELECT over ML.PREDICT becomes SQL of that dialect."""

    dialect: str  # "duckdb" | "bigquery"
    scored_sql: Callable[[str], str]  # sqlml text -> text in `dialect`

    def parse(self, sql: str) -> exp.Expression:
        return sqlglot.parse_one(sql, read=Sqlml if self.dialect == "duckdb" else "bigquery")


def is_ml_call(node: exp.Expression) -> bool:
    """An ML.* call sqlml expands (a same-named plain function is left to the engine)."""
    parent = node.parent
    return (
        isinstance(node, MLCall)
        and isinstance(parent, exp.Table)
        and parent.text("db").upper() == "ML"
    )


def expand_all(tree: exp.Expression, binder: MLBinder, target: Target) -> exp.Expression:
    """Replace every ML.* call (innermost first) by its plain-SQL subquery."""
    for call in reversed(list(tree.find_all(MLCall))):
        if not is_ml_call(call):
            call.replace(exp.Anonymous(this=call.this.name, expressions=call.expressions))
            continue
        holder = call.parent
        replacement = exp.Subquery(this=target.parse(expand(call, binder, target)))
        alias = holder.args.get("alias") or exp.TableAlias(
            this=exp.to_identifier(f"ml_{call.function.lower()}")
        )
        replacement.set("alias", alias)
        holder.replace(replacement)
    return tree


def expand(call: MLCall, binder: MLBinder, target: Target) -> str:
    """The SQL (in the target's dialect) of one ML.* call."""
    handlers = {
        "EVALUATE": _evaluation,
        "CONFUSION_MATRIX": _evaluation,
        "ROC_CURVE": _evaluation,
        "TOP_K": _top_k,
        "FEATURE_INFO": _feature_info,
        "VALIDATE_DATA_SKEW": _skew,
        "VALIDATE_DATA_DRIFT": _drift,
        "MONITOR": _monitor,
    }
    return handlers[call.function](call, binder, target)


# -- arguments ---------------------------------------------------------------------------------


def _what(call: MLCall, ref: ModelRef | None = None) -> str:
    return f"ML.{call.function}(MODEL {ref})" if ref else f"ML.{call.function}"


def _model(call: MLCall, binder: MLBinder) -> tuple[ModelRef, OutputLayout]:
    first = call.expressions[0] if call.expressions else None
    if not isinstance(first, ModelArg):
        raise SqlCompileError(f"{_what(call)}: the first argument must be MODEL <name>")
    ref = model_ref(first.this)
    return ref, binder.model_layout(ref)


def source_sql(node: exp.Expression | None, what: str) -> str:
    """A `(query)` or `TABLE t` argument as sqlml SELECT text."""
    if isinstance(node, exp.Subquery):
        return node.this.sql(dialect=Sqlml)
    if isinstance(node, TableArg):
        return f"SELECT * FROM {node.this.sql(dialect=Sqlml)}"
    raise SqlCompileError(f"{what}: expected a (query) or TABLE name argument")


def _options(call: MLCall, position: int, allowed: set[str], what: str) -> dict[str, Any]:
    node = call.expressions[position] if len(call.expressions) > position else None
    options = struct_options(node, what) if node is not None else {}
    unknown = set(options) - allowed
    if unknown:
        raise SqlCompileError(f"{what}: unknown option(s) {sorted(unknown)}")
    return options


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _predict(ref: ModelRef, source: str, engine: str | None) -> str:
    options = f", STRUCT('{engine}' AS engine)" if engine and engine != "auto" else ""
    return f"ML.PREDICT(MODEL `{ref}`, ({source}){options})"


def _task(layout: OutputLayout) -> metrics.Task:
    signature = layout.signature
    if signature.is_classifier:
        kind = "binary" if len(signature.classes) == 2 else "multiclass"
        return metrics.Task(kind, tuple(signature.classes))
    return metrics.Task("regression")


# -- evaluation ----------------------------------------------------------------------------------


def _evaluation(call: MLCall, binder: MLBinder, target: Target) -> str:
    ref, layout = _model(call, binder)
    what = _what(call, ref)
    if len(call.expressions) < 2:
        raise SqlCompileError(f"{what}: give the evaluation data: (query) or TABLE name")
    source = source_sql(call.expressions[1], what)
    thresholds = None
    options_at = 2
    given = call.expressions[2] if len(call.expressions) > 2 else None
    if call.function == "ROC_CURVE" and given is not None and not isinstance(given, exp.Struct):
        thresholds = _threshold_list(given, what)
        options_at = 3
    options = _options(call, options_at, EVALUATION_OPTIONS, what)
    if layout.predicted is None:
        raise SqlCompileError(
            f"{what}: the model has no label column; register it with label=... so sqlml "
            "knows predicted_<label>"
        )
    task = _task(layout)
    if call.function != "EVALUATE" and task.kind == "regression":
        raise SqlCompileError(
            f"{what}: {call.function.lower()} needs a classifier; {ref} is a regression model "
            "(use ML.EVALUATE)"
        )
    if call.function == "ROC_CURVE" and task.kind != "binary":
        raise SqlCompileError(f"{what}: the ROC curve needs a binary classifier")
    label = str(options.get("label") or layout.label)
    _check_label(what, binder.describe(source), label, layout)
    task = replace(task, label=label)
    columns = [f"{_quote(label)} AS {metrics.SCORED_LABEL}"]
    columns.append(f"{_quote(layout.predicted)} AS {metrics.SCORED_PREDICTED}")
    if layout.predicted_probs and layout.native and target.dialect == "bigquery":
        positions = range(len(layout.signature.classes))
        entries = ", ".join(_class_probability(layout, k, target.dialect) for k in positions)
        columns.append(f"[{entries}] AS {metrics.SCORED_PROBS}")
    elif layout.predicted_probs:
        probs = f"list_transform({_quote(layout.predicted_probs)}, p -> p.prob)"
        columns.append(f"{probs} AS {metrics.SCORED_PROBS}")
    scored = target.scored_sql(
        f"SELECT {', '.join(columns)} FROM {_predict(ref, source, options.get('engine'))}"
    )
    threshold = options.get("threshold")
    if call.function == "EVALUATE":
        return metrics.evaluate_sql(scored, task, target.dialect, threshold)
    if call.function == "CONFUSION_MATRIX":
        return metrics.confusion_matrix_sql(scored, task, target.dialect, threshold)
    return metrics.roc_curve_sql(scored, task, target.dialect, thresholds)


def _threshold_list(node: exp.Expression, what: str) -> list[float]:
    """`[0.1, 0.5]` or BigQuery's `GENERATE_ARRAY(start, end, step)` as numbers."""
    if isinstance(node, exp.GenerateSeries) or (
        isinstance(node, exp.Anonymous) and node.name.upper() == "GENERATE_ARRAY"
    ):
        args = (
            [node.args.get("start"), node.args.get("end"), node.args.get("step")]
            if isinstance(node, exp.GenerateSeries)
            else node.expressions
        )
        start, end, step = (literal_value(a) if a is not None else 1 for a in args)
        if step <= 0:
            raise SqlCompileError(f"{what}: GENERATE_ARRAY step must be positive")
        count = int(round((end - start) / step)) + 1
        return [round(start + i * step, 12) for i in range(max(count, 0))]
    values = literal_value(node)
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
        raise SqlCompileError(f"{what}: thresholds must be an array of numbers")
    return [float(v) for v in values]


def _check_label(
    what: str, columns: list[tuple[str, str]] | None, label: str, layout: OutputLayout
) -> None:
    """The ground-truth column exists and can equal the model's classes (or is numeric)."""
    if columns is None:
        return
    by_name = {name.lower(): type_.upper() for name, type_ in columns}
    column_type = by_name.get(label.lower())
    if column_type is None:
        raise ModelInputError(
            f"{what}: label column {label!r} is missing from the evaluation data "
            f"(columns: {', '.join(name for name, _ in columns)}); name it with "
            "STRUCT('<column>' AS label)"
        )
    classes = layout.signature.classes
    if not classes or all(isinstance(c, bool) for c in classes):
        ok = column_type.startswith(_NUMERIC) or column_type == "BOOLEAN"
        wants = "a number" if not classes else "BOOLEAN"
    elif all(isinstance(c, int) for c in classes):
        ok, wants = column_type.startswith(_NUMERIC) or column_type == "BOOLEAN", "a number"
    else:
        ok, wants = column_type == "VARCHAR", "VARCHAR"
    if not ok:
        raise ModelInputError(
            f"{what}: label column {label!r} has type {column_type}, expected {wants} "
            f"(the model's classes: {list(classes)})"
            if classes
            else f"{what}: label column {label!r} has type {column_type}, expected a number"
        )


# -- ranking -------------------------------------------------------------------------------------


def _top_k(call: MLCall, binder: MLBinder, target: Target) -> str:
    """The k best rows per group by model score: ROW_NUMBER() in QUALIFY, ties broken by
    `order_by` columns (default: the model's inputs, ascending)."""
    ref, layout = _model(call, binder)
    what = _what(call, ref)
    source = source_sql(call.expressions[1] if len(call.expressions) > 1 else None, what)
    options = _options(call, 2, TOP_K_OPTIONS, what)
    k = options.get("k")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SqlCompileError(f"{what}: k must be a positive integer, got {k!r}")
    partition = _names(options.get("partition_by"), "partition_by", what)
    order_by = _names(options.get("order_by"), "order_by", what) or [
        t.name for t in layout.signature.inputs
    ]
    columns = binder.describe(source)
    if columns is not None:
        known = {name.lower() for name, _ in columns}
        for name in partition + order_by:
            if name.lower() not in known:
                raise ModelInputError(f"{what}: column {name!r} is missing from the candidates")
    score = _score(layout, options, what, target.dialect)
    window = (
        f"ROW_NUMBER() OVER ({'PARTITION BY ' if partition else ''}"
        f"{', '.join(_quote(p) for p in partition)} ORDER BY {score} DESC NULLS LAST"
        + "".join(f", {_quote(c)} ASC NULLS LAST" for c in order_by)
        + ")"
    )
    return target.scored_sql(
        f"SELECT *, {score} AS score, {window} AS rank "
        f"FROM {_predict(ref, source, options.get('engine'))} WHERE TRUE "
        f"QUALIFY {window} <= {k}"
    )


def _names(value: object, option: str, what: str) -> list[str]:
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SqlCompileError(f"{what}: {option} must be a column name or an array of names")
    return list(values)


def _score(layout: OutputLayout, options: dict[str, Any], what: str, dialect: str) -> str:
    """Binary: the positive class's probability; multiclass: that of `class`; regression: the
    prediction; `score` names any numeric output column instead."""
    if options.get("score") is not None:
        names = {t.name.lower() for t in layout.signature.outputs}
        if layout.predicted:
            names.add(layout.predicted.lower())
        if str(options["score"]).lower() not in names:
            raise SqlCompileError(f"{what}: score {options['score']!r} is not a model output")
        return _quote(str(options["score"]))
    signature = layout.signature
    if layout.predicted_probs is None:
        if layout.predicted is None:
            raise SqlCompileError(
                f"{what}: name the output to rank by: STRUCT('<output>' AS score)"
            )
        return _quote(layout.predicted)
    if "class" in options:
        wanted = options["class"]
        if wanted not in signature.classes:
            raise SqlCompileError(
                f"{what}: class {wanted!r} is not one of {list(signature.classes)}"
            )
        return _class_probability(layout, list(signature.classes).index(wanted), dialect)
    if not layout.is_binary:
        raise SqlCompileError(f"{what}: a multiclass model ranks by STRUCT('<class>' AS class)")
    return _class_probability(layout, 1, dialect)


def _class_probability(layout: OutputLayout, position: int, dialect: str) -> str:
    """The probability of class `position` (0-based) in predicted_<label>_probs. sqlml writes
    that array in class order; a model BigQuery trained has its own order, so there the entry
    is found by its label."""
    probs = _quote(layout.predicted_probs)
    if layout.native and dialect == "bigquery":
        label = exp.convert(layout.signature.classes[position]).sql(dialect=Sqlml)
        return f"list_filter({probs}, p -> p.label = {label})[1].prob"
    return f"{probs}[{position + 1}].prob"


# -- statistics ----------------------------------------------------------------------------------


def _stats(call: MLCall, binder: MLBinder) -> tuple[ModelRef, list[featurestats.FeatureStats]]:
    first = call.expressions[0] if call.expressions else None
    if not isinstance(first, ModelArg):
        raise SqlCompileError(f"{_what(call)}: the first argument must be MODEL <name>")
    ref = model_ref(first.this)
    stats = binder.feature_stats(ref)
    if not stats:
        raise SqlCompileError(
            f"{_what(call, ref)}: no training statistics for {ref}; register it with "
            "training_data=... (a table, query or DataFrame)"
        )
    return ref, stats


def _feature_info(call: MLCall, binder: MLBinder, target: Target) -> str:
    _, stats = _stats(call, binder)
    return featurestats.feature_info_sql(stats, target.dialect)


def _skew(call: MLCall, binder: MLBinder, target: Target) -> str:
    ref, stats = _stats(call, binder)
    what = _what(call, ref)
    source = source_sql(call.expressions[1] if len(call.expressions) > 1 else None, what)
    options = _options(call, 2, drift.OPTIONS, what)
    return drift.validate_data_skew_sql(stats, target.scored_sql(source), options, target.dialect)


def _drift(call: MLCall, binder: MLBinder, target: Target) -> str:
    what = _what(call)
    if len(call.expressions) < 2:
        raise SqlCompileError(f"{what}: give the base and the study data")
    base = source_sql(call.expressions[0], what)
    study = source_sql(call.expressions[1], what)
    options = _options(call, 2, drift.OPTIONS | {"numerical_columns", "categorical_columns"}, what)
    columns = _drift_columns(base, binder, options, what)
    return drift.validate_data_drift_sql(
        target.scored_sql(base), target.scored_sql(study), columns, options, target.dialect
    )


def _drift_columns(
    base: str, binder: MLBinder, options: dict[str, Any], what: str
) -> list[tuple[str, str]]:
    """(column, 'numerical' | 'categorical'): from the base query's types, or from the
    `numerical_columns` / `categorical_columns` options where types are unknown."""
    numerical = _names(options.pop("numerical_columns", None), "numerical_columns", what)
    categorical = _names(options.pop("categorical_columns", None), "categorical_columns", what)
    if numerical or categorical:
        return [(c, "numerical") for c in numerical] + [(c, "categorical") for c in categorical]
    described = binder.describe(base)
    if described is None:
        raise SqlCompileError(
            f"{what}: the column types are unknown here; add STRUCT(['a', ...] AS "
            "numerical_columns, ['b', ...] AS categorical_columns)"
        )
    return drift.column_kinds(described)


# -- continuous evaluation over the prediction log -------------------------------------------------

MONITOR_OPTIONS = {"metric", "min_value", "max_value", "threshold"}
_SQL_TYPES = {"int64": "BIGINT", "string": "VARCHAR", "bool": "BOOLEAN"}


def _monitor(call: MLCall, binder: MLBinder, target: Target) -> str:
    """ML.EVALUATE's metrics over sqlml.prediction_log rows with ground truth, one row per
    logged version and window (last day, week, month, all), plus `is_alert` when `metric`
    crosses `min_value` / `max_value`."""
    ref, _ = _model(call, binder)
    what = _what(call, ref)
    if target.dialect != "duckdb":
        raise SqlCompileError(f"{what}: the prediction log lives in DuckDB (sqlml.prediction_log)")
    options = _options(call, 1, MONITOR_OPTIONS, what)
    metric = options.get("metric")
    low, high = options.get("min_value"), options.get("max_value")
    if (low is not None or high is not None) and not metric:
        raise SqlCompileError(f"{what}: min_value/max_value need STRUCT('<metric>' AS metric)")
    parts = []
    for version, window, labeled in binder.log_slices(ref.name):
        layout = binder.model_layout(ModelRef(ref.name, version=version))
        if layout.predicted is None:
            raise SqlCompileError(f"{what}: version {version} has no label column")
        task = replace(_task(layout), label="ground_truth")
        evaluated = metrics.evaluate_sql(
            _logged_scored(ref.name, version, window, layout), task, "duckdb",
            options.get("threshold"),
        )  # fmt: skip
        alert = "FALSE"
        if metric:
            checks = ([f"m.{_quote(metric)} < {float(low)!r}"] if low is not None else []) + (
                [f"m.{_quote(metric)} > {float(high)!r}"] if high is not None else []
            )
            alert = f"coalesce({' OR '.join(checks)}, FALSE)" if checks else "FALSE"
        parts.append(
            f"SELECT '{ref.name}' AS model, {version} AS version, '{window}' AS window, "
            f"{labeled} AS labeled_rows, m.*, {alert} AS is_alert FROM ({evaluated}) AS m"
        )
    if not parts:
        raise SqlCompileError(
            f"{what}: no logged predictions of {ref.name} have ground truth yet "
            "(log with db.log_predictions, then UPDATE sqlml.prediction_log SET ground_truth)"
        )
    return " UNION ALL BY NAME ".join(parts) + " ORDER BY version, window"


def _logged_scored(model: str, version: int, window: str, layout: OutputLayout) -> str:
    from sqlml.predlog import WINDOWS

    signature = layout.signature
    kind = _SQL_TYPES.get(
        "bool" if signature.classes and all(isinstance(c, bool) for c in signature.classes)
        else "int64" if signature.classes and all(isinstance(c, int) for c in signature.classes)
        else "string" if signature.classes else "",
        "DOUBLE",
    )  # fmt: skip
    columns = [
        f"CAST(ground_truth->>'$' AS {kind}) AS {metrics.SCORED_LABEL}",
        f"CAST(outputs->>'{layout.predicted}' AS {kind}) AS {metrics.SCORED_PREDICTED}",
    ]
    if layout.predicted_probs:
        columns.append(
            f"CAST(json_extract(outputs, '$.{layout.predicted_probs}[*].prob') AS DOUBLE[]) "
            f"AS {metrics.SCORED_PROBS}"
        )
    span = WINDOWS[window]
    recent = f" AND logged_at >= current_timestamp - INTERVAL '{span}'" if span else ""
    return (
        f"SELECT {', '.join(columns)} FROM sqlml.prediction_log WHERE model = '{model}' "
        f"AND version = {version} AND ground_truth IS NOT NULL{recent}"
    )
