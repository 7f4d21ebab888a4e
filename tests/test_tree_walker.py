"""The C tree walker (sqlml.runtimes.trees): built, used for bare tree ensembles, and exact.

Exact means: labels identical to onnxruntime's and scores bit-identical (regressors, forests),
probabilities within 5e-7 (onnxruntime's approximated logistic/softmax), on rows placed exactly
on the trees' thresholds, one float step either side, and NaN. Against scikit-learn (float64)
within the suite's PROBA_TOL.
"""

from __future__ import annotations

import threading

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.compose import make_column_transformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

import sqlml
from sqlml.convert import sklearn_to_onnx
from sqlml.errors import ArtifactError
from sqlml.runtimes import trees
from sqlml.runtimes.onnx import OnnxRuntime
from sqlml.runtimes.parts import single_thread_session

PROBA_TOL = 1e-5  # scikit-learn sums in float64, ONNX in float32
ORT_TOL = 5e-7  # onnxruntime's approximated logistic / softmax: a few float32 ulps


def _data(loader, missing: bool = False):
    x, y = loader(return_X_y=True)
    x = x.astype(np.float32)
    if missing:
        x = x.copy()
        x[np.random.default_rng(1).random(x.shape) < 0.1] = np.nan
    return x, y


def _names(x: np.ndarray) -> list[str]:
    return [f"f{i}" for i in range(x.shape[1])]


def _feed(x: np.ndarray) -> dict[str, np.ndarray]:
    return {name: x[:, [i]] for i, name in enumerate(_names(x))}


def _onnx(estimator, x: np.ndarray) -> bytes:
    return sklearn_to_onnx(estimator, dict.fromkeys(_names(x), "float32"))


