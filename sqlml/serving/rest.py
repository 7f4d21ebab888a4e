"""TensorFlow Serving's REST formats: routes, predict request/response JSON, status, metadata.

Why copy TF Serving exactly: a client written for TF Serving (or for TF Serving loading the
SavedModel sqlml exports) must work unchanged against `sqlml serve`. The conventions kept:

- `instances` (row format) answers `{"predictions": ...}`; `inputs` (columnar) answers
  `{"outputs": ...}`; both in one request is an error.
- A single-input model takes bare values per instance (`{"instances": [1.0, 2.0]}`); several
  inputs need one object per instance whose keys are exactly the input names.
- One output: a bare list. Several: a list of objects (row) or an object of lists (columnar).
- Numbers: DT_FLOAT/DT_DOUBLE take any JSON number and NaN/Infinity; integers must be whole
  JSON numbers; strings must be strings; NULL is refused. float32 outputs are written with the
  shortest decimal that reads back to the same float32, as TF Serving does (0.1, not 0.1000000015).
- Errors are `{"error": "..."}`; each message names the model and the field at fault.

Building numpy arrays straight from the parsed JSON lists (no pandas) keeps the per-request
cost to a few microseconds per input column.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import numpy as np
import orjson

from sqlml.errors import InvalidNameError
from sqlml.names import check_name
from sqlml.online import KEY, PREDICT_METHOD, SERVING_DEFAULT, OnlineSignature, OnlineTensor
from sqlml.signature import NUMPY_TYPES
from sqlml.udf import MISSING_STRING

_NoneType = type(None)
# What a JSON null becomes for a model registered with nulls='nan' (as sqlml.udf does in SQL).
_MISSING = {"float32": float("nan"), "float64": float("nan"), "string": MISSING_STRING}
_ACCEPTED = {
    "float32": frozenset({float, int}),
    "float64": frozenset({float, int}),
    "int64": frozenset({int}),
    "int32": frozenset({int}),
    "bool": frozenset({bool}),
    "string": frozenset({str}),
}
_KINDS = {
    "float32": "fiu",
    "float64": "fiu",
    "int64": "iu",
    "int32": "iu",
    "bool": "b",
    "string": "U",
}
_EXPECTED = {
    "float32": "a number",
    "float64": "a number",
    "int64": "a whole number",
    "int32": "a whole number",
    "bool": "true or false",
    "string": "a string",
}
_JSON_TYPES = {
    float: "number",
    int: "number",
    bool: "boolean",
    str: "string",
    list: "list",
    dict: "object",
    _NoneType: "null",
}

# TF Serving's URL grammar (plus the status and metadata GETs).
_ROUTE = re.compile(
    r"/v1/models/(?P<model>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?::(?P<verb>[A-Za-z]+)|(?P<metadata>/metadata))?"
)


class HttpError(Exception):
    """An error response: HTTP status and the message for `{"error": ...}`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> HttpError:
    return HttpError(400, message)


@dataclass(frozen=True)
class Route:
    """What a URL asks for: `action` is 'predict', 'status' or 'metadata'."""

    model: str
    version: int | None = None
    label: str | None = None
    action: str = "status"

    @property
    def method(self) -> str:
        return "POST" if self.action == "predict" else "GET"

    def describe(self) -> str:
        if self.version is not None:
            return f"{self.model}@{self.version}"
        return f"{self.model}@{self.label}" if self.label else self.model


