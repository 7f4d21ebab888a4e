"""Training statistics (sqlml.featurestats) and skew/drift SQL (sqlml.drift) on real DuckDB files,
checked against numpy/pandas/scipy computations of the same definitions, and compiled for
BigQuery (parsed by sqlglot, transpiled back and run on DuckDB)."""

from __future__ import annotations

import re
from collections import Counter

import duckdb
import numpy as np
import pandas as pd
import pytest
import sqlglot
from sklearn.datasets import load_breast_cancer, load_diabetes

from sqlml import drift, featurestats
from sqlml.errors import ModelInputError, SqlCompileError

try:
    from scipy.spatial.distance import jensenshannon
except ImportError:  # pragma: no cover - scipy is a test nicety, numpy gives the same number
    jensenshannon = None

TOL = 1e-9
JSD, LINF = "JENSEN_SHANNON_DIVERGENCE", "L_INFTY"
N = 20_000


# -- reference computations (numpy / scipy) ------------------------------------------------------


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence, log base 2 (TFDV's): scipy's distance squared."""
    p, q = np.asarray(p, float) / np.sum(p), np.asarray(q, float) / np.sum(q)
    if jensenshannon is not None:
        return float(jensenshannon(p, q, base=2) ** 2)
    m = (p + q) / 2
    kl = lambda a: np.sum(a[a > 0] * np.log2(a[a > 0] / m[a > 0]))  # noqa: E731
    return float((kl(p) + kl(q)) / 2)


def bins_of(values: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """sqlml's bin numbers: 0 below lo, bins + 1 above hi, 1..bins equal-width inside."""
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = 1 + np.minimum(bins - 1, np.floor((values - lo) / (hi - lo) * bins))
    inside = np.where(hi == lo, 1, inside)
    return np.where(values < lo, 0, np.where(values > hi, bins + 1, inside)).astype(int)


def present(values) -> np.ndarray:
    values = np.asarray(pd.Series(values).dropna(), dtype=float)
    return values[np.isfinite(values)]


def numerical_distributions(base, study, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    b, s = present(base), present(study)
    lo, hi = b.min(), b.max()
    p = np.bincount(bins_of(b, lo, hi, bins), minlength=bins + 2)
    q = np.bincount(bins_of(s, lo, hi, bins), minlength=bins + 2)
    return p, q


def categorical_distributions(base, study, top_k: int = 50) -> tuple[np.ndarray, np.ndarray]:
    b = [str(v) for v in pd.Series(base).dropna()]
    s = [str(v) for v in pd.Series(study).dropna()]
    counts = Counter(b)
    top = [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]]
    study_counts = Counter(s)
    p = [counts[v] for v in top] + [len(b) - sum(counts[v] for v in top)]
    q = [study_counts[v] for v in top] + [len(s) - sum(study_counts[v] for v in top)]
    return np.array(p), np.array(q)


def reference(base, study, kind: str, metric: str, bins: int = 10, top_k: int = 50) -> float:
    if kind == "numerical":
        p, q = numerical_distributions(base, study, bins)
    else:
        p, q = categorical_distributions(base, study, top_k)
    if metric == LINF:
        return float(np.max(np.abs(p / p.sum() - q / q.sum())))
    return js_divergence(p, q)


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "stats.duckdb"))
    yield connection
    connection.close()


def make_frame(seed: int, n: int = N, shift: float = 0.0, probs=(0.5, 0.3, 0.15, 0.05)):
    rng = np.random.default_rng(seed)
    x = rng.normal(10.0, 2.0, n) + shift * 2.0
    x[rng.random(n) < 0.02] = np.nan
    return pd.DataFrame(
        {
            "x": x,
            "k": rng.integers(0, 7, n),
            "flag": rng.random(n) < 0.3,
            "color": pd.Series(rng.choice(["red", "green", "blue", "gray"], n, p=probs)).where(
                rng.random(n) > 0.01
            ),
        }
    )


def table(con, name: str, frame: pd.DataFrame) -> str:
    con.register("sqlml_test_frame", frame)
    con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM sqlml_test_frame')
    con.unregister("sqlml_test_frame")
    return name


COLUMNS = [("x", "numerical"), ("k", "numerical"), ("flag", "numerical"), ("color", "categorical")]
BQ_COLUMNS = [(n, "boolean" if n == "flag" else k) for n, k in COLUMNS]


