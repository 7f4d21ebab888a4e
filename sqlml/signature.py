"""A model's input/output signature, read from its artifact and stored in the registry."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

# Element types sqlml understands, as numpy dtypes.
NUMPY_TYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "int64": np.int64,
    "int32": np.int32,
    "bool": np.bool_,
    "string": object,
}


@dataclass(frozen=True)
class Tensor:
    """One named input or output; `shape` includes the batch dimension as None."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] = (None, 1)

    @property
    def width(self) -> int:
        """Values per row: 1 for a scalar column, k for a length-k list column."""
        dims = [d for d in self.shape[1:]]
        if any(d is None for d in dims):
            return -1  # variable length
        return math.prod(dims) if dims else 1

    @property
    def is_scalar(self) -> bool:
        return self.width == 1

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict) -> Tensor:
        return cls(d["name"], d["dtype"], tuple(d["shape"]))


@dataclass(frozen=True)
class Signature:
    """Inputs and outputs of a model, plus class labels when it is a classifier.

    `probabilities` names the output holding class probabilities (one column per class, or a
    single column with the positive-class probability for a sigmoid binary model).
    """

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    classes: tuple = field(default=())
    probabilities: str | None = None

    @property
    def is_classifier(self) -> bool:
        return bool(self.classes) and self.probabilities is not None

    def output(self, name: str) -> Tensor:
        return next(t for t in self.outputs if t.name == name)

    def to_json(self) -> str:
        return json.dumps(
            {
                "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs],
                "classes": list(self.classes),
                "probabilities": self.probabilities,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Signature:
        d = json.loads(text)
        return cls(
            inputs=tuple(Tensor.from_dict(t) for t in d["inputs"]),
            outputs=tuple(Tensor.from_dict(t) for t in d["outputs"]),
            classes=tuple(d.get("classes") or ()),
            probabilities=d.get("probabilities"),
        )

    def with_classes(self, classes: list | tuple | None) -> Signature:
        """Attach class labels, guessing the probability output when there is one float output."""
        if not classes:
            return self
        probs = self.probabilities
        if probs is None:
            floats = [t for t in self.outputs if t.dtype.startswith("float")]
            candidates = [t for t in floats if t.width == len(classes)] or [
                t for t in floats if t.width == 1 and len(classes) == 2
            ]
            probs = candidates[0].name if len(candidates) == 1 else None
        return Signature(self.inputs, self.outputs, tuple(_plain(c) for c in classes), probs)


def _plain(value: object) -> object:
    """Class labels as JSON-friendly Python scalars (numpy ints/strs become int/str)."""
    if isinstance(value, np.generic):
        return value.item()
    return value