def _session(data: bytes) -> ort.InferenceSession:
    """One thread, as sqlml runs it: with more, onnxruntime splits the trees among threads
    and adds the partial sums in another order (last-bit differences)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _edge_rows(estimator_x: np.ndarray, data: bytes, rows: int = 20_000) -> np.ndarray:
    """Rows drawn from the training data, with cells moved onto thresholds, one float step
    either side of them, and to NaN."""
    proto = onnx.load_model_from_string(data)
    node = next(n for n in proto.graph.node if n.op_type.startswith("TreeEnsemble"))
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    features = np.asarray(attrs["nodes_featureids"])
    thresholds = np.asarray(attrs["nodes_values"], dtype=np.float32)
    rng = np.random.default_rng(7)
    x = estimator_x[rng.integers(len(estimator_x), size=rows)].copy()
    for j in range(x.shape[1]):
        used = thresholds[features == j]
        if len(used):
            take = rng.random(rows) < 0.3
            picked = rng.choice(used, size=rows)
            step = rng.integers(-1, 2, size=rows).astype(np.float32)
            direction = np.where(step < 0, -np.inf, np.inf).astype(np.float32)
            moved = np.where(step == 0, picked, np.nextafter(picked, direction))
            x[take, j] = moved[take]
    x[rng.random(x.shape) < 0.03] = np.nan
    return x


def test_the_native_walker_is_built():
    """`pip install` compiles sqlml/native/treewalk.c: CI has gcc, so it must load."""
    library = trees.native_library()
    assert library is not None
    assert library.sqlml_treewalk_abi() == trees.ABI


CLASSIFIERS = {
    "gbdt_binary": (lambda: GradientBoostingClassifier(n_estimators=30, max_depth=4), "cancer"),
    "gbdt_3_classes": (lambda: GradientBoostingClassifier(n_estimators=20), "iris"),
    "forest_binary": (lambda: RandomForestClassifier(n_estimators=15), "cancer"),
    "forest_3_classes": (lambda: RandomForestClassifier(n_estimators=15), "iris"),
    "extra_trees": (lambda: ExtraTreesClassifier(n_estimators=15), "cancer"),
    "decision_tree": (lambda: DecisionTreeClassifier(max_depth=8), "iris"),
    "histgb_nan_binary": (lambda: HistGradientBoostingClassifier(max_iter=30), "cancer_nan"),
    "histgb_nan_3_classes": (lambda: HistGradientBoostingClassifier(max_iter=20), "iris_nan"),
}
REGRESSORS = {
    "gbdt": lambda: GradientBoostingRegressor(n_estimators=40, max_depth=4),
    "forest": lambda: RandomForestRegressor(n_estimators=15, max_depth=10),
    "decision_tree": lambda: DecisionTreeRegressor(max_depth=10),
    "histgb_nan": lambda: HistGradientBoostingRegressor(max_iter=30),
}
DATASETS = {
    "cancer": (load_breast_cancer, False),
    "iris": (load_iris, False),
    "cancer_nan": (load_breast_cancer, True),
    "iris_nan": (load_iris, True),
}


@pytest.mark.parametrize("case", sorted(CLASSIFIERS))
def test_classifiers_match_onnxruntime_and_sklearn(case):
    make, dataset = CLASSIFIERS[case]
    loader, missing = DATASETS[dataset]
    x, y = _data(loader, missing)
    labels = np.asarray(["setosa", "versicolor", "virginica"])[y] if dataset == "iris" else y
    estimator = make().set_params(random_state=0).fit(x, labels)
    data = _onnx(estimator, x)
    runtime = OnnxRuntime(data, case)
    assert runtime.tree_scorer is not None, "a bare tree ensemble must use the walker"
    edge = _edge_rows(x, data)
    got = runtime.predict(_feed(edge))
    want = dict(zip(["label", "probabilities"], _session(data).run(None, _feed(edge))))
    assert got["label"].dtype == want["label"].dtype
    np.testing.assert_array_equal(got["label"], want["label"])
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=0, atol=ORT_TOL)
    # scikit-learn on the training rows (its float64 thresholds differ from ONNX's float32 ones
    # in the last bits, so rows set exactly on a threshold are for the onnxruntime check)
    ours = runtime.predict(_feed(x))
    np.testing.assert_allclose(ours["probabilities"], estimator.predict_proba(x), atol=PROBA_TOL)
    np.testing.assert_array_equal(ours["label"], estimator.predict(x))


@pytest.mark.parametrize("case", sorted(REGRESSORS))
def test_regressors_match_onnxruntime_bit_for_bit(case):
    x, y = _data(load_diabetes, missing=case == "histgb_nan")
    estimator = REGRESSORS[case]().set_params(random_state=0).fit(x, y)
    data = _onnx(estimator, x)
    runtime = OnnxRuntime(data, case)
    assert runtime.tree_scorer is not None
    edge = _edge_rows(x, data)
    got = runtime.predict(_feed(edge))["variable"]
    (want,) = _session(data).run(None, _feed(edge))
    assert got.shape == want.shape == (len(edge), 1) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)  # same float32 sums in the same tree order
    ours = runtime.predict(_feed(x))["variable"][:, 0]
    np.testing.assert_allclose(ours, estimator.predict(x), rtol=1e-5, atol=1e-3)


def test_unbalanced_trees_walk_only_the_rows_not_yet_at_a_leaf():
    """Deep unbalanced trees switch to a list of the rows still walking; balanced ones stay
    level by level; both give the same bits."""
    x, y = _data(load_breast_cancer, missing=True)
    forest = RandomForestClassifier(n_estimators=10, random_state=0)  # unlimited depth
    forest.fit(np.nan_to_num(x), y)
    runtime = OnnxRuntime(_onnx(forest, x), "forest")
    scorer = runtime.tree_scorer
    assert (scorer._every < scorer._depths).all()  # every tree is listed from some level on
    gbdt = GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0)
    gbdt_scorer = OnnxRuntime(_onnx(gbdt.fit(np.nan_to_num(x), y), x), "gbdt").tree_scorer
    assert (gbdt_scorer._every == gbdt_scorer._depths).all()
    edge = _edge_rows(x, _onnx(forest, x))
    listed = scorer.scores(edge)
    scorer._every = scorer._depths.copy()  # the same trees walked level by level throughout
    scorer._tables = scorer._pointers()
    np.testing.assert_array_equal(scorer.scores(edge), listed)


def _hand_made_regressor(
    modes: list[str], missing_true: list[int], aggregate: str = "SUM", columns: bool = False
) -> bytes:
    """Two trees over two features; the first: root (feature 0, 0.5) -> node (feature 1,
    -1.0) | leaf. Input: one [N, 2] matrix X, or (`columns`) f0 and f1 joined by a Concat."""
    node = onnx.helper.make_node(
        "TreeEnsembleRegressor",
        ["X"],
        ["variable"],
        domain="ai.onnx.ml",
        n_targets=1,
        nodes_treeids=[0, 0, 0, 0, 0, 1, 1, 1],
        nodes_nodeids=[0, 1, 2, 3, 4, 0, 1, 2],
        nodes_featureids=[0, 1, 0, 0, 0, 1, 0, 0],
        nodes_values=[0.5, -1.0, 0.0, 0.0, 0.0, 0.25, 0.0, 0.0],
        nodes_modes=[modes[0], modes[1], "LEAF", "LEAF", "LEAF", modes[2], "LEAF", "LEAF"],
        nodes_truenodeids=[1, 2, 0, 0, 0, 1, 0, 0],
        nodes_falsenodeids=[4, 3, 0, 0, 0, 2, 0, 0],
        nodes_missing_value_tracks_true=[*missing_true[:2], 0, 0, 0, missing_true[2], 0, 0],
        target_treeids=[0, 0, 0, 1, 1],
        target_nodeids=[2, 3, 4, 1, 2],
        target_ids=[0, 0, 0, 0, 0],
        target_weights=[1.0, 10.0, 100.0, 0.125, 0.5],
        base_values=[1000.0],
        aggregate_function=aggregate,
    )
    inputs = [onnx.helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [None, 2])]
    nodes = [node]
    if columns:
        names = ["f0", "f1"]
        inputs = [
            onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [None, 1]) for n in names
        ]
        nodes.insert(0, onnx.helper.make_node("Concat", names, ["X"], axis=1))
    graph = onnx.helper.make_graph(
        nodes,
        "hand_made",
        inputs,
        [onnx.helper.make_tensor_value_info("variable", onnx.TensorProto.FLOAT, [None, 1])],
    )
    opsets = [onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("ai.onnx.ml", 3)]
    proto = onnx.helper.make_model(graph, opset_imports=opsets, ir_version=9)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


@pytest.mark.parametrize(
    "modes, missing_true",
    [
        (["BRANCH_LEQ", "BRANCH_LEQ", "BRANCH_LEQ"], [0, 0, 0]),
        (["BRANCH_LT", "BRANCH_GTE", "BRANCH_GT"], [1, 0, 1]),
        (["BRANCH_GT", "BRANCH_LT", "BRANCH_GTE"], [0, 1, 1]),
        (["BRANCH_GTE", "BRANCH_GT", "BRANCH_LEQ"], [1, 1, 0]),
    ],
)
def test_every_ordering_mode_and_nan_side_matches_onnxruntime(modes, missing_true):
    data = _hand_made_regressor(modes, missing_true)
    runtime = OnnxRuntime(data, "hand_made")
    assert runtime.tree_scorer is not None
    values = np.asarray([-np.inf, -1.0, -0.5, 0.0, 0.25, 0.5, 1.0, np.inf, np.nan], np.float32)
    values = np.concatenate([values, np.nextafter(values, np.inf), np.nextafter(values, -np.inf)])
    grid = np.stack(np.meshgrid(values, values), axis=-1).reshape(-1, 2).astype(np.float32)
    got = runtime.predict({"X": grid})["variable"]
    (want,) = _session(data).run(None, {"X": grid})
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) >= 4  # the grid reaches several leaves of each tree


def _customers(rows: int = 3_000) -> tuple[pd.DataFrame, np.ndarray]:
    """Two float columns with missing values and one categorical string column."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 12, rows).astype(np.float32),
            "spend": rng.gamma(2.0, 50.0, rows).astype(np.float32),
            "plan": rng.choice(["basic", "plus", "pro"], rows),
        }
    )
    y = ((frame.age > 40) ^ (frame.plan == "plus")) | (frame.spend > 180)
    frame.loc[rng.random(rows) < 0.05, "spend"] = np.nan
    return frame, y.to_numpy().astype(int)


