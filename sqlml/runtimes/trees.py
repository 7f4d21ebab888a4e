"""Tree-ensemble models scored by sqlml's C walker (sqlml/native/treewalk.c), not onnxruntime.

Why: trees are the commonest tabular models and onnxruntime's TreeEnsemble kernel walks one
row through one tree at a time. The C walker moves a block of rows through each tree level by
level, about 2.6x faster per core, and ctypes releases the GIL for the call, so DuckDB's
threads score chunks in parallel.

Which graphs: one TreeEnsembleClassifier or TreeEnsembleRegressor whose outputs reach the
graph outputs through Identity nodes, as scikit-learn converters emit for tree estimators. A
bare estimator's float32 columns (joined by one Concat) feed it directly; in a pipeline, the
steps before the trees (scaler, imputer, one-hot encoder ...) run in onnxruntime, cut off as a
model of their own, and the walker takes their float32 matrix. Anything else (post-processing
after the trees, double features, equality branches, scores some leaves leave unset) stays on
onnxruntime.

Two kernels: the walk (any tree shape), and on CPUs with AVX-512 complete trees 16 rows at a
time (trees up to COMPLETE_DEPTH levels, each adding to one output: gradient boosting), about
4x the walk per core on 100 trees of depth 6 (9x for models reading at most 16 features, whose
rows the kernel holds in registers) and bit-identical to it.

How it stays exact: the leaf sums are bit-identical to onnxruntime's (float32, tree order);
labels and the binary/multiclass encodings follow onnxruntime's TreeAggregatorClassifier as
the export does (`sqlml.export.trees`); only LOGISTIC/SOFTMAX differ, by onnxruntime's
approximation (~1e-7). And every scorer is checked against onnxruntime when the model loads,
on rows set exactly on the trees' thresholds, just beside them and NaN: any difference and
the model is scored by onnxruntime instead. The reference is the ensemble node alone in
onnxruntime, so a pipeline's steps are onnxruntime's own on both paths.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa

from sqlml.errors import ArtifactError
from sqlml.export.node import Node
from sqlml.export.tables import Ensemble, floats, parse
from sqlml.runtimes import Batch
from sqlml.runtimes.parts import (
    ML_DOMAIN,
    CannotSplit,
    load_native,
    model_like,
    same_outputs,
    single_thread_session,
)

ABI = 7  # sqlml_treewalk_abi() of the C file this module was written for
TREE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")
FEATURE_LIMIT = 1 << 24  # the C node packs its flags above the feature index
TRUE_LEAF_FLAG, FALSE_LEAF_FLAG = 1 << 27, 1 << 28  # a child is a leaf: the row stops there
STRICT_FLAG = 1 << 29
NAN_TRUE_FLAG = 1 << 30
NODE_TYPE = np.dtype(
    [("feature", "<i4"), ("threshold", "<f4"), ("next_true", "<i4"), ("next_false", "<i4")]
)
LEQ, LT, GTE, GT = 1, 2, 3, 4  # sqlml.export.tables.MODES
PROBE_ROWS = 512
LIST_STEP, LIST_BUILD = 1.3, 1.0  # a listed row's step; building the list (plain steps)
COMPLETE_DEPTH = 8  # trees up to this deep are padded to complete ones for the 16-row kernel
COMPLETE_PAD = 16  # entries after each tree's tables: the kernel's 16-wide loads stay inside
LANES = 16  # rows the 16-row kernel scores at once
FLOAT64 = pa.float64()

Finish = Callable[[np.ndarray], dict[int, np.ndarray]]  # scores [n, k] -> ensemble outputs


FINISH_BINARY, FINISH_VALUE = 1, 2  # sqlml_tree_batch's finishes


@dataclass(frozen=True)
class BatchFinish:
    """A finish the C batch call does itself (`sqlml_tree_batch`) on one column of scores:
    FINISH_BINARY, a binary classifier's `base` + LOGISTIC with label index 1 above
    `label_threshold`; FINISH_VALUE, a regressor's one target, sum / `divisor` + `base`."""

    kind: int
    base: float
    divisor: float = 1.0
    label_threshold: float = 0.0
    labels: np.ndarray | None = None  # binary: the label output's values by index (None: 0/1)