def parse_route(method: str, target: str) -> Route:
    """The route of a request target, or a 404 (unknown shape, invalid names) / 405."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    match = _ROUTE.fullmatch(path)
    if match is None:
        raise HttpError(404, f"Malformed request: {method} {_short(path)}")
    model = _identifier(match["model"], "model name")
    version = label = None
    if match["version"] is not None:
        raw = unquote(match["version"])
        if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
            raise HttpError(404, f"model {model}: invalid version {_short(raw)!r} in the URL")
        version = int(raw)
    if match["label"] is not None:
        label = _identifier(match["label"], "label")
    if match["metadata"]:
        action = "metadata"
    elif match["verb"] is None:
        action = "status"
    elif match["verb"] == "predict":
        action = "predict"
    else:
        raise HttpError(
            404, f"Malformed request: :{_short(match['verb'])} is not supported (use :predict)"
        )
    route = Route(model, version, label, action)
    if method != route.method:
        raise HttpError(
            405,
            f"{method} is not allowed on {_short(path)} (use {route.method})",
            {"Allow": route.method},
        )
    return route


def _identifier(raw: str, what: str) -> str:
    text = unquote(raw)
    try:
        return check_name(text, what)
    except InvalidNameError:
        raise HttpError(
            404, f"no model matches {what} {_short(text)!r}: names are plain identifiers"
        ) from None


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# -- predict requests ----------------------------------------------------------------------
@dataclass
class PredictRequest:
    """A parsed predict body: the signature asked for and the row or columnar payload."""

    signature_name: str
    row_format: bool
    payload: Any


def parse_predict(body: bytes) -> PredictRequest:
    """The JSON body's top level (as TF Serving checks it, before it looks at the model)."""
    if not body:
        raise bad_request("JSON Parse error: The document is empty")
    try:
        doc = loads(body)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise bad_request(f"JSON Parse error: {error}") from None
    if not isinstance(doc, dict):
        raise bad_request(f"the request body must be a JSON object, got {_json_type(doc)}")
    signature = doc.get("signature_name", SERVING_DEFAULT)
    if not isinstance(signature, str):
        raise bad_request("'signature_name' must be a string")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise bad_request(
            "Not formatted correctly: expecting only one of 'inputs' or 'instances' keys to exist"
        )
    if not (has_instances or has_inputs):
        raise bad_request("Missing 'inputs' or 'instances' key")
    return PredictRequest(
        signature or SERVING_DEFAULT,
        has_instances,
        doc["instances"] if has_instances else doc["inputs"],
    )


@dataclass
class Batch:
    """A request's inputs: numpy arrays in the online shapes, plus the JSON values as sent
    (for the request log) and the optional extra field (the logging key column)."""

    n: int
    arrays: dict[str, np.ndarray]
    values: dict[str, list]
    extra: list | None = None


def decode_inputs(
    request: PredictRequest,
    signature: OnlineSignature,
    model: str,
    *,
    max_instances: int,
    nan_for_null: bool = False,
    extra_field: str | None = None,
) -> Batch:
    """Arrays for each input of `signature`, type-checked; a 400 naming the field otherwise.

    `extra_field` (the logging key column) may ride along with the inputs; it is not scored.
    `nan_for_null`: a model registered with nulls='nan' takes JSON null floats as NaN and
    null strings as ''.
    """
    names = [t.name for t in signature.inputs]
    if extra_field in names:
        extra_field = None
    if request.row_format:
        columns, where = _rows(request.payload, names, model, max_instances, extra_field)
    else:
        columns, where = _columns(request.payload, names, model, max_instances, extra_field)
    n = len(next(iter(columns.values())))
    arrays = {}
    for tensor in signature.inputs:
        arrays[tensor.name] = _array(
            columns[tensor.name], tensor, model, where(tensor.name), nan_for_null
        )
    values = {name: columns[name] for name in names}
    return Batch(n, arrays, values, columns.get(extra_field) if extra_field else None)


def _rows(
    instances: object, names: list[str], model: str, limit: int, extra: str | None
) -> tuple[dict[str, list], Any]:
    if not isinstance(instances, list):
        raise bad_request(f"model {model}: 'instances' must be a list, got {_json_type(instances)}")
    if not instances:
        raise bad_request(f"model {model}: no values in 'instances' array")
    if len(instances) > limit:
        raise bad_request(
            f"model {model}: {len(instances)} instances in one request; the limit is {limit}"
        )
    if type(instances[0]) is not dict:
        if len(names) > 1:
            raise bad_request(
                f"model {model}: instances is a plain list, but the model takes "
                f"{len(names)} inputs ({', '.join(names)}): send one object per instance"
            )
        for i, item in enumerate(instances):
            if type(item) is dict:
                raise bad_request(
                    f"model {model}: instances[{i}] is an object but instances[0] is not"
                )
        return {names[0]: instances}, lambda name: "instances[{}]"
    expected = set(names)
    with_extra = expected | {extra} if extra else expected
    has_extra = False
    for i, item in enumerate(instances):
        if type(item) is not dict:
            raise bad_request(
                f"model {model}: instances[{i}] is a {_json_type(item)} but instances[0] is an "
                "object: send one object per instance"
            )
        keys = item.keys()
        if keys != expected:
            if extra and keys == with_extra:
                has_extra = True
                continue
            raise bad_request(f"model {model}: instances[{i}]: {_field_mismatch(keys, names)}")
    columns = {name: [item[name] for item in instances] for name in names}
    if has_extra:
        columns[extra] = [item.get(extra) for item in instances]
    return columns, lambda name: f"instances[{{}}].{name}"


