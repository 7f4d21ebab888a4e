"""Evaluation and drift reports, their pictures, and `sqlml evaluate` / `sqlml drift`: numbers
checked against sklearn, numpy and scipy; pictures read back as real PNG images."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread
from scipy.spatial.distance import jensenshannon
from sklearn import metrics as skm

from sqlml import plots, reports
from sqlml.cli import main
from sqlml.errors import ModelInputError, SqlmlError

TOL = 1e-9


def picture(path) -> np.ndarray:
    """The image, after checking it is a real, non-blank PNG."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] >= 380 and image.shape[1] >= 520
    assert image[..., :3].std() > 0.05  # something is drawn
    return image


@pytest.fixture
def shifted_db(db, cancer, cancer_lr):
    """The cancer model with training statistics; `same` is a resample, `shifted` moves
    mean_radius by three standard deviations; a categorical `city` gains an unseen value."""
    X, y = cancer
    rng = np.random.default_rng(0)
    cities = np.where(np.arange(len(X)) % 3 == 0, "paris", "rome")
    db.con.register("f", X.assign(malignant=y.to_numpy(), city=cities))
    db.sql("CREATE TABLE train AS SELECT * FROM f")
    db.con.register("r", X.iloc[rng.integers(0, len(X), len(X))].assign(city=cities))
    db.sql("CREATE TABLE same AS SELECT * FROM r")
    db.sql(
        "CREATE TABLE shifted AS SELECT * REPLACE (mean_radius + 10.5 AS mean_radius, "
        "CASE WHEN mean_area > 550 THEN 'oslo' ELSE city END AS city) FROM same"
    )
    training = "SELECT * EXCLUDE (malignant, city) FROM train"
    db.register_model("cancer", cancer_lr, label="malignant", training_data=training)
    return db


# -- evaluation ----------------------------------------------------------------------------------


def test_binary_report_matches_sql_and_sklearn(cancer_db, tmp_path):
    db = cancer_db
    report = reports.evaluation_report(db, "cancer", reports.source_sql(table="patients"))
    frame = db.sql(
        "SELECT malignant AS y, predicted_malignant AS p FROM ML.PREDICT(MODEL cancer, "
        "TABLE patients)"
    ).df()
    assert report.task == "binary" and report.classes == [0, 1]
    np.testing.assert_array_equal(report.confusion, skm.confusion_matrix(frame["y"], frame["p"]))
    sql_row = db.sql("SELECT * FROM ML.EVALUATE(MODEL cancer, TABLE patients)").df().iloc[0]
    assert report.metrics == pytest.approx(sql_row.to_dict(), abs=TOL)
    fpr = [r["false_positive_rate"] for r in report.roc]
    assert fpr == sorted(fpr) and len(report.roc) == 101  # default: percentile thresholds
    image = picture(plots.plot_evaluation(report, tmp_path / "eval.png"))
    assert image.shape[:2] == (520, 1200)  # 12 x 5.2 inches at 100 dpi


def test_threshold_and_label_reach_the_report(cancer_db):
    db = cancer_db
    db.sql("CREATE TABLE p2 AS SELECT * RENAME (malignant AS truth) FROM patients")
    source = reports.source_sql(query="SELECT * FROM p2")
    report = reports.evaluation_report(db, "cancer", source, label="truth", threshold=0.95)
    frame = db.sql(
        "SELECT truth, predicted_malignant_probs[2].prob AS p1 FROM ML.PREDICT(MODEL cancer, "
        "TABLE p2)"
    ).df()
    expected = skm.confusion_matrix(frame["truth"], (frame["p1"] > 0.95).astype(int))
    np.testing.assert_array_equal(report.confusion, expected)
    assert report.metrics["recall"] == pytest.approx(expected[1, 1] / expected[1].sum(), abs=TOL)


def test_multiclass_and_regression_reports(db, iris, iris_lr, diabetes, diabetes_gb, tmp_path):
    X, y = iris
    names = y.map({0: "setosa", 1: "versicolor", 2: "virginica"})
    db.con.register("f", X.assign(species=names))
    db.sql("CREATE TABLE flowers AS SELECT * FROM f")
    db.register_model("iris", iris_lr, label="species")
    report = reports.evaluation_report(db, "iris", reports.source_sql(table="flowers"))
    classes = ["setosa", "versicolor", "virginica"]
    assert report.task == "multiclass" and report.classes == classes and report.roc is None
    expected = skm.confusion_matrix(names, iris_lr.predict(X), labels=classes)
    np.testing.assert_array_equal(report.confusion, expected)
    picture(plots.plot_evaluation(report, tmp_path / "iris.png"))

    X, y = diabetes
    db.con.register("g", X.assign(progression=y.to_numpy()))
    db.sql("CREATE TABLE d AS SELECT * FROM g")
    db.register_model("diab", diabetes_gb, label="progression")
    report = reports.evaluation_report(db, "diab", reports.source_sql(table="d"))
    assert report.task == "regression" and len(report.actual) == len(X)  # under the sample size
    # the scatter's points are the model's predictions: they give back the SQL metrics
    assert skm.r2_score(report.actual, report.predicted) == pytest.approx(
        report.metrics["r2_score"], abs=1e-9
    )
    assert sorted(report.predicted) == pytest.approx(sorted(diabetes_gb.predict(X)), abs=1e-3)
    picture(plots.plot_evaluation(report, tmp_path / "diab.png"))


# -- drift -----------------------------------------------------------------------------------------


