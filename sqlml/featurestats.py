"""Per-feature statistics of a model's training data: ML.FEATURE_INFO, and the baseline that
ML.VALIDATE_DATA_SKEW compares serving data against.

BigQuery keeps training statistics inside a model; imported models have none, so sqlml
computes them itself at registration, stores them in the DuckDB file (`sqlml.feature_stats`)
and bakes them into plain SQL as literals when a query needs them.

Definitions (shared with `sqlml.drift`, which must bin data exactly as the stored histograms):

- kind: 'numerical' for numeric and BOOLEAN columns (TRUE = 1, FALSE = 0), 'categorical' for
  everything else (values compared as their text, `CAST(x AS VARCHAR)`).
- Missing values: NULL, and for numerical columns also NaN and +-inf (they have no place on a
  histogram and JSON cannot hold them), count in `null_count`; every other statistic is over
  the `count` present values.
- stddev: the *sample* standard deviation (`STDDEV_SAMP`). BigQuery's ML.FEATURE_INFO page does
  not say which; GoogleSQL's `STDDEV` is `STDDEV_SAMP`, as is pandas' `std()`.
- median, quantiles: exact, linear interpolation between order statistics (DuckDB
  `quantile_cont`, numpy's default method); 11 quantiles at 0, 10%, ..., 100%.
- Histogram: `num_bins` (default 10, BigQuery's `num_histogram_buckets` default) equal-width
  bins over [min, max]. Value v goes to bin `1 + min(B - 1, floor((v - min) / (max - min) * B))`
  (the last bin is closed); a constant column puts everything in bin 1. When other data is
  binned against these edges, values below min / above max land in open-ended edge bins 0 and
  B + 1, which are empty for the training data. The same SQL expression (`bucket_sql`) bins the
  training data here and serving data in `sqlml.drift`, and edges are written back into SQL as
  exact float literals, so a skew check against stored statistics gives the same numbers as a
  drift check against the training query itself.
- Categories: the `top_k` (default 50, BigQuery's `num_rank_histogram_buckets` default) most
  frequent values, ties broken by value, with their counts, and `other_count` for the rest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import duckdb

from sqlml.errors import ModelInputError, SqlCompileError

DEFAULT_BINS = 10
DEFAULT_TOP_K = 50
QUANTILES = tuple(i / 10 for i in range(11))
OTHER = "other"  # the bucket of categories outside the top values; real ones are 'v:<value>'
DIALECTS = ("duckdb", "bigquery")

_NUMERIC_TYPES = {
    "tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint", "uinteger",
    "ubigint", "uhugeint", "float", "double", "decimal", "boolean",
}  # fmt: skip


@dataclass
class FeatureStats:
    """What the training data looked like for one model input."""

    input: str
    kind: str  # 'numerical' | 'categorical'
    dtype: str  # DuckDB type of the column, e.g. 'DOUBLE', 'BOOLEAN', 'VARCHAR'
    count: int  # present values (see the module docstring for what is missing)
    null_count: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    median: float | None = None
    stddev: float | None = None  # sample standard deviation
    quantiles: list[float] | None = None  # at QUANTILES
    histogram_edges: list[float] | None = None  # num_bins + 1 edges, min to max
    histogram_counts: list[int] | None = None  # num_bins counts; they sum to `count`
    category_count: int | None = None  # distinct values
    top_values: list[tuple[str, int]] | None = None  # (value, count), most frequent first
    other_count: int | None = None  # present values outside top_values

    @property
    def is_boolean(self) -> bool:
        return self.dtype.upper() == "BOOLEAN"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.top_values is not None:
            data["top_values"] = [[value, count] for value, count in self.top_values]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureStats:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if fields.get("top_values") is not None:
            fields["top_values"] = [(str(v), int(c)) for v, c in fields["top_values"]]
        return cls(**fields)


# -- computing -------------------------------------------------------------------------------


def compute(
    con: duckdb.DuckDBPyConnection,
    source_sql: str,
    columns: list[str] | None = None,
    *,
    num_bins: int = DEFAULT_BINS,
    top_k: int = DEFAULT_TOP_K,
) -> list[FeatureStats]:
    """Statistics of `columns` (default: all) of the SELECT `source_sql`, in two SQL passes:
    one aggregate row of moments and quantiles, then bin and category counts."""
    if num_bins < 1 or top_k < 1:
        raise ValueError("num_bins and top_k must be at least 1")
    source = strip_query(source_sql)
    relation = con.sql(source)
    available = dict(zip(relation.columns, relation.types))
    names = list(relation.columns) if columns is None else [_column(c, available) for c in columns]
    if not names:
        raise ModelInputError("no columns to describe")
    if len(set(names)) < len(names):
        raise ModelInputError(f"duplicate columns in {names}")
    cols = [
        Column(i, name, kind_of(available[name]), str(available[name]).upper() == "BOOLEAN")
        for i, name in enumerate(names)
    ]
    moments = _moments(con, source, cols)
    rows = moments.pop("sqlml_rows")
    if rows == 0:
        raise ModelInputError("training data is empty: the query returned no rows")
    counts = _bucket_counts(con, source, cols, moments, num_bins, top_k)
    return [_stats(c, str(available[c.name]), rows, moments, counts, num_bins) for c in cols]


@dataclass(frozen=True)
class Column:
    """A column being described or compared; `index` names its SQL aliases (sqlml_v<index>)."""

    index: int
    name: str
    kind: str  # 'numerical' | 'categorical'
    boolean: bool = False  # numerical BOOLEAN: TRUE = 1, FALSE = 0

    @property
    def value(self) -> str:
        return f"sqlml_v{self.index}"


def kind_of(type_: Any) -> str:
    """'numerical' for numeric and BOOLEAN DuckDB types, else 'categorical'."""
    type_id = getattr(type_, "id", str(type_).split("(")[0]).lower()
    return "numerical" if type_id in _NUMERIC_TYPES else "categorical"


def _column(name: str, available: dict[str, Any]) -> str:
    if name in available:
        return name
    folded = [c for c in available if c.lower() == name.lower()]  # DuckDB ignores case
    if len(folded) == 1:
        return folded[0]
    raise ModelInputError(
        f"column {name!r} is not in the training data (columns: {', '.join(available)})"
    )


def _moments(con: duckdb.DuckDBPyConnection, source: str, cols: list[Column]) -> dict[str, Any]:
    items = ["COUNT(*) AS sqlml_rows"]
    quantiles = ", ".join(repr(q) for q in QUANTILES)
    for c in cols:
        v, i = c.value, c.index
        items.append(f"COUNT({v}) AS n{i}")
        if c.kind == "numerical":
            items += [
                f"MIN({v}) AS min{i}", f"MAX({v}) AS max{i}", f"AVG({v}) AS mean{i}",
                f"MEDIAN({v}) AS median{i}", f"STDDEV_SAMP({v}) AS stddev{i}",
                f"QUANTILE_CONT({v}, [{quantiles}]) AS quantiles{i}",
            ]  # fmt: skip
    sql = f"{_values_cte(source, cols)}\nSELECT {', '.join(items)} FROM sqlml_v"
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return dict(zip(names, cursor.fetchone()))


def _bucket_counts(
    con: duckdb.DuckDBPyConnection,
    source: str,
    cols: list[Column],
    moments: dict[str, Any],
    num_bins: int,
    top_k: int,
) -> dict[str, list[tuple[str, int, int]]]:
    """input -> [(bucket, count, distinct buckets)]: every bin, and the top_k categories."""
    numerical = [c for c in cols if c.kind == "numerical"]
    bounds = {c.index: (moments[f"min{c.index}"], moments[f"max{c.index}"]) for c in numerical}
    bins = {c.index: num_bins for c in numerical}
    keep = f"rk <= {top_k}"
    if numerical:
        keep += f" OR input IN ({', '.join(string_literal(c.name, 'duckdb') for c in numerical)})"
    sql = f"""{_values_cte(source, cols)},
