"""`sqlml serve` end to end: real HTTP on 127.0.0.1, real DuckDB files, real onnxruntime.

The REST examples are TensorFlow Serving's documented ones (the half_plus_three model, row
and columnar formats, status and metadata layouts), sent with `requests` as TF's docs do, so a
plain TF Serving client is known to work unchanged.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import requests
from conftest import PROBA_TOL
from onnx import TensorProto, helper

import sqlml
from sqlml.errors import SqlmlError
from sqlml.serving import Server
from sqlml.serving.config import ConfigError

IRIS_CLASSES = ["setosa", "versicolor", "virginica"]
FAST = {"poll_interval": 0.1, "log_flush_seconds": 0.2}


def half_plus(constant: float) -> bytes:
    """TF Serving's half_plus_three toy model (y = 0.5 * x + constant) as an ONNX graph."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    plus = helper.make_tensor("plus", TensorProto.FLOAT, [], [constant])
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "half"], ["t"]),
            helper.make_node("Add", ["t", "plus"], ["y"]),
        ],
        "half_plus",
        [x],
        [y],
        [half, plus],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture(scope="module")
def template(tmp_path_factory, iris_lr, cancer_lr, cancer_gb) -> Path:
    """One database with every model the tests serve; each test works on a copy."""
    path = tmp_path_factory.mktemp("serve") / "template.duckdb"
    with sqlml.connect(path) as db:
        db.register_model("half_plus_three", half_plus(3.0))
        db.register_model("ab", half_plus(3.0))  # version 1: 0.5 x + 3
        db.register_model("ab", half_plus(10.0))  # version 2: 0.5 x + 10
        db.set_alias("ab", "candidate", 2)
        db.register_model("swap", half_plus(3.0))
        db.set_alias("swap", "prod", 1)
        db.register_model("iris", iris_lr, label="species")
        db.register_model("cancer", cancer_lr, label="malignant")
        db.register_model("cancer_gb", cancer_gb, label="malignant")
    return path


@pytest.fixture
def database(template, tmp_path) -> Path:
    path = tmp_path / "serve.duckdb"
    shutil.copy(template, path)
    return path


@pytest.fixture
def serve():
    """Start servers on ephemeral ports; stop them (flushing their logs) at the end."""
    servers: list[Server] = []

    def start(database: Path, config: Path | None = None, **limits) -> Server:
        server = Server(database, port=0, config=config, **{**FAST, **limits}).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def predict(server: Server, model: str, body: object, route: str = "", **kwargs):
    url = f"{server.url}/v1/models/{model}{route}:predict"
    return requests.post(url, json=body, timeout=10, **kwargs)


def wait_for(condition, seconds: float = 10.0, step: float = 0.05):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def rows_of(frame, n: int | None = None) -> list[dict]:
    records = frame.to_dict("records")[:n]
    return [{k: float(v) for k, v in r.items()} for r in records]


def query(path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


# -- TF Serving's documented examples ---------------------------------------------------------
def test_half_plus_three_documented_examples(database, serve):
    server = serve(database)
    response = predict(server, "half_plus_three", {"instances": [1.0, 2.0, 5.0]})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"predictions": [3.5, 4.0, 5.5]}
    assert response.headers["X-Model-Version"] == "1"
    columnar = predict(server, "half_plus_three", {"inputs": [1.0, 2.0, 5.0]})
    assert columnar.json() == {"outputs": [3.5, 4.0, 5.5]}
    named = predict(server, "half_plus_three", {"instances": [{"x": 1.0}, {"x": 2.0}]})
    assert named.json() == {"predictions": [3.5, 4.0]}
    assert predict(server, "half_plus_three", {"inputs": {"x": [5.0]}}).json() == {"outputs": [5.5]}
    status = requests.get(f"{server.url}/v1/models/half_plus_three", timeout=10)
    assert status.json() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    missing = predict(server, "half", {"instances": [1.0, 5.0]})
    assert missing.status_code == 404
    assert missing.headers["Content-Type"] == "application/json"
    assert "Servable not found for request" in missing.json()["error"]
    assert "half" in missing.json()["error"]


