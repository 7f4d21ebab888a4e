"""The ONNX -> TensorFlow exporter against onnxruntime, the runtime sqlml scores with.

Parity: each scikit-learn model is converted exactly as users register it
(`sqlml.convert.sklearn_to_onnx`), exported, then reloaded in a fresh Python process that
imports only tensorflow and numpy, and compared with onnxruntime (one intra-op thread, as
sqlml runs it) on 10k generated rows: probabilities within 1e-5, labels equal except on rows
whose two top onnxruntime probabilities are exactly tied. Tree inputs include the trees' own
thresholds (the `<=` boundary) and, for the NaN models, NaN in ~10% of cells.
Also: both signatures' names/dtypes/shapes equal `sqlml.online`, `keyed_prediction` returns
the key and the same outputs, TFLite keeps both signatures and the labels, random tree
ensembles (every branch mode, missing-value direction, base_values, post_transform and
binary encoding) match onnxruntime, and what is refused is refused before anything is written.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("skl2onnx")

import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.ensemble import (  # noqa: E402
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402

from sqlml.convert import sklearn_to_onnx  # noqa: E402
from sqlml.errors import ArtifactError  # noqa: E402
from sqlml.export import ExportError, export_artifact, ops  # noqa: E402
from sqlml.online import KEYED_PREDICTION, SERVING_DEFAULT, online_signature  # noqa: E402
from sqlml.runtimes.onnx import OnnxRuntime, read_signature  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:Field onnx.AttributeProto.ints:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning"),
]
ROWS = 10_000
PROBA_TOL = 1e-5
MAX_TIES = 0.01  # of the rows: exact top-two ties are rare in these models
FLOATS = ["f0", "f1", "f2", "f3"]
MIXED = {"age": "float32", "income": "float32", "plan": "string", "region": "string"}


# -- data and models -------------------------------------------------------------------------


def _floats(n: int, seed: int, nan: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 4)).astype(np.float32), columns=FLOATS)
    return frame.mask(rng.random(frame.shape) < nan) if nan else frame


def _targets(frame: pd.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    noise = np.random.default_rng(seed).normal(scale=0.5, size=len(frame))
    x = frame.fillna(0.0).to_numpy(np.float64)
    score = x[:, 0] + 0.5 * x[:, 1] - 0.8 * x[:, 2] * x[:, 3] + noise
    binary = (score > 0).astype(np.int64)
    multi = np.array(["low", "mid", "high"])[np.digitize(score, [-0.7, 0.7])]
    return binary, multi, 2.0 * score + x[:, 3]


def _mixed(n: int, seed: int, categories: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 12, n).astype(np.float32),
            "income": rng.lognormal(3, 0.5, n).astype(np.float32),
            "plan": rng.choice(categories, n),
            "region": rng.choice(["north", "south", "east"], n),
        }
    )
    frame.loc[rng.random(n) < 0.1, "income"] = np.nan
    return frame


def _mixed_pipeline(estimator):
    columns = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
             ["age", "income"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "region"]),
        ]
    )  # fmt: skip
    return make_pipeline(columns, estimator)


def _model_specs() -> dict[str, tuple]:
    """name -> (estimator, train X, train y, input types, test X)."""
    train, train_nan = _floats(600, 1), _floats(600, 2, nan=0.1)
    test, test_nan = _floats(ROWS, 3), _floats(ROWS, 4, nan=0.1)
    yb, y3, yr = _targets(train, 5)
    nb, n3, nr = _targets(train_nan, 6)
    mixed_train = _mixed(600, 7, ["basic", "pro", "enterprise"])
    mixed_test = _mixed(ROWS, 8, ["basic", "pro", "enterprise", "trial"])  # trial: unseen
    mixed_y = ((mixed_train["age"] > 40) ^ (mixed_train["plan"] == "pro")).to_numpy(np.int64)
    floats = dict.fromkeys(FLOATS, "float32")
    small = {"random_state": 0}
    return {
        "lr_binary": (make_pipeline(StandardScaler(), LogisticRegression()), train, yb, floats,
                      test),
        "lr_multinomial_strings": (LogisticRegression(max_iter=500), train, y3, floats, test),
        "linear_regression": (LinearRegression(), train, yr, floats, test),
        "ridge": (make_pipeline(StandardScaler(), Ridge()), train, yr, floats, test),
        "rf_binary": (RandomForestClassifier(20, max_depth=5, **small), train, yb, floats, test),
        "rf_multi": (RandomForestClassifier(20, max_depth=5, **small), train, y3, floats, test),
        "rf_regressor": (RandomForestRegressor(20, max_depth=5, **small), train, yr, floats,
                         test),
        "gb_binary": (GradientBoostingClassifier(n_estimators=30, max_depth=3, **small), train,
                      yb, floats, test),
        "gb_multi": (GradientBoostingClassifier(n_estimators=20, max_depth=3, **small), train,
                     y3, floats, test),
        "gb_regressor": (GradientBoostingRegressor(n_estimators=30, max_depth=3, **small),
                         train, yr, floats, test),
        "hgb_binary_nan": (HistGradientBoostingClassifier(max_iter=30, max_depth=4, **small),
                           train_nan, nb, floats, test_nan),
        "hgb_multi_nan": (HistGradientBoostingClassifier(max_iter=20, max_depth=4, **small),
                          train_nan, n3, floats, test_nan),
        "hgb_regressor_nan": (HistGradientBoostingRegressor(max_iter=30, max_depth=4, **small),
                              train_nan, nr, floats, test_nan),
        "imputer_lr_nan": (make_pipeline(SimpleImputer(), StandardScaler(),
                                         LogisticRegression()), train_nan, nb, floats, test_nan),
        "mixed_lr": (_mixed_pipeline(LogisticRegression()), mixed_train, mixed_y, MIXED,
                     mixed_test),
        "mixed_gb": (_mixed_pipeline(GradientBoostingClassifier(n_estimators=20, **small)),
                     mixed_train, mixed_y, MIXED, mixed_test),
    }  # fmt: skip


MODELS = list(_model_specs())
TFLITE_MODELS = ["lr_binary", "gb_binary", "hgb_binary_nan", "rf_multi", "mixed_gb"]


def _with_thresholds(proto: onnx.ModelProto, frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Put 5% of the float cells exactly on a split threshold of their feature (the `<=` edge)."""
    trees = [n for n in proto.graph.node if n.op_type.startswith("TreeEnsemble")]
    if not trees or list(frame.columns) != FLOATS:
        return frame
    attrs = {a.name: helper.get_attribute_value(a) for a in trees[0].attribute}
    rng = np.random.default_rng(seed)
    frame = frame.copy()
    for j, column in enumerate(FLOATS):
        limits = np.asarray(attrs["nodes_values"], dtype=np.float32)[
            np.asarray(attrs["nodes_featureids"]) == j
        ]
        hit = rng.random(len(frame)) < 0.05
        if len(limits) and hit.any():
            frame.loc[hit, column] = rng.choice(limits, hit.sum())
    return frame