@functools.cache
def native_library() -> ctypes.CDLL | None:
    """The compiled walker, or None where `pip install` could not compile it (no C compiler)."""
    library = load_native("sqlml._treewalk", "sqlml_treewalk_abi", ABI)
    if library is None:
        return None
    pointer = ctypes.c_void_p
    library.sqlml_tree_scores.restype = None
    library.sqlml_tree_scores.argtypes = [
        pointer,  # nodes
        pointer,  # roots
        pointer,  # depths
        pointer,  # levels every row walks, per tree (then: the rows not at a leaf)
        ctypes.c_int32,  # trees
        pointer,  # leaf weights [nodes, outputs]
        ctypes.c_int32,  # outputs
        pointer,  # x [rows, features]
        ctypes.c_int64,  # rows
        ctypes.c_int32,  # features
        pointer,  # scores [rows, outputs]
        ctypes.c_int32,  # any strict (<) node: 0 lets the walker use `<=` alone
    ]
    library.sqlml_treewalk_complete_supported.restype = ctypes.c_int
    library.sqlml_tree_batch.restype = ctypes.c_int
    library.sqlml_tree_batch.argtypes = [
        pointer,  # complete trees: features
        pointer,  # thresholds
        pointer,  # leaves
        ctypes.c_int32,  # trees
        ctypes.c_int32,  # depth
        ctypes.c_int32,  # any strict
        pointer,  # the float64 feature columns (an array of pointers)
        ctypes.c_int32,  # columns
        ctypes.c_int64,  # rows
        ctypes.c_int32,  # finish: FINISH_BINARY or FINISH_VALUE
        ctypes.c_float,  # base score
        ctypes.c_float,  # value: divisor (AVERAGE: the tree count)
        ctypes.c_float,  # binary: a score above it is label index 1
        ctypes.c_double,  # binary: ML.PREDICT's threshold on the second class's probability
        pointer,  # binary: label index [rows] int64
        pointer,  # raw: probabilities [rows, 2] / values [rows] float32
        pointer,  # wide: the same as float64
        pointer,  # binary: chosen [rows] int64
    ]
    library.sqlml_tree_scores_complete.restype = None
    library.sqlml_tree_scores_complete.argtypes = [
        pointer,  # complete trees: features [trees, 2^depth - 1 + 16]
        pointer,  # thresholds, the same shape
        pointer,  # leaves [trees, 2^depth + 16]
        ctypes.c_int32,  # trees
        ctypes.c_int32,  # depth
        pointer,  # x
        ctypes.c_int64,  # rows, a multiple of 16
        ctypes.c_int32,  # features
        pointer,  # scores [rows], one output column
        ctypes.c_int32,  # any strict
    ]
    return library


@dataclass
class _Graph:
    """The parts of a recognised graph: what feeds the ensemble and where its outputs go."""

    tree: onnx.NodeProto
    outputs: dict[str, int]  # graph output name -> index of the ensemble's output
    inputs: list[str]  # graph inputs concatenated in this order into the feature matrix ...
    widths: list[int]
    prefix: onnx.ModelProto | None = None  # ... or the steps before the ensemble (a pipeline)