def test_row_and_columnar_formats_match_sklearn(database, serve, iris, iris_lr):
    X, _ = iris
    server = serve(database)
    instances = rows_of(X.iloc[::10])
    expected = iris_lr.predict_proba(X.iloc[::10])
    rows = predict(server, "iris", {"instances": instances}).json()["predictions"]
    assert [sorted(r) for r in rows] == [["label", "probabilities"]] * len(instances)
    assert np.abs(np.array([r["probabilities"] for r in rows]) - expected).max() < PROBA_TOL
    assert [r["label"] for r in rows] == list(iris_lr.predict(X.iloc[::10]))
    columns = {name: [r[name] for r in instances] for name in X.columns}
    outputs = predict(server, "iris", {"inputs": columns}).json()["outputs"]
    assert set(outputs) == {"label", "probabilities"}
    assert outputs["label"] == [r["label"] for r in rows]
    assert np.abs(np.array(outputs["probabilities"]) - expected).max() < PROBA_TOL
    # keyed_prediction: a string key in, the same key back beside the outputs
    keyed = [{**r, "key": f"row-{i}"} for i, r in enumerate(instances)]
    body = {"signature_name": "keyed_prediction", "instances": keyed}
    got = predict(server, "iris", body).json()["predictions"]
    assert [r["key"] for r in got] == [f"row-{i}" for i in range(len(instances))]
    assert np.abs(np.array([r["probabilities"] for r in got]) - expected).max() < PROBA_TOL
    body = {"signature_name": "keyed_prediction", "inputs": {**columns, "key": ["a"] * len(rows)}}
    assert predict(server, "iris", body).json()["outputs"]["key"] == ["a"] * len(rows)