def _columns(frame: pd.DataFrame, types: dict[str, str]) -> dict[str, np.ndarray]:
    """Online feeds: one [n] array per column (numpy unicode for strings: no pickle in .npz)."""
    return {
        name: frame[name].to_numpy().astype(str if dtype == "string" else np.float32)
        for name, dtype in types.items()
    }


def _reference(runtime: OnnxRuntime, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return runtime.predict({k: v.reshape(-1, 1).astype(object if v.dtype.kind == "U" else v.dtype)
                            for k, v in columns.items()})  # fmt: skip


# Runs in a fresh interpreter: tensorflow and numpy only, nothing from sqlml.
SUBPROCESS = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf

    def spec(s):
        return [s.dtype.name, None if s.shape.rank is None else s.shape.as_list()]

    def plain(a):
        return a.astype(str) if a.dtype == object else a

    for entry in json.load(open(sys.argv[1])):
        loaded = tf.saved_model.load(entry["dir"])
        signatures = {}
        for name, function in loaded.signatures.items():
            _, inputs = function.structured_input_signature
            signatures[name] = {
                "inputs": {k: spec(s) for k, s in inputs.items()},
                "outputs": {k: spec(s) for k, s in function.structured_outputs.items()},
            }
        columns = dict(np.load(entry["inputs"]))
        feeds = {
            k: tf.constant(np.char.encode(v, "utf-8") if v.dtype.kind == "U" else v)
            for k, v in columns.items()
        }
        rows = len(next(iter(columns.values())))
        keys = np.array([("row-%d" % i).encode() for i in range(rows)], dtype=object)
        out = {}
        for k, v in loaded.signatures["serving_default"](**feeds).items():
            out["serving/" + k] = plain(v.numpy())
        keyed = loaded.signatures["keyed_prediction"](key=tf.constant(keys), **feeds)
        for k, v in keyed.items():
            out["keyed/" + k] = plain(v.numpy())
        np.savez(entry["outputs"], **out)
        with open(entry["signatures"], "w") as f:
            json.dump(signatures, f)
    """
)


class Exported:
    """One exported model: what went in, what onnxruntime says, what the fresh process saw."""

    def __init__(self, name, estimator, data, runtime, columns, folder):
        self.name, self.estimator, self.data, self.runtime = name, estimator, data, runtime
        self.columns, self.folder = columns, folder
        self.reference = _reference(runtime, columns)
        self.outputs: dict[str, np.ndarray] = {}
        self.signatures: dict = {}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Exported]:
    """Convert, export and reload every model (one subprocess for all of them)."""
    root = tmp_path_factory.mktemp("export")
    manifest, models = [], {}
    for name, (estimator, X, y, types, test) in _model_specs().items():
        estimator.fit(X, y)
        data = sklearn_to_onnx(estimator, types)
        runtime = OnnxRuntime(data, name)
        test = _with_thresholds(onnx.load_model_from_string(data), test, seed=len(name))
        columns = _columns(test, types)
        folder = export_artifact("onnx", data, runtime.signature, f"{name}@1", root / name)
        models[name] = Exported(name, estimator, data, runtime, columns, folder)
        np.savez(root / f"{name}-in.npz", **columns)
        manifest.append(
            {
                "dir": str(folder),
                "inputs": str(root / f"{name}-in.npz"),
                "outputs": str(root / f"{name}-out.npz"),
                "signatures": str(root / f"{name}-sig.json"),
            }
        )
    (root / "manifest.json").write_text(json.dumps(manifest))
    result = subprocess.run(
        [sys.executable, "-c", SUBPROCESS, str(root / "manifest.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name, model in models.items():
        model.outputs = dict(np.load(root / f"{name}-out.npz"))
        model.signatures = json.loads((root / f"{name}-sig.json").read_text())
    return models


def _top_two_tied(probabilities: np.ndarray) -> np.ndarray:
    top = np.sort(probabilities, axis=1)[:, -2:]
    return top[:, 0] == top[:, 1]


def check_parity(model: Exported, got: dict[str, np.ndarray], where: str) -> str:
    """Assert parity with onnxruntime; return a one-line summary for the report."""
    signature = model.runtime.signature
    summary = [f"{model.name} [{where}]"]
    ties = None
    if signature.probabilities:
        ties = _top_two_tied(np.asarray(model.reference[signature.probabilities]))
    for tensor in signature.outputs:
        expected = np.asarray(model.reference[tensor.name])
        actual = np.asarray(got[tensor.name])
        assert actual.shape[0] == expected.shape[0], tensor.name
        actual = actual.reshape(expected.shape)
        if expected.dtype.kind == "f":
            assert actual.dtype == expected.dtype, tensor.name
            np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
            diff = float(np.nanmax(np.abs(actual.astype(np.float64) - expected)))
            assert diff <= PROBA_TOL, f"{model.name}.{tensor.name}: max abs diff {diff:.2e}"
            summary.append(f"{tensor.name} max|diff|={diff:.1e}")
        else:
            differ = expected.astype(str) != actual.astype(str)
            if ties is not None:
                assert not (differ & ~ties).any(), f"{model.name}: labels differ on untied rows"
                assert ties.mean() <= MAX_TIES, f"{model.name}: {ties.sum()} tied rows"
                summary.append(f"{tensor.name} differ={int(differ.sum())} ties={int(ties.sum())}")
            else:
                assert not differ.any(), tensor.name
    return " ".join(summary)


# -- SavedModel -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_savedmodel_matches_onnxruntime_in_a_fresh_process(exported, name):
    model = exported[name]
    got = {k.removeprefix("serving/"): v for k, v in model.outputs.items() if k[:8] == "serving/"}
    assert set(got) == {t.name for t in model.runtime.signature.outputs}
    print(check_parity(model, got, "SavedModel"))


@pytest.mark.parametrize("name", MODELS)
def test_signatures_are_the_online_signatures(exported, name):
    model = exported[name]
    assert set(model.signatures) == {SERVING_DEFAULT, KEYED_PREDICTION}
    for signature_name, seen in model.signatures.items():
        expected = online_signature(f"{name}@1", model.runtime.signature, signature_name)
        assert seen["inputs"] == {t.name: [t.dtype, list(t.shape)] for t in expected.inputs}
        assert seen["outputs"] == {t.name: [t.dtype, list(t.shape)] for t in expected.outputs}


@pytest.mark.parametrize("name", MODELS)
def test_keyed_prediction_returns_the_key_and_the_same_outputs(exported, name):
    outputs = exported[name].outputs
    keys = outputs["keyed/key"]
    assert keys.tolist() == [f"row-{i}" for i in range(ROWS)]
    for key, value in outputs.items():
        if key.startswith("serving/"):
            np.testing.assert_array_equal(outputs["keyed/" + key.removeprefix("serving/")], value)


@pytest.mark.parametrize("name", ["hgb_binary_nan", "hgb_multi_nan"])
def test_missing_values_follow_scikit_learn(exported, name):
    """NaN rows go where HistGradientBoosting sent them in training, not just where ORT does."""
    model = exported[name]
    frame = pd.DataFrame({k: v for k, v in model.columns.items()})
    expected = model.estimator.predict_proba(frame)
    got = model.outputs["serving/probabilities"]
    assert np.isnan(frame.to_numpy()).any(axis=1).mean() > 0.3
    np.testing.assert_allclose(got, expected, atol=1e-4)


# -- TFLite -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TFLITE_MODELS)
def test_tflite_keeps_both_signatures_and_the_labels(exported, tmp_path, name):
    model = exported[name]
    path = export_artifact(
        "onnx", model.data, model.runtime.signature, f"{name}@1", tmp_path / "m.tflite", "tflite"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]
    interpreter = tf.lite.Interpreter(model_path=str(path))
    signatures = interpreter.get_signature_list()
    assert set(signatures) == {SERVING_DEFAULT, KEYED_PREDICTION}
    feeds = {
        k: np.char.encode(v, "utf-8").astype(object) if v.dtype.kind == "U" else v
        for k, v in model.columns.items()
    }
    out = interpreter.get_signature_runner(SERVING_DEFAULT)(**feeds)
    got = {k: v.astype(str) if v.dtype == object else v for k, v in out.items()}
    print(check_parity(model, got, "TFLite"))
    label = next(t.name for t in model.runtime.signature.outputs if t.name == "label")
    np.testing.assert_array_equal(
        got[label].astype(str), np.asarray(model.reference[label]).astype(str)
    )  # not quantized: every threshold exactly as in the ONNX graph
    keys = np.array([f"k{i}".encode() for i in range(ROWS)], dtype=object)
    keyed = interpreter.get_signature_runner(KEYED_PREDICTION)(key=keys, **feeds)
    assert keyed["key"].tolist() == keys.tolist()
    np.testing.assert_array_equal(keyed["probabilities"], out["probabilities"])


# -- TensorFlow-format models -----------------------------------------------------------------


def test_tensorflow_model_gains_keyed_prediction_and_scalar_shapes(tmp_path):
    keras = pytest.importorskip("keras")
    from sqlml.artifacts import pack_directory
    from sqlml.convert import keras_to_saved_model
    from sqlml.runtimes.tensorflow import TensorFlowRuntime

    keras.utils.set_random_seed(0)
    inputs = {c: keras.Input(shape=(1,), name=c) for c in ("a", "b")}
    hidden = keras.layers.Dense(4, activation="relu")(
        keras.layers.Concatenate()([*inputs.values()])
    )
    net = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    data = pack_directory(keras_to_saved_model(net, tmp_path / "keras"))
    runtime = TensorFlowRuntime.from_archive(data, "net")
    assert runtime.signature.inputs[0].shape == (None, 1)  # the Keras model takes [n, 1]
    rows = {c: np.random.default_rng(i).normal(size=257).astype(np.float32)
            for i, c in enumerate(("a", "b"))}  # fmt: skip
    expected = runtime.predict({c: v.reshape(-1, 1) for c, v in rows.items()})["output_0"]

    folder = export_artifact("tensorflow", data, runtime.signature, "net@1", tmp_path / "out")
    loaded = tf.saved_model.load(str(folder))
    for name in (SERVING_DEFAULT, KEYED_PREDICTION):
        function = loaded.signatures[name]
        online = online_signature("net@1", runtime.signature, name)
        _, specs = function.structured_input_signature
        assert {k: (s.dtype.name, tuple(s.shape)) for k, s in specs.items()} == {
            t.name: (t.dtype, t.shape) for t in online.inputs
        }
        assert {k: tuple(s.shape) for k, s in function.structured_outputs.items()} == {
            t.name: t.shape for t in online.outputs
        }
    keys = tf.constant([f"r{i}" for i in range(257)])
    out = loaded.signatures[KEYED_PREDICTION](
        key=keys, **{c: tf.constant(v) for c, v in rows.items()}
    )
    np.testing.assert_allclose(out["output_0"].numpy(), expected.ravel(), atol=1e-6)
    assert out["key"].numpy().tolist() == keys.numpy().tolist()

    path = export_artifact(
        "tensorflow", data, runtime.signature, "net@1", tmp_path / "net.tflite", "tflite"
    )
    interpreter = tf.lite.Interpreter(model_path=str(path))
    assert set(interpreter.get_signature_list()) == {SERVING_DEFAULT, KEYED_PREDICTION}
    lite = interpreter.get_signature_runner(SERVING_DEFAULT)(**rows)
    np.testing.assert_allclose(lite["output_0"], expected.ravel(), atol=1e-5)


# -- onnxruntime's tree and linear semantics on hand-made graphs -------------------------------


def _graph(nodes, inputs, outputs, initializers=()) -> bytes:
    proto = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, list(initializers)),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 3)],
    )
    proto.ir_version = 9
    return proto.SerializeToString()


def _onnxruntime(data: bytes, feeds: dict) -> list | None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as sqlml: tree sums in tree order
    options.log_severity_level = 4  # refusals are expected here; keep stderr quiet
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception:
        return None  # a configuration onnxruntime itself refuses
    return session.run(None, feeds)


GRID = np.array([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=np.float32)
MODES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]


class _RandomTrees:
    """A few small random trees: thresholds on a grid the inputs also use, random modes."""

    def __init__(self, rng, prefix: str, outputs: int):
        self.rng, self.prefix = rng, prefix
        self.same_mode = rng.choice(MODES) if rng.random() < 0.5 else None
        self.ids = list(range(outputs)) if rng.random() < 0.6 else [int(rng.integers(outputs))]
        self.positive = rng.random() < 0.5
        self.attrs: dict[str, list] = {}
        for tree in range(int(rng.integers(1, 6))):
            self.grow(tree, [0], int(rng.integers(0, 4)))

    def add(self, **values) -> None:
        for key, value in values.items():
            self.attrs.setdefault(key, []).append(value)

    def grow(self, tree: int, count: list[int], depth: int) -> int:
        rng, node = self.rng, count[0]
        count[0] += 1
        index = len(self.attrs.get("nodes_treeids", []))
        leaf = depth == 0 or rng.random() < 0.25
        mode = "LEAF" if leaf else self.same_mode or rng.choice(MODES)
        self.add(nodes_treeids=tree, nodes_nodeids=node, nodes_modes=mode,
                 nodes_featureids=int(rng.integers(3)), nodes_values=float(rng.choice(GRID)),
                 nodes_truenodeids=0, nodes_falsenodeids=0,
                 nodes_missing_value_tracks_true=int(rng.random() < 0.4))  # fmt: skip
        if leaf:
            for k in [k for k in self.ids if rng.random() < 0.7] or self.ids[:1]:
                weight = float(rng.choice([0.1, 0.25, 0.3, 0.5, 1.0]))
                sign = 1.0 if self.positive else float(rng.choice([-1.0, 1.0]))
                self.add(**{f"{self.prefix}_treeids": tree, f"{self.prefix}_nodeids": node,
                            f"{self.prefix}_ids": k,
                            f"{self.prefix}_weights": weight * sign})  # fmt: skip
            return node
        self.attrs["nodes_truenodeids"][index] = self.grow(tree, count, depth - 1)
        self.attrs["nodes_falsenodeids"][index] = self.grow(tree, count, depth - 1)
        return node


def _random_tree_model(rng) -> tuple[bytes, list[str]]:
    transform = str(rng.choice(["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"]))
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])
    if rng.random() < 0.7:
        classes = int(rng.choice([2, 2, 3]))
        attrs = _RandomTrees(rng, "class", classes).attrs
        strings = rng.random() < 0.5
        if strings:
            attrs["classlabels_strings"] = [f"c{i}" for i in range(classes)]
        else:
            attrs["classlabels_int64s"] = [3, 7, 9][:classes]
        bases = int(rng.choice([0, 1, 2, classes]))
        if bases:
            attrs["base_values"] = [float(v) for v in rng.choice(GRID, bases)]
        node = helper.make_node("TreeEnsembleClassifier", ["X"], ["L", "Z"], domain="ai.onnx.ml",
                                post_transform=transform, **attrs)  # fmt: skip
        outputs = [
            helper.make_tensor_value_info("L", TensorProto.STRING if strings else TensorProto.INT64,
                                          [None]),
            helper.make_tensor_value_info("Z", TensorProto.FLOAT, [None, classes]),
        ]  # fmt: skip
    else:
        targets = int(rng.choice([1, 2]))
        attrs = _RandomTrees(rng, "target", targets).attrs
        bases = int(rng.choice([0, 1, targets]))
        if bases:
            attrs["base_values"] = [float(v) for v in rng.choice(GRID, bases)]
        node = helper.make_node(
            "TreeEnsembleRegressor", ["X"], ["Z"], domain="ai.onnx.ml", n_targets=targets,
            aggregate_function=str(rng.choice(["SUM", "AVERAGE", "MIN", "MAX"])),
            post_transform=transform if targets > 1 else "NONE", **attrs,
        )  # fmt: skip
        outputs = [helper.make_tensor_value_info("Z", TensorProto.FLOAT, [None, targets])]
    return _graph([node], [x], outputs), [o.name for o in outputs]


def test_random_tree_ensembles_match_onnxruntime():
    """Every branch mode, NaN direction, base_values count, post_transform, binary encoding."""
    rng = np.random.default_rng(2024)
    grid = np.append(GRID, [np.nan, 0.25, -0.75]).astype(np.float32)
    compared = refused = 0
    while compared < 60:
        data, names = _random_tree_model(rng)
        X = rng.choice(grid, size=(300, 3))
        expected = _onnxruntime(data, {"X": X})
        if expected is None:
            continue
        try:
            program = ops.compile_onnx(data, "random")
        except ExportError as error:
            assert "random" in str(error)
            refused += 1
            assert refused < 25, "the translator refuses too many valid ensembles"
            continue
        got = program({"X": tf.constant(X)})
        for name, want in zip(names, expected):
            value = got[name].numpy()
            if want.dtype.kind == "f":
                np.testing.assert_allclose(value, want, atol=2e-6, equal_nan=True)
            else:
                np.testing.assert_array_equal(value.astype(str), want.astype(str))
        compared += 1


@pytest.mark.parametrize("transform", ["NONE", "LOGISTIC", "SOFTMAX"])
def test_linear_classifier_with_one_coefficient_row(transform):
    """onnxruntime answers [1 - p, p]; label by score > 0."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])
    node = helper.make_node(
        "LinearClassifier", ["X"], ["L", "Z"], domain="ai.onnx.ml", classlabels_ints=[4, 9],
        coefficients=[2.0, -1.0], intercepts=[-0.5], post_transform=transform,
    )  # fmt: skip
    outputs = [
        helper.make_tensor_value_info("L", TensorProto.INT64, [None]),
        helper.make_tensor_value_info("Z", TensorProto.FLOAT, [None, 2]),
    ]
    data = _graph([node], [x], outputs)
    X = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)
    labels, scores = _onnxruntime(data, {"X": X})
    got = ops.compile_onnx(data, "lc")({"X": tf.constant(X)})
    np.testing.assert_array_equal(got["L"].numpy(), labels)
    np.testing.assert_allclose(got["Z"].numpy(), scores, atol=1e-6)


