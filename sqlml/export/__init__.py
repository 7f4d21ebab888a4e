"""Export a registered model as a TensorFlow SavedModel or a TFLite file (BigQuery's EXPORT MODEL).

Why a translator of our own: onnx2tf and Hummingbird do not handle (or mistranslate) the
ai.onnx.ml operators scikit-learn models are made of, and wrapping onnxruntime in a
`tf.py_function` does not survive a reload. So `ops` maps each ONNX node to TensorFlow ops,
matching onnxruntime's arithmetic (onnxruntime is the runtime sqlml scores with), `trees` does
the tree ensembles, `saved_model` builds the `tf.Module` with the online signatures of
`sqlml.online`, and `tflite` converts that module.

Everything that can be refused (an unsupported op or attribute, corrupt bytes, a key clash) is
refused before anything is written; the export is built in a temporary sibling of `target`
and renamed into place only once complete, so a failed export leaves `target` as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from sqlml.errors import ArtifactError
from sqlml.signature import Signature

TARGET_FORMATS = ("saved_model", "tflite")


class ExportError(ArtifactError):
    """A model that cannot be exported: an op, attribute or tensor the translator does not map."""


def export_artifact(
    fmt: str,
    data: bytes,
    signature: Signature,
    model: str,
    target: Path,
    target_format: str = "saved_model",
) -> Path:
    """Write the artifact as a SavedModel folder or `.tflite` file at `target`; return `target`.

    `fmt` is the registry format ('onnx' or 'tensorflow', the latter a zipped SavedModel);
    `model` names the model in error messages. An existing `target` is replaced only after the
    new export is complete.
    """
    target = Path(target)
    if target_format not in TARGET_FORMATS:
        raise ExportError(
            f"model {model}: unknown export format {target_format!r} "
            f"(use one of {', '.join(TARGET_FORMATS)})"
        )
    from sqlml.export import saved_model

    if fmt == "onnx":
        builder = saved_model.onnx_builder(data, signature, model)
    elif fmt == "tensorflow":
        builder = saved_model.tensorflow_builder(data, signature, model)
    else:
        raise ExportError(f"model {model}: cannot export artifact format {fmt!r}")

    def write(staging: Path) -> None:
        module = builder()
        if target_format == "saved_model":
            saved_model.save(module, staging, model)
        else:
            from sqlml.export import tflite

            staging.write_bytes(tflite.convert(module, model))

    return _write_atomically(target, write, is_dir=target_format == "saved_model")


def _write_atomically(target: Path, write, *, is_dir: bool) -> Path:
    """Run `write(staging)` on a fresh sibling path, then swap it in for `target`."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.export-", dir=parent))
    try:
        staging = scratch / target.name
        write(staging)
        if not staging.exists():
            raise ExportError(f"export to {target} produced nothing")
        if is_dir and target.is_dir():
            old = scratch / "previous"
            os.replace(target, old)  # a rename: the folder is absent only between two renames
            try:
                os.replace(staging, target)
            except BaseException:
                os.replace(old, target)
                raise
        else:
            os.replace(staging, target)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(scratch)
    return target