class TreeScorer:
    """One tree-ensemble model on the C walker; `predict` answers like the onnxruntime session.

    The feature matrix is the graph inputs side by side, or, in a pipeline, what an
    onnxruntime session of the steps before the ensemble (scaler, imputer, encoders) returns.
    """

    def __init__(
        self,
        graph: _Graph,
        ensemble: Ensemble,
        finish: Finish,
        library: ctypes.CDLL,
        prefix: ort.InferenceSession | None = None,
        model: str = "?",
        in_c: BatchFinish | None = None,
    ):
        self.model = model
        self.graph = graph
        self.features = int(ensemble.feature.max(initial=0)) + 1  # columns the trees read
        self.outputs = ensemble.weights.shape[1]
        self._library = library
        self._nodes = _node_table(ensemble)
        self._roots = np.ascontiguousarray(ensemble.roots, dtype=np.int32)
        self._depths = np.ascontiguousarray(ensemble.depths, dtype=np.int32)
        self._every = _walk_all_levels(self._nodes, self._roots, self._depths)
        self._weights = np.ascontiguousarray(ensemble.weights, dtype=np.float32)
        self._any_strict = int((self._nodes["feature"] & STRICT_FLAG).any())
        self._finish = finish
        self._prefix = prefix
        self._tables = self._pointers()
        self._complete = None
        if library.sqlml_treewalk_complete_supported():
            self._complete = _complete_trees(self._nodes, self._roots, self._depths, self._weights)
        self._in_c = in_c if self._can_batch(in_c) else None
        self._column_pointers = ctypes.c_void_p * len(graph.inputs)

    def _can_batch(self, in_c: BatchFinish | None) -> bool:
        """Whether `batch` can run: the finish is a C one, one column of complete trees adds
        to score 0, and the graph's inputs are the matrix's columns one by one."""
        outputs = {0, 1} if in_c is not None and in_c.kind == FINISH_BINARY else {0}
        return (
            in_c is not None
            and self._complete is not None
            and [column for column, _ in self._complete.columns] == [0]
            and self._prefix is None
            and set(self.graph.widths) == {1}
            and set(self.graph.outputs.values()) <= outputs
        )

    def stop_batching(self) -> None:
        """Score through `predict` only (the batch call disagreed with onnxruntime)."""
        self._in_c = None

    @property
    def batches(self) -> bool:
        """Whether `batch` answers for this model."""
        return self._in_c is not None

    @property
    def kernel(self) -> str:
        """Which C kernel scores: 16 rows at a time (AVX-512) on complete trees, or the walk."""
        return "16-row AVX-512" if self._complete is not None else "row-block walk"

    def _pointers(self) -> tuple:
        """The C call's constant arguments, converted once: `.ctypes.data` costs ~1 us each,
        which a one-row request (the server) would pay on every call."""
        return (
            self._nodes.ctypes.data,
            self._roots.ctypes.data,
            self._depths.ctypes.data,
            self._every.ctypes.data,
            len(self._roots),
            self._weights.ctypes.data,
            self.outputs,
        )

    def scores(self, x: np.ndarray, complete: bool = True) -> np.ndarray:
        """Summed leaf weights [rows, outputs] (float32) for a float32 matrix [rows, features];
        `complete=False` uses the ordinary walk even where the 16-row kernel could run."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] < self.features:  # the C code trusts the row width
            raise ArtifactError(
                f"model {self.model}: its trees read {self.features} features, but the matrix "
                f"fed to them has shape {list(x.shape)}"
            )
        scores = np.empty((x.shape[0], self.outputs), dtype=np.float32)
        if complete and self._complete is not None:
            return self._complete_scores(x)
        self._library.sqlml_tree_scores(
            *self._tables,
            x.ctypes.data,
            x.shape[0],
            x.shape[1],
            scores.ctypes.data,
            self._any_strict,
        )
        return scores

    def _complete_scores(self, x: np.ndarray) -> np.ndarray:
        """The 16-row kernel, column by column; the rows past a multiple of 16 are padded."""
        rows, width = x.shape
        whole = rows - rows % LANES
        scores = np.zeros((self.outputs, rows), dtype=np.float32)
        if whole < rows:
            tail = np.zeros((LANES, width), dtype=np.float32)
            tail[: rows - whole] = x[whole:]
            tail_scores = np.empty(LANES, dtype=np.float32)
        strict = self._any_strict
        for column, tables in self._complete.columns:
            if whole:
                target = scores[column]
                self._library.sqlml_tree_scores_complete(
                    *tables, x.ctypes.data, whole, width, target.ctypes.data, strict
                )
            if whole < rows:
                self._library.sqlml_tree_scores_complete(
                    *tables, tail.ctypes.data, LANES, width, tail_scores.ctypes.data, strict
                )
                scores[column, whole:] = tail_scores[: rows - whole]
        return np.ascontiguousarray(scores.T)

    def batch(self, columns: dict[str, pa.Array], threshold: float) -> Batch | None:
        """The model's outputs for a batch of DOUBLE columns (Arrow float64 without NULLs, by
        graph input name) with ML.PREDICT's own arrays (float64 values; a binary classifier's
        labels at `threshold`), in one C call; None for other columns (the caller takes
        `predict`). The Arrow buffers go to C as they are: per batch, reading their addresses
        costs a fifth of numpy's `.ctypes.data`, and this runs under the GIL."""
        finish = self._in_c
        ordered = [columns[name] for name in self.graph.inputs]
        rows = len(ordered[0])
        if finish is None or any(
            c.type != FLOAT64 or c.null_count or len(c) != rows for c in ordered
        ):
            return None  # the C code trusts the buffers: nothing else reaches it
        binary = finish.kind == FINISH_BINARY
        # one allocation, one address: wide (float64), raw (float32), then for a binary
        # classifier label and chosen (int64); a binary row has two probabilities
        per_row = 2 if binary else 1
        block = np.empty((12 * per_row + (16 if binary else 0)) * rows, dtype=np.uint8)
        at = block.ctypes.data
        raw_at, label_at = 8 * per_row * rows, 12 * per_row * rows
        ((_, tables),) = self._complete.columns
        failed = self._library.sqlml_tree_batch(
            *tables,
            self._any_strict,
            self._column_pointers(*(c.buffers()[1].address + 8 * c.offset for c in ordered)),
            len(ordered),
            rows,
            finish.kind,
            finish.base,
            finish.divisor,
            finish.label_threshold,
            threshold,
            at + label_at if binary else None,
            at + raw_at,
            at,
            at + label_at + 8 * rows if binary else None,
        )
        if failed:
            raise MemoryError(f"model {self.model}: the tree walker could not allocate a batch")
        wide = block[:raw_at].view(np.float64).reshape(rows, per_row)
        raw = block[raw_at:label_at].view(np.float32).reshape(rows, per_row)
        if not binary:
            outputs = {name: raw for name in self.graph.outputs}  # output 0 only
            return Batch(outputs, wide.reshape(rows))
        label = block[label_at : label_at + 8 * rows].view(np.int64)
        chosen = block[label_at + 8 * rows :].view(np.int64)
        results = [label if finish.labels is None else finish.labels[label], raw]
        outputs = {name: results[index] for name, index in self.graph.outputs.items()}
        return Batch(outputs, wide, chosen)

    def ensemble_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """What the ensemble node returns for its feature matrix: label/probabilities or
        the regression values, in the node's output order."""
        results = self._finish(self.scores(x))
        return [results[k] for k in sorted(results)]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._prefix is not None:
            (x,) = self._prefix.run([self.graph.tree.input[0]], inputs)
        else:  # one float32 matrix, cast while copied: one pass per column, no temporaries
            columns = [np.asarray(inputs[name]) for name in self.graph.inputs]
            n = len(columns[0])
            x = np.empty((n, sum(self.graph.widths)), dtype=np.float32)
            start = 0
            for column, width in zip(columns, self.graph.widths):
                x[:, start : start + width] = column.reshape(n, width)
                start += width
        results = self.ensemble_outputs(x)
        return {name: results[index] for name, index in self.graph.outputs.items()}


