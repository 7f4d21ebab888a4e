"""ML.VALIDATE_DATA_DRIFT and ML.VALIDATE_DATA_SKEW as plain SQL, for DuckDB and BigQuery.

BigQuery's own functions need a BigQuery ML model's stored statistics (imported models have
none) and sqlglot cannot parse them, so sqlml writes the comparison out in SQL. The output is
BigQuery's: one row per input with `input, metric, threshold, value, is_anomaly`, where `value`
is the distance between the two distributions and `is_anomaly` is `value > threshold`.

Definitions (see `sqlml.featurestats` for the bins and categories, shared with the stored
training statistics so that skew against them equals drift against the training query):

- Numerical inputs: JENSEN_SHANNON_DIVERGENCE between histograms. The base data sets
  `num_histogram_buckets` (default 10) equal-width bins over its [min, max]; the study data is
  binned with the same edges, plus open-ended bins for values below min and above max.
- Categorical inputs: L_INFTY (default), the largest absolute difference between category
  frequencies, or JENSEN_SHANNON_DIVERGENCE. The categories are the base data's
  `num_rank_histogram_buckets` (default 50) most frequent values, plus one 'other' bucket
  holding the rest of the base values and every study value not among them (so with a small
  vocabulary, 'other' is exactly "values never seen in the base data").
- Jensen-Shannon divergence uses log base 2, as TFDV does (tensorflow/data-validation,
  anomalies/metrics.cc: KL with std::log2, capped at 1.0), so it lies in [0, 1]; it equals
  `scipy.spatial.distance.jensenshannon(p, q, base=2) ** 2`.
- Frequencies are over present values: NULLs (and NaN, +-inf for numerical inputs) are left
  out of both distributions. A base with no present value for an input has no bins: the query
  fails with an error naming the input. A study with none gets NULL value and is_anomaly.

Options follow BigQuery: categorical_default_threshold, numerical_default_threshold (default
0.3, in [0, 1)), categorical_metric_type ('L_INFTY', also spelled 'L_INFINITY', or
'JENSEN_SHANNON_DIVERGENCE'), numerical_metric_type ('JENSEN_SHANNON_DIVERGENCE'), and
thresholds: BigQuery's ARRAY<STRUCT<STRING, FLOAT64>>, e.g. `[('col_a', 0.1), ('col_b', 0.8)]`
or `[STRUCT('fare', 0.15)]`, given here as a dict {column: threshold} or a list of
(column, threshold) pairs. Drift also takes num_histogram_buckets and num_rank_histogram_buckets
(used), and num_quantiles_histogram_buckets, num_values_histogram_buckets (checked; they shape
histograms BigQuery does not compare for scalar columns). Skew takes enable_visualization_link
only as FALSE: the link points into Vertex AI.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlml.errors import ModelInputError, SqlCompileError
from sqlml.featurestats import (
    DEFAULT_BINS,
    DEFAULT_TOP_K,
    OTHER,
    Column,
    FeatureStats,
    bounds_literal_sql,
    check_dialect,
    kind_of,
    raw_counts_sql,
    rows_sql,
    sql_type,
    string_literal,
    strip_query,
    values_sql,
)

JSD = "JENSEN_SHANNON_DIVERGENCE"
L_INFTY = "L_INFTY"
DEFAULT_THRESHOLD = 0.3

_COMMON = {
    "categorical_default_threshold",
    "categorical_metric_type",
    "numerical_default_threshold",
    "numerical_metric_type",
    "thresholds",
}
SKEW_OPTIONS = _COMMON | {"enable_visualization_link"}
DRIFT_OPTIONS = _COMMON | {
    "num_histogram_buckets",
    "num_quantiles_histogram_buckets",
    "num_values_histogram_buckets",
    "num_rank_histogram_buckets",
}
OPTIONS = SKEW_OPTIONS | DRIFT_OPTIONS  # what either function may be given
KINDS = ("numerical", "categorical", "boolean")  # boolean: a numerical BOOL column


@dataclass(frozen=True)
class Settings:
    """Options resolved to what the SQL needs."""

    numerical_threshold: float = DEFAULT_THRESHOLD
    categorical_threshold: float = DEFAULT_THRESHOLD
    categorical_metric: str = L_INFTY
    thresholds: Mapping[str, float] | None = None  # lower-cased input -> threshold
    bins: int = DEFAULT_BINS
    top_k: int = DEFAULT_TOP_K

    def metric(self, c: Column) -> str:
        return JSD if c.kind == "numerical" else self.categorical_metric

    def threshold(self, c: Column) -> float:
        custom = (self.thresholds or {}).get(c.name.lower())
        if custom is not None:
            return custom
        return self.numerical_threshold if c.kind == "numerical" else self.categorical_threshold


# -- the two functions -----------------------------------------------------------------------


def validate_data_drift_sql(
    base: str,
    study: str,
    columns: Sequence[tuple[str, str]],
    options: Mapping[str, Any] | None,
    dialect: str,
    *,
    histograms: bool = False,
) -> str:
    """ML.VALIDATE_DATA_DRIFT(base, study, options) as SQL in `dialect` (with `histograms`, the
    compared bucket counts instead: see `_histograms_select`).

    `base` and `study` are SELECTs in that dialect; `columns` the (name, kind) pairs to compare,
    kind 'numerical', 'categorical' or 'boolean' (a BOOL column compared as 0/1: BigQuery cannot
    CAST a BOOL to FLOAT64, so it needs telling; in DuckDB 'numerical' works too)."""
    what = "ML.VALIDATE_DATA_DRIFT"
    check_dialect(dialect)
    cols = _columns(columns, what)
    settings = resolve_options(options, DRIFT_OPTIONS, [c.name for c in cols], what)
    numerical = [c for c in cols if c.kind == "numerical"]
    bounds = ", ".join(
        f"MIN({c.value}) AS sqlml_lo{c.index}, MAX({c.value}) AS sqlml_hi{c.index}"
        for c in numerical
    )
    base_ctes = f"""sqlml_base AS (
{strip_query(base)}
),
sqlml_base_v AS ({values_sql(cols, "sqlml_base", dialect)}),
sqlml_bounds AS (SELECT {bounds or "1 AS sqlml_none"} FROM sqlml_base_v),
sqlml_base_raw AS (
  {raw_counts_sql("sqlml_base_v", cols, {c.index: settings.bins for c in numerical}, dialect)}
),
sqlml_top AS (
  SELECT input, bucket FROM (
    SELECT input, bucket, ROW_NUMBER() OVER (PARTITION BY input ORDER BY n DESC, bucket) AS rk
    FROM sqlml_base_raw WHERE {_is_categorical("input", cols, dialect)}
  ) AS sqlml_ranked WHERE rk <= {settings.top_k}
),
sqlml_base_b AS ({_bucketed_sql("sqlml_base_raw", cols, dialect)})"""
    bins = {c.index: settings.bins for c in numerical}
    return _compare_sql(base_ctes, study, cols, bins, settings, dialect, histograms)


def validate_data_skew_sql(
    stats: Sequence[FeatureStats],
    study: str,
    options: Mapping[str, Any] | None,
    dialect: str,
    *,
    histograms: bool = False,
) -> str:
    """ML.VALIDATE_DATA_SKEW(MODEL m, study, options) as SQL in `dialect`, against the stored
    training statistics `stats`, written into the SQL as literals (bin edges and counts, top
    values). The study must have every input of `stats`; pass fewer stats to compare fewer."""
    what = "ML.VALIDATE_DATA_SKEW"
    check_dialect(dialect)
    if not stats:
        raise SqlCompileError(f"{what}: no training statistics to compare against")
    cols = _columns([(s.input, "boolean" if s.is_boolean else s.kind) for s in stats], what)
    settings = resolve_options(options, SKEW_OPTIONS, [c.name for c in cols], what)
    bounds, bins, top, counts = {}, {}, [], []
    for c, s in zip(cols, stats):
        if s.count == 0:
            raise ModelInputError(f"{what}: the training data has no values for input {s.input!r}")
        if c.kind == "numerical":
            bounds[c.index] = (s.min, s.max)
            bins[c.index] = len(s.histogram_counts or [])
            counts += [(s.input, str(k), n) for k, n in enumerate(s.histogram_counts, 1) if n]
        else:
            top += [(s.input, "v:" + value) for value, _ in s.top_values or []]
            counts += [(s.input, "v:" + value, n) for value, n in s.top_values or [] if n]
            if s.other_count:
                counts.append((s.input, OTHER, s.other_count))
    keys = (("input", "string"), ("bucket", "string"))
    base_ctes = f"""sqlml_bounds AS ({bounds_literal_sql(bounds, dialect)}),