def test_metadata_in_tf_serving_layout(database, serve):
    server = serve(database)
    meta = requests.get(f"{server.url}/v1/models/iris/metadata", timeout=10).json()
    assert meta["model_spec"] == {"name": "iris", "signature_name": "", "version": "1"}
    signatures = meta["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "keyed_prediction"}
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["sepal_length_cm"] == {
        "dtype": "DT_FLOAT",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
        "name": "sepal_length_cm",
    }
    probabilities = default["outputs"]["probabilities"]["tensor_shape"]["dim"]
    assert [d["size"] for d in probabilities] == ["-1", "3"]
    assert default["outputs"]["label"]["dtype"] == "DT_STRING"
    assert signatures["keyed_prediction"]["inputs"]["key"]["dtype"] == "DT_STRING"
    pinned = requests.get(f"{server.url}/v1/models/ab/versions/1/metadata", timeout=10).json()
    assert pinned["model_spec"]["version"] == "1"
    labeled = requests.get(f"{server.url}/v1/models/ab/labels/candidate/metadata", timeout=10)
    assert labeled.json()["model_spec"]["version"] == "2"


def test_versions_labels_and_status(database, serve):
    server = serve(database)
    status = requests.get(f"{server.url}/v1/models/ab", timeout=10).json()
    assert [s["version"] for s in status["model_version_status"]] == ["2", "1"]
    one = requests.get(f"{server.url}/v1/models/ab/versions/1", timeout=10).json()
    assert [s["version"] for s in one["model_version_status"]] == ["1"]
    label = requests.get(f"{server.url}/v1/models/ab/labels/candidate", timeout=10).json()
    assert [s["version"] for s in label["model_version_status"]] == ["2"]
    body = {"instances": [2.0]}
    assert predict(server, "ab", body).json() == {"predictions": [11.0]}  # latest (v2)
    assert predict(server, "ab", body, "/versions/1").json() == {"predictions": [4.0]}
    assert predict(server, "ab", body, "/labels/candidate").json() == {"predictions": [11.0]}
    for route, fragment in [
        ("/versions/7", "has no version 7 (versions: [1, 2])"),
        ("/labels/prod", "has no label 'prod' (labels: ['candidate'])"),
    ]:
        response = predict(server, "ab", body, route)
        assert response.status_code == 404
        assert fragment in response.json()["error"]
        status = requests.get(f"{server.url}/v1/models/ab{route}", timeout=10)
        assert status.status_code == 404


# -- bad input: the right error, and the server stays healthy ----------------------------------
IRIS_ROW = {
    "sepal_length_cm": 5.1,
    "sepal_width_cm": 3.5,
    "petal_length_cm": 1.4,
    "petal_width_cm": 0.2,
}
HP = "half_plus_three"


def _json(document: object) -> bytes:
    return json.dumps(document).encode()


def _without(row: dict, name: str) -> dict:
    return {k: v for k, v in row.items() if k != name}


NESTED = b'{"instances": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
KEYED_INT = _json({"signature_name": "keyed_prediction", "instances": [{"x": 1.0, "key": 7}]})
RAGGED = {**{k: [v] for k, v in IRIS_ROW.items()}, "sepal_length_cm": [1.0, 2.0]}
BAD_REQUESTS = [  # (model, body, status, part of the error message)
    (HP, b"{not json", 400, "JSON Parse error"),
    (HP, b"", 400, "document is empty"),
    (HP, b"[1.0, 2.0]", 400, "must be a JSON object"),
    (HP, b'{"instances": [1.0], "inputs": [1.0]}', 400, "only one of"),
    (HP, b'{"instancez": [1.0]}', 400, "Missing 'inputs' or 'instances' key"),
    (HP, b'{"instances": []}', 400, "no values"),
    (HP, b'{"instances": {"x": 1.0}}', 400, "'instances' must be a list"),
    (HP, b'{"instances": [[1.0]]}', 400, "instances[0]: expected a number"),
    (HP, b'{"instances": [1.0, "2"]}', 400, "instances[1]: expected a number (DT_FLOAT), got"),
    (HP, b'{"instances": [true]}', 400, "got boolean"),
    (HP, b'{"instances": [1.0, null]}', 400, "instances[1] is null"),
    (HP, b'{"instances": [1' + b"0" * 400 + b"]}", 400, "half_plus_three@1"),
    (HP, NESTED, 400, "JSON Parse error"),
    (HP, b'{"instances": [1], "signature_name": "it"}', 400, "unknown signature_name 'it'"),
    (HP, b'{"instances": [1.0], "signature_name": 3}', 400, "'signature_name' must be a string"),
    (HP, KEYED_INT, 400, "instances[0].key: expected a string (DT_STRING)"),
    (HP, b'{"inputs": {"x": 1.0}}', 400, "inputs.x must be a list"),
    ("iris", _json({"instances": [IRIS_ROW, {**IRIS_ROW, "sepal_width_cm": "wide"}]}), 400,
     "instances[1].sepal_width_cm: expected a number"),
    ("iris", _json({"instances": [_without(IRIS_ROW, "petal_width_cm")]}), 400,
     "missing 'petal_width_cm'"),
    ("iris", _json({"instances": [{**IRIS_ROW, "colour": "blue"}]}), 400, "unknown 'colour'"),
    ("iris", _json({"instances": [[5.1, 3.5, 1.4, 0.2]]}), 400,
     "plain list, but the model takes 4 inputs"),
    ("iris", _json({"inputs": RAGGED}), 400, "different lengths"),
    ("iris", _json({"instances": [IRIS_ROW, [1.0]]}), 400, "instances[1] is a list"),
    ("iris", _json({"instances": [IRIS_ROW] * 51}), 400,
     "51 instances in one request; the limit is 50"),
    ("nope", b'{"instances": [1.0]}', 404, "no model 'nope' is registered"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "body", "status", "fragment"), BAD_REQUESTS)
def test_bad_request_gets_the_right_error(database, serve, model, body, status, fragment):
    server = serve(database, max_instances=50)
    with requests.Session() as session:  # the same keep-alive connection before and after
        url = f"{server.url}/v1/models/{model}:predict"
        response = session.post(url, data=body, headers={"Content-Type": "application/json"})
        assert response.status_code == status, response.text
        assert fragment in response.json()["error"]
        good = session.post(
            f"{server.url}/v1/models/half_plus_three:predict", json={"instances": [1.0]}
        )
        assert good.json() == {"predictions": [3.5]}


def test_nulls_become_nan_for_models_registered_with_nulls_nan(tmp_path, serve):
    path = tmp_path / "nan.duckdb"
    with sqlml.connect(path) as db:
        db.register_model("hp", half_plus(3.0), nulls="nan")
    server = serve(path)
    assert predict(server, "hp", {"instances": [1.0, None]}).text == '{"predictions":[3.5,NaN]}'


def test_null_strings_are_the_empty_category_under_nulls_nan(tmp_path, serve, text_model):
    path = tmp_path / "text.duckdb"
    with sqlml.connect(path) as db:
        db.register_model("reviews", text_model, inputs={"review": "string"}, nulls="nan")
    server = serve(path)
    answer = predict(server, "reviews", {"instances": [None, "great value"]}).json()
    expected = text_model.predict_proba(["", "great value"])
    got = [p["probabilities"] for p in answer["predictions"]]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_nan_and_infinity_tokens_and_big_integers_are_read_as_tf_serving_reads_them(
    database, serve
):
    """The fast JSON parser refuses these tokens; the server still reads them (json module)."""
    server = serve(database)
    url = f"{server.url}/v1/models/half_plus_three:predict"
    body = '{"instances": [NaN, Infinity, -Infinity, 2.0], "pad": 123456789012345678901234567890}'
    response = requests.post(url, data=body, timeout=10)
    assert response.status_code == 200, response.text
    assert response.text == '{"predictions":[NaN,Infinity,-Infinity,4.0]}'
    broken = requests.post(url, data='{"instances": [1.0,', timeout=10)
    assert broken.status_code == 400 and "JSON Parse error" in broken.json()["error"]


def test_methods_routes_and_injection_in_the_url(database, serve):
    server = serve(database)
    before = query(database, "SELECT count(*) FROM sqlml.model_versions")
    base = f"{server.url}/v1/models"
    got = requests.get(f"{base}/half_plus_three:predict", timeout=10)
    assert (got.status_code, got.headers["Allow"]) == (405, "POST")
    posted = requests.post(f"{base}/half_plus_three", json={}, timeout=10)
    assert (posted.status_code, posted.headers["Allow"]) == (405, "GET")
    assert requests.delete(f"{base}/half_plus_three", timeout=10).status_code == 405
    assert requests.put(f"{base}/half_plus_three:predict", timeout=10).status_code == 405
    body = {"instances": [1.0]}
    for path in [
        "/v1/models/x;DROP%20TABLE%20sqlml.model_versions;--:predict",
        "/v1/models/half_plus_three'%20OR%20'1'='1:predict",
        "/v1/models/../../etc/passwd:predict",
        "/v1/models/%2e%2e%2fsqlml:predict",
        "/v1/models/half_plus_three/versions/1%20OR%201=1:predict",
        "/v1/models/half_plus_three/versions/-1:predict",
        "/v1/models/half_plus_three/labels/x'--:predict",
        "/v1/models/%C3%A9t%C3%A9:predict",
        "/v1/models/" + "a" * 5000 + ":predict",
        "/v1/models/half_plus_three:classify",
        "/v1/models/half_plus_three:predict/extra",
        "/v2/models/half_plus_three:predict",
        "/",
    ]:
        response = requests.post(server.url + path, json=body, timeout=10)
        assert response.status_code in (400, 404), (path, response.status_code)
        assert "error" in response.json()
    assert predict(server, "HALF_PLUS_THREE", body).json() == {"predictions": [3.5]}
    server.stop()
    assert query(database, "SELECT count(*) FROM sqlml.model_versions") == before


# -- limits -----------------------------------------------------------------------------------
def raw_request(server: Server, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=5)
    sock.sendall(head.encode() + b"\r\n\r\n" + body)
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_body_too_large_is_refused_before_it_is_read(database, serve):
    server = serve(database, max_body_bytes=1000)
    head = (
        "POST /v1/models/half_plus_three:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000"
    )
    sock = raw_request(server, head)  # no body is ever sent: the answer cannot wait for it
    reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"exceeds the limit of 1000" in reply
    assert b"Connection: close" in reply
    expect = raw_request(server, head + "\r\nExpect: 100-continue")
    assert read_all(expect).startswith(b"HTTP/1.1 413 ")  # not "100 Continue"
    big = predict(server, "half_plus_three", {"instances": [1.0] * 400})
    assert big.status_code == 413
    assert predict(server, "half_plus_three", {"instances": [1.0]}).status_code == 200


def test_stalled_client_is_dropped_and_does_not_block_others(database, serve):
    server = serve(database, timeout=1.0)
    head = "POST /v1/models/half_plus_three:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100"
    stalled = raw_request(server, head, b'{"instances": [1.0')  # 18 of 100 bytes, then silence
    started = time.monotonic()
    with requests.Session() as session:
        for _ in range(20):
            response = session.post(
                f"{server.url}/v1/models/half_plus_three:predict", json={"instances": [2.0]}
            )
            assert response.json() == {"predictions": [4.0]}
    assert time.monotonic() - started < 1.0  # served while the other client stalls
    reply = read_all(stalled)  # the server gives up on it after `timeout`
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 4.0
    assert predict(server, "half_plus_three", {"instances": [1.0]}).status_code == 200


def test_connection_cap_and_keep_alive(database, serve):
    server = serve(database, max_connections=2)
    with requests.Session() as session:
        url = f"{server.url}/v1/models/half_plus_three:predict"
        first = session.post(url, json={"instances": [1.0]})
        assert "close" not in first.headers.get("Connection", "")
        # a keep-alive client uses one connection for many requests
        assert len(server._httpd._connections) == 1
        for _ in range(5):
            assert session.post(url, json={"instances": [1.0]}).status_code == 200
        assert len(server._httpd._connections) == 1
        idle = socket.create_connection((server.host, server.port))
        wait_for(lambda: len(server._httpd._connections) == 2)
        third = socket.create_connection((server.host, server.port), timeout=5)
        assert read_all(third).startswith(b"HTTP/1.1 503 ")
        idle.close()
        wait_for(lambda: len(server._httpd._connections) == 1)
        assert session.post(url, json={"instances": [1.0]}).status_code == 200


# -- hot swap -----------------------------------------------------------------------------------
WRITER = textwrap.dedent(
    """
    import sys, time
    import duckdb, sqlml
    path, artifact, code = sys.argv[1:]
    deadline = time.monotonic() + 30
    while True:  # the server opens the file for a few ms now and then: wait for our turn
        try:
            db = sqlml.connect(path)
            break
        except duckdb.Error as error:
            if "lock" not in str(error).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    with db:
        exec(code)
    """
)
SWAP = """
version = db.register_model("swap", artifact)
db.set_alias("swap", "prod", version.version)
"""


def write_from_another_process(database: Path, code: str, artifact: Path | str = "") -> None:
    """Run `code` (with `db` and `artifact`) in another process, as a data scientist would."""
    command = [sys.executable, "-c", WRITER, str(database), str(artifact), code]
    subprocess.run(command, check=True, timeout=60)


def test_hot_swap_under_load_has_no_failed_request(database, serve, tmp_path):
    artifact = tmp_path / "v2.onnx"
    artifact.write_bytes(half_plus(10.0))
    server = serve(database)
    routes = [
        f"{server.url}/v1/models/swap:predict",
        f"{server.url}/v1/models/swap/labels/prod:predict",
    ]
    results: list[list[tuple]] = [[] for _ in range(4)]
    stop = threading.Event()

    def client(i: int) -> None:
        with requests.Session() as session:
            while not stop.is_set() and len(results[i]) < 2000:
                try:
                    r = session.post(routes[i % 2], json={"instances": [2.0]}, timeout=10)
                    results[i].append((r.status_code, r.json(), r.headers.get("X-Model-Version")))
                except Exception as error:  # noqa: BLE001 - recorded as a failure
                    results[i].append((None, repr(error), None))
                time.sleep(0.003)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: all(len(r) >= 20 for r in results))
        write_from_another_process(database, SWAP, artifact)
        wait_for(lambda: all(r[-1][2] == "2" for r in results), seconds=20)
        counts = [len(r) for r in results]
        wait_for(lambda: all(len(r) >= c + 20 for r, c in zip(results, counts)))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    v1, v2 = {"predictions": [4.0]}, {"predictions": [11.0]}
    for calls in results:
        assert all(status == 200 for status, _, _ in calls), calls
        bodies = [body for _, body, _ in calls]
        assert set(map(json.dumps, bodies)) == {json.dumps(v1), json.dumps(v2)}
        switched = bodies.index(v2)
        assert bodies[:switched] == [v1] * switched  # v1, then v2 for good: one atomic swap
        assert bodies[switched:] == [v2] * (len(bodies) - switched)
        assert {v for _, body, v in calls if body == v2} == {"2"}


