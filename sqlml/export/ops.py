"""ONNX graph -> TensorFlow ops: one handler per ONNX op type, standard and ai.onnx.ml.

Why per-op handlers that copy onnxruntime: sqlml scores with onnxruntime, so an exported model
must give the same answers, including onnxruntime's quirks (how a binary LinearClassifier
with one coefficient row reports two probabilities, float32 arithmetic, first index wins on
ties). Each handler is a *builder*: it reads and checks the node's attributes when the graph
is compiled (so an unsupported op or attribute value is refused before anything is written)
and returns the function that emits the TensorFlow ops when the module is traced.

Known differences from onnxruntime, all below the export tolerance (1e-5):
- MatMul/Gemm sum products in a different order (float32 rounding, ~1e-7);
- onnxruntime's vectorised logistic/softmax are approximations (~1e-7).
One behavioural difference: a OneHotEncoder with zeros=0 makes onnxruntime fail the whole
batch on an unknown category; the export encodes that row as all zeros instead (TensorFlow
Serving has no per-row error).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import tensorflow as tf
from onnx import numpy_helper

from sqlml.export import ExportError
from sqlml.export.node import Node

ML = "ai.onnx.ml"
STANDARD = ""

Run = Callable[[list[Any]], list[Any]]  # input tensors (None when absent) -> output tensors

# ONNX element type -> TensorFlow dtype
TF_TYPES: dict[int, tf.DType] = {
    onnx.TensorProto.FLOAT: tf.float32,
    onnx.TensorProto.DOUBLE: tf.float64,
    onnx.TensorProto.INT64: tf.int64,
    onnx.TensorProto.INT32: tf.int32,
    onnx.TensorProto.INT16: tf.int16,
    onnx.TensorProto.INT8: tf.int8,
    onnx.TensorProto.UINT8: tf.uint8,
    onnx.TensorProto.BOOL: tf.bool,
    onnx.TensorProto.STRING: tf.string,
}
# post_transform values translated; PROBIT is refused: onnxruntime's approximation returns -inf
# where a plain ErfInv gives NaN, and no scikit-learn converter emits it.
TRANSFORMS = ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO")


Builder = Callable[[Node], Run]
HANDLERS: dict[tuple[str, str], Builder] = {}


def handler(*op_types: str, domain: str = STANDARD) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        for op_type in op_types:
            HANDLERS[(domain, op_type)] = builder
        return builder

    return register


def supported_ops() -> list[str]:
    """`domain.Op` names the translator handles, for error messages and docs."""
    return sorted(f"{d or 'ai.onnx'}.{op}" for d, op in HANDLERS)


# -- the compiled graph ---------------------------------------------------------------------


@dataclass(frozen=True)
class GraphInput:
    name: str
    dtype: tf.DType
    rank: int | None


@dataclass(frozen=True)
class Step:
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    run: Run


@dataclass
class Program:
    """An ONNX graph compiled to TensorFlow-emitting steps; call it inside a tf.function."""

    inputs: tuple[GraphInput, ...]
    outputs: tuple[str, ...]
    constants: dict[str, np.ndarray]
    steps: list[Step]

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = dict(feeds)

        def value(name: str) -> Any:
            if not name:
                return None
            if name not in values:
                values[name] = tf.constant(self.constants[name])
            return values[name]

        for step in self.steps:
            results = step.run([value(name) for name in step.inputs])
            for name, result in zip(step.outputs, results):
                if name:
                    values[name] = result
        return {name: value(name) for name in self.outputs}


def _domain(domain: str) -> str:
    return STANDARD if domain in ("", "ai.onnx") else domain


def load_onnx(data: bytes, model: str) -> onnx.ModelProto:
    try:
        proto = onnx.load_model_from_string(data)
        onnx.checker.check_model(proto)
    except Exception as error:  # protobuf and the checker raise many unrelated types
        raise ExportError(f"model {model}: not a loadable ONNX model: {error}") from None
    if not proto.graph.output:
        raise ExportError(f"model {model}: not a loadable ONNX model (the graph has no outputs)")
    return proto


def compile_onnx(data: bytes, model: str) -> Program:
    """Check every node against the handlers and build the program (no TensorFlow ops yet)."""
    proto = load_onnx(data, model)
    graph = proto.graph
    opsets = {_domain(o.domain): o.version for o in proto.opset_import}
    if graph.sparse_initializer:
        raise ExportError(f"model {model}: sparse initializers are not supported")
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in constants:
            continue
        tensor_type = value.type.tensor_type
        if value.type.WhichOneof("value") != "tensor_type" or tensor_type.elem_type not in TF_TYPES:
            raise ExportError(f"model {model}: input {value.name!r} is not a supported tensor")
        rank = len(tensor_type.shape.dim) if tensor_type.HasField("shape") else None
        inputs.append(GraphInput(value.name, TF_TYPES[tensor_type.elem_type], rank))
    steps = []
    for proto_node in graph.node:
        domain = _domain(proto_node.domain)
        key = (domain, proto_node.op_type)
        node = Node(proto_node, model, opsets.get(domain, 1), constants)
        if proto_node.op_type == "Constant" and domain == STANDARD:
            constants[proto_node.output[0]] = _constant_value(node)
            continue
        if key not in HANDLERS:
            raise node.fail(_unsupported(domain))
        steps.append(Step(tuple(proto_node.input), tuple(proto_node.output), HANDLERS[key](node)))
    produced = set(constants) | {i.name for i in inputs}
    for step in steps:
        produced.update(step.outputs)
    missing = [o.name for o in graph.output if o.name not in produced]
    if missing:
        raise ExportError(f"model {model}: graph outputs {missing} are never computed")
    return Program(tuple(inputs), tuple(o.name for o in graph.output), constants, steps)


def _unsupported(domain: str) -> str:
    if domain not in (STANDARD, ML):
        return f"the exporter translates only the ai.onnx and {ML} domains"
    same = sorted(op for d, op in HANDLERS if d == domain)
    return f"the exporter has no translation for it (it translates {', '.join(same)})"


def _constant_value(node: Node) -> np.ndarray:
    for name in ("value", "value_float", "value_int", "value_floats", "value_ints"):
        if name in node.attrs:
            value = node.attrs[name]
            if name.startswith("value_float"):
                return np.asarray(value, dtype=np.float32)
            if name.startswith("value_int"):
                return np.asarray(value, dtype=np.int64)
            return np.asarray(value)
    if "value_strings" in node.attrs:
        return np.asarray(node.attrs["value_strings"], dtype=object)
    raise node.fail("a Constant without a supported value attribute")


# -- shared numerics (onnxruntime's ml_common.h) -------------------------------------------


def logistic(x: Any) -> Any:
    """onnxruntime's ComputeLogistic: 1/(1+exp(-|x|)), mirrored for negative x."""
    v = 1.0 / (1.0 + tf.exp(-tf.abs(x)))
    return tf.where(x < 0, 1.0 - v, v)