def run(con, sql: str) -> dict[str, tuple]:
    """input -> (metric, threshold, value, is_anomaly)."""
    rows = con.execute(sql).fetchall()
    return {input_: rest for input_, *rest in rows}


def run_bigquery(con, bq_sql: str) -> dict[str, tuple]:
    """The BigQuery text must parse as BigQuery; sqlglot's DuckDB translation must agree."""
    sqlglot.parse_one(bq_sql, read="bigquery")
    return run(con, sqlglot.transpile(bq_sql, read="bigquery", write="duckdb")[0])


def reference_row(base: pd.DataFrame, study: pd.DataFrame, name: str, kind: str, **kw) -> float:
    metric = kw.pop("metric", JSD if kind == "numerical" else LINF)
    return reference(base[name], study[name], kind, metric, **kw)


# -- featurestats.compute ------------------------------------------------------------------------


def check_numerical(stats: featurestats.FeatureStats, values, bins: int = 10) -> None:
    series = pd.Series(values, dtype=float)
    v = present(series)
    assert stats.kind == "numerical"
    assert stats.count == len(v)
    assert stats.null_count == len(series) - len(v)
    assert stats.min == v.min() and stats.max == v.max()
    assert stats.mean == pytest.approx(v.mean(), rel=1e-12, abs=1e-12)
    assert stats.stddev == pytest.approx(np.std(v, ddof=1), rel=1e-9)  # sample stddev
    assert stats.median == pytest.approx(np.median(v), rel=1e-12, abs=1e-15)
    expected_q = np.quantile(v, featurestats.QUANTILES)  # linear interpolation
    assert stats.quantiles == pytest.approx(list(expected_q), rel=1e-12, abs=1e-15)
    counts = np.bincount(bins_of(v, v.min(), v.max(), bins), minlength=bins + 2)
    assert counts[0] == counts[-1] == 0
    assert stats.histogram_counts == list(counts[1:-1])
    assert sum(stats.histogram_counts) == stats.count
    assert len(stats.histogram_edges) == bins + 1
    assert stats.histogram_edges[0] == v.min() and stats.histogram_edges[-1] == v.max()


def test_compute_matches_numpy_and_pandas(con):
    frame = make_frame(seed=1)
    table(con, "train", frame)
    stats = featurestats.compute(con, "SELECT * FROM train")
    by_name = {s.input: s for s in stats}
    assert [s.input for s in stats] == ["x", "k", "flag", "color"]
    check_numerical(by_name["x"], frame["x"])
    check_numerical(by_name["k"], frame["k"])
    check_numerical(by_name["flag"], frame["flag"].astype(float))
    assert by_name["flag"].dtype == "BOOLEAN" and by_name["flag"].is_boolean

    color = by_name["color"]
    counts = frame["color"].value_counts()
    assert color.kind == "categorical" and color.dtype == "VARCHAR"
    assert color.count == frame["color"].notna().sum()
    assert color.null_count == frame["color"].isna().sum()
    assert color.category_count == frame["color"].nunique()
    assert color.top_values == sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    assert color.other_count == 0
    assert color.min is None and color.histogram_counts is None


def test_compute_top_k_other_bucket_and_column_subset(con):
    rng = np.random.default_rng(2)
    words = [f"w{i:03d}" for i in range(200)]
    frame = pd.DataFrame({"word": rng.choice(words, 5000, p=np.arange(200, 0, -1) / 20100)})
    frame["n"] = rng.exponential(size=5000)
    table(con, "words", frame)
    [stats] = featurestats.compute(con, "SELECT * FROM words", ["WORD"], top_k=5)  # any case
    counts = frame["word"].value_counts()
    expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert stats.input == "word"
    assert stats.top_values == expected
    assert stats.other_count == 5000 - sum(c for _, c in expected)
    assert stats.category_count == frame["word"].nunique()

    [n_stats] = featurestats.compute(con, "SELECT n FROM words;", num_bins=20)
    check_numerical(n_stats, frame["n"], bins=20)


