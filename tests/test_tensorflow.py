"""TensorFlow SavedModels and Keras models: numeric and string inputs, compared with Keras."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")  # the `tf` extra is part of the test install
tf = pytest.importorskip("tensorflow")

KERAS_TOL = 1e-5


@pytest.fixture(scope="module")
def keras_tabular(cancer):
    X, y = cancer
    columns = ["mean_radius", "mean_texture", "worst_area"]
    keras.utils.set_random_seed(0)
    inputs = {c: keras.Input(shape=(1,), name=c) for c in columns}
    x = keras.layers.Concatenate()(list(inputs.values()))
    normalize = keras.layers.Normalization()
    normalize.adapt(X[columns].to_numpy())
    x = keras.layers.Dense(8, activation="relu")(normalize(x))
    output = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, output)
    model.compile("adam", "binary_crossentropy")
    model.fit({c: X[[c]].to_numpy() for c in columns}, y.to_numpy(), epochs=3, verbose=0)
    return model, columns


def strings(values) -> object:
    """Keras wants string batches as tf tensors of shape (n, 1)."""
    return tf.constant([[str(v)] for v in values])


@pytest.fixture(scope="module")
def keras_text(reviews):
    keras.utils.set_random_seed(0)
    vectorize = keras.layers.TextVectorization(max_tokens=200, output_mode="tf_idf")
    vectorize.adapt(reviews["review"].to_numpy())
    text = keras.Input(shape=(1,), dtype="string", name="review")
    output = keras.layers.Dense(1, activation="sigmoid")(vectorize(text))
    model = keras.Model(text, output)
    model.compile("adam", "binary_crossentropy")
    model.fit(strings(reviews["review"]), reviews["positive"].to_numpy(), epochs=5, verbose=0)
    return model


def test_keras_tabular_model(db, cancer, keras_tabular):
    X, y = cancer
    model, columns = keras_tabular
    version = db.register_model("keras_cancer", model, label="malignant", classes=[0, 1])
    assert version.format == "tensorflow"
    assert [t.name for t in version.signature.inputs] == sorted(columns)
    db.con.register("frame", X.assign(id=np.arange(len(X))))
    out = db.sql(
        "SELECT id, output_0, predicted_malignant, predicted_malignant_probs "
        "FROM ML.PREDICT(MODEL keras_cancer, TABLE frame) ORDER BY id"
    ).df()
    expected = model.predict({c: X[[c]].to_numpy() for c in columns}, verbose=0).ravel()
    assert np.abs(out["output_0"].to_numpy() - expected).max() < KERAS_TOL
    np.testing.assert_array_equal(out["predicted_malignant"], (expected > 0.5).astype(int))
    probs = out["predicted_malignant_probs"].iloc[0]
    assert probs[1]["prob"] == pytest.approx(expected[0], abs=KERAS_TOL)
    assert probs[0]["prob"] == pytest.approx(1 - expected[0], abs=KERAS_TOL)
    # the scalar form takes the inputs in signature (sorted name) order
    args = ", ".join(sorted(columns))
    scalar = db.sql(f"SELECT keras_cancer({args}).output_0 FROM frame ORDER BY id").fetchnumpy()
    assert np.abs(next(iter(scalar.values())) - expected).max() < KERAS_TOL


def test_keras_text_model_strings_in(db, reviews, keras_text):
    db.register_model("keras_sentiment", keras_text, label="positive", classes=[0, 1])
    db.con.register("reviews_frame", reviews.assign(id=np.arange(len(reviews))))
    out = db.sql(
        "SELECT id, review, output_0 FROM ML.PREDICT(MODEL keras_sentiment, TABLE reviews_frame) "
        "ORDER BY output_0 DESC, id LIMIT 5"
    ).df()
    expected = keras_text.predict(strings(reviews["review"]), verbose=0).ravel()
    top = np.lexsort((np.arange(len(expected)), -expected))[:5]
    assert list(out["id"]) == list(top)
    assert np.abs(out["output_0"].to_numpy() - expected[top]).max() < KERAS_TOL
    # a text network (TextVectorization) stays in TensorFlow, and says so
    assert db.runs_as("keras_sentiment").startswith("TensorFlow (the SavedModel's serving_default)")


def test_saved_model_folder_via_create_model(db, tmp_path, reviews, keras_text):
    folder = tmp_path / "sentiment_savedmodel"
    keras_text.export(str(folder), verbose=False)
    db.sql(f"CREATE MODEL sentiment OPTIONS(model_type='tensorflow', model_path='{folder}/*')")
    version = db.model("sentiment")
    assert version.format == "tensorflow"
    assert version.signature.inputs[0].dtype == "string"
    got = db.sql(
        "SELECT output_0 FROM ML.PREDICT(MODEL sentiment, (SELECT 'great value' AS review))"
    ).fetchall()[0][0]
    expected = keras_text.predict(strings(["great value"]), verbose=0).item()
    assert got == pytest.approx(expected, abs=KERAS_TOL)


def _onnx_form_row(db, version):
    return db.con.execute(
        "SELECT sha256, converter, reason FROM sqlml.derived_artifacts "
        "WHERE source_sha256 = ? AND kind = 'onnx'",
        [version.sha256],
    ).fetchall()


def test_keras_network_runs_in_onnxruntime_after_a_checked_translation(
    tmp_path, cancer, keras_tabular
):
    """Standard-layer networks are translated to ONNX (sqlml.tf_onnx) and served by
    onnxruntime, also after reopening the file; the values still match Keras."""
    import sqlml
    from sqlml.runtimes.onnx import OnnxRuntime
    from sqlml.runtimes.tensorflow import TensorFlowRuntime

    X, _ = cancer
    model, columns = keras_tabular
    path = tmp_path / "k.duckdb"
    with sqlml.connect(path) as db:
        fast = db.register_model("k", model, label="y", classes=[0, 1])
        slow = db.register_model("k_tf", model, label="y", classes=[0, 1], engine="runtime")
        ((digest, converter, reason),) = _onnx_form_row(db, fast)
        assert digest is not None and converter >= 1 and reason is None
        assert _onnx_form_row(db, slow) == [(None, 1, "registered with engine='runtime'")]
        assert isinstance(db.runtime(fast), OnnxRuntime)
        assert isinstance(db.runtime(slow), TensorFlowRuntime)
    expected = model.predict({c: X[[c]].to_numpy() for c in columns}, verbose=0).ravel()
    with sqlml.connect(path, read_only=True) as db:
        db.con.register("frame", X.assign(id=np.arange(len(X))))
        assert isinstance(db.runtime(db.model("k")), OnnxRuntime)
        for name in ("k", "k_tf"):
            out = db.sql(
                f"SELECT output_0 FROM ML.PREDICT(MODEL {name}, TABLE frame) ORDER BY id"
            ).fetchnumpy()["output_0"]
            assert np.abs(out - expected).max() < KERAS_TOL, name


def test_text_network_keeps_tensorflow_and_says_why(db, keras_text):
    version = db.register_model("kt", keras_text, label="positive", classes=[0, 1])
    ((digest, _, reason),) = _onnx_form_row(db, version)
    assert digest is None and "'review' is string" in reason


def test_tampered_onnx_form_is_refused(tmp_path, keras_tabular):
    import sqlml
    from sqlml.errors import ArtifactError

    model, columns = keras_tabular
    path = tmp_path / "k.duckdb"
    with sqlml.connect(path) as db:
        version = db.register_model("k", model)
        ((digest, _, _),) = _onnx_form_row(db, version)
        db.con.execute(
            "UPDATE sqlml.artifacts SET data = data || '\\x00'::BLOB WHERE sha256 = ?", [digest]
        )
    with (
        sqlml.connect(path) as db,
        pytest.raises(ArtifactError, match="model k@1: its onnx form .* modified"),
    ):
        row = ", ".join(f"1.0 AS {c}" for c in columns)
        db.sql(f"SELECT * FROM ML.PREDICT(MODEL k, (SELECT {row}))").fetchall()


def test_translation_covers_common_layers_and_refuses_others(tmp_path):
    """Each Keras layer translated is compared with TensorFlow on probe rows; an op outside
    the table is a NotConvertible naming it."""
    from sqlml import convert, tf_onnx
    from sqlml.runtimes.onnx import OnnxRuntime
    from sqlml.runtimes.tensorflow import TensorFlowRuntime

    keras.utils.set_random_seed(1)
    inputs = [keras.Input(shape=(1,), name=n) for n in ("a", "b", "c")]
    x = keras.layers.Concatenate()(inputs)
    x = keras.layers.Dense(6, activation="tanh")(x)
    x = keras.layers.Dense(5, activation="elu")(x)
    x = keras.layers.Dense(4, activation="relu6")(x)
    x = keras.layers.LeakyReLU(negative_slope=0.2)(x)
    x = keras.layers.Dense(3, activation="softmax")(x)
    heads = [keras.layers.Lambda(lambda t, i=i: t[:, i : i + 1])(x) for i in range(1)]
    model = keras.Model(inputs, [x, keras.layers.Dense(1)(heads[0])])
    runtime = TensorFlowRuntime(convert.keras_to_saved_model(model, tmp_path), "m")
    with pytest.raises(tf_onnx.NotConvertible, match="output_0.*shape"):
        tf_onnx.convert(runtime.serving_function, runtime.signature)  # [n, 3] softmax output

    simple = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    runtime = TensorFlowRuntime(convert.keras_to_saved_model(simple, tmp_path / "s"), "s")
    translated = OnnxRuntime(tf_onnx.convert(runtime.serving_function, runtime.signature), "s")
    tf_onnx.verify(runtime, translated, runtime.signature)
    feeds = tf_onnx.probe_inputs(runtime.signature)
    got = translated.predict(feeds)["output_0"]
    want = runtime.predict(feeds)["output_0"]
    assert np.abs(got - want).max() < 1e-5

    sliced = keras.Model(inputs, keras.layers.Dense(1)(heads[0]))
    runtime = TensorFlowRuntime(convert.keras_to_saved_model(sliced, tmp_path / "x"), "x")
    with pytest.raises(tf_onnx.NotConvertible, match="TensorFlow op StridedSlice"):
        tf_onnx.convert(runtime.serving_function, runtime.signature)
