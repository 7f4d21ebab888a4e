"""Rewrite ML.PREDICT into plain DuckDB SQL over the model's scalar function.

`ML.PREDICT(MODEL m, (q), STRUCT(0.6 AS threshold))` becomes

    (SELECT * EXCLUDE (__sqlml_out), __sqlml_out.*
     FROM (SELECT *, "m"(col_a, col_b) AS __sqlml_out FROM (q) AS __sqlml_in))

so every input column passes through and the model's outputs follow as columns. Inputs are
matched to query columns by name (case-insensitively, as in BigQuery) and type-checked first.

A model compiled to SQL (`sqlml.sqlmodel`) is inlined instead of calling a function: its
stored plan adds one projection per stage of shared values, then the STRUCT, so nothing runs
in Python. `STRUCT('sql' | 'runtime' | 'auto' AS engine)` chooses; 'auto' (the default) takes
the SQL form whenever the model has one.
"""

from __future__ import annotations

import itertools
import re
from typing import Protocol

from sqlglot import exp

from sqlml.dialect import MLCall, Sqlml
from sqlml.errors import ModelInputError, SqlCompileError
from sqlml.names import ModelRef
from sqlml.outputs import OutputLayout
from sqlml.predlog import LOG_FUNCTION, LogSettings, sampled_predicate
from sqlml.rewrite.mlfunctions import Target, expand_all
from sqlml.sqlcatalog import ENGINES, SqlFunction
from sqlml.sqlmodel import column_outputs, staged_select
from sqlml.sqltext import model_ref, parse, struct_options
from sqlml.udf import ModelFunction

OUT = "__sqlml_out"
_NUMERIC = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
    "FLOAT",
    "DOUBLE",
    "DECIMAL",
    "BOOLEAN",
)


PREDICT_OPTIONS = {"threshold", "keep_original_columns", "engine"}
_INLINED = re.compile(r"\b__sqlml_inline_(\d+)\b")
_inline_ids = itertools.count(1)


class Binder(Protocol):
    """What the rewrite needs from a live database: model functions and query columns."""

    def model_function(self, ref: ModelRef) -> tuple[str, ModelFunction]: ...

    def sql_function(self, ref: ModelRef, engine: str = "auto") -> SqlFunction | None: ...

    def query_columns(self, sql: str) -> list[tuple[str, str]]: ...

    # for the other ML.* functions (sqlml.rewrite.mlfunctions.MLBinder)
    def model_layout(self, ref: ModelRef) -> OutputLayout: ...

    def feature_stats(self, ref: ModelRef) -> list: ...

    def describe(self, sql: str) -> list[tuple[str, str]] | None: ...

    def prediction_logging(self, ref: ModelRef) -> tuple[LogSettings, int] | None:
        """The model's logging settings and the version ML.PREDICT resolves to, if logged."""
        ...


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def has_predict(tree: exp.Expression) -> bool:
    """True when the statement has ML.PREDICT or another ML.* call sqlml expands."""
    return tree.find(exp.Predict) is not None or tree.find(MLCall) is not None


def rewrite_sql(tree: exp.Expression, binder: Binder) -> str:
    """DuckDB SQL for a statement with ML.PREDICT: `rewrite` and generate.

    The plans of models compiled to SQL are spliced into the generated text rather than
    parsed into the tree: they can be large, and sqlglot would only print them back.
    """
    inlined: dict[str, str] = {}
    if tree.find(MLCall) is not None:
        tree = expand_all(tree, binder, Target("duckdb", lambda sql: sql))
    return expand(rewrite(tree, binder, inlined).sql(dialect="duckdb"), inlined)


def expand(sql: str, inlined: dict[str, str]) -> str:
    """Put the inlined plans in place of their placeholders (plans may hold others)."""
    while _INLINED.search(sql):
        sql = _INLINED.sub(lambda m: "(" + inlined[m.group(0)] + ")", sql)
    return sql


