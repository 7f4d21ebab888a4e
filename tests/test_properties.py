"""Property-based checks (hypothesis) of the pieces every query relies on."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from conftest import PROBA_TOL
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlml.errors import InvalidNameError
from sqlml.names import ModelRef, check_name
from sqlml.sqltext import split_statements

identifier = st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True)


@given(name=identifier, pin=st.one_of(st.none(), st.integers(1, 10**6), identifier))
def test_model_refs_round_trip(name, pin):
    text = name if pin is None else f"{name}@{pin}"
    ref = ModelRef.parse(text)
    assert str(ref) == text
    assert ModelRef.parse(str(ref)) == ref


@given(st.text(min_size=1, max_size=30))
def test_names_outside_the_identifier_grammar_are_refused(text):
    lowered = text.lower()
    valid = (
        lowered[0] in "abcdefghijklmnopqrstuvwxyz_"
        and all(c in "abcdefghijklmnopqrstuvwxyz0123456789_" for c in lowered)
        and len(text) <= 63
    )
    if valid:
        assert check_name(text) == lowered
    else:
        with pytest.raises(InvalidNameError):
            check_name(text)


@given(st.lists(st.text(alphabet="abc ;'", max_size=8), min_size=1, max_size=4))
def test_split_keeps_semicolons_inside_strings(values):
    statements = [f"SELECT '{v.replace(chr(39), chr(39) * 2)}' AS x" for v in values]
    assert split_statements(";\n".join(statements) + ";") == statements


@pytest.fixture(scope="module")
def cancer_function(cancer_lr):
    """The real DuckDB-facing function of a registered model, called directly with Arrow."""
    import sqlml

    db = sqlml.connect()
    db.register_model("cancer", cancer_lr, label="malignant")
    _, function = db.model_function(ModelRef("cancer"))
    yield function
    db.close()


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_null_rows_get_null_predictions_and_others_are_exact(
    data, cancer, cancer_lr, cancer_function
):
    X, _ = cancer
    n = data.draw(st.integers(1, 64))
    rows = data.draw(st.lists(st.integers(0, len(X) - 1), min_size=n, max_size=n))
    null_mask = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    null_column = data.draw(st.integers(0, X.shape[1] - 1))
    batch = X.iloc[rows]
    arrays = [
        pa.array(batch[c].to_numpy(), mask=null_mask if i == null_column else None)
        for i, c in enumerate(X.columns)
    ]
    struct = cancer_function.predict_arrow(arrays)
    assert struct.is_null().to_pylist() == null_mask.tolist()
    result = pa.Table.from_arrays(struct.flatten(), names=[f.name for f in struct.type]).to_pandas()
    kept = ~null_mask
    if kept.any():
        probs = np.stack(result["probabilities"][kept].to_numpy())
        expected = cancer_lr.predict_proba(batch[kept])
        assert np.abs(probs - expected).max() < PROBA_TOL
        np.testing.assert_array_equal(
            result["predicted_malignant"][kept].astype(int), cancer_lr.predict(batch[kept])
        )