sqlml_bounds AS ({bounds_literal_sql(bounds, "duckdb")}),
sqlml_raw AS ({raw_counts_sql("sqlml_v", cols, bins, "duckdb")})
SELECT input, bucket, n, distinct_n FROM (
  SELECT input, bucket, n, COUNT(*) OVER (PARTITION BY input) AS distinct_n,
         ROW_NUMBER() OVER (PARTITION BY input ORDER BY n DESC, bucket) AS rk
  FROM sqlml_raw
) WHERE {keep}
ORDER BY input, n DESC, bucket"""
    counts: dict[str, list[tuple[str, int, int]]] = {c.name: [] for c in cols}
    for input_, bucket, n, distinct in con.execute(sql).fetchall():
        counts[input_].append((bucket, int(n), int(distinct)))
    return counts


def _stats(
    c: Column,
    dtype: str,
    rows: int,
    moments: dict[str, Any],
    counts: dict[str, list[tuple[str, int, int]]],
    num_bins: int,
) -> FeatureStats:
    i = c.index
    present = int(moments[f"n{i}"])
    stats = FeatureStats(c.name, c.kind, dtype, present, rows - present)
    buckets = counts[c.name]
    if c.kind == "categorical":
        top = [(bucket[2:], n) for bucket, n, _ in buckets]  # strip the 'v:' prefix
        stats.top_values = top
        stats.category_count = buckets[0][2] if buckets else 0
        stats.other_count = present - sum(n for _, n in top)
        return stats
    if present == 0:
        return stats
    lo, hi = float(moments[f"min{i}"]), float(moments[f"max{i}"])
    stats.min, stats.max = lo, hi
    stats.mean = float(moments[f"mean{i}"])
    stats.median = float(moments[f"median{i}"])
    stddev = moments[f"stddev{i}"]
    stats.stddev = None if stddev is None else float(stddev)
    stats.quantiles = [float(q) for q in moments[f"quantiles{i}"]]
    stats.histogram_edges = [lo + (hi - lo) * k / num_bins for k in range(num_bins)] + [hi]
    histogram = [0] * num_bins
    for bucket, n, _ in buckets:
        histogram[int(bucket) - 1] = n  # bins 1..num_bins: the data sets the edges
    stats.histogram_counts = histogram
    return stats


# -- SQL shared with sqlml.drift ----------------------------------------------------------------


def strip_query(sql: str) -> str:
    """A SELECT ready to nest in parentheses: no surrounding blanks or trailing semicolons."""
    text = sql.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    if not text:
        raise SqlCompileError("expected a query, got an empty text")
    return text


def check_dialect(dialect: str) -> str:
    if dialect not in DIALECTS:
        raise SqlCompileError(f"unknown dialect {dialect!r}: use 'duckdb' or 'bigquery'")
    return dialect


def quote(name: str, dialect: str) -> str:
    if dialect == "bigquery":
        return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
    return '"' + name.replace('"', '""') + '"'


def string_literal(text: str, dialect: str) -> str:
    if dialect == "duckdb":
        return "'" + text.replace("'", "''") + "'"
    escaped = []
    for ch in text:
        if ch in "\\'":
            escaped.append("\\" + ch)
        elif ord(ch) < 32 or ord(ch) == 127:
            escaped.append(f"\\u{ord(ch):04x}")
        else:
            escaped.append(ch)
    return "'" + "".join(escaped) + "'"


_TYPES = {
    "duckdb": {"float": "DOUBLE", "int": "BIGINT", "string": "VARCHAR"},
    "bigquery": {"float": "FLOAT64", "int": "INT64", "string": "STRING"},
}
_TOP_STRUCT = (("value", "string"), ("count", "int"))


def sql_type(type_: str, dialect: str) -> str:
    """'float' | 'int' | 'string' | 'float[]' | 'int[]' | 'top[]' (value, count) in `dialect`."""
    names = _TYPES[dialect]
    if type_ == "top[]":
        fields = [(n, names[t]) for n, t in _TOP_STRUCT]
        if dialect == "bigquery":
            return "ARRAY<STRUCT<" + ", ".join(f"{n} {t}" for n, t in fields) + ">>"
        return "STRUCT(" + ", ".join(f"{n} {t}" for n, t in fields) + ")[]"
    if type_.endswith("[]"):
        inner = names[type_[:-2]]
        return f"ARRAY<{inner}>" if dialect == "bigquery" else f"{inner}[]"
    return names[type_]


def float_literal(value: float | None, dialect: str) -> str:
    """Exact: `repr` round-trips a double, and a string CAST parses it as one in both engines
    (a bare 0.1 is a DECIMAL in DuckDB)."""
    if value is None:
        return f"CAST(NULL AS {sql_type('float', dialect)})"
    return f"CAST('{float(value)!r}' AS {sql_type('float', dialect)})"


def literal(value: Any, type_: str, dialect: str) -> str:
    """`value` as a SQL literal of `type_` (see sql_type); arrays are [] when None."""
    if type_.endswith("[]"):
        items = value or []
        if type_ == "top[]":
            if dialect == "bigquery":
                body = ", ".join(f"({string_literal(v, dialect)}, {int(n)})" for v, n in items)
            else:
                body = ", ".join(
                    f"{{'value': {string_literal(v, dialect)}, 'count': {int(n)}}}"
                    for v, n in items
                )
        else:
            body = ", ".join(literal(v, type_[:-2], dialect) for v in items)
        if dialect == "bigquery":
            return f"{sql_type(type_, dialect)}[{body}]"
        return f"CAST([{body}] AS {sql_type(type_, dialect)})"
    if value is None:
        return f"CAST(NULL AS {sql_type(type_, dialect)})"
    if type_ == "float":
        return float_literal(value, dialect)
    if type_ == "int":
        return str(int(value))
    return string_literal(str(value), dialect)


def rows_sql(
    columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]], dialect: str
) -> str:
    """A SELECT of literal rows with the given (name, type) columns; zero rows is fine.

    DuckDB: `VALUES`; BigQuery: `UNNEST` of a typed array of structs (a flat literal, unlike a
    chain of UNION ALLs that grows a deep parse tree)."""
    if len(columns) < 2:
        raise ValueError("rows_sql needs two columns or more")  # (x) is not a one-field struct
    if dialect == "bigquery":
        fields = ", ".join(f"{quote(n, dialect)} {sql_type(t, dialect)}" for n, t in columns)
        body = ", ".join(
            "(" + ", ".join(literal(v, t, dialect) for v, (_, t) in zip(row, columns)) + ")"
            for row in rows
        )
        return f"SELECT * FROM UNNEST(ARRAY<STRUCT<{fields}>>[{body}])"
    names = ", ".join(quote(n, dialect) for n, _ in columns)
    if not rows:
        nulls = ", ".join(literal(None, t, dialect) for _, t in columns)
        return f"SELECT * FROM (VALUES ({nulls})) AS sqlml_rows({names}) WHERE FALSE"
    body = ",\n  ".join(
        "(" + ", ".join(literal(v, t, dialect) for v, (_, t) in zip(row, columns)) + ")"
        for row in rows
    )
    return f"SELECT * FROM (VALUES\n  {body}\n) AS sqlml_rows({names})"


def value_sql(c: Column, dialect: str) -> str:
    """The value a column contributes: a finite DOUBLE (else NULL) or a 'v:<text>' category."""
    column = quote(c.name, dialect)
    double = sql_type("float", dialect)
    if c.kind == "categorical":
        return f"'v:' || CAST({column} AS {sql_type('string', dialect)})"
    if c.boolean:  # BigQuery cannot CAST a BOOL to FLOAT64
        return f"CAST(CASE WHEN {column} THEN 1 WHEN NOT {column} THEN 0 END AS {double})"
    x = f"CAST({column} AS {double})"
    if dialect == "bigquery":
        return f"CASE WHEN IS_NAN({x}) OR IS_INF({x}) THEN NULL ELSE {x} END"
    return f"CASE WHEN isfinite({x}) THEN {x} END"


def values_sql(cols: Sequence[Column], relation: str, dialect: str) -> str:
    """`SELECT <value of each column> AS sqlml_v<i> FROM relation`: later steps see only these,
    so user column names never clash with sqlml's own."""
    items = ", ".join(f"{value_sql(c, dialect)} AS {c.value}" for c in cols)
    return f"SELECT {items} FROM {relation}"


