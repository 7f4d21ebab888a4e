"""What sqlml's native scorers (trees.py, text.py) share: loading their compiled C file, and
cutting an ONNX graph into parts that run as models of their own in onnxruntime.

Both scorers take over part of a graph and leave the rest to onnxruntime (the steps before a
tree ensemble; a text model's post-transform), and both are checked against onnxruntime when
a model loads, within the same tolerances.
"""

from __future__ import annotations

import ctypes
import importlib.util

import numpy as np
import onnx
import onnxruntime as ort

ML_DOMAIN = "ai.onnx.ml"
PROBE_RTOL, PROBE_ATOL = 1e-5, 1e-6  # onnxruntime's logistic/softmax approximations: ~1e-7


def load_native(module: str, abi_function: str, abi: int) -> ctypes.CDLL | None:
    """A compiled C file of sqlml (`sqlml._treewalk` ...), or None where `pip install` could
    not compile it (no C compiler) or the build is stale (another ABI than this Python's)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return None
    try:
        library = ctypes.CDLL(spec.origin)
    except OSError:
        return None
    return library if getattr(library, abi_function)() == abi else None


class CannotSplit(Exception):
    """A part of the graph does not load as a model of its own, or does not give the type
    the native scorer needs."""


def model_like(proto: onnx.ModelProto, graph: onnx.GraphProto) -> onnx.ModelProto:
    """`graph` as a model with the opsets and IR version of the model it was cut from."""
    return onnx.helper.make_model(
        graph, opset_imports=list(proto.opset_import), ir_version=proto.ir_version
    )


def single_thread_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """An onnxruntime session as sqlml runs models: one thread, so sums keep one order."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises many unrelated types
        raise CannotSplit(str(error)) from None


def same_outputs(got: list[np.ndarray], want: list[np.ndarray], same_dtype: bool = False) -> bool:
    """Whether a native scorer's outputs are onnxruntime's: same shapes and kinds (or exact
    dtypes), floats within the probe tolerances, everything else equal."""
    if len(got) != len(want):
        return False
    for value, expected in zip(got, want):
        if value.shape != expected.shape or value.dtype.kind != expected.dtype.kind:
            return False
        if same_dtype and value.dtype != expected.dtype:
            return False
        if expected.dtype.kind in "fc":
            if not np.allclose(value, expected, rtol=PROBE_RTOL, atol=PROBE_ATOL, equal_nan=True):
                return False
        elif not np.array_equal(value, expected):
            return False
    return True