sqlml_top AS ({rows_sql(keys, top, dialect)}),
sqlml_base_b AS ({rows_sql((*keys, ("n", "int")), counts, dialect)})"""
    return _compare_sql(base_ctes, study, cols, bins, settings, dialect, histograms)


# -- the shared comparison -------------------------------------------------------------------


def _compare_sql(
    base_ctes: str,
    study: str,
    cols: list[Column],
    bins: dict[int, int],
    settings: Settings,
    dialect: str,
    histograms: bool = False,
) -> str:
    """The study side and the metrics (or the histograms), after CTEs giving the base side:
    sqlml_bounds (bin edges), sqlml_top (kept categories) and sqlml_base_b (input, bucket, n)."""
    double = sql_type("float", dialect)
    spec = rows_sql(
        (("ord", "int"), ("input", "string"), ("metric", "string"), ("threshold", "float")),
        [(c.index, c.name, settings.metric(c), settings.threshold(c)) for c in cols],
        dialect,
    )
    no_base = (
        "ERROR(CONCAT('sqlml: the base data has no non-NULL values for input ', spec.input, "
        "' (is the base query empty?)'))"
    )
    study_ctes = f"""WITH {base_ctes},
sqlml_study AS (
{strip_query(study)}
),
sqlml_study_v AS ({values_sql(cols, "sqlml_study", dialect)}),
sqlml_study_raw AS (
  {raw_counts_sql("sqlml_study_v", cols, bins, dialect)}
),
sqlml_study_b AS ({_bucketed_sql("sqlml_study_raw", cols, dialect)})"""
    if histograms:
        return f"{study_ctes},\n{_histograms_select(cols, bins, dialect)}"
    return f"""{study_ctes},
