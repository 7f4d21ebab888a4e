"""Tree-ensemble models scored by sqlml's C walker (sqlml/native/treewalk.c), not onnxruntime.

Why: trees are the commonest tabular models and onnxruntime's TreeEnsemble kernel walks one
row through one tree at a time. The C walker moves a block of rows through each tree level by
level, about 2.6x faster per core, and ctypes releases the GIL for the call, so DuckDB's
threads score chunks in parallel.

Which graphs: what scikit-learn converters emit for a bare tree estimator: the graph inputs
(float32 columns joined by one Concat, or one float32 matrix), one TreeEnsembleClassifier or
TreeEnsembleRegressor, then Identity nodes to the outputs. Anything else (a pipeline step,
double inputs, equality branches, scores some leaves leave unset) stays on onnxruntime.

How it stays exact: the leaf sums are bit-identical to onnxruntime's (float32, tree order);
labels and the binary/multiclass encodings follow onnxruntime's TreeAggregatorClassifier as
the export does (`sqlml.export.trees`); only LOGISTIC/SOFTMAX differ, by onnxruntime's
approximation (~1e-7). And every scorer is checked against onnxruntime when the model loads,
on rows set exactly on the trees' thresholds, just beside them and NaN: any difference and
the model is scored by onnxruntime instead.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from sqlml.errors import ArtifactError
from sqlml.export.node import Node
from sqlml.export.tables import Ensemble, floats, parse

ABI = 3  # sqlml_treewalk_abi() of the C file this module was written for
ML_DOMAIN = "ai.onnx.ml"
FEATURE_LIMIT = 1 << 24  # the C node packs its flags above the feature index
STRICT_FLAG = 1 << 29
NAN_TRUE_FLAG = 1 << 30
NODE_TYPE = np.dtype(
    [("feature", "<i4"), ("threshold", "<f4"), ("next_true", "<i4"), ("next_false", "<i4")]
)
LEQ, LT, GTE, GT = 1, 2, 3, 4  # sqlml.export.tables.MODES
PROBE_ROWS = 512
PROBE_RTOL, PROBE_ATOL = 1e-5, 1e-6  # onnxruntime's logistic/softmax approximations: ~1e-7

Finish = Callable[[np.ndarray], dict[int, np.ndarray]]  # scores [n, k] -> ensemble outputs


@functools.cache
def native_library() -> ctypes.CDLL | None:
    """The compiled walker, or None where `pip install` could not compile it (no C compiler)."""
    spec = importlib.util.find_spec("sqlml._treewalk")
    if spec is None or not spec.origin:
        return None
    try:
        library = ctypes.CDLL(spec.origin)
    except OSError:
        return None
    if library.sqlml_treewalk_abi() != ABI:
        return None  # a stale build from another version of the C file
    pointer = ctypes.c_void_p
    library.sqlml_tree_scores.restype = None
    library.sqlml_tree_scores.argtypes = [
        pointer,  # nodes
        pointer,  # roots
        pointer,  # depths
        ctypes.c_int32,  # trees
        pointer,  # leaf weights [nodes, outputs]
        ctypes.c_int32,  # outputs
        pointer,  # x [rows, features]
        ctypes.c_int64,  # rows
        ctypes.c_int32,  # features
        pointer,  # scores [rows, outputs]
        ctypes.c_int32,  # any strict (<) node: 0 lets the walker use `<=` alone
    ]
    return library


@dataclass
class _Graph:
    """The parts of a recognised graph: what feeds the ensemble and where its outputs go."""

    inputs: list[str]  # graph inputs, concatenated in this order into the feature matrix
    widths: list[int]
    tree: onnx.NodeProto
    outputs: dict[str, int]  # graph output name -> index of the ensemble's output


class TreeScorer:
    """One tree-ensemble model on the C walker; `predict` answers like the onnxruntime session."""

    def __init__(self, graph: _Graph, ensemble: Ensemble, finish: Finish, library: ctypes.CDLL):
        self.graph = graph
        self.features = sum(graph.widths)
        self.outputs = ensemble.weights.shape[1]
        self._library = library
        self._nodes = _node_table(ensemble)
        self._roots = np.ascontiguousarray(ensemble.roots, dtype=np.int32)
        self._depths = np.ascontiguousarray(ensemble.depths, dtype=np.int32)
        self._weights = np.ascontiguousarray(ensemble.weights, dtype=np.float32)
        self._any_strict = int((self._nodes["feature"] & STRICT_FLAG).any())
        self._finish = finish

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Summed leaf weights [rows, outputs] (float32) for a float32 matrix [rows, features]."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        scores = np.empty((x.shape[0], self.outputs), dtype=np.float32)
        self._library.sqlml_tree_scores(
            self._nodes.ctypes.data,
            self._roots.ctypes.data,
            self._depths.ctypes.data,
            len(self._roots),
            self._weights.ctypes.data,
            self.outputs,
            x.ctypes.data,
            x.shape[0],
            self.features,
            scores.ctypes.data,
            self._any_strict,
        )
        return scores

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        columns = [np.asarray(inputs[name], dtype=np.float32) for name in self.graph.inputs]
        columns = [c.reshape(len(c), -1) for c in columns]
        x = columns[0] if len(columns) == 1 else np.concatenate(columns, axis=1)
        if x.shape[1] != self.features:
            raise ArtifactError(f"expected {self.features} features, got {x.shape[1]}")
        results = self._finish(self.scores(x))
        return {name: results[index] for name, index in self.graph.outputs.items()}


def tree_scorer(proto: onnx.ModelProto, session, model: str) -> TreeScorer | None:
    """A TreeScorer for this graph when it is a bare tree ensemble that the walker reproduces
    exactly (checked against `session`, the model's onnxruntime session); else None."""
    library = native_library()
    if library is None:
        return None
    graph = _recognise(proto)
    if graph is None:
        return None
    opset = next((o.version for o in proto.opset_import if o.domain == ML_DOMAIN), 1)
    try:
        plan = _plan(Node(graph.tree, model, opset, {}))
    except ArtifactError:
        return None  # the export's checks refuse it: onnxruntime decides what it means
    if plan is None or (plan[0].feature >= sum(graph.widths)).any():
        return None
    ensemble, finish = plan
    scorer = TreeScorer(graph, ensemble, finish, library)
    return scorer if _agrees(scorer, session, ensemble, graph) else None


def _recognise(proto: onnx.ModelProto) -> _Graph | None:
    graph = proto.graph
    initializers = {i.name for i in graph.initializer}
    shapes: dict[str, int | None] = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if tensor.elem_type != onnx.TensorProto.FLOAT or len(dims) != 2:
            return None
        shapes[value.name] = dims[1]
    nodes = list(graph.node)
    concat: dict[str, list[str]] = {}
    if nodes and nodes[0].op_type == "Concat":
        axis = next((a.i for a in nodes[0].attribute if a.name == "axis"), None)
        if axis not in (1, -1) or not all(i in shapes for i in nodes[0].input):
            return None
        concat[nodes[0].output[0]] = list(nodes[0].input)
        nodes = nodes[1:]
    if not nodes or nodes[0].op_type not in ("TreeEnsembleClassifier", "TreeEnsembleRegressor"):
        return None
    tree = nodes[0]
    if tree.domain != ML_DOMAIN or len(tree.input) != 1:
        return None
    inputs = concat.get(tree.input[0], [tree.input[0]] if tree.input[0] in shapes else None)
    if inputs is None or len(inputs) != len(shapes) or any(shapes[i] is None for i in inputs):
        return None
    produced = {name: k for k, name in enumerate(tree.output) if name}
    for node in nodes[1:]:
        if node.op_type != "Identity" or node.input[0] not in produced:
            return None
        produced[node.output[0]] = produced[node.input[0]]
    outputs = {}
    for value in graph.output:
        if value.name not in produced:
            return None
        outputs[value.name] = produced[value.name]
    return _Graph(inputs, [int(shapes[i]) for i in inputs], tree, outputs)


Plan = tuple[Ensemble, Finish] | None  # the tables and the post-processing, or unsupported


def _plan(node: Node) -> Plan:
    """The tables and the numpy post-processing for this node, or None if unsupported."""
    if node.op_type == "TreeEnsembleRegressor":
        return _regressor(node)
    return _classifier(node)


def _scored(ensemble: Ensemble) -> list[bool] | None:
    """For each output, whether every row gets a score for it (True) or none does (False);
    None when it depends on the leaf a row reaches (onnxruntime's per-row bookkeeping, left
    to onnxruntime), or when the tables hold what the C walker cannot compare."""
    branches = set(ensemble.mode[ensemble.mode != 0].tolist())
    big = int(ensemble.feature.max(initial=0)) >= FEATURE_LIMIT
    if ensemble.wide or not branches <= {LEQ, LT, GTE, GT} or big:
        return None
    leaves = ensemble.mode == 0
    tree = np.searchsorted(ensemble.roots, np.arange(len(leaves)), side="right") - 1
    scored = []
    for k in range(ensemble.weights.shape[1]):
        present = ensemble.present[leaves, k]
        trees_all = np.bincount(tree[leaves], weights=present, minlength=len(ensemble.roots))
        leaf_count = np.bincount(tree[leaves], minlength=len(ensemble.roots))
        if ((trees_all > 0) & (trees_all < leaf_count)).any():
            return None  # a tree scores output k at some leaves only
        scored.append(bool((trees_all > 0).any()))
    return scored


def _regressor(node: Node) -> Plan:
    aggregate = node.attr("aggregate_function", "SUM")
    transform = node.attr("post_transform", "NONE")
    targets = int(node.attr("n_targets", 0))
    if aggregate not in ("SUM", "AVERAGE") or transform != "NONE" or targets < 1:
        return None
    ensemble = parse(node, "target", targets, first_weight_only=targets == 1)
    has = _scored(ensemble)
    if has is None:
        return None
    base = _base(node)
    trees = np.float32(len(ensemble.roots))
    scored = np.asarray(has)

    def finish(scores: np.ndarray) -> dict[int, np.ndarray]:
        if aggregate == "AVERAGE":
            scores = scores / trees
        if targets == 1:  # onnxruntime adds base_values[0] only when there is exactly one
            if len(base) == 1:
                scores = scores + base[0]
            return {0: scores}
        if len(base) == targets:
            scores = scores + base
        return {0: np.where(scored, scores, np.float32(0))}  # an unscored target reads 0

    return ensemble, finish


def _classifier(node: Node) -> Plan:
    transform = node.attr("post_transform", "NONE")
    labels = _labels(node)
    if transform not in ("NONE", "LOGISTIC", "SOFTMAX") or labels is None or len(labels) < 2:
        return None
    ensemble = parse(node, "class", len(labels), first_weight_only=False)
    has = _scored(ensemble)
    if has is None:
        return None
    base = _base(node)
    if len(labels) > 2:
        return _multiclass(ensemble, has, labels, base, transform)
    return _binary(node, ensemble, has, labels, base, transform)


def _multiclass(
    ensemble: Ensemble, has: list[bool], labels: np.ndarray, base: np.ndarray, transform: str
) -> Plan:
    classes = len(labels)
    if len(base) > classes or not all(k < len(base) or has[k] for k in range(classes)):
        return None  # a class without a score: onnxruntime's bookkeeping
    padded = np.zeros(classes, dtype=np.float32)
    padded[: len(base)] = base

    def finish(scores: np.ndarray) -> dict[int, np.ndarray]:
        scores = scores + padded if len(base) else scores
        label = labels[np.argmax(scores, axis=1)]  # the first maximum wins, as in onnxruntime
        return {0: label, 1: _transform(scores, transform)}

    return ensemble, finish


def _binary(
    node: Node,
    ensemble: Ensemble,
    has: list[bool],
    labels: np.ndarray,
    base: np.ndarray,
    transform: str,
) -> Plan:
    """onnxruntime's two-class FinalizeScores and write_scores (see sqlml.export.trees._binary)
    for outputs scored by every leaf or by none."""
    class_ids = {int(i) for i in node.attrs.get("class_ids", [])}
    weights, _ = floats(node, "class_weights")
    one_class = len(class_ids) == 1
    all_positive = bool((weights >= 0).all())
    h0, h1 = has
    bases = len(base)
    if bases not in (0, 1, 2) or (bases == 1 and not one_class and not h1):
        return None
    if not one_class and labels.dtype != object:
        labels = np.asarray([0, 1], dtype=np.int64)  # onnxruntime answers literal 1 / 0 here
    threshold = np.float32(0.5 if one_class and all_positive else 0.0)
    zero = np.float32(0)

    def finish(scores: np.ndarray) -> dict[int, np.ndarray]:
        s0, s1 = scores[:, 0], scores[:, 1]
        if bases == 2:  # with a class-1 score: s1 = base1 + s0 and s0 = -s1
            b0, b1 = base
            s1, s0 = (b1 + s0, -(b1 + s0)) if h1 else (s1 + b1, s0 + b0)
        elif bases == 1:
            s0 = s0 + base[0]
        first = s0 if h0 else np.zeros_like(s0)
        label = labels[((s1 if h1 else first) > threshold).astype(np.intp)]
        if bases == 2 or h1:
            second = s1 if h1 else np.zeros_like(s1)
            return {0: label, 1: _transform(np.stack([first, second], axis=1), transform)}
        if one_class and all_positive:  # onnxruntime 1.31: [1 - p, p], p after LOGISTIC
            p = _logistic(first) if transform == "LOGISTIC" else first
            two = np.stack([np.float32(1) - p, p], axis=1)
        elif transform == "LOGISTIC":
            two = np.stack([_logistic(-first), _logistic(first)], axis=1)
        else:
            two = np.stack([zero - first, first], axis=1)
        return {0: label, 1: two}

    return ensemble, finish


def _labels(node: Node) -> np.ndarray | None:
    strings = node.strings("classlabels_strings")
    if strings:
        return np.asarray(strings, dtype=object)
    ints = node.attrs.get("classlabels_int64s", node.attrs.get("classlabels_ints"))
    return None if ints is None or len(ints) == 0 else np.asarray(ints, dtype=np.int64)


def _base(node: Node) -> np.ndarray:
    base, _ = floats(node, "base_values")
    return np.zeros(0, dtype=np.float32) if base is None else base.astype(np.float32)


def _logistic(x: np.ndarray) -> np.ndarray:
    """onnxruntime's ComputeLogistic: 1/(1+exp(-|x|)), mirrored for negative x, in float32."""
    v = np.float32(1) / (np.float32(1) + np.exp(-np.abs(x)))
    return np.where(x < 0, np.float32(1) - v, v).astype(np.float32)


def _transform(scores: np.ndarray, transform: str) -> np.ndarray:
    if transform == "LOGISTIC":
        return _logistic(scores)
    if transform == "SOFTMAX":
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return scores.astype(np.float32)


def _node_table(ensemble: Ensemble) -> np.ndarray:
    """The C walker's nodes: `>=` and `>` become `<` and `<=` with the children swapped (the
    NaN side flips with them), so the walker needs only two comparisons."""
    mode = ensemble.mode
    swap = (mode == GTE) | (mode == GT)
    strict = (mode == LT) | (mode == GTE)
    nan_true = ensemble.missing_true ^ swap
    table = np.zeros(len(mode), dtype=NODE_TYPE)
    table["feature"] = (
        ensemble.feature.astype(np.int32)
        | np.where(strict, STRICT_FLAG, 0)
        | np.where(nan_true & (mode != 0), NAN_TRUE_FLAG, 0)
    )
    table["threshold"] = ensemble.threshold
    table["next_true"] = np.where(swap, ensemble.false_next, ensemble.true_next)
    table["next_false"] = np.where(swap, ensemble.true_next, ensemble.false_next)
    return table


def _probe(ensemble: Ensemble, features: int) -> np.ndarray:
    """Rows that test every comparison's edge: thresholds exactly, one float step either side,
    NaN, and ordinary values, feature by feature at random (a fixed seed)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((PROBE_ROWS, features)).astype(np.float32)
    with np.errstate(over="ignore"):  # a step beside an infinite threshold
        return _near_thresholds(rng, x, ensemble)


def _near_thresholds(rng: np.random.Generator, x: np.ndarray, ensemble: Ensemble) -> np.ndarray:
    features = x.shape[1]
    branches = ensemble.mode != 0
    for j in range(features):
        used = ensemble.threshold[branches & (ensemble.feature == j)].astype(np.float32)
        if not len(used):
            continue
        picked = rng.choice(used, size=PROBE_ROWS)
        step = rng.integers(-1, 2, size=PROBE_ROWS)
        picked = np.where(step < 0, np.nextafter(picked, np.float32(-np.inf)), picked)
        picked = np.where(step > 0, np.nextafter(picked, np.float32(np.inf)), picked)
        take = rng.random(PROBE_ROWS) < 0.7
        x[take, j] = picked[take]
    x[rng.random(x.shape) < 0.05] = np.nan
    return x


def _agrees(scorer: TreeScorer, session, ensemble: Ensemble, graph: _Graph) -> bool:
    """Whether the walker answers the probe rows exactly as onnxruntime does."""
    x = _probe(ensemble, scorer.features)
    feed, start = {}, 0
    for name, width in zip(graph.inputs, graph.widths):
        feed[name] = x[:, start : start + width]
        start += width
    names = list(graph.outputs)
    try:
        expected = dict(zip(names, session.run(names, feed)))
        actual = scorer.predict(feed)
    except Exception:  # onnxruntime refusing the probe: leave the model to it
        return False
    for name in names:
        want, got = expected[name], actual[name]
        if want.shape != got.shape or want.dtype.kind != got.dtype.kind:
            return False
        if want.dtype.kind in "fc":
            if not np.allclose(got, want, rtol=PROBE_RTOL, atol=PROBE_ATOL, equal_nan=True):
                return False
        elif not np.array_equal(got, want):
            return False
    return True