def _one_hot_forest():
    encode = make_column_transformer((OneHotEncoder(), ["plan"]), remainder=SimpleImputer())
    forest = RandomForestClassifier(n_estimators=21, random_state=0)  # odd: no 50:50 votes
    return make_pipeline(encode, forest)


PIPELINES = {
    "one_hot_then_forest": _one_hot_forest,
    "imputer_then_gbdt": lambda: make_pipeline(
        SimpleImputer(), GradientBoostingClassifier(n_estimators=30, random_state=0)
    ),
    "scaler_then_histgb_regressor": lambda: make_pipeline(  # NaN passes the scaler
        StandardScaler(), HistGradientBoostingRegressor(max_iter=30, random_state=0)
    ),
}


@pytest.mark.parametrize("case", sorted(PIPELINES))
def test_pipelines_run_their_steps_in_onnxruntime_and_their_trees_on_the_walker(case):
    frame, y = _customers()
    columns = ["age", "spend", "plan"] if case.startswith("one_hot") else ["age", "spend"]
    x = frame[columns]
    target = frame.age.fillna(0).to_numpy() * 2 + y if case.endswith("regressor") else y
    estimator = PIPELINES[case]().fit(x, target)
    types = {c: "string" if c == "plan" else "float32" for c in columns}
    data = sklearn_to_onnx(estimator, types)
    runtime = OnnxRuntime(data, case)
    assert runtime.tree_scorer is not None and runtime.tree_scorer._prefix is not None
    feed = {c: x[[c]].to_numpy().astype(object if c == "plan" else np.float32) for c in columns}
    got = runtime.predict(feed)
    names = [o.name for o in _session(data).get_outputs()]
    want = dict(zip(names, _session(data).run(None, feed)))
    assert sorted(got) == sorted(want)
    for name in names:  # the same steps (onnxruntime's), then the same float32 tree sums
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
        if name == "probabilities":
            np.testing.assert_allclose(got[name], want[name], rtol=0, atol=ORT_TOL)
        else:
            np.testing.assert_array_equal(got[name], want[name])
    if case.endswith("regressor"):
        # scikit-learn scales in float64, ONNX in float32: rows on the fine age splits flip
        # (2.5% here, the same in onnxruntime); the rest agree to float32 rounding
        close = np.isclose(got["variable"][:, 0], estimator.predict(x), rtol=1e-5, atol=1e-3)
        assert close.mean() > 0.95
    else:
        np.testing.assert_allclose(got["probabilities"], estimator.predict_proba(x), atol=PROBA_TOL)
        np.testing.assert_array_equal(got["label"], estimator.predict(x))


