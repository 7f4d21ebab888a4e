"""A registered model as a DuckDB scalar function over Arrow batches.

DuckDB calls the function with one vector (2048 rows) per column, from several threads at
once; the model runtime releases the GIL, so scoring runs in parallel, never row by row.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlml.errors import ModelInputError
from sqlml.outputs import OutputLayout, arrow_type
from sqlml.runtimes import Batch, Runtime
from sqlml.signature import NUMPY_TYPES, Signature, Tensor

MISSING_STRING = ""  # a NULL string under nulls='nan' (sqlml.training learns NULL as this)
NULL_POLICIES = ("null", "nan", "error")


def parameter_type(tensor: Tensor) -> str:
    """The DuckDB type a function argument takes; any number casts implicitly to DOUBLE."""
    base = {"string": "VARCHAR", "bool": "BOOLEAN", "int64": "BIGINT", "int32": "BIGINT"}.get(
        tensor.dtype, "DOUBLE"
    )
    return base if tensor.is_scalar or tensor.width == -1 else f"{base}[]"


class ModelFunction:
    """Callable given to DuckDB's `create_function(type='arrow')` for one model version.

    DuckDB calls it once per 2048-row vector from each of its threads, and every Python step
    here holds the GIL the other threads wait on: the per-call work is kept to a few numpy and
    Arrow constructor calls, with everything that depends only on the signature (or on the
    batch length) computed once.
    """

    def __init__(
        self,
        ref: str,
        signature: Signature,
        label: str | None,
        load: Callable[[], Runtime],
        nulls: str = "null",
    ):
        self.ref = ref
        self.signature = signature
        self.layout = OutputLayout(signature, label)
        self.nulls = nulls
        self._load = load
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()
        self._struct_type = self.layout.arrow_type()
        self._fields = list(self._struct_type)
        self._inputs = [_InputPlan(t) for t in signature.inputs]
        self._outputs = [(t.name, arrow_type(t)) for t in signature.outputs]
        self._classifier = bool(self.layout.predicted and signature.is_classifier)
        self._binary = self._classifier and self.layout.is_binary
        # what a runtime's `batch` answers: binary classifiers (made into a STRUCT by
        # _prediction_columns) and models without classes (regressors)
        self._batchable = self._binary or not signature.is_classifier
        if self._classifier:
            class_type = self.layout.class_type
            self._classes = pa.array(list(signature.classes), class_type)
            # integer labels are picked with numpy; strings with an Arrow take
            self._class_values = (
                np.array(signature.classes, dtype=np.int64)
                if pa.types.is_integer(class_type)
                else None
            )
            probs_field = self._fields[-1]
            self._probs_type = probs_field.type
            self._entry_fields = list(probs_field.type.value_type)
        self._constants: dict[tuple[str, int, int], pa.Array] = {}
        self._result_type: pa.DataType = self._struct_type

    @property
    def duckdb_type(self) -> str:
        """The SQL type the function returns."""
        return self.layout.duckdb_type()

    @property
    def parameter_types(self) -> list[str]:
        return [parameter_type(t) for t in self.signature.inputs]

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            with self._lock:
                if self._runtime is None:
                    self._runtime = self._load()
        return self._runtime

    def __call__(self, *columns: pa.ChunkedArray | pa.Array) -> pa.StructArray:
        return self.predict_arrow([_single_array(c) for c in columns])

    def as_duckdb_callable(self) -> Callable[..., pa.StructArray]:
        """`self` with one named parameter per model input: DuckDB checks the arity."""

        def call(*columns: pa.ChunkedArray) -> pa.StructArray:
            return self(*columns)

        call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter(f"x{i}", inspect.Parameter.POSITIONAL_ONLY)
                for i in range(len(self.signature.inputs))
            ]
        )
        return call

    def predict_arrow(self, arrays: list[pa.Array], threshold: float = 0.5) -> pa.StructArray:
        """Score Arrow columns given in signature input order; NULL rows follow `nulls`."""
        n = len(arrays[0]) if arrays else 0
        valid = None
        if any(a.null_count for a in arrays):
            arrays, valid = self._apply_null_policy(arrays)
        if n == 0 or (valid is not None and not valid.any()):
            return pa.nulls(n, self._result_type).cast(self._result_type)
        runtime = self.runtime
        batch_call = getattr(runtime, "batch", None) if self._batchable else None
        batch = (
            batch_call({p.name: a for p, a in zip(self._inputs, arrays)}, threshold)
            if batch_call is not None
            else None
        )
        if batch is not None:
            result = self.batch_result(batch, len(arrays[0]))
        else:
            result = self.result(self._predict(runtime, arrays), len(arrays[0]), threshold)
        if valid is None:
            return result
        positions = np.cumsum(valid) - 1
        return result.take(pa.array(positions, mask=~valid))

    def _predict(self, runtime: Runtime, arrays: list[pa.Array]) -> dict[str, np.ndarray]:
        arrow_strings = getattr(runtime, "takes_arrow_strings", False)
        cast = not getattr(runtime, "casts_inputs", False)
        inputs = {
            p.name: a if arrow_strings and p.is_string else p.to_numpy(a, self.ref, cast)
            for p, a in zip(self._inputs, arrays)
        }
        return runtime.predict(inputs)

    def _apply_null_policy(
        self, arrays: list[pa.Array]
    ) -> tuple[list[pa.Array], np.ndarray | None]:
        if self.nulls == "nan":
            return [_fill_nan(a, t, self.ref) for a, t in zip(arrays, self.signature.inputs)], None
        valid = np.ones(len(arrays[0]), dtype=bool)
        for tensor, array in zip(self.signature.inputs, arrays):
            if array.null_count:
                if self.nulls == "error":
                    raise ModelInputError(
                        f"model {self.ref}: input column {tensor.name!r} has NULL values "
                        "(the model was registered with nulls='error')"
                    )
                valid &= array.is_valid().to_numpy(zero_copy_only=False)
        keep = pa.array(valid)
        return [a.filter(keep) for a in arrays], valid

    def _constant(self, kind: str, n: int, k: int) -> pa.Array:
        """Arrays that depend only on the batch length: list offsets, repeated class labels."""
        key = (kind, n, k)
        found = self._constants.get(key)
        if found is None:
            if kind == "offsets":
                found = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
            else:
                found = self._classes.take(pa.array(np.tile(np.arange(k), n)))
            if len(self._constants) > 64:  # batch lengths vary with filters; keep a few
                self._constants.clear()
            self._constants[key] = found
        return found

    def _list(self, values: np.ndarray, value_type: pa.DataType, n: int) -> pa.ListArray:
        flat = values.reshape(-1)
        k = flat.size // n if n else 0
        offsets = self._constant("offsets", n, k) if k else pa.array(np.zeros(n + 1, np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(flat, value_type))

    def result(self, outputs: dict[str, np.ndarray], n: int, threshold: float = 0.5) -> pa.Array:
        """The function's value for each row: the STRUCT of every output."""
        return self.to_struct(outputs, n, threshold)

    def batch_result(self, batch: Batch, n: int) -> pa.Array:
        """The function's value from a runtime's `batch`: the STRUCT `result` makes, from
        arrays the runtime already made."""
        columns = self._output_columns(batch.outputs, n)
        if self._classifier:
            columns += self._prediction_columns(batch.values, batch.chosen)
        elif self.layout.predicted:
            columns.append(pa.array(batch.values))
        return pa.StructArray.from_arrays(columns, fields=self._fields)

    def to_struct(
        self, outputs: dict[str, np.ndarray], n: int, threshold: float = 0.5
    ) -> pa.StructArray:
        """The runtime's outputs as the function's STRUCT rows (also the server's log rows, so
        they hold the same JSON fields as ML.PREDICT's logged rows)."""
        columns = self._output_columns(outputs, n)
        if self._classifier:
            probs = class_probabilities(
                outputs[self.signature.probabilities], len(self.signature.classes)
            )
            chosen = probs[:, 1] > threshold if self._binary else probs.argmax(axis=1)
            columns += self._prediction_columns(probs, chosen)
        elif self.layout.predicted:
            value = outputs[self.layout.regression_output.name]
            columns.append(pa.array(np.asarray(value, dtype=np.float64).reshape(n)))
        return pa.StructArray.from_arrays(columns, fields=self._fields)

    def _output_columns(self, outputs: dict[str, np.ndarray], n: int) -> list[pa.Array]:
        """One field per model output, as the model returned it."""
        columns = []
        for name, target in self._outputs:
            if pa.types.is_list(target):
                columns.append(self._list(outputs[name], target.value_type, n))
            else:
                columns.append(pa.array(outputs[name].reshape(n), target))
        return columns

    def _prediction_columns(self, probs: np.ndarray, chosen: np.ndarray) -> list[pa.Array]:
        """predicted_<label> and predicted_<label>_probs from the class probabilities [n, k]
        and the class chosen per row (binary: true for the second; else its index)."""
        n, k = probs.shape
        if self._binary and self._class_values is not None:
            low, high = self._class_values
            picked = (
                chosen.astype(np.int64, copy=False)
                if low == 0 and high == 1
                else np.where(chosen, high, low)
            )
            predicted = pa.array(picked)
        elif self._class_values is not None:
            predicted = pa.array(self._class_values[chosen])
        else:
            predicted = self._classes.take(pa.array(chosen.astype(np.int64, copy=False)))
        entries = pa.StructArray.from_arrays(
            [self._constant("labels", n, k), pa.array(probs.reshape(-1))],
            fields=self._entry_fields,
        )
        probabilities = pa.ListArray.from_arrays(
            self._constant("offsets", n, k), entries, type=self._probs_type
        )
        return [predicted, probabilities]


