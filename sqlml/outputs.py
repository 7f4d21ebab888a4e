"""The columns a model adds to a query: its raw outputs plus BigQuery-style predicted columns.

Shared by the DuckDB function (which computes them) and the SQL rewrite (which needs their
names, e.g. to apply a custom threshold), so both agree on one definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from sqlml.signature import Signature, Tensor

_ARROW_TYPES = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "bool": pa.bool_(),
    "string": pa.string(),
}


def arrow_type(tensor: Tensor) -> pa.DataType:
    base = _ARROW_TYPES[tensor.dtype]
    return base if tensor.is_scalar or tensor.width == -1 else pa.list_(base)


@dataclass(frozen=True)
class OutputLayout:
    """Names and types of the struct a model function returns."""

    signature: Signature
    label: str | None
    # Trained by CREATE MODEL ... AS SELECT: in BigQuery the model is native, so its ML.PREDICT
    # returns predicted_<label>(_probs) itself, the probabilities in BigQuery's own order.
    native: bool = False

    @property
    def class_type(self) -> pa.DataType:
        classes = self.signature.classes
        if all(isinstance(c, bool) for c in classes):
            return pa.bool_()
        return pa.int64() if all(isinstance(c, int) for c in classes) else pa.string()

    @property
    def predicted(self) -> str | None:
        """`predicted_<label>` when the label is known and the model is a classifier/regressor."""
        if self.label is None:
            return None
        if self.signature.is_classifier or self.regression_output is not None:
            return f"predicted_{self.label}"
        return None

    @property
    def predicted_probs(self) -> str | None:
        return (
            f"{self.predicted}_probs" if self.predicted and self.signature.is_classifier else None
        )

    @property
    def regression_output(self) -> Tensor | None:
        """The single scalar float output of a model without classes (a regressor)."""
        if self.signature.is_classifier:
            return None
        floats = [t for t in self.signature.outputs if t.dtype.startswith("float") and t.is_scalar]
        return floats[0] if len(self.signature.outputs) == 1 and floats else None

    @property
    def is_binary(self) -> bool:
        return self.signature.is_classifier and len(self.signature.classes) == 2

    @property
    def has_score(self) -> bool:
        """One number per row (`"name:score"(...)`): a binary classifier's probability of its
        second class, or a regressor's prediction."""
        return self.is_binary or self.regression_output is not None

    def arrow_fields(self) -> list[pa.Field]:
        fields = [pa.field(t.name, arrow_type(t)) for t in self.signature.outputs]
        if self.predicted and self.signature.is_classifier:
            fields.append(pa.field(self.predicted, self.class_type))
            probs = pa.struct([pa.field("label", self.class_type), pa.field("prob", pa.float64())])
            fields.append(pa.field(self.predicted_probs, pa.list_(probs)))
        elif self.predicted:
            fields.append(pa.field(self.predicted, pa.float64()))
        return fields

    def arrow_type(self) -> pa.StructType:
        return pa.struct(self.arrow_fields())

    def duckdb_type(self) -> str:
        return _duckdb_type(self.arrow_type())


def _duckdb_type(t: pa.DataType) -> str:
    if pa.types.is_struct(t):
        inner = ", ".join(f'"{f.name}" {_duckdb_type(f.type)}' for f in t)
        return f"STRUCT({inner})"
    if pa.types.is_list(t):
        return f"{_duckdb_type(t.value_type)}[]"
    return {
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
        pa.int64(): "BIGINT",
        pa.int32(): "INTEGER",
        pa.bool_(): "BOOLEAN",
        pa.string(): "VARCHAR",
    }[t]
