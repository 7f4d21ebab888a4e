"""The C TF-IDF scorer (sqlml.runtimes.text): used for scikit-learn text pipelines into a linear
model, exact to onnxruntime, and left out wherever it would not be.

Exact means: labels identical to onnxruntime's whole graph and probabilities / values within
ORT_TOL (the C sums run in another order than onnxruntime's GEMM), on texts with repeated
n-grams, every case, punctuation, digits, underscores, empty strings, NUL bytes, a 100 kB
token and non-ASCII rows (which onnxruntime scores). Against scikit-learn within PROBA_TOL.
"""

from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline

import sqlml
from sqlml.convert import sklearn_to_onnx
from sqlml.demo import complaints_frame
from sqlml.runtimes import text
from sqlml.runtimes.onnx import OnnxRuntime

ORT_TOL = 1e-6
PROBA_TOL = 1e-5  # scikit-learn sums in float64, ONNX in float32
NATIVE = "sqlml's C TF-IDF scorer (onnxruntime for rows with non-ASCII text)"


EDGE_TEXTS = [
    "",
    " ",
    "!!!",
    "REFUND REFUND refund Refund",
    "the delivery the delivery the delivery",
    "refund_2024 order 12345 x",
    "a\x00b refund",
    "refund " + "x" * 100_000,
    "caf\u00e9 refund was late",  # non-ASCII: onnxruntime scores this row
    "na\u00efve \u00e9t\u00e9 \U0001f600",
    "tabs\tand\nnewlines,commas;semicolons",
]


def test_the_native_text_scorer_is_built():
    """`pip install` compiles sqlml/native/tfidf.c: CI has gcc, so it must load."""
    library = text.native_library()
    assert library is not None
    assert library.sqlml_tfidf_abi() == text.ABI


@pytest.fixture(scope="module")
def complaints() -> pd.DataFrame:
    return complaints_frame(1200)


def _texts(complaints: pd.DataFrame) -> np.ndarray:
    return np.array(list(complaints["text"]) + EDGE_TEXTS, dtype=object)


def _runtime(model, name: str = "m") -> OnnxRuntime:
    return OnnxRuntime(sklearn_to_onnx(model, {"text": "string"}), name)


def _assert_same_as_onnxruntime(runtime: OnnxRuntime, texts: np.ndarray) -> dict:
    want = runtime.session.run(None, {"text": texts.reshape(-1, 1)})
    got = runtime.predict({"text": texts.reshape(-1, 1)})
    for output, expected in zip(runtime.session.get_outputs(), want):
        value = got[output.name]
        assert value.shape == expected.shape and value.dtype == expected.dtype
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(value, expected, rtol=0, atol=ORT_TOL)
        else:
            np.testing.assert_array_equal(value, expected)
    return got


VARIANTS = {
    "tf-idf 1-2 grams, binary LR": (TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression()),
    "tf-idf, 3-class LR": (TfidfVectorizer(), LogisticRegression()),
    "tf-idf, L1 norm": (TfidfVectorizer(norm="l1"), LogisticRegression()),
    "tf-idf, no norm": (TfidfVectorizer(norm=None), LogisticRegression()),
    "counts, LR": (CountVectorizer(), LogisticRegression()),
    "tf-idf 1-3 grams, ridge": (TfidfVectorizer(ngram_range=(1, 3)), Ridge()),
    "tf-idf, case kept": (TfidfVectorizer(lowercase=False), LogisticRegression()),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_text_pipelines_use_the_c_scorer_and_match_onnxruntime(complaints, variant):
    vectorizer, estimator = VARIANTS[variant]
    target = complaints["positive"]
    if "3-class" in variant:
        target = np.arange(len(complaints)) % 3
    elif "ridge" in variant:
        target = target.astype(float)
    model = make_pipeline(vectorizer, estimator).fit(complaints["text"], target)
    runtime = _runtime(model)
    assert runtime.scorer == NATIVE
    _assert_same_as_onnxruntime(runtime, _texts(complaints))


def test_the_c_scorer_matches_scikit_learn(complaints):
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(C=5.0))
    model.fit(complaints["text"], complaints["positive"])
    runtime = _runtime(model)
    got = runtime.predict({"text": complaints["text"].to_numpy(dtype=object).reshape(-1, 1)})
    want = model.predict_proba(complaints["text"])
    np.testing.assert_allclose(got["probabilities"], want, rtol=0, atol=PROBA_TOL)
    np.testing.assert_array_equal(got["label"], model.predict(complaints["text"]))