@pytest.mark.parametrize("loader", [load_breast_cancer, load_diabetes])
def test_compute_sklearn_datasets(con, loader):
    data = loader(as_frame=True)
    frame = data.frame
    table(con, "data", frame)
    stats = featurestats.compute(con, "SELECT * FROM data")
    assert [s.input for s in stats] == list(frame.columns)
    for s in stats:
        check_numerical(s, frame[s.input])
        described = frame[s.input].describe()  # pandas: sample std, linear quantiles
        assert s.stddev == pytest.approx(described["std"], rel=1e-9)
        assert s.median == pytest.approx(described["50%"], rel=1e-12)


def test_compute_constant_and_all_null_columns(con):
    con.execute(
        "CREATE TABLE c AS SELECT 5.0::DOUBLE AS five, NULL::DOUBLE AS nothing, "
        "NULL::VARCHAR AS no_text, 'inf'::DOUBLE AS infinite FROM range(10)"
    )
    five, nothing, no_text, infinite = featurestats.compute(con, "SELECT * FROM c")
    assert five.histogram_counts == [10] + [0] * 9 and five.stddev == 0
    assert nothing.count == 0 and nothing.null_count == 10 and nothing.min is None
    assert no_text.count == 0 and no_text.top_values == [] and no_text.category_count == 0
    assert infinite.count == 0 and infinite.null_count == 10  # non-finite counts as missing


def test_compute_scales_to_millions_of_rows(con):
    con.execute(
        "CREATE TABLE big AS SELECT (i % 1000) / 10.0 AS a, (i % 37)::VARCHAR AS b "
        "FROM range(2000000) AS t(i)"
    )
    a, b = featurestats.compute(con, "SELECT * FROM big")
    assert a.count == 2_000_000 and sum(a.histogram_counts) == 2_000_000
    assert a.min == 0 and a.max == 99.9 and a.mean == pytest.approx(49.95)
    assert b.category_count == 37 and b.other_count == 0


def test_compute_errors(con):
    con.execute("CREATE TABLE t AS SELECT 1.5 AS a, 'x' AS b")
    with pytest.raises(ModelInputError, match="'nope'"):
        featurestats.compute(con, "SELECT * FROM t", ["a", "nope"])
    with pytest.raises(ModelInputError, match="empty"):
        featurestats.compute(con, "SELECT * FROM t WHERE a > 100")


# -- storage ---------------------------------------------------------------------------------


def test_record_load_round_trip_in_a_file(tmp_path):
    path = str(tmp_path / "models.duckdb")
    frame = make_frame(seed=3, n=2000)
    with duckdb.connect(path) as con:
        table(con, "train", frame)
        stats = featurestats.compute(con, "SELECT * FROM train")
        assert featurestats.load(con, "m", 1) == []  # no table yet
        featurestats.ensure_table(con)
        featurestats.ensure_table(con)  # idempotent
        con.execute("BEGIN")
        featurestats.record(con, "m", 1, stats)
        featurestats.record(con, "m", 2, stats[:2])
        featurestats.record(con, "other", 1, stats[3:])
        con.execute("COMMIT")
    with duckdb.connect(path) as con:
        assert featurestats.load(con, "m", 1) == stats
        assert featurestats.load(con, "m", 2) == stats[:2]
        assert featurestats.load(con, "m", 3) == []
        featurestats.record(con, "m", 1, stats[::-1])  # replaces, keeps the new order
        assert featurestats.load(con, "m", 1) == stats[::-1]
        featurestats.drop_model(con, "m")
        assert featurestats.load(con, "m", 1) == featurestats.load(con, "m", 2) == []
        assert featurestats.load(con, "other", 1) == stats[3:]


def test_to_dict_is_json_and_round_trips():
    stats = featurestats.FeatureStats(
        "c", "categorical", "VARCHAR", 3, 1, category_count=2, top_values=[("a", 2)], other_count=1
    )
    data = stats.to_dict()
    assert data["top_values"] == [["a", 2]]
    assert featurestats.FeatureStats.from_dict(data) == stats


# -- ML.FEATURE_INFO -------------------------------------------------------------------------


def feature_info_rows(con, sql: str) -> dict[str, dict]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return {row[0]: dict(zip(names, row)) for row in cursor.fetchall()}