def test_graphs_the_walker_cannot_reproduce_stay_on_onnxruntime(monkeypatch):
    x, y = _data(load_breast_cancer)
    equality = _hand_made_regressor(["BRANCH_EQ", "BRANCH_LEQ", "BRANCH_LEQ"], [0, 0, 0])
    assert OnnxRuntime(equality, "equality").tree_scorer is None
    after = onnx.load_model_from_string(_hand_made_regressor(["BRANCH_LEQ"] * 3, [0, 0, 0]))
    after.graph.node[0].output[0] = "raw"  # post-processing of the trees' output
    after.graph.node.append(onnx.helper.make_node("Abs", ["raw"], ["variable"]))
    assert OnnxRuntime(after.SerializeToString(), "post_processed").tree_scorer is None
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y)
    doubles = sklearn_to_onnx(forest, dict.fromkeys(_names(x), "float64"))
    assert OnnxRuntime(doubles, "doubles").tree_scorer is None  # double splits compare apart
    monkeypatch.setenv("SQLML_TREE_WALKER", "0")
    assert OnnxRuntime(_onnx(forest, x), "switched_off").tree_scorer is None


def test_steps_that_feed_the_trees_too_few_features_get_an_error_not_a_stray_read():
    """The C code trusts the row width: a pipeline whose steps give fewer columns than the
    trees read (a tampered artifact) must be stopped in Python, naming the model."""
    proto = onnx.load_model_from_string(_hand_made_regressor(["BRANCH_LEQ"] * 3, [0, 0, 0]))
    proto.graph.node[0].input[0] = "first_column"  # the trees read features 0 and 1 ...
    starts, ends, axes = (
        onnx.helper.make_tensor(name, onnx.TensorProto.INT64, [1], [value])
        for name, value in (("starts", 0), ("ends", 1), ("axes", 1))
    )
    proto.graph.initializer.extend([starts, ends, axes])
    cut = onnx.helper.make_node("Slice", ["X", "starts", "ends", "axes"], ["first_column"])
    proto.graph.node.insert(0, cut)  # ... of a matrix cut down to one column
    runtime = OnnxRuntime(proto.SerializeToString(), "tampered")
    assert runtime.tree_scorer is not None and runtime.tree_scorer._prefix is not None
    rows = np.ones((4, 2), dtype=np.float32)
    with pytest.raises(ArtifactError, match=r"model tampered: its trees read 2 features, but "):
        runtime.predict({"X": rows})


def test_a_walker_that_disagrees_with_onnxruntime_is_not_used():
    """The load-time probe is the safety net: a wrong table must be caught by it."""
    x, y = _data(load_breast_cancer)
    estimator = GradientBoostingClassifier(n_estimators=10, random_state=0).fit(x, y)
    data = _onnx(estimator, x)
    proto = onnx.load_model_from_string(data)
    scorer = trees.tree_scorer(proto, "gbdt")
    assert scorer is not None
    graph = trees._recognise(proto)
    ensemble, _, _ = trees._plan(trees.Node(graph.tree, "gbdt", 1, {}))  # type: ignore[misc]
    reference = single_thread_session(trees._alone(proto, graph.tree))
    assert trees._agrees(scorer, reference, ensemble)
    branches = scorer._nodes["feature"] != 0
    scorer._nodes["threshold"][branches] = np.nextafter(  # one float step off: caught
        scorer._nodes["threshold"][branches], np.float32(np.inf)
    )
    if scorer._complete is not None:  # the 16-row kernel's tables, built from the same nodes
        scorer._complete = trees._complete_trees(
            scorer._nodes, scorer._roots, scorer._depths, scorer._weights
        )
        assert not trees._agrees(scorer, reference, ensemble)
        scorer._complete = None
    assert not trees._agrees(scorer, reference, ensemble)


