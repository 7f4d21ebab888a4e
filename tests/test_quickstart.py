"""The README quickstart runs end to end and its SQL answers equal the training libraries'."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from sqlml import demo

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
TOL = 1e-5


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("quickstart", QUICKSTART)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(tmp_path_factory.mktemp("quickstart"))


def test_batch_scores_equal_sklearn(results):
    patients, trees, scores = results["patients"], results["trees"], results["scores"]
    features = patients[demo.feature_columns(patients)]
    np.testing.assert_array_equal(scores["id"], patients["id"])
    assert np.abs(scores["p_malignant"] - trees.predict_proba(features)[:, 1]).max() < TOL
    np.testing.assert_array_equal(scores["predicted_malignant"], trees.predict(features))


def test_five_most_positive_complaints(results):
    complaints, text = results["complaints"], results["text"]
    p = text.predict_proba(complaints["text"])[:, 1]
    order = np.lexsort((complaints["complaint_id"].to_numpy(), -p))[:5]
    top5 = results["top5"]
    assert list(top5["complaint_id"]) == list(complaints["complaint_id"].iloc[order])
    assert np.abs(top5["p_positive"].to_numpy() - np.round(p[order], 4)).max() < 1e-4 + TOL


def test_keyed_join_accuracy_equals_sklearn(results):
    complaints, text = results["complaints"], results["text"]
    expected = (text.predict(complaints["text"]) == complaints["positive"]).mean()
    assert results["accuracy"] == pytest.approx(expected, abs=1e-12)


def test_keras_scores_equal_keras(results):
    patients, model = results["patients"], results["keras"]
    expected = model.predict(demo.keras_inputs(patients), verbose=0).ravel()
    assert np.abs(results["keras_scores"]["p"].to_numpy() - expected).max() < TOL


def test_the_example_project_runs_and_compiles(results):
    """The templated project part of the quickstart (examples/clinic, tested in depth in
    test_project.py): every file built, the evaluation's numbers from sklearn."""
    from sklearn import metrics as skm

    assert results["clinic_run"].ok and len(results["clinic_run"].files) == 7
    tables = results["clinic"]
    scores = tables["scores"].sort_values("id")
    truth = results["patients"].sort_values("id")["malignant"].to_numpy()
    evaluation = tables["evaluation"].iloc[0]
    assert evaluation["roc_auc"] == pytest.approx(
        skm.roc_auc_score(truth, scores["p_malignant"]), abs=1e-6
    )
    assert list(tables["drift"].query("is_anomaly")["input"]) == ["mean_radius"]
    assert len(tables["top_patients"]) == 4 * 3  # k = 3 in each of four clinics
    assert (results["clinic_bigquery"].out / "manifest.json").is_file()


def test_the_online_step_exports_and_serves_the_classifier(results):
    """Step 9: the SavedModel and the server answer as scikit-learn does."""
    import tensorflow as tf

    patients, trees = results["patients"], results["trees"]
    features = demo.feature_columns(patients)
    expected = trees.predict_proba(patients[features].head(2))
    served = results["served"]["predictions"]
    assert [p["key"] for p in served] == [f"patient-{i}" for i in patients["id"].head(2)]
    np.testing.assert_allclose([p["probabilities"] for p in served], expected, atol=TOL)
    serve = tf.saved_model.load(str(results["exported"])).signatures["serving_default"]
    rows = patients[features].head(2)
    out = serve(**{n: tf.constant(rows[n].to_numpy(np.float32)) for n in features})
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=TOL)
