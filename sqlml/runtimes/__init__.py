"""Model runtimes: one module per artifact format behind the small `Runtime` protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sqlml.signature import Signature

FORMATS = ("onnx", "tensorflow")


class Runtime(Protocol):
    """A loaded model: its signature, and batch prediction on numpy arrays keyed by input name.

    A runtime with `takes_arrow_strings = True` (sqlml's text scorer) is given string columns
    as the Arrow arrays DuckDB passed, not as Python objects; one with `casts_inputs = True`
    (onnxruntime models) gets numeric columns as they come and casts them itself; one with
    `batch(columns, threshold)` may answer a batch of Arrow columns with a `Batch` (binary
    classifiers and regressors of trees on sqlml's walker do), or None to be called through
    `predict` (the UDF checks all three with getattr).
    """

    signature: Signature

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @property
    def scorer(self) -> str:
        """What computes the predictions, in words (`sqlml models`, `Database.runs_as`)."""
        ...


@dataclass
class Batch:
    """A batch with ML.PREDICT's own arrays made alongside the model's outputs (sqlml's tree
    walker makes them all in one C call, releasing the GIL once)."""

    outputs: dict[str, np.ndarray]  # the model's outputs, as `predict` returns them
    values: np.ndarray  # float64: a binary classifier's [n, 2] probabilities; a regressor's [n]
    chosen: np.ndarray | None = None  # binary: int64, 1 where the second class's probability
    # is above the threshold


def load_runtime(fmt: str, data: bytes, model: str) -> Runtime:
    """Load an artifact (already sha256-verified) into its runtime."""
    if fmt == "onnx":
        from sqlml.runtimes.onnx import OnnxRuntime

        return OnnxRuntime(data, model)
    if fmt == "tensorflow":
        from sqlml.runtimes.tensorflow import TensorFlowRuntime

        return TensorFlowRuntime.from_archive(data, model)
    raise ValueError(f"model {model}: unknown artifact format {fmt!r}")
