"""TreeEnsembleClassifier / TreeEnsembleRegressor as node tables walked with tf.gather.

Why tables: a SavedModel cannot hold a Python loop over trees, and one graph op per tree node
is far too big. All trees are flattened into arrays (feature, threshold, true/false child,
comparison mode, missing-value direction, leaf weights); every row walks every tree at once,
one `tf.gather` step per level, for the depth of the deepest tree (a leaf points to itself).

Why the sums look the way they do: onnxruntime adds the trees' leaf values one tree after the
other, in tree order, in float32 (float64 only for double inputs or `*_as_tensor` weights),
then adds base_values. A different order or a wider type changes the last bit, and the last
bit decides exact ties (a random forest voting 5 of 10 trees, a GBDT score of exactly 0).
`tf.cumsum` along the tree axis adds strictly in order, so its last column is bit-identical to
onnxruntime's running sum, in TensorFlow and in TFLite, with no float64 ops needed.

Class scores, labels and the binary encodings follow onnxruntime's TreeAggregatorClassifier
(tree_ensemble_aggregator.h), including the one-score binary case skl2onnx emits for gradient
boosting and random forests (one class id, label decided by score > 0 or > 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from sqlml.export.ops import TRANSFORMS, Node, Run, class_labels, first_argmax, logistic
from sqlml.export.ops import transform_scores as _transform

MODES = {
    "LEAF": 0,
    "BRANCH_LEQ": 1,
    "BRANCH_LT": 2,
    "BRANCH_GTE": 3,
    "BRANCH_GT": 4,
    "BRANCH_EQ": 5,
    "BRANCH_NEQ": 6,
}
_COMPARE = {1: tf.less_equal, 2: tf.less, 3: tf.greater_equal, 4: tf.greater, 5: tf.equal}
AGGREGATES = ("SUM", "AVERAGE", "MIN", "MAX")


@dataclass
class Ensemble:
    """All trees of one node as flat tables (index = position in the node's attribute lists)."""

    feature: np.ndarray  # int32 [nodes]
    threshold: np.ndarray  # float [nodes]
    true_next: np.ndarray  # int32 [nodes]; a leaf points to itself
    false_next: np.ndarray  # int32 [nodes]
    mode: np.ndarray  # int32 [nodes], MODES codes
    missing_true: np.ndarray  # bool [nodes]
    roots: np.ndarray  # int32 [trees], in onnxruntime's order
    depth: int
    weights: np.ndarray  # float [nodes, outputs], summed leaf weights (0 where none)
    present: np.ndarray  # bool [nodes, outputs], the leaf carries a weight for that output
    wide: bool  # weights/thresholds given as doubles (*_as_tensor)

    def always(self, k: int) -> bool:
        """Every leaf scores output k, so every row has a score for it."""
        return bool(self.present[self.mode == 0, k].all())

    def never(self, k: int) -> bool:
        return not bool(self.present[:, k].any())


def _floats(node: Node, name: str) -> tuple[np.ndarray | None, bool]:
    """A float attribute, or its `_as_tensor` double twin (second value: it was double)."""
    if name + "_as_tensor" in node.attrs:
        return np.asarray(node.attrs[name + "_as_tensor"], dtype=np.float64).ravel(), True
    if name in node.attrs:
        return np.asarray(node.attrs[name], dtype=np.float32), False
    return None, False


def parse(node: Node, prefix: str, outputs: int, first_weight_only: bool) -> Ensemble:
    """Check the attributes the way onnxruntime's Init does and build the tables."""
    tree_ids = np.asarray(node.attrs.get("nodes_treeids", []), dtype=np.int64)
    node_ids = np.asarray(node.attrs.get("nodes_nodeids", []), dtype=np.int64)
    count = len(tree_ids)
    if count == 0:
        raise node.fail("the ensemble has no nodes")
    features = np.asarray(node.attrs.get("nodes_featureids", []), dtype=np.int64)
    true_ids = np.asarray(node.attrs.get("nodes_truenodeids", []), dtype=np.int64)
    false_ids = np.asarray(node.attrs.get("nodes_falsenodeids", []), dtype=np.int64)
    mode_names = node.strings("nodes_modes")
    thresholds, wide_values = _floats(node, "nodes_values")
    missing = np.asarray(node.attrs.get("nodes_missing_value_tracks_true", []), dtype=np.int64)
    for name, values in (
        ("nodes_nodeids", node_ids),
        ("nodes_featureids", features),
        ("nodes_truenodeids", true_ids),
        ("nodes_falsenodeids", false_ids),
        ("nodes_modes", mode_names),
        ("nodes_values", thresholds if thresholds is not None else []),
    ):
        if len(values) != count:
            raise node.fail(f"{name} has {len(values)} entries for {count} nodes")
    unknown = sorted(set(mode_names) - set(MODES))
    if unknown:
        raise node.fail(f"unknown node modes {unknown} (supported: {', '.join(MODES)})")
    modes = np.asarray([MODES[m] for m in mode_names], dtype=np.int32)
    missing_true = np.zeros(count, dtype=bool)
    missing_true[: len(missing)] = missing[:count] == 1
    position = {}
    for i, key in enumerate(zip(tree_ids.tolist(), node_ids.tolist())):
        if key in position:
            raise node.fail(f"node {key[1]} of tree {key[0]} appears twice")
        position[key] = i
    true_next = np.arange(count, dtype=np.int32)
    false_next = np.arange(count, dtype=np.int32)
    for i in np.flatnonzero(modes != 0):
        for ids, table, side in ((true_ids, true_next, "true"), (false_ids, false_next, "false")):
            child = position.get((int(tree_ids[i]), int(ids[i])))
            if child is None or child == i:
                raise node.fail(f"node {node_ids[i]} of tree {tree_ids[i]} has a bad {side} child")
            table[i] = child
    if (features[modes != 0] < 0).any():
        raise node.fail("a negative feature id")

    weight_values, wide_weights = _floats(node, prefix + "_weights")
    w_trees = np.asarray(node.attrs.get(prefix + "_treeids", []), dtype=np.int64)
    w_nodes = np.asarray(node.attrs.get(prefix + "_nodeids", []), dtype=np.int64)
    w_ids = np.asarray(node.attrs.get(prefix + "_ids", []), dtype=np.int64)
    if weight_values is None or not (
        len(w_trees) == len(w_nodes) == len(w_ids) == len(weight_values)
    ):
        raise node.fail(f"{prefix}_* attributes have different lengths")
    wide = wide_values or wide_weights
    dtype = np.float64 if wide else np.float32
    weights = np.zeros((count, outputs), dtype=dtype)
    present = np.zeros((count, outputs), dtype=bool)
    order = sorted(range(len(w_ids)), key=lambda j: (w_trees[j], w_nodes[j], j))
    for j in order:  # onnxruntime sorts weights by (tree, node) and keeps their order
        i = position.get((int(w_trees[j]), int(w_nodes[j])))
        if i is None:
            raise node.fail(f"a weight for missing node {w_nodes[j]} of tree {w_trees[j]}")
        if modes[i] != 0:
            continue  # onnxruntime ignores weights on branch nodes
        k = 0 if first_weight_only else int(w_ids[j])
        if not 0 <= k < outputs:
            raise node.fail(f"{prefix}_ids {w_ids[j]} is out of range for {outputs} outputs")
        if first_weight_only and present[i, 0]:
            continue  # one target: onnxruntime uses the first weight of each leaf only
        weights[i, k] = weights[i, k] + dtype(weight_values[j])
        present[i, k] = True
    leaves = np.flatnonzero(modes == 0)
    empty = [int(i) for i in leaves if not present[i].any()]
    if empty:
        raise node.fail(f"leaf {node_ids[empty[0]]} of tree {tree_ids[empty[0]]} has no weight")
    starts = [0] + [i for i in range(1, count) if tree_ids[i] != tree_ids[i - 1]]
    roots = np.asarray(starts, dtype=np.int32)  # onnxruntime: first node of each tree run
    return Ensemble(
        feature=np.where(modes != 0, features, 0).astype(np.int32),
        threshold=(thresholds if thresholds is not None else np.zeros(count)).astype(dtype),
        true_next=true_next,
        false_next=false_next,
        mode=modes,
        missing_true=missing_true,
        roots=roots,
        depth=_depth(node, roots, modes, true_next, false_next),
        weights=weights,
        present=present,
        wide=wide,
    )


def _depth(node: Node, roots, modes, true_next, false_next) -> int:
    """Steps from a root to its deepest leaf, refusing cycles (a walk that never ends).

    Depth-first with memoised subtrees, so nodes shared by several parents cost nothing.
    """
    depth: dict[int, int] = {}
    for root in roots.tolist():
        stack, on_path = [(root, False)], set()
        while stack:
            i, expanded = stack.pop()
            if i in depth:
                continue
            if modes[i] == 0:
                depth[i] = 0
                continue
            children = (int(true_next[i]), int(false_next[i]))
            if expanded:
                on_path.discard(i)
                depth[i] = 1 + max(depth[c] for c in children)
                continue
            if any(c in on_path or c == i for c in children):
                raise node.fail("a tree has a cycle")
            on_path.add(i)
            stack.append((i, True))
            stack.extend((c, False) for c in children if c not in depth)
    return max(depth[r] for r in roots.tolist())


def leaves(ensemble: Ensemble, x: Any) -> Any:
    """The leaf each row reaches in each tree: int32 [rows, trees]."""
    compare_dtype = tf.float64 if ensemble.wide or x.dtype == tf.float64 else tf.float32
    x = tf.cast(x, compare_dtype)
    width = tf.shape(x)[1]
    flat = tf.reshape(x, [-1])
    row_start = tf.expand_dims(tf.range(tf.shape(x)[0]) * width, 1)
    index = row_start * 0 + tf.constant(ensemble.roots)[tf.newaxis, :]
    feature = tf.constant(ensemble.feature)
    threshold = tf.constant(ensemble.threshold.astype(compare_dtype.as_numpy_dtype))
    true_next, false_next = tf.constant(ensemble.true_next), tf.constant(ensemble.false_next)
    branch_modes = sorted(set(ensemble.mode[ensemble.mode != 0].tolist()))
    mode = tf.constant(ensemble.mode) if len(branch_modes) > 1 else None
    missing = tf.constant(ensemble.missing_true) if ensemble.missing_true.any() else None
    for _ in range(ensemble.depth):
        value = tf.gather(flat, row_start + tf.gather(feature, index))
        limit = tf.gather(threshold, index)
        if mode is None:
            go_true = _compare(branch_modes[0] if branch_modes else 1, value, limit)
        else:
            node_mode = tf.gather(mode, index)
            go_true = tf.zeros_like(index, dtype=tf.bool)
            for code in branch_modes:
                go_true = go_true | (tf.equal(node_mode, code) & _compare(code, value, limit))
        if missing is not None:
            go_true = go_true | (tf.gather(missing, index) & tf.not_equal(value, value))
        index = tf.where(go_true, tf.gather(true_next, index), tf.gather(false_next, index))
    return index


def _compare(code: int, value: Any, limit: Any) -> Any:
    if code == 6:
        return tf.not_equal(value, limit)  # NaN != t is true, as in C++
    return _COMPARE[code](value, limit)


def _running_sum(values: Any) -> Any:
    """Sum over the tree axis (1) strictly in tree order, like onnxruntime's loop."""
    return tf.cumsum(values, axis=1)[:, -1, :]


def _gather_scores(ensemble: Ensemble, index: Any, dtype: tf.DType) -> Any:
    return tf.gather(tf.constant(ensemble.weights.astype(dtype.as_numpy_dtype)), index)


def _has(ensemble: Ensemble, index: Any, k: int) -> Any:
    """Whether each row got a score for output k: a Python bool when it is known up front."""
    if ensemble.always(k):
        return True
    if ensemble.never(k):
        return False
    return tf.reduce_any(tf.gather(tf.constant(ensemble.present[:, k]), index), axis=1)


def _input_rows(x: Any) -> Any:
    if x.shape.rank == 1:
        return tf.reshape(x, [1, -1])
    return x


def _accumulator(ensemble: Ensemble, x: Any) -> tf.DType:
    return tf.float64 if ensemble.wide or x.dtype == tf.float64 else tf.float32


# -- regressor ------------------------------------------------------------------------------
# onnxruntime writes an output that no reached leaf scored as 0, whatever its base value
# (ScoreValue's has_score); `_masked` does the same before the post_transform.


def regressor(node: Node) -> Run:
    aggregate = node.choice("aggregate_function", "SUM", AGGREGATES)
    targets = int(node.attr("n_targets", 0))
    if targets < 1:
        raise node.fail(f"n_targets={targets}")
    # one target: onnxruntime applies no post_transform but PROBIT, so only NONE is exact
    transform = node.choice("post_transform", "NONE", TRANSFORMS if targets > 1 else ("NONE",))
    ensemble = parse(node, "target", targets, first_weight_only=targets == 1)
    base, _ = _floats(node, "base_values")
    base = np.zeros(0) if base is None else base
    trees = len(ensemble.roots)

    def run(xs: list) -> list:
        x = _input_rows(xs[0])
        dtype = _accumulator(ensemble, x)
        index = leaves(ensemble, x)
        values = _gather_scores(ensemble, index, dtype)
        if aggregate in ("SUM", "AVERAGE"):
            scores = _running_sum(values)
        else:
            fill = np.inf if aggregate == "MIN" else -np.inf
            present = tf.gather(tf.constant(ensemble.present), index)
            values = tf.where(present, values, tf.cast(fill, dtype))
            reduce = tf.reduce_min if aggregate == "MIN" else tf.reduce_max
            scores = reduce(values, axis=1)
        if aggregate == "AVERAGE":
            scores = scores / tf.cast(trees, dtype)
        if targets == 1:  # FinalizeScores1: base_values[0] only when there is exactly one
            if len(base) == 1:
                scores = scores + tf.cast(base[0], dtype)
            return [tf.cast(scores, tf.float32)]
        if len(base) == targets:
            scores = scores + tf.constant(base.astype(dtype.as_numpy_dtype))
        has = [_has(ensemble, index, k) for k in range(targets)]
        return [_transform(tf.cast(_masked(scores, has), tf.float32), transform)]

    return run


def _masked(scores: Any, has: list) -> Any:
    """Scores with the outputs no leaf scored set to 0, as onnxruntime writes them."""
    if all(h is True for h in has):
        return scores
    zero = tf.zeros_like(scores[:, 0])
    return tf.stack([_pick(h, scores[:, k], zero) for k, h in enumerate(has)], axis=1)


# -- classifier -----------------------------------------------------------------------------


def classifier(node: Node) -> Run:
    transform = node.choice("post_transform", "NONE", TRANSFORMS)
    labels = class_labels(node)
    classes = len(labels)
    if classes < 2:
        raise node.fail("a classifier with fewer than two class labels")
    ensemble = parse(node, "class", classes, first_weight_only=False)
    base, _ = _floats(node, "base_values")
    base = np.zeros(0) if base is None else base
    if len(base) > classes or (classes == 2 and len(base) not in (0, 1, 2)):
        raise node.fail(f"{len(base)} base_values for {classes} classes")
    if classes > 2:
        return _multiclass(ensemble, labels, base, transform)
    return _binary(node, ensemble, labels, base, transform)


def _multiclass(ensemble: Ensemble, labels: np.ndarray, base: np.ndarray, transform: str) -> Run:
    classes = len(labels)

    def run(xs: list) -> list:
        x = _input_rows(xs[0])
        dtype = _accumulator(ensemble, x)
        index = leaves(ensemble, x)
        scores = _running_sum(_gather_scores(ensemble, index, dtype))
        if len(base):  # a base value also gives its class a score
            padded = np.zeros(classes)
            padded[: len(base)] = base
            scores = scores + tf.constant(padded.astype(dtype.as_numpy_dtype))
        has = [True if k < len(base) else _has(ensemble, index, k) for k in range(classes)]
        eligible = None
        if not all(h is True for h in has):
            rows = tf.shape(scores)[0:1]
            eligible = tf.stack(
                [tf.fill(rows, h) if isinstance(h, bool) else h for h in has], axis=1
            )
        label = tf.gather(tf.constant(labels), first_argmax(scores, eligible))
        return [label, _transform(tf.cast(_masked(scores, has), tf.float32), transform)]

    return run


def _binary(
    node: Node, ensemble: Ensemble, labels: np.ndarray, base: np.ndarray, transform: str
) -> Run:
    """onnxruntime's two-class FinalizeScores and write_scores, branch by branch.

    skl2onnx's binary gradient boosting gives every leaf one weight for class id 0 and one
    base value: a single score s, label = s > 0, probabilities [logistic(-s), logistic(s)].
    Its binary random forest has one positive weight per leaf and no base value: label =
    s > 0.5, probabilities [1 - s, s].
    """
    class_ids = {int(i) for i in node.attrs.get("class_ids", [])}
    weights, _ = _floats(node, "class_weights")
    one_class = len(class_ids) == 1  # onnxruntime's binary_case_
    all_positive = bool((weights >= 0).all())
    bases = len(base)
    second_always, second_never = ensemble.always(1), ensemble.never(1)
    if bases == 1 and not one_class and not second_always:
        # onnxruntime leaves the second probability unwritten for rows without a class-1 score
        raise node.fail("two class ids, one base value and leaves without a class-1 weight")
    if not one_class and labels.dtype != object:
        labels = np.asarray([0, 1], dtype=np.int64)  # onnxruntime answers literal 1 / 0 here

    def run(xs: list) -> list:
        x = _input_rows(xs[0])
        dtype = _accumulator(ensemble, x)
        index = leaves(ensemble, x)
        scores = _running_sum(_gather_scores(ensemble, index, dtype))
        s0, s1 = scores[:, 0], scores[:, 1]
        h0, h1 = _has(ensemble, index, 0), _has(ensemble, index, 1)
        if bases == 2:
            # with a class-1 score: s1 = base1 + s0 and s0 = -s1; without: add both bases
            b0, b1 = (tf.cast(b, dtype) for b in base)
            s1, s0 = _pick(h1, b1 + s0, s1 + b1), _pick(h1, -(b1 + s0), s0 + b0)
        elif bases == 1:
            s0 = s0 + tf.cast(base[0], dtype)
        zero = tf.zeros_like(s0)
        first = _pick(h0, s0, zero)  # a score without has_score reads as 0
        positive_weight = _pick(h1, s1, first)
        threshold = 0.5 if one_class and all_positive else 0.0
        positive = positive_weight > threshold
        label = tf.gather(tf.constant(labels), tf.cast(positive, tf.int32))
        first, s1 = tf.cast(first, tf.float32), tf.cast(s1, tf.float32)
        second = _pick(h1, s1, tf.zeros_like(s1))
        two = _transform(tf.stack([first, second], axis=1), transform)
        if bases == 2 or second_always:
            return [label, two]
        if one_class and all_positive:  # onnxruntime 1.31: [1 - p, p], p after LOGISTIC
            p = logistic(first) if transform == "LOGISTIC" else first
            one = tf.stack([1.0 - p, p], axis=1)
        elif transform == "LOGISTIC":
            one = tf.stack([logistic(-first), logistic(first)], axis=1)
        else:
            one = tf.stack([-first, first], axis=1)
        if second_never:
            return [label, one]
        return [label, tf.where(tf.expand_dims(h1, 1), two, one)]

    return run


def _pick(condition: Any, yes: Any, no: Any) -> Any:
    if condition is True:
        return yes
    if condition is False:
        return no
    return tf.where(condition, yes, no)
