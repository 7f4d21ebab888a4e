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

from typing import Any

import numpy as np
import tensorflow as tf

from sqlml.export.ops import TRANSFORMS, Node, Run, class_labels, first_argmax, logistic
from sqlml.export.ops import transform_scores as _transform
from sqlml.export.tables import AGGREGATES, Ensemble, floats, parse

_COMPARE = {1: tf.less_equal, 2: tf.less, 3: tf.greater_equal, 4: tf.greater, 5: tf.equal}


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
    base, _ = floats(node, "base_values")
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
    base, _ = floats(node, "base_values")
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
    weights, _ = floats(node, "class_weights")
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