def _columns(
    inputs: object, names: list[str], model: str, limit: int, extra: str | None
) -> tuple[dict[str, list], Any]:
    if type(inputs) is not dict:
        if len(names) > 1:
            raise bad_request(
                f"model {model}: inputs is a plain value/list, but the model takes "
                f"{len(names)} inputs ({', '.join(names)}): send an object of lists"
            )
        columns = {names[0]: inputs}
        where = lambda name: "inputs[{}]"  # noqa: E731
    else:
        keys = inputs.keys()
        if keys != set(names) and not (extra and keys == set(names) | {extra}):
            raise bad_request(f"model {model}: inputs: {_field_mismatch(keys, names)}")
        columns = dict(inputs)
        where = lambda name: f"inputs.{name}[{{}}]"  # noqa: E731
    lengths = {}
    for name, column in columns.items():
        label = where(name).removesuffix("[{}]")
        if not isinstance(column, list):
            raise bad_request(
                f"model {model}: {label} must be a list (one value per row), "
                f"got {_json_type(column)}"
            )
        lengths[name] = len(column)
    n = lengths[names[0]]
    for name, size in lengths.items():
        if size != n:
            raise bad_request(
                f"model {model}: inputs have different lengths ({names[0]}: {n}, {name}: "
                f"{size}); every input needs one value per row"
            )
    if n == 0:
        raise bad_request(f"model {model}: no values in 'inputs'")
    if n > limit:
        raise bad_request(f"model {model}: {n} rows in one request; the limit is {limit}")
    return columns, where


def _field_mismatch(keys: Any, names: list[str]) -> str:
    missing = [n for n in names if n not in keys]
    unknown = sorted(str(k) for k in keys if k not in names)
    parts = []
    if missing:
        parts.append(f"missing {', '.join(repr(m) for m in missing)}")
    if unknown:
        parts.append(f"unknown {', '.join(repr(_short(u, 40)) for u in unknown[:5])}")
    return f"{'; '.join(parts)} (the inputs are {', '.join(names)})"


def _array(
    values: list, tensor: OnlineTensor, model: str, where: str, nan_for_null: bool
) -> np.ndarray:
    dtype = NUMPY_TYPES[tensor.dtype]
    if tensor.is_scalar:
        accepted = _ACCEPTED[tensor.dtype]
        types = set(map(type, values))
        if not types <= accepted:
            fill = _MISSING.get(tensor.dtype) if nan_for_null else None
            if fill is not None and types <= accepted | {_NoneType}:  # as nulls='nan' in SQL
                values = [fill if v is None else v for v in values]
            else:
                i, value = next((i, v) for i, v in enumerate(values) if type(v) not in accepted)
                raise _type_error(model, where.format(i), tensor, value)
        try:
            return np.array(values, dtype=dtype)
        except (OverflowError, ValueError) as error:
            raise bad_request(f"model {model}: {where.format('*')}: {error}") from None
    try:
        array = np.array(values)
    except ValueError:  # ragged lists
        array = np.array(values, dtype=object)
    expected_rank = len(tensor.shape)
    if array.dtype == object or array.ndim != expected_rank:
        shape = "x".join("?" if d is None else str(d) for d in tensor.shape[1:])
        raise bad_request(
            f"model {model}: {where.format('*')}: each value must be a list of shape [{shape}] "
            f"of {_EXPECTED[tensor.dtype].removeprefix('a ')}s ({tensor.tf_dtype}), without nulls"
        )
    for axis, size in enumerate(tensor.shape[1:], start=1):
        if size is not None and array.shape[axis] != size:
            raise bad_request(
                f"model {model}: {where.format('*')}: lists of {array.shape[axis]} values, "
                f"expected {size}"
            )
    if array.dtype.kind not in _KINDS[tensor.dtype]:
        raise bad_request(
            f"model {model}: {where.format('*')}: expected {_EXPECTED[tensor.dtype]}s "
            f"({tensor.tf_dtype}), got {array.dtype.kind!r} values"
        )
    return array.astype(dtype, copy=False)


def _type_error(model: str, where: str, tensor: OnlineTensor, value: object) -> HttpError:
    if value is None:
        return bad_request(
            f"model {model}: {where} is null: every input needs a value ({tensor.tf_dtype}); "
            "a model registered with nulls='nan' takes null floats as NaN and null strings as ''"
        )
    shown = _short(json.dumps(value, default=str), 40)
    return bad_request(
        f"model {model}: {where}: expected {_EXPECTED[tensor.dtype]} ({tensor.tf_dtype}), "
        f"got {_json_type(value)} {shown}"
    )


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