def tree_scorer(proto: onnx.ModelProto, model: str) -> TreeScorer | None:
    """A TreeScorer for this graph when its model is a tree ensemble (bare or after pipeline
    steps) that the walker reproduces exactly, checked against onnxruntime; else None."""
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
    if plan is None:
        return None
    ensemble, finish, in_c = plan
    if graph.prefix is None and int(ensemble.feature.max(initial=0)) >= sum(graph.widths):
        return None
    try:
        prefix = _float_matrix_session(graph.prefix, graph.tree.input[0])
        expected = single_thread_session(_alone(proto, graph.tree))
    except CannotSplit:
        return None
    scorer = TreeScorer(graph, ensemble, finish, library, prefix, model, in_c)
    return scorer if _agrees(scorer, expected, ensemble) else None


def _recognise(proto: onnx.ModelProto) -> _Graph | None:
    """The one tree-ensemble node, its outputs reaching the graph outputs through Identity
    nodes only, and what feeds it: float32 graph inputs (optionally one Concat) or other
    steps (then `prefix`, a model of those steps ending at the ensemble's input)."""
    graph = proto.graph
    found = [n for n in graph.node if n.op_type in TREE_OPS and n.domain == ML_DOMAIN]
    if len(found) != 1 or len(found[0].input) != 1:
        return None
    tree = found[0]
    produced = {name: k for k, name in enumerate(tree.output) if name}
    before = []
    for node in graph.node:
        if node is tree:
            continue
        if any(name in produced for name in node.input):
            if node.op_type != "Identity":
                return None  # post-processing of the ensemble's outputs: onnxruntime's job
            produced[node.output[0]] = produced[node.input[0]]
        else:
            before.append(node)
    outputs = {}
    for value in graph.output:
        if value.name not in produced:
            return None
        outputs[value.name] = produced[value.name]
    direct = _direct_inputs(graph, before, tree.input[0])
    if direct is not None:
        return _Graph(tree, outputs, *direct)
    return _Graph(tree, outputs, [], [], _steps_before(proto, before, tree.input[0]))


