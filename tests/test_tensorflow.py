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