# -- predict responses -----------------------------------------------------------------------
def encode_predict(
    outputs: dict[str, np.ndarray], signature: OnlineSignature, row_format: bool
) -> bytes:
    """`{"predictions": ...}` or `{"outputs": ...}` from online-shaped output arrays."""
    names = [t.name for t in signature.outputs]
    columns = [json_values(outputs[name]) for name in names]
    if len(columns) == 1:
        body: Any = columns[0]
    elif row_format:
        body = [dict(zip(names, row)) for row in zip(*columns)]
    else:
        body = dict(zip(names, columns))
    return dumps({"predictions" if row_format else "outputs": body})


def loads(body: bytes) -> Any:
    """The request document. orjson parses a 100-row request ~6x faster than the json module;
    the json module reads what orjson refuses (NaN/Infinity tokens, integers beyond 64 bits)
    and words the error for a malformed body."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def dumps(document: object) -> bytes:
    """JSON with NaN/Infinity tokens, as TF Serving writes them.

    orjson writes NaN and Infinity as null, and answers never hold a JSON null otherwise, so a
    `null` in its output sends the document to the json module, which writes the tokens.
    """
    try:
        encoded = orjson.dumps(document)
        if b"null" not in encoded:
            return encoded
    except orjson.JSONEncodeError:  # a type orjson does not write: the json module decides
        pass
    return json.dumps(document, separators=(",", ":"), allow_nan=True).encode()


def json_values(array: np.ndarray) -> list:
    """An output array as JSON-ready Python values (float32 as its shortest decimal)."""
    if array.dtype == np.float32:
        return _float32_list(array)
    if array.dtype == object:
        return _decode_bytes(array.tolist())
    return array.tolist()


def _decode_bytes(values: list) -> list:
    return [
        v.decode("utf-8", "replace")
        if isinstance(v, bytes)
        else _decode_bytes(v)
        if isinstance(v, list)
        else v
        for v in values
    ]


def _float32_list(array: np.ndarray) -> list:
    """float32 values as the float64 of their shortest round-tripping decimal, as TF Serving
    prints them; `str` casts are exact but slow, so big arrays round numerically instead."""
    if array.size <= 32:
        return array.astype(str).astype(np.float64).tolist()
    x = array.astype(np.float64)
    out = x.copy()
    with np.errstate(all="ignore"):
        magnitude = np.floor(np.log10(np.abs(x)))
        todo = np.isfinite(magnitude)
        for digits in (6, 7, 8, 9):  # TF Serving: %g, then max_digits10 when it does not read back
            if not todo.any():
                break
            scale = 10.0 ** (digits - 1 - magnitude)
            rounded = np.round(x * scale) / scale
            ok = todo & (rounded.astype(np.float32) == array)
            out[ok] = rounded[ok]
            todo &= ~ok
    return out.tolist()


# -- status and metadata -----------------------------------------------------------------------
def status_document(versions: list[tuple[int, str | None]]) -> dict:
    """GetModelStatusResponse as JSON: one entry per version, `error` when it failed to load."""
    return {
        "model_version_status": [
            {
                "version": str(version),
                "state": "AVAILABLE" if error is None else "END",
                "status": {
                    "error_code": "OK" if error is None else "UNKNOWN",
                    "error_message": error or "",
                },
            }
            for version, error in versions
        ]
    }


def metadata_document(model: str, version: int, signatures: list[OnlineSignature]) -> dict:
    """GetModelMetadataResponse as JSON, laid out as TF Serving prints it."""
    return {
        "model_spec": {"name": model, "signature_name": "", "version": str(version)},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    s.name: {
                        "inputs": {t.name: _tensor_info(t) for t in s.inputs},
                        "outputs": {t.name: _tensor_info(t) for t in s.outputs},
                        "method_name": PREDICT_METHOD,
                    }
                    for s in signatures
                }
            }
        },
    }


def _tensor_info(tensor: OnlineTensor) -> dict:
    return {
        "dtype": tensor.tf_dtype,
        "tensor_shape": {
            "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in tensor.shape],
            "unknown_rank": False,
        },
        "name": tensor.name,
    }


def key_values(batch: Batch) -> list[str] | None:
    """The `key` input of keyed_prediction, as sent."""
    return batch.values.get(KEY)
