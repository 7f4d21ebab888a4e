"""Bad input at query time: a clear error naming the model/column, and nothing changed."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
from conftest import PROBA_TOL

from sqlml.errors import ArtifactError, ModelInputError, ModelNotFoundError, SqlCompileError


def test_unknown_model_version_and_alias(cancer_db):
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'churn' \(registered: cancer\)"):
        cancer_db.sql("SELECT * FROM ML.PREDICT(MODEL churn, TABLE patients)")
    no_version = r"model cancer has no version 9 \(versions: \[1\]\)"
    with pytest.raises(ModelNotFoundError, match=no_version):
        cancer_db.sql("SELECT * FROM ML.PREDICT(MODEL `cancer@9`, TABLE patients)")
    with pytest.raises(ModelNotFoundError, match="model cancer has no alias 'prod'"):
        cancer_db.predict("cancer@prod", "patients")


def test_missing_input_column_is_named(cancer_db):
    missing = r"model cancer: input column 'mean_texture' is missing"
    with pytest.raises(ModelInputError, match=missing):
        cancer_db.sql(
            "SELECT * FROM ML.PREDICT(MODEL cancer, "
            "(SELECT * EXCLUDE (mean_texture) FROM patients))"
        )


def test_wrong_column_type_is_named(cancer_db):
    with pytest.raises(
        ModelInputError, match=r"model cancer: input column 'mean_area' has type VARCHAR"
    ):
        cancer_db.sql(
            "SELECT * FROM ML.PREDICT(MODEL cancer, "
            "(SELECT * REPLACE (mean_area::VARCHAR AS mean_area) FROM patients))"
        )


def test_integer_and_decimal_columns_are_accepted(cancer_db, cancer, cancer_lr):
    X, _ = cancer
    out = cancer_db.sql(
        "SELECT probabilities FROM ML.PREDICT(MODEL cancer, "
        "(SELECT * REPLACE (mean_area::DECIMAL(12, 4) AS mean_area) FROM patients ORDER BY id))"
    ).df()
    probs = np.stack(out["probabilities"].to_numpy())
    assert np.abs(probs - cancer_lr.predict_proba(X)).max() < 1e-4  # DECIMAL rounding of inputs


def test_null_features_give_null_predictions_by_default(cancer_db, cancer, cancer_lr):
    X, _ = cancer
    out = cancer_db.sql(
        "SELECT id, label, probabilities, predicted_malignant FROM ML.PREDICT(MODEL cancer, "
        "(SELECT * REPLACE (CASE WHEN id % 7 = 0 THEN NULL ELSE mean_radius END AS mean_radius) "
        "FROM patients)) ORDER BY id"
    ).df()
    nulls = out["id"] % 7 == 0
    assert out.loc[nulls, "probabilities"].isna().all()
    assert out.loc[nulls, "predicted_malignant"].isna().all()
    kept = out.loc[~nulls]
    expected = cancer_lr.predict_proba(X)[~nulls.to_numpy()]
    assert np.abs(np.stack(kept["probabilities"].to_numpy()) - expected).max() < PROBA_TOL
    # with a threshold the NULL rows stay NULL too (not the negative class)
    thresholded = cancer_db.sql(
        "SELECT id, predicted_malignant FROM ML.PREDICT(MODEL cancer, "
        "(SELECT * REPLACE (CASE WHEN id % 7 = 0 THEN NULL ELSE mean_radius END AS mean_radius) "
        "FROM patients), STRUCT(0.3 AS threshold)) ORDER BY id"
    ).df()
    assert thresholded.loc[nulls.to_numpy(), "predicted_malignant"].isna().all()


def test_null_policy_error_names_the_column(db, cancer, cancer_lr):
    X, _ = cancer
    db.register_model("strict", cancer_lr, nulls="error")
    db.con.register("frame", X.assign(id=np.arange(len(X))))
    query = (
        "SELECT * FROM ML.PREDICT(MODEL strict, (SELECT * REPLACE "
        "(CASE WHEN id = 3 THEN NULL ELSE worst_area END AS worst_area) FROM frame))"
    )
    with pytest.raises(duckdb.Error, match=r"model strict@1: input column 'worst_area' has NULL"):
        db.sql(query).fetchall()
    # the connection stays usable after the failed query
    assert db.sql("SELECT count(*) FROM frame").fetchall() == [(len(X),)]


def test_null_policy_nan_feeds_missing_values_to_the_model(db, cancer):
    """HistGradientBoosting handles NaN itself: nulls='nan' lets it see missing values."""
    from sklearn.ensemble import RandomForestClassifier

    X, y = cancer
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    db.register_model("forest", model, nulls="nan")
    db.con.register("frame", X)
    out = db.sql("SELECT * FROM ML.PREDICT(MODEL forest, TABLE frame)").df()
    assert out["probabilities"].notna().all()


def test_null_policy_nan_scores_a_null_string_as_the_empty_category(db, reviews, text_model):
    db.register_model("sentiment", text_model, inputs={"review": "string"}, nulls="nan")
    texts = reviews["review"].where(reviews.index != 3)
    db.con.register("frame", reviews.assign(review=texts))
    out = db.sql("SELECT probabilities FROM ML.PREDICT(MODEL sentiment, TABLE frame)").fetchall()
    expected = text_model.predict_proba(texts.fillna(""))
    np.testing.assert_allclose([r[0] for r in out], expected, atol=PROBA_TOL)


def test_null_policy_nan_refuses_a_null_integer_naming_model_and_column(db):
    from sklearn.linear_model import LinearRegression

    X = np.arange(20, dtype=np.int64).reshape(-1, 1)
    db.register_model("counts", LinearRegression().fit(X, X[:, 0] * 2.0), inputs={"n": "int64"},
                      nulls="nan")  # fmt: skip
    with pytest.raises(duckdb.Error, match=r"model counts@1: input column 'n' has NULL"):
        db.sql("SELECT * FROM ML.PREDICT(MODEL counts, (SELECT NULL::BIGINT AS n))").fetchall()


def test_threshold_and_option_errors(db, iris, iris_lr, cancer_db):
    X, _ = iris
    db.register_model("species", iris_lr, label="species")
    db.con.register("iris_frame", X)
    with pytest.raises(SqlCompileError, match="threshold applies to binary classifiers"):
        db.sql(
            "SELECT * FROM ML.PREDICT(MODEL species, TABLE iris_frame, STRUCT(0.5 AS threshold))"
        )
    with pytest.raises(SqlCompileError, match=r"unknown option\(s\) \['treshold'\]"):
        cancer_db.sql(
            "SELECT * FROM ML.PREDICT(MODEL cancer, TABLE patients, STRUCT(0.5 AS treshold))"
        )
    with pytest.raises(SqlCompileError, match=r"threshold must be in \[0, 1\]"):
        cancer_db.sql(
            "SELECT * FROM ML.PREDICT(MODEL cancer, TABLE patients, STRUCT(1.5 AS threshold))"
        )


def test_unparseable_ml_sql_and_qualified_model_names(cancer_db):
    with pytest.raises(SqlCompileError, match=r"cannot parse SQL: line 1, col 52") as error:
        cancer_db.sql("SELECT * FROM ML.PREDICT(MODEL cancer, (SELECT FROM))")
    assert "\x1b" not in str(error.value) and "TokenType" not in str(error.value)
    with pytest.raises(SqlCompileError, match="write the bare model name"):
        cancer_db.sql("SELECT * FROM ML.PREDICT(MODEL mydataset.cancer, TABLE patients)")


def test_scalar_function_wrong_argument_types_name_the_model(cancer_db):
    with pytest.raises(duckdb.Error, match="cancer"):
        cancer_db.sql("SELECT cancer('a', 'b') FROM patients").fetchall()


def test_a_classifier_without_predict_proba_is_refused_with_the_fix(db, cancer):
    """LinearSVC's ONNX output would be decision scores under the name `probabilities`: refuse
    it, register nothing, and name the way out (a calibrated wrapper, which then works)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    X, y = cancer
    svm = make_pipeline(StandardScaler(), LinearSVC()).fit(X, y)
    with pytest.raises(ArtifactError, match="LinearSVC .*without predict_proba.*Calibrated"):
        db.register_model("svm", svm, label="malignant")
    assert db.con.sql("SELECT count(*) FROM sqlml.model_versions").fetchall() == [(0,)]
    calibrated = make_pipeline(StandardScaler(), CalibratedClassifierCV(LinearSVC())).fit(X, y)
    db.register_model("svm", calibrated, label="malignant")
    db.con.register("frame", X)
    got = db.sql(f'SELECT "svm:score"({", ".join(X.columns)}) AS p FROM frame').fetchnumpy()["p"]
    assert np.abs(got - calibrated.predict_proba(X)[:, 1]).max() < PROBA_TOL
