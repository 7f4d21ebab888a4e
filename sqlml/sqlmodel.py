"""Models compiled to SQL: an ONNX graph translated into plain SQL expressions.

Linear models, scalers, imputers and small tree ensembles need no model runtime: each graph
node is translated into sqlglot expressions over the model's input columns, one expression per
column of the struct the model function returns (`outputs.OutputLayout`). DuckDB stores the
result as a macro in the database file (see `sqlml.sqlcatalog`), so the model runs without
Python; the same expressions are generated for BigQuery, so it runs there without an import.

Only what onnxruntime's CPU kernels do is compiled, the way they do it (ops in `OPS`):
- inputs are rounded to float32 as the model function does (`CAST(x AS FLOAT)`); tree splits
  compare that float32 value with the float32 threshold, and tree outputs are summed in FLOAT,
  tree after tree, as onnxruntime does — so tree models give bit-identical scores;
- linear algebra (scalers, coefficients, MatMul/Gemm) is folded into one dot product per output
  and computed in DOUBLE (onnxruntime uses float32; results agree to ~1e-7);
- the quirks of onnxruntime's TreeEnsembleClassifier (binary case, base values, which classes
  have a score) and LinearClassifier (single-target layout) are reproduced, and anything outside
  them is refused rather than guessed.

`compile_onnx` raises `NotCompilable` with a reason ("op TfIdfVectorizer is not compiled to
SQL", "612 tree nodes (limit 500)") for anything else; `check_against_runtime` then scores
probe rows both ways and refuses a translation that disagrees with onnxruntime.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import pyarrow as pa
import sqlglot
from onnx import helper, numpy_helper
from sqlglot import exp

from sqlml.errors import SqlmlError
from sqlml.outputs import OutputLayout
from sqlml.signature import Signature, Tensor
from sqlml.udf import MISSING_STRING

COMPILER_VERSION = 1  # bump to recompile stored models when the translation changes
MAX_TREE_NODES = 500  # total tree nodes compiled to SQL (measured: docs/sql.md)
MAX_TREE_DEPTH = 24  # nested CASE levels (sqlglot and DuckDB parse them recursively)
HOIST = "sqlml_hoist"  # meta flag: compute this node in its own stage
MAX_SQL_CHARS = 400_000  # the staged plan's text
MAX_MACRO_NODES = 40_000  # the macro written out flat (beyond: lambda bindings, compact)


class NotCompilable(SqlmlError):
    """The model cannot be compiled to SQL; the message says why."""


# -- SQL expression helpers ------------------------------------------------------------------

FLOAT = exp.DataType.build("FLOAT")
DOUBLE = exp.DataType.build("DOUBLE")
BIGINT = exp.DataType.build("BIGINT")
VARCHAR = exp.DataType.build("VARCHAR")
BOOLEAN = exp.DataType.build("BOOLEAN")
INTEGER = exp.DataType.build("INTEGER")


def cast(node: exp.Expression, dtype: exp.DataType) -> exp.Expression:
    """CAST without copying `node` (sqlglot's exp.cast copies): shared nodes stay shared."""
    return exp.Cast(this=node, to=dtype.copy())


def num(value: float) -> exp.Expression:
    """A DOUBLE literal that round-trips exactly (scientific notation is DOUBLE in DuckDB)."""
    value = float(value)
    if math.isnan(value):
        return cast(exp.Literal.string("NaN"), DOUBLE)
    if math.isinf(value):
        return cast(exp.Literal.string("inf" if value > 0 else "-inf"), DOUBLE)
    text = repr(abs(value))
    text = text if "e" in text else text + "e0"
    literal = exp.Literal.number(text)
    return exp.Paren(this=exp.Neg(this=literal)) if value < 0 else literal


def f32(value: float) -> exp.Expression:
    """A float32 constant, typed FLOAT (exact: the literal is the float32 value)."""
    return cast(num(float(np.float32(value))), FLOAT)


def paren(node: exp.Expression) -> exp.Expression:
    return exp.Paren(this=node)


def add(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    return paren(exp.Add(this=a, expression=b))


def sub(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    return paren(exp.Sub(this=a, expression=b))


def mul(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    return paren(exp.Mul(this=a, expression=b))


def div(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    return paren(exp.Div(this=a, expression=b))


def neg(a: exp.Expression) -> exp.Expression:
    return paren(exp.Neg(this=a))


def balanced_sum(parts: list[exp.Expression]) -> exp.Expression:
    """a + b + ... as a balanced tree, so long sums do not nest deeply."""
    if len(parts) == 1:
        return parts[0]
    middle = len(parts) // 2
    return add(balanced_sum(parts[:middle]), balanced_sum(parts[middle:]))


def case(conditions: list[tuple[exp.Expression, exp.Expression]], default) -> exp.Expression:
    return exp.Case(ifs=[exp.If(this=c, true=v) for c, v in conditions], default=default)


def func(name: str, *args: exp.Expression) -> exp.Expression:
    """A function both DuckDB and BigQuery spell the same (GREATEST, TANH, ERROR)."""
    return exp.Anonymous(this=name, expressions=list(args))


def isnan(a: exp.Expression) -> exp.Expression:
    return exp.IsNan(this=a)


def both(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    return paren(exp.And(this=a, expression=b))


def either(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    return paren(exp.Or(this=a, expression=b))


def sigmoid(z: exp.Expression) -> exp.Expression:
    """1 / (1 + exp(-z)) as 0.5 tanh(z / 2) + 0.5: z appears once and nothing overflows."""
    half = num(0.5)
    return add(mul(half, func("TANH", mul(half, z))), half)


def softmax(scores: list[exp.Expression]) -> list[exp.Expression]:
    """p_j = 1 / sum_i exp(s_i - s_j): no overflow (differences are capped at 600, where p_j
    is 0 to double precision anyway) and each score appears O(k) times, not O(k^2)."""
    if len(scores) == 1:
        return [num(1.0)]
    probs = []
    for j, s_j in enumerate(scores):
        terms = [exp.Exp(this=func("LEAST", sub(s_i, s_j), num(600.0)))
                 for i, s_i in enumerate(scores) if i != j]  # fmt: skip
        probs.append(div(num(1.0), balanced_sum([num(1.0), *terms])))
    return probs


def first_argmax(scores: list[exp.Expression], values: list[exp.Expression]) -> exp.Expression:
    """values[j] for the first j holding the largest score (as numpy's and onnxruntime's argmax).

    Class j is the first maximum iff its score is >= every later score and > every earlier
    one; a CASE tested in order only needs the first condition.
    """
    conditions = []
    for j in range(len(scores) - 1):
        later = [exp.GTE(this=scores[j], expression=scores[k]) for k in range(j + 1, len(scores))]
        condition = later[0]
        for term in later[1:]:
            condition = both(condition, term)
        conditions.append((condition, values[j]))
    return case(conditions, values[-1]) if conditions else values[-1]


def literal(value: object, dtype: exp.DataType) -> exp.Expression:
    """A class label as a typed SQL literal."""
    if isinstance(value, bool):
        return cast(exp.Boolean(this=value), dtype)
    if isinstance(value, (int, np.integer)):
        node = exp.Literal.number(int(value))
        return cast(paren(node) if int(value) < 0 else node, dtype)
    return cast(exp.Literal.string(str(value)), dtype)


# -- symbolic tensors ------------------------------------------------------------------------


class Lin:
    """One tensor column as sum(coef * atom) + const, atoms being SQL expressions.

    Keeping columns affine until a nonlinear op folds a scaler into the coefficients of the
    linear model after it: one dot product over the raw inputs per output.
    """

    __slots__ = ("terms", "const", "_sql")

    def __init__(self, terms: dict[int, tuple[exp.Expression, float]] | None = None, const=0.0):
        self.terms = terms or {}
        self.const = float(const)
        self._sql: exp.Expression | None = None

    @classmethod
    def atom(cls, node: exp.Expression) -> Lin:
        return cls({id(node): (node, 1.0)})

    def combine(self, other: Lin, k: float = 1.0) -> Lin:
        """self + k * other"""
        terms = dict(self.terms)
        for key, (node, coef) in other.terms.items():
            previous = terms.get(key)
            terms[key] = (node, (previous[1] if previous else 0.0) + k * coef)
        return Lin(terms, self.const + k * other.const)

    def scaled(self, k: float) -> Lin:
        return Lin(
            {key: (node, coef * k) for key, (node, coef) in self.terms.items()}, self.const * k
        )

    def shifted(self, c: float) -> Lin:
        return Lin(self.terms, self.const + c)

    @property
    def single_atom(self) -> exp.Expression | None:
        if self.const == 0.0 and len(self.terms) == 1:
            node, coef = next(iter(self.terms.values()))
            return node if coef == 1.0 else None
        return None

    def sql(self) -> exp.Expression:
        if self._sql is None:
            single = self.single_atom
            if single is not None:
                self._sql = single
            else:
                parts = [
                    node if coef == 1.0 else mul(num(coef), node)
                    for node, coef in self.terms.values()
                    if coef != 0.0
                ]
                if self.const != 0.0 or not parts:
                    parts.append(num(self.const))
                self._sql = balanced_sum(parts)
        return self._sql


@dataclass
class Sym:
    """A tensor of shape [N, k] (rank 2) or [N] (rank 1, k = 1): one Lin per column."""

    cols: list[Lin]
    dtype: str  # float | double | int64 | string | bool
    rank: int = 2
    unit_sum: bool = False  # a softmax output: its columns sum to 1

    @property
    def numeric(self) -> bool:
        return self.dtype in ("float", "double")


_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float",
    onnx.TensorProto.DOUBLE: "double",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int64",
    onnx.TensorProto.STRING: "string",
    onnx.TensorProto.BOOL: "bool",
}
_SIGNATURE_DTYPES = {
    "float32": "float",
    "float64": "double",
    "int64": "int64",
    "int32": "int64",
    "string": "string",
    "bool": "bool",
}
_SQL_TYPES = {"float": FLOAT, "double": DOUBLE, "int64": BIGINT, "string": VARCHAR, "bool": BOOLEAN}


# -- the translation -------------------------------------------------------------------------


@dataclass
class _Graph:
    """Walks the graph once, node by node, keeping a symbolic value per tensor name."""

    proto: onnx.ModelProto
    signature: Signature
    max_tree_nodes: int
    nulls: str = "null"
    values: dict[str, Sym | np.ndarray] = field(default_factory=dict)
    float_atoms: set[int] = field(default_factory=set)  # atoms already typed FLOAT
    splits: dict[str, list[float]] = field(default_factory=dict)  # input -> tree thresholds
    atom_inputs: dict[int, str] = field(default_factory=dict)  # input atom -> input name
    tree_nodes: int = 0
    ops: list[str] = field(default_factory=list)

    def run(self) -> dict[str, Sym]:
        graph = self.proto.graph
        for init in graph.initializer:
            self.values[init.name] = numpy_helper.to_array(init)
        for tensor in self.signature.inputs:
            self.values[tensor.name] = self.input_value(tensor)
        for node in graph.node:
            domain = (
                "ml"
                if node.domain == "ai.onnx.ml"
                else ""
                if node.domain in ("", "ai.onnx")
                else None
            )
            handler = OPS.get((domain, node.op_type)) if domain is not None else None
            if handler is None:
                hint = (
                    " (convert classifiers with zipmap=False)" if node.op_type == "ZipMap" else ""
                )
                raise NotCompilable(f"op {node.op_type} is not compiled to SQL{hint}")
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            args = [self.values[name] if name else None for name in node.input]
            if all(isinstance(a, np.ndarray) or a is None for a in args) and node.op_type in FOLD:
                results = FOLD[node.op_type](args, attrs)
            else:
                results = handler(self, args, attrs)
            for name, value in zip(node.output, results):
                if name:
                    self.values[name] = value
            self.ops.append(node.op_type)
        outputs = {}
        for out in graph.output:
            value = self.values.get(out.name)
            if not isinstance(value, Sym):
                raise NotCompilable(f"output {out.name!r} is a constant")
            outputs[out.name] = value
        return outputs

    def input_value(self, tensor: Tensor) -> Sym:
        if not tensor.is_scalar:
            raise NotCompilable(f"input {tensor.name!r} is a list column")
        dtype = _SIGNATURE_DTYPES[tensor.dtype]
        column: exp.Expression = exp.column(tensor.name, quoted=True)
        if self.nulls == "nan" and dtype in ("float", "double"):  # NULL reaches the model as NaN
            column = exp.Coalesce(this=column, expressions=[num(math.nan)])
        elif self.nulls == "nan" and dtype == "string":  # ...and a NULL string as '' (udf.py)
            column = exp.Coalesce(this=column, expressions=[exp.Literal.string(MISSING_STRING)])
        node = cast(column, _SQL_TYPES[dtype])
        if dtype == "float":
            self.float_atoms.add(id(node))
        self.atom_inputs[id(node)] = tensor.name
        return Sym([Lin.atom(node)], dtype, rank=len(tensor.shape))

    # -- helpers used by the op handlers
    def sym(self, value: object, what: str) -> Sym:
        if not isinstance(value, Sym):
            raise NotCompilable(f"{what}: a constant where a column was expected")
        return value

    def numeric(self, value: object, what: str) -> Sym:
        sym = self.sym(value, what)
        if sym.dtype in ("int64", "bool"):
            return Sym([Lin.atom(cast(c.sql(), FLOAT)) for c in sym.cols], "float", sym.rank)
        if not sym.numeric:
            raise NotCompilable(f"{what}: {sym.dtype} values are not compiled to SQL")
        return sym

    def float_expr(self, column: Lin) -> exp.Expression:
        """A column as float32, as onnxruntime's float kernels see it."""
        single = column.single_atom
        if single is not None and id(single) in self.float_atoms:
            return single
        return cast(column.sql(), FLOAT)


def _attr_str(attrs: dict, name: str, default: str) -> str:
    value = attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def _labels(attrs: dict) -> list:
    for key in ("classlabels_strings", "classlabels_int64s", "classlabels_ints"):
        if attrs.get(key):
            return [v.decode() if isinstance(v, bytes) else int(v) for v in attrs[key]]
    return []


def _per_column(values, k: int, what: str) -> list[float]:
    flat = [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
    if len(flat) == 1:
        return flat * k
    if len(flat) != k:
        raise NotCompilable(f"{what}: {len(flat)} values for {k} columns")
    return flat


# -- standard ops


def _identity(g: _Graph, args, attrs):
    return [args[0]]


def _cast(g: _Graph, args, attrs):
    target = _ONNX_DTYPES.get(attrs.get("to"))
    sym = g.sym(args[0], "Cast")
    if target in ("float", "double"):
        return [Sym(g.numeric(sym, "Cast").cols, target, sym.rank)]
    if target == "int64" and sym.dtype == "int64":
        return [sym]
    if target == "int64" and sym.numeric:
        cols = [
            Lin.atom(cast(exp.Anonymous(this="TRUNC", expressions=[c.sql()]), BIGINT))
            for c in sym.cols
        ]
        return [Sym(cols, "int64", sym.rank)]
    raise NotCompilable(f"Cast from {sym.dtype} to {target or attrs.get('to')} is not compiled")


def _concat(g: _Graph, args, attrs):
    syms = [g.sym(a, "Concat") for a in args]
    axis = attrs.get("axis", 1)
    if axis not in (1, -1) or any(s.rank != 2 for s in syms):
        raise NotCompilable("Concat is compiled along axis 1 of [N, k] tensors only")
    dtypes = {s.dtype for s in syms}
    if len(dtypes) != 1:
        raise NotCompilable(f"Concat of mixed types {sorted(dtypes)}")
    return [Sym([c for s in syms for c in s.cols], dtypes.pop(), 2)]


def _feature_vectorizer(g: _Graph, args, attrs):
    dims = list(attrs.get("inputdimensions", []))
    cols: list[Lin] = []
    for i, arg in enumerate(args):
        sym = g.numeric(arg, "FeatureVectorizer")
        width = dims[i] if i < len(dims) else len(sym.cols)
        taken = sym.cols[:width]
        cols.extend(taken + [Lin() for _ in range(width - len(taken))])
    return [Sym(cols, "float", 2)]


def _reshape(g: _Graph, args, attrs):
    sym = g.sym(args[0], "Reshape")
    shape = (
        [int(v) for v in np.asarray(args[1]).reshape(-1)]
        if isinstance(args[1], np.ndarray)
        else None
    )
    k = len(sym.cols)
    if shape is None:
        raise NotCompilable("Reshape to a computed shape")
    if len(shape) == 2 and shape[0] in (-1, 0) and shape[1] in (-1, k):
        return [Sym(sym.cols, sym.dtype, 2)]
    if len(shape) == 1 and shape[0] == -1 and k == 1:
        return [Sym(sym.cols, sym.dtype, 1)]
    raise NotCompilable(f"Reshape to {shape} (only [N, k] <-> [N] is compiled)")


def _flatten(g: _Graph, args, attrs):
    sym = g.sym(args[0], "Flatten")
    if attrs.get("axis", 1) != 1:
        raise NotCompilable("Flatten with axis != 1")
    return [Sym(sym.cols, sym.dtype, 2)]


def _axes(args, attrs) -> list[int]:
    if len(args) > 1 and isinstance(args[1], np.ndarray):
        return [int(v) for v in args[1].reshape(-1)]
    return [int(v) for v in attrs.get("axes", [])]


def _squeeze(g: _Graph, args, attrs):
    sym = g.sym(args[0], "Squeeze")
    if sym.rank == 2 and len(sym.cols) == 1 and _axes(args, attrs) in ([1], [-1]):
        return [Sym(sym.cols, sym.dtype, 1)]
    raise NotCompilable("Squeeze other than [N, 1] -> [N]")


def _unsqueeze(g: _Graph, args, attrs):
    sym = g.sym(args[0], "Unsqueeze")
    if sym.rank == 1 and _axes(args, attrs) in ([1], [-1]):
        return [Sym(sym.cols, sym.dtype, 2)]
    raise NotCompilable("Unsqueeze other than [N] -> [N, 1]")


def _broadcast(const: np.ndarray, k: int, what: str) -> list[float]:
    values = np.asarray(const, dtype=np.float64)
    if values.ndim > 2 or (values.ndim == 2 and values.shape[0] != 1):
        raise NotCompilable(f"{what} with a constant of shape {list(values.shape)}")
    return _per_column(values, k, what)


def _binary(op: str):
    def handler(g: _Graph, args, attrs):
        a, b = args
        if isinstance(a, np.ndarray) and isinstance(b, Sym):
            if op in ("Add", "Mul"):
                a, b = b, a
            elif op == "Sub":  # c - x = -x + c
                sym = g.numeric(b, op)
                consts = _broadcast(a, len(sym.cols), op)
                return [
                    Sym(
                        [c.scaled(-1.0).shifted(v) for c, v in zip(sym.cols, consts)],
                        sym.dtype,
                        sym.rank,
                    )
                ]
            else:
                sym = g.numeric(b, op)
                consts = _broadcast(a, len(sym.cols), op)
                return [
                    Sym(
                        [Lin.atom(div(num(v), c.sql())) for c, v in zip(sym.cols, consts)],
                        sym.dtype,
                        sym.rank,
                    )
                ]
        if isinstance(b, np.ndarray):
            sym = g.numeric(a, op)
            consts = _broadcast(b, len(sym.cols), op)
            if op == "Add":
                cols = [c.shifted(v) for c, v in zip(sym.cols, consts)]
            elif op == "Sub":
                cols = [c.shifted(-v) for c, v in zip(sym.cols, consts)]
            elif op == "Mul":
                cols = [c.scaled(v) for c, v in zip(sym.cols, consts)]
            else:
                cols = [
                    c.scaled(1.0 / v) if v != 0 else Lin.atom(div(c.sql(), num(v)))
                    for c, v in zip(sym.cols, consts)
                ]
            rank = max(sym.rank, min(np.asarray(b).ndim, 2))
            return [Sym(cols, sym.dtype, rank)]
        x, y = g.numeric(a, op), g.numeric(b, op)
        k = max(len(x.cols), len(y.cols))
        if len(x.cols) not in (1, k) or len(y.cols) not in (1, k):
            raise NotCompilable(f"{op} of tensors with {len(x.cols)} and {len(y.cols)} columns")
        xs = x.cols * k if len(x.cols) == 1 else x.cols
        ys = y.cols * k if len(y.cols) == 1 else y.cols
        if op == "Add":
            cols = [p.combine(q) for p, q in zip(xs, ys)]
        elif op == "Sub":
            cols = [p.combine(q, -1.0) for p, q in zip(xs, ys)]
        elif op == "Mul":
            cols = [Lin.atom(mul(p.sql(), q.sql())) for p, q in zip(xs, ys)]
        else:
            cols = [Lin.atom(div(p.sql(), q.sql())) for p, q in zip(xs, ys)]
        dtype = "double" if "double" in (x.dtype, y.dtype) else "float"
        return [Sym(cols, dtype, max(x.rank, y.rank))]

    return handler


def _unary(make: Callable[[exp.Expression], exp.Expression]):
    def handler(g: _Graph, args, attrs):
        sym = g.numeric(args[0], "op")
        return [Sym([Lin.atom(make(c.sql())) for c in sym.cols], sym.dtype, sym.rank)]

    return handler


def _neg(g: _Graph, args, attrs):
    sym = g.numeric(args[0], "Neg")
    return [Sym([c.scaled(-1.0) for c in sym.cols], sym.dtype, sym.rank)]


def _relu(node: exp.Expression) -> exp.Expression:
    return case([(exp.GT(this=node, expression=num(0.0)), node)], num(0.0))


def _softmax_op(g: _Graph, args, attrs):
    sym = g.numeric(args[0], "Softmax")
    if attrs.get("axis", -1) not in (-1, 1) or sym.rank != 2:
        raise NotCompilable("Softmax other than over the columns of [N, k]")
    probs = softmax([c.sql() for c in sym.cols])
    return [Sym([Lin.atom(p) for p in probs], sym.dtype, 2, unit_sum=True)]


def _argmax(g: _Graph, args, attrs):
    sym = g.numeric(args[0], "ArgMax")
    if attrs.get("axis", 0) not in (1, -1) or attrs.get("select_last_index", 0):
        raise NotCompilable("ArgMax other than the first maximum along axis 1")
    index = first_argmax(
        [c.sql() for c in sym.cols],
        [cast(exp.Literal.number(j), BIGINT) for j in range(len(sym.cols))],
    )
    return [Sym([Lin.atom(index)], "int64", 2 if attrs.get("keepdims", 1) else 1)]


def _matmul_cols(x: Sym, weights: np.ndarray, what: str) -> list[Lin]:
    """x @ weights for x [N, F] and weights [F, k] (or [F])."""
    w = np.asarray(weights, dtype=np.float64)
    w = w.reshape(-1, 1) if w.ndim == 1 else w
    if w.ndim != 2 or w.shape[0] != len(x.cols):
        raise NotCompilable(f"{what}: weights of shape {list(w.shape)} for {len(x.cols)} columns")
    outputs = []
    for j in range(w.shape[1]):
        total = Lin()
        for f, column in enumerate(x.cols):
            if w[f, j] != 0.0:
                total = total.combine(column, float(w[f, j]))
        outputs.append(total)
    return outputs


def _matmul(g: _Graph, args, attrs):
    x = g.numeric(args[0], "MatMul")
    if not isinstance(args[1], np.ndarray):
        raise NotCompilable("MatMul of two computed tensors")
    cols = _matmul_cols(x, args[1], "MatMul")
    return [Sym(cols, x.dtype, 1 if np.asarray(args[1]).ndim == 1 else 2)]


def _gemm(g: _Graph, args, attrs):
    x = g.numeric(args[0], "Gemm")
    if attrs.get("transA", 0) or not isinstance(args[1], np.ndarray):
        raise NotCompilable("Gemm other than X @ constant weights")
    w = np.asarray(args[1], dtype=np.float64)
    w = w.T if attrs.get("transB", 0) else w
    cols = [c.scaled(float(attrs.get("alpha", 1.0))) for c in _matmul_cols(x, w, "Gemm")]
    if len(args) > 2 and args[2] is not None:
        if not isinstance(args[2], np.ndarray):
            raise NotCompilable("Gemm with a computed C")
        bias = _broadcast(args[2], len(cols), "Gemm")
        cols = [c.shifted(float(attrs.get("beta", 1.0)) * b) for c, b in zip(cols, bias)]
    return [Sym(cols, x.dtype, 2)]


# -- ai.onnx.ml ops


def _scaler(g: _Graph, args, attrs):
    sym = g.numeric(args[0], "Scaler")
    k = len(sym.cols)
    offset = _per_column(attrs.get("offset", [0.0]), k, "Scaler offset")
    scale = _per_column(attrs.get("scale", [1.0]), k, "Scaler scale")
    cols = [c.shifted(-o).scaled(s) for c, o, s in zip(sym.cols, offset, scale)]
    return [Sym(cols, "float", sym.rank)]


def _imputer(g: _Graph, args, attrs):
    sym = g.numeric(args[0], "Imputer")
    if attrs.get("imputed_value_int64s"):
        raise NotCompilable("Imputer of integer columns")
    values = _per_column(attrs.get("imputed_value_floats", []), len(sym.cols), "Imputer")
    replaced = float(attrs.get("replaced_value_float", 0.0))
    cols = []
    for column, value in zip(sym.cols, values):
        x = column.sql()
        test = isnan(x) if math.isnan(replaced) else exp.EQ(this=x, expression=num(replaced))
        cols.append(Lin.atom(case([(test, num(float(np.float32(value))))], x)))
    return [Sym(cols, "float", sym.rank)]


def _normalizer(g: _Graph, args, attrs):
    sym = g.numeric(args[0], "Normalizer")
    norm = _attr_str(attrs, "norm", "MAX")
    xs = [c.sql() for c in sym.cols]
    if norm == "L1" and sym.unit_sum:  # already sums to 1 (skl2onnx normalizes softmax output)
        return [sym]
    if norm == "L1":
        denominator = balanced_sum([exp.Abs(this=x) for x in xs])
    elif norm == "L2":
        denominator = exp.Sqrt(this=balanced_sum([mul(x, x) for x in xs]))
    elif norm == "MAX":
        denominator = func("GREATEST", *xs) if len(xs) > 1 else xs[0]
    else:
        raise NotCompilable(f"Normalizer norm {norm}")
    zero = exp.EQ(this=denominator, expression=num(0.0))
    cols = [Lin.atom(case([(zero, x)], div(x, denominator))) for x in xs]
    return [Sym(cols, "float", sym.rank)]


def _linear_scores(x: Sym, attrs: dict, n_targets: int, what: str) -> list[Lin]:
    coefficients = np.asarray(attrs.get("coefficients", []), dtype=np.float64)
    if coefficients.size != n_targets * len(x.cols):
        raise NotCompilable(
            f"{what}: {coefficients.size} coefficients for {n_targets} targets "
            f"of {len(x.cols)} features"
        )
    rows = coefficients.reshape(n_targets, len(x.cols))
    intercepts = list(attrs.get("intercepts", [])) or [0.0] * n_targets
    scores: list[Lin] = []
    for t in range(n_targets):
        mirror = next(
            (
                s
                for s in range(t)
                if np.array_equal(rows[s], -rows[t]) and intercepts[s] == -intercepts[t]
            ),
            None,
        )
        if mirror is not None:  # binary models store [-w, w]: reuse the dot product, negated
            scores.append(Lin.atom(scores[mirror].sql()).scaled(-1.0))
            continue
        total = Lin(const=float(intercepts[t]))
        for f, column in enumerate(x.cols):
            if rows[t, f] != 0.0:
                total = total.combine(column, float(rows[t, f]))
        scores.append(total)
    return scores


def _linear_regressor(g: _Graph, args, attrs):
    x = g.numeric(args[0], "LinearRegressor")
    if _attr_str(attrs, "post_transform", "NONE") != "NONE":
        raise NotCompilable("LinearRegressor with a post_transform")
    targets = int(attrs.get("targets", 1))
    return [Sym(_linear_scores(x, attrs, targets, "LinearRegressor"), "float", 2)]


def _transform(name: str, scores: list[exp.Expression], what: str) -> list[exp.Expression]:
    if name == "NONE":
        return scores
    if name == "LOGISTIC":
        return [sigmoid(s) for s in scores]
    if name == "SOFTMAX":
        return softmax(scores)
    raise NotCompilable(f"{what} post_transform {name}")


def _label_type(labels: list) -> tuple[str, exp.DataType]:
    return ("string", VARCHAR) if labels and isinstance(labels[0], str) else ("int64", BIGINT)


def _linear_classifier(g: _Graph, args, attrs):
    """onnxruntime's LinearClassifier: scores = X W' + b; label = first argmax (or score > 0)."""
    x = g.numeric(args[0], "LinearClassifier")
    labels = _labels(attrs)
    intercepts = list(attrs.get("intercepts", []))
    n_targets = len(intercepts)
    post = _attr_str(attrs, "post_transform", "NONE")
    label_dtype, label_sql = _label_type(labels)
    scores = [s.sql() for s in _linear_scores(x, attrs, n_targets, "LinearClassifier")]
    if n_targets == 1:
        if post not in ("NONE", "LOGISTIC", "SOFTMAX"):
            raise NotCompilable(f"LinearClassifier post_transform {post}")
        two = len(labels) == 2
        positive = labels[1] if two else ("1" if label_dtype == "string" else 1)
        negative = labels[0] if two else ("0" if label_dtype == "string" else 0)
        label = case(
            [(exp.GT(this=scores[0], expression=num(0.0)), literal(positive, label_sql))],
            literal(negative, label_sql),
        )
        # onnxruntime writes [1 - s, s] for two labels and the raw score otherwise: the
        # post_transform is not applied to a single score
        probs = [sub(num(1.0), scores[0]), scores[0]] if two else [scores[0]]
    else:
        if len(labels) != n_targets:
            raise NotCompilable(
                f"LinearClassifier with {len(labels)} labels for {n_targets} scores"
            )
        label = first_argmax(scores, [literal(v, label_sql) for v in labels])
        probs = _transform(post, scores, "LinearClassifier")
    probs_sym = Sym(
        [Lin.atom(p) for p in probs], "float", 2, unit_sum=n_targets > 1 and post == "SOFTMAX"
    )
    return [Sym([Lin.atom(label)], label_dtype, 1), probs_sym]


# -- tree ensembles


@dataclass
class _Tree:
    root: int  # position of the root node in the attribute arrays
    nodes: dict[int, int]  # node id -> position


class _Ensemble:
    """The node tables of a TreeEnsembleClassifier/Regressor, as onnxruntime reads them."""

    def __init__(self, g: _Graph, x: Sym, attrs: dict, kind: str):
        self.g = g
        self.x = x
        self.kind = kind
        prefix = "class" if kind == "classifier" else "target"
        if any(
            attrs.get(f"{name}_as_tensor") is not None and len(attrs[f"{name}_as_tensor"].dims)
            for name in ("nodes_values", "base_values", f"{prefix}_weights")
        ):
            raise NotCompilable("tree ensembles with double thresholds or weights")
        self.tree_ids = [int(v) for v in attrs.get("nodes_treeids", [])]
        self.node_ids = [int(v) for v in attrs.get("nodes_nodeids", [])]
        self.features = [int(v) for v in attrs.get("nodes_featureids", [])]
        self.thresholds = [float(v) for v in attrs.get("nodes_values", [])]
        self.modes = [
            m.decode() if isinstance(m, bytes) else m for m in attrs.get("nodes_modes", [])
        ]
        self.true_ids = [int(v) for v in attrs.get("nodes_truenodeids", [])]
        self.false_ids = [int(v) for v in attrs.get("nodes_falsenodeids", [])]
        missing = list(attrs.get("nodes_missing_value_tracks_true", []))
        self.missing_true = [bool(v) for v in missing] or [False] * len(self.tree_ids)
        self.base = [float(v) for v in attrs.get("base_values", [])]
        self.post = _attr_str(attrs, "post_transform", "NONE")
        n = len(self.tree_ids)
        g.tree_nodes += n
        if g.tree_nodes > g.max_tree_nodes:
            raise NotCompilable(
                f"{g.tree_nodes} tree nodes (limit {g.max_tree_nodes}: bigger ensembles run "
                "in the model's runtime)"
            )
        self.trees: list[_Tree] = []
        by_tree: dict[int, _Tree] = {}
        for pos in range(n):
            tree = by_tree.get(self.tree_ids[pos])
            if tree is None:
                tree = by_tree[self.tree_ids[pos]] = _Tree(pos, {})
                self.trees.append(tree)
            tree.nodes[self.node_ids[pos]] = pos
        # leaf weights: (tree id, node id) -> [(target, weight)] in attribute order
        self.weights: dict[tuple[int, int], list[tuple[int, float]]] = {}
        for t, node, target, weight in zip(
            attrs.get(f"{prefix}_treeids", []),
            attrs.get(f"{prefix}_nodeids", []),
            attrs.get(f"{prefix}_ids", []),
            attrs.get(f"{prefix}_weights", []),
        ):
            self.weights.setdefault((int(t), int(node)), []).append((int(target), float(weight)))

    def leaves(self, tree: _Tree) -> list[int]:
        return [pos for pos in tree.nodes.values() if self.modes[pos] == "LEAF"]

    def condition(self, pos: int) -> exp.Expression:
        feature = self.features[pos]
        if not 0 <= feature < len(self.x.cols):
            raise NotCompilable(f"tree node uses feature {feature} of {len(self.x.cols)}")
        column = self.x.cols[feature]
        value = self.g.float_expr(column)
        single = column.single_atom
        if single is not None and id(single) in self.g.atom_inputs:
            self.g.splits.setdefault(self.g.atom_inputs[id(single)], []).append(
                self.thresholds[pos]
            )
        threshold = num(float(np.float32(self.thresholds[pos])))
        mode = self.modes[pos]
        compare = {
            "BRANCH_LEQ": exp.LTE,
            "BRANCH_LT": exp.LT,
            "BRANCH_GTE": exp.GTE,
            "BRANCH_GT": exp.GT,
            "BRANCH_EQ": exp.EQ,
            "BRANCH_NEQ": exp.NEQ,
        }.get(mode)
        if compare is None:
            raise NotCompilable(f"tree node mode {mode}")
        test = compare(this=value, expression=threshold)
        if mode in ("BRANCH_GTE", "BRANCH_GT"):  # DuckDB orders NaN above every number
            test = both(test, exp.Not(this=isnan(value)))
        if self.missing_true[pos]:
            test = either(test, isnan(value))
        return test

    def walk(self, tree: _Tree, pos: int, leaf: Callable[[int], exp.Expression], depth=0):
        """The tree as nested CASE WHEN <split> THEN <true branch> ELSE <false branch>."""
        if depth > MAX_TREE_DEPTH:
            raise NotCompilable(f"a tree deeper than {MAX_TREE_DEPTH}")
        if self.modes[pos] == "LEAF":
            return leaf(pos)
        children = []
        for child in (self.true_ids[pos], self.false_ids[pos]):
            if child not in tree.nodes:
                raise NotCompilable(f"tree {self.tree_ids[pos]} has no node {child}")
            children.append(self.walk(tree, tree.nodes[child], leaf, depth + 1))
        return case([(self.condition(pos), children[0])], children[1])

    def leaf_sum(self, tree: _Tree, pos: int, target: int) -> exp.Expression:
        """The leaf's weight for one target, summed in float32 as onnxruntime does."""
        values = [
            w
            for t, w in self.weights.get((self.tree_ids[pos], self.node_ids[pos]), [])
            if t == target
        ]
        total = float(np.float32(0.0))
        for w in values:
            total = float(np.float32(total) + np.float32(w))
        return f32(total)

    def scores(self, n_targets: int) -> list[exp.Expression | None]:
        """Per target: the FLOAT sum over trees (tree order), or None if no tree scores it."""
        per_target: list[list[exp.Expression]] = [[] for _ in range(n_targets)]
        for tree in self.trees:
            targets = sorted(
                {
                    t
                    for pos in self.leaves(tree)
                    for t, _ in self.weights.get((self.tree_ids[pos], self.node_ids[pos]), [])
                }
            )
            if any(not 0 <= t < n_targets for t in targets):
                raise NotCompilable(f"tree weights for target {max(targets)} of {n_targets}")
            if len(targets) == 1:
                target = targets[0]
                per_target[target].append(
                    self.walk(
                        tree,
                        tree.root,
                        lambda pos, t=target, tree=tree: self.leaf_sum(tree, pos, t),
                    )
                )
            elif targets:
                # one CASE finds the leaf (1, 2, ...); each target looks its weight up in a list
                leaves = self.leaves(tree)
                number = {pos: i + 1 for i, pos in enumerate(leaves)}
                index = self.walk(
                    tree, tree.root, lambda pos, number=number: exp.Literal.number(number[pos])
                )
                for target in targets:
                    table = exp.Array(expressions=[self.leaf_sum(tree, p, target) for p in leaves])
                    per_target[target].append(
                        exp.Bracket(this=table, expressions=[index], offset=1)
                    )
        sums: list[exp.Expression | None] = []
        for parts in per_target:
            if not parts:
                sums.append(None)
                continue
            total = parts[0]
            for i, part in enumerate(parts[1:], start=1):
                # left to right: float32 rounding in onnxruntime's order; a partial sum every
                # 8 trees is computed in its own stage, so no expression nests deeply
                total = add(total, part)
                if i % 8 == 0 and i < len(parts) - 1:
                    total.meta[HOIST] = True
            sums.append(total)
        return sums

    def always_scored(self, target: int) -> bool | None:
        """True if every row gets a weight for `target`, False if none does, None if some."""
        keys = [
            {t for t, _ in self.weights.get((self.tree_ids[p], self.node_ids[p]), [])}
            for tree in self.trees
            for p in self.leaves(tree)
        ]
        if not any(target in k for k in keys):
            return False
        for tree in self.trees:
            if all(
                target in {t for t, _ in self.weights.get((self.tree_ids[p], self.node_ids[p]), [])}
                for p in self.leaves(tree)
            ):
                return True
        return None


def _tree_regressor(g: _Graph, args, attrs):
    x = g.numeric(args[0], "TreeEnsembleRegressor")
    if x.dtype != "float":
        raise NotCompilable("TreeEnsembleRegressor on double inputs")
    ensemble = _Ensemble(g, x, attrs, "regressor")
    n_targets = int(attrs.get("n_targets", 1))
    aggregate = _attr_str(attrs, "aggregate_function", "SUM")
    if aggregate not in ("SUM", "AVERAGE"):
        raise NotCompilable(f"TreeEnsembleRegressor aggregate_function {aggregate}")
    sums = [s if s is not None else f32(0.0) for s in ensemble.scores(n_targets)]
    if aggregate == "AVERAGE":
        sums = [div(s, f32(len(ensemble.trees))) for s in sums]
    base = ensemble.base
    if n_targets == 1:
        if ensemble.post == "PROBIT":
            raise NotCompilable("TreeEnsembleRegressor post_transform PROBIT")
        origin = base[0] if len(base) == 1 else 0.0
        values = [add(sums[0], f32(origin)) if origin else sums[0]]  # other transforms: ignored
    else:
        if len(base) == n_targets:
            sums = [add(s, f32(b)) for s, b in zip(sums, base)]
        values = _transform(ensemble.post, sums, "TreeEnsembleRegressor")
    return [Sym([Lin.atom(v) for v in values], "float", 2)]


def _tree_classifier(g: _Graph, args, attrs):
    """onnxruntime's TreeEnsembleClassifier, including its binary-case rules."""
    x = g.numeric(args[0], "TreeEnsembleClassifier")
    if x.dtype != "float":
        raise NotCompilable("TreeEnsembleClassifier on double inputs")
    labels = _labels(attrs)
    n = len(labels)
    if n < 2:
        raise NotCompilable("TreeEnsembleClassifier with fewer than two classes")
    ensemble = _Ensemble(g, x, attrs, "classifier")
    raw = ensemble.scores(n)
    has = [ensemble.always_scored(k) for k in range(n)]
    base = ensemble.base
    label_dtype, label_sql = _label_type(labels)
    post = ensemble.post
    zero = f32(0.0)
    all_ids = {t for leaf in ensemble.weights.values() for t, _ in leaf}
    positive_weights = all(w >= 0 for leaf in ensemble.weights.values() for _, w in leaf)
    if n > 2:
        scores, scored = [], []
        for k in range(n):
            value = raw[k] if raw[k] is not None else zero
            if k < len(base):
                value, has_k = add(value, f32(base[k])), True
            else:
                has_k = has[k]
            if has_k is None:
                raise NotCompilable(f"class {labels[k]!r} is scored on some leaves only")
            scores.append(value if has_k else zero)
            scored.append(has_k)
        if not any(scored):
            raise NotCompilable("no class has a score")
        candidates = [k for k in range(n) if scored[k]]
        label = first_argmax(
            [scores[k] for k in candidates], [literal(labels[k], label_sql) for k in candidates]
        )
        probs = _transform(post, scores, "TreeEnsembleClassifier")
        probs_sym = Sym([Lin.atom(p) for p in probs], "float", unit_sum=post == "SOFTMAX")
        return [Sym([Lin.atom(label)], label_dtype, 1), probs_sym]
    if None in has:
        raise NotCompilable("a class is scored on some leaves only")
    if not any(has):
        raise NotCompilable("no class has a score")
    s0 = raw[0] if raw[0] is not None else zero
    s1 = raw[1] if raw[1] is not None else zero
    h0, h1 = bool(has[0]), bool(has[1])
    extra = -1
    size = 2
    if len(base) == 2:
        if h1:  # onnxruntime: s1 = base1 + s0, s0 = -s1 (base0 unused)
            s1 = add(f32(base[1]), s0)
            s0 = neg(s1)
        else:
            s0 = add(s0, f32(base[0]))
    elif len(base) == 1:
        s0 = add(s0, f32(base[0]))
        size = 2 if h1 else 1
    elif not base:
        extra = 3
        size = 2 if h1 else 1
    else:
        raise NotCompilable(f"TreeEnsembleClassifier with {len(base)} base values for 2 classes")
    weight = s1 if size == 2 and h1 else s0 if h0 else zero
    if len(all_ids) == 1:  # onnxruntime's binary case: one class carries all the weights
        cut = num(0.5) if positive_weights else num(0.0)
        extra = 0 if positive_weights else 2
        positive, negative = labels[1], labels[0]
    else:
        cut = num(0.0)
        # onnxruntime answers 1 / 0 here (the class index for string labels)
        positive, negative = (labels[1], labels[0]) if label_dtype == "string" else (1, 0)
    label = case(
        [(exp.GT(this=weight, expression=cut), literal(positive, label_sql))],
        literal(negative, label_sql),
    )
    if size == 2:
        probs = _transform(post, [s0 if h0 else zero, s1 if h1 else zero], "TreeEnsembleClassifier")
    elif post == "PROBIT" or extra == -1:
        raise NotCompilable(f"TreeEnsembleClassifier binary scores with post_transform {post}")
    elif extra in (0, 1):
        probs = [sub(f32(1.0), s0), s0]
    elif post == "LOGISTIC":
        probs = [sigmoid(neg(s0)), sigmoid(s0)]
    else:
        probs = [neg(s0), s0]
    return [Sym([Lin.atom(label)], label_dtype, 1), Sym([Lin.atom(p) for p in probs], "float")]


def _constant(g: _Graph, args, attrs):
    value = attrs.get("value")
    if value is None:
        raise NotCompilable("Constant without a tensor value")
    return [numpy_helper.to_array(value)]


OPS: dict[tuple[str, str], Callable] = {
    ("", "Identity"): _identity,
    ("", "Cast"): _cast,
    ("", "Concat"): _concat,
    ("", "Reshape"): _reshape,
    ("", "Flatten"): _flatten,
    ("", "Squeeze"): _squeeze,
    ("", "Unsqueeze"): _unsqueeze,
    ("", "Add"): _binary("Add"),
    ("", "Sub"): _binary("Sub"),
    ("", "Mul"): _binary("Mul"),
    ("", "Div"): _binary("Div"),
    ("", "Neg"): _neg,
    ("", "Abs"): _unary(lambda x: exp.Abs(this=x)),
    ("", "Exp"): _unary(lambda x: exp.Exp(this=x)),
    ("", "Sigmoid"): _unary(sigmoid),
    ("", "Tanh"): _unary(lambda x: func("TANH", x)),
    ("", "Relu"): _unary(_relu),
    ("", "Softmax"): _softmax_op,
    ("", "ArgMax"): _argmax,
    ("", "MatMul"): _matmul,
    ("", "Gemm"): _gemm,
    ("", "Constant"): _constant,
    ("ml", "FeatureVectorizer"): _feature_vectorizer,
    ("ml", "Scaler"): _scaler,
    ("ml", "Imputer"): _imputer,
    ("ml", "Normalizer"): _normalizer,
    ("ml", "LinearClassifier"): _linear_classifier,
    ("ml", "LinearRegressor"): _linear_regressor,
    ("ml", "TreeEnsembleClassifier"): _tree_classifier,
    ("ml", "TreeEnsembleRegressor"): _tree_regressor,
}

# ops on constants only (shape arithmetic) are evaluated with numpy
FOLD: dict[str, Callable] = {
    "Identity": lambda a, _: [a[0]],
    "Cast": lambda a, at: [a[0].astype(helper.tensor_dtype_to_np_dtype(at["to"]))],
    "Reshape": lambda a, _: [a[0].reshape([int(v) for v in a[1]])],
    "Add": lambda a, _: [a[0] + a[1]],
    "Sub": lambda a, _: [a[0] - a[1]],
    "Mul": lambda a, _: [a[0] * a[1]],
    "Div": lambda a, _: [a[0] / a[1]],
    "Neg": lambda a, _: [-a[0]],
    "Concat": lambda a, at: [np.concatenate(a, axis=at.get("axis", 0))],
}


# -- the compiled model ----------------------------------------------------------------------


@dataclass(frozen=True)
class SqlColumn:
    name: str
    expression: exp.Expression


@dataclass(frozen=True)
class Plan:
    """Generated SQL: `stages` of named shared expressions, then the output expressions.

    Stage i only refers to the model's inputs and to names of earlier stages, so a query
    computes each stage in one projection (`SELECT *, <stage> FROM (...)`) and every shared
    value once.
    """

    stages: tuple[tuple[tuple[str, str], ...], ...]
    outputs: tuple[tuple[str, str], ...]

    @property
    def names(self) -> list[str]:
        return [name for stage in self.stages for name, _ in stage]

    @property
    def size(self) -> int:
        return sum(len(e) for stage in self.stages for _, e in stage) + sum(
            len(e) for _, e in self.outputs
        )

    def to_json(self) -> str:
        return json.dumps({"stages": self.stages, "outputs": self.outputs})

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        return cls(
            tuple(tuple((n, e) for n, e in stage) for stage in data["stages"]),
            tuple((n, e) for n, e in data["outputs"]),
        )


@functools.lru_cache(maxsize=64)
def column_outputs(plan: Plan) -> Plan:
    """A stored plan's one STRUCT output (`__sqlml_out`) as one output per field, each under
    the same NULL guard. Why: DuckDB computes only the columns a query reads, and never splits
    a STRUCT it builds; the list of class probabilities is the costliest part of a row
    (1.4x the rows/s for `predicted_y` and the positive probability of a logistic
    regression)."""
    if len(plan.outputs) != 1 or plan.outputs[0][0] != OUT:
        return plan
    tree = sqlglot.parse_one(plan.outputs[0][1], read="duckdb")
    guard = tree if isinstance(tree, exp.Case) else None
    body = guard.args.get("default") if guard is not None else tree
    if not isinstance(body, exp.Struct):
        return plan
    outputs = []
    for field_ in body.expressions:
        if not isinstance(field_, exp.PropertyEQ):
            return plan
        value = field_.expression
        if guard is not None:
            value = exp.Case(ifs=[i.copy() for i in guard.args["ifs"]], default=value.copy())
        outputs.append((field_.this.name, value.sql(dialect="duckdb")))
    return Plan(plan.stages, tuple(outputs))


def quote(name: str, dialect: str = "duckdb") -> str:
    if dialect == "bigquery":
        return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
    return '"' + name.replace('"', '""') + '"'


def staged_select(plan: Plan, source: str, dialect: str = "duckdb") -> str:
    """`SELECT * EXCLUDE (temporaries), <outputs> FROM <source + one projection per stage>`.

    `source` is a FROM item (`(SELECT ...) AS __sqlml_in`); BigQuery spells EXCLUDE `EXCEPT`.
    """
    sql = source
    for stage in plan.stages:
        columns = ", ".join(f"{e} AS {quote(n, dialect)}" for n, e in stage)
        sql = f"(SELECT *, {columns} FROM {sql})"
    exclude = "EXCEPT" if dialect == "bigquery" else "EXCLUDE"
    names = ", ".join(quote(n, dialect) for n in plan.names)
    dropped = f" {exclude} ({names})" if plan.names else ""
    outputs = ", ".join(f"{e} AS {quote(n, dialect)}" for n, e in plan.outputs)
    return f"SELECT *{dropped}, {outputs} FROM {sql}"


@dataclass(frozen=True)
class SqlModel:
    """A model as SQL: one expression per output column (a shared DAG), over its inputs."""

    inputs: tuple[Tensor, ...]
    columns: tuple[SqlColumn, ...]
    nulls: str
    layout: OutputLayout
    tree_nodes: int = 0
    ops: tuple[str, ...] = ()
    splits: dict = field(default_factory=dict, compare=False)
    positive_prob: exp.Expression | None = field(default=None, compare=False)
    _generated: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def parameters(self) -> list[str]:
        return [t.name for t in self.inputs]

    def _input(self, tensor: Tensor) -> exp.Expression:
        return exp.column(tensor.name, quoted=True)

    @functools.cached_property
    def _any_null(self) -> exp.Expression | None:
        """`a IS NULL OR b IS NULL ...` as a balanced tree, one node shared by every guard."""

        def any_of(tests: list[exp.Expression]) -> exp.Expression:
            if len(tests) == 1:
                return tests[0]
            middle = len(tests) // 2
            return either(any_of(tests[:middle]), any_of(tests[middle:]))

        tests = [exp.Is(this=self._input(t), expression=exp.Null()) for t in self.inputs]
        return any_of(tests) if tests else None

    def guard(self, ref: str, body: exp.Expression) -> exp.Expression:
        """Apply the NULL policy: NULL out, NaN in (done on the inputs), or an error."""
        if self.nulls == "null":
            test = self._any_null
            return case([(test, exp.Null())], body) if test is not None else body
        conditions = []
        for tensor in self.inputs:
            if self.nulls == "nan" and (
                tensor.dtype.startswith("float") or tensor.dtype == "string"
            ):
                continue
            message = (
                f"model {ref}: input column {tensor.name!r} has NULL values (the model was "
                "registered with nulls='error')"
                if self.nulls == "error"
                else f"model {ref}: input column {tensor.name!r} has NULL values and is not a "
                "float or a string (nulls='nan' fills only those)"
            )
            is_null = exp.Is(this=self._input(tensor), expression=exp.Null())
            conditions.append((is_null, func("ERROR", exp.Literal.string(message))))
        return case(conditions, body) if conditions else body

    def struct(self, ref: str) -> exp.Expression:
        """The model function's STRUCT as one expression tree."""
        fields = [
            exp.PropertyEQ(this=exp.to_identifier(c.name, quoted=True), expression=c.expression)
            for c in self.columns
        ]
        return self.guard(ref, exp.Struct(expressions=fields))

    def thresholded(self, threshold: float) -> exp.Expression:
        """predicted_<label> of a binary classifier with another cut than 0.5."""
        if self.positive_prob is None:
            raise SqlmlError("threshold applies to binary classifiers with a label")
        classes = self.layout.signature.classes
        class_type = _arrow_sql_type(self.layout.class_type)
        above = exp.GT(this=self.positive_prob, expression=num(float(threshold)))
        return case([(above, literal(classes[1], class_type))], literal(classes[0], class_type))

    def _trees(self, ref: str, struct: bool, threshold) -> tuple[list, list[tuple[str, object]]]:
        if struct:
            names, roots = [OUT], [self.struct(ref)]
        else:
            names = [c.name for c in self.columns]
            roots = [
                self.guard(
                    ref,
                    self.thresholded(threshold)
                    if threshold is not None and c.name == self.layout.predicted
                    else c.expression,
                )
                for c in self.columns
            ]
        stages, outputs = hoist(roots)
        return stages, list(zip(names, outputs))

    def plan(
        self, ref: str, dialect: str = "duckdb", *, struct: bool = True, threshold=None
    ) -> Plan:
        """The staged SQL: one STRUCT output (DuckDB's `__sqlml_out`) or one per column."""
        key = ("plan", dialect, struct, threshold)
        if key not in self._generated:  # generated once; `ref` only appears in error messages
            stages, outputs = self._trees(_REF, struct, threshold)
            self._generated[key] = Plan(
                tuple(tuple((n, e.sql(dialect=dialect)) for n, e in stage) for stage in stages),
                tuple((n, e.sql(dialect=dialect)) for n, e in outputs),
            )
        plan = self._generated[key]
        return Plan(
            tuple(tuple((n, e.replace(_REF, ref)) for n, e in stage) for stage in plan.stages),
            tuple((n, e.replace(_REF, ref)) for n, e in plan.outputs),
        )

    def macro_body(self, ref: str) -> str:
        """The STRUCT as a single DuckDB expression: the body of the stored macro.

        Written out flat, shared values repeat in the text; DuckDB computes each once
        (common subexpressions) as long as they are not inside a CASE branch, so the NULL
        policy is applied by indexing a one-element list (`[struct][1, or NULL]`) rather than
        by CASE. Measured 1.5-3x faster than binding shared values with list_transform
        lambdas, which is the fallback when the flat text would be too long.
        """
        if _expanded_size(self.columns) <= MAX_MACRO_NODES:
            if "struct" not in self._generated:
                fields = [
                    exp.PropertyEQ(
                        this=exp.to_identifier(c.name, quoted=True), expression=c.expression
                    )
                    for c in self.columns
                ]
                self._generated["struct"] = exp.Struct(expressions=fields).sql(dialect="duckdb")
            struct = self._generated["struct"]
            index = self._guard_index(ref)
            return f"[{struct}][{index.sql(dialect='duckdb')}]" if index is not None else struct
        return self._let_body(ref)

    def _guard_index(self, ref: str) -> exp.Expression | None:
        """1 for rows the model scores; NULL (nulls='null') or an error for the others."""
        if self.nulls == "null":
            test = self._any_null
            if test is None:
                return None
            return exp.Nullif(this=exp.Literal.number(1), expression=cast(test, INTEGER))
        guarded = self.guard(ref, exp.Literal.number(1))
        return None if isinstance(guarded, exp.Literal) else guarded

    def _let_body(self, ref: str) -> str:
        """DuckDB has no LET: shared values are bound by chaining one-element list_transform
        calls, one per stage. Each lambda reads only its own argument, a struct carrying the
        inputs and everything computed so far, so nothing is computed twice."""
        stages, [(_, body)] = self._trees(ref, True, None)
        if not stages:
            return body.sql(dialect="duckdb")

        def key(name: str) -> str:
            return "'" + name.replace("'", "''") + "'"

        def qualify(tree: exp.Expression, holder: str) -> str:
            return tree.transform(
                lambda n: (
                    exp.column(n.name, table=holder, quoted=True)
                    if isinstance(n, exp.Column) and not n.table
                    else n
                )
            ).sql(dialect="duckdb")

        carried = self.parameters
        text = "[{" + ", ".join(f"{key(n)}: {quote(n)}" for n in carried) + "}]"
        for i, stage in enumerate(stages):
            holder = f"__sqlml_s{i}"
            fields = [f"{key(n)}: {holder}.{quote(n)}" for n in carried]
            fields += [f"{key(n)}: {qualify(e, holder)}" for n, e in stage]
            text = f"list_transform({text}, lambda {holder}: {{{', '.join(fields)}}})"
            carried = carried + [n for n, _ in stage]
        holder = f"__sqlml_s{len(stages)}"
        return f"list_transform({text}, lambda {holder}: {qualify(body, holder)})[1]"


OUT = "__sqlml_out"
_REF = "__sqlml_model_ref__"  # stands for the version in generated error messages


def _expanded_size(columns) -> int:
    """Nodes of the expressions written out flat (shared nodes counted at each use)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[exp.Expression, bool]] = [(c.expression, False) for c in columns]
    while stack:  # post-order, without recursion
        node, ready = stack.pop()
        if id(node) in sizes:
            continue
        if ready:
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in node.iter_expressions())
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in node.iter_expressions() if id(c) not in sizes)
    return sum(sizes[id(c.expression)] for c in columns)


def _arrow_sql_type(t: pa.DataType) -> exp.DataType:
    if pa.types.is_list(t):
        return exp.DataType(
            this=exp.DataType.Type.ARRAY, expressions=[_arrow_sql_type(t.value_type)], nested=True
        )
    if pa.types.is_struct(t):
        return exp.DataType(
            this=exp.DataType.Type.STRUCT,
            expressions=[
                exp.ColumnDef(this=exp.to_identifier(f.name), kind=_arrow_sql_type(f.type))
                for f in t
            ],
            nested=True,
        )
    types = {pa.float32(): FLOAT, pa.float64(): DOUBLE, pa.int64(): BIGINT, pa.int32(): BIGINT,
             pa.bool_(): BOOLEAN, pa.string(): VARCHAR}  # fmt: skip
    return types[t]


def compile_onnx(
    data: bytes | onnx.ModelProto,
    signature: Signature,
    label: str | None = None,
    nulls: str = "null",
    *,
    max_tree_nodes: int | None = None,
) -> SqlModel:
    """Translate an ONNX model into SQL expressions, or raise NotCompilable with the reason.

    `max_tree_nodes` defaults to MAX_TREE_NODES (read at call time).
    """
    if max_tree_nodes is None:
        max_tree_nodes = MAX_TREE_NODES
    try:
        proto = data if isinstance(data, onnx.ModelProto) else onnx.load_model_from_string(data)
    except Exception as error:  # noqa: BLE001 - any parse failure means "not compilable"
        raise NotCompilable(f"not an ONNX model: {error}") from None
    graph = _Graph(proto, signature, max_tree_nodes, nulls)
    outputs = graph.run()
    layout = OutputLayout(signature, label)
    columns: list[SqlColumn] = []
    for tensor in signature.outputs:
        sym = outputs.get(tensor.name)
        if sym is None:
            raise NotCompilable(f"output {tensor.name!r} is not computed")
        width = 1 if tensor.is_scalar else tensor.width
        if width != len(sym.cols):
            raise NotCompilable(
                f"output {tensor.name!r} has {len(sym.cols)} columns, the signature {width}"
            )
        dtype = _SQL_TYPES[_SIGNATURE_DTYPES[tensor.dtype]]
        if tensor.is_scalar:
            node = cast(sym.cols[0].sql(), dtype)
        else:
            node = exp.Array(expressions=[cast(c.sql(), dtype) for c in sym.cols])
        columns.append(SqlColumn(tensor.name, node))
    positive_prob = None
    if layout.predicted and signature.is_classifier:
        probs_tensor = signature.output(signature.probabilities)
        as_output = _SQL_TYPES[_SIGNATURE_DTYPES[probs_tensor.dtype]]
        # the model function reads the (float32) output as float64
        probs = [cast(cast(c.sql(), as_output), DOUBLE) for c in outputs[probs_tensor.name].cols]
        if len(probs) == 1 and len(signature.classes) == 2:
            probs = [sub(num(1.0), probs[0]), probs[0]]
        if len(probs) != len(signature.classes):
            raise NotCompilable(f"{len(probs)} probabilities for {len(signature.classes)} classes")
        class_type = _arrow_sql_type(layout.class_type)
        classes = [literal(c, class_type) for c in signature.classes]
        if layout.is_binary:
            positive_prob = probs[1]
            above = both(exp.GT(this=probs[1], expression=num(0.5)), exp.Not(this=isnan(probs[1])))
            predicted = case([(above, classes[1])], classes[0])
        else:
            predicted = first_argmax(probs, classes)
        entries = [
            exp.Struct(
                expressions=[
                    exp.PropertyEQ(this=exp.to_identifier("label", quoted=True), expression=c),
                    exp.PropertyEQ(this=exp.to_identifier("prob", quoted=True), expression=p),
                ]
            )
            for c, p in zip(classes, probs)
        ]
        columns.append(SqlColumn(layout.predicted, predicted))
        columns.append(SqlColumn(layout.predicted_probs, exp.Array(expressions=entries)))
    elif layout.predicted:
        tensor = layout.regression_output
        as_output = _SQL_TYPES[_SIGNATURE_DTYPES[tensor.dtype]]
        value = cast(cast(outputs[tensor.name].cols[0].sql(), as_output), DOUBLE)
        columns.append(SqlColumn(layout.predicted, value))
    model = SqlModel(
        inputs=signature.inputs,
        columns=tuple(columns),
        nulls=nulls,
        layout=layout,
        tree_nodes=graph.tree_nodes,
        ops=tuple(dict.fromkeys(graph.ops)),
        splits=graph.splits,
        positive_prob=positive_prob,
    )
    size = model.plan("m@1").size
    if size > MAX_SQL_CHARS:
        raise NotCompilable(f"the SQL would be {size} characters (limit {MAX_SQL_CHARS})")
    return model


# -- let-bindings: shared subexpressions computed once ---------------------------------------

_TRIVIAL = (exp.Column, exp.Literal, exp.Identifier, exp.DataType, exp.Null, exp.Boolean)


def _trivial(node: exp.Expression) -> bool:
    if isinstance(node, _TRIVIAL):
        return True
    if isinstance(node, (exp.Cast, exp.Paren, exp.Neg)):
        return _trivial(node.this)
    return False


def hoist(roots: list[exp.Expression], prefix: str = "__sqlml_t"):
    """Split an expression DAG into stages of named shared subexpressions.

    The translation shares sqlglot nodes (a dot product feeds the label, the probabilities
    and the predicted columns). Generated as one expression they would be repeated, and
    DuckDB does not factor repeats out of CASE branches. Returns `(stages, roots)`:
    `stages[i]` lists `(name, expression)` computable from the inputs and earlier stages, and
    `roots` are the given expressions over those names.
    """
    refs: dict[int, int] = {}
    nodes: dict[int, exp.Expression] = {}
    order: list[int] = []  # post-order: children before parents
    stack: list[tuple[exp.Expression, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            order.append(key)
            continue
        if key in nodes:
            continue
        nodes[key] = node
        stack.append((node, True))
        for child in node.iter_expressions():
            refs[id(child)] = refs.get(id(child), 0) + 1
            if id(child) not in nodes:
                stack.append((child, False))
    shared = [
        k
        for k in order
        if (refs.get(k, 0) > 1 and not _trivial(nodes[k])) or nodes[k].meta.get(HOIST)
    ]
    names = {k: f"{prefix}{i + 1}" for i, k in enumerate(shared)}
    levels: dict[int, int] = {}  # the stage a node can be computed in
    for key in order:
        deepest = 0
        for child in nodes[key].iter_expressions():
            c = id(child)
            deepest = max(deepest, levels.get(c, 0) + (1 if c in names else 0))
        levels[key] = deepest

    def rebuild(node: exp.Expression, defining: int | None = None) -> exp.Expression:
        key = id(node)
        if key in names and key != defining:
            return exp.column(names[key], quoted=True)
        args = {}
        for arg, value in node.args.items():
            if isinstance(value, exp.Expression):
                args[arg] = rebuild(value)
            elif isinstance(value, list):
                args[arg] = [rebuild(v) if isinstance(v, exp.Expression) else v for v in value]
            else:
                args[arg] = value
        return node.__class__(**args)

    stages: list[list[tuple[str, exp.Expression]]] = []
    for key in shared:
        while len(stages) <= levels[key]:
            stages.append([])
        stages[levels[key]].append((names[key], rebuild(nodes[key], defining=key)))
    return [s for s in stages if s], [rebuild(r) for r in roots]


# -- checking a translation against onnxruntime ----------------------------------------------

PROBE_ROWS = 512


def probe_arrays(model: SqlModel, rows: int = PROBE_ROWS, seed: int = 0) -> list[pa.Array]:
    """Input columns that exercise every split: each threshold, the float32 values around
    it, values between and beyond them, plus a few NaNs where the model handles missing values.
    """
    rng = np.random.default_rng(seed)
    with_nan = (
        model.nulls == "nan" or any(op in model.ops for op in ("Imputer",)) or bool(model.splits)
    )
    arrays = []
    for tensor in model.inputs:
        if tensor.dtype in ("string",):
            arrays.append(pa.array([f"v{i % 7}" for i in range(rows)]))
            continue
        if tensor.dtype == "bool":
            arrays.append(pa.array(rng.random(rows) < 0.5))
            continue
        splits = np.asarray(model.splits.get(tensor.name, []), dtype=np.float32)
        values = rng.normal(0.0, 3.0, rows)
        if splits.size:
            low, high = float(splits.min()), float(splits.max())
            spread = max(high - low, 1.0)
            values = rng.uniform(low - spread / 4, high + spread / 4, rows)
            picked = splits[rng.integers(0, splits.size, rows)]
            nudged = np.stack(
                [picked, np.nextafter(picked, np.float32(-np.inf)),
                 np.nextafter(picked, np.float32(np.inf))]
            )[rng.integers(0, 3, rows), np.arange(rows)]  # fmt: skip
            values = np.where(rng.random(rows) < 0.6, nudged, values)
        if with_nan:
            values = np.where(rng.random(rows) < 0.03, np.nan, values)
        if tensor.dtype in ("int64", "int32"):
            arrays.append(pa.array(np.nan_to_num(np.round(values)).astype(np.int64)))
        else:
            dtype = np.float64 if tensor.dtype == "float64" else np.float32
            arrays.append(pa.array(values.astype(dtype)))
    return arrays


def mismatch(expected: pa.StructArray, got: pa.StructArray, layout: OutputLayout) -> str | None:
    """Why two model results differ (None if they agree).

    Floats agree within 1e-4 relative + 1e-5 absolute (onnxruntime computes linear models in
    float32); labels agree exactly except on rows whose two best probabilities are within
    1e-4 of each other.
    """
    if got.type != expected.type:
        return f"type {got.type} instead of {expected.type}"
    ties = _near_ties(expected, layout)
    for field_ in expected.type:
        a, b = got.field(field_.name), expected.field(field_.name)
        if a.null_count != b.null_count or not a.is_valid().equals(b.is_valid()):
            return f"{field_.name}: NULLs differ"
        pairs = [(field_.name, a, b, ties)]
        if pa.types.is_list(field_.type):
            width = len(b.flatten()) // max(len(b), 1)
            row_ties = np.repeat(ties, width) if width else ties
            pairs = [(field_.name, a.flatten(), b.flatten(), row_ties)]
            if pa.types.is_struct(field_.type.value_type):
                flat_a, flat_b = pairs[0][1], pairs[0][2]
                pairs = [
                    (
                        f"{field_.name}.{f.name}",
                        flat_a.field(f.name),
                        flat_b.field(f.name),
                        row_ties,
                    )
                    for f in field_.type.value_type
                ]
        for name, x, y, tie in pairs:
            xs = x.to_numpy(zero_copy_only=False)
            ys = y.to_numpy(zero_copy_only=False)
            if pa.types.is_floating(y.type):
                xs, ys = xs.astype(np.float64), ys.astype(np.float64)
                bad = ~(np.isclose(xs, ys, rtol=1e-4, atol=1e-5) | (np.isnan(xs) & np.isnan(ys)))
            else:
                bad = (xs != ys) & ~tie[: len(xs)] if len(tie) == len(xs) else xs != ys
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                return (
                    f"{name}: {bad.sum()} of {len(xs)} values differ (e.g. {xs[i]!r} vs {ys[i]!r})"
                )
    return None


def _near_ties(result: pa.StructArray, layout: OutputLayout) -> np.ndarray:
    n = len(result)
    signature = layout.signature
    if not signature.is_classifier:
        return np.zeros(n, dtype=bool)
    probs = result.field(signature.probabilities).flatten().to_numpy(zero_copy_only=False)
    probs = probs.astype(np.float64).reshape(n, -1)
    if probs.shape[1] == 1:
        return np.abs(probs[:, 0] - 0.5) < 1e-4
    top = np.sort(probs, axis=1)
    return (top[:, -1] - top[:, -2] < 1e-4) | np.isnan(top).any(axis=1)


def check_against_runtime(
    model: SqlModel, expected_for: Callable[[list[pa.Array]], pa.StructArray]
):
    """Score probe rows through the model function and through the SQL (the ML.PREDICT plan
    and the macro body, in a scratch DuckDB); raise NotCompilable if they disagree."""
    import duckdb

    arrays = probe_arrays(model)
    expected = expected_for(arrays)
    table = pa.table({t.name: a for t, a in zip(model.inputs, arrays)})
    con = duckdb.connect()
    try:
        con.register("__sqlml_probe", table)
        source = "(SELECT * FROM __sqlml_probe) AS __sqlml_in"
        staged = staged_select(model.plan("probe"), source)
        forms = {
            "plan": f"SELECT {OUT} AS r FROM ({staged})",
            "macro": f"SELECT {model.macro_body('probe')} AS r FROM __sqlml_probe",
        }
        for form, sql in forms.items():
            try:
                got = con.sql(sql).to_arrow_table().column("r").combine_chunks()
            except duckdb.Error as error:
                raise NotCompilable(
                    f"the generated SQL ({form}) fails in DuckDB: {error}"
                ) from None
            problem = mismatch(expected, got, model.layout)
            if problem:
                raise NotCompilable(f"the SQL ({form}) disagrees with onnxruntime: {problem}")
    finally:
        con.close()