def test_arrow_arrays_of_every_string_layout_score_alike(complaints):
    """DuckDB's batches: plain, large and view strings, and slices (a non-zero Arrow offset)."""
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression())
    runtime = _runtime(model.fit(complaints["text"], complaints["positive"]))
    texts = _texts(complaints)
    want = _assert_same_as_onnxruntime(runtime, texts)["probabilities"]
    kinds = (pa.string(), pa.large_string(), pa.string_view())
    layouts = [pa.array(texts, type=kind) for kind in kinds]
    for array in layouts:
        np.testing.assert_array_equal(runtime.predict({"text": array})["probabilities"], want)
    sliced = layouts[0].slice(7, 500)
    got = runtime.predict({"text": sliced})["probabilities"]
    np.testing.assert_array_equal(got, want[7:507])


def test_graphs_it_does_not_reproduce_stay_on_onnxruntime(complaints):
    y = complaints["positive"]
    for vectorizer in (
        TfidfVectorizer(sublinear_tf=True),  # Log after the counts
        TfidfVectorizer(analyzer="char", ngram_range=(2, 3)),  # a per-character tokenizer
        CountVectorizer(binary=True),  # Casts after the counts
    ):
        runtime = _runtime(make_pipeline(vectorizer, LogisticRegression()).fit(complaints.text, y))
        assert runtime.text_scorer is None
        assert runtime.scorer == "onnxruntime"
        _assert_same_as_onnxruntime(runtime, _texts(complaints)[:50])


def test_a_scorer_that_disagrees_with_onnxruntime_is_not_used(complaints):
    """The load-time check is the safety net: tables that no longer lowercase (as if the C
    side misread the graph) must fail it."""
    model = make_pipeline(TfidfVectorizer(), LogisticRegression())
    proto = onnx.load_model_from_string(
        sklearn_to_onnx(model.fit(complaints.text, complaints.positive), {"text": "string"})
    )
    runtime = OnnxRuntime(proto.SerializeToString(), "m")
    graph = text._recognise(proto)
    tables = text._tables(graph)
    assert text._agrees(runtime.text_scorer, tables)
    tables["case_map"] = np.arange(256, dtype=np.uint8)  # no longer lowercases
    library = text.native_library()
    tail = runtime.text_scorer._tail
    wrong = text.TextScorer(graph, tables, library, runtime.session, tail)
    assert not text._agrees(wrong, tables)


def test_the_scorer_can_be_turned_off(complaints, monkeypatch):
    model = make_pipeline(TfidfVectorizer(), LogisticRegression())
    model.fit(complaints.text, complaints.positive)
    monkeypatch.setenv("SQLML_TEXT_SCORER", "0")
    assert _runtime(model).scorer == "onnxruntime"


def test_ml_predict_on_a_duckdb_file_uses_it_and_matches_onnxruntime(tmp_path, complaints):
    """Enough rows for several 2048-row batches on DuckDB's threads, NULLs (nulls='nan': the
    empty string) and non-ASCII rows among them."""
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression())
    model.fit(complaints["text"], complaints["positive"])
    texts = list(np.resize(_texts(complaints), 9000))
    texts[5] = texts[4000] = None
    db = sqlml.connect(tmp_path / "wh.duckdb")
    try:
        db.register_model("tone", model, label="positive", inputs={"text": "string"}, nulls="nan")
        assert db.runs_as("tone").startswith(NATIVE)
        db.con.register("rows", pd.DataFrame({"id": range(len(texts)), "text": texts}))
        db.con.execute("CREATE TABLE messages AS SELECT * FROM rows")
        got = db.sql(
            "SELECT id, predicted_positive, predicted_positive_probs[2].prob AS p "
            "FROM ML.PREDICT(MODEL tone, TABLE messages) ORDER BY id"
        ).df()
    finally:
        db.close()
    filled = np.array([t if t is not None else "" for t in texts], dtype=object)
    want = _runtime(model).session.run(None, {"text": filled.reshape(-1, 1)})
    np.testing.assert_array_equal(got["predicted_positive"], want[0])
    np.testing.assert_allclose(got["p"], want[1][:, 1], rtol=0, atol=ORT_TOL)
