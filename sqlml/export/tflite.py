"""The exported module as one `.tflite` file, keeping both signatures.

Why `from_concrete_functions`: converting the SavedModel folder keeps only `serving_default`
unless every key is listed; converting the module's two traced functions keeps both, named
after them. No optimizations and no quantization: quantized thresholds send rows down the
wrong branch of a tree (thousands of flipped labels were measured), so the file stays float32.

Parity: the translator needs no float64 op for float32 inputs (tree sums are in-order float32
running sums, exactly as onnxruntime adds them), and string equality (one-hot encoding) and the
string `key` are TFLite builtins, so the float32 models sqlml converts from scikit-learn run
on the builtin op set with the SavedModel's results: labels equal to onnxruntime, probabilities
within 1e-5 (the export tests check both). A model that would need a TensorFlow op TFLite
lacks (e.g. float64 inputs) is refused with the op's name rather than shipped with the Flex
delegate, which a device runtime usually lacks.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from sqlml.export import ExportError
from sqlml.export.saved_model import ExportModule


def convert(module: ExportModule, model: str) -> bytes:
    """TFLite flatbuffer bytes with the module's signatures, checked to load and run."""
    functions = module.concrete_functions()
    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            list(functions.values()), module
        )
        converter.optimizations = []
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        with _native_stderr_muted():
            data = converter.convert()
    except Exception as error:  # the converter raises ConverterError and friends
        text = str(error)
        listed = re.search(r"TF Select ops: ([^\n]+)", text)
        detail = (
            f"TensorFlow op(s) {listed.group(1).strip()} have no TFLite builtin (the Flex "
            "delegate that would run them is not in tf.lite.Interpreter here, nor on most devices)"
            if listed
            else text.strip().splitlines()[-1]
            if text.strip()
            else type(error).__name__
        )
        raise ExportError(f"model {model}: cannot convert to TFLite: {detail}") from None
    _check(data, list(functions), model)
    return data


@contextlib.contextmanager
def _native_stderr_muted() -> Iterator[None]:
    """The MLIR converter prints pages of diagnostics straight to file descriptor 2; the
    error raised instead names the ops that have no builtin."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _check(data: bytes, names: list[str], model: str) -> None:
    """Load the flatbuffer and run every signature on one probe row (quietly: the
    interpreter's deprecation notice and XNNPACK's INFO line are not the user's business)."""
    with warnings.catch_warnings(), _native_stderr_muted():
        warnings.simplefilter("ignore", UserWarning)
        _run_signatures(data, names, model)


def _run_signatures(data: bytes, names: list[str], model: str) -> None:
    interpreter = tf.lite.Interpreter(model_content=data)
    found = interpreter.get_signature_list()
    if sorted(found) != sorted(names):
        raise ExportError(f"model {model}: the TFLite file has signatures {sorted(found)}")
    for name in names:
        runner = interpreter.get_signature_runner(name)
        feeds = {}
        for input_name, detail in runner.get_input_details().items():
            shape = [1 if d < 0 else d for d in detail["shape_signature"]] or [1]
            if detail["dtype"] in (np.bytes_, np.object_):
                feeds[input_name] = np.full(shape, b"", dtype=object)
            else:
                feeds[input_name] = np.zeros(shape, dtype=detail["dtype"])
        try:
            runner(**feeds)
        except Exception as error:
            raise ExportError(f"model {model}: the TFLite {name!r} does not run: {error}") from None