def rewrite(
    tree: exp.Expression, binder: Binder, inlined: dict[str, str] | None = None
) -> exp.Expression:
    """Replace every ML.PREDICT (innermost first) with its DuckDB subquery.

    Compiled models leave a placeholder table `__sqlml_inline_N` whose SQL is put in
    `inlined` (use `rewrite_sql`); without `inlined`, they call their macro instead.
    """
    while True:
        innermost = [
            p
            for p in tree.find_all(exp.Predict)
            if p.this.find(exp.Predict) is None
            and (p.expression is None or p.expression.find(exp.Predict) is None)
        ]
        if not innermost:
            return tree
        for predict in innermost:
            replacement = predict_subquery(predict, binder, inlined)
            holder = predict.parent if isinstance(predict.parent, exp.Table) else predict
            alias = holder.args.get("alias") if holder is not predict else None
            replacement.set("alias", alias or exp.TableAlias(this=exp.to_identifier("ml_predict")))
            holder.replace(replacement)


def input_query_sql(source: exp.Expression | None) -> str:
    """SQL text of ML.PREDICT's second argument: `(query)` or `TABLE t`."""
    if isinstance(source, exp.Subquery):
        return source.this.sql(dialect=Sqlml)
    if isinstance(source, exp.Table):
        return f"SELECT * FROM {source.sql(dialect=Sqlml)}"
    raise SqlCompileError("ML.PREDICT needs a query in parentheses or TABLE name as input")


def check_engine(ref: object, engine: object) -> str:
    if engine not in ENGINES:
        raise SqlCompileError(
            f"ML.PREDICT(MODEL {ref}): engine must be 'auto', 'sql' or 'runtime', got {engine!r}"
        )
    return str(engine)


def predict_subquery(
    predict: exp.Predict, binder: Binder, inlined: dict[str, str] | None = None
) -> exp.Subquery:
    ref = model_ref(predict.this)
    options = struct_options(predict.args.get("params_struct"), f"ML.PREDICT(MODEL {ref})")
    unknown = set(options) - PREDICT_OPTIONS
    if unknown:
        raise SqlCompileError(f"ML.PREDICT(MODEL {ref}): unknown option(s) {sorted(unknown)}")
    engine = check_engine(ref, options.get("engine", "auto"))
    inner = input_query_sql(predict.expression)
    compiled = binder.sql_function(ref, engine)
    function: ModelFunction | SqlFunction
    if compiled is not None:
        function = compiled
        columns = binder.query_columns(expand(inner, inlined) if inlined else inner)
        arguments = bind_inputs(str(ref), function, columns)
        source = f"({inner}) AS __sqlml_in"
        if inlined is None:  # call the stored macro
            scored = (
                f"SELECT *, {compiled.form.macro}({', '.join(arguments)}) AS {OUT} FROM {source}"
            )
            sql = f"SELECT * EXCLUDE ({OUT}), {OUT}.* FROM ({scored})"
        else:  # inline the staged plan: each shared value computed once, each output a column
            placeholder = f"__sqlml_inline_{next(_inline_ids)}"
            inlined[placeholder] = staged_select(column_outputs(compiled.plan), source)
            sql = f"SELECT * FROM {placeholder}"
    else:
        function_name, function = binder.model_function(ref)
        columns = binder.query_columns(expand(inner, inlined) if inlined else inner)
        arguments = bind_inputs(str(ref), function, columns)
        sql = (
            f"SELECT * EXCLUDE ({OUT}), {OUT}.* FROM "
            f"(SELECT *, {quote(function_name)}({', '.join(arguments)}) AS {OUT} "
            f"FROM ({inner}) AS __sqlml_in)"
        )
    if options.get("threshold") is not None:
        replaced = threshold_expression(str(ref), function, options["threshold"])
        sql = f"SELECT * REPLACE ({replaced}) FROM ({sql})"
    logging = binder.prediction_logging(ref)
    if logging is not None:
        sql = logged_select(sql, str(ref), function, columns, *logging)
    return exp.Subquery(this=parse(sql))


