"""ONNX models through onnxruntime, or through sqlml's tree walker for tree ensembles.

One intra-op thread per session: parallelism comes from DuckDB calling the UDF from several
threads at once (onnxruntime releases the GIL), which measured faster and steadier on 2 cores.
A graph that ends in one tree ensemble is scored by `sqlml.runtimes.trees` (2.6x faster per
core; steps before the trees stay in onnxruntime) once the walker has answered a probe exactly
like onnxruntime; `SQLML_TREE_WALKER=0` turns that off.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa

from sqlml.errors import ArtifactError
from sqlml.runtimes import Batch
from sqlml.signature import NUMPY_TYPES, Signature, Tensor

_ONNX_TYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.STRING: "string",
}
_CLASS_LABEL_ATTRIBUTES = ("classlabels_ints", "classlabels_int64s", "classlabels_strings")
CLASSES_METADATA_KEY = "sqlml.classes"


def _tensor(value_info: onnx.ValueInfoProto, model: str) -> Tensor:
    kind = value_info.type.WhichOneof("value")
    if kind != "tensor_type":
        raise ArtifactError(
            f"model {model}: graph value {value_info.name!r} is a {kind}, not a tensor "
            "(convert scikit-learn classifiers with zipmap=False)"
        )
    tensor_type = value_info.type.tensor_type
    dtype = _ONNX_TYPES.get(tensor_type.elem_type)
    if dtype is None:
        name = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
        raise ArtifactError(f"model {model}: {value_info.name!r} has unsupported type {name}")
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
    if not dims:
        dims = (None,)
    return Tensor(value_info.name, dtype, (None,) + dims[1:])


def read_signature(proto: onnx.ModelProto, model: str) -> Signature:
    """Inputs/outputs from the graph; class labels from metadata or the ai.onnx.ml classifier."""
    initializers = {i.name for i in proto.graph.initializer}
    inputs = tuple(_tensor(v, model) for v in proto.graph.input if v.name not in initializers)
    outputs = tuple(_tensor(v, model) for v in proto.graph.output)
    metadata = {p.key: p.value for p in proto.metadata_props}
    classes: list = (
        json.loads(metadata[CLASSES_METADATA_KEY]) if CLASSES_METADATA_KEY in metadata else []
    )
    if not classes:
        for node in proto.graph.node:
            for attr in node.attribute:
                if attr.name in _CLASS_LABEL_ATTRIBUTES:
                    values = onnx.helper.get_attribute_value(attr)
                    classes = [v.decode() if isinstance(v, bytes) else int(v) for v in values]
    probabilities = "probabilities" if any(t.name == "probabilities" for t in outputs) else None
    return Signature(inputs, outputs, probabilities=probabilities).with_classes(classes)


class OnnxRuntime:
    """An onnxruntime session plus the signature read from the same bytes."""

    def __init__(self, data: bytes, model: str = "?"):
        try:
            proto = onnx.load_model_from_string(data)
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnx/onnxruntime raise many unrelated types
            raise ArtifactError(f"model {model}: not a loadable ONNX model: {error}") from None
        self.signature = read_signature(proto, model)
        self._output_names = [t.name for t in self.signature.outputs]
        self.tree_scorer = None
        self.text_scorer = None
        if os.environ.get("SQLML_TREE_WALKER", "1") != "0":
            from sqlml.runtimes.trees import tree_scorer

            self.tree_scorer = tree_scorer(proto, model)
        if os.environ.get("SQLML_TEXT_SCORER", "1") != "0":
            from sqlml.runtimes.text import text_scorer

            self.text_scorer = text_scorer(proto, self.session)

    @property
    def casts_inputs(self) -> bool:
        """`predict` casts each input to the graph's type itself (the tree walker while it
        copies the columns into its matrix): callers need not cast first."""
        return True

    def batch(self, columns: dict[str, pa.Array], threshold: float) -> Batch | None:
        """A tree model's batch of DOUBLE columns with every array ML.PREDICT returns, in one
        C call (`TreeScorer.batch`: binary classifiers and regressors on the 16-row kernel);
        None for other models or columns (then use `predict`)."""
        scorer = self.tree_scorer
        if scorer is None or not scorer.batches:
            return None
        return scorer.batch(columns, threshold)

    @property
    def takes_arrow_strings(self) -> bool:
        """Whether `predict` reads string inputs as Arrow arrays (no Python objects)."""
        return self.text_scorer is not None

    @property
    def scorer(self) -> str:
        if self.text_scorer is not None:
            return "sqlml's C TF-IDF scorer (onnxruntime for rows with non-ASCII text)"
        if self.tree_scorer is None:
            return "onnxruntime"
        if self.tree_scorer.graph.prefix is None:
            return "sqlml's C tree walker"
        return "onnxruntime for the steps before the trees, then sqlml's C tree walker"

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.text_scorer is not None:
            return self.text_scorer.predict(inputs)
        if self.tree_scorer is not None and self.tree_scorer.graph.prefix is None:
            return self.tree_scorer.predict(inputs)  # casts as it builds its matrix
        feed = {
            t.name: np.asarray(inputs[t.name], dtype=NUMPY_TYPES[t.dtype])
            for t in self.signature.inputs
        }
        if self.tree_scorer is not None:
            return self.tree_scorer.predict(feed)
        results = self.session.run(self._output_names, feed)
        return dict(zip(self._output_names, results))