def softmax(x: Any) -> Any:
    """Softmax over the last axis, subtracting the row maximum first as onnxruntime does."""
    e = tf.exp(x - tf.reduce_max(x, axis=-1, keepdims=True))
    return e / tf.reduce_sum(e, axis=-1, keepdims=True)


def softmax_zero(x: Any) -> Any:
    """onnxruntime's ComputeSoftmaxZero: values within 1e-7 of zero stay (almost) zero."""
    top = tf.reduce_max(x, axis=-1, keepdims=True)
    nonzero = tf.abs(x) > 1e-7
    e = tf.where(nonzero, tf.exp(x - top), x * tf.exp(-top))
    total = tf.reduce_sum(tf.where(nonzero, e, tf.zeros_like(e)), axis=-1, keepdims=True)
    return e / total


def transform_scores(scores: Any, transform: str) -> Any:
    """Apply a post_transform to [n, k] scores (k >= 2) as onnxruntime's write_scores does."""
    if transform == "LOGISTIC":
        return logistic(scores)
    if transform == "SOFTMAX":
        return softmax(scores)
    if transform == "SOFTMAX_ZERO":
        return softmax_zero(scores)
    return scores


def first_argmax(scores: Any, eligible: Any | None = None) -> Any:
    """Index of the first maximum along the last axis (strict >, as onnxruntime loops).

    `eligible` ([n, k] bool) leaves classes out, like a tree class that got no score; the
    first eligible class is taken even if its score is NaN.
    """
    k = scores.shape[-1]
    best = scores[:, 0]
    index = tf.zeros_like(best, dtype=tf.int32)
    found = eligible[:, 0] if eligible is not None else None
    for j in range(1, k):
        score = scores[:, j]
        take = score > best
        if eligible is not None:
            take = eligible[:, j] & (take | ~found)
            found = found | eligible[:, j]
        best = tf.where(take, score, best)
        index = tf.where(take, j, index)
    return index