def _values_cte(source: str, cols: Sequence[Column]) -> str:
    values = values_sql(cols, "sqlml_src", "duckdb")
    return f"WITH sqlml_src AS (\n{source}\n),\nsqlml_v AS ({values})"


def bucket_sql(value: str, lo: str, hi: str, bins: int, dialect: str) -> str:
    """The histogram bin of `value` (NULL stays NULL): 0 below lo, bins + 1 above hi, else
    1..bins equal-width over [lo, hi] with the last bin closed. The single definition of the
    bins: stored histograms and drift/skew queries all go through it."""
    return (
        f"CASE WHEN {value} IS NULL THEN NULL"
        f" WHEN {value} < {lo} THEN 0"
        f" WHEN {value} > {hi} THEN {bins + 1}"
        f" WHEN {hi} = {lo} THEN 1"
        f" ELSE 1 + LEAST({bins - 1}, CAST(FLOOR(({value} - {lo}) / ({hi} - {lo}) * {bins})"
        f" AS {sql_type('int', dialect)})) END"
    )


def bounds_literal_sql(bounds: dict[int, tuple[float | None, float | None]], dialect: str) -> str:
    """`SELECT lo AS sqlml_lo<i>, hi AS sqlml_hi<i>, ...` from known numbers (one row)."""
    items = [
        f"{float_literal(lo, dialect)} AS sqlml_lo{i}, {float_literal(hi, dialect)} AS sqlml_hi{i}"
        for i, (lo, hi) in bounds.items()
    ]
    return "SELECT " + (", ".join(items) if items else "1 AS sqlml_none")


