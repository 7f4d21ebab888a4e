"""Turn in-memory models into artifacts: scikit-learn -> ONNX bytes, Keras -> SavedModel folder.

scikit-learn models get one ONNX input per column, named after the training columns, so SQL
matches model inputs to table columns by name (as BigQuery does for imported ONNX models).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sqlml.errors import ArtifactError, ModelInputError
from sqlml.runtimes.onnx import CLASSES_METADATA_KEY
from sqlml.signature import NUMPY_TYPES

TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
_TEXT_VECTORIZERS = ("CountVectorizer", "TfidfVectorizer", "HashingVectorizer")


def is_sklearn_model(model: object) -> bool:
    return type(model).__module__.startswith("sklearn.") and hasattr(model, "get_params")


def is_keras_model(model: object) -> bool:
    return any(base.__module__.startswith("keras") for base in type(model).__mro__) and hasattr(
        model, "export"
    )


def _steps(model: object) -> list:
    return [step for _, step in model.steps] if hasattr(model, "steps") else [model]


def sklearn_inputs(model: object, inputs: dict[str, str] | list[str] | None) -> dict[str, str]:
    """Input columns and element types: given, or read from what the model was fitted on."""
    if isinstance(inputs, dict):
        return {str(k): v for k, v in inputs.items()}
    names = list(inputs) if inputs is not None else None
    first = _steps(model)[0]
    if type(first).__name__ in _TEXT_VECTORIZERS:
        if not names or len(names) != 1:
            raise ModelInputError(
                "a text model takes one string column: pass inputs={'<column>': 'string'}"
            )
        return {names[0]: "string"}
    if names is None:
        fitted = getattr(model, "feature_names_in_", None)
        if fitted is None:
            raise ModelInputError(
                "the model was fitted without column names: fit it on a DataFrame "
                "or pass inputs=[...] naming its columns"
            )
        names = [str(n) for n in fitted]
    strings = _string_columns(model, names)
    return {name: "string" if name in strings else "float32" for name in names}


def _string_columns(model: object, names: list[str]) -> set[str]:
    """Columns that a fitted encoder (OneHotEncoder, OrdinalEncoder ...) saw as strings: its
    categories are str. They need a string input; every other column is read as float32."""
    first = _steps(model)[0]
    if hasattr(first, "transformers_"):  # a ColumnTransformer: (name, transformer, columns)
        parts = [(transformer, columns) for _, transformer, columns in first.transformers_]
    else:
        parts = [(first, names)]
    found: set[str] = set()
    for transformer, columns in parts:
        if isinstance(transformer, str) or isinstance(columns, str):
            continue  # "drop" / "passthrough", or a column handed over as a 1-D array
        for step in _steps(transformer):
            fitted = getattr(step, "categories_", None)  # one array per column of the step
            for column, categories in zip(columns, fitted if isinstance(fitted, list) else []):
                if isinstance(column, str) and any(isinstance(c, str) for c in categories):
                    found.add(column)
    return found


def _onnx_type(dtype: str):
    from skl2onnx.common import data_types as dt

    types = {
        "float32": dt.FloatTensorType,
        "float64": dt.DoubleTensorType,
        "int64": dt.Int64TensorType,
        "string": dt.StringTensorType,
    }
    if dtype not in types:
        raise ModelInputError(f"unsupported input type {dtype!r} (use one of {sorted(types)})")
    return types[dtype]


def sklearn_to_onnx(model: object, inputs: dict[str, str]) -> bytes:
    """Convert a fitted estimator or Pipeline without ZipMap, one named input per column."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.exceptions import MissingShapeCalculator
    from skl2onnx.common.utils import InvalidInputLengthException

    if hasattr(model, "classes_") and not hasattr(model, "predict_proba"):
        raise ArtifactError(
            f"{type(_steps(model)[-1]).__name__} is a classifier without predict_proba: sqlml "
            "serves class probabilities (predicted_<label>_probs, ML.EVALUATE's log_loss and "
            "roc_auc); wrap it in sklearn's CalibratedClassifierCV, or use an estimator that "
            "has them (LogisticRegression, SVC(probability=True), ...)"
        )
    options: dict = {id(model): {"zipmap": False}} if hasattr(model, "classes_") else {}
    for step in _steps(model):
        if type(step).__name__ in _TEXT_VECTORIZERS:
            # The default en_US locale is missing on many machines; "C" lower-cases the same ASCII.
            options[id(step)] = {"locale": "C"}
    typed = [(name, _onnx_type(dtype)([None, 1])) for name, dtype in inputs.items()]
    try:
        try:
            proto = convert_sklearn(
                model, initial_types=typed, options=options, target_opset=TARGET_OPSET
            )
        except InvalidInputLengthException:
            proto = _convert_with_concat(model, inputs, options)
    except MissingShapeCalculator as error:
        raise ArtifactError(f"scikit-learn model cannot be converted to ONNX: {error}") from None
    except (ValueError, TypeError) as error:
        given = ", ".join(f"{name}: {dtype}" for name, dtype in inputs.items())
        raise ArtifactError(
            f"scikit-learn model cannot be converted to ONNX with inputs ({given}): {error}; "
            "pass inputs={'<column>': 'string' | 'float32' | 'int64', ...} to type them"
        ) from None
    classes = getattr(model, "classes_", None)
    if classes is not None:
        entry = proto.metadata_props.add()
        entry.key = CLASSES_METADATA_KEY
        entry.value = json.dumps([c.item() if isinstance(c, np.generic) else c for c in classes])
    return proto.SerializeToString()


def _convert_with_concat(model: object, inputs: dict[str, str], options: dict):
    """Estimators that take one matrix: convert with a single input, then feed it by a Concat."""
    import onnx
    from skl2onnx import convert_sklearn

    dtypes = set(inputs.values())
    if len(dtypes) != 1:
        raise ModelInputError("columns of mixed types need a Pipeline with a ColumnTransformer")
    dtype = dtypes.pop()
    matrix = "sqlml_features"
    proto = convert_sklearn(
        model,
        initial_types=[(matrix, _onnx_type(dtype)([None, len(inputs)]))],
        options=options,
        target_opset=TARGET_OPSET,
    )
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(NUMPY_TYPES[dtype]))
    graph = proto.graph
    del graph.input[:]
    graph.input.extend(onnx.helper.make_tensor_value_info(n, elem, [None, 1]) for n in inputs)
    graph.node.insert(0, onnx.helper.make_node("Concat", list(inputs), [matrix], axis=1))
    onnx.checker.check_model(proto)
    return proto


def keras_to_saved_model(model: object, folder: str | Path) -> Path:
    """Export a Keras model with its `serving_default` signature into `folder`."""
    target = Path(folder) / "saved_model"
    model.export(str(target), verbose=False)
    return target
