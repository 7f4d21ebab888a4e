"""The Jinja macro library in sql/ renders sqlml SQL that runs on DuckDB."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PROBA_TOL

from sqlml.errors import SqlCompileError
from sqlml.templates import render


def test_ml_predict_macro_renders_and_runs(cancer_db, cancer, cancer_lr):
    X, _ = cancer
    text = render(
        "SELECT id, predicted_malignant FROM {{ ml.predict('cancer', 'patients', threshold=t) }} "
        "ORDER BY id",
        t=0.8,
    )
    assert "ML.PREDICT(MODEL `cancer`, TABLE patients, STRUCT(0.8 AS threshold))" in text
    out = cancer_db.sql(text).df()
    expected = (cancer_lr.predict_proba(X)[:, 1] > 0.8).astype(int)
    np.testing.assert_array_equal(out["predicted_malignant"], expected)

    query = render("SELECT * FROM {{ ml.predict('cancer@1', 'SELECT * FROM patients') }}")
    assert "MODEL `cancer@1`, (SELECT * FROM patients)" in query
    probs = np.stack(cancer_db.sql(query + " ORDER BY id").df()["probabilities"].to_numpy())
    assert np.abs(probs - cancer_lr.predict_proba(X)).max() < PROBA_TOL


def test_template_errors_name_the_line():
    with pytest.raises(SqlCompileError, match=r"line 2"):
        render("SELECT 1\n{{ undefined_var }}")
