"""The exported `tf.Module`: `serving_default` and `keyed_prediction`, named as sqlml.online says.

Why one module for both formats: the SavedModel and the TFLite file must expose the same two
signatures with the same tensor names, dtypes and shapes as `sqlml serve`, so a client works
against any of the three. A scalar column is a [n] tensor online and [n, 1] inside the model;
the signature functions reshape on the way in and out. `keyed_prediction` calls
`serving_default` and returns the string `key` unchanged beside its outputs.

Two sources: an ONNX artifact, translated by `sqlml.export.ops`, and a TensorFlow artifact
(a zipped SavedModel), whose own `serving_default` is wrapped so it gains `keyed_prediction`
and the online shapes.
"""

from __future__ import annotations

import keyword
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlml.errors import SqlmlError
from sqlml.export import ExportError
from sqlml.online import (
    KEY,
    KEYED_PREDICTION,
    SERVING_DEFAULT,
    OnlineSignature,
    OnlineTensor,
    online_signature,
)
from sqlml.signature import Signature

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's start-up chatter quiet
import tensorflow as tf  # noqa: E402

TF_DTYPES = {
    "float32": tf.float32,
    "float64": tf.float64,
    "int64": tf.int64,
    "int32": tf.int32,
    "bool": tf.bool,
    "string": tf.string,
}
# TensorFlow renames signature inputs that are not plain identifiers ('a-b' -> 'a_b'), which
# would break the promise that online names equal the model's column names.
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Predict = Callable[[dict[str, Any]], dict[str, Any]]


class ExportModule(tf.Module):
    """Both online signatures around one prediction function (dict of tensors -> dict).

    The traced functions are kept out of TensorFlow's object tracking on purpose: a tracked
    tf.function is traced again while saving, which stored every constant (the tree tables)
    twice. Only the signatures are saved, each traced once.
    """

    def __init__(
        self,
        predict: Predict,
        serving: OnlineSignature,
        keyed: OnlineSignature | None,
        inner: Any = None,
    ):
        super().__init__()
        if inner is not None:
            self.inner = inner  # a loaded SavedModel: tracked so its variables are saved
        names = [t.name for t in serving.inputs]

        def serving_default(*args: Any) -> dict[str, Any]:
            return predict(dict(zip(names, args)))

        serve = tf.function(serving_default, input_signature=_specs(serving))
        functions = {SERVING_DEFAULT: serve.get_concrete_function()}
        if keyed is not None:

            def keyed_prediction(*args: Any) -> dict[str, Any]:
                *values, key = args
                outputs = dict(serve(*values))  # a call to the one serving_default trace
                outputs[KEY] = tf.identity(key)
                return outputs

            keyed_function = tf.function(keyed_prediction, input_signature=_specs(keyed))
            functions[KEYED_PREDICTION] = keyed_function.get_concrete_function()
        self._traced = _Traced(functions)

    def concrete_functions(self) -> dict[str, Any]:
        """Signature name -> concrete function (TFLite names its signatures after them)."""
        return dict(self._traced.functions)


@dataclass(frozen=True)
class _Traced:
    """A plain holder: TensorFlow does not track inside it (see ExportModule)."""

    functions: dict[str, Any]


def _specs(signature: OnlineSignature) -> list:
    return [tf.TensorSpec(t.shape, TF_DTYPES[t.dtype], name=t.name) for t in signature.inputs]


def signatures(model: str, signature: Signature) -> tuple[OnlineSignature, OnlineSignature | None]:
    """The two online signatures; no `keyed_prediction` when the model has a tensor `key`."""
    serving = online_signature(model, signature, SERVING_DEFAULT)
    try:
        keyed = online_signature(model, signature, KEYED_PREDICTION)
    except SqlmlError:
        keyed = None  # as `sqlml serve`: such a model has serving_default only
    for tensor in serving.inputs:
        if not _PLAIN_NAME.fullmatch(tensor.name) or keyword.iskeyword(tensor.name):
            raise ExportError(
                f"model {model}: input {tensor.name!r} cannot be a SavedModel signature input "
                "(TensorFlow keeps only names of letters, digits and _ that start with a letter)"
            )
        if tensor.dtype not in TF_DTYPES:
            raise ExportError(f"model {model}: input {tensor.name!r} has type {tensor.dtype}")
    return serving, keyed