sqlml_base_p AS (
  SELECT input, bucket, CAST(n AS {double}) / SUM(n) OVER (PARTITION BY input) AS p
  FROM sqlml_base_b
),
sqlml_study_p AS (
  SELECT input, bucket, CAST(n AS {double}) / SUM(n) OVER (PARTITION BY input) AS q
  FROM sqlml_study_b
),
sqlml_pq AS (
  SELECT COALESCE(b.input, s.input) AS input, COALESCE(b.p, 0) AS p, COALESCE(s.q, 0) AS q
  FROM sqlml_base_p AS b FULL OUTER JOIN sqlml_study_p AS s
    ON b.input = s.input AND b.bucket = s.bucket
),
sqlml_metrics AS (
  SELECT input,
    GREATEST(0, LEAST(1, SUM(
      CASE WHEN p > 0 THEN p * LN(2 * p / (p + q)) ELSE 0 END
      + CASE WHEN q > 0 THEN q * LN(2 * q / (p + q)) ELSE 0 END
    ) / (2 * LN(2)))) AS js,
    MAX(ABS(p - q)) AS linf
  FROM sqlml_pq GROUP BY input
),
sqlml_base_n AS (SELECT input, SUM(n) AS n FROM sqlml_base_b GROUP BY input),
sqlml_study_n AS (SELECT input, SUM(n) AS n FROM sqlml_study_b GROUP BY input),
sqlml_spec AS ({spec}),
sqlml_result AS (
  SELECT spec.ord, spec.input, spec.metric, spec.threshold,
    CASE WHEN COALESCE(bn.n, 0) = 0 THEN {no_base}
         WHEN COALESCE(sn.n, 0) = 0 THEN NULL
         WHEN spec.metric = '{L_INFTY}' THEN m.linf
         ELSE m.js END AS value
  FROM sqlml_spec AS spec
    LEFT JOIN sqlml_base_n AS bn ON bn.input = spec.input
    LEFT JOIN sqlml_study_n AS sn ON sn.input = spec.input
    LEFT JOIN sqlml_metrics AS m ON m.input = spec.input
)
SELECT input, metric, threshold, value, value > threshold AS is_anomaly
FROM sqlml_result
ORDER BY ord"""


def _histograms_select(cols: Sequence[Column], bins: dict[int, int], dialect: str) -> str:
    """Ends the query early with the buckets both sides were counted in: `input, bucket,
    lo, hi, bins, base_n, study_n`. Numerical buckets are '0' (below the base minimum), '1'..'B'
    (lo..hi, equal width) and 'B+1' (above the maximum); categorical ones are 'v:<value>' and
    'other'. What a drift report draws, from the very counts the metric used."""
    double = sql_type("float", dialect)
    los = " ".join(
        f"WHEN {string_literal(c.name, dialect)} THEN sqlml_lo{c.index}"
        for c in cols
        if c.kind == "numerical"
    )
    his = los.replace("sqlml_lo", "sqlml_hi")
    counts = " ".join(
        f"WHEN {string_literal(c.name, dialect)} THEN {bins[c.index]}"
        for c in cols
        if c.kind == "numerical"
    )
    lo = f"CASE h.input {los} END" if los else f"CAST(NULL AS {double})"
    hi = f"CASE h.input {his} END" if his else f"CAST(NULL AS {double})"
    b = f"CASE h.input {counts} END" if counts else f"CAST(NULL AS {sql_type('int', dialect)})"
    return f"""sqlml_hist AS (
  SELECT COALESCE(b.input, s.input) AS input, COALESCE(b.bucket, s.bucket) AS bucket,
    COALESCE(b.n, 0) AS base_n, COALESCE(s.n, 0) AS study_n
  FROM sqlml_base_b AS b FULL OUTER JOIN sqlml_study_b AS s
    ON b.input = s.input AND b.bucket = s.bucket
)
SELECT h.input, h.bucket, {lo} AS lo, {hi} AS hi, {b} AS bins, h.base_n, h.study_n
FROM sqlml_hist AS h CROSS JOIN sqlml_bounds
ORDER BY h.input, h.bucket
"""


def _bucketed_sql(raw: str, cols: Sequence[Column], dialect: str) -> str:
    """Raw (input, bucket, n) counts with categories outside sqlml_top folded into 'other'."""
    return f"""
  SELECT r.input AS input,
    CASE WHEN {_is_categorical("r.input", cols, dialect)} AND t.bucket IS NULL
      THEN '{OTHER}' ELSE r.bucket END AS bucket,
    SUM(r.n) AS n
  FROM {raw} AS r LEFT JOIN sqlml_top AS t ON t.input = r.input AND t.bucket = r.bucket
  GROUP BY 1, 2