def test_feature_info_sql_duckdb_and_bigquery(con):
    frame = make_frame(seed=4, n=3000)
    frame["color"] = frame["color"].replace("gray", 'it\'s "quoted" \\ back\nslash ünï')
    table(con, "train", frame)
    stats = featurestats.compute(con, "SELECT * FROM train")
    expected_columns = [name for name, _ in featurestats.FEATURE_INFO_COLUMNS]
    assert expected_columns[:9] == [
        "input", "min", "max", "mean", "median", "stddev", "category_count", "null_count",
        "dimension",
    ]  # fmt: skip

    duck = featurestats.feature_info_sql(stats, "duckdb")
    bq = featurestats.feature_info_sql(stats, "bigquery")
    sqlglot.parse_one(bq, read="bigquery")
    for sql in (duck, sqlglot.transpile(bq, read="bigquery", write="duckdb")[0]):
        rows = feature_info_rows(con, sql)
        assert list(rows) == ["x", "k", "flag", "color"]
        for s in stats:
            row = rows[s.input]
            assert list(row) == expected_columns
            for name in ("min", "max", "mean", "median", "stddev", "null_count", "count"):
                assert row[name] == getattr(s, name)
            assert row["dimension"] is None and row["kind"] == s.kind
            assert row["quantiles"] == (s.quantiles or [])
            assert row["histogram_counts"] == (s.histogram_counts or [])
            assert row["histogram_edges"] == (s.histogram_edges or [])
            top = [(t["value"], t["count"]) for t in row["top_values"]]
            assert top == (s.top_values or [])
            assert row["category_count"] == s.category_count
    assert 'it\'s "quoted" \\ back\nslash ünï' in dict(stats[3].top_values)

    empty = featurestats.feature_info_sql([], "duckdb")
    assert con.execute(empty).fetchall() == []
    sqlglot.parse_one(featurestats.feature_info_sql([], "bigquery"), read="bigquery")


# -- drift -------------------------------------------------------------------------------------


@pytest.fixture
def shifted(con):
    """train; a bootstrap resample of it; serving data with x shifted by 1.5 std and other
    color frequencies."""
    train = make_frame(seed=5)
    rng = np.random.default_rng(6)
    resample = train.iloc[rng.integers(0, len(train), len(train))].reset_index(drop=True)
    serving = make_frame(seed=7, shift=1.5, probs=(0.15, 0.3, 0.5, 0.05))
    for name, frame in (("train", train), ("resample", resample), ("serving", serving)):
        table(con, name, frame)
    return train, resample, serving


def test_drift_flags_shift_and_frequency_change(con, shifted):
    train, _, serving = shifted
    sql = drift.validate_data_drift_sql(
        "SELECT * FROM train", "SELECT * FROM serving", COLUMNS, {}, "duckdb"
    )
    cursor = con.execute(sql)
    assert [d[0] for d in cursor.description] == [
        "input", "metric", "threshold", "value", "is_anomaly"
    ]  # fmt: skip
    rows = {r[0]: r[1:] for r in cursor.fetchall()}
    assert list(rows) == ["x", "k", "flag", "color"]
    for name, kind in COLUMNS:
        metric, threshold, value, _ = rows[name]
        assert metric == (JSD if kind == "numerical" else LINF)
        assert threshold == 0.3
        assert value == pytest.approx(reference_row(train, serving, name, kind), abs=TOL)
    assert rows["x"][3] is True and rows["x"][2] > 0.3
    assert rows["color"][3] is True and rows["color"][2] > 0.3
    assert rows["color"][2] == pytest.approx(0.35, abs=0.02)
    assert rows["k"][3] is False and rows["flag"][3] is False  # same distributions


def test_drift_bootstrap_resample_is_not_flagged(con, shifted):
    train, resample, _ = shifted
    sql = drift.validate_data_drift_sql(
        "SELECT * FROM train", "SELECT * FROM resample", COLUMNS, {}, "duckdb"
    )
    rows = run(con, sql)
    for name, kind in COLUMNS:
        metric, threshold, value, is_anomaly = rows[name]
        assert is_anomaly is False and 0 <= value < 0.01
        assert value == pytest.approx(reference_row(train, resample, name, kind), abs=TOL)