class ScoreFunction(ModelFunction):
    """`"<function>:score"(...)`: one DOUBLE per row, the number most queries want from a model
    with one: a binary classifier's probability of its second class (the positive class), a
    regressor's prediction.

    Why beside the STRUCT: in `ORDER BY`, `WHERE` or an aggregate only that number is used, and
    a plain DOUBLE costs DuckDB and Python far less per batch than building and importing the
    nested STRUCT (labels, lists of class/probability pairs), all under the GIL that DuckDB's
    threads share: 1.7x the rows/s of `churn(...).predicted_y_probs[2].prob` on a 100-tree
    model (benchmarks/README.md).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.layout.has_score:
            raise ValueError(f"model {self.ref} has no single score")  # callers check first
        self._result_type = pa.float64()

    @property
    def duckdb_type(self) -> str:
        return "DOUBLE"

    def batch_result(self, batch: Batch, n: int) -> pa.Array:
        return pa.array(batch.values[:, 1] if batch.values.ndim == 2 else batch.values)

    def result(self, outputs: dict[str, np.ndarray], n: int, threshold: float = 0.5) -> pa.Array:
        if self.layout.is_binary:  # [n, 2], or [n, 1] / [n] holding the second class's
            value = outputs[self.signature.probabilities].reshape(n, -1)[:, -1]
        else:
            value = outputs[self.layout.regression_output.name].reshape(n)
        return pa.array(value.astype(np.float64))


class _InputPlan:
    """How one model input is read from an Arrow column, decided once from its tensor."""

    __slots__ = ("name", "tensor", "dtype", "column", "is_string")

    def __init__(self, tensor: Tensor):
        self.name = tensor.name
        self.tensor = tensor
        self.dtype = np.dtype(NUMPY_TYPES[tensor.dtype])
        self.column = len(tensor.shape) != 1  # (n, 1) rather than (n,)
        # a runtime that reads Arrow strings (sqlml's text scorer) gets the column as it is
        self.is_string = tensor.dtype == "string" and tensor.is_scalar

    def to_numpy(self, array: pa.Array, ref: str, cast: bool = True) -> np.ndarray:
        """The column as the tensor's dtype, or (`cast=False`, for a runtime that casts while
        it copies anyway) as it comes, saving a pass over it."""
        if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
            return _to_numpy(array, self.tensor, ref)
        values = array.to_numpy(zero_copy_only=False)
        if cast and values.dtype != self.dtype:
            values = values.astype(self.dtype)
        return values.reshape(-1, 1) if self.column else values


def _single_array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """DuckDB passes one-chunk ChunkedArrays: take the chunk rather than copy it."""
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def class_probabilities(values: np.ndarray, n_classes: int) -> np.ndarray:
    """An (n, classes) matrix; a single sigmoid column p becomes [1 - p, p]."""
    probs = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    if probs.shape[1] == 1 and n_classes == 2:
        probs = np.hstack([1.0 - probs, probs])
    return probs


def _fill_nan(array: pa.Array, tensor: Tensor, ref: str) -> pa.Array:
    """nulls='nan': a missing number is NaN, a missing string the empty category '' (what
    sqlml's training learns for NULL strings); other types cannot stand for missing."""
    if not array.null_count:
        return array
    if tensor.dtype.startswith("float"):
        return pc.fill_null(array, float("nan"))
    if tensor.dtype == "string":
        return pc.fill_null(array, MISSING_STRING)
    raise ModelInputError(
        f"model {ref}: input column {tensor.name!r} has NULL values and is not a float or a "
        "string (nulls='nan' fills only those)"
    )


def _to_numpy(array: pa.Array, tensor: Tensor, ref: str) -> np.ndarray:
    """An Arrow column as the tensor the model wants: (n,), (n, 1) or (n, k) for lists."""
    n = len(array)
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
        if tensor.width > 0 and (lengths != tensor.width).any():
            bad = int(lengths[lengths != tensor.width][0])
            raise ModelInputError(
                f"model {ref}: input column {tensor.name!r} needs lists of {tensor.width} "
                f"values, got a list of {bad}"
            )
        values = array.flatten().to_numpy(zero_copy_only=False)
        shape = (n, -1)
    else:
        values = array.to_numpy(zero_copy_only=False)
        shape = (n,) if len(tensor.shape) == 1 else (n, 1)
    dtype = NUMPY_TYPES[tensor.dtype]
    return np.asarray(values, dtype=dtype).reshape(shape)
