"""Where an export may be written: checked before any model is loaded or translated.

sqlml writes to the local filesystem only; a `gs://` URI (BigQuery's EXPORT MODEL) is refused
with the way to get there (export locally, then copy with gsutil).
"""

from __future__ import annotations

from pathlib import Path

from sqlml.errors import SqlmlError

FORMATS = ("saved_model", "tflite")


def export_target(model: str, uri: str | Path, fmt: str) -> Path:
    """The path to write: a SavedModel directory, or a `.tflite` file."""
    if not isinstance(fmt, str) or fmt.lower() not in FORMATS:
        raise SqlmlError(
            f"model {model}: unknown export format {fmt!r} (use one of {', '.join(FORMATS)})"
        )
    text = str(uri).strip() if uri is not None else ""
    if not text or "\x00" in text:
        raise SqlmlError(f"model {model}: export uri must be a non-empty local path")
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    elif "://" in text:
        raise SqlmlError(
            f"model {model}: sqlml exports to a local path, not {text!r}; export to a folder, "
            "then copy it (e.g. gsutil cp -r DIR gs://bucket/path)"
        )
    path = Path(text).expanduser()
    is_tflite_file = path.suffix.lower() == ".tflite"
    if fmt.lower() == "tflite" and not is_tflite_file:
        raise SqlmlError(
            f"model {model}: a TFLite export is one file: give a uri ending in .tflite"
        )
    if fmt.lower() == "saved_model" and is_tflite_file:
        raise SqlmlError(
            f"model {model}: {text!r} names a .tflite file; add format='tflite', or give a folder "
            "for the SavedModel"
        )
    if path.exists() and (path.is_dir() != (fmt.lower() == "saved_model")):
        kind = "folder" if path.is_dir() else "file"
        raise SqlmlError(f"model {model}: {text!r} is an existing {kind}; it cannot be replaced")
    if path.is_dir() and any(path.iterdir()) and not (path / "saved_model.pb").is_file():
        raise SqlmlError(
            f"model {model}: {text!r} is a folder with other files (not a SavedModel); "
            "export into an empty or new folder"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
