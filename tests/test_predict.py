"""ML.PREDICT and the scalar-function form on DuckDB, compared with scikit-learn itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import PROBA_TOL

FEATURES = "mean_radius, mean_texture"


def probs_matrix(frame: pd.DataFrame, column: str = "probabilities") -> np.ndarray:
    return np.stack(frame[column].to_numpy())


def test_predict_matches_sklearn_and_passes_columns_through(cancer_db, cancer, cancer_lr):
    X, _ = cancer
    out = cancer_db.sql(
        "SELECT * FROM ML.PREDICT(MODEL cancer, (SELECT * FROM patients)) ORDER BY id"
    ).df()
    # every input column passes through unchanged, then the model's outputs
    assert list(out.columns[: X.shape[1] + 2]) == [*X.columns, "id", "malignant"]
    assert list(out.columns[X.shape[1] + 2 :]) == [
        "label",
        "probabilities",
        "predicted_malignant",
        "predicted_malignant_probs",
    ]
    np.testing.assert_array_equal(out[X.columns].to_numpy(), X.to_numpy())
    expected = cancer_lr.predict_proba(X)
    assert np.abs(probs_matrix(out) - expected).max() < PROBA_TOL
    np.testing.assert_array_equal(out["predicted_malignant"], cancer_lr.predict(X))
    first = out["predicted_malignant_probs"].iloc[0]
    assert [entry["label"] for entry in first] == [0, 1]
    assert first[1]["prob"] == pytest.approx(expected[0, 1], abs=PROBA_TOL)


def test_table_form_threshold_and_alias(cancer_db, cancer, cancer_lr):
    X, _ = cancer
    p1 = cancer_lr.predict_proba(X)[:, 1]
    out = cancer_db.sql(
        "SELECT id, predicted_malignant FROM "
        "ML.PREDICT(MODEL cancer, TABLE patients, STRUCT(0.9 AS threshold)) AS p ORDER BY id"
    ).df()
    np.testing.assert_array_equal(out["predicted_malignant"], (p1 > 0.9).astype(int))
    duck_style = cancer_db.sql(
        "SELECT predicted_malignant FROM "
        "ML.PREDICT(MODEL cancer, TABLE patients, {'threshold': 0.1}) ORDER BY id"
    ).df()
    np.testing.assert_array_equal(duck_style["predicted_malignant"], (p1 > 0.1).astype(int))


def test_multiclass_string_labels(db, iris, iris_lr):
    X, _ = iris
    db.register_model("species", iris_lr, label="species")
    db.con.register("iris_frame", X.assign(id=np.arange(len(X))))
    out = db.sql(
        "SELECT id, probabilities, predicted_species, predicted_species_probs "
        "FROM ML.PREDICT(MODEL species, (SELECT * FROM iris_frame)) ORDER BY id"
    ).df()
    assert np.abs(probs_matrix(out) - iris_lr.predict_proba(X)).max() < PROBA_TOL
    np.testing.assert_array_equal(out["predicted_species"], iris_lr.predict(X))
    labels = [e["label"] for e in out["predicted_species_probs"].iloc[0]]
    assert labels == ["setosa", "versicolor", "virginica"]


def test_regressor_predicted_column(db, diabetes, diabetes_gb):
    X, _ = diabetes
    db.register_model("progression", diabetes_gb, label="progression")
    db.con.register("patients_frame", X.assign(id=np.arange(len(X))))
    out = db.sql(
        "SELECT id, predicted_progression FROM "
        "ML.PREDICT(MODEL progression, TABLE patients_frame) ORDER BY id"
    ).df()
    expected = diabetes_gb.predict(X)
    np.testing.assert_allclose(out["predicted_progression"], expected, rtol=1e-5, atol=1e-3)


def test_text_model_strings_in(db, reviews, text_model):
    db.register_model("sentiment", text_model, inputs={"review": "string"}, label="positive")
    db.con.register("reviews_frame", reviews.assign(id=np.arange(len(reviews))))
    out = db.sql(
        "SELECT id, review, probabilities FROM ML.PREDICT(MODEL sentiment, TABLE reviews_frame) "
        "ORDER BY id"
    ).df()
    expected = text_model.predict_proba(reviews["review"])
    assert np.abs(probs_matrix(out) - expected).max() < PROBA_TOL
    assert list(out["review"]) == list(reviews["review"])


def test_gradient_boosting_single_matrix_model(db, cancer, cancer_gb):
    """A plain estimator (one matrix input in sklearn) still takes one column per feature."""
    X, y = cancer
    db.register_model("cancer_gb", cancer_gb, label="malignant")
    db.con.register("frame", X)
    out = db.sql("SELECT * FROM ML.PREDICT(MODEL cancer_gb, TABLE frame)").df()
    assert np.abs(probs_matrix(out) - cancer_gb.predict_proba(X)).max() < PROBA_TOL
    np.testing.assert_array_equal(out["predicted_malignant"], cancer_gb.predict(X))


def test_scalar_function_everywhere(cancer_db, cancer, cancer_lr, tmp_path):
    X, _ = cancer
    args = ", ".join(X.columns)
    p1 = cancer_lr.predict_proba(X)[:, 1]
    db = cancer_db
    # projection + ORDER BY ... LIMIT k
    top = db.sql(
        f"SELECT id, cancer({args}).probabilities[2] AS p FROM patients ORDER BY p DESC, id LIMIT 5"
    ).fetchall()
    expected_ids = np.lexsort((np.arange(len(X)), -p1))[:5]
    assert [row[0] for row in top] == list(expected_ids)
    # WHERE
    (count,) = db.sql(
        f"SELECT count(*) FROM patients WHERE cancer({args}).predicted_malignant = 1"
    ).fetchall()[0]
    assert count == int(cancer_lr.predict(X).sum())
    # CTE + join + window function
    rows = db.sql(
        f"""WITH scored AS (SELECT id, cancer({args}).probabilities[2] AS p FROM patients)
        SELECT s.id, s.p, rank() OVER (ORDER BY s.p DESC, s.id) AS r
        FROM scored s JOIN patients t USING (id) ORDER BY s.id"""
    ).df()
    assert np.abs(rows["p"].to_numpy() - p1).max() < PROBA_TOL
    assert rows.loc[rows["r"] == 1, "id"].item() == expected_ids[0]
    # COPY ... TO
    target = tmp_path / "scores.parquet"
    db.sql(f"COPY (SELECT id, cancer({args}).probabilities[2] AS p FROM patients) TO '{target}'")
    copied = pd.read_parquet(target).sort_values("id")
    assert np.abs(copied["p"].to_numpy() - p1).max() < PROBA_TOL


def test_keyed_predictions_join_back_by_key(cancer_db, cancer, cancer_lr):
    """Score a shuffled copy and join predictions back to ground truth by key: every row."""
    X, y = cancer
    db = cancer_db
    db.sql("CREATE TABLE shuffled AS SELECT * EXCLUDE (malignant) FROM patients ORDER BY random()")
    db.sql("CREATE TABLE truth AS SELECT id, malignant FROM patients")
    joined = db.sql(
        """SELECT t.id, t.malignant, p.predicted_malignant, p.probabilities[2] AS p1
        FROM ML.PREDICT(MODEL cancer, TABLE shuffled) AS p JOIN truth t ON t.id = p.id
        ORDER BY t.id"""
    ).df()
    assert len(joined) == len(X)
    np.testing.assert_array_equal(joined["id"], np.arange(len(X)))
    np.testing.assert_array_equal(joined["malignant"], y.to_numpy())
    np.testing.assert_array_equal(joined["predicted_malignant"], cancer_lr.predict(X))
    assert np.abs(joined["p1"].to_numpy() - cancer_lr.predict_proba(X)[:, 1]).max() < PROBA_TOL


def test_python_predict_accepts_frames_relations_and_tables(cancer_db, cancer, cancer_lr):
    X, _ = cancer
    expected = cancer_lr.predict_proba(X)
    from_frame = cancer_db.predict("cancer", X).df()
    from_relation = cancer_db.predict("cancer", cancer_db.sql("SELECT * FROM patients ORDER BY id"))
    from_table = cancer_db.predict("cancer@1", "patients", threshold=0.5).df().sort_values("id")
    for frame in (from_frame, from_relation.df().sort_values("id"), from_table):
        assert np.abs(probs_matrix(frame) - expected).max() < PROBA_TOL


def test_versions_and_aliases_in_sql(cancer_db, cancer, cancer_lr, cancer_gb):
    X, _ = cancer
    db = cancer_db
    db.register_model("cancer", cancer_gb, label="malignant")  # version 2
    db.set_alias("cancer", "champion", 1)
    lr_p = cancer_lr.predict_proba(X)[:, 1]
    gb_p = cancer_gb.predict_proba(X)[:, 1]

    def p1(model: str) -> np.ndarray:
        frame = db.sql(
            f"SELECT id, probabilities[2] AS p FROM ML.PREDICT(MODEL `{model}`, TABLE patients) "
            "ORDER BY id"
        ).df()
        return frame["p"].to_numpy()

    assert np.abs(p1("cancer") - gb_p).max() < PROBA_TOL  # newest version
    assert np.abs(p1("cancer@1") - lr_p).max() < PROBA_TOL
    assert np.abs(p1("cancer@champion") - lr_p).max() < PROBA_TOL
    db.set_alias("cancer", "champion", 2)
    assert np.abs(p1("cancer@champion") - gb_p).max() < PROBA_TOL
    # scalar forms: "name@alias" and "name@version" (double-quoted in DuckDB)
    args = ", ".join(X.columns)
    side_by_side = db.sql(
        f'SELECT "cancer@1"({args}).probabilities[2] AS v1, '
        f'"cancer@champion"({args}).probabilities[2] AS champ FROM patients ORDER BY id'
    ).df()
    assert np.abs(side_by_side["v1"].to_numpy() - lr_p).max() < PROBA_TOL
    assert np.abs(side_by_side["champ"].to_numpy() - gb_p).max() < PROBA_TOL
    db.set_alias("cancer", "champion", 1)  # rollback
    assert np.abs(p1("cancer@champion") - lr_p).max() < PROBA_TOL


def test_nested_predict_and_create_table_as(cancer_db, cancer, cancer_lr):
    X, _ = cancer
    db = cancer_db
    db.sql(
        "CREATE TABLE scored AS SELECT id, predicted_malignant FROM ML.PREDICT(MODEL cancer, "
        "(SELECT * FROM patients WHERE id < 100))"
    )
    rows = db.sql("SELECT id, predicted_malignant FROM scored ORDER BY id").df()
    np.testing.assert_array_equal(rows["predicted_malignant"], cancer_lr.predict(X.iloc[:100]))


def test_sql_macros_from_udfs_folder(cancer_db, cancer, cancer_lr):
    X, _ = cancer
    out = cancer_db.sql(
        "SELECT ml_prob(predicted_malignant_probs, 1) AS p1, "
        "ml_top_label(predicted_malignant_probs) AS top, predicted_malignant "
        "FROM ML.PREDICT(MODEL cancer, TABLE patients) ORDER BY id"
    ).df()
    assert np.abs(out["p1"].to_numpy() - cancer_lr.predict_proba(X)[:, 1]).max() < PROBA_TOL
    np.testing.assert_array_equal(out["top"], out["predicted_malignant"])


@pytest.mark.parametrize("engine", ["sql", "runtime"])
def test_boolean_columns_feed_numeric_inputs_as_0_and_1(db, engine):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    X = np.column_stack([rng.random(200), rng.random(200) > 0.5]).astype(np.float32)
    model = LogisticRegression().fit(X, (X[:, 0] + X[:, 1] > 1).astype(int))
    db.register_model("flagged", model, inputs={"score": "float32", "flag": "float32"})
    db.con.register("frame", pd.DataFrame({"score": X[:, 0], "flag": X[:, 1].astype(bool)}))
    db.sql("CREATE TABLE t AS SELECT * FROM frame")
    options = f"STRUCT('{engine}' AS engine)"
    rows = db.sql(
        f"SELECT probabilities FROM ML.PREDICT(MODEL flagged, TABLE t, {options})"
    ).fetchall()
    np.testing.assert_allclose([r[0] for r in rows], model.predict_proba(X), atol=PROBA_TOL)
    scalar = db.sql("SELECT flagged(score, flag).probabilities FROM t").fetchall()
    np.testing.assert_allclose([r[0] for r in scalar], model.predict_proba(X), atol=PROBA_TOL)
