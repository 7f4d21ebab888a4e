"""Model runtimes: one module per artifact format behind the small `Runtime` protocol."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from sqlml.signature import Signature

FORMATS = ("onnx", "tensorflow")


class Runtime(Protocol):
    """A loaded model: its signature, and batch prediction on numpy arrays keyed by input name.

    A runtime with `takes_arrow_strings = True` (sqlml's text scorer) is given string columns
    as the Arrow arrays DuckDB passed, not as Python objects; one with `casts_inputs = True`
    (onnxruntime models) gets numeric columns as they come and casts them itself (the UDF
    checks both with getattr).
    """

    signature: Signature

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @property
    def scorer(self) -> str:
        """What computes the predictions, in words (`sqlml models`, `Database.runs_as`)."""
        ...


def load_runtime(fmt: str, data: bytes, model: str) -> Runtime:
    """Load an artifact (already sha256-verified) into its runtime."""
    if fmt == "onnx":
        from sqlml.runtimes.onnx import OnnxRuntime

        return OnnxRuntime(data, model)
    if fmt == "tensorflow":
        from sqlml.runtimes.tensorflow import TensorFlowRuntime

        return TensorFlowRuntime.from_archive(data, model)
    raise ValueError(f"model {model}: unknown artifact format {fmt!r}")
