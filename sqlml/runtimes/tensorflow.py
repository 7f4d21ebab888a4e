"""TensorFlow SavedModels through their `serving_default` signature (string inputs included).

TensorFlow is imported only when a TensorFlow model is loaded: it takes seconds to import.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sqlml.artifacts import unpack_archive
from sqlml.errors import ArtifactError
from sqlml.signature import NUMPY_TYPES, Signature, Tensor

SERVING_SIGNATURE = "serving_default"


def _dtype_name(tf_dtype) -> str:
    names = {
        "float32": "float32",
        "float64": "float64",
        "int64": "int64",
        "int32": "int32",
        "bool": "bool",
        "string": "string",
    }
    if tf_dtype.name not in names:
        raise ArtifactError(f"unsupported TensorFlow dtype {tf_dtype.name}")
    return names[tf_dtype.name]


def _tensor(name: str, spec) -> Tensor:
    shape = tuple(spec.shape.as_list()) if spec.shape.rank is not None else (None, None)
    return Tensor(name, _dtype_name(spec.dtype), (None,) + shape[1:])


class TensorFlowRuntime:
    """A SavedModel's serving signature with sqlml's Signature read from it."""

    def __init__(self, directory: Path, model: str = "?"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's start-up chatter quiet
        import tensorflow as tf

        try:
            self._loaded = tf.saved_model.load(str(directory))
            self._function = self._loaded.signatures[SERVING_SIGNATURE]
        except KeyError:
            raise ArtifactError(
                f"model {model}: SavedModel has no {SERVING_SIGNATURE!r} signature"
            ) from None
        except Exception as error:
            raise ArtifactError(f"model {model}: not a loadable SavedModel: {error}") from None
        self._tf = tf
        _, input_specs = self._function.structured_input_signature
        inputs = tuple(_tensor(name, spec) for name, spec in sorted(input_specs.items()))
        outputs = tuple(
            _tensor(name, spec) for name, spec in sorted(self._function.structured_outputs.items())
        )
        self.signature = Signature(inputs, outputs)

    @property
    def serving_function(self):
        """The `serving_default` concrete function (sqlml.tf_onnx translates its graph)."""
        return self._function

    @property
    def scorer(self) -> str:
        return "TensorFlow (the SavedModel's serving_default)"

    @classmethod
    def from_archive(cls, data: bytes, model: str) -> TensorFlowRuntime:
        return cls(unpack_archive(data, model), model)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = self._tf
        feed = {}
        for t in self.signature.inputs:
            values = inputs[t.name]
            if t.dtype == "string":
                feed[t.name] = tf.constant(np.asarray(values, dtype=object).astype(bytes))
            else:
                feed[t.name] = tf.constant(np.asarray(values, dtype=NUMPY_TYPES[t.dtype]))
        results = self._function(**feed)
        out = {}
        for name, value in results.items():
            array = value.numpy()
            if array.dtype == object:
                array = np.array([v.decode() for v in array.ravel()], dtype=object).reshape(
                    array.shape
                )
            out[name] = array
        return out
