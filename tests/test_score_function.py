"""`"<model>:score"(...)`: one DOUBLE per row, beside the STRUCT function, for every model that
has one number to give (binary classifiers, regressors), whichever way the model runs."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
from conftest import PROBA_TOL
from sklearn.ensemble import GradientBoostingClassifier

from sqlml.errors import SqlCompileError


def _scores(db, function: str, columns, table: str) -> np.ndarray:
    args = ", ".join(columns)
    out = db.sql(f'SELECT "{function}"({args}) AS s FROM {table} ORDER BY id').fetchnumpy()
    return out["s"]


def test_a_binary_classifier_scores_its_positive_class_probability(
    cancer_db, cancer, cancer_lr, cancer_gb
):
    """The logistic regression runs as SQL (the score is a macro), the boosted trees on sqlml's
    tree kernel (a Python function): both give predict_proba's second column."""
    X, _ = cancer
    cancer_db.register_model("cancer_gb", cancer_gb, label="malignant", engine="runtime")
    assert cancer_db.runs_as("cancer").startswith("SQL")
    assert "tree walker" in cancer_db.runs_as("cancer_gb")
    for name, estimator in (("cancer", cancer_lr), ("cancer_gb", cancer_gb)):
        got = _scores(cancer_db, f"{name}:score", X.columns, "patients")
        assert got.dtype == np.float64
        assert np.abs(got - estimator.predict_proba(X)[:, 1]).max() < PROBA_TOL
        args = ", ".join(X.columns)
        struct = cancer_db.sql(
            f"SELECT {name}({args}).predicted_malignant_probs[2].prob AS p FROM patients "
            "ORDER BY id"
        ).fetchnumpy()["p"]
        np.testing.assert_array_equal(got, struct)  # the same number, not a near one


def test_the_score_ranks_rows_in_order_by(cancer_db, cancer, cancer_lr):
    X, _ = cancer
    args = ", ".join(X.columns)
    top = cancer_db.sql(
        f'SELECT id FROM patients ORDER BY "cancer:score"({args}) DESC, id LIMIT 5'
    ).fetchall()
    p1 = cancer_lr.predict_proba(X)[:, 1]
    assert [row[0] for row in top] == list(np.lexsort((np.arange(len(X)), -p1))[:5])


def test_a_regressor_scores_its_prediction(db, diabetes, diabetes_gb):
    X, _ = diabetes
    db.register_model("progression", diabetes_gb, label="progression")
    db.con.register("frame", X.assign(id=np.arange(len(X))))
    got = _scores(db, "progression:score", X.columns, "frame")
    np.testing.assert_allclose(got, diabetes_gb.predict(X), rtol=1e-5, atol=1e-3)


def test_a_text_model_scores_strings(db, reviews, text_model):
    db.register_model("sentiment", text_model, inputs={"review": "string"}, label="positive")
    db.con.register("frame", reviews.assign(id=np.arange(len(reviews))))
    got = _scores(db, "sentiment:score", ["review"], "frame")
    want = text_model.predict_proba(reviews["review"])[:, 1]
    assert np.abs(got - want).max() < PROBA_TOL


def test_a_multiclass_model_has_no_score_function(db, iris, iris_lr):
    X, _ = iris
    db.register_model("species", iris_lr, label="species")
    db.con.register("frame", X.assign(id=np.arange(len(X))))
    names = {
        row[0] for row in db.con.sql("SELECT function_name FROM duckdb_functions()").fetchall()
    }
    assert "species" in names and "species:score" not in names
    with pytest.raises(duckdb.CatalogException, match="species:score"):
        _scores(db, "species:score", X.columns, "frame")


def test_versions_and_aliases_have_their_score(cancer_db, cancer, cancer_lr):
    """`"name:score"` follows the newest version; `"name@N:score"` and `"name@alias:score"`
    stay on theirs, as the STRUCT functions do."""
    X, y = cancer
    newer = GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0).fit(X, y)
    cancer_db.register_model("cancer", newer, label="malignant")
    cancer_db.set_alias("cancer", "champion", 1)
    old = cancer_lr.predict_proba(X)[:, 1]
    new = newer.predict_proba(X)[:, 1]
    assert np.abs(_scores(cancer_db, "cancer:score", X.columns, "patients") - new).max() < 1e-5
    for pinned in ("cancer@1:score", "cancer@champion:score"):
        got = _scores(cancer_db, pinned, X.columns, "patients")
        assert np.abs(got - old).max() < PROBA_TOL
    assert np.abs(_scores(cancer_db, "cancer@2:score", X.columns, "patients") - new).max() < 1e-5


def test_null_inputs_give_a_null_score_and_the_other_rows_their_own(cancer_db, cancer, cancer_gb):
    X, _ = cancer
    cancer_db.register_model("cancer_gb", cancer_gb, label="malignant", engine="runtime")
    cancer_db.sql("UPDATE patients SET mean_radius = NULL WHERE id % 7 = 3")
    got = _scores(cancer_db, "cancer_gb:score", X.columns, "patients")
    missing = np.arange(len(X)) % 7 == 3
    np.testing.assert_array_equal(np.ma.getmaskarray(got), missing)  # NULL: masked
    (nulls,) = cancer_db.sql(
        f'SELECT count(*) FROM patients WHERE "cancer_gb:score"({", ".join(X.columns)}) IS NULL'
    ).fetchall()[0]
    assert nulls == missing.sum()
    want = cancer_gb.predict_proba(X[~missing])[:, 1]
    assert np.abs(np.asarray(got[~missing]) - want).max() < PROBA_TOL


def test_other_connections_get_the_score_macros_of_sql_models(cancer_db, cancer, cancer_lr):
    """A dbt cursor runs `temp_macro_statements()`: the score of a SQL model is among them."""
    X, _ = cancer
    statements = cancer_db.temp_macro_statements()
    assert set(statements) >= {"cancer", "cancer:score", "cancer@1:score"}
    cursor = cancer_db.con.cursor()
    for statement in statements.values():
        cursor.execute(statement)
    got = cursor.sql(
        f'SELECT "cancer:score"({", ".join(X.columns)}) AS s FROM patients ORDER BY id'
    ).fetchnumpy()["s"]
    assert np.abs(got - cancer_lr.predict_proba(X)[:, 1]).max() < PROBA_TOL


@pytest.mark.parametrize(
    "call", ["cancer(mean_radius, mean_texture)", '"cancer:score"(a, b)', '"cancer@1"(a, b)']
)
def test_compiling_a_model_function_for_bigquery_is_an_error_naming_ml_predict(cancer_db, call):
    """BigQuery has no such function: the compiler says so rather than emit a failing call."""
    with pytest.raises(SqlCompileError, match=r"model function .* DuckDB only.*ML\.PREDICT"):
        cancer_db.compile(f"SELECT id, {call} AS s FROM patients", dataset="analytics")
    ordinary = cancer_db.compile("SELECT id, abs(mean_radius) AS r FROM patients", dataset="d")
    assert "ABS(mean_radius)" in ordinary