# -- what is refused, and that nothing is written then ----------------------------------------


def _identity_model(input_name: str = "x", op: str = "Identity", domain: str = "") -> bytes:
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    return _graph([helper.make_node(op, [input_name], ["y"], name="step_1", domain=domain)],
                  [x], [y])  # fmt: skip


def _signature(data: bytes, model: str = "m"):
    return read_signature(onnx.load_model_from_string(data), model)


def test_unsupported_op_in_a_text_pipeline_is_refused_before_writing(tmp_path, text_model):
    data = sklearn_to_onnx(text_model, {"review": "string"})
    target = tmp_path / "out" / "text"
    target.parent.mkdir()
    with pytest.raises(ExportError) as error:
        export_artifact("onnx", data, _signature(data), "reviews@2", target)
    message = str(error.value)
    assert "reviews@2" in message and "ai.onnx.StringNormalizer" in message
    assert "node 'StringNormalizer'" in message or "node '" in message
    assert isinstance(error.value, ArtifactError)
    assert list(target.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("op", "domain", "expected"),
    [
        ("Selu", "", "ai.onnx.Selu (node 'step_1')"),
        ("Gelu", "com.microsoft", "com.microsoft.Gelu (node 'step_1')"),
    ],
)
def test_hand_made_graph_with_an_unmapped_op(tmp_path, op, domain, expected):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    node = helper.make_node(op, ["x"], ["y"], name="step_1", domain=domain)
    proto = helper.make_model(
        helper.make_graph([node], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)],
    )
    proto.ir_version = 9
    data = proto.SerializeToString()
    signature = read_signature(proto, "m")
    with pytest.raises(
        ExportError, match=re.escape(f"model odd@1: cannot export ONNX op {expected}")
    ):
        ops.compile_onnx(data, "odd@1")
    with pytest.raises(ExportError):
        export_artifact("onnx", data, signature, "odd@1", tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_unsupported_attribute_value_is_named(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
    node = helper.make_node(
        "LinearClassifier", ["x"], ["label", "probabilities"], domain="ai.onnx.ml", name="lin",
        classlabels_ints=[0, 1, 2], coefficients=[1.0, 2.0, 3.0], intercepts=[0.0, 0.0, 0.0],
        post_transform="PROBIT",
    )  # fmt: skip
    outputs = [
        helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3]),
    ]
    data = _graph([node], [x], outputs)
    with pytest.raises(ExportError, match=r"node 'lin'.*post_transform='PROBIT' is not supported"):
        export_artifact("onnx", data, _signature(data), "p@1", tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_a_tree_with_a_cycle_is_refused():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    node = helper.make_node(
        "TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml", name="loop", n_targets=1,
        nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0],
        nodes_values=[0.0, 1.0, 0.0], nodes_modes=["BRANCH_LEQ", "BRANCH_LEQ", "LEAF"],
        nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 2, 0],
        target_ids=[0], target_nodeids=[2], target_treeids=[0], target_weights=[1.0],
    )  # fmt: skip
    with pytest.raises(ExportError, match=r"model loop@1: .*node 'loop'.*cycle"):
        ops.compile_onnx(_graph([node], [x], [y]), "loop@1")


