"""EXPORT MODEL in SQL and `sqlml export`: real DuckDB files, real SavedModels and TFLite files.

Op-by-op parity of the translator is tested in test_export.py; here: the statement, the CLI,
the version chosen, what is refused (and that nothing is written then), and the BigQuery form.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import PROBA_TOL

from sqlml.errors import ModelNotFoundError, SqlCompileError, SqlmlError

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")


def _serving_inputs(frame, names) -> dict:
    return {n: tf.constant(frame[n].to_numpy(np.float32)) for n in names}


def test_export_model_statement_writes_a_savedmodel_that_matches_sklearn(
    cancer_db, cancer, cancer_lr, tmp_path
):
    X, _ = cancer
    target = tmp_path / "exports" / "cancer"
    row = cancer_db.sql(
        f"EXPORT MODEL cancer OPTIONS(uri='{target}', format='saved_model')"
    ).fetchall()
    assert row == [("cancer", 1, "saved_model", str(target))]
    loaded = tf.saved_model.load(str(target))
    assert set(loaded.signatures) == {"serving_default", "keyed_prediction"}
    serve = loaded.signatures["serving_default"]
    out = serve(**_serving_inputs(X, X.columns))
    np.testing.assert_allclose(
        out["probabilities"].numpy(), cancer_lr.predict_proba(X), atol=PROBA_TOL
    )
    np.testing.assert_array_equal(out["label"].numpy(), cancer_lr.predict(X))
    keys = tf.constant([f"patient-{i}" for i in range(len(X))])
    keyed = loaded.signatures["keyed_prediction"](key=keys, **_serving_inputs(X, X.columns))
    assert [k.decode() for k in keyed["key"].numpy()] == [f"patient-{i}" for i in range(len(X))]
    np.testing.assert_array_equal(keyed["label"].numpy(), out["label"].numpy())


def test_export_pins_the_version_and_replaces_a_previous_export(cancer_db, cancer, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = cancer
    other = make_pipeline(StandardScaler(), LogisticRegression())
    constant = other.fit(X, np.arange(len(y)) % 2)  # a different model
    cancer_db.register_model("cancer", constant, label="malignant")
    target = tmp_path / "cancer_export"
    cancer_db.export_model("cancer@2", target)
    second = tf.saved_model.load(str(target)).signatures["serving_default"]
    p2 = second(**_serving_inputs(X, X.columns))["probabilities"].numpy()
    np.testing.assert_allclose(p2, constant.predict_proba(X), atol=PROBA_TOL)

    cancer_db.sql("ALTER MODEL cancer SET ALIAS production = 1")
    cancer_db.sql(f"EXPORT MODEL `cancer@production` OPTIONS(uri='{target}')")  # replaced
    first = tf.saved_model.load(str(target)).signatures["serving_default"]
    p1 = first(**_serving_inputs(X, X.columns))["probabilities"].numpy()
    assert np.abs(p1 - p2).max() > 0.1
    leftovers = [p.name for p in tmp_path.iterdir() if not p.name.startswith("wh.duckdb")]
    assert leftovers == ["cancer_export"]  # no staging folder left behind


def test_cli_export_tflite_keeps_both_signatures(cancer_db, cancer, cancer_lr, tmp_path):
    X, _ = cancer
    path = cancer_db.path
    cancer_db.close()
    target = tmp_path / "cancer.tflite"
    result = subprocess.run(
        [sys.executable, "-m", "sqlml.cli", "export", path, "cancer", target, "--format", "tflite"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"exported cancer@1 to {target}" in result.stdout
    interpreter = tf.lite.Interpreter(model_path=str(target))
    assert set(interpreter.get_signature_list()) == {"serving_default", "keyed_prediction"}
    runner = interpreter.get_signature_runner("serving_default")
    rows = X.iloc[:1]
    out = runner(**{n: rows[n].to_numpy(np.float32) for n in X.columns})
    np.testing.assert_allclose(out["probabilities"], cancer_lr.predict_proba(rows), atol=1e-4)


@pytest.mark.parametrize(
    ("statement", "error", "message"),
    [
        ("EXPORT MODEL nosuch OPTIONS(uri='{dir}/x')", ModelNotFoundError, "nosuch"),
        ("EXPORT MODEL cancer@7 OPTIONS(uri='{dir}/x')", ModelNotFoundError, "version 7"),
        ("EXPORT MODEL cancer", SqlCompileError, "uri='...') is required"),
        ("EXPORT MODEL cancer OPTIONS(uri='gs://bucket/x')", SqlmlError, "gsutil"),
        ("EXPORT MODEL cancer OPTIONS(uri='{dir}/x', format='onnx')", SqlmlError, "format"),
        ("EXPORT MODEL cancer OPTIONS(uri='{dir}/x', format='tflite')", SqlmlError, ".tflite"),
        ("EXPORT MODEL cancer OPTIONS(uri='{dir}/x', colour='red')", SqlCompileError, "colour"),
        ("EXPORT MODEL cancer OPTIONS(uri='{dir}/x') AS SELECT (1)", SqlCompileError, "OPTIONS"),
        ("EXPORT MODEL x; DROP TABLE patients", SqlmlError, "is required"),
        ("EXPORT MODEL `x; DROP TABLE patients` OPTIONS(uri='{dir}/x')", SqlmlError, "x; DROP"),
    ],
)
def test_bad_export_statements_change_nothing(cancer_db, tmp_path, statement, error, message):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(error, match=re.escape(message)):
        cancer_db.sql(statement.format(dir=out))
    assert list(out.iterdir()) == []
    assert cancer_db.sql("SELECT count(*) FROM patients").fetchall() == [(569,)]


def test_export_refuses_to_overwrite_a_folder_that_is_not_a_savedmodel(cancer_db, tmp_path):
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "readme.txt").write_text("mine")
    with pytest.raises(SqlmlError, match="other files"):
        cancer_db.export_model("cancer", keep)
    assert [p.name for p in keep.iterdir()] == ["readme.txt"]


def test_export_compiles_to_bigquerys_documented_statement(cancer_db):
    # BigQuery ML reference: EXPORT MODEL MODEL_NAME [OPTIONS(URI = STRING_VALUE)]
    sql = cancer_db.compile(
        "EXPORT MODEL cancer OPTIONS(uri='gs://bucket/cancer/')", dataset="my-project.ml"
    )
    pattern = r"EXPORT MODEL `my-project\.ml\.cancer` OPTIONS\(uri = 'gs://bucket/cancer/'\);\s*"
    assert re.fullmatch(pattern, sql), sql
    with pytest.raises(SqlCompileError, match="SavedModels only"):
        cancer_db.compile("EXPORT MODEL cancer OPTIONS(uri='gs://b/c', format='tflite')")
    with pytest.raises(SqlCompileError, match="without a version"):
        cancer_db.compile("EXPORT MODEL `cancer@1` OPTIONS(uri='gs://b/c')")
    with pytest.raises(SqlCompileError, match="cannot export an imported ONNX"):
        cancer_db.compile(
            "CREATE MODEL m OPTIONS(model_type='onnx', model_path='gs://b/m.onnx');\n"
            "EXPORT MODEL m OPTIONS(uri='gs://b/m')"
        )
