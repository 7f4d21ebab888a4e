"""The catalog inside the .duckdb file: versions, aliases, signatures, sha256, transactions."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd
import pytest
from conftest import PROBA_TOL
from skl2onnx import to_onnx

import sqlml
from sqlml.errors import ArtifactError, InvalidNameError, ModelNotFoundError, SqlmlError


def catalog_state(db: sqlml.Database) -> list:
    """Everything the registry stores, to prove a failed operation changed nothing."""
    return [
        db.con.execute(f"SELECT * FROM sqlml.{table} ORDER BY ALL").fetchall()
        for table in ("model_versions", "model_aliases", "artifacts")
    ]


def test_versions_aliases_and_catalog_sql(db, cancer_lr, cancer_gb):
    v1 = db.register_model("cancer", cancer_lr, label="malignant", description="baseline")
    v2 = db.register_model("cancer", cancer_gb, label="malignant")
    assert (v1.version, v2.version) == (1, 2)
    db.set_alias("cancer", "champion", 1)
    row = db.sql(
        "SELECT model, latest_version, versions, aliases, format, label, inputs[1], outputs, "
        "classes FROM sqlml.models"
    ).fetchall()[0]
    assert row[:3] == ("cancer", 2, 2)
    assert row[3] == {"champion": 1}
    assert row[4:7] == ("onnx", "malignant", "mean_radius")
    assert row[7] == ["label", "probabilities"]
    assert json.loads(row[8]) == [0, 1]
    versions = db.sql(
        "SELECT version, sha256, size_bytes > 0, description FROM sqlml.model_versions "
        "ORDER BY version"
    ).fetchall()
    assert [v[0] for v in versions] == [1, 2]
    assert versions[0][1] == v1.sha256 and versions[0][3] == "baseline"
    assert db.model("cancer@champion").version == 1


def test_catalog_and_functions_persist_across_connections(tmp_path, cancer, cancer_lr):
    X, _ = cancer
    path = tmp_path / "persist.duckdb"
    with sqlml.connect(path) as db:
        db.register_model("cancer", cancer_lr, label="malignant")
        db.set_alias("cancer", "prod", 1)
    with sqlml.connect(path) as db:  # a new process would see the same: all state is in the file
        db.con.register("frame", X)
        args = ", ".join(X.columns)
        for function in ("cancer@prod", "cancer@1", "cancer"):
            got = db.sql(f'SELECT "{function}"({args}).probabilities[2] FROM frame').fetchnumpy()
            p1 = next(iter(got.values()))
            assert np.abs(p1 - cancer_lr.predict_proba(X)[:, 1]).max() < PROBA_TOL


def test_register_from_onnx_file_and_create_model_sql(db, tmp_path, cancer, cancer_lr):
    X, _ = cancer
    path = tmp_path / "cancer.onnx"
    onx = to_onnx(cancer_lr, X.to_numpy()[:1], options={"zipmap": False})  # one matrix input "X"
    path.write_bytes(onx.SerializeToString())
    result = db.sql(
        f"CREATE MODEL raw OPTIONS(model_type='onnx', model_path='{path}', "
        "input_label_cols=['malignant'])"
    ).fetchall()
    assert result == [("raw", 1)]
    version = db.model("raw")
    assert [t.name for t in version.signature.inputs] == ["X"]
    assert version.signature.inputs[0].shape == (None, 30)
    assert version.signature.classes == (0, 1) and version.label == "malignant"
    # a [None, 30] input is fed from a list column named after the input
    db.con.register("frame", X)
    cols = ", ".join(X.columns)
    out = db.sql(f"SELECT * FROM ML.PREDICT(MODEL raw, (SELECT [{cols}] AS X FROM frame))").df()
    probs = np.stack(out["probabilities"].to_numpy())
    assert np.abs(probs - cancer_lr.predict_proba(X)).max() < PROBA_TOL
    with pytest.raises(SqlmlError, match="already exists"):
        db.sql(f"CREATE MODEL raw OPTIONS(model_type='onnx', model_path='{path}')")
    db.sql(f"CREATE OR REPLACE MODEL raw OPTIONS(model_type='onnx', model_path='{path}')")
    db.sql(f"CREATE MODEL IF NOT EXISTS raw OPTIONS(model_type='onnx', model_path='{path}')")
    assert db.model("raw").version == 2
    db.sql("DROP MODEL raw")
    db.sql("DROP MODEL IF EXISTS raw")
    assert "raw" not in db.registry.names()
    with pytest.raises(ModelNotFoundError, match="raw"):
        db.sql("DROP MODEL raw")


def test_tampered_artifact_is_refused_at_load(tmp_path, cancer, cancer_lr):
    path = tmp_path / "tamper.duckdb"
    with sqlml.connect(path) as db:
        version = db.register_model("cancer", cancer_lr)
    con = duckdb.connect(str(path))
    con.execute(
        "UPDATE sqlml.artifacts SET data = data || 'x'::BLOB WHERE sha256 = ?", [version.sha256]
    )
    con.close()
    with sqlml.connect(path) as db:
        db.con.register("frame", cancer[0])
        with pytest.raises(ArtifactError, match=r"cancer@1: artifact sha256 mismatch"):
            db.sql("SELECT * FROM ML.PREDICT(MODEL cancer, TABLE frame)")


def test_corrupt_artifact_leaves_registry_unchanged(db, tmp_path, cancer_lr):
    db.register_model("cancer", cancer_lr)
    before = catalog_state(db)
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not an onnx model")
    with pytest.raises(ArtifactError, match="model cancer: not a loadable ONNX model"):
        db.register_model("cancer", bad)
    with pytest.raises(ArtifactError, match="no file or folder"):
        db.register_model("cancer", tmp_path / "missing.onnx")
    empty_dir = tmp_path / "not_a_savedmodel"
    empty_dir.mkdir()
    with pytest.raises(ArtifactError, match="without saved_model.pb"):
        db.register_model("cancer", empty_dir)
    assert catalog_state(db) == before


def test_string_columns_of_a_pipeline_are_read_from_its_encoder(db):
    """A DataFrame-fitted pipeline with a categorical column registers without `inputs=`;
    where the column cannot be traced to its encoder, the error names the model and the fix."""
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"spend": rng.normal(size=300), "plan": rng.choice(["a", "b"], 300)})
    y = (frame.plan == "b").astype(int)
    by_name = make_column_transformer((OneHotEncoder(), ["plan"]), remainder="passthrough")
    model = make_pipeline(by_name, RandomForestClassifier(5, random_state=0)).fit(frame, y)
    version = db.register_model("plans", model)
    assert {t.name: t.dtype for t in version.signature.inputs} == {
        "spend": "float32",
        "plan": "string",
    }
    before = catalog_state(db)
    by_index = make_column_transformer((OneHotEncoder(), [1]), remainder="passthrough")
    hidden = make_pipeline(by_index, RandomForestClassifier(5, random_state=0)).fit(frame, y)
    with pytest.raises(
        ArtifactError,
        match=r"model plans: scikit-learn model cannot be converted to ONNX with inputs "
        r"\(spend: float32, plan: float32\).*pass inputs=\{'<column>': 'string'",
    ):
        db.register_model("plans", hidden)
    assert catalog_state(db) == before
    version = db.register_model("plans", hidden, inputs={"spend": "float32", "plan": "string"})
    assert version.version == 2


def test_failure_inside_the_transaction_rolls_back(db, cancer_lr, monkeypatch):
    """A crash after the artifact row is written must not leave it behind."""
    db.register_model("cancer", cancer_lr)
    before = catalog_state(db)
    original = db.registry._run

    def failing_run(sql, params=None):
        if sql.startswith("INSERT INTO sqlml.model_versions"):
            raise RuntimeError("disk full")
        return original(sql, params)

    monkeypatch.setattr(db.registry, "_run", failing_run)
    with pytest.raises(RuntimeError, match="disk full"):
        db.register_model("other", cancer_lr.steps[-1][1], inputs=[f"f{i}" for i in range(30)])
    monkeypatch.undo()
    assert catalog_state(db) == before


@pytest.mark.parametrize(
    "name",
    [
        "bad'name",
        "x; DROP TABLE sqlml.model_versions; --",
        'quo"te',
        "1starts_with_digit",
        "spaces here",
        "",
        "a" * 64,
        "name@1@2",
    ],
)
def test_hostile_model_names_are_refused(db, cancer_lr, name):
    db.register_model("cancer", cancer_lr)
    before = catalog_state(db)
    with pytest.raises(InvalidNameError):
        db.register_model(name, cancer_lr)
    with pytest.raises(InvalidNameError):
        db.predict(name, "patients")
    assert catalog_state(db) == before


def test_hostile_names_in_sql_are_refused(db, cancer_lr):
    db.register_model("cancer", cancer_lr)
    before = catalog_state(db)
    with pytest.raises(InvalidNameError):
        db.sql("SELECT * FROM ML.PREDICT(MODEL `x'); DROP TABLE t; --`, (SELECT 1 AS a))")
    with pytest.raises(InvalidNameError):
        db.set_alias("cancer", "champ'; --", 1)
    assert catalog_state(db) == before


def test_alias_errors(db, cancer_lr):
    db.register_model("cancer", cancer_lr)
    with pytest.raises(ModelNotFoundError, match="no version 7"):
        db.set_alias("cancer", "champion", 7)
    with pytest.raises(ModelNotFoundError, match="no alias 'champion'"):
        db.model("cancer@champion")
    db.set_alias("cancer", "champion", 1)
    db.delete_alias("cancer", "champion")
    assert db.registry.aliases("cancer") == {}


def test_example_artifacts_in_models_folder_register_and_match(db):
    """models/ holds artifacts rebuilt by models/build_models.py from deterministic data."""
    from pathlib import Path

    from sqlml import demo

    models = Path(__file__).resolve().parents[1] / "models"
    db.sql(
        "CREATE MODEL trees OPTIONS(model_type='onnx', "
        f"model_path='{models / 'cancer_trees.onnx'}', input_label_cols=['malignant'])"
    )
    db.sql(
        f"CREATE MODEL nn OPTIONS(model_type='tensorflow', model_path='{models / 'cancer_nn'}', "
        "input_label_cols=['malignant'], classes=[0, 1])"
    )
    patients = demo.cancer_frame()
    db.con.register("patients", patients)
    trees = demo.train_cancer_classifier(patients)
    out = db.sql("SELECT * FROM ML.PREDICT(MODEL trees, TABLE patients) ORDER BY id").df()
    expected = trees.predict_proba(patients[demo.feature_columns(patients)])
    assert np.abs(np.stack(out["probabilities"].to_numpy()) - expected).max() < PROBA_TOL
    nn = db.sql(
        "SELECT avg((predicted_malignant = malignant)::INT) "
        "FROM ML.PREDICT(MODEL nn, TABLE patients)"
    ).fetchall()[0][0]
    assert nn > 0.9


def test_read_only_connection_scores_without_writing(tmp_path, cancer, cancer_lr):
    X, _ = cancer
    path = tmp_path / "ro.duckdb"
    with sqlml.connect(path) as db:
        db.register_model("cancer", cancer_lr)
    with sqlml.connect(path, read_only=True) as db:
        db.con.register("frame", X)
        out = db.sql("SELECT probabilities FROM ML.PREDICT(MODEL cancer, TABLE frame)").df()
        assert np.abs(np.stack(out["probabilities"]) - cancer_lr.predict_proba(X)).max() < PROBA_TOL
        with pytest.raises(duckdb.Error, match="read-only"):
            db.register_model("other", cancer_lr)
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    with pytest.raises(SqlmlError, match="no sqlml catalog"):
        sqlml.connect(empty, read_only=True)


@pytest.mark.parametrize("name", ["text", "sum", "list_transform"])
def test_names_of_duckdb_functions_are_refused(db, cancer_lr, name):
    with pytest.raises(InvalidNameError, match="DuckDB already has a function of that name"):
        db.register_model(name, cancer_lr)
    assert db.registry.names() == []


def test_memory_limit_is_applied(tmp_path):
    with sqlml.connect(tmp_path / "m.duckdb", memory_limit="500MB") as db:
        (limit,) = db.sql("SELECT current_setting('memory_limit')").fetchall()[0]
        assert limit.replace(" ", "") in ("476.8MiB", "500.0MB", "500MB")


HOLD_LOCK = (
    "import duckdb, sys, time\n"
    "con = duckdb.connect(sys.argv[1])\n"
    "print('locked', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
    "con.close()\n"
    "time.sleep(5)\n"
)


def test_connect_waits_briefly_for_another_process_lock(tmp_path, monkeypatch):
    """`sqlml serve` holds the file for milliseconds at a time: writers wait their turn, but a
    lock held longer than the wait still fails with DuckDB's message."""
    import subprocess
    import sys

    from sqlml import session

    path = tmp_path / "locked.duckdb"
    duckdb.connect(str(path)).close()
    for hold, expect_ok in ((0.5, True), (3.0, False)):
        monkeypatch.setattr(session, "LOCK_WAIT_SECONDS", 1.5)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(path), str(hold)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout.readline().strip() == "locked"
            if expect_ok:
                with sqlml.connect(path) as db:
                    assert db.registry.names() == []
            else:
                with pytest.raises(duckdb.IOException, match="lock"):
                    sqlml.connect(path)
        finally:
            holder.kill()
            holder.wait()
