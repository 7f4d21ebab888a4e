"""The ML.EVALUATE / ML.CONFUSION_MATRIX / ML.ROC_CURVE SQL, run on DuckDB and checked
against scikit-learn, plus the BigQuery text (parsed, and run on DuckDB through sqlglot)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import sqlglot
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sqlml.errors import SqlCompileError
from sqlml.metrics import Task, confusion_matrix_sql, evaluate_sql, roc_curve_sql

TOL = 1e-6
CLASSIFICATION = ["precision", "recall", "accuracy", "f1_score", "log_loss", "roc_auc"]
REGRESSION = [
    "mean_absolute_error",
    "mean_squared_error",
    "mean_squared_log_error",
    "median_absolute_error",
    "r2_score",
    "explained_variance",
]
ROC = [
    "threshold",
    "recall",
    "false_positive_rate",
    "true_positives",
    "false_positives",
    "true_negatives",
    "false_negatives",
]


@dataclass
class Scored:
    """A model's scores on held-out rows, as the columns the metrics SQL reads."""

    name: str
    task: Task
    labels: list
    predicted: list
    probs: list | None = None

    @property
    def sql(self) -> str:
        return f"SELECT * FROM {self.name}"

    def table(self) -> pa.Table:
        columns = {"sqlml_label": self.labels, "sqlml_predicted": self.predicted}
        if self.probs is not None:
            columns["sqlml_probs"] = pa.array(self.probs, type=pa.list_(pa.float64()))
        return pa.table(columns)

    def kept(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Labels, predictions and probabilities of the rows with a label (NULLs are skipped)."""
        keep = [i for i, label in enumerate(self.labels) if label is not None]
        probs = None if self.probs is None else np.array([self.probs[i] for i in keep])
        return (
            np.array([self.labels[i] for i in keep]),
            np.array([self.predicted[i] for i in keep]),
            probs,
        )


def _split(loader, test_size=0.5, seed=0):
    X, y = loader(return_X_y=True)
    strat = y if loader is not load_diabetes else None
    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=strat)


def _classifier_case(name, model, X_test, y_test, kind) -> Scored:
    probs = model.predict_proba(X_test)
    classes = tuple(c.item() if hasattr(c, "item") else c for c in model.classes_)
    labels = [c.item() if hasattr(c, "item") else c for c in y_test]
    predicted = [c.item() if hasattr(c, "item") else c for c in model.predict(X_test)]
    return Scored(name, Task(kind, classes), labels, predicted, probs.tolist())


@pytest.fixture(scope="module")
def cases() -> dict[str, Scored]:
    out: dict[str, Scored] = {}
    X_tr, X_te, y_tr, y_te = _split(load_breast_cancer)
    lr = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
    out["cancer_lr"] = _classifier_case("cancer_lr", lr.fit(X_tr, y_tr), X_te, y_te, "binary")
    gb = GradientBoostingClassifier(n_estimators=15, max_depth=2, random_state=0)
    out["cancer_gb"] = _classifier_case("cancer_gb", gb.fit(X_tr, y_tr), X_te, y_te, "binary")

    # Scores rounded to 0.1: many ties, some exactly at the 0.5 threshold; plus NULL labels
    # whose (invalid) scores must be ignored.
    base = out["cancer_lr"]
    rounded = [round(p[1], 1) for p in base.probs]
    out["cancer_ties"] = Scored(
        "cancer_ties",
        base.task,
        base.labels + [None, None],
        # sqlml_predicted is ignored for binary: fill it with the negative class everywhere
        [0] * (len(base.labels) + 2),
        [[1 - p, p] for p in rounded] + [None, [2.0]],
    )
    assert 0.5 in rounded

    # Hard 0/1 probabilities: log_loss depends on the clipping of wrong certain predictions.
    hard = [float(round(p[1])) for p in base.probs]
    out["cancer_hard"] = Scored(
        "cancer_hard", base.task, base.labels, base.predicted, [[1 - p, p] for p in hard]
    )

    y_names = np.where(y_tr == 1, "benign", "malignant")
    named = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
    out["cancer_names"] = _classifier_case(
        "cancer_names",
        named.fit(X_tr, y_names),
        X_te,
        np.where(y_te == 1, "benign", "malignant"),
        "binary",
    )
    bools = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
    out["cancer_bool"] = _classifier_case(
        "cancer_bool", bools.fit(X_tr, y_tr == 1), X_te, y_te == 1, "binary"
    )
    assert out["cancer_bool"].task.classes == (False, True)

    # Multiclass: iris with its target names and a weak model (misclassifies some rows).
    X_tr, X_te, y_tr, y_te = _split(load_iris, seed=1)
    names = np.array(load_iris().target_names)
    weak = make_pipeline(StandardScaler(), LogisticRegression(C=0.02, max_iter=2000))
    out["iris_names"] = _classifier_case(
        "iris_names", weak.fit(X_tr, names[y_tr]), X_te, names[y_te], "multiclass"
    )
    # The same scores on a 0.25 grid (renormalised): ties in every class's scores.
    iris = out["iris_names"]
    grid = np.round(np.array(iris.probs) * 4) / 4
    grid = grid / grid.sum(axis=1, keepdims=True)
    out["iris_ties"] = Scored("iris_ties", iris.task, iris.labels, iris.predicted, grid.tolist())

    X_tr, X_te, y_tr, y_te = _split(load_wine, test_size=0.7, seed=2)
    out["wine_nb"] = _classifier_case(
        "wine_nb", GaussianNB().fit(X_tr[:, :3], y_tr), X_te[:, :3], y_te, "multiclass"
    )
    # A fourth class that never occurs (probability 0): it gets a row of zeros.
    wine = out["wine_nb"]
    out["wine_absent"] = Scored(
        "wine_absent",
        Task("multiclass", (0, 1, 2, 3)),
        wine.labels,
        wine.predicted,
        [p + [0.0] for p in wine.probs],
    )

    X_tr, X_te, y_tr, y_te = _split(load_diabetes)
    reg = LinearRegression().fit(X_tr, y_tr)
    pred = reg.predict(X_te)
    out["diabetes"] = Scored(
        "diabetes", Task("regression"), y_te.tolist() + [None], pred.tolist() + [1e9]
    )
    out["diabetes_even"] = Scored(
        "diabetes_even", Task("regression"), y_te[:220].tolist(), pred[:220].tolist()
    )
    # Shifted so that some labels are <= -1: MSLE is NULL, the rest still holds.
    out["diabetes_negative"] = Scored(
        "diabetes_negative", Task("regression"), (y_te - 100).tolist(), (pred - 100).tolist()
    )
    out["constant_label"] = Scored(
        "constant_label", Task("regression"), [5, 5, 5, 5], [4.0, 5.0, 6.5, 5.0]
    )
    out["perfect"] = Scored("perfect", Task("regression"), [1, 2, 3], [1.0, 2.0, 3.0])
    return out


@pytest.fixture(scope="module")
def con(cases):
    connection = duckdb.connect()
    for case in cases.values():
        connection.register(case.name, case.table())
    yield connection
    connection.close()


def run(con, sql: str) -> tuple[list[str], list[tuple]]:
    cursor = con.execute(sql)
    return [d[0] for d in cursor.description], cursor.fetchall()


def one_row(con, sql: str) -> dict[str, float | None]:
    names, rows = run(con, sql)
    assert len(rows) == 1
    return dict(zip(names, rows[0]))


def assert_close(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name, value in want.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            assert got[name] is None, name
        else:
            assert got[name] == pytest.approx(value, abs=TOL), name


def on_bigquery_text(con, sql_for) -> list[tuple]:
    """Run the BigQuery text on DuckDB through sqlglot, checking its semantics that far."""
    bigquery = sql_for("bigquery")
    sqlglot.parse_one(bigquery, read="bigquery")
    duck = sqlglot.transpile(bigquery, read="bigquery", write="duckdb")[0]
    return con.execute(duck).fetchall()


def assert_same_rows(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for row_a, row_b in zip(a, b):
        assert len(row_a) == len(row_b)
        for x, y in zip(row_a, row_b):
            if isinstance(x, float) or isinstance(y, float):
                assert y == pytest.approx(x, abs=1e-9)
            else:
                assert x == y


# --- sklearn references -------------------------------------------------------------------


def sk_classification(case: Scored, threshold: float = 0.5) -> dict[str, float]:
    y, predicted, probs = case.kept()
    classes = list(case.task.classes)
    if case.task.kind == "binary":
        positive = classes[1]
        yhat = np.where(probs[:, 1] > threshold, positive, classes[0])
        scores = dict(pos_label=positive, zero_division=0)
        precision = skm.precision_score(y, yhat, **scores)
        recall = skm.recall_score(y, yhat, **scores)
        f1 = skm.f1_score(y, yhat, **scores)
        auc = skm.roc_auc_score(y == positive, probs[:, 1])
    else:
        yhat = predicted
        precision = skm.precision_score(y, yhat, average="macro", zero_division=0)
        recall = skm.recall_score(y, yhat, average="macro", zero_division=0)
        f1 = skm.f1_score(y, yhat, average="macro", zero_division=0)
        present = [k for k, c in enumerate(classes) if (y == c).any()]
        if len(present) == len(classes):
            auc = skm.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=classes)
        else:  # sklearn needs every class in y: average the defined one-vs-rest AUCs
            auc = np.mean([skm.roc_auc_score(y == classes[k], probs[:, k]) for k in present])
    return {
        "precision": precision,
        "recall": recall,
        "accuracy": skm.accuracy_score(y, yhat),
        "f1_score": f1,
        "log_loss": skm.log_loss(y, probs, labels=classes),
        "roc_auc": auc,
    }


def sk_regression(case: Scored) -> dict[str, float | None]:
    y, yhat, _ = case.kept()
    y, yhat = y.astype(float), yhat.astype(float)
    msle = None if (y <= -1).any() or (yhat <= -1).any() else skm.mean_squared_log_error(y, yhat)
    return {
        "mean_absolute_error": skm.mean_absolute_error(y, yhat),
        "mean_squared_error": skm.mean_squared_error(y, yhat),
        "mean_squared_log_error": msle,
        "median_absolute_error": skm.median_absolute_error(y, yhat),
        "r2_score": skm.r2_score(y, yhat),
        "explained_variance": skm.explained_variance_score(y, yhat),
    }


def percentile_thresholds(scores: np.ndarray) -> np.ndarray:
    """The 0th..100th nearest-rank percentiles: sorted[ceil(k * n / 100) - 1]."""
    ordered, n = np.sort(scores), len(scores)
    return np.unique([ordered[max(-(-k * n // 100), 1) - 1] for k in range(101)])


def reference_roc(case: Scored, thresholds) -> list[tuple]:
    y, _, probs = case.kept()
    positive, p = y == case.task.classes[1], probs[:, 1]
    rows = []
    for t in thresholds:
        above = p > t
        tp, fp = int((above & positive).sum()), int((above & ~positive).sum())
        tn, fn = int((~above & ~positive).sum()), int((~above & positive).sum())
        recall = tp / (tp + fn) if tp + fn else 0.0
        fpr = fp / (fp + tn) if fp + tn else 0.0
        rows.append((float(t), recall, fpr, tp, fp, tn, fn))
    return rows


# --- ML.EVALUATE --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["cancer_lr", "cancer_gb", "cancer_ties", "cancer_hard", "cancer_names", "cancer_bool"],
)
@pytest.mark.parametrize("threshold", [None, 0.3, 0.5, 0.9])
def test_evaluate_binary_matches_sklearn(con, cases, name, threshold):
    case = cases[name]
    got = one_row(con, evaluate_sql(case.sql, case.task, "duckdb", threshold))
    want = sk_classification(case, 0.5 if threshold is None else threshold)
    assert_close(got, want)
    assert 0.5 < got["roc_auc"] < 1.0 and got["accuracy"] < 1.0  # not a trivial evaluation


def test_binary_threshold_is_strict_and_sqlml_predicted_is_ignored(con, cases):
    case = cases["cancer_ties"]
    y, _, probs = case.kept()
    at_half = probs[:, 1] == 0.5
    assert at_half.any()
    got = one_row(con, evaluate_sql(case.sql, case.task, "duckdb"))
    # Rows scored exactly 0.5 are negative; sqlml_predicted (all 0 here) plays no part.
    yhat = np.where(probs[:, 1] > 0.5, 1, 0)
    assert got["accuracy"] == pytest.approx((yhat == y).mean(), abs=TOL)
    assert got["accuracy"] != pytest.approx((y == 0).mean(), abs=TOL)


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_evaluate_binary_extreme_thresholds(con, cases, threshold):
    case = cases["cancer_lr"]
    got = one_row(con, evaluate_sql(case.sql, case.task, "duckdb", threshold))
    assert_close(got, sk_classification(case, threshold))
    if threshold == 1.0:  # nothing predicted positive: 0/0 precision is 0 (zero_division=0)
        assert got["precision"] == 0.0 and got["recall"] == 0.0 and got["f1_score"] == 0.0


@pytest.mark.parametrize("name", ["iris_names", "iris_ties", "wine_nb", "wine_absent"])
def test_evaluate_multiclass_matches_sklearn(con, cases, name):
    case = cases[name]
    got = one_row(con, evaluate_sql(case.sql, case.task, "duckdb"))
    assert_close(got, sk_classification(case))
    assert got["accuracy"] < 1.0 and got["f1_score"] < 1.0  # not a trivial evaluation


def test_multiclass_ties_change_the_auc(con, cases):
    exact = one_row(con, evaluate_sql(cases["iris_names"].sql, cases["iris_names"].task, "duckdb"))
    tied = one_row(con, evaluate_sql(cases["iris_ties"].sql, cases["iris_ties"].task, "duckdb"))
    assert exact["roc_auc"] != pytest.approx(tied["roc_auc"], abs=1e-4)


@pytest.mark.parametrize(
    "name", ["diabetes", "diabetes_even", "diabetes_negative", "constant_label", "perfect"]
)
def test_evaluate_regression_matches_sklearn(con, cases, name):
    case = cases[name]
    got = one_row(con, evaluate_sql(case.sql, case.task, "duckdb"))
    assert_close(got, sk_regression(case))


def test_regression_edge_cases(con, cases):
    negative = one_row(
        con, evaluate_sql(cases["diabetes_negative"].sql, Task("regression"), "duckdb")
    )
    assert negative["mean_squared_log_error"] is None
    constant = one_row(con, evaluate_sql(cases["constant_label"].sql, Task("regression"), "duckdb"))
    assert constant["r2_score"] == 0.0 and constant["explained_variance"] == 0.0
    perfect = one_row(con, evaluate_sql(cases["perfect"].sql, Task("regression"), "duckdb"))
    assert perfect["r2_score"] == 1.0 and perfect["mean_absolute_error"] == 0.0
    # 220 rows: the median is the mean of the two middle errors, not one of them.
    y, yhat, _ = cases["diabetes_even"].kept()
    errors = np.sort(np.abs(y - yhat))
    even = one_row(con, evaluate_sql(cases["diabetes_even"].sql, Task("regression"), "duckdb"))
    assert even["median_absolute_error"] == pytest.approx((errors[109] + errors[110]) / 2)
    assert even["median_absolute_error"] not in (errors[109], errors[110])


# --- ML.CONFUSION_MATRIX ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "threshold", "columns"),
    [
        ("cancer_lr", None, ["_0", "_1"]),
        ("cancer_ties", 0.5, ["_0", "_1"]),
        ("cancer_gb", 0.2, ["_0", "_1"]),
        ("cancer_names", None, ["benign", "malignant"]),
        ("cancer_bool", 0.7, ["false", "true"]),
        ("iris_names", None, ["setosa", "versicolor", "virginica"]),
        ("wine_nb", None, ["_0", "_1", "_2"]),
        ("wine_absent", None, ["_0", "_1", "_2", "_3"]),
    ],
)
def test_confusion_matrix_matches_sklearn(con, cases, name, threshold, columns):
    case = cases[name]
    names, rows = run(con, confusion_matrix_sql(case.sql, case.task, "duckdb", threshold))
    assert names == ["expected_label", *columns]
    classes = list(case.task.classes)
    y, predicted, probs = case.kept()
    if case.task.kind == "binary":
        t = 0.5 if threshold is None else threshold
        predicted = np.where(probs[:, 1] > t, classes[1], classes[0])
    want = skm.confusion_matrix(y, predicted, labels=classes)
    assert [row[0] for row in rows] == classes
    assert np.array([row[1:] for row in rows]).tolist() == want.tolist()
    assert want.sum() == len(y) and np.trace(want) < len(y)


def test_confusion_matrix_row_for_an_absent_class(con, cases):
    case = cases["wine_absent"]
    _, rows = run(con, confusion_matrix_sql(case.sql, case.task, "duckdb"))
    assert rows[-1] == (3, 0, 0, 0, 0)


def test_confusion_matrix_column_names_follow_bigquery(con):
    classes = ("a b", "A-B", "9lives", "expected_label", "_TABLE_x", 'it\'s \\ "q"')
    con.register(
        "odd_labels",
        pa.table(
            {
                "sqlml_label": list(classes),
                "sqlml_predicted": list(reversed(classes)),
                "sqlml_probs": pa.array([[1 / 6] * 6] * 6, type=pa.list_(pa.float64())),
            }
        ),
    )
    task = Task("multiclass", classes)
    for dialect in ("duckdb", "bigquery"):
        sql = confusion_matrix_sql("SELECT * FROM odd_labels", task, dialect)
        if dialect == "bigquery":
            sql = sqlglot.transpile(sql, read="bigquery", write="duckdb")[0]
        names, rows = run(con, sql)
        assert names == [
            "expected_label",
            "a_b",
            "A_B_1",
            "_9lives",
            "expected_label_1",
            "__TABLE_x",
            "it_s____q_",
        ]
        assert [row[0] for row in rows] == list(classes)  # labels come back exactly
        assert [row[1:] for row in rows] == [
            tuple(int(i + j == 5) for j in range(6)) for i in range(6)
        ]


# --- ML.ROC_CURVE -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cancer_lr", "cancer_gb", "cancer_ties", "cancer_names"])
def test_roc_curve_default_thresholds_are_percentiles(con, cases, name):
    case = cases[name]
    names, rows = run(con, roc_curve_sql(case.sql, case.task, "duckdb"))
    assert names == ROC
    _, _, probs = case.kept()
    thresholds = percentile_thresholds(probs[:, 1])
    assert [row[0] for row in rows] == thresholds.tolist()
    assert 1 < len(rows) <= 101
    assert_same_rows(rows, reference_roc(case, thresholds))
    # numpy's inverted-CDF quantiles are the same percentiles
    numpy_q = np.quantile(probs[:, 1], np.arange(101) / 100, method="inverted_cdf")
    assert np.unique(numpy_q).tolist() == thresholds.tolist()


def test_roc_curve_default_thresholds_keep_a_tied_minimum(con):
    """A minimum below the 1st percentile is still the 0th percentile, ties or not."""
    rng = np.random.default_rng(3)
    scores = np.concatenate([[0.01, 0.01], rng.uniform(0.2, 0.9, 298).round(3)])
    labels = (rng.uniform(size=300) < scores).astype(int)
    case = Scored(
        "tied_minimum",
        Task("binary", (0, 1)),
        labels.tolist(),
        labels.tolist(),
        [[1 - p, p] for p in scores],
    )
    con.register(case.name, case.table())
    _, rows = run(con, roc_curve_sql(case.sql, case.task, "duckdb"))
    thresholds = percentile_thresholds(scores)
    assert thresholds[0] == 0.01 and [row[0] for row in rows] == thresholds.tolist()
    assert_same_rows(rows, reference_roc(case, thresholds))
    assert_same_rows(on_bigquery_text(con, lambda d: roc_curve_sql(case.sql, case.task, d)), rows)


def test_roc_curve_agrees_with_sklearn_roc_curve(con, cases):
    """At a threshold equal to a score s, "> s" counts equal sklearn's ">= next score"."""
    case = cases["cancer_ties"]
    y, _, probs = case.kept()
    fpr, tpr, sk_thresholds = skm.roc_curve(y, probs[:, 1], drop_intermediate=False)
    _, rows = run(con, roc_curve_sql(case.sql, case.task, "duckdb"))
    assert len(rows) > 5
    for threshold, recall, false_positive_rate, *_ in rows:
        i = int(np.flatnonzero(sk_thresholds == threshold)[0])
        assert recall == pytest.approx(tpr[i - 1], abs=TOL)
        assert false_positive_rate == pytest.approx(fpr[i - 1], abs=TOL)


@pytest.mark.parametrize("name", ["cancer_lr", "cancer_ties", "cancer_bool"])
def test_roc_curve_explicit_thresholds(con, cases, name):
    case = cases[name]
    asked = [0.9, 0.1, 0.5, 0.5, 0.0, 1.0, 0.25]
    names, rows = run(con, roc_curve_sql(case.sql, case.task, "duckdb", asked))
    assert names == ROC
    want = reference_roc(case, sorted(set(asked)))
    assert_same_rows(rows, want)
    assert rows[0][1:3] != rows[-1][1:3]
    # The row at 0.5 is the default confusion matrix.
    _, matrix = run(con, confusion_matrix_sql(case.sql, case.task, "duckdb"))
    at_half = next(row for row in rows if row[0] == 0.5)
    (tn, fp), (fn, tp) = matrix[0][1:], matrix[1][1:]
    assert at_half[3:] == (tp, fp, tn, fn)


# --- BigQuery text ------------------------------------------------------------------------


BIGQUERY_CALLS = [
    ("cancer_lr", lambda c, d: evaluate_sql(c.sql, c.task, d), CLASSIFICATION),
    ("cancer_ties", lambda c, d: evaluate_sql(c.sql, c.task, d, 0.3), CLASSIFICATION),
    ("cancer_names", lambda c, d: evaluate_sql(c.sql, c.task, d), CLASSIFICATION),
    ("iris_names", lambda c, d: evaluate_sql(c.sql, c.task, d), CLASSIFICATION),
    ("wine_absent", lambda c, d: evaluate_sql(c.sql, c.task, d), CLASSIFICATION),
    ("diabetes", lambda c, d: evaluate_sql(c.sql, c.task, d), REGRESSION),
    ("diabetes_even", lambda c, d: evaluate_sql(c.sql, c.task, d), REGRESSION),
    ("diabetes_negative", lambda c, d: evaluate_sql(c.sql, c.task, d), REGRESSION),
    ("cancer_lr", lambda c, d: confusion_matrix_sql(c.sql, c.task, d), ["expected_label"]),
    ("cancer_bool", lambda c, d: confusion_matrix_sql(c.sql, c.task, d, 0.7), None),
    ("iris_names", lambda c, d: confusion_matrix_sql(c.sql, c.task, d), None),
    ("cancer_ties", lambda c, d: roc_curve_sql(c.sql, c.task, d), ROC),
    ("cancer_gb", lambda c, d: roc_curve_sql(c.sql, c.task, d), ROC),
    ("cancer_lr", lambda c, d: roc_curve_sql(c.sql, c.task, d, [0.2, 0.5, 0.8]), ROC),
]


@pytest.mark.parametrize(("name", "call", "columns"), BIGQUERY_CALLS)
def test_bigquery_text_parses_and_matches_duckdb(con, cases, name, call, columns):
    case = cases[name]
    bigquery = call(case, "bigquery")
    tree = sqlglot.parse_one(bigquery, read="bigquery")
    if columns == ["expected_label"]:
        assert tree.named_selects == ["expected_label", "_0", "_1"]
    elif columns is not None:
        assert tree.named_selects == columns
    # BigQuery idioms, and none of DuckDB's.
    assert "ERROR('ML." in bigquery and "error(" not in bigquery
    assert "COUNT_IF" not in bigquery and "//" not in bigquery
    if case.task.kind != "regression":
        assert "sqlml_probs[SAFE_OFFSET(0)]" in bigquery and "sqlml_probs[1]" not in bigquery
    duck_rows = run(con, call(case, "duckdb"))[1]
    assert_same_rows(on_bigquery_text(con, lambda d: call(case, d)), duck_rows)


def test_bigquery_regression_uses_exact_percentile():
    sql = evaluate_sql("SELECT * FROM t", Task("regression"), "bigquery")
    assert "PERCENTILE_CONT(ABS(y - yhat), 0.5) OVER ()" in sql
    assert "MEDIAN" not in sql.upper().replace("MEDIAN_A", "")
    tree = sqlglot.parse_one(sql, read="bigquery")
    assert tree.find(sqlglot.exp.Window) is not None
    assert "CAST(sqlml_label AS FLOAT64)" in sql


def test_bigquery_default_roc_uses_integer_division():
    sql = roc_curve_sql("SELECT * FROM t", Task("binary", (0, 1)), "bigquery")
    assert "DIV(100 * cum, total) > DIV(100 * (cum - cnt), total)" in sql
    assert "sqlml_probs[SAFE_OFFSET(1)] AS p2" in sql


def test_bigquery_string_literals_are_escaped(con):
    classes = ("it's", "back\\slash")
    sql = evaluate_sql("SELECT * FROM quoted", Task("binary", classes), "bigquery")
    assert "'it\\'s'" in sql and "'back\\\\slash'" in sql
    con.register(
        "quoted",
        pa.table(
            {
                "sqlml_label": ["it's", "back\\slash", "back\\slash"],
                "sqlml_predicted": ["x", "x", "x"],
                "sqlml_probs": pa.array(
                    [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], type=pa.list_(pa.float64())
                ),
            }
        ),
    )
    row = on_bigquery_text(
        con, lambda d: evaluate_sql("SELECT * FROM quoted", Task("binary", classes), d)
    )
    assert row[0][2] == pytest.approx(2 / 3)  # accuracy
    assert (
        row == run(con, evaluate_sql("SELECT * FROM quoted", Task("binary", classes), "duckdb"))[1]
    )


# --- bad input ----------------------------------------------------------------------------


EMPTY = "SELECT * FROM cancer_lr WHERE false"


@pytest.mark.parametrize(
    ("make", "function"),
    [
        (lambda d: evaluate_sql(EMPTY, Task("binary", (0, 1)), d), "ML.EVALUATE"),
        (lambda d: evaluate_sql(EMPTY, Task("multiclass", (0, 1)), d), "ML.EVALUATE"),
        (lambda d: confusion_matrix_sql(EMPTY, Task("binary", (0, 1)), d), "ML.CONFUSION_MATRIX"),
        (lambda d: roc_curve_sql(EMPTY, Task("binary", (0, 1)), d), "ML.ROC_CURVE"),
        (lambda d: roc_curve_sql(EMPTY, Task("binary", (0, 1)), d, [0.5]), "ML.ROC_CURVE"),
        (
            lambda d: evaluate_sql("SELECT * FROM diabetes WHERE false", Task("regression"), d),
            "ML.EVALUATE",
        ),
        # only NULL labels: nothing to evaluate either
        (
            lambda d: evaluate_sql(
                "SELECT * FROM diabetes WHERE sqlml_label IS NULL", Task("regression"), d
            ),
            "ML.EVALUATE",
        ),
    ],
)
def test_empty_evaluation_set_fails_in_sql(con, make, function):
    message = f"{function}: the evaluation set is empty"
    with pytest.raises(duckdb.Error, match=message):
        con.execute(make("duckdb")).fetchall()
    assert f"ERROR('{message}')" in make("bigquery")
    with pytest.raises(duckdb.Error, match=message):  # the BigQuery text, via sqlglot
        on_bigquery_text(con, make)


@pytest.mark.parametrize(
    ("scored", "task", "message"),
    [
        (
            "SELECT * FROM cancer_lr",
            Task("binary", (0, 2), label="malignant"),
            r"label column 'malignant' has a value that is not one of the model classes \[0, 2\]",
        ),
        (
            "SELECT * FROM wine_nb",
            Task("multiclass", (0, 1, 2, 3)),
            "sqlml_probs must hold 4 class probabilities",
        ),
        (
            "SELECT sqlml_label, sqlml_predicted, [sqlml_probs[1] * 2, 0.0] AS sqlml_probs "
            "FROM cancer_lr",
            Task("binary", (0, 1)),
            "sqlml_probs must hold 2 class probabilities in \\[0, 1\\]",
        ),
        (
            "SELECT sqlml_label, 7 AS sqlml_predicted, sqlml_probs FROM wine_nb",
            Task("multiclass", (0, 1, 2)),
            "sqlml_predicted has a value that is not one of the model classes",
        ),
        (
            "SELECT sqlml_label, NULL AS sqlml_predicted FROM diabetes",
            Task("regression"),
            "sqlml_predicted is NULL",
        ),
    ],
)
def test_invalid_rows_fail_in_sql(con, scored, task, message):
    with pytest.raises(duckdb.Error, match=f"ML.EVALUATE: {message}"):
        con.execute(evaluate_sql(scored, task, "duckdb")).fetchall()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: confusion_matrix_sql("SELECT 1", Task("regression"), "duckdb"), "classification"),
        (lambda: roc_curve_sql("SELECT 1", Task("regression"), "duckdb"), "binary"),
        (lambda: roc_curve_sql("SELECT 1", Task("multiclass", (1, 2, 3)), "duckdb"), "binary"),
        (lambda: evaluate_sql("SELECT 1", Task("binary", (0, 1)), "postgres"), "dialect"),
        (lambda: evaluate_sql("SELECT 1", Task("binary", (0, 1)), "duckdb", 1.5), r"\[0, 1\]"),
        (lambda: evaluate_sql("SELECT 1", Task("binary", (0, 1)), "duckdb", -0.1), r"\[0, 1\]"),
        (lambda: evaluate_sql("SELECT 1", Task("binary", (0, 1)), "duckdb", math.nan), "0, 1"),
        (lambda: confusion_matrix_sql("SELECT 1", Task("binary", (0, 1)), "bigquery", 2), "0, 1"),
        (lambda: roc_curve_sql("SELECT 1", Task("binary", (0, 1)), "duckdb", [0.5, 1.1]), "0, 1"),
        (lambda: roc_curve_sql("SELECT 1", Task("binary", (0, 1)), "duckdb", []), "empty"),
        (lambda: evaluate_sql("SELECT 1", Task("binary"), "duckdb"), "class labels"),
        (lambda: confusion_matrix_sql("SELECT 1", Task("multiclass"), "duckdb"), "class labels"),
        (lambda: roc_curve_sql("SELECT 1", Task("binary", ()), "bigquery"), "class labels"),
        (lambda: evaluate_sql("SELECT 1", Task("binary", (0, 1, 2)), "duckdb"), "exactly 2"),
        (lambda: evaluate_sql("SELECT 1", Task("multiclass", (1, 1)), "duckdb"), "duplicate"),
        (lambda: evaluate_sql("SELECT 1", Task("multiclass", (0.5, 1.5)), "duckdb"), "int"),
        (lambda: evaluate_sql("SELECT 1", Task("multiclass", (1, "a")), "duckdb"), "int"),
        (lambda: evaluate_sql("SELECT 1", Task("clustering"), "duckdb"), "task kind"),
        (
            lambda: evaluate_sql("SELECT 1", Task("multiclass", (0, 1, 2)), "duckdb", 0.5),
            "binary",
        ),
        (lambda: evaluate_sql("SELECT 1", Task("regression"), "duckdb", 0.5), "binary"),
        (lambda: evaluate_sql("SELECT 1", Task("regression", (0, 1)), "duckdb"), "no classes"),
        (lambda: evaluate_sql("  ", Task("regression"), "duckdb"), "SELECT"),
    ],
)
def test_bad_arguments_raise_sql_compile_error(call, message):
    with pytest.raises(SqlCompileError, match=message):
        call()


def test_numpy_classes_and_threshold_are_accepted(con, cases):
    """A fitted model's classes_ (numpy scalars) can be passed as they are."""
    case = cases["cancer_lr"]
    task = Task("binary", tuple(np.array([0, 1])))
    got = one_row(con, evaluate_sql(case.sql, task, "duckdb", np.float32(0.25)))
    assert_close(got, sk_classification(case, 0.25))
    iris = cases["iris_names"]
    names = Task("multiclass", tuple(np.array(iris.task.classes)))
    want = evaluate_sql(iris.sql, iris.task, "bigquery")
    assert evaluate_sql(iris.sql, names, "bigquery") == want