def raw_counts_sql(values: str, cols: Sequence[Column], bins: dict[int, int], dialect: str) -> str:
    """(input, bucket, n) over the CTE `values` cross joined with `sqlml_bounds`: the bin
    number (as text) of each numerical value, the 'v:<text>' of each categorical one. One scan,
    whatever the number of columns: each row unnests into one (input, bucket) per column."""
    string = sql_type("string", dialect)
    names, buckets = [], []
    for c in cols:
        names.append(string_literal(c.name, dialect))
        if c.kind == "numerical":
            lo, hi = f"sqlml_lo{c.index}", f"sqlml_hi{c.index}"
            bucket = bucket_sql(c.value, lo, hi, bins[c.index], dialect)
            buckets.append(f"CAST({bucket} AS {string})")
        else:
            buckets.append(c.value)
    sep = ",\n    "
    if dialect == "bigquery":
        items = [f"STRUCT({n} AS input, {b} AS bucket)" for n, b in zip(names, buckets)]
        return (
            "SELECT sqlml_u.input AS input, sqlml_u.bucket AS bucket, COUNT(*) AS n\n"
            f"  FROM {values} CROSS JOIN sqlml_bounds CROSS JOIN UNNEST([\n    {sep.join(items)}\n"
            "  ]) AS sqlml_u\n  WHERE sqlml_u.bucket IS NOT NULL GROUP BY 1, 2"
        )
    # DuckDB: two parallel select-list UNNESTs zip; a lateral UNNEST of structs is ~10x slower
    return (
        "SELECT input, bucket, COUNT(*) AS n FROM (\n"
        f"    SELECT UNNEST([{', '.join(names)}]) AS input, UNNEST([\n    {sep.join(buckets)}\n"
        f"    ]) AS bucket\n    FROM {values} CROSS JOIN sqlml_bounds\n"
        "  ) AS sqlml_long WHERE bucket IS NOT NULL GROUP BY 1, 2"
    )