def _direct_inputs(
    graph: onnx.GraphProto, before: list[onnx.NodeProto], matrix: str
) -> tuple[list[str], list[int]] | None:
    """The graph inputs (float32 [N, k] each) that are the feature matrix side by side: the
    ensemble's input itself or one Concat on axis 1 of all of them; else None."""
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
    if not before:
        inputs = [matrix] if matrix in shapes else None
    elif len(before) == 1 and before[0].op_type == "Concat" and before[0].output[0] == matrix:
        axis = next((a.i for a in before[0].attribute if a.name == "axis"), None)
        inputs = list(before[0].input) if axis in (1, -1) else None
    else:
        return None
    if inputs is None or sorted(inputs) != sorted(shapes):
        return None
    if any(shapes[name] is None for name in inputs):
        return None
    return inputs, [int(shapes[name]) for name in inputs]


def _steps_before(
    proto: onnx.ModelProto, before: list[onnx.NodeProto], matrix: str
) -> onnx.ModelProto:
    """The model's inputs, the nodes before the ensemble and the initializers they use, with
    the ensemble's input as the only output (its type left for onnxruntime to infer)."""
    used = {name for node in before for name in node.input}
    graph = onnx.helper.make_graph(
        before,
        "sqlml_steps_before_trees",
        list(proto.graph.input),
        [onnx.helper.make_empty_tensor_value_info(matrix)],
        [i for i in proto.graph.initializer if i.name in used],
    )
    return model_like(proto, graph)


def _alone(proto: onnx.ModelProto, tree: onnx.NodeProto) -> onnx.ModelProto:
    """The ensemble node as a model of its own: the reference the walker is checked against."""
    graph = onnx.helper.make_graph(
        [tree],
        "sqlml_trees_alone",
        [onnx.helper.make_tensor_value_info(tree.input[0], onnx.TensorProto.FLOAT, [None, None])],
        [onnx.helper.make_empty_tensor_value_info(name) for name in tree.output if name],
    )
    return model_like(proto, graph)


