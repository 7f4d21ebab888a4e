"""Templated SQL projects: `sqlml run` on a real DuckDB file and `sqlml compile` for BigQuery,
on a copy of the example project (examples/clinic); values checked against onnxruntime,
sklearn.metrics and pandas; every compiled file parsed with sqlglot's BigQuery dialect."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import sqlglot
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

import sqlml
from sqlml import convert, project, project_compile, project_run
from sqlml.cli import main
from sqlml.errors import SqlCompileError
from sqlml.project import ProjectError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "clinic"
TOL = 1e-6


@pytest.fixture
def clinic(tmp_path) -> Path:
    folder = tmp_path / "clinic"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("*.duckdb*", "target"))
    return folder


def run_project(folder: Path, **options):
    with sqlml.connect(folder / "clinic.duckdb") as db:
        return project_run.run(project.load(folder), db, **options)


def table(folder: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(folder / "clinic.duckdb"), read_only=True) as con:
        return con.sql(sql).df()


def onnx_scores(folder: Path, frame: pd.DataFrame) -> np.ndarray:
    session = ort.InferenceSession(str(folder / "models" / "cancer.onnx"))
    feeds = {
        i.name: frame[i.name].to_numpy(np.float32).reshape(-1, 1) for i in session.get_inputs()
    }
    outputs = session.run(None, feeds)
    probabilities = outputs[1]
    if isinstance(probabilities, list):  # ZipMap: one dict per row
        probabilities = np.array([[row[0], row[1]] for row in probabilities])
    return probabilities[:, 1]


def test_example_project_runs_and_its_tables_hold_the_right_values(clinic):
    result = run_project(clinic)
    assert result.ok and result.registered == ["cancer@1"]
    assert [f.name for f in result.files][-1] in {"scores_with_truth", "evaluation", "confusion"}
    patients = pd.read_csv(clinic / "data" / "patients.csv")
    truth = pd.read_csv(clinic / "data" / "diagnoses.csv")
    expected = onnx_scores(clinic, patients)

    scores = table(clinic, "SELECT * FROM scores ORDER BY id")
    np.testing.assert_array_equal(scores["id"], patients["id"])
    assert np.abs(scores["p_malignant"] - expected).max() < TOL
    np.testing.assert_array_equal(scores["predicted_malignant"], (expected > 0.5).astype(int))
    assert set(scores["risk"]) <= {"low", "medium", "high"}  # the project macro ran

    joined = table(clinic, "SELECT * FROM scores_with_truth ORDER BY id")
    assert len(joined) == len(truth)
    assert joined["correct"].mean() == pytest.approx(
        (joined["predicted_malignant"] == truth["malignant"]).mean()
    )

    evaluation = table(clinic, "SELECT * FROM evaluation").iloc[0]
    predicted = (expected > 0.5).astype(int)
    assert evaluation["accuracy"] == pytest.approx(
        skm.accuracy_score(truth["malignant"], predicted), abs=TOL
    )
    assert evaluation["roc_auc"] == pytest.approx(
        skm.roc_auc_score(truth["malignant"], expected), abs=1e-6
    )
    matrix = table(clinic, "SELECT * FROM confusion ORDER BY expected_label")
    np.testing.assert_array_equal(
        matrix.drop(columns="expected_label").to_numpy(),
        skm.confusion_matrix(truth["malignant"], predicted),
    )

    top = table(clinic, "SELECT * FROM top_patients ORDER BY clinic, rank")
    frame = patients.assign(score=expected)
    for clinic_name, group in top.groupby("clinic"):
        best = frame[frame["clinic"] == clinic_name].sort_values(
            ["score", "id"], ascending=[False, True]
        )
        assert list(group["rank"]) == [1, 2, 3]
        np.testing.assert_allclose(group["score"], best["score"].head(3), atol=TOL)

    drift = table(clinic, "SELECT * FROM drift")
    assert list(drift[drift["is_anomaly"]]["input"]) == ["mean_radius"]  # the unit change


def test_rerun_registers_only_changed_artifacts_and_select(clinic, cancer):
    assert run_project(clinic).registered == ["cancer@1"]
    again = run_project(clinic, selectors=["evaluation"])
    assert again.registered == [] and [f.name for f in again.files] == ["evaluation"]
    plus = run_project(clinic, selectors=["+evaluation"])
    assert {f.name for f in plus.files} == {"labelled", "evaluation"}
    down = run_project(clinic, selectors=["scores+"])
    assert {f.name for f in down.files} == {"scores", "scores_with_truth"}

    X, y = cancer  # a retrained model lands in the artifact file: a new version
    model = LogisticRegression(max_iter=3000).fit(X, y)
    (clinic / "models" / "cancer.onnx").write_bytes(
        convert.sklearn_to_onnx(model, convert.sklearn_inputs(model, None))
    )
    assert run_project(clinic, selectors=["scores"]).registered == ["cancer@2"]
    patients = pd.read_csv(clinic / "data" / "patients.csv")
    scores = table(clinic, "SELECT p_malignant FROM scores ORDER BY id")["p_malignant"]
    assert np.abs(scores - model.predict_proba(patients[X.columns])[:, 1]).max() < 1e-5
    with pytest.raises(ProjectError, match="--select nope: no file sql/nope.sql"):
        run_project(clinic, selectors=["nope"])


def test_a_failing_file_stops_its_dependents_and_keeps_the_rest(clinic, capsys):
    assert run_project(clinic).ok
    before = table(clinic, "SELECT * FROM evaluation")
    (clinic / "sql" / "labelled.sql").write_text(
        "{{ config(materialized='view') }}\nSELECT p.*, d.malignant\nFROM {{ source('raw', "
        "'patients') }} AS p\nJOIN {{ source('raw', 'diagnoses') }} AS d ON p.id = d.nope\n"
    )
    result = run_project(clinic)
    status = {f.name: f for f in result.files}
    assert not result.ok
    assert status["labelled"].status == "error"
    assert "sql/labelled.sql line 4" in status["labelled"].message
    assert "nope" in status["labelled"].message
    assert status["evaluation"].status == "skipped" and status["confusion"].status == "skipped"
    assert status["scores"].status == "ok" and status["top_patients"].status == "ok"
    pd.testing.assert_frame_equal(table(clinic, "SELECT * FROM evaluation"), before)

    assert main(["run", str(clinic)]) == 1  # the command: exit 1, the file and line printed
    out = capsys.readouterr().out
    assert "ERROR labelled (view): sql/labelled.sql line 4" in out
    assert "SKIP  evaluation (table): depends on labelled, which failed" in out


MODEL = "models:\n  - name: cancer\n    "


@pytest.mark.parametrize(
    ("path", "text", "message"),
    [
        ("sql/a.sql", "SELECT * FROM {{ ref('b') }}", "ref() cycle: "),
        ("sql/a.sql", "SELECT 1\n\nFROM {{ ref('missing') }}", "sql/a.sql line 3: ref('missing')"),
        ("sql/a.sql", "SELECT {{ 1 +  }}", "sql/a.sql line 1: template error"),
        ("sql/a.sql", "SELECT {{ var('nothing') }}", "var('nothing') is not set"),
        ("sql/a.sql", "SELECT * FROM {{ source('raw', 'nope') }}", "has no table 'nope'"),
        ("sql/a.sql", "{{ config(materialized='incremental') }}SELECT 1", "incremental"),
        ("models.yml", MODEL + "path: ../../x.onnx\n", "outside the project"),
        ("models.yml", MODEL + "path: models/gone.onnx\n", "model cancer: no file"),
        ("models.yml", MODEL + "path: a\n    colour: red\n", "unknown key(s) colour"),
        ("sqlml_project.yml", "name: c\ntargets:\n  snowflake: {}\n", "unknown target 'snowflake'"),
        ("sqlml_project.yml", "name: [unclosed\n", "sqlml_project.yml line 2: not valid YAML"),
    ],
)  # fmt: skip
def test_bad_projects_get_errors_naming_the_file(clinic, path, text, message):
    (clinic / path).write_text(text)
    if "ref('b')" in text:
        (clinic / "sql" / "b.sql").write_text("SELECT * FROM {{ ref('a') }}")
    with pytest.raises(ProjectError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_project(clinic)
    assert (
        not (clinic / "clinic.duckdb").exists()
        or not table(clinic, "SELECT * FROM duckdb_tables() WHERE schema_name = 'main'").shape[0]
    )  # nothing was built


def test_bigquery_only_function_is_named(clinic):
    (clinic / "sql" / "forecast.sql").write_text(
        "SELECT * FROM ML.FORECAST(MODEL `cancer`, STRUCT(7 AS horizon))"
    )
    result = run_project(clinic)
    failed = {f.name: f.message for f in result.files if f.status == "error"}
    assert list(failed) == ["forecast"]
    assert "ML.FORECAST is a BigQuery ML function with no DuckDB equivalent" in failed["forecast"]
    with pytest.raises(SqlCompileError, match="ML.FORECAST"):
        sqlml.connect().sql("SELECT * FROM ML.FORECAST(MODEL m)")


# -- BigQuery ------------------------------------------------------------------------------------


def test_compile_project_for_bigquery(clinic, tmp_path):
    assert run_project(clinic).ok  # statistics for the skew check come from the built database
    out = tmp_path / "bq"
    compiled = project_compile.compile_project(project.load(clinic), out)
    manifest = json.loads((out / "manifest.json").read_text())
    names = [entry["name"] for entry in manifest["order"]]
    assert sorted(names) == sorted(p.stem for p in (clinic / "sql").glob("*.sql"))
    position = {name: i for i, name in enumerate(names)}
    for entry in manifest["order"]:
        for parent in entry["depends_on"]:
            assert position[parent] < position[entry["name"]]
    for path in compiled.files:  # every output parses as BigQuery
        assert sqlglot.parse(path.read_text(), read="bigquery")
    models = (out / "_models.sql").read_text()
    assert "MODEL_TYPE='ONNX'" in models
    assert "MODEL_PATH='gs://my-bucket/clinic/models/cancer.onnx'" in models
    assert (out / "artifacts" / "cancer.onnx").read_bytes() == (
        clinic / "models" / "cancer.onnx"
    ).read_bytes()
    assert manifest["uploads"][0]["uri"] == "gs://my-bucket/clinic/models/cancer.onnx"
    udfs = (out / "_udfs.sql").read_text()
    assert "CREATE OR REPLACE FUNCTION `my-gcp-project.clinic.risk_band`(p ANY TYPE)" in udfs
    scores = sqlglot.parse_one((out / "scores.sql").read_text(), read="bigquery")
    assert isinstance(scores, sqlglot.exp.Create) and scores.kind == "TABLE"
    assert scores.this.sql("bigquery") == "`my-gcp-project`.`clinic`.`scores`"
    text = (out / "scores.sql").read_text()
    assert "ML.PREDICT(" in text and "`my-gcp-project.clinic.cancer`" in text
    assert "`my-gcp-project`.`clinic_raw`.`patients`" in text
    assert "`my-gcp-project.clinic`.risk_band(" in text
    view = sqlglot.parse_one((out / "labelled.sql").read_text(), read="bigquery")
    assert view.kind == "VIEW"
    evaluation = (out / "evaluation.sql").read_text()
    assert "ML.EVALUATE(" not in evaluation and "ML.PREDICT(" in evaluation  # plain SQL over it


def test_compile_errors_and_no_half_written_output(clinic, tmp_path):
    out = tmp_path / "bq"
    out.mkdir()
    (out / "keep.txt").write_text("old output")
    (clinic / "udfs" / "table_macro.sql").write_text(
        "CREATE MACRO recent(n) AS TABLE SELECT * FROM range(n)"
    )
    with pytest.raises(ProjectError, match="only scalar macros"):
        project_compile.compile_project(project.load(clinic), out)
    assert (out / "keep.txt").read_text() == "old output"  # the old output is untouched
    assert not list(tmp_path.glob(".bq.partial*"))
    with pytest.raises(ProjectError, match="would overwrite the project"):
        project_compile.compile_project(project.load(clinic), clinic)


def test_cli_compile_project(clinic, tmp_path, capsys):
    out = tmp_path / "bq"
    assert main(["compile", str(clinic), "--target", "bigquery", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'manifest.json'}" in printed
    assert f"gsutil cp {out / 'artifacts' / 'cancer.onnx'} gs://my-bucket/clinic/models/" in printed
    assert (out / "scores.sql").is_file()
    assert "ML.VALIDATE" not in (out / "drift.sql").read_text()  # statistics: from data/*.csv
    assert main(["compile", str(clinic), "--vars", "{top_k: 9}", "-o", str(out)]) == 0
    assert "<= 9" in (out / "top_patients.sql").read_text()
    (clinic / "data" / "patients.csv").unlink()  # no training data: no statistics to compare
    assert main(["compile", str(clinic), "-o", str(out)]) == 1
    assert "sql/drift.sql" in (err := capsys.readouterr().err) and "no training statistics" in err