"""


def _is_categorical(expr: str, cols: Sequence[Column], dialect: str) -> str:
    names = [string_literal(c.name, dialect) for c in cols if c.kind == "categorical"]
    return f"{expr} IN ({', '.join(names)})" if names else "FALSE"


def column_kinds(described: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(name, DuckDB type) -> (name, kind) as the drift functions compare them."""
    kinds = []
    for name, type_ in described:
        if type_.upper() == "BOOLEAN":
            kinds.append((name, "boolean"))
        else:
            kinds.append((name, kind_of(type_)))
    return kinds


# -- arguments ---------------------------------------------------------------------------------


def _columns(columns: Sequence[tuple[str, str]], what: str) -> list[Column]:
    if not columns:
        raise SqlCompileError(f"{what}: no columns to compare")
    cols, seen = [], set()
    for i, item in enumerate(columns):
        name, kind = item
        if not isinstance(name, str) or not name:
            raise SqlCompileError(f"{what}: bad column name {name!r}")
        if kind not in KINDS:
            raise SqlCompileError(f"{what}: column {name!r} has kind {kind!r}; use one of {KINDS}")
        if name.lower() in seen:
            raise SqlCompileError(f"{what}: column {name!r} is given twice")
        seen.add(name.lower())
        numerical = kind != "categorical"
        cols.append(Column(i, name, "numerical" if numerical else "categorical", kind == "boolean"))
    return cols