def _fit_output(value: Any, tensor: OnlineTensor, model: str) -> Any:
    """Cast and reshape one output to its online dtype and shape ([n] for scalars)."""
    dtype = TF_DTYPES[tensor.dtype]
    if value.dtype != dtype:
        if tf.string in (value.dtype, dtype):
            raise ExportError(
                f"model {model}: output {tensor.name!r} is {value.dtype.name}, "
                f"the registry says {tensor.dtype}"
            )
        value = tf.cast(value, dtype)
    dims = list(tensor.shape[1:])
    if all(d is not None for d in dims):
        value = tf.reshape(value, [-1, *dims])
    return value


# -- ONNX artifacts -------------------------------------------------------------------------


def onnx_builder(data: bytes, signature: Signature, model: str) -> Callable[[], ExportModule]:
    """Compile and check everything now; return what builds the module (traced later)."""
    from sqlml.export import ops

    program = ops.compile_onnx(data, model)
    serving, keyed = signatures(model, signature)
    by_name = {t.name: t for t in serving.inputs}
    graph_names = {i.name for i in program.inputs}
    if graph_names != set(by_name):
        raise ExportError(
            f"model {model}: the registry inputs {sorted(by_name)} do not match the ONNX "
            f"graph inputs {sorted(graph_names)}"
        )
    missing = [t.name for t in serving.outputs if t.name not in program.outputs]
    if missing:
        raise ExportError(f"model {model}: outputs {missing} are not ONNX graph outputs")
    for graph_input in program.inputs:
        expected = TF_DTYPES[by_name[graph_input.name].dtype]
        if graph_input.dtype != expected:
            raise ExportError(
                f"model {model}: input {graph_input.name!r} is {graph_input.dtype.name} in the "
                f"graph but {by_name[graph_input.name].dtype} in the registry"
            )

    def predict(inputs: dict[str, Any]) -> dict[str, Any]:
        feeds = {}
        for graph_input in program.inputs:
            value = inputs[graph_input.name]
            if graph_input.rank == 2 and value.shape.rank == 1:
                value = tf.reshape(value, [-1, 1])  # online [n] -> the graph's [n, 1]
            feeds[graph_input.name] = value
        results = program(feeds)
        return {t.name: _fit_output(results[t.name], t, model) for t in serving.outputs}

    return lambda: ExportModule(predict, serving, keyed)


# -- TensorFlow artifacts -------------------------------------------------------------------


def tensorflow_builder(data: bytes, signature: Signature, model: str) -> Callable[[], ExportModule]:
    """Wrap a registered SavedModel's `serving_default` with the online shapes and a key."""
    from sqlml.artifacts import unpack_archive

    serving, keyed = signatures(model, signature)
    directory = unpack_archive(data, model)
    try:
        loaded = tf.saved_model.load(str(directory))
        function = loaded.signatures[SERVING_DEFAULT]
    except KeyError:
        raise ExportError(f"model {model}: the SavedModel has no {SERVING_DEFAULT!r}") from None
    except Exception as error:
        raise ExportError(f"model {model}: not a loadable SavedModel: {error}") from None
    _, specs = function.structured_input_signature
    if set(specs) != {t.name for t in serving.inputs}:
        raise ExportError(
            f"model {model}: the SavedModel takes {sorted(specs)}, the registry says "
            f"{sorted(t.name for t in serving.inputs)}"
        )

    def predict(inputs: dict[str, Any]) -> dict[str, Any]:
        feeds = {}
        for name, spec in specs.items():
            value = inputs[name]
            if spec.shape.rank is not None and spec.shape.rank != value.shape.rank:
                value = tf.reshape(value, [-1, *[d or -1 for d in spec.shape.as_list()[1:]]])
            feeds[name] = value
        results = function(**feeds)
        return {t.name: _fit_output(results[t.name], t, model) for t in serving.outputs}

    return lambda: ExportModule(predict, serving, keyed, inner=loaded)


def save(module: ExportModule, directory: Path, model: str) -> None:
    try:
        tf.saved_model.save(module, str(directory), signatures=module.concrete_functions())
    except ExportError:
        raise
    except Exception as error:  # tracing/saving errors come in many TensorFlow types
        raise ExportError(f"model {model}: the SavedModel could not be written: {error}") from None