def test_drift_options(con, shifted):
    train, resample, serving = shifted
    base, study = "SELECT * FROM train", "SELECT * FROM serving"
    # per-column thresholds: a dict, or BigQuery's [('column', threshold), ...]
    custom = {"thresholds": {"X": 0.99, "k": 0.0}}
    rows = run(con, drift.validate_data_drift_sql(base, study, COLUMNS, custom, "duckdb"))
    assert rows["x"][1] == 0.99 and rows["x"][3] is False  # no longer flagged
    assert rows["k"][1] == 0.0 and rows["k"][3] is (rows["k"][2] > 0)
    pairs = {"thresholds": [("color", 0.5)], "categorical_default_threshold": 0.1}
    rows = run(con, drift.validate_data_drift_sql(base, study, COLUMNS, pairs, "duckdb"))
    assert rows["color"][1] == 0.5 and rows["color"][3] is False
    assert rows["x"][1] == 0.3

    # categorical JS divergence, the L_INFINITY spelling, more histogram buckets, fewer ranks
    options = {
        "CATEGORICAL_METRIC_TYPE": "jensen_shannon_divergence",
        "num_histogram_buckets": 25,
        "numerical_default_threshold": 0.05,
    }
    rows = run(con, drift.validate_data_drift_sql(base, study, COLUMNS, options, "duckdb"))
    assert rows["color"][0] == JSD
    assert rows["color"][2] == pytest.approx(
        reference_row(train, serving, "color", "categorical", metric=JSD), abs=TOL
    )
    assert rows["x"][1] == 0.05
    assert rows["x"][2] == pytest.approx(
        reference_row(train, serving, "x", "numerical", bins=25), abs=TOL
    )
    options = {"categorical_metric_type": "L_INFINITY", "num_rank_histogram_buckets": 2}
    rows = run(con, drift.validate_data_drift_sql(base, study, COLUMNS, options, "duckdb"))
    assert rows["color"][0] == LINF
    assert rows["color"][2] == pytest.approx(
        reference_row(train, serving, "color", "categorical", top_k=2), abs=TOL
    )


def test_drift_out_of_range_values_use_edge_bins(con):
    con.execute("CREATE TABLE a AS SELECT i::DOUBLE AS v, 'x' AS c FROM range(100) AS t(i)")
    con.execute("CREATE TABLE b AS SELECT i::DOUBLE + 1000 AS v, 'y' AS c FROM range(100) AS t(i)")
    con.execute("CREATE TABLE half AS SELECT i::DOUBLE * 2 AS v, 'x' AS c FROM range(100) AS t(i)")
    columns = [("v", "numerical"), ("c", "categorical")]
    rows = run(con, drift.validate_data_drift_sql("FROM a", "FROM b", columns, {}, "duckdb"))
    assert rows["v"][2] == pytest.approx(1.0) and rows["c"][2] == pytest.approx(1.0)  # disjoint
    rows = run(con, drift.validate_data_drift_sql("FROM a", "FROM half", columns, {}, "duckdb"))
    a, half = np.arange(100.0), np.arange(100.0) * 2
    assert rows["v"][2] == pytest.approx(reference(a, half, "numerical", JSD), abs=TOL)
    assert rows["c"][2] == 0


def test_drift_constant_base_and_empty_study(con):
    con.execute("CREATE TABLE const AS SELECT 5.0 AS v FROM range(10)")
    con.execute("CREATE TABLE mixed AS SELECT IF(i < 5, 5.0, 6.0) AS v FROM range(10) AS t(i)")
    columns = [("v", "numerical")]
    rows = run(
        con, drift.validate_data_drift_sql("FROM const", "FROM const", columns, {}, "duckdb")
    )
    assert rows["v"][2] == 0
    rows = run(
        con, drift.validate_data_drift_sql("FROM const", "FROM mixed", columns, {}, "duckdb")
    )
    assert rows["v"][2] == pytest.approx(js_divergence(np.array([1, 0]), np.array([0.5, 0.5])))
    empty = "SELECT * FROM const WHERE v IS NULL"
    rows = run(con, drift.validate_data_drift_sql("FROM const", empty, columns, {}, "duckdb"))
    assert rows["v"][2:] == [None, None]  # nothing to compare


