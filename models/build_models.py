"""Rebuild the example model artifacts in this folder (ONNX files and a SavedModel folder).

    python models/build_models.py

Deterministic data and seeds (sqlml.demo); no pickles: ONNX and SavedModel only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlml import convert, demo

HERE = Path(__file__).resolve().parent


def main(target: Path = HERE) -> list[Path]:
    patients = demo.cancer_frame()
    complaints = demo.complaints_frame(seed=demo.SEED + 1)
    trees = demo.train_cancer_classifier(patients)
    text = demo.train_complaint_classifier(complaints)
    columns = {c: "float32" for c in demo.feature_columns(patients)}
    written = [target / "cancer_trees.onnx", target / "complaints_sentiment.onnx"]
    written[0].write_bytes(convert.sklearn_to_onnx(trees, columns))
    written[1].write_bytes(convert.sklearn_to_onnx(text, {"text": "string"}))
    saved_model = target / "cancer_nn"
    shutil.rmtree(saved_model, ignore_errors=True)
    demo.export_keras(demo.train_keras_classifier(patients), saved_model)
    written.append(saved_model)
    for path in written:
        files = list(path.rglob("*")) if path.is_dir() else [path]
        print(f"wrote {path} ({sum(f.stat().st_size for f in files) // 1024} KiB)")
    return written


if __name__ == "__main__":
    main()