def as_rows(x: Any) -> Any:
    """A 1-D or 2-D tensor as [n, features] (onnxruntime treats a 1-D input as one row)."""
    if x.shape.rank == 1:
        return tf.reshape(x, [1, -1])
    if x.shape.rank != 2:
        return tf.reshape(x, [tf.shape(x)[0], -1])
    return x


def float_rows(x: Any) -> Any:
    return tf.cast(as_rows(x), tf.float32)


def class_labels(node: Node) -> np.ndarray:
    """classlabels_strings / classlabels_int64s (or _ints) as a numpy array (object or int64)."""
    strings = node.strings("classlabels_strings")
    if strings:
        return np.asarray([s.encode() for s in strings], dtype=object)
    ints = node.attrs.get("classlabels_int64s", node.attrs.get("classlabels_ints"))
    if ints is None or len(ints) == 0:
        raise node.fail("it has no class labels")
    return np.asarray(ints, dtype=np.int64)


# -- standard ops -------------------------------------------------------------------------

_UNARY: dict[str, Callable[[Any], Any]] = {
    "Identity": tf.identity,
    "Abs": tf.abs,
    "Neg": tf.negative,
    "Exp": tf.exp,
    "Log": tf.math.log,
    "Sqrt": tf.sqrt,
    "Reciprocal": tf.math.reciprocal,
    "Floor": tf.floor,
    "Ceil": tf.math.ceil,
    "Round": tf.round,  # both round half to even
    "Sign": tf.sign,
    "Relu": tf.nn.relu,
    "Sigmoid": tf.sigmoid,
    "Tanh": tf.tanh,
    "Erf": tf.math.erf,
    "Not": tf.logical_not,
    "IsNaN": lambda x: tf.not_equal(x, x),  # TFLite has no IsNan; NaN is the only x != x
}
_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "Add": tf.add,
    "Sub": tf.subtract,
    "Mul": tf.multiply,
    "Equal": tf.equal,
    "Greater": tf.greater,
    "Less": tf.less,
    "GreaterOrEqual": tf.greater_equal,
    "LessOrEqual": tf.less_equal,
    "And": tf.logical_and,
    "Or": tf.logical_or,
    "Xor": tf.math.logical_xor,
}


@handler(*_UNARY)
def _unary(node: Node) -> Run:
    function = _UNARY[node.op_type]
    return lambda xs: [function(xs[0])]


@handler(*_BINARY)
def _binary(node: Node) -> Run:
    function = _BINARY[node.op_type]
    return lambda xs: [function(xs[0], xs[1])]


@handler("Div")
def _div(node: Node) -> Run:
    def run(xs: list) -> list:
        a, b = xs
        if a.dtype.is_integer:
            return [tf.math.truncatediv(a, b)]  # C-style integer division, as onnxruntime
        return [a / b]

    return run


@handler("Pow")
def _pow(node: Node) -> Run:
    return lambda xs: [tf.pow(xs[0], tf.cast(xs[1], xs[0].dtype))]


@handler("Max", "Min", "Sum", "Mean")
def _variadic(node: Node) -> Run:
    combine = {"Max": tf.maximum, "Min": tf.minimum, "Sum": tf.add, "Mean": tf.add}[node.op_type]

    def run(xs: list) -> list:
        result = xs[0]
        for x in xs[1:]:
            result = combine(result, x)
        if node.op_type == "Mean":
            result = result / len(xs)
        return [result]

    return run