# -- storage ------------------------------------------------------------------------------------

_DDL = """
CREATE SCHEMA IF NOT EXISTS sqlml;
CREATE TABLE IF NOT EXISTS sqlml.feature_stats (
    model VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    input VARCHAR NOT NULL,
    stats JSON NOT NULL,  -- FeatureStats.to_dict() plus its position among the inputs
    PRIMARY KEY (model, version, input)
);
"""


def ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_DDL)


def record(
    con: duckdb.DuckDBPyConnection, model: str, version: int, stats: Sequence[FeatureStats]
) -> None:
    """Store (replace) a version's statistics. The caller owns the transaction."""
    con.execute("DELETE FROM sqlml.feature_stats WHERE model = ? AND version = ?", [model, version])
    rows = [
        [model, version, s.input, json.dumps({"position": i, **s.to_dict()}, allow_nan=False)]
        for i, s in enumerate(stats)
    ]
    if rows:
        con.executemany("INSERT INTO sqlml.feature_stats VALUES (?, ?, ?, ?)", rows)


def load(con: duckdb.DuckDBPyConnection, model: str, version: int) -> list[FeatureStats]:
    """A version's statistics in input order; [] when none were recorded."""
    if not _has_table(con):
        return []
    rows = con.execute(
        "SELECT stats FROM sqlml.feature_stats WHERE model = ? AND version = ? "
        "ORDER BY CAST(json_extract(stats, '$.position') AS INTEGER), input",
        [model, version],
    ).fetchall()
    return [FeatureStats.from_dict(json.loads(text)) for (text,) in rows]