def logged_select(
    sql: str,
    ref: str,
    function: ModelFunction | SqlFunction,
    columns: list[tuple[str, str]],
    settings: LogSettings,
    version: int,
) -> str:
    """ML.PREDICT's rows, with a sample of them handed to the prediction log (sqlml.predlog)."""
    by_name = {name.lower(): name for name, _ in columns}
    key = by_name.get(settings.key_column.lower())
    if key is None:
        raise ModelInputError(
            f"model {ref}: prediction logging needs the key column {settings.key_column!r}, "
            f"missing from the query (columns: {', '.join(n for n, _ in columns)})"
        )
    inputs = match_inputs(ref, function, columns)
    outputs = [f.name for f in function.layout.arrow_fields()]

    def as_json(names: list[str]) -> str:
        fields = ", ".join(f"{exp.convert(n).sql()}: {quote(n)}" for n in names)
        return f"CAST(to_json({{{fields}}}) AS VARCHAR)"

    model = settings.model
    log_call = (
        f"{LOG_FUNCTION}('{model}', {version}, CAST({quote(key)} AS VARCHAR), "
        f"{as_json(inputs)}, {as_json(outputs)})"
    )
    sampled = sampled_predicate(quote(key), settings.sample_rate)
    return f"SELECT * FROM ({sql}) AS __sqlml_logged WHERE NOT {sampled} OR {log_call}"


def bind_inputs(ref: str, function: ModelFunction, columns: list[tuple[str, str]]) -> list[str]:
    """Quoted column references for each model input, in the function's argument order.

    BOOLEAN columns feeding numeric inputs become TINYINT (0/1): DuckDB casts that implicitly
    to the function's parameter type, but not BOOLEAN itself.
    """
    types = {name: type_.upper() for name, type_ in columns}
    arguments = []
    for tensor, name in zip(function.signature.inputs, match_inputs(ref, function, columns)):
        column = f"__sqlml_in.{quote(name)}"
        if types[name] == "BOOLEAN" and tensor.dtype != "bool":
            column = f"CAST({column} AS TINYINT)"
        arguments.append(column)
    return arguments


def match_inputs(ref: str, function: ModelFunction, columns: list[tuple[str, str]]) -> list[str]:
    """The query column feeding each model input (by name, case-insensitively), type-checked."""
    by_name = {name.lower(): (name, type_) for name, type_ in columns}
    arguments = []
    for tensor in function.signature.inputs:
        found = by_name.get(tensor.name.lower())
        if found is None:
            available = ", ".join(name for name, _ in columns)
            raise ModelInputError(
                f"model {ref}: input column {tensor.name!r} is missing from the query "
                f"(columns: {available})"
            )
        name, column_type = found
        check_type(
            ref, tensor.name, tensor.dtype, tensor.is_scalar or tensor.width == -1, column_type
        )
        arguments.append(name)
    return arguments


def check_type(ref: str, column: str, dtype: str, scalar: bool, column_type: str) -> None:
    upper = column_type.upper()
    is_list = upper.endswith("]")
    base = upper[: upper.index("[")] if is_list else upper
    wants = "VARCHAR" if dtype == "string" else "a number"
    ok_base = base == "VARCHAR" if dtype == "string" else base.startswith(_NUMERIC)
    if is_list == scalar or not ok_base:
        shape = "" if scalar else " list"
        raise ModelInputError(
            f"model {ref}: input column {column!r} has type {column_type}, "
            f"expected {wants}{shape} ({dtype})"
        )


def threshold_expression(ref: str, function: ModelFunction, threshold: object) -> str:
    layout = function.layout
    if not layout.is_binary or layout.predicted is None:
        raise SqlCompileError(
            f"ML.PREDICT(MODEL {ref}): threshold applies to binary classifiers with a known "
            "label; register the model with label=... and two classes"
        )
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise SqlCompileError(
            f"ML.PREDICT(MODEL {ref}): threshold must be in [0, 1], got {threshold!r}"
        )
    negative, positive = (exp.convert(c).sql(dialect=Sqlml) for c in function.signature.classes)
    probs = quote(layout.predicted_probs)
    return (
        f"CASE WHEN {probs} IS NULL THEN NULL WHEN {probs}[2].prob > {float(threshold)!r} "
        f"THEN {positive} ELSE {negative} END "
        f"AS {quote(layout.predicted)}"
    )
