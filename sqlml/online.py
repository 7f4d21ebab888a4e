"""The online signature of a registered model: what the exported SavedModel and `sqlml serve` take.

Why one definition: a client written against `sqlml serve` must work unchanged against TF Serving
loading the exported SavedModel (and the other way round), so the exporter and the server both
read their tensor names, dtypes and shapes from here.

- A scalar column ([n, 1] in the registry) is a [n] tensor online, so an instance is
  `{"age": 41.0, "plan": "pro"}`, as in BigQuery ML's exported models.
- Outputs keep the model's names (`label`, `probabilities` for a scikit-learn classifier,
  `variable` for a regressor), scalar outputs squeezed to [n] the same way.
- `keyed_prediction` takes one more string input `key` and returns it unchanged beside the
  outputs, so a caller can join predictions back to its rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlml.errors import SqlmlError
from sqlml.signature import Signature, Tensor

SERVING_DEFAULT = "serving_default"
KEYED_PREDICTION = "keyed_prediction"
SIGNATURES = (SERVING_DEFAULT, KEYED_PREDICTION)
KEY = "key"
PREDICT_METHOD = "tensorflow/serving/predict"

# sqlml dtype -> TensorFlow's DataType enum name, as TF Serving's metadata spells it
TF_DTYPES = {
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "int64": "DT_INT64",
    "int32": "DT_INT32",
    "bool": "DT_BOOL",
    "string": "DT_STRING",
}


@dataclass(frozen=True)
class OnlineTensor:
    """One tensor of an online signature; `shape` starts with the batch dimension (None)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    @property
    def is_scalar(self) -> bool:
        return self.shape == (None,)

    @property
    def tf_dtype(self) -> str:
        return TF_DTYPES[self.dtype]


@dataclass(frozen=True)
class OnlineSignature:
    name: str
    inputs: tuple[OnlineTensor, ...]
    outputs: tuple[OnlineTensor, ...]

    @property
    def keyed(self) -> bool:
        return self.name == KEYED_PREDICTION


def _online(tensor: Tensor) -> OnlineTensor:
    if tensor.is_scalar:
        return OnlineTensor(tensor.name, tensor.dtype, (None,))
    return OnlineTensor(tensor.name, tensor.dtype, tuple(tensor.shape))


def online_signature(
    model: str, signature: Signature, name: str = SERVING_DEFAULT
) -> OnlineSignature:
    """The `serving_default` or `keyed_prediction` signature of a registered model."""
    if name not in SIGNATURES:
        raise SqlmlError(
            f"model {model}: unknown signature_name {name!r} (use one of {', '.join(SIGNATURES)})"
        )
    inputs = tuple(_online(t) for t in signature.inputs)
    outputs = tuple(_online(t) for t in signature.outputs)
    if name == KEYED_PREDICTION:
        clash = [t.name for t in inputs + outputs if t.name == KEY]
        if clash:
            raise SqlmlError(
                f"model {model}: has a tensor named {KEY!r}, so it has no {KEYED_PREDICTION} "
                "signature"
            )
        key = OnlineTensor(KEY, "string", (None,))
        inputs, outputs = inputs + (key,), outputs + (key,)
    return OnlineSignature(name, inputs, outputs)