def test_corrupt_onnx_bytes(tmp_path):
    data = _identity_model()
    with pytest.raises(ExportError, match="model bad@1: not a loadable ONNX model"):
        export_artifact("onnx", b"\x08garbage" + data[:40], _signature(data), "bad@1",
                        tmp_path / "bad")  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_column_names_tensorflow_would_rename_are_refused(tmp_path):
    data = _identity_model("mean radius")
    with pytest.raises(ExportError, match="'mean radius'"):
        export_artifact("onnx", data, _signature(data), "c@1", tmp_path / "c")
    assert list(tmp_path.iterdir()) == []


def test_a_model_with_a_key_tensor_has_serving_default_only(tmp_path):
    data = _identity_model("key")
    folder = export_artifact("onnx", data, _signature(data), "k@1", tmp_path / "k")
    loaded = tf.saved_model.load(str(folder))
    assert set(loaded.signatures) == {SERVING_DEFAULT}
    out = loaded.signatures[SERVING_DEFAULT](key=tf.constant([1.5, 2.5], tf.float32))
    assert out["y"].numpy().tolist() == [1.5, 2.5]


def test_a_failed_reexport_leaves_the_previous_export_intact(tmp_path, monkeypatch, text_model):
    data = _identity_model()
    target = tmp_path / "model"
    export_artifact("onnx", data, _signature(data), "m@1", target)
    before = sorted(p.relative_to(target) for p in target.rglob("*"))

    bad = sklearn_to_onnx(text_model, {"review": "string"})
    with pytest.raises(ExportError):  # refused while compiling
        export_artifact("onnx", bad, _signature(bad), "m@2", target)

    from sqlml.export import saved_model

    def crash(module, directory: Path, model: str) -> None:  # fails halfway through writing
        directory.mkdir()
        (directory / "saved_model.pb").write_bytes(b"partial")
        raise ExportError(f"model {model}: disk full")

    monkeypatch.setattr(saved_model, "save", crash)
    with pytest.raises(ExportError, match="disk full"):
        export_artifact("onnx", data, _signature(data), "m@3", target)
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    loaded = tf.saved_model.load(str(target))
    assert loaded.signatures[SERVING_DEFAULT](x=tf.constant([3.0]))["y"].numpy().tolist() == [3.0]

    monkeypatch.undo()  # a successful export replaces it (BigQuery's EXPORT MODEL overwrites)
    negate = _identity_model(op="Neg")
    export_artifact("onnx", negate, _signature(negate), "m@4", target)
    loaded = tf.saved_model.load(str(target))
    assert loaded.signatures[SERVING_DEFAULT](x=tf.constant([3.0]))["y"].numpy().tolist() == [-3.0]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_tflite_refuses_ops_without_a_builtin(tmp_path):
    """float64 inputs would need Flex ops, which tf.lite.Interpreter here cannot run."""
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 1])
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, [None, 1])
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=1)
    index = helper.make_tensor("i", TensorProto.INT64, [1], [0])
    data = _graph([node], [x], [y], [index])
    target = tmp_path / "d.tflite"
    with pytest.raises(ExportError, match=r"model d@1: cannot convert to TFLite: .*GatherV2"):
        export_artifact("onnx", data, _signature(data), "d@1", target, "tflite")
    assert list(tmp_path.iterdir()) == []
