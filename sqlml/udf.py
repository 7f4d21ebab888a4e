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
from sqlml.runtimes import Runtime
from sqlml.signature import NUMPY_TYPES, Signature, Tensor

NULL_POLICIES = ("null", "nan", "error")


def parameter_type(tensor: Tensor) -> str:
    """The DuckDB type a function argument takes; any number casts implicitly to DOUBLE."""
    base = {"string": "VARCHAR", "bool": "BOOLEAN", "int64": "BIGINT", "int32": "BIGINT"}.get(
        tensor.dtype, "DOUBLE"
    )
    return base if tensor.is_scalar or tensor.width == -1 else f"{base}[]"


class ModelFunction:
    """Callable given to DuckDB's `create_function(type='arrow')` for one model version."""

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
        arrays = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns]
        return self.predict_arrow(arrays)

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

    def predict_arrow(self, arrays: list[pa.Array]) -> pa.StructArray:
        """Score Arrow columns given in signature input order; NULL rows follow `nulls`."""
        n = len(arrays[0]) if arrays else 0
        valid = None
        if any(a.null_count for a in arrays):
            arrays, valid = self._apply_null_policy(arrays)
        if n == 0 or (valid is not None and not valid.any()):
            return pa.nulls(n, self._struct_type).cast(self._struct_type)
        inputs = {t.name: _to_numpy(a, t, self.ref) for t, a in zip(self.signature.inputs, arrays)}
        result = self._to_struct(self.runtime.predict(inputs), len(arrays[0]))
        if valid is None:
            return result
        positions = np.cumsum(valid) - 1
        return result.take(pa.array(positions, mask=~valid))

    def _apply_null_policy(
        self, arrays: list[pa.Array]
    ) -> tuple[list[pa.Array], np.ndarray | None]:
        if self.nulls == "nan":
            return [_fill_nan(a, t) for a, t in zip(arrays, self.signature.inputs)], None
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

    def _to_struct(self, outputs: dict[str, np.ndarray], n: int) -> pa.StructArray:
        layout = self.layout
        columns = [_to_arrow(outputs[t.name], t, n) for t in self.signature.outputs]
        if layout.predicted and self.signature.is_classifier:
            probs = class_probabilities(
                outputs[self.signature.probabilities], len(self.signature.classes)
            )
            classes = pa.array(list(self.signature.classes), layout.class_type)
            if layout.is_binary:
                chosen = (probs[:, 1] > 0.5).astype(np.int64)
            else:
                chosen = probs.argmax(axis=1)
            columns.append(classes.take(pa.array(chosen)))
            k = probs.shape[1]
            labels = classes.take(pa.array(np.tile(np.arange(k), n)))
            entries = pa.StructArray.from_arrays(
                [labels, pa.array(probs.reshape(-1).astype(np.float64))], ["label", "prob"]
            )
            offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
            columns.append(pa.ListArray.from_arrays(offsets, entries))
        elif layout.predicted:
            value = outputs[layout.regression_output.name]
            columns.append(pa.array(np.asarray(value, dtype=np.float64).reshape(n)))
        return pa.StructArray.from_arrays(columns, fields=list(self._struct_type))


def class_probabilities(values: np.ndarray, n_classes: int) -> np.ndarray:
    """An (n, classes) matrix; a single sigmoid column p becomes [1 - p, p]."""
    probs = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    if probs.shape[1] == 1 and n_classes == 2:
        probs = np.hstack([1.0 - probs, probs])
    return probs


def _fill_nan(array: pa.Array, tensor: Tensor) -> pa.Array:
    if not array.null_count:
        return array
    if tensor.dtype.startswith("float"):
        return pc.fill_null(array, float("nan"))
    raise ModelInputError(
        f"input column {tensor.name!r} has NULL values and is not a float (nulls='nan' "
        "can only fill float columns)"
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


def _to_arrow(values: np.ndarray, tensor: Tensor, n: int) -> pa.Array:
    target = arrow_type(tensor)
    if pa.types.is_list(target):
        flat = values.reshape(-1)
        k = flat.size // n if n else 0
        offsets = pa.array(
            np.arange(0, n * k + 1, k, dtype=np.int32) if k else np.zeros(n + 1, np.int32)
        )
        return pa.ListArray.from_arrays(offsets, pa.array(flat, target.value_type))
    return pa.array(values.reshape(n), target)