def _float_matrix_session(
    prefix: onnx.ModelProto | None, matrix: str
) -> ort.InferenceSession | None:
    if prefix is None:
        return None
    session = single_thread_session(prefix)
    (output,) = session.get_outputs()
    if output.name != matrix or output.type != "tensor(float)":
        raise CannotSplit(f"{matrix} is {output.type}")  # double splits compare differently
    return session


# the tables, the post-processing, and the finish the C batch call can do; or unsupported
Plan = tuple[Ensemble, Finish, BatchFinish | None] | None


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

    in_c = None
    if targets == 1:
        divisor = float(trees) if aggregate == "AVERAGE" else 1.0
        in_c = BatchFinish(FINISH_VALUE, float(base[0]) if len(base) == 1 else 0.0, divisor)
    return ensemble, finish, in_c


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

    return ensemble, finish, None


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
        elif transform == "LOGISTIC":  # [logistic(-s), logistic(s)] with one exp
            v = _logistic_magnitude(first)
            two = np.empty((len(first), 2), dtype=np.float32)
            two[:, 0] = np.where(first > 0, np.float32(1) - v, v)
            two[:, 1] = np.where(first < 0, np.float32(1) - v, v)
        else:
            two = np.stack([zero - first, first], axis=1)
        return {0: label, 1: two}

    in_c = None
    if h0 and not h1 and bases < 2 and transform == "LOGISTIC" and not (one_class and all_positive):
        identity = labels.dtype != object and labels.tolist() == [0, 1]
        in_c = BatchFinish(
            FINISH_BINARY,
            float(base[0]) if bases else 0.0,
            label_threshold=float(threshold),
            labels=None if identity else labels,
        )
    return ensemble, finish, in_c


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
    v = _logistic_magnitude(x)
    return np.where(x < 0, np.float32(1) - v, v).astype(np.float32)


def _logistic_magnitude(x: np.ndarray) -> np.ndarray:
    return np.float32(1) / (np.float32(1) + np.exp(-np.abs(x)))


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
    leaf = mode == 0
    table["feature"] |= np.where(leaf[table["next_true"]], TRUE_LEAF_FLAG, 0)
    table["feature"] |= np.where(leaf[table["next_false"]], FALSE_LEAF_FLAG, 0)
    return table


@dataclass
class _CompleteTrees:
    """The trees padded to complete ones of the deepest tree's depth, grouped by the output
    column each adds to, as the 16-row kernel's first arguments (pointers into `arrays`)."""

    columns: list[tuple[int, tuple]]  # (output column, (features, thresholds, leaves, n, depth))
    arrays: list[np.ndarray]


def _complete_trees(
    nodes: np.ndarray, roots: np.ndarray, depths: np.ndarray, weights: np.ndarray
) -> _CompleteTrees | None:
    """Level order; the children of j are 2j (true side) and 2j + 1 (false side); a leaf above
    the bottom becomes a split whose two sides are that leaf again. None for trees deeper than
    COMPLETE_DEPTH, or trees that add to more than one output column (a forest classifier's
    votes: the kernel would walk every tree once per column)."""
    depth = int(depths.max(initial=0))
    if not 1 <= depth <= COMPLETE_DEPTH:
        return None
    trees, internal = len(roots), (1 << depth) - 1
    features = np.zeros((trees, internal + COMPLETE_PAD), dtype=np.int32)
    thresholds = np.zeros((trees, internal + COMPLETE_PAD), dtype=np.float32)
    current = roots.astype(np.int64).reshape(trees, 1)  # node ids of the level, per tree
    for level in range(depth):
        at = slice((1 << level) - 1, (1 << (level + 1)) - 1)
        leaf = nodes["next_true"][current] == current
        features[:, at] = np.where(leaf, 0, nodes["feature"][current])
        thresholds[:, at] = np.where(leaf, 0.0, nodes["threshold"][current])
        true_side = np.where(leaf, current, nodes["next_true"][current])
        false_side = np.where(leaf, current, nodes["next_false"][current])
        current = np.stack([true_side, false_side], axis=2).reshape(trees, -1)
    if not (nodes["next_true"][current] == current).all():
        return None  # deeper than `depths` says: leave it to the walk
    leaf_weights = weights[current]  # [trees, 2^depth, outputs]
    adds_to = (leaf_weights != 0).any(axis=1)  # [trees, outputs]
    if (adds_to.sum(axis=1) > 1).any():
        return None
    columns, arrays = [], []
    for column in range(weights.shape[1]):
        chosen = np.flatnonzero(adds_to[:, column])
        if not len(chosen):
            continue
        leaves = np.zeros((len(chosen), (1 << depth) + COMPLETE_PAD), dtype=np.float32)
        leaves[:, : 1 << depth] = leaf_weights[chosen, :, column]
        group = [np.ascontiguousarray(features[chosen]), np.ascontiguousarray(thresholds[chosen])]
        group.append(leaves)
        arrays += group
        columns.append((column, (*(a.ctypes.data for a in group), len(chosen), depth)))
    return _CompleteTrees(columns, arrays)