def resolve_options(
    options: Mapping[str, Any] | None, allowed: set[str], names: Sequence[str], what: str
) -> Settings:
    """Check BigQuery-style options (names case-insensitive; NULL means the default)."""
    given = {str(k).lower(): v for k, v in (options or {}).items()}
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise SqlCompileError(
            f"{what}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    opts = {k: v for k, v in given.items() if v is not None}
    if opts.get("enable_visualization_link"):
        raise SqlCompileError(f"{what}: enable_visualization_link needs Vertex AI; sqlml has none")
    numerical_metric = str(opts.get("numerical_metric_type", JSD)).upper()
    if numerical_metric != JSD:
        raise SqlCompileError(f"{what}: numerical_metric_type must be {JSD!r}")
    categorical_metric = str(opts.get("categorical_metric_type", L_INFTY)).upper()
    categorical_metric = L_INFTY if categorical_metric == "L_INFINITY" else categorical_metric
    if categorical_metric not in (L_INFTY, JSD):
        raise SqlCompileError(f"{what}: categorical_metric_type must be {L_INFTY!r} or {JSD!r}")
    for option in ("num_quantiles_histogram_buckets", "num_values_histogram_buckets"):
        _integer(opts, option, 10, 1_000, what)  # checked, not used: see the module docstring
    return Settings(
        numerical_threshold=_threshold(
            opts.get("numerical_default_threshold", DEFAULT_THRESHOLD),
            "numerical_default_threshold",
            what,
        ),
        categorical_threshold=_threshold(
            opts.get("categorical_default_threshold", DEFAULT_THRESHOLD),
            "categorical_default_threshold",
            what,
        ),
        categorical_metric=categorical_metric,
        thresholds=_thresholds(opts.get("thresholds"), names, what),
        bins=_integer(opts, "num_histogram_buckets", DEFAULT_BINS, 1_000, what),
        top_k=_integer(opts, "num_rank_histogram_buckets", DEFAULT_TOP_K, 10_000, what),
    )


def _threshold(value: Any, name: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise SqlCompileError(f"{what}: {name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _integer(opts: Mapping[str, Any], name: str, default: int, top: int, what: str) -> int:
    value = opts.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise SqlCompileError(f"{what}: {name} must be an integer in [1, {top:,}], got {value!r}")
    return value


def _thresholds(value: Any, names: Sequence[str], what: str) -> dict[str, float]:
    """{column: threshold} or [(column, threshold), ...], as BigQuery's
    ARRAY<STRUCT<STRING, FLOAT64>>; keyed by lower-cased column name."""
    if value is None:
        return {}
    pairs: Iterable[Any] = value.items() if isinstance(value, Mapping) else value
    known = {n.lower() for n in names}
    result: dict[str, float] = {}
    try:
        for name, threshold in pairs:
            key = str(name).lower()
            if key not in known:
                raise SqlCompileError(
                    f"{what}: thresholds names {name!r}, which is not a compared column "
                    f"({', '.join(names)})"
                )
            if key in result:
                raise SqlCompileError(f"{what}: thresholds gives {name!r} twice")
            result[key] = _threshold(threshold, f"the threshold of {name!r}", what)
    except (TypeError, ValueError):
        raise SqlCompileError(
            f"{what}: thresholds must be [('column', threshold), ...], got {value!r}"
        ) from None
    return result