@handler("Where")
def _where(node: Node) -> Run:
    return lambda xs: [tf.where(xs[0], xs[1], xs[2])]


@handler("Cast")
def _cast(node: Node) -> Run:
    to = node.attr("to")
    if to not in TF_TYPES or to == onnx.TensorProto.STRING:
        raise node.fail(f"cast to {onnx.TensorProto.DataType.Name(to)} is not supported")
    dtype = TF_TYPES[to]

    def run(xs: list) -> list:
        if xs[0].dtype == tf.string:
            raise node.fail("casting strings to numbers is not supported")
        return [tf.cast(xs[0], dtype)]

    return run


@handler("Concat")
def _concat(node: Node) -> Run:
    axis = node.attr("axis")
    if axis is None:
        raise node.fail("Concat without an axis")
    return lambda xs: [tf.concat([x for x in xs if x is not None], axis=axis)]


@handler("Reshape")
def _reshape(node: Node) -> Run:
    shape = node.required_constant(1, "target shape").astype(np.int64).tolist()
    allow_zero = bool(node.attr("allowzero", 0))

    def run(xs: list) -> list:
        x = xs[0]
        if allow_zero or 0 not in shape:
            return [tf.reshape(x, shape)]
        dims = tf.shape(x)
        target = [dims[i] if d == 0 else d for i, d in enumerate(shape)]  # 0 copies a dim
        return [tf.reshape(x, tf.stack(target))]

    return run


@handler("Flatten")
def _flatten(node: Node) -> Run:
    axis = node.attr("axis", 1)

    def run(xs: list) -> list:
        x = xs[0]
        rank = x.shape.rank
        if rank is None:
            raise node.fail("the input rank is unknown")
        cut = axis + rank if axis < 0 else axis
        dims = tf.shape(x)
        outer = tf.reduce_prod(dims[:cut]) if cut else 1
        return [tf.reshape(x, tf.stack([outer, -1]))]

    return run