def drop_model(con: duckdb.DuckDBPyConnection, model: str) -> None:
    if _has_table(con):
        con.execute("DELETE FROM sqlml.feature_stats WHERE model = ?", [model])


def _has_table(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'sqlml' "
            "AND table_name = 'feature_stats' AND database_name = current_database()"
        ).fetchone()[0]
    )


# -- ML.FEATURE_INFO ----------------------------------------------------------------------------

FEATURE_INFO_COLUMNS: tuple[tuple[str, str], ...] = (
    # BigQuery's ML.FEATURE_INFO columns, in its order
    ("input", "string"),
    ("min", "float"),
    ("max", "float"),
    ("mean", "float"),
    ("median", "float"),
    ("stddev", "float"),
    ("category_count", "int"),
    ("null_count", "int"),
    ("dimension", "int"),  # only for ARRAY<STRUCT> inputs in BigQuery: always NULL here
    # sqlml extras; arrays are empty where they do not apply (BigQuery has no NULL arrays)
    ("kind", "string"),
    ("count", "int"),
    ("quantiles", "float[]"),
    ("histogram_edges", "float[]"),
    ("histogram_counts", "int[]"),
    ("top_values", "top[]"),
    ("other_count", "int"),
)


def feature_info_sql(stats: Sequence[FeatureStats], dialect: str) -> str:
    """ML.FEATURE_INFO as a SELECT of literal rows (no table needed): BigQuery's columns, then
    kind, count, quantiles (at 0, 10%, ..., 100%), histogram_edges/counts, top_values
    (ARRAY<STRUCT<value, count>>) and other_count."""
    check_dialect(dialect)
    names = [name for name, _ in FEATURE_INFO_COLUMNS]
    rows = [[None if n == "dimension" else getattr(s, n) for n in names] for s in stats]
    return rows_sql(FEATURE_INFO_COLUMNS, rows, dialect)
