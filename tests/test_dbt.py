"""dbt: a real `dbt run` (dbt-core + dbt-duckdb, in a subprocess) of tests/dbt_project, which
scores with the sqlml plugin and macros; the tables it builds are compared with scikit-learn.

dbt is in the dev extra: a missing dbt fails these tests, it does not skip them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import duckdb
import numpy as np
import pandas as pd
import pytest
from conftest import PROBA_TOL
from dbt.adapters.duckdb.credentials import DuckDBCredentials
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

import sqlml
from sqlml import convert
from sqlml.dbt import PACKAGE_DIR, Plugin
from sqlml.errors import InvalidNameError, SqlmlError

DBT = Path(sys.executable).with_name("dbt")
PROJECT = Path(__file__).parent / "dbt_project"
SMALL = ["mean_radius", "mean_texture", "mean_smoothness"]


def dbt(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run dbt in the project folder: profiles.yml's relative paths are read from the cwd, and
    dbt holds the database file's lock until its process exits."""
    env = {
        **os.environ,
        "SQLML_DBT_PACKAGE": str(PACKAGE_DIR),  # packages.yml
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_USE_COLORS": "false",
    }
    return subprocess.run(
        [str(DBT), *args, "--profiles-dir", ".", "--project-dir", "."],
        cwd=root, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory, cancer, cancer_lr, cancer_gb):
    """The dbt project in a temporary folder, its packages installed, with a database holding
    the patients table and two registered models; cancer_gb is an artifact the plugin config
    registers; predictions of `small` are logged (sqlml.prediction_log)."""
    assert DBT.is_file(), f"dbt not found at {DBT}: pip install -e '.[dev]' (dbt is in dev)"
    root = tmp_path_factory.mktemp("dbt") / "project"
    shutil.copytree(PROJECT, root, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    X, y = cancer
    (root / "artifacts").mkdir()
    onnx = convert.sklearn_to_onnx(cancer_gb, convert.sklearn_inputs(cancer_gb, None))
    (root / "artifacts" / "cancer_gb.onnx").write_bytes(onnx)
    small = LogisticRegression(max_iter=2000).fit(X[SMALL], y)
    ids = np.arange(len(X))
    with sqlml.connect(root / "warehouse.duckdb") as db:
        db.con.register("frame", X.assign(id=ids, grp=ids % 4, malignant=y.to_numpy()))
        db.sql("CREATE TABLE patients AS SELECT * FROM frame")
        db.con.unregister("frame")
        db.register_model("cancer", cancer_lr, label="malignant", training_data="patients")
        db.register_model("small", small, label="malignant")
        db.log_predictions("small", 1.0, key="id")
    deps = dbt(root, "deps")
    assert deps.returncode == 0, deps.stdout + deps.stderr
    return SimpleNamespace(root=root, small=small)


def tables(root: Path, *names: str) -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        return {name: con.sql(f"SELECT * FROM {name}").df() for name in names}


def model_versions(root: Path) -> dict[str, int]:
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        rows = con.sql("SELECT model, count(*) FROM sqlml.model_versions GROUP BY model")
        return dict(rows.fetchall())


@pytest.fixture(scope="module")
def built(project):
    """`dbt run` of every model but the one that must fail."""
    run = dbt(project.root, "run", "--exclude", "unknown_model")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASS=11" in run.stdout, run.stdout
    return tables(
        project.root,
        "patients_scored", "patients_strict", "patients_runtime", "cancer_evaluation",
        "cancer_confusion", "cancer_roc", "cancer_top", "cancer_skew", "small_scalar",
        "small_query",
    )  # fmt: skip


def probabilities(frame: pd.DataFrame, column: str = "probabilities") -> np.ndarray:
    return np.stack(frame.sort_values("id")[column].to_numpy())


def test_predictions_match_sklearn(built, project, cancer, cancer_lr, cancer_gb):
    X, y = cancer
    expected = cancer_lr.predict_proba(X)
    scored = built["patients_scored"].sort_values("id")
    assert np.abs(probabilities(scored) - expected).max() < PROBA_TOL
    np.testing.assert_array_equal(scored["predicted_malignant"], cancer_lr.predict(X))
    np.testing.assert_array_equal(scored["malignant"], y)
    strict = built["patients_strict"].sort_values("id")
    np.testing.assert_array_equal(strict["predicted_malignant"], expected[:, 1] > 0.8)
    # the model function (onnxruntime): engine='runtime', and a model registered that way
    runtime = built["patients_runtime"]
    assert np.abs(probabilities(runtime, "lr_probabilities") - expected).max() < PROBA_TOL
    gb = probabilities(runtime, "gb_probabilities")
    assert np.abs(gb - cancer_gb.predict_proba(X)).max() < PROBA_TOL
    # a model compiled to SQL called by name in hand-written SQL, and sqlml.query
    small = project.small.predict_proba(X[SMALL])[:, 1]
    assert np.abs(built["small_scalar"].sort_values("id")["p"].to_numpy() - small).max() < PROBA_TOL
    query = built["small_query"].sort_values("id")
    np.testing.assert_array_equal(query["predicted_malignant"], project.small.predict(X[SMALL]))
    compiled = project.root / "target/compiled/sqlml_dbt_test/models/patients_scored.sql"
    assert '/* sqlml: SELECT * FROM ML.PREDICT(MODEL `cancer`, TABLE "warehouse"' in (
        compiled.read_text()
    )


def test_evaluate_confusion_matrix_top_k_match_sklearn(built, cancer, cancer_lr):
    X, y = cancer
    probs = cancer_lr.predict_proba(X)
    predicted = cancer_lr.predict(X)
    row = built["cancer_evaluation"].iloc[0]
    assert row["precision"] == pytest.approx(skm.precision_score(y, predicted), abs=1e-9)
    assert row["recall"] == pytest.approx(skm.recall_score(y, predicted), abs=1e-9)
    assert row["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted), abs=1e-9)
    assert row["f1_score"] == pytest.approx(skm.f1_score(y, predicted), abs=1e-9)
    assert row["log_loss"] == pytest.approx(skm.log_loss(y, probs), abs=PROBA_TOL)
    assert row["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]), abs=1e-6)

    matrix = built["cancer_confusion"].sort_values("expected_label")
    assert list(matrix.columns) == ["expected_label", "_0", "_1"]
    np.testing.assert_array_equal(matrix[["_0", "_1"]], skm.confusion_matrix(y, predicted))

    roc = built["cancer_roc"].sort_values("threshold")
    assert roc["threshold"].tolist() == pytest.approx([0.5, 0.8])
    for threshold, recall, false_positive_rate in roc[
        ["threshold", "recall", "false_positive_rate"]
    ].itertuples(index=False):
        tn, fp, fn, tp = skm.confusion_matrix(y, probs[:, 1] > threshold).ravel()
        assert (recall, false_positive_rate) == pytest.approx((tp / (tp + fn), fp / (fp + tn)))

    skew = built["cancer_skew"]  # the training data itself: no skew
    assert len(skew) == X.shape[1] and not skew["is_anomaly"].any()

    top = built["cancer_top"]
    groups = np.arange(len(X)) % 4
    for group in range(4):
        chosen = top[top["grp"] == group].sort_values("rank")
        assert chosen["rank"].tolist() == [1, 2, 3]
        best = np.sort(probs[groups == group, 1])[::-1][:3]  # ties may swap ids, not scores
        assert np.abs(chosen["score"].to_numpy() - best).max() < PROBA_TOL
        assert np.abs(chosen["score"].to_numpy() - probs[chosen["id"], 1]).max() < PROBA_TOL


def test_plugin_registers_changed_artifacts_once_and_flushes_the_log(built, project, cancer):
    assert model_versions(project.root) == {"cancer": 1, "small": 1, "cancer_gb": 1}
    with duckdb.connect(str(project.root / "warehouse.duckdb"), read_only=True) as con:
        logged = con.sql("SELECT count(*) FROM sqlml.prediction_log WHERE model = 'small'")
        assert logged.fetchall()[0][0] == len(cancer[0])  # small_query's rows


def test_unknown_model_fails_the_run_naming_it(project):
    run = dbt(project.root, "run", "--select", "unknown_model")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "unknown model 'no_such_model' (registered: cancer, cancer_gb, small)" in run.stdout
    assert "ERROR=1" in run.stdout
    assert model_versions(project.root)["cancer_gb"] == 1  # artifact unchanged: no new version


def test_plugin_config_errors_name_the_problem(tmp_path):
    def plugin(config: dict, **credentials) -> Plugin:
        creds = DuckDBCredentials(database="wh", schema="main", path="wh.duckdb", **credentials)
        return Plugin(name="sqlml", plugin_config=config, credentials=creds)

    with pytest.raises(SqlmlError, match=r"needs `keep_open: true`"):
        plugin({}, keep_open=False)
    with pytest.raises(SqlmlError, match=r"models entry 1 \(churn\): unknown key\(s\) \['lable'\]"):
        plugin({"models": [{"name": "churn", "path": "churn.onnx", "lable": "churned"}]})
    with pytest.raises(SqlmlError, match=r"models entry 1: needs at least `name` and `path`"):
        plugin({"models": [{"name": "churn"}]})
    with pytest.raises(InvalidNameError):
        plugin({"models": [{"name": "churn; drop", "path": "churn.onnx"}]})
    # other keys are the profile's settings (dbt-duckdb passes them without a `config:`)
    loaded = plugin({"threads": 4, "models": [{"name": "Churn", "path": str(tmp_path / "c.onnx")}]})
    assert [(s.name, s.path) for s in loaded.specs] == [("churn", tmp_path / "c.onnx")]