def test_concurrent_callers_get_the_same_answers():
    """DuckDB calls the scorer from several threads at once (ctypes drops the GIL)."""
    x, y = _data(load_breast_cancer)
    estimator = GradientBoostingClassifier(n_estimators=50, random_state=0).fit(x, y)
    runtime = OnnxRuntime(_onnx(estimator, x), "gbdt")
    rows = np.repeat(x, 20, axis=0)
    expected = runtime.predict(_feed(rows))["probabilities"]
    results: list[np.ndarray] = []

    def score() -> None:
        for _ in range(3):
            results.append(runtime.predict(_feed(rows))["probabilities"])

    threads = [threading.Thread(target=score) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 12
    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_ml_predict_over_a_duckdb_table_uses_the_walker(tmp_path):
    x, y = _data(load_breast_cancer, missing=True)
    estimator = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(x, y)
    rows = np.repeat(x, 30, axis=0)  # ~17k rows: several DuckDB chunks on both threads
    db = sqlml.connect(tmp_path / "trees.duckdb")
    try:
        frame = pd.DataFrame(rows, columns=_names(x))
        frame.insert(0, "id", np.arange(len(frame)))
        db.con.execute("SET threads = 2")
        db.con.execute("CREATE TABLE patients AS SELECT * FROM frame")
        # pandas NaN arrives as NULL; nulls="nan" hands it to the trees as missing
        db.register_model("tumour", estimator, label="y", inputs=_names(x), nulls="nan")
        runtime = db.runtime(db.model("tumour"))
        assert runtime.tree_scorer is not None
        result = db.sql(
            "SELECT id, predicted_y, predicted_y_probs FROM ML.PREDICT(MODEL tumour, "
            "TABLE patients) ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    assert len(result) == len(rows)
    expected = estimator.predict_proba(rows)[:, 1]
    probability = np.asarray([next(p["prob"] for p in r[2] if p["label"] == 1) for r in result])
    np.testing.assert_allclose(probability, expected, atol=PROBA_TOL)
    labels = np.asarray([r[1] for r in result])
    assert (labels == estimator.predict(rows)).mean() > 0.999


def test_ml_predict_of_a_pipeline_with_a_string_column_uses_the_walker(tmp_path):
    frame, y = _customers(5_000)
    estimator = _one_hot_forest().fit(frame, y)
    db = sqlml.connect(tmp_path / "customers.duckdb")
    try:
        db.con.register("customer_rows", frame.assign(id=np.arange(len(frame))))
        db.con.execute("CREATE TABLE customers AS SELECT * FROM customer_rows")
        db.register_model("churn", estimator, label="y", nulls="nan")  # plan read as a string
        runtime = db.runtime(db.model("churn"))
        assert runtime.tree_scorer is not None and runtime.tree_scorer._prefix is not None
        result = db.sql(
            "SELECT id, predicted_y, predicted_y_probs FROM ML.PREDICT(MODEL churn, "
            "TABLE customers) ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    probability = np.asarray([next(p["prob"] for p in r[2] if p["label"] == 1) for r in result])
    np.testing.assert_allclose(probability, estimator.predict_proba(frame)[:, 1], atol=PROBA_TOL)
    np.testing.assert_array_equal([r[1] for r in result], estimator.predict(frame))


def test_runs_as_says_what_scores_each_model(tmp_path):
    """What a team reads to understand the speed it gets: SQL, the walker, or onnxruntime."""
    frame, y = _customers(2_000)
    numbers = frame[["age", "spend"]].fillna(0)
    db = sqlml.connect(tmp_path / "runs_as.duckdb")
    try:
        small = DecisionTreeClassifier(max_depth=3, random_state=0).fit(numbers, y)
        db.register_model("small_tree", small)
        big = GradientBoostingClassifier(n_estimators=40, max_depth=4, random_state=0)
        db.register_model("big_gbdt", big.fit(numbers, y))
        db.register_model("churn", _one_hot_forest().fit(frame, y))
        db.register_model("kept_in_runtime", small, engine="runtime")
        assert db.runs_as("small_tree") == (
            'SQL: the expressions of macro sqlml."small_tree@1", no Python'
        )
        assert db.runs_as("big_gbdt").startswith("sqlml's C tree walker (not SQL: ")
        assert "tree nodes (limit 500" in db.runs_as("big_gbdt")
        assert db.runs_as("churn").startswith(
            "onnxruntime for the steps before the trees, then sqlml's C tree walker (not SQL: "
        )
        assert db.runs_as("kept_in_runtime") == (
            "sqlml's C tree walker (not SQL: registered with engine='runtime')"
        )
    finally:
        db.close()


COMPLETE_SUPPORTED = bool(
    trees.native_library() and trees.native_library().sqlml_treewalk_complete_supported()
)
KERNELS = {  # which C kernel each model gets on a CPU with AVX-512
    "gbdt_binary": ("classifier", "16-row AVX-512"),
    "gbdt_3_classes": ("classifier", "16-row AVX-512"),  # one class per tree
    "decision_tree": ("classifier", "row-block walk"),  # its one tree gives all 3 classes
    "forest_binary": ("classifier", "row-block walk"),  # every tree votes for both classes
    "histgb_nan_binary": ("classifier", "row-block walk"),  # deeper than 8 levels
    "gbdt": ("regressor", "16-row AVX-512"),
}


@pytest.mark.skipif(not COMPLETE_SUPPORTED, reason="this CPU has no AVX-512")
@pytest.mark.parametrize("case", sorted(KERNELS))
def test_the_16_row_kernel_gives_the_walks_bits(case):
    """Complete trees 16 rows at a time must sum exactly what the walk sums, on threshold,
    one-step and NaN rows, for row counts around the 16-row and 128-row blocks."""
    kind, kernel = KERNELS[case]
    if kind == "classifier":
        make, dataset = CLASSIFIERS[case]
        loader, missing = DATASETS[dataset]
        x, y = _data(loader, missing)
        estimator = make().set_params(random_state=0).fit(x, y)
    else:
        x, y = _data(load_diabetes)
        estimator = REGRESSORS[case]().set_params(random_state=0).fit(x, y)
    data = _onnx(estimator, x)
    scorer = OnnxRuntime(data, case).tree_scorer
    assert scorer.kernel == kernel
    edge = _edge_rows(x, data, rows=2_000)
    for rows in (1, 15, 16, 17, 127, 129, 2_000):
        matrix = edge[:rows]
        np.testing.assert_array_equal(scorer.scores(matrix), scorer.scores(matrix, complete=False))


@pytest.mark.skipif(not COMPLETE_SUPPORTED, reason="this CPU has no AVX-512")
def test_the_16_row_kernel_keeps_every_ordering_mode_and_nan_side():
    data = _hand_made_regressor(["BRANCH_LT", "BRANCH_GTE", "BRANCH_GT"], [1, 0, 1])
    runtime = OnnxRuntime(data, "hand_made")
    scorer = runtime.tree_scorer
    assert scorer.kernel == "16-row AVX-512"
    values = np.asarray([-np.inf, -1.0, -0.5, 0.0, 0.25, 0.5, 1.0, np.inf, np.nan], np.float32)
    values = np.concatenate([values, np.nextafter(values, np.inf), np.nextafter(values, -np.inf)])
    grid = np.stack(np.meshgrid(values, values), axis=-1).reshape(-1, 2).astype(np.float32)
    np.testing.assert_array_equal(scorer.scores(grid), scorer.scores(grid, complete=False))
    (want,) = _session(data).run(None, {"X": grid})
    np.testing.assert_array_equal(runtime.predict({"X": grid})["variable"], want)


@pytest.mark.skipif(not COMPLETE_SUPPORTED, reason="this CPU has no AVX-512")
@pytest.mark.parametrize("width", [1, 5, 8, 16, 17])
def test_the_16_row_kernel_reads_rows_from_registers_or_by_gather_with_the_same_bits(width):
    """Up to 16 features the kernel holds 16 rows in registers (row width padded to 2, 4, 8 or
    16) and picks values with permutes; beyond, it gathers. 13 trees also take the groups of
    8, 4 and 1 trees stepped together."""
    rng = np.random.default_rng(width)
    x = rng.normal(size=(600, width)).astype(np.float32)
    y = x @ rng.normal(size=width) + rng.normal(scale=0.1, size=600)
    estimator = GradientBoostingRegressor(n_estimators=13, max_depth=5, random_state=0)
    data = _onnx(estimator.fit(x, y), x)
    scorer = OnnxRuntime(data, f"width_{width}").tree_scorer
    assert scorer.kernel == "16-row AVX-512"
    edge = _edge_rows(x, data, rows=1_000)
    for rows in (16, 17, 1_000):
        matrix = edge[:rows]
        np.testing.assert_array_equal(scorer.scores(matrix), scorer.scores(matrix, complete=False))
    (want,) = _session(data).run(None, _feed(edge))
    np.testing.assert_array_equal(OnnxRuntime(data, "again").predict(_feed(edge))["variable"], want)


def _double_columns(x: np.ndarray) -> dict[str, pa.Array]:
    """What DuckDB hands the UDF for DOUBLE columns: a float64 Arrow array each (here sliced,
    so that their offsets are not 0)."""
    return {
        name: pa.array(np.concatenate([[0.0], x[:, i].astype(np.float64)]))[1:]
        for i, name in enumerate(_names(x))
    }


@pytest.mark.skipif(not COMPLETE_SUPPORTED, reason="this CPU has no AVX-512")
@pytest.mark.parametrize("labels", ["integers", "strings"])
@pytest.mark.parametrize("features", [8, 30])  # rows held in registers; read by gather
def test_a_binary_batch_is_onnxruntimes_answer_in_one_call(labels, features):
    """`binary_batch` (one C call per DuckDB batch) returns onnxruntime's label and its exact
    probabilities (the C finish is onnxruntime's own logistic), with ML.PREDICT's float64
    probabilities and the labels chosen at the threshold. 19,999 rows: several 2,048-row
    chunks and a tail that is not a multiple of 16."""
    x, y = _data(load_breast_cancer)
    x = x[:, :features]
    target = np.asarray(["benign", "malignant"])[y] if labels == "strings" else y
    estimator = GradientBoostingClassifier(n_estimators=25, max_depth=5, random_state=0)
    data = _onnx(estimator.fit(x, target), x)
    runtime = OnnxRuntime(data, "gbdt")
    assert runtime.tree_scorer.batches
    edge = _edge_rows(x, data, rows=19_999)
    batch = runtime.batch(_double_columns(edge), 0.3)
    want_label, want_probabilities = _session(data).run(None, _feed(edge))
    np.testing.assert_array_equal(batch.outputs["label"], want_label)
    np.testing.assert_array_equal(batch.outputs["probabilities"], want_probabilities)
    assert batch.outputs["probabilities"].dtype == np.float32
    np.testing.assert_array_equal(batch.values, want_probabilities.astype(np.float64))
    np.testing.assert_array_equal(batch.chosen, want_probabilities[:, 1] > 0.3)
    assert batch.chosen.dtype == np.int64
    walked = runtime.tree_scorer.ensemble_outputs(edge)  # the numpy finish: within ORT_TOL
    np.testing.assert_allclose(batch.outputs["probabilities"], walked[1], rtol=0, atol=ORT_TOL)
    columns = _double_columns(edge[:100])  # C trusts its buffers: nothing else reaches it
    for wrong in (columns["f0"].cast(pa.float32()), pa.array([None] * 100, pa.float64())):
        assert runtime.batch(columns | {"f0": wrong}, 0.5) is None


def _as_doubles_and_reals(
    folder, model: tuple, rows: np.ndarray, select: str, options: str = "", change: str = ""
) -> tuple[list, list]:
    """`SELECT <select> FROM ML.PREDICT(MODEL name, TABLE t<options>) ORDER BY id` over the
    same rows stored as DOUBLE columns (the batch call) and as REAL columns (the numpy path);
    `model` is (name, estimator, training x), `change` a statement run on the DOUBLE table
    first, `{columns}` in `select` the feature columns."""
    name, estimator, x = model
    frame = pd.DataFrame(rows, columns=_names(x)).astype(np.float64)
    frame.insert(0, "id", np.arange(len(frame)))
    columns = ", ".join(_names(x))
    reals = ", ".join(f"{column}::REAL AS {column}" for column in _names(x))
    db = sqlml.connect(folder / "batch.duckdb")
    try:
        db.con.execute("SET threads = 2")
        db.con.execute(f"CREATE TABLE doubles AS SELECT id, {columns} FROM frame")
        if change:
            db.con.execute(change)
        db.con.execute(f"CREATE TABLE reals AS SELECT id, {reals} FROM doubles")
        db.register_model(name, estimator, label="y", inputs=_names(x))
        assert db.runtime(db.model(name)).tree_scorer.batches
        query = (
            f"SELECT {select.format(columns=columns)} FROM ML.PREDICT(MODEL {name}, "
            f"TABLE {{}}{options}) ORDER BY id"
        )
        return db.sql(query.format("doubles")).fetchall(), db.sql(query.format("reals")).fetchall()
    finally:
        db.close()


@pytest.mark.skipif(not COMPLETE_SUPPORTED, reason="this CPU has no AVX-512")
def test_ml_predict_takes_the_batch_call_for_double_columns_and_numpy_for_others(tmp_path):
    """The same model over DOUBLE columns (the batch call) and REAL columns (the numpy path):
    the same labels at ML.PREDICT's threshold, NULL rows NULL, probabilities as sklearn's."""
    x, y = _data(load_breast_cancer)
    x = x[:, :8]
    estimator = GradientBoostingClassifier(n_estimators=30, random_state=0).fit(x, y)
    rows = np.repeat(x, 10, axis=0)
    by_batch, by_numpy = _as_doubles_and_reals(
        tmp_path,
        ("tumour", estimator, x),
        rows,
        'id, predicted_y, predicted_y_probs[2].prob, "tumour:score"({columns})',
        ", STRUCT(0.3 AS threshold)",
        "UPDATE doubles SET f3 = NULL WHERE id % 1000 = 7",
    )
    assert len(by_batch) == len(by_numpy) == len(rows)
    missing = np.arange(len(rows)) % 1000 == 7
    assert all(r[1:] == (None, None, None) for r, gone in zip(by_batch, missing) if gone)
    kept = [r for r, gone in zip(by_batch, missing) if not gone]
    numpy_kept = [r for r, gone in zip(by_numpy, missing) if not gone]
    probability = np.asarray([r[2] for r in kept])
    np.testing.assert_allclose(probability, [r[2] for r in numpy_kept], rtol=0, atol=ORT_TOL)
    np.testing.assert_array_equal([r[3] for r in kept], probability)  # the score function
    expected = estimator.predict_proba(rows[~missing])[:, 1]
    np.testing.assert_allclose(probability, expected, atol=PROBA_TOL)
    np.testing.assert_array_equal([r[1] for r in kept], (probability > 0.3).astype(int))
    assert [r[1] for r in kept] == [r[1] for r in numpy_kept]


@pytest.mark.skipif(not COMPLETE_SUPPORTED, reason="this CPU has no AVX-512")
@pytest.mark.parametrize(
    "make",
    [
        lambda: GradientBoostingRegressor(n_estimators=30, max_depth=5),  # SUM + base
        lambda: RandomForestRegressor(n_estimators=12, max_depth=6),  # AVERAGE: / trees
    ],
    ids=["gbdt", "forest"],
)
def test_a_regressor_batch_is_onnxruntimes_answer_in_one_call(make):
    """A regressor's batch call: onnxruntime's float32 values bit for bit, and the same
    numbers as float64 for ML.PREDICT's predicted_<label>."""
    x, y = _data(load_diabetes)
    estimator = make().set_params(random_state=0).fit(x, y)
    data = _onnx(estimator, x)
    runtime = OnnxRuntime(data, "price")
    assert runtime.tree_scorer.batches
    edge = _edge_rows(x, data, rows=5_001)
    batch = runtime.batch(_double_columns(edge), 0.5)
    (want,) = _session(data).run(None, _feed(edge))
    np.testing.assert_array_equal(batch.outputs["variable"], want)
    assert batch.outputs["variable"].dtype == np.float32 and batch.chosen is None
    np.testing.assert_array_equal(batch.values, want[:, 0].astype(np.float64))
    plain = runtime.batch(_double_columns(x), 0.5).values  # rows off the thresholds
    np.testing.assert_allclose(plain, estimator.predict(x), rtol=1e-5, atol=1e-3)


@pytest.mark.skipif(not COMPLETE_SUPPORTED, reason="this CPU has no AVX-512")
def test_a_regressor_that_averages_its_trees_divides_in_the_batch_call():
    """aggregate_function AVERAGE (scikit-learn's forests divide their weights instead): the
    batch call divides the sum by the tree count before the base, as onnxruntime does."""
    data = _hand_made_regressor(["BRANCH_LEQ"] * 3, [0, 1, 0], "AVERAGE", columns=True)
    runtime = OnnxRuntime(data, "hand_made")
    assert runtime.tree_scorer.batches
    values = np.asarray([-1.0, -0.5, 0.0, 0.25, 0.5, 1.0, np.nan], np.float32)
    grid = np.stack(np.meshgrid(values, values), axis=-1).reshape(-1, 2)
    batch = runtime.batch(_double_columns(grid), 0.5)
    (want,) = _session(data).run(None, {"f0": grid[:, [0]], "f1": grid[:, [1]]})
    np.testing.assert_array_equal(batch.outputs["variable"], want)
    np.testing.assert_array_equal(batch.values, want[:, 0])
    assert len(np.unique(want)) >= 4 and want.max() < 1100  # averaged: under 1000 + 100


@pytest.mark.skipif(not COMPLETE_SUPPORTED, reason="this CPU has no AVX-512")
def test_ml_predict_of_a_regressor_takes_the_batch_call(tmp_path):
    """ML.PREDICT and the score function of a regressor over DOUBLE columns (the batch call)
    answer as over REAL columns (the numpy path), and as scikit-learn."""
    x, y = _data(load_diabetes)
    estimator = GradientBoostingRegressor(n_estimators=40, random_state=0).fit(x, y)
    rows = np.repeat(x, 8, axis=0)
    by_batch, by_numpy = _as_doubles_and_reals(
        tmp_path,
        ("progression", estimator, x),
        rows,
        'id, predicted_y, variable, "progression:score"({columns})',
    )
    assert by_batch == by_numpy  # the same float32 sums, so the same bits
    predicted = np.asarray([r[1] for r in by_batch])
    np.testing.assert_array_equal([r[3] for r in by_batch], predicted)
    np.testing.assert_array_equal(predicted, np.asarray([r[2] for r in by_batch], np.float32))
    np.testing.assert_allclose(predicted, estimator.predict(rows), rtol=1e-5)


@pytest.mark.skipif(not COMPLETE_SUPPORTED, reason="this CPU has no AVX-512")
@pytest.mark.parametrize("task", ["classifier", "regressor"])
def test_a_batch_call_that_disagrees_with_onnxruntime_is_not_used(monkeypatch, task):
    """The load-time probe checks the batch call too: a wrong base score turns it off, and
    the model is still scored (by the walk and the numpy finish, which agree)."""
    x, y = _data(load_breast_cancer)
    kind = GradientBoostingClassifier if task == "classifier" else GradientBoostingRegressor
    estimator = kind(n_estimators=10, random_state=0).fit(x, y)
    data = _onnx(estimator, x)
    assert OnnxRuntime(data, "right").tree_scorer.batches
    real = trees.BatchFinish

    def off_by_one(kind: int, base: float, *rest, **named) -> trees.BatchFinish:
        return real(kind, base + 1.0, *rest, **named)

    monkeypatch.setattr(trees, "BatchFinish", off_by_one)
    runtime = OnnxRuntime(data, "wrong")
    assert runtime.tree_scorer is not None and not runtime.tree_scorer.batches
    assert runtime.batch(_double_columns(x[:50]), 0.5) is None
