"""Compiling ML.PREDICT of a registered classifier adds predicted_<label> columns in BigQuery SQL.

BigQuery returns only the raw outputs of an imported ONNX model (and documents `threshold`
only for models it trained), so sqlml computes the predicted columns in SQL over ML.PREDICT.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp


def test_binary_classifier_threshold_becomes_sql(cancer_db):
    sql = cancer_db.compile(
        "SELECT id, predicted_malignant FROM ML.PREDICT(MODEL `cancer@1`, TABLE patients, "
        "STRUCT(0.7 AS threshold)) AS p",
        dataset="analytics",
    )
    tree = sqlglot.parse_one(sql, read="bigquery")
    predict = tree.find(exp.Predict)
    assert predict.this.sql("bigquery") == "`analytics.cancer`"
    assert predict.args.get("params_struct") is None  # applied in SQL instead
    wrapper = predict.find_ancestor(exp.Select)
    names = [e.alias_or_name for e in wrapper.expressions]
    assert names == ["*", "predicted_malignant", "predicted_malignant_probs"]
    assert "IF(probabilities[OFFSET(1)] > 0.7, 1, 0) AS predicted_malignant" in sql
    assert "STRUCT(0 AS label, probabilities[OFFSET(0)] AS prob)" in sql
    assert tree.find(exp.Subquery).alias == "p"


def test_multiclass_and_unknown_models(db, iris_lr):
    db.register_model("species", iris_lr, label="species")
    sql = db.compile("SELECT * FROM ML.PREDICT(MODEL species, TABLE flowers)", dataset="d")
    sqlglot.parse_one(sql, read="bigquery")
    tail = "ORDER BY\n        e.prob DESC,\n        i\n      LIMIT 1\n    ) AS predicted_species"
    assert tail in sql
    assert "STRUCT('virginica' AS label, probabilities[OFFSET(2)] AS prob)" in sql
    # a model the registry does not know stays plain ML.PREDICT
    plain = db.compile("SELECT * FROM ML.PREDICT(MODEL other, TABLE t)", dataset="d")
    assert plain.strip() == "SELECT\n  *\nFROM ML.PREDICT(MODEL `d.other`, TABLE t);"