def _walk_all_levels(nodes: np.ndarray, roots: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """Per tree, how many levels every row of a block walks before the walker switches to a
    list of the rows not yet at a leaf (a leaf points to itself). The list costs more per step
    and one pass to build, so it is used from the level where the expected cost is lowest,
    counting that each split sends half the rows each way; balanced trees never switch."""
    every = np.asarray(depths, dtype=np.int32).copy()
    for t, root in enumerate(roots.tolist()):
        frontier, mass, walking = np.asarray([root]), np.ones(1), []
        for _ in range(int(depths[t])):
            leaf = nodes["next_true"][frontier] == frontier
            frontier, mass = frontier[~leaf], mass[~leaf] / 2
            walking.append(2 * mass.sum())  # share of the rows that step at this level
            frontier = np.concatenate([nodes["next_true"][frontier], nodes["next_false"][frontier]])
            mass = np.concatenate([mass, mass])
        after = np.cumsum(walking[::-1])[::-1]  # steps left from each level on, per row
        costs = [level + LIST_BUILD + LIST_STEP * after[level] for level in range(len(after))]
        if costs and min(costs) < depths[t]:
            every[t] = int(np.argmin(costs))
    return every


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


def _agrees(scorer: TreeScorer, expected: ort.InferenceSession, ensemble: Ensemble) -> bool:
    """Whether the walker answers the probe rows exactly as onnxruntime's ensemble node does."""
    x = _probe(ensemble, scorer.features)
    try:
        want_all = expected.run(None, {scorer.graph.tree.input[0]: x})
        got_all = scorer.ensemble_outputs(x)
    except Exception:  # onnxruntime refusing the probe: leave the model to it
        return False
    if not same_outputs(got_all, want_all):
        return False
    if scorer.batches:  # ... and so does the batch call, else the model goes without
        unread = pa.array(np.zeros(len(x)))  # inputs past the last feature the trees read
        columns = {
            name: pa.array(x[:, k].astype(np.float64)) if k < x.shape[1] else unread
            for k, name in enumerate(scorer.graph.inputs)
        }
        batch = scorer.batch(columns, 0.5)
        if batch is None:  # cannot happen: float64 columns without NULLs
            scorer.stop_batching()
            return True
        got = [batch.outputs[name] for name in sorted(batch.outputs, key=scorer.graph.outputs.get)]
        wanted = [want_all[index] for index in sorted(scorer.graph.outputs.values())]
        if batch.chosen is None:  # a regressor: its prediction is its one target
            got.append(batch.values)
            wanted.append(want_all[0][:, 0])
        else:
            got += [batch.values, batch.chosen]
            wanted += [want_all[1], (want_all[1][:, 1] > 0.5).astype(np.int64)]
        if not same_outputs(got, wanted):
            scorer.stop_batching()
    return True