# -- traffic config -------------------------------------------------------------------------------
def write_config(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_weighted_split_and_pinned_routes_bypass_it(database, serve, tmp_path):
    config = write_config(
        tmp_path / "serve.yaml",
        """
        models:
          ab:
            traffic:
              - {version: 1, weight: 70}
              - {alias: candidate, weight: 30}
        """,
    )
    server = serve(database, config)
    versions = []
    with requests.Session() as session:
        url = f"{server.url}/v1/models/ab:predict"
        for _ in range(1000):
            response = session.post(url, json={"instances": [2.0]})
            version = response.headers["X-Model-Version"]
            assert response.json() == {"predictions": [4.0 if version == "1" else 11.0]}
            versions.append(version)
        pinned = {
            session.post(
                f"{server.url}/v1/models/ab/versions/1:predict", json={"instances": [2.0]}
            ).headers["X-Model-Version"]
            for _ in range(20)
        }
        labeled = {
            session.post(
                f"{server.url}/v1/models/ab/labels/candidate:predict", json={"instances": [2.0]}
            ).headers["X-Model-Version"]
            for _ in range(20)
        }
    share = versions.count("1")
    sd = (1000 * 0.7 * 0.3) ** 0.5
    assert abs(share - 700) < 5 * sd, share  # binomial(1000, 0.7): 700 +- 72
    assert versions.count("2") == 1000 - share
    assert (pinned, labeled) == ({"1"}, {"2"})


def test_config_changes_apply_without_restart_and_bad_ones_are_rejected(
    database, serve, tmp_path, caplog
):
    config = write_config(
        tmp_path / "serve.yaml", "models:\n  ab:\n    traffic: [{version: 1, weight: 1}]\n"
    )
    server = serve(database, config)

    def served() -> str:
        return predict(server, "ab", {"instances": [2.0]}).headers["X-Model-Version"]

    assert {served() for _ in range(10)} == {"1"}
    write_config(config, "models:\n  ab:\n    traffic: [{alias: candidate, weight: 1}]\n")
    wait_for(lambda: served() == "2")
    caplog.set_level(logging.INFO, logger="sqlml.serve")
    write_config(config, "models:\n  ab:\n    traffic: [{version: 1, weight: -3}]\n")
    wait_for(lambda: "models.ab.traffic[0].weight: must be a positive number" in caplog.text)
    write_config(config, "models:\n  ab:\n    traffic: [{alias: prod, weight: 1}]\n")
    wait_for(lambda: "models.ab.traffic[0]: model ab has no alias 'prod'" in caplog.text)
    write_config(config, "models:\n  ab:\n    trafic: []\n")
    wait_for(lambda: "models.ab.trafic: unknown field" in caplog.text)
    write_config(config, "models: [\n")
    wait_for(lambda: "not valid YAML" in caplog.text)
    assert "previous config stays in force" in caplog.text
    assert {served() for _ in range(20)} == {"2"}  # still the last good config
    write_config(config, "models:\n  ab:\n    traffic: [{version: 1, weight: 1}]\n")
    wait_for(lambda: served() == "1")  # a good config after bad ones applies again


AB = "models:\n  ab:\n"
BAD_CONFIGS = [  # (config text, part of the error message)
    (AB + "    traffic: [{version: 9, weight: 1}]", "models.ab.traffic[0]: model ab has no"),
    (AB + "    traffic: [{version: 1, alias: candidate, weight: 1}]",
     "models.ab.traffic[0]: give version or alias"),
    ("models:\n  nope:\n    traffic: []", "models.nope: no model 'nope' is registered"),
    (AB + "    shadow: other@1", "models.ab.shadow: unknown model 'other'"),
    (AB + "    logging: {sample_rate: 2}", "models.ab.logging.sample_rate: must be a number in"),
    ("models:\n  'x;drop':\n    traffic: []", "models.x;drop: invalid model name"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "fragment"), BAD_CONFIGS)
def test_invalid_config_at_start_names_the_field(database, tmp_path, text, fragment):
    config = write_config(tmp_path / "serve.yaml", text)
    with pytest.raises(ConfigError) as error:
        Server(database, port=0, config=config).start()
    assert fragment in str(error.value)


def test_invalid_limits_are_refused(database):
    with pytest.raises(ConfigError, match="max_instances must be a positive integer"):
        Server(database, port=0, max_instances=0)
    with pytest.raises(ConfigError, match="unknown server option"):
        Server(database, port=0, max_rows=3)
    with pytest.raises(SqlmlError, match="does not exist"):
        Server(database.parent / "missing.duckdb", port=0)


# -- request log and shadow ------------------------------------------------------------------------
def test_request_log_rows_rate_and_monitor(database, serve, tmp_path, iris, iris_lr):
    X, y = iris
    config = write_config(
        tmp_path / "serve.yaml",
        "models:\n  iris:\n    logging: {sample_rate: 0.3, key_column: flower}\n",
    )
    server = serve(database, config)
    rows = rows_of(X)
    for start in range(0, len(rows), 30):
        batch = [{**r, "flower": i} for i, r in enumerate(rows[start : start + 30], start)]
        assert predict(server, "iris", {"instances": batch}).status_code == 200
    server.stop()  # flushes the log
    logged = query(
        database,
        "SELECT key, inputs, outputs, ground_truth, version FROM sqlml.prediction_log "
        "WHERE model = 'iris' ORDER BY key::INT",
    )
    sd = (150 * 0.3 * 0.7) ** 0.5
    assert abs(len(logged) - 45) < 5 * sd, len(logged)
    probabilities = iris_lr.predict_proba(X)
    for key, inputs, outputs, truth, version in logged:
        i = int(key)
        assert json.loads(inputs) == rows[i]
        out = json.loads(outputs)
        assert np.abs(np.array(out["probabilities"]) - probabilities[i]).max() < PROBA_TOL
        assert out["predicted_species"] == out["label"] == iris_lr.predict(X.iloc[[i]])[0]
        assert [p["label"] for p in out["predicted_species_probs"]] == IRIS_CLASSES
        assert (truth, version) == (None, 1)
    # ground truth lands by key; ML.MONITOR evaluates the server's rows
    with sqlml.connect(database) as db:
        truth = pd.DataFrame(
            {"flower": np.arange(len(y)), "species": y.map(dict(enumerate(IRIS_CLASSES)))}
        )
        db.con.register("truth", truth)
        db.sql(
            "UPDATE sqlml.prediction_log SET ground_truth = to_json(t.species) FROM truth t "
            "WHERE prediction_log.key = CAST(t.flower AS VARCHAR)"
        )
        report = db.sql("SELECT * FROM ML.MONITOR(MODEL iris)").df()
        assert report[report.window == "all"]["labeled_rows"].tolist() == [len(logged)]
        # rows written by ML.PREDICT's own logging have the same JSON fields
        db.log_predictions("iris", 1.0, key="flower")
        db.con.register("flowers", X.assign(flower=np.arange(len(X)) + 1000))
        db.sql("CREATE TABLE scored AS SELECT * FROM ML.PREDICT(MODEL iris, TABLE flowers)")
        sql_row = db.sql(
            "SELECT inputs, outputs FROM sqlml.prediction_log WHERE key = '1000'"
        ).fetchall()
    assert set(json.loads(sql_row[0][0])) == set(json.loads(logged[0][1]))
    assert set(json.loads(sql_row[0][1])) == set(json.loads(logged[0][2]))


def test_log_falls_back_to_database_settings_and_keyed_key(database, serve):
    with sqlml.connect(database) as db:
        db.log_predictions("half_plus_three", 1.0, key="id")
    server = serve(database)
    body = {"signature_name": "keyed_prediction", "instances": [{"x": 1.0, "key": "k1"}]}
    assert predict(server, "half_plus_three", body).json() == {
        "predictions": [{"y": 3.5, "key": "k1"}]
    }
    assert predict(server, "half_plus_three", {"instances": [{"x": 2.0, "id": 7}]}).json() == {
        "predictions": [4.0]
    }
    assert predict(server, "half_plus_three", {"instances": [5.0]}).status_code == 200
    wait_for(lambda: server.requestlog.written == 3)
    server.stop()
    logged = query(
        database,
        "SELECT key, inputs::VARCHAR, outputs::VARCHAR FROM sqlml.prediction_log "
        "ORDER BY logged_at, key",
    )
    assert [(key, json.loads(i), json.loads(o)) for key, i, o in logged] == [
        ("k1", {"x": 1.0}, {"y": 3.5}),
        ("7", {"x": 2.0}, {"y": 4.0}),
        (None, {"x": 5.0}, {"y": 5.5}),
    ]


def test_shadow_is_scored_and_logged_never_returned(
    database, serve, tmp_path, cancer, cancer_lr, cancer_gb
):
    X, _ = cancer
    config = write_config(
        tmp_path / "serve.yaml",
        """
        models:
          cancer:
            shadow: {model: cancer_gb, version: 1}
            logging: {sample_rate: 1, key_column: patient}
          iris:
            shadow: cancer_gb@1
        """,
    )
    server = serve(database, config)
    instances = [{**r, "patient": i} for i, r in enumerate(rows_of(X, 25))]
    response = predict(server, "cancer", {"instances": instances})
    got = np.array([r["probabilities"] for r in response.json()["predictions"]])
    assert np.abs(got - cancer_lr.predict_proba(X.iloc[:25])).max() < PROBA_TOL  # the primary's
    # a shadow that cannot score these inputs fails in the background only
    for _ in range(3):
        assert predict(server, "iris", {"instances": [IRIS_ROW]}).status_code == 200
    wait_for(lambda: server.shadow.scored == 1 and server.shadow.failed == 3)
    server.stop()
    logged = query(
        database,
        "SELECT model, version, key, outputs FROM sqlml.prediction_log ORDER BY model, key::INT",
    )
    shadow = [row for row in logged if row[0] == "cancer_gb"]
    primary = [row for row in logged if row[0] == "cancer"]
    assert [row[2] for row in shadow] == [row[2] for row in primary] == [str(i) for i in range(25)]
    shadow_probs = np.array([json.loads(row[3])["probabilities"] for row in shadow])
    assert np.abs(shadow_probs - cancer_gb.predict_proba(X.iloc[:25])).max() < PROBA_TOL


LOCKER = textwrap.dedent(
    """
    import sys, duckdb
    con = duckdb.connect(sys.argv[1])
    # a change the server sees (the file changed) but cannot read while we hold the lock
    con.execute("INSERT INTO sqlml.model_aliases VALUES ('half_plus_three', 'held', 1, now())")
    print("locked", flush=True)
    sys.stdin.read()
    con.close()
    """
)


def test_another_process_holding_the_database_delays_catalog_and_log(database, serve, caplog):
    with sqlml.connect(database) as db:
        db.log_predictions("half_plus_three", 1.0, key="id")
    server = serve(database, log_max_rows=5)
    caplog.set_level(logging.WARNING, logger="sqlml.serve")
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout.readline().strip() == "locked"
        for i in range(8):
            body = {"instances": [{"x": float(i), "id": i}]}
            assert predict(server, "half_plus_three", body).status_code == 200  # serving goes on
        wait_for(lambda: "rows wait for the next flush" in caplog.text)
        wait_for(lambda: "is in use" in caplog.text and "retrying at the next poll" in caplog.text)
        held = predict(server, "half_plus_three", {"instances": [1.0]}, "/labels/held")
        assert held.status_code == 404  # not read yet
        assert (
            server.requestlog.written,
            server.requestlog.pending,
            server.requestlog.dropped,
        ) == (0, 5, 3)
    finally:
        locker.communicate("", timeout=10)
    wait_for(lambda: server.requestlog.written == 5)
    held = wait_for(
        lambda: predict(server, "half_plus_three", {"instances": [1.0]}, "/labels/held")
    )
    assert held.json() == {"predictions": [3.5]}  # read at a later poll
    server.stop()
    logged = query(database, "SELECT key FROM sqlml.prediction_log ORDER BY logged_at")
    assert logged == [(str(i),) for i in range(5)] + [(None,)]  # 5 kept, 3 dropped, + "held"


def test_tampered_artifact_is_never_served(database, serve, tmp_path):
    (tmp_path / "v2.onnx").write_bytes(half_plus(20.0))
    with sqlml.connect(database) as db:  # version 2 of ab: bytes changed after registration
        db.sql(
            "UPDATE sqlml.artifacts SET data = 'not a model'::BLOB WHERE sha256 = (SELECT sha256 "
            "FROM sqlml.model_versions WHERE model = 'ab' AND version = 2)"
        )
    server = serve(database)
    body = {"instances": [2.0]}
    for route in ("", "/versions/2", "/labels/candidate"):
        response = predict(server, "ab", body, route)
        assert response.status_code == 503
        assert "sha256 mismatch" in response.json()["error"]
    assert predict(server, "ab", body, "/versions/1").json() == {"predictions": [4.0]}
    status = requests.get(f"{server.url}/v1/models/ab", timeout=10).json()["model_version_status"]
    assert [(s["version"], s["state"], s["status"]["error_code"]) for s in status] == [
        ("2", "END", "UNKNOWN"),
        ("1", "AVAILABLE", "OK"),
    ]
    assert "sha256 mismatch" in status[0]["status"]["error_message"]
    # a new latest version that fails to load: the default route keeps the previous one
    write_from_another_process(
        database,
        "db.register_model('swap', artifact)\n"
        "db.sql(\"UPDATE sqlml.artifacts SET data = 'x'::BLOB WHERE sha256 = (SELECT sha256 "
        "FROM sqlml.model_versions WHERE model = 'swap' AND version = 2)\")",
        tmp_path / "v2.onnx",
    )

    def states() -> list[str]:
        status = requests.get(f"{server.url}/v1/models/swap", timeout=10).json()
        return [s["state"] for s in status["model_version_status"]]

    assert wait_for(lambda: states() == ["END", "AVAILABLE"])
    response = predict(server, "swap", body)
    assert (response.json(), response.headers["X-Model-Version"]) == ({"predictions": [4.0]}, "1")


def test_tensorflow_models_served_through_onnx_or_tensorflow(tmp_path, serve, cancer, caplog):
    keras = pytest.importorskip("keras")
    X, y = cancer
    columns = ["mean_radius", "mean_texture", "worst_area"]
    keras.utils.set_random_seed(0)
    inputs = {c: keras.Input(shape=(1,), name=c) for c in columns}
    x = keras.layers.Dense(4, activation="relu")(keras.layers.Concatenate()(list(inputs.values())))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    path = tmp_path / "keras.duckdb"
    with sqlml.connect(path) as db:
        db.register_model("as_onnx", model, label="malignant", classes=[0, 1])
        db.register_model("as_tf", model, label="malignant", classes=[0, 1], engine="runtime")
    caplog.set_level(logging.INFO, logger="sqlml.serve")
    server = serve(path)
    assert "loaded model as_onnx@1 (onnx" in caplog.text  # the ONNX form made at registration
    assert "loaded model as_tf@1 (tensorflow" in caplog.text  # none: TensorFlow itself
    instances = rows_of(X[columns], 20)
    expected = model.predict({c: X[[c]].to_numpy()[:20] for c in columns}, verbose=0).ravel()
    for name in ("as_onnx", "as_tf"):
        got = predict(server, name, {"instances": instances}).json()["predictions"]
        assert np.abs(np.array(got) - expected).max() < 1e-5  # one output: a bare list


RUNNER = textwrap.dedent(
    """
    import sys
    from sqlml.serving import run_server
    run_server(sys.argv[1], port=int(sys.argv[2]), poll_interval=0.1)
    """
)


def test_run_server_blocks_and_stops_cleanly_on_ctrl_c(database):
    with sqlml.connect(database) as db:
        db.log_predictions("half_plus_three", 1.0, key="id")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(database), str(port)], stderr=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/models/half_plus_three"

        def up() -> bool:
            try:
                return requests.get(url, timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(up, seconds=30, step=0.1)
        response = requests.post(
            url + ":predict", json={"instances": [{"x": 1.0, "id": 1}]}, timeout=5
        )
        assert response.json() == {"predictions": [3.5]}
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "1 log rows written" in stderr
    assert query(database, "SELECT key FROM sqlml.prediction_log") == [("1",)]