def test_drift_sklearn_breast_cancer(con):
    """Malignant tumours against benign ones: the size features drift, in both dialects."""
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.assign(diagnosis=data.target.map({0: "malignant", 1: "benign"}))
    table(con, "cancer", frame)
    columns = [(c, "numerical") for c in data.feature_names] + [("diagnosis", "categorical")]
    base = "SELECT * FROM cancer WHERE diagnosis = 'benign'"
    study = "SELECT * FROM cancer WHERE diagnosis = 'malignant'"
    benign, malignant = (frame[frame["diagnosis"] == d] for d in ("benign", "malignant"))
    rows = run(con, drift.validate_data_drift_sql(base, study, columns, {}, "duckdb"))
    for name, kind in columns:
        assert rows[name][2] == pytest.approx(reference_row(benign, malignant, name, kind), abs=TOL)
    assert rows["worst perimeter"][3] is True and rows["worst perimeter"][2] > 0.6
    assert rows["texture error"][3] is False  # no size information in it
    assert rows["diagnosis"][2:] == [1.0, True]  # 'malignant' is never seen in the base
    bq = drift.validate_data_drift_sql(base, study, columns, {}, "bigquery")
    assert _close(run_bigquery(con, bq), rows)


def _close(a: dict, b: dict) -> bool:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][:2] == b[key][:2] and a[key][3] == b[key][3]
        assert a[key][2] == pytest.approx(b[key][2], abs=1e-12)
    return True


# -- skew --------------------------------------------------------------------------------------


def test_skew_from_stored_stats_equals_drift_against_training_query(con, shifted):
    stats = featurestats.compute(con, "SELECT * FROM train")
    featurestats.ensure_table(con)
    featurestats.record(con, "m", 1, stats)
    stored = featurestats.load(con, "m", 1)
    columns = [(s.input, s.kind) for s in stored]
    for study in ("SELECT * FROM serving", "SELECT * FROM resample", "SELECT * FROM train"):
        skew = run(con, drift.validate_data_skew_sql(stored, study, {}, "duckdb"))
        drifted = run(
            con, drift.validate_data_drift_sql("SELECT * FROM train", study, columns, {}, "duckdb")
        )
        assert _close(skew, drifted)
        bq_skew = run_bigquery(con, drift.validate_data_skew_sql(stored, study, {}, "bigquery"))
        bq_drift = run_bigquery(
            con,
            drift.validate_data_drift_sql("SELECT * FROM train", study, BQ_COLUMNS, {}, "bigquery"),
        )
        assert _close(bq_skew, skew) and _close(bq_drift, skew)
    skew = run(con, drift.validate_data_skew_sql(stored, "SELECT * FROM serving", {}, "duckdb"))
    assert skew["x"][3] is True and skew["color"][3] is True
    assert skew["k"][3] is False and skew["flag"][3] is False
    train, _, serving = shifted
    assert skew["x"][2] == pytest.approx(reference_row(train, serving, "x", "numerical"), abs=TOL)

    # options apply to skew too; thresholds in BigQuery's list form
    options = {"thresholds": [("x", 0.95)], "categorical_metric_type": JSD}
    skew = run(con, drift.validate_data_skew_sql(stored, "FROM serving", options, "duckdb"))
    assert skew["x"][1:4:2] == [0.95, False] and skew["color"][0] == JSD


def test_skew_with_a_small_top_k_keeps_the_other_bucket(con):
    rng = np.random.default_rng(8)
    words = np.array([f"w{i}" for i in range(30)])
    table(con, "train", pd.DataFrame({"w": rng.choice(words, 3000)}))
    table(con, "serving", pd.DataFrame({"w": rng.choice(words[:10], 3000)}))
    [stats] = featurestats.compute(con, "FROM train", top_k=5)
    skew = run(con, drift.validate_data_skew_sql([stats], "FROM serving", {}, "duckdb"))
    options = {"num_rank_histogram_buckets": 5}
    columns = [("w", "categorical")]
    drift_sql = drift.validate_data_drift_sql(
        "FROM train", "FROM serving", columns, options, "duckdb"
    )
    drifted = run(con, drift_sql)
    assert _close(skew, drifted)
    train = con.execute("SELECT w FROM train").df()["w"]
    serving = con.execute("SELECT w FROM serving").df()["w"]
    assert skew["w"][2] == pytest.approx(
        reference(train, serving, "categorical", LINF, top_k=5), abs=TOL
    )


def test_sql_parses_as_bigquery_and_is_plain_sql(con, shifted):
    stats = featurestats.compute(con, "SELECT * FROM train")
    base, study = "SELECT * FROM t1", "SELECT * FROM t2"
    texts = [
        drift.validate_data_drift_sql(base, study, BQ_COLUMNS, {}, "bigquery"),
        drift.validate_data_skew_sql(stats, study, {}, "bigquery"),
        featurestats.feature_info_sql(stats, "bigquery"),
    ]
    for text in texts:
        sqlglot.parse_one(text, read="bigquery")
        assert re.search(r"\bML\.", text, re.IGNORECASE) is None  # no BigQuery ML function