def _axes(node: Node, input_index: int) -> list[int] | None:
    """Axes from the attribute (older opsets) or the constant second input (newer ones)."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if node.has_input(input_index):
        return [int(a) for a in node.required_constant(input_index, "axes").ravel()]
    return None


@handler("Squeeze")
def _squeeze(node: Node) -> Run:
    axes = _axes(node, 1)
    return lambda xs: [tf.squeeze(xs[0], axis=axes)]


@handler("Unsqueeze")
def _unsqueeze(node: Node) -> Run:
    axes = _axes(node, 1)
    if not axes:
        raise node.fail("Unsqueeze without axes")

    def run(xs: list) -> list:
        x = xs[0]
        rank = x.shape.rank + len(axes)
        for axis in sorted(a + rank if a < 0 else a for a in axes):
            x = tf.expand_dims(x, axis)
        return [x]

    return run


@handler("Transpose")
def _transpose(node: Node) -> Run:
    perm = node.attr("perm")
    return lambda xs: [tf.transpose(xs[0], perm=perm)]


@handler("MatMul")
def _matmul(node: Node) -> Run:
    def run(xs: list) -> list:
        a, b = xs
        if a.shape.rank == 1 or b.shape.rank == 1:
            a2 = tf.reshape(a, [1, -1]) if a.shape.rank == 1 else a
            b2 = tf.reshape(b, [-1, 1]) if b.shape.rank == 1 else b
            result = tf.matmul(a2, b2)
            if a.shape.rank == 1:
                result = tf.squeeze(result, axis=-2)
            if b.shape.rank == 1:
                result = tf.squeeze(result, axis=-1)
            return [result]
        return [tf.matmul(a, b)]

    return run


@handler("Gemm")
def _gemm(node: Node) -> Run:
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    trans_a, trans_b = bool(node.attr("transA", 0)), bool(node.attr("transB", 0))

    def run(xs: list) -> list:
        a, b = xs[0], xs[1]
        c = xs[2] if len(xs) > 2 else None
        y = tf.matmul(a, b, transpose_a=trans_a, transpose_b=trans_b)
        if alpha != 1.0:
            y = y * tf.cast(alpha, y.dtype)
        if c is not None:
            y = y + (c if beta == 1.0 else c * tf.cast(beta, c.dtype))
        return [y]

    return run


@handler("Softmax", "LogSoftmax")
def _softmax(node: Node) -> Run:
    new_semantics = node.opset >= 13
    axis = node.attr("axis", -1 if new_semantics else 1)
    log = node.op_type == "LogSoftmax"

    def run(xs: list) -> list:
        x = xs[0]
        if new_semantics or x.shape.rank == 2 and axis in (1, -1):
            y = tf.nn.log_softmax(x, axis=axis) if log else tf.nn.softmax(x, axis=axis)
            return [y]
        shape = tf.shape(x)  # opset < 13: softmax over the flattened trailing dims
        cut = axis + x.shape.rank if axis < 0 else axis
        flat = tf.reshape(x, tf.stack([tf.reduce_prod(shape[:cut]), -1]))
        y = tf.nn.log_softmax(flat, axis=-1) if log else tf.nn.softmax(flat, axis=-1)
        return [tf.reshape(y, shape)]

    return run


@handler("ArgMax", "ArgMin")
def _argmax(node: Node) -> Run:
    axis, keepdims = node.attr("axis", 0), bool(node.attr("keepdims", 1))
    last = bool(node.attr("select_last_index", 0))
    is_max = node.op_type == "ArgMax"

    def run(xs: list) -> list:
        x = xs[0]
        extreme = (tf.reduce_max if is_max else tf.reduce_min)(x, axis=axis, keepdims=True)
        size = tf.shape(x, out_type=tf.int64)[axis]
        positions = tf.range(size, dtype=tf.int64)
        shape = [1] * x.shape.rank
        shape[axis] = -1
        positions = tf.reshape(positions, shape) + tf.zeros_like(x, dtype=tf.int64)
        hit = tf.equal(x, extreme)
        if last:
            index = tf.reduce_max(tf.where(hit, positions, -1), axis=axis, keepdims=keepdims)
        else:
            index = tf.reduce_min(tf.where(hit, positions, size), axis=axis, keepdims=keepdims)
        return [index]

    return run


_REDUCE = {
    "ReduceSum": tf.reduce_sum,
    "ReduceMean": tf.reduce_mean,
    "ReduceMax": tf.reduce_max,
    "ReduceMin": tf.reduce_min,
    "ReduceProd": tf.reduce_prod,
}


@handler(*_REDUCE)
def _reduce(node: Node) -> Run:
    axes = _axes(node, 1)
    keepdims = bool(node.attr("keepdims", 1))
    noop = bool(node.attr("noop_with_empty_axes", 0))
    function = _REDUCE[node.op_type]

    def run(xs: list) -> list:
        if not axes and noop:
            return [tf.identity(xs[0])]
        return [function(xs[0], axis=axes or None, keepdims=keepdims)]

    return run


@handler("Gather")
def _gather(node: Node) -> Run:
    axis = node.attr("axis", 0)

    def run(xs: list) -> list:
        x, indices = xs
        size = tf.shape(x, out_type=indices.dtype)[axis]
        indices = tf.where(indices < 0, indices + size, indices)
        return [tf.gather(x, indices, axis=axis)]

    return run


@handler("Clip")
def _clip(node: Node) -> Run:
    low_attr, high_attr = node.attr("min"), node.attr("max")

    def run(xs: list) -> list:
        x = xs[0]
        low = xs[1] if len(xs) > 1 and xs[1] is not None else low_attr
        high = xs[2] if len(xs) > 2 and xs[2] is not None else high_attr
        if low is not None:
            x = tf.maximum(x, tf.cast(low, x.dtype))
        if high is not None:
            x = tf.minimum(x, tf.cast(high, x.dtype))
        return [x]

    return run


@handler("Shape")
def _shape(node: Node) -> Run:
    start, end = node.attr("start", 0), node.attr("end")
    return lambda xs: [tf.shape(xs[0], out_type=tf.int64)[start:end]]


# -- ai.onnx.ml ops (onnxruntime/core/providers/cpu/ml) ------------------------------------


@handler("LinearClassifier", domain=ML)
def _linear_classifier(node: Node) -> Run:
    transform = node.choice("post_transform", "NONE", TRANSFORMS)
    labels = class_labels(node)
    intercepts = np.asarray(node.attrs.get("intercepts", []), dtype=np.float32)
    coefficients = np.asarray(node.attrs.get("coefficients", []), dtype=np.float32)
    classes = len(intercepts)
    if classes == 0 or coefficients.size % classes:
        raise node.fail(f"{coefficients.size} coefficients do not fit {classes} intercepts")
    weights = coefficients.reshape(classes, -1).T  # [features, classes]
    if classes == 1:
        if len(labels) != 2:
            raise node.fail("one coefficient row needs exactly two class labels")
        if transform not in ("NONE", "LOGISTIC", "SOFTMAX"):
            raise node.fail(f"post_transform={transform!r} with one coefficient row")

    def run(xs: list) -> list:
        x = float_rows(xs[0])
        scores = tf.matmul(x, tf.constant(weights)) + tf.constant(intercepts)
        table = tf.constant(labels)
        if classes == 1:  # binary with one score: onnxruntime 1.31 reports [1 - p, p]
            score = scores[:, 0]
            label = tf.gather(table, tf.cast(score > 0, tf.int32))
            p = logistic(score) if transform == "LOGISTIC" else score
            return [label, tf.stack([1.0 - p, p], axis=1)]
        label = tf.gather(table, first_argmax(scores))
        return [label, transform_scores(scores, transform)]

    return run


@handler("LinearRegressor", domain=ML)
def _linear_regressor(node: Node) -> Run:
    transform = node.choice("post_transform", "NONE", TRANSFORMS)
    targets = int(node.attr("targets", 1))
    coefficients = np.asarray(node.attrs.get("coefficients", []), dtype=np.float32)
    intercepts = np.asarray(node.attrs.get("intercepts", [0.0] * targets), dtype=np.float32)
    if targets < 1 or coefficients.size % targets or len(intercepts) != targets:
        raise node.fail(f"coefficients/intercepts do not fit targets={targets}")
    if targets == 1 and transform != "NONE":
        raise node.fail(f"post_transform={transform!r} with one target")
    weights = coefficients.reshape(targets, -1).T

    def run(xs: list) -> list:
        scores = tf.matmul(float_rows(xs[0]), tf.constant(weights)) + tf.constant(intercepts)
        return [transform_scores(scores, transform)]

    return run


@handler("Normalizer", domain=ML)
def _normalizer(node: Node) -> Run:
    norm = node.choice("norm", "MAX", ("MAX", "L1", "L2"))

    def run(xs: list) -> list:
        x = tf.cast(xs[0], tf.float32)
        if norm == "MAX":
            z = tf.reduce_max(x, axis=-1, keepdims=True)
            return [tf.where(tf.equal(z, 0.0), x, x / z)]
        if norm == "L1":
            z = tf.reduce_sum(tf.abs(x), axis=-1, keepdims=True)
            return [tf.where(tf.equal(z, 0.0), x, x / z)]
        squares = x * x
        z = tf.reduce_sum(squares, axis=-1, keepdims=True)
        root = tf.sqrt(squares / tf.where(tf.equal(z, 0.0), tf.ones_like(z), z))
        return [tf.where(tf.equal(z, 0.0), x, tf.where(x < 0, -root, root))]

    return run


@handler("Scaler", domain=ML)
def _scaler(node: Node) -> Run:
    offset = np.asarray(node.attrs.get("offset", []), dtype=np.float32)
    scale = np.asarray(node.attrs.get("scale", []), dtype=np.float32)
    if scale.size == 0 or scale.size != offset.size:
        raise node.fail(f"{scale.size} scale and {offset.size} offset values")

    def run(xs: list) -> list:
        x = xs[0]  # onnxruntime: (x - offset) * scale in double for double x, else in float
        dtype = tf.float64 if x.dtype == tf.float64 else tf.float32
        x = tf.cast(x, dtype)
        scaled = (x - tf.constant(offset.astype(dtype.as_numpy_dtype))) * tf.constant(
            scale.astype(dtype.as_numpy_dtype)
        )
        return [tf.cast(scaled, tf.float32)]

    return run


@handler("Imputer", domain=ML)
def _imputer(node: Node) -> Run:
    floats = node.attrs.get("imputed_value_floats")
    ints = node.attrs.get("imputed_value_int64s")
    replaced_float = float(node.attr("replaced_value_float", 0.0))
    replaced_int = int(node.attr("replaced_value_int64", 0))
    if not floats and not ints:
        raise node.fail("it has no imputed values")

    def run(xs: list) -> list:
        x = xs[0]
        if x.dtype.is_floating:
            if not floats:
                raise node.fail("float input but only integer imputed values")
            values = tf.constant(np.asarray(floats, dtype=x.dtype.as_numpy_dtype))
            missing = (
                tf.not_equal(x, x)
                if math.isnan(replaced_float)
                else tf.equal(x, tf.cast(replaced_float, x.dtype))
            )
        else:
            if not ints:
                raise node.fail("integer input but only float imputed values")
            values = tf.constant(np.asarray(ints, dtype=x.dtype.as_numpy_dtype))
            missing = tf.equal(x, tf.cast(replaced_int, x.dtype))
        return [tf.where(missing, values + tf.zeros_like(x), x)]

    return run


@handler("OneHotEncoder", domain=ML)
def _one_hot(node: Node) -> Run:
    strings = node.strings("cats_strings")
    ints = node.attrs.get("cats_int64s")
    if not strings and not ints:
        raise node.fail("it has no categories")

    def run(xs: list) -> list:
        x = xs[0]
        if x.dtype == tf.string:
            if not strings:
                raise node.fail("string input but integer categories")
            categories = tf.constant([s.encode() for s in strings])
        else:
            if not ints:
                raise node.fail("numeric input but string categories")
            x = tf.cast(x, tf.int64)
            categories = tf.constant(np.asarray(ints, dtype=np.int64))
        return [tf.cast(tf.equal(tf.expand_dims(x, -1), categories), tf.float32)]

    return run


@handler("FeatureVectorizer", domain=ML)
def _feature_vectorizer(node: Node) -> Run:
    dims = [int(d) for d in node.attrs.get("inputdimensions", [])]
    if len(dims) != len(node.proto.input):
        raise node.fail("inputdimensions does not match its inputs")

    def run(xs: list) -> list:
        parts = []
        for x, width in zip(xs, dims):
            x = float_rows(x)
            x = x[:, :width]
            parts.append(tf.pad(x, [[0, 0], [0, width - tf.shape(x)[1]]]))
        return [tf.concat(parts, axis=1)]

    return run


@handler("ArrayFeatureExtractor", domain=ML)
def _array_feature_extractor(node: Node) -> Run:
    def run(xs: list) -> list:
        x, indices = xs
        picked = tf.gather(x, tf.reshape(indices, [-1]), axis=-1)
        return [tf.reshape(picked, [1, -1]) if x.shape.rank == 1 else picked]

    return run


@handler("Binarizer", domain=ML)
def _binarizer(node: Node) -> Run:
    threshold = float(node.attr("threshold", 0.0))

    def run(xs: list) -> list:
        x = xs[0]
        return [tf.cast(x > tf.cast(threshold, x.dtype), x.dtype)]

    return run


@handler("TreeEnsembleClassifier", domain=ML)
def _tree_classifier(node: Node) -> Run:
    from sqlml.export import trees

    return trees.classifier(node)


@handler("TreeEnsembleRegressor", domain=ML)
def _tree_regressor(node: Node) -> Run:
    from sqlml.export import trees

    return trees.regressor(node)
