"""sqlml quickstart: train three models, register them in DuckDB, and score tables in SQL.

    python examples/quickstart.py [WORKDIR]

Builds its own data (scikit-learn's breast-cancer set, a generated corpus of complaints),
trains a gradient-boosted classifier, a text classifier (TF-IDF + logistic regression) and a
small Keras network, registers all three in WORKDIR/warehouse.duckdb, then runs SQL. Then it
builds the templated project examples/clinic (batch scores, a keyed join with ground truth,
top-k per clinic, evaluation, a drift check) with `sqlml run`, and compiles it for BigQuery.
Last, the online side: the classifier exported as a TensorFlow SavedModel for TF Serving, and
one request to sqlml's own TF-Serving-compatible server.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import sqlml
from sqlml import demo, project, project_compile, project_run
from sqlml.serving import Server

CLINIC = Path(__file__).resolve().parent / "clinic"


def main(workdir: str | Path = "quickstart_out") -> dict:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "warehouse.duckdb"
    database.unlink(missing_ok=True)

    print("1. data and models")
    patients, complaints = demo.cancer_frame(), demo.complaints_frame()
    trees = demo.train_cancer_classifier(patients)
    # the text model learns from last month's messages and scores this month's
    text = demo.train_complaint_classifier(demo.complaints_frame(seed=demo.SEED + 1))
    keras_model = demo.train_keras_classifier(patients)
    saved_model = demo.export_keras(keras_model, workdir / "cancer_keras")

    with sqlml.connect(database) as db:
        db.con.register("patients_df", patients)
        db.con.register("complaints_df", complaints)
        db.sql("CREATE TABLE patients AS SELECT * FROM patients_df")
        db.sql("CREATE TABLE complaints AS SELECT complaint_id, text FROM complaints_df")
        db.sql("CREATE TABLE complaint_labels AS SELECT complaint_id, positive FROM complaints_df")

        print("2. register: Python API for scikit-learn, SQL for the SavedModel")
        db.register_model("cancer", trees, label="malignant")
        db.register_model("sentiment", text, inputs={"text": "string"}, label="positive")
        db.sql(
            f"CREATE MODEL cancer_nn OPTIONS(model_type='tensorflow', "
            f"model_path='{saved_model}', input_label_cols=['malignant'], classes=[0, 1])"
        )
        db.sql(
            "SELECT model, latest_version, format, inputs[1:3] AS first_inputs, outputs "
            "FROM sqlml.models"
        ).show()

        print("3. batch prediction into a table (every input column passes through)")
        db.sql(
            "CREATE TABLE patient_scores AS "
            "SELECT id, predicted_malignant, probabilities[2] AS p_malignant "
            "FROM ML.PREDICT(MODEL cancer, TABLE patients)"
        )
        db.sql("SELECT * FROM patient_scores ORDER BY p_malignant DESC LIMIT 3").show()

        print("4. the five most positive complaints")
        top5 = db.sql(
            "SELECT complaint_id, text, round(probabilities[2], 4) AS p_positive "
            "FROM ML.PREDICT(MODEL sentiment, TABLE complaints) "
            "ORDER BY probabilities[2] DESC, complaint_id LIMIT 5"
        )
        top5.show(max_col_width=70)

        print("5. keyed predictions joined back to ground truth that arrived later")
        truth = db.sql(
            """SELECT count(*) AS complaints,
                      avg((p.predicted_positive = t.positive)::INT) AS accuracy
               FROM ML.PREDICT(MODEL sentiment, (SELECT * FROM complaints ORDER BY random())) p
               JOIN complaint_labels t USING (complaint_id)"""
        )
        truth.show()

        print("6. the scalar form anywhere in SQL: two models side by side")
        # scalar functions take their inputs in signature order (sqlml.models.inputs)
        args = ", ".join(t.name for t in db.model("cancer_nn").signature.inputs)
        side_by_side = db.sql(
            f"""SELECT avg(abs(s.p_malignant - cancer_nn({args}).output_0)) AS mean_disagreement,
                       count(*) FILTER (WHERE s.predicted_malignant = p.malignant) AS trees_correct,
                       count(*) FILTER (WHERE (cancer_nn({args}).output_0 > 0.5)::INT = p.malignant)
                         AS keras_correct
                FROM patients p JOIN patient_scores s USING (id)"""
        )
        side_by_side.show()

        results = {
            "database": database,
            "trees": trees,
            "text": text,
            "keras": keras_model,
            "patients": patients,
            "complaints": complaints,
            "scores": db.sql("SELECT * FROM patient_scores ORDER BY id").df(),
            "top5": top5.df(),
            "accuracy": truth.fetchall()[0][1],
            "keras_scores": db.sql(
                f"SELECT id, cancer_nn({args}).output_0 AS p FROM patients ORDER BY id"
            ).df(),
        }

    print("7. a templated SQL project: sqlml run examples/clinic")
    clinic = project.load(CLINIC)
    with sqlml.connect(workdir / "clinic.duckdb") as db:
        run = project_run.run(
            clinic, db, report=lambda f, i, n: print(f"  {i}/{n} {f.status:7} {f.name}")
        )
        db.sql("SELECT * FROM evaluation").show()
        db.sql("SELECT input, value, is_anomaly FROM drift WHERE is_anomaly").show()
        results["clinic"] = {name: db.sql(f"SELECT * FROM {name}").df() for name in
                             ("scores", "evaluation", "top_patients", "drift")}  # fmt: skip
    results["clinic_run"] = run
    compiled = project_compile.compile_project(
        clinic, workdir / "clinic_bigquery", database=workdir / "clinic.duckdb"
    )
    print(f"8. the same project for BigQuery: {len(compiled.files)} files in {compiled.out}")
    results["clinic_bigquery"] = compiled

    print("9. online: export for TF Serving, and serve TF Serving's REST API from the file")
    with sqlml.connect(database, read_only=True) as db:
        exported = db.export_model("cancer", workdir / "exports" / "cancer" / "1")
    print(f"  SavedModel (serving_default, keyed_prediction) in {exported}")
    features = demo.feature_columns(patients)
    instances = [
        {**{name: float(row[name]) for name in features}, "key": f"patient-{int(row['id'])}"}
        for _, row in patients.head(2).iterrows()
    ]
    with Server(database, port=0) as server:  # `sqlml serve warehouse.duckdb` in production
        request = urllib.request.Request(
            f"{server.url}/v1/models/cancer:predict",
            data=json.dumps(
                {"signature_name": "keyed_prediction", "instances": instances}
            ).encode(),
        )
        with urllib.request.urlopen(request) as response:
            answer = json.load(response)
    for prediction in answer["predictions"]:
        print(
            f"  {prediction['key']}: label {prediction['label']}, p {prediction['probabilities']}"
        )
    results["exported"], results["served"] = exported, answer
    return results


if __name__ == "__main__":
    main(*sys.argv[1:2])