def test_skew_report_histograms_are_the_compared_counts(shifted_db, cancer, tmp_path):
    db = shifted_db
    X, _ = cancer
    report = reports.skew_report(db, "cancer", "SELECT * FROM shifted")
    assert report.flagged == ["mean_radius"]
    histogram = report.histograms["mean_radius"]
    training = X["mean_radius"].to_numpy(dtype="float64")
    serving = db.sql("SELECT mean_radius FROM shifted").df()["mean_radius"].to_numpy("float64")
    edges = np.linspace(training.min(), training.max(), 11)
    assert histogram.base[:10] == list(np.histogram(training, edges)[0])
    inside = serving[serving <= training.max()]
    assert histogram.study[:10] == list(np.histogram(inside, edges)[0])
    assert (
        histogram.buckets[-1].startswith(">")
        and histogram.study[-1] == (serving > training.max()).sum()
    )
    row = next(r for r in report.rows if r["input"] == "mean_radius")
    js = jensenshannon(histogram.base, histogram.study, base=2) ** 2
    assert row["value"] == pytest.approx(js, abs=TOL)
    assert plots.drift_panels(report) == ["mean_radius"]
    assert picture(plots.plot_drift(report, tmp_path / "skew.png")).shape[:2] == (380, 520)

    calm = reports.skew_report(db, "cancer", "SELECT * FROM same")
    assert calm.flagged == [] and len(plots.drift_panels(calm)) == plots.MAX_PANELS


def test_drift_report_categorical_counts(shifted_db, tmp_path):
    db = shifted_db
    report = reports.drift_report(db, "SELECT * FROM same", "SELECT * FROM shifted")
    city = report.histograms["city"]
    assert city.kind == "categorical"
    base = db.sql("SELECT city, count(*) FROM same GROUP BY 1").fetchall()
    study = db.sql("SELECT city, count(*) FROM shifted GROUP BY 1").fetchall()
    assert dict(zip(city.buckets, city.base)) == {**dict(base), "other": 0}
    oslo = dict(study).pop("oslo")
    assert city.buckets[-1] == "other" and city.study[-1] == oslo  # unseen values
    row = next(r for r in report.rows if r["input"] == "city")
    shares = np.array(city.base) / sum(city.base) - np.array(city.study) / sum(city.study)
    assert row["metric"] == "L_INFTY" and row["value"] == pytest.approx(abs(shares).max())
    assert set(report.flagged) == {"mean_radius", "city"}
    picture(plots.plot_drift(report, tmp_path / "drift.png"))
    with pytest.raises(SqlmlError, match="no compared input named 'nope'"):
        plots.drift_panels(report, ["nope"])


def test_report_errors_name_the_fault(shifted_db, cancer_lr, tmp_path):
    db = shifted_db
    db.register_model("plain", cancer_lr, label="malignant")
    with pytest.raises(SqlmlError, match="no training statistics for plain"):
        reports.skew_report(db, "plain", "SELECT * FROM same")
    with pytest.raises(ModelInputError, match="not both"):
        reports.source_sql(query="SELECT 1", table="t")
    with pytest.raises(SqlmlError, match=r"must end in \.png"):
        plots.check_plot_path(tmp_path / "x.jpg")
    with pytest.raises(SqlmlError, match="no folder"):
        plots.check_plot_path(tmp_path / "missing" / "x.png")


# -- the commands ----------------------------------------------------------------------------------


def test_cli_evaluate_and_drift(shifted_db, tmp_path, capsys):
    db = shifted_db
    path = str(db.path)
    db.close()
    out = tmp_path / "eval.png"
    assert main(["evaluate", path, "cancer", "--table", "train", "--plot", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "roc_auc" in printed and "accuracy" in printed
    picture(out)

    skew = tmp_path / "skew.png"
    argv = ["drift", path, "--model", "cancer", "--query", "SELECT * FROM shifted"]
    assert main([*argv, "--plot", str(skew), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "input,metric,threshold,value,is_anomaly"
    assert [line.split(",")[0] for line in lines[1:] if line.endswith("true")] == ["mean_radius"]
    picture(skew)
    assert main([*argv, "--fail-on-anomaly"]) == 1
    assert "anomalies in: mean_radius" in capsys.readouterr().err
    calm = ["drift", path, "--model", "cancer", "--query", "SELECT * FROM same"]
    assert main([*calm, "--fail-on-anomaly"]) == 0
    base = ["drift", path, "--base", "SELECT * FROM same", "--query", "SELECT * FROM shifted"]
    assert main([*base, "--threshold", "0.9", "--fail-on-anomaly"]) == 0  # nothing that far


def test_cli_bad_input_changes_nothing(shifted_db, tmp_path, capsys):
    db = shifted_db
    path = str(db.path)
    db.close()
    out = tmp_path / "x.png"
    ev = ["evaluate", path, "cancer", "--table", "train"]
    skew = ["drift", path, "--model", "cancer", "--query"]
    cases = [
        (["evaluate", path, "nope", "--table", "train", "--plot", str(out)], "model 'nope'"),
        (["evaluate", path, "cancer", "--table", 'train"; DROP TABLE train; --'], "not exist"),
        ([*ev, "--label", "city"], "label column 'city'"),
        ([*ev, "--query", "SELECT 1"], "one of them"),
        ([*ev, "--plot", str(tmp_path / "a.gif")], "must end in"),
        (["drift", path, "--query", "SELECT * FROM same"], "--model NAME"),
        ([*skew, "SELECT * FROM same", "--threshold", "2"], "numerical_default_threshold must"),
        ([*skew, "SELECT * FROM nowhere"], "nowhere"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        assert message in capsys.readouterr().err, argv
    assert not out.exists() and not list(tmp_path.glob("*.partial*"))
    import sqlml

    with sqlml.connect(path) as again:  # the injected DROP never ran
        assert again.sql("SELECT count(*) FROM train").fetchall() == [(569,)]