# -- bad input ---------------------------------------------------------------------------------


def test_bad_options_and_columns(con):
    stats = [featurestats.FeatureStats("x", "numerical", "DOUBLE", 1, 0, 1.0, 1.0, 1.0, 1.0,
                                       None, [1.0] * 11, [1.0, 1.0], [1])]  # fmt: skip
    columns = [("x", "numerical")]

    def drift_sql(options, cols=columns):
        return drift.validate_data_drift_sql("FROM a", "FROM b", cols, options, "duckdb")

    with pytest.raises(SqlCompileError, match="bogus"):
        drift_sql({"bogus": 1, "numerical_default_threshold": 0.2})
    with pytest.raises(SqlCompileError, match="num_histogram_buckets"):
        drift.validate_data_skew_sql(stats, "FROM b", {"num_histogram_buckets": 5}, "duckdb")
    with pytest.raises(SqlCompileError, match="numerical_default_threshold"):
        drift_sql({"numerical_default_threshold": 1.5})
    with pytest.raises(SqlCompileError, match="numerical_metric_type"):
        drift_sql({"numerical_metric_type": "L_INFTY"})
    with pytest.raises(SqlCompileError, match="categorical_metric_type"):
        drift_sql({"categorical_metric_type": "L2"})
    with pytest.raises(SqlCompileError, match="'nope'"):
        drift_sql({"thresholds": {"nope": 0.1}})
    with pytest.raises(SqlCompileError, match="thresholds"):
        drift_sql({"thresholds": [0.1]})
    with pytest.raises(SqlCompileError, match="num_histogram_buckets"):
        drift_sql({"num_histogram_buckets": 0})
    with pytest.raises(SqlCompileError, match="enable_visualization_link"):
        drift.validate_data_skew_sql(stats, "FROM b", {"enable_visualization_link": True}, "duckdb")
    with pytest.raises(SqlCompileError, match="kind"):
        drift_sql({}, [("x", "text")])
    with pytest.raises(SqlCompileError, match="twice"):
        drift_sql({}, [("x", "numerical"), ("X", "categorical")])
    with pytest.raises(SqlCompileError, match="no columns"):
        drift_sql({}, [])
    with pytest.raises(SqlCompileError, match="dialect"):
        drift.validate_data_drift_sql("FROM a", "FROM b", columns, {}, "spark")
    with pytest.raises(SqlCompileError, match="no training statistics"):
        drift.validate_data_skew_sql([], "FROM b", {}, "duckdb")
    no_values = featurestats.FeatureStats("z", "numerical", "DOUBLE", 0, 5)
    with pytest.raises(ModelInputError, match="'z'"):
        drift.validate_data_skew_sql([no_values], "FROM b", {}, "duckdb")
    # accepted: BigQuery's other bucket options, NULL for a default, FALSE for the link
    drift_sql({"num_quantiles_histogram_buckets": 20, "num_values_histogram_buckets": None})
    drift.validate_data_skew_sql(stats, "FROM b", {"enable_visualization_link": False}, "duckdb")


def test_unknown_study_column_and_empty_base_set(con):
    con.execute("CREATE TABLE a AS SELECT 1.5 AS x, 'p' AS c")
    columns = [("x", "numerical"), ("c", "categorical")]
    empty = drift.validate_data_drift_sql(
        "SELECT * FROM a WHERE FALSE", "SELECT * FROM a", columns, {}, "duckdb"
    )
    with pytest.raises(duckdb.Error, match="base data has no non-NULL values for input x"):
        con.execute(empty).fetchall()
    missing = drift.validate_data_drift_sql(
        "SELECT * FROM a", "SELECT * FROM a", [("nope", "numerical")], {}, "duckdb"
    )
    with pytest.raises(duckdb.Error, match="nope"):
        con.execute(missing).fetchall()
    # the BigQuery text raises through ERROR() too, once translated for DuckDB
    bq = drift.validate_data_drift_sql(
        "SELECT * FROM a WHERE FALSE", "SELECT * FROM a", columns, {}, "bigquery"
    )
    with pytest.raises(duckdb.Error, match="no non-NULL values"):
        run_bigquery(con, bq)
