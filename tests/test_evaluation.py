"""ML.EVALUATE / CONFUSION_MATRIX / ROC_CURVE / TOP_K / MONITOR end to end: real models in a
DuckDB file, numbers compared with sklearn.metrics and pandas; BigQuery output parsed."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
import sqlglot
from sklearn import metrics as skm

from sqlml.errors import ModelInputError, SqlCompileError

TOL = 1e-6


def scored(db, model: str, table: str, label: str):
    """Labels and the probabilities sqlml itself computed (so only the metric SQL is tested)."""
    out = db.sql(
        f"SELECT {label} AS y, predicted_{label} AS p, "
        f"list_transform(predicted_{label}_probs, x -> x.prob) AS probs "
        f"FROM ML.PREDICT(MODEL {model}, TABLE {table}) ORDER BY id"
    ).df()
    return out["y"].to_numpy(), out["p"].to_numpy(), np.stack(out["probs"].to_numpy())


def test_evaluate_binary_matches_sklearn(cancer_db):
    db = cancer_db
    y, _, probs = scored(db, "cancer", "patients", "malignant")
    for threshold in (None, 0.9):
        option = "" if threshold is None else f", STRUCT({threshold} AS threshold)"
        row = db.sql(f"SELECT * FROM ML.EVALUATE(MODEL cancer, TABLE patients{option})").df()
        assert list(row.columns) == [
            "precision", "recall", "accuracy", "f1_score", "log_loss", "roc_auc",
        ]  # fmt: skip
        predicted = (probs[:, 1] > (threshold or 0.5)).astype(int)
        expected = {
            "precision": skm.precision_score(y, predicted),
            "recall": skm.recall_score(y, predicted),
            "accuracy": skm.accuracy_score(y, predicted),
            "f1_score": skm.f1_score(y, predicted),
            "log_loss": skm.log_loss(y, probs),
            "roc_auc": skm.roc_auc_score(y, probs[:, 1]),
        }
        for name, value in expected.items():
            assert row[name][0] == pytest.approx(value, abs=TOL), (threshold, name)


def test_evaluate_and_confusion_matrix_multiclass_string_labels(db, iris, iris_lr):
    X, y = iris
    names = y.map({0: "setosa", 1: "versicolor", 2: "virginica"})
    db.con.register("f", X.assign(id=np.arange(len(X)), species=names))
    db.sql("CREATE TABLE flowers AS SELECT * FROM f")
    db.register_model("iris", iris_lr, label="species")
    truth, predicted, probs = scored(db, "iris", "flowers", "species")
    assert (truth != predicted).any()  # not a trivial evaluation
    row = db.sql("SELECT * FROM ML.EVALUATE(MODEL iris, TABLE flowers)").df()
    classes = ["setosa", "versicolor", "virginica"]
    expected = {
        "precision": skm.precision_score(truth, predicted, average="macro"),
        "recall": skm.recall_score(truth, predicted, average="macro"),
        "accuracy": skm.accuracy_score(truth, predicted),
        "f1_score": skm.f1_score(truth, predicted, average="macro"),
        "log_loss": skm.log_loss(truth, probs, labels=classes),
        "roc_auc": skm.roc_auc_score(truth, probs, multi_class="ovr", labels=classes),
    }
    for name, value in expected.items():
        assert row[name][0] == pytest.approx(value, abs=TOL), name
    matrix = db.sql("SELECT * FROM ML.CONFUSION_MATRIX(MODEL iris, TABLE flowers)").df()
    assert list(matrix["expected_label"]) == classes
    counts = matrix.drop(columns="expected_label").to_numpy()
    np.testing.assert_array_equal(counts, skm.confusion_matrix(truth, predicted, labels=classes))


def test_evaluate_regression_matches_sklearn(db, diabetes, diabetes_gb):
    X, y = diabetes
    db.con.register("f", X.assign(id=np.arange(len(X)), progression=y.to_numpy()))
    db.sql("CREATE TABLE d AS SELECT * FROM f")
    db.register_model("diab", diabetes_gb, label="progression")
    out = db.sql(
        "SELECT progression, predicted_progression FROM ML.PREDICT(MODEL diab, TABLE d)"
    ).df()
    truth, predicted = out["progression"].to_numpy(), out["predicted_progression"].to_numpy()
    row = db.sql("SELECT * FROM ML.EVALUATE(MODEL diab, TABLE d)").df()
    expected = {
        "mean_absolute_error": skm.mean_absolute_error(truth, predicted),
        "mean_squared_error": skm.mean_squared_error(truth, predicted),
        "mean_squared_log_error": skm.mean_squared_log_error(truth, predicted),
        "median_absolute_error": skm.median_absolute_error(truth, predicted),
        "r2_score": skm.r2_score(truth, predicted),
        "explained_variance": skm.explained_variance_score(truth, predicted),
    }
    assert list(row.columns) == list(expected)
    for name, value in expected.items():
        assert row[name][0] == pytest.approx(value, rel=1e-9, abs=TOL), name
    with pytest.raises(SqlCompileError, match="regression model"):
        db.sql("SELECT * FROM ML.CONFUSION_MATRIX(MODEL diab, TABLE d)")


def test_roc_curve_with_thresholds(cancer_db):
    db = cancer_db
    y, _, probs = scored(db, "cancer", "patients", "malignant")
    curve = db.sql(
        "SELECT * FROM ML.ROC_CURVE(MODEL cancer, TABLE patients, [0.2, 0.5, 0.8]) "
        "ORDER BY threshold"
    ).df()
    assert list(curve["threshold"]) == pytest.approx([0.2, 0.5, 0.8])
    positives = y == 1
    for _, row in curve.iterrows():
        hit = probs[:, 1] > row["threshold"]  # positive when above the threshold (sqlml.metrics)
        tp, fp = row["true_positives"], row["false_positives"]
        assert tp == (hit & positives).sum() and fp == (hit & ~positives).sum()
        assert tp + row["false_negatives"] == positives.sum()
        assert fp + row["true_negatives"] == (~positives).sum()
        assert row["recall"] == pytest.approx(tp / positives.sum(), abs=TOL)
        assert row["false_positive_rate"] == pytest.approx(fp / (~positives).sum(), abs=TOL)


def test_tensorflow_model_evaluates(db, cancer):
    """A SavedModel (sigmoid output) registered with classes: the same metrics as sklearn."""
    X, y = cancer
    db.con.register("f", X.assign(id=np.arange(len(X)), malignant=y.to_numpy()))
    db.sql("CREATE TABLE patients AS SELECT * FROM f")
    db.register_model("nn", "models/cancer_nn", label="malignant", classes=[0, 1])
    truth, _, probs = scored(db, "nn", "patients", "malignant")
    row = db.sql("SELECT * FROM ML.EVALUATE(MODEL nn, TABLE patients)").df()
    assert row["roc_auc"][0] == pytest.approx(skm.roc_auc_score(truth, probs[:, 1]), abs=TOL)
    assert row["accuracy"][0] == pytest.approx(
        skm.accuracy_score(truth, (probs[:, 1] > 0.5).astype(int)), abs=TOL
    )


def test_evaluation_bad_input(cancer_db):
    db = cancer_db
    with pytest.raises(ModelInputError, match="label column 'malignant' is missing"):
        db.sql("SELECT * FROM ML.EVALUATE(MODEL cancer, (SELECT * EXCLUDE (malignant) "
               "FROM patients))")  # fmt: skip
    with pytest.raises(ModelInputError, match="label column 'malignant' has type VARCHAR"):
        db.sql("SELECT * FROM ML.EVALUATE(MODEL cancer, (SELECT * REPLACE "
               "(CAST(malignant AS VARCHAR) AS malignant) FROM patients))")  # fmt: skip
    with pytest.raises(Exception, match="empty"):
        db.sql("SELECT * FROM ML.EVALUATE(MODEL cancer, (SELECT * FROM patients WHERE false))"
               ).fetchall()  # fmt: skip
    with pytest.raises(SqlCompileError, match="unknown option"):
        db.sql("SELECT * FROM ML.EVALUATE(MODEL cancer, TABLE patients, STRUCT(1 AS k))")
    with pytest.raises(Exception, match="unknown model 'nope'"):
        db.sql("SELECT * FROM ML.EVALUATE(MODEL nope, TABLE patients)")
    # an explicit label option names a differently named ground-truth column
    db.sql("CREATE TABLE relabeled AS SELECT * RENAME (malignant AS truth) FROM patients")
    a = db.sql("SELECT * FROM ML.EVALUATE(MODEL cancer, TABLE patients)").fetchall()
    b = db.sql("SELECT * FROM ML.EVALUATE(MODEL cancer, TABLE relabeled, "
               "STRUCT('truth' AS label))").fetchall()  # fmt: skip
    assert a == b
    with pytest.raises(duckdb.Error, match=r"label column 'truth' has a value that is not one"):
        db.sql("SELECT * FROM ML.EVALUATE(MODEL cancer, (SELECT * REPLACE (truth + 5 AS truth) "
               "FROM relabeled), STRUCT('truth' AS label))").fetchall()  # fmt: skip


def test_evaluation_compiles_to_plain_bigquery_sql(cancer_db):
    db = cancer_db
    for query in (
        "SELECT * FROM ML.EVALUATE(MODEL cancer, TABLE patients, STRUCT(0.3 AS threshold))",
        "SELECT * FROM ML.CONFUSION_MATRIX(MODEL cancer, (SELECT * FROM patients))",
        "SELECT * FROM ML.ROC_CURVE(MODEL cancer, TABLE patients, GENERATE_ARRAY(0.1, 0.9, 0.2))",
        "SELECT * FROM ML.TOP_K(MODEL cancer, TABLE patients, STRUCT(3 AS k))",
    ):
        sql = db.compile(query, dataset="analytics")
        tree = sqlglot.parse_one(sql, read="bigquery")
        predicts = list(tree.find_all(sqlglot.exp.Predict))
        assert len(predicts) == 1 and predicts[0].this.sql("bigquery") == "`analytics.cancer`"
        for native in ("ML.EVALUATE", "ML.CONFUSION_MATRIX", "ML.ROC_CURVE", "ML.TOP_K"):
            assert f"{native}(" not in sql.upper()
        assert "list_transform" not in sql.lower()
    top_k = db.compile("SELECT * FROM ML.TOP_K(MODEL cancer, TABLE patients, STRUCT(3 AS k))")
    assert "QUALIFY ROW_NUMBER() OVER (" in " ".join(top_k.split())


# -- ranking -----------------------------------------------------------------------------------


def test_top_k_per_group_matches_pandas(cancer_db, cancer_lr, cancer):
    db = cancer_db
    X, _ = cancer
    db.sql("CREATE TABLE candidates AS SELECT *, id % 7 AS user_id FROM patients")
    got = db.sql(
        "SELECT user_id, id, rank, score FROM ML.TOP_K(MODEL cancer, TABLE candidates, "
        "STRUCT(5 AS k, 'user_id' AS partition_by, ['id'] AS order_by)) ORDER BY user_id, rank"
    ).df()
    scores = db.sql(
        "SELECT id, id % 7 AS user_id, predicted_malignant_probs[2].prob AS score "
        "FROM ML.PREDICT(MODEL cancer, TABLE patients)"
    ).df()
    expected = (
        scores.sort_values(["user_id", "score", "id"], ascending=[True, False, True])
        .groupby("user_id")
        .head(5)
    )
    assert len(got) == 35
    np.testing.assert_array_equal(got["id"].to_numpy(), expected["id"].to_numpy())
    assert list(got["rank"]) == [1, 2, 3, 4, 5] * 7
    nlargest = scores.groupby("user_id")["score"].nlargest(5).to_numpy()
    np.testing.assert_allclose(got["score"].to_numpy(), nlargest, atol=TOL)
    # ties: equal scores come back ordered by the order_by column, every time
    db.sql("CREATE TABLE twins AS SELECT * REPLACE (0 AS user_id) FROM candidates "
           "WHERE id < 3 UNION ALL SELECT * REPLACE (0 AS user_id, id + 1000 AS id) "
           "FROM candidates WHERE id < 3")  # fmt: skip
    tied = db.sql(
        "SELECT id FROM ML.TOP_K(MODEL cancer, TABLE twins, STRUCT(6 AS k, "
        "'user_id' AS partition_by, 'id' AS order_by)) ORDER BY rank"
    ).fetchall()
    ids = [r[0] for r in tied]
    for small in range(3):
        assert ids.index(small) == ids.index(small + 1000) - 1


def test_top_k_bad_input(cancer_db):
    with pytest.raises(SqlCompileError, match="k must be a positive integer"):
        cancer_db.sql("SELECT * FROM ML.TOP_K(MODEL cancer, TABLE patients, STRUCT(0 AS k))")
    with pytest.raises(ModelInputError, match="column 'nope' is missing"):
        cancer_db.sql(
            "SELECT * FROM ML.TOP_K(MODEL cancer, TABLE patients, STRUCT(2 AS k, "
            "'nope' AS partition_by))"
        )


# -- versions in SQL -----------------------------------------------------------------------------


def test_alias_moves_in_sql_and_versions_side_by_side(cancer_db, cancer_gb):
    db = cancer_db
    db.register_model("cancer", cancer_gb, label="malignant")
    moved = db.sql("ALTER MODEL cancer SET ALIAS champion = 2").fetchall()
    assert moved == [("cancer", "champion", 2)]
    assert db.model("cancer@champion").version == 2
    db.sql("ALTER MODEL cancer SET ALIAS champion TO VERSION 1")  # rollback
    assert db.model("cancer@champion").version == 1
    side_by_side = db.sql(
        "SELECT 1 AS version, * FROM ML.EVALUATE(MODEL `cancer@1`, TABLE patients) "
        "UNION ALL SELECT 2, * FROM ML.EVALUATE(MODEL `cancer@2`, TABLE patients) ORDER BY 1"
    ).df()
    assert len(side_by_side) == 2 and side_by_side["roc_auc"].between(0.9, 1).all()
    assert side_by_side["log_loss"][0] != side_by_side["log_loss"][1]
    db.sql("ALTER MODEL cancer DROP ALIAS champion")
    assert db.registry.aliases("cancer") == {}
    with pytest.raises(SqlCompileError, match="expected ALTER MODEL <name> SET ALIAS"):
        db.sql("ALTER MODEL cancer SET ALIAS champion")
    with pytest.raises(Exception, match="has no version 9"):
        db.sql("ALTER MODEL cancer SET ALIAS champion = 9")
    with pytest.raises(SqlCompileError, match="no BigQuery form"):
        db.compile("ALTER MODEL cancer SET ALIAS champion = 2")


# -- continuous evaluation ------------------------------------------------------------------------


def test_prediction_log_ground_truth_and_monitor(cancer_db, cancer_gb):
    db = cancer_db
    db.log_predictions("cancer", 0.5, key="id")
    db.sql("CREATE TABLE scores AS SELECT * FROM ML.PREDICT(MODEL cancer, TABLE patients)")
    db.register_model("cancer", cancer_gb, label="malignant")  # version 2 on the same traffic
    db.sql("CREATE TABLE scores2 AS SELECT * FROM ML.PREDICT(MODEL cancer, TABLE patients)")
    log = db.sql("SELECT version, key, inputs, outputs, ground_truth FROM sqlml.prediction_log"
                 " ORDER BY version, key::INT").df()  # fmt: skip
    per_version = log.groupby("version")["key"].apply(list)
    assert per_version[1] == per_version[2]  # the hash of the key samples the same rows
    assert 0.35 * 569 < len(per_version[1]) < 0.65 * 569
    assert log["ground_truth"].isna().all()
    # ground truth arrives later, by key
    db.sql(
        "UPDATE sqlml.prediction_log SET ground_truth = to_json(p.malignant), "
        "ground_truth_at = current_timestamp FROM patients p "
        "WHERE prediction_log.model = 'cancer' AND prediction_log.key = CAST(p.id AS VARCHAR)"
    )
    report = db.sql(
        "SELECT * FROM ML.MONITOR(MODEL cancer, STRUCT('roc_auc' AS metric, 0.999 AS min_value))"
    ).df()
    assert set(report["window"]) == {"day", "week", "month", "all"}
    truth = db.sql("SELECT id, malignant FROM patients").df().set_index("id")["malignant"]
    for version in (1, 2):
        rows = db.sql(
            f"SELECT key::INT AS id, (outputs->>'$.predicted_malignant_probs[1].prob')::DOUBLE "
            f"AS p FROM sqlml.prediction_log WHERE version = {version}"
        ).df()
        auc = skm.roc_auc_score(truth[rows["id"]].to_numpy(), rows["p"].to_numpy())
        got = report[(report.version == version) & (report.window == "all")].iloc[0]
        assert got["roc_auc"] == pytest.approx(auc, abs=TOL)
        assert got["labeled_rows"] == len(rows)
        assert got["is_alert"] == (auc < 0.999)
    with pytest.raises(ModelInputError, match="key column 'id'"):
        db.sql("SELECT * FROM ML.PREDICT(MODEL cancer, (SELECT * EXCLUDE (id) FROM patients))")
    db.log_predictions("cancer", 0, key="id")  # off
    before = db.sql("SELECT count(*) FROM sqlml.prediction_log").fetchall()
    db.sql("CREATE TABLE scores3 AS SELECT * FROM ML.PREDICT(MODEL cancer, TABLE patients)")
    assert db.sql("SELECT count(*) FROM sqlml.prediction_log").fetchall() == before


def test_top_k_keeps_frame_shape_on_many_groups(cancer_db):
    """Every group with fewer than k rows returns all its rows."""
    db = cancer_db
    db.sql("CREATE TABLE c2 AS SELECT *, id AS user_id FROM patients")
    n = db.sql("SELECT count(*) FROM ML.TOP_K(MODEL cancer, TABLE c2, STRUCT(3 AS k, "
               "'user_id' AS partition_by))").fetchall()[0][0]  # fmt: skip
    assert n == 569


# -- training statistics, skew and drift ----------------------------------------------------------


def test_feature_info_skew_and_drift_in_sql(db, cancer, cancer_lr):
    """Statistics stored at registration; a shifted feature is flagged, a resample is not."""
    X, y = cancer
    rng = np.random.default_rng(0)
    db.con.register("f", X)
    db.sql("CREATE TABLE train AS SELECT * FROM f")
    resample = X.iloc[rng.integers(0, len(X), len(X))]
    db.con.register("r", resample)
    db.sql("CREATE TABLE same AS SELECT * FROM r")
    db.sql("CREATE TABLE shifted AS SELECT * REPLACE (mean_radius + 3 * 3.5 AS mean_radius) "
           "FROM same")  # fmt: skip
    db.register_model("cancer", cancer_lr, label="malignant", training_data="train")
    info = db.sql("SELECT * FROM ML.FEATURE_INFO(MODEL cancer) ORDER BY input").df()
    assert len(info) == X.shape[1]
    row = info.set_index("input").loc["mean_radius"]
    assert row["mean"] == pytest.approx(X["mean_radius"].astype("float64").mean(), rel=1e-6)
    assert row["max"] == pytest.approx(X["mean_radius"].max(), rel=1e-6)
    assert row["null_count"] == 0
    calm = db.sql("SELECT * FROM ML.VALIDATE_DATA_SKEW(MODEL cancer, TABLE same)").df()
    assert list(calm.columns)[:5] == ["input", "metric", "threshold", "value", "is_anomaly"]
    assert not calm["is_anomaly"].any()
    skewed = db.sql("SELECT * FROM ML.VALIDATE_DATA_SKEW(MODEL cancer, TABLE shifted)").df()
    assert set(skewed[skewed["is_anomaly"]]["input"]) == {"mean_radius"}
    drift = db.sql(
        "SELECT * FROM ML.VALIDATE_DATA_DRIFT(TABLE train, TABLE shifted, "
        "STRUCT(0.3 AS numerical_default_threshold))"
    ).df()
    assert "mean_radius" in set(drift[drift["is_anomaly"]]["input"])
    strict = db.sql(
        "SELECT input, threshold, is_anomaly FROM ML.VALIDATE_DATA_SKEW(MODEL cancer, "
        "TABLE same, STRUCT([('mean_texture', 0.0001)] AS thresholds)) "
        "WHERE input = 'mean_texture'"
    ).fetchall()
    assert strict[0][1] == pytest.approx(0.0001) and strict[0][2]  # a per-column override
    compiled = db.compile("SELECT * FROM ML.VALIDATE_DATA_SKEW(MODEL cancer, TABLE shifted)")
    sqlglot.parse_one(compiled, read="bigquery")
    with pytest.raises(SqlCompileError, match="no training statistics"):
        db.register_model("bare", cancer_lr, label="malignant")
        db.sql("SELECT * FROM ML.FEATURE_INFO(MODEL bare)")
    db.drop_model("cancer")
    assert db.sql("SELECT count(*) FROM sqlml.feature_stats").fetchall() == [(0,)]
