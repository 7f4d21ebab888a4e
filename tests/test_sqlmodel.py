"""Models compiled to SQL: parity with onnxruntime, macros in the database file (usable without
Python: a fresh `duckdb` process, the DuckDB shell), ML.PREDICT's engine choice, and BigQuery."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import onnx
import pandas as pd
import pytest
import sqlglot
from onnx import TensorProto, helper
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sqlglot import exp

import sqlml
from sqlml.cli import main
from sqlml.errors import SqlCompileError, SqlmlError
from sqlml.rewrite.duckdb import rewrite_sql
from sqlml.runtimes.onnx import OnnxRuntime
from sqlml.sqlmodel import MAX_TREE_NODES, NotCompilable, check_against_runtime, compile_onnx
from sqlml.sqltext import parse
from sqlml.udf import ModelFunction

PROB_TOL = 1e-6  # compiled SQL vs onnxruntime, probabilities
GOLDEN = Path(__file__).parent / "golden" / "sqlmodel"
SPECIES = {0: "setosa", 1: "versicolor", 2: "virginica"}


def logistic(scaler):
    return lambda: make_pipeline(scaler(), LogisticRegression(max_iter=3000))


def trees(kind, **params):
    return lambda: kind(random_state=0, **params)


CASES = {
    "cancer-logistic": ("cancer", logistic(StandardScaler)),
    "cancer-tree": ("cancer", trees(DecisionTreeClassifier, max_depth=5)),
    "cancer-forest": ("cancer", trees(RandomForestClassifier, n_estimators=5, max_depth=3)),
    "cancer-boosting": ("cancer", trees(GradientBoostingClassifier, n_estimators=10, max_depth=2)),
    "iris-logistic": ("iris", logistic(MinMaxScaler)),
    "iris-tree": ("iris", trees(DecisionTreeClassifier, max_depth=4)),
    "iris-forest": ("iris", trees(RandomForestClassifier, n_estimators=5, max_depth=3)),
    "iris-boosting": ("iris", trees(GradientBoostingClassifier, n_estimators=5, max_depth=2)),
    "diabetes-linear": ("diabetes", LinearRegression),
    "diabetes-ridge": ("diabetes", lambda: make_pipeline(SimpleImputer(), Ridge())),
    "diabetes-tree": ("diabetes", trees(DecisionTreeRegressor, max_depth=5)),
    "diabetes-forest": ("diabetes", trees(RandomForestRegressor, n_estimators=5, max_depth=3)),
    "diabetes-boosting": (
        "diabetes",
        trees(GradientBoostingRegressor, n_estimators=10, max_depth=2),
    ),
}


def with_random_rows(X: pd.DataFrame, n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The dataset, then random rows with the same column means and spreads."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, X.shape[1])) * X.std().to_numpy() + X.mean().to_numpy()
    rows = pd.concat([X, pd.DataFrame(noise, columns=X.columns).astype("float32")])
    return rows.reset_index(drop=True).assign(id=np.arange(len(rows)))


def predict(db, model: str, engine: str, table: str = "rows", options: str = "") -> pd.DataFrame:
    sql = (
        f"SELECT * FROM ML.PREDICT(MODEL {model}, TABLE {table}, "
        f"STRUCT('{engine}' AS engine{options})) ORDER BY id"
    )
    return db.sql(sql).df()


def matrix(frame: pd.DataFrame, column: str) -> np.ndarray:
    return np.stack(frame[column].to_numpy()).astype(np.float64)


def prob_matrix(frame: pd.DataFrame, column: str) -> np.ndarray:
    return np.array([[entry["prob"] for entry in row] for row in frame[column]])


@pytest.fixture(scope="module")
def datasets(request):
    return {name: request.getfixturevalue(name) for name in ("cancer", "iris", "diabetes")}


@pytest.mark.parametrize("case", CASES)
def test_parity_with_onnxruntime(case, datasets, tmp_path):
    dataset, make = CASES[case]
    X, y = datasets[dataset]
    y = y.map(SPECIES) if dataset == "iris" else y
    model = make().fit(X, y)
    with sqlml.connect(tmp_path / "wh.duckdb") as db:
        db.con.register("frame", with_random_rows(X))
        db.sql("CREATE TABLE rows AS SELECT * FROM frame")
        db.register_model("m", model, label="y")
        form = db.sql_form("m")
        assert form.compiled, form.reason
        assert form.tree_nodes <= MAX_TREE_NODES
        sql, runtime = predict(db, "m", "sql"), predict(db, "m", "runtime")
    assert list(sql.columns) == list(runtime.columns)
    assert [str(t) for t in sql.dtypes] == [str(t) for t in runtime.dtypes]
    if dataset == "diabetes":  # regression: onnxruntime sums in float32, SQL in double
        scale = float(np.abs(y).max())
        assert np.abs(matrix(sql, "variable") - matrix(runtime, "variable")).max() <= 1e-6 * scale
        exact = model.predict(with_random_rows(X)[X.columns].astype(np.float64))
        sql_error = np.abs(sql["predicted_y"] - exact).max()
        assert sql_error <= np.abs(runtime["predicted_y"] - exact).max() + 1e-6 * scale
        return
    assert np.abs(matrix(sql, "probabilities") - matrix(runtime, "probabilities")).max() <= PROB_TOL
    np.testing.assert_array_equal(sql["label"], runtime["label"])
    np.testing.assert_array_equal(sql["predicted_y"], runtime["predicted_y"])
    probs = prob_matrix(sql, "predicted_y_probs") - prob_matrix(runtime, "predicted_y_probs")
    assert np.abs(probs).max() <= PROB_TOL
    labels = [[entry["label"] for entry in row] for row in sql["predicted_y_probs"]]
    assert labels[0] == list(model.classes_)


# -- the translation on its own ---------------------------------------------------------------


def onnx_model(nodes, outputs, inputs=("a", "b"), initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in inputs],
        outputs,
        initializer=list(initializers),
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 3)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=9)
    onnx.checker.check_model(model)
    return model


def floats(name: str, width: int):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, width])


def binary_logistic() -> onnx.ModelProto:
    """Scaler + LinearClassifier with skl2onnx's binary layout ([-w, w]), fixed weights."""
    return onnx_model(
        [
            helper.make_node("Concat", ["a", "b"], ["x"], axis=1),
            helper.make_node("Scaler", ["x"], ["s"], domain="ai.onnx.ml",
                             offset=[1.0, -2.0], scale=[0.5, 2.0]),
            helper.make_node("LinearClassifier", ["s"], ["label", "probabilities"],
                             domain="ai.onnx.ml", coefficients=[-0.75, 1.25, 0.75, -1.25],
                             intercepts=[0.25, -0.25], classlabels_ints=[0, 1],
                             post_transform="LOGISTIC"),
        ],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
         floats("probabilities", 2)],
    )  # fmt: skip


def small_trees() -> onnx.ModelProto:
    """Two trees averaged plus a base value: BRANCH_LEQ, BRANCH_LT tracking missing values."""
    return onnx_model(
        [
            helper.make_node("Concat", ["a", "b"], ["x"], axis=1),
            helper.make_node(
                "TreeEnsembleRegressor", ["x"], ["variable"], domain="ai.onnx.ml", n_targets=1,
                nodes_treeids=[0, 0, 0, 0, 0, 1], nodes_nodeids=[0, 1, 2, 3, 4, 0],
                nodes_featureids=[0, 0, 1, 0, 0, 0],
                nodes_modes=["BRANCH_LEQ", "LEAF", "BRANCH_LT", "LEAF", "LEAF", "LEAF"],
                nodes_values=[0.5, 0.0, -1.0, 0.0, 0.0, 0.0],
                nodes_truenodeids=[1, 0, 3, 0, 0, 0], nodes_falsenodeids=[2, 0, 4, 0, 0, 0],
                nodes_missing_value_tracks_true=[0, 0, 1, 0, 0, 0],
                target_treeids=[0, 0, 0, 1], target_nodeids=[1, 3, 4, 0], target_ids=[0, 0, 0, 0],
                target_weights=[1.5, 2.5, -0.25, 0.125], aggregate_function="AVERAGE",
                base_values=[10.0],
            ),
        ],
        [floats("variable", 1)],
    )  # fmt: skip


def graph_cases() -> dict[str, onnx.ModelProto]:
    weights = helper.make_tensor("w", TensorProto.FLOAT, [2, 3], [0.5, -1.0, 2.0, 1.5, 0.25, -0.5])
    bias = helper.make_tensor("c", TensorProto.FLOAT, [3], [0.1, 0.2, -0.3])
    return {
        "logistic": binary_logistic(),
        "trees": small_trees(),
        "matmul-sigmoid": onnx_model(
            [helper.make_node("Concat", ["a", "b"], ["x"], axis=1),
             helper.make_node("MatMul", ["x", "w"], ["z"]),
             helper.make_node("Add", ["z", "c"], ["zc"]),
             helper.make_node("Sigmoid", ["zc"], ["y"])],
            [floats("y", 3)], initializers=[weights, bias],
        ),
        "gemm-softmax-argmax": onnx_model(
            [helper.make_node("Concat", ["a", "b"], ["x"], axis=1),
             helper.make_node("Gemm", ["x", "w", "c"], ["z"], alpha=0.5, beta=2.0),
             helper.make_node("Softmax", ["z"], ["p"], axis=1),
             helper.make_node("ArgMax", ["p"], ["k"], axis=1, keepdims=0),
             helper.make_node("Normalizer", ["z"], ["n"], domain="ai.onnx.ml", norm="L2")],
            [floats("p", 3), helper.make_tensor_value_info("k", TensorProto.INT64, [None]),
             floats("n", 3)], initializers=[weights, bias],
        ),
    }  # fmt: skip


@pytest.mark.parametrize("case", list(graph_cases()))
def test_hand_built_graphs_match_onnxruntime(case):
    proto = graph_cases()[case]
    runtime = OnnxRuntime(proto.SerializeToString(), case)
    model = compile_onnx(proto, runtime.signature)
    function = ModelFunction(case, runtime.signature, None, lambda: runtime)
    check_against_runtime(model, function.predict_arrow)  # raises NotCompilable on a mismatch


def test_what_does_not_compile_says_why(db, text_model, cancer):
    db.register_model("reviews", text_model, inputs={"review": "string"})
    assert "is not compiled to SQL" in db.sql_form("reviews").reason
    X, y = cancer
    big = GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=0).fit(X, y)
    db.register_model("big", big)
    form = db.sql_form("big")
    assert not form.compiled and f"(limit {MAX_TREE_NODES}" in form.reason
    zipmap = onnx_model(
        [helper.make_node("Concat", ["a", "b"], ["x"], axis=1),
         helper.make_node("ZipMap", ["x"], ["m"], domain="ai.onnx.ml", classlabels_int64s=[0, 1])],
        [floats("x", 2)],
    )  # fmt: skip
    signature = OnnxRuntime(binary_logistic().SerializeToString()).signature
    with pytest.raises(NotCompilable, match="op ZipMap is not compiled to SQL .*zipmap=False"):
        compile_onnx(zipmap, signature)


# -- storage: macros in the database file ---------------------------------------------------


def sqlml_macros(con) -> set[str]:
    rows = con.execute(
        "SELECT function_name FROM duckdb_functions() WHERE schema_name = 'sqlml' "
        "AND function_type = 'macro'"
    ).fetchall()
    return {name for (name,) in rows}


@pytest.fixture
def ab_db(db):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(0, 2, (500, 2)).astype("float32"), columns=["a", "b"])
    db.con.register("ab_frame", frame.assign(id=np.arange(len(frame))))
    db.sql("CREATE TABLE ab AS SELECT * FROM ab_frame")
    return db


def test_macros_follow_versions_aliases_and_drop(ab_db):
    db = ab_db
    db.register_model("m", binary_logistic().SerializeToString(), label="y")
    db.register_model("m", small_trees().SerializeToString())
    assert {"m@1", "m@2", "m"} <= sqlml_macros(db.con)
    p = 'SELECT id, sqlml."{0}"(a, b) AS r FROM ab ORDER BY id'
    newest = db.sql(p.format("m")).fetchall()
    assert newest == db.sql(p.format("m@2")).fetchall()
    db.set_alias("m", "champion", 1)
    assert db.sql(p.format("m@champion")).fetchall() == db.sql(p.format("m@1")).fetchall()
    db.set_alias("m", "champion", 2)
    assert db.sql(p.format("m@champion")).fetchall() == newest
    db.delete_alias("m", "champion")
    assert "m@champion" not in sqlml_macros(db.con)
    db.drop_model("m")
    assert sqlml_macros(db.con) == set()
    assert db.sql("SELECT count(*) FROM sqlml.sql_models").fetchall() == [(0,)]
    assert db.sql("SELECT count(*) FROM sqlml.sql_macros").fetchall() == [(0,)]


def session_function_kinds(db, suffix: str = "") -> dict[str, str]:
    """What serves each plain model name (or its `"<name>:score"` with suffix=':score') in this
    session: 'macro' (SQL) or 'scalar' (Python)."""
    rows = db.con.execute(
        "SELECT function_name, function_type FROM duckdb_functions() "
        "WHERE database_name IN ('temp', 'system') "
        "AND regexp_matches(function_name, '^m(@[a-z0-9_]+)?' || ? || '$')",
        [suffix],
    ).fetchall()
    return dict(rows)


def test_plain_names_call_the_sql_form_when_there_is_one(ab_db):
    """`m(a, b)` is the stored macro for a compiled version (no Python per vector), and the
    Arrow function otherwise; both give the same STRUCT."""
    db = ab_db
    db.register_model("m", binary_logistic().SerializeToString(), label="y")
    assert session_function_kinds(db) == {"m": "macro", "m@1": "macro"}
    query = "SELECT id, {0}(a, b) AS r FROM ab ORDER BY id"
    as_sql = db.sql(query.format('"m@1"')).fetchall()
    runtime = db.sql(
        "SELECT id, {'probabilities': probabilities, 'predicted_y': predicted_y, "
        "'predicted_y_probs': predicted_y_probs} FROM ML.PREDICT(MODEL m, TABLE ab, "
        "STRUCT('runtime' AS engine)) ORDER BY id"
    ).fetchall()
    for (i, got), (j, want) in zip(as_sql, runtime, strict=True):
        assert i == j and got["predicted_y"] == want["predicted_y"]
        assert np.allclose(got["probabilities"], want["probabilities"], atol=1e-6)
    db.register_model("m", binary_logistic().SerializeToString(), label="y", engine="runtime")
    kinds = session_function_kinds(db)
    assert kinds["m"] == "scalar" and kinds["m@2"] == "scalar" and kinds["m@1"] == "macro"
    assert session_function_kinds(db, ":score") == {
        "m:score": "scalar",
        "m@2:score": "scalar",
        "m@1:score": "macro",
    }
    assert db.sql(query.format("m")).fetchall() == db.sql(query.format('"m@2"')).fetchall()
    db.set_alias("m", "champion", 1)
    assert session_function_kinds(db)["m@champion"] == "macro"
    db.drop_model("m")
    assert session_function_kinds(db) == {} == session_function_kinds(db, ":score")


def test_failed_registrations_leave_no_sql_form(ab_db, text_model):
    db = ab_db
    db.register_model("m", binary_logistic().SerializeToString(), label="y")
    with pytest.raises(SqlmlError, match="already exists"):
        db.register_model("m", small_trees().SerializeToString(), must_be_new=True)
    with pytest.raises(SqlmlError, match="engine='sql' but it does not compile to SQL: op "):
        db.register_model("reviews", text_model, inputs={"review": "string"}, engine="sql")
    assert sqlml_macros(db.con) == {"m@1", "m"}
    rows = db.sql("SELECT model, version FROM sqlml.sql_models").fetchall()
    assert rows == [("m", 1)]
    assert db.registry.names() == ["m"]


def test_connect_compiles_models_registered_before(tmp_path):
    path = tmp_path / "old.duckdb"
    with sqlml.connect(path) as db:
        db.register_model("m", binary_logistic().SerializeToString(), label="y")
    con = duckdb.connect(str(path))  # as a database from before models compiled to SQL
    con.execute('DROP MACRO sqlml."m@1"; DROP MACRO sqlml.m')
    con.execute("DROP TABLE sqlml.sql_models; DROP TABLE sqlml.sql_macros")
    con.close()
    with sqlml.connect(path) as db:
        assert db.sql_form("m").compiled
        assert sqlml_macros(db.con) == {"m@1", "m"}
    con = duckdb.connect(str(path))  # a macro lost on its own comes back too
    con.execute("DROP MACRO sqlml.m")
    con.close()
    with sqlml.connect(path) as db:
        assert sqlml_macros(db.con) == {"m@1", "m"}


def test_macros_run_in_a_fresh_process_without_sqlml(tmp_path, cancer):
    X, y = cancer
    path = tmp_path / "wh.duckdb"
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(X, y)
    tree = DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, y)
    with sqlml.connect(path) as db:
        db.con.register("frame", X.assign(id=np.arange(len(X))))
        db.sql("CREATE TABLE patients AS SELECT * FROM frame")
        db.register_model("cancer", model, label="malignant")
        db.register_model("tree", tree, label="malignant")
        expected = db.sql(
            "SELECT id, c.probabilities[2] AS p, c.predicted_malignant AS label, t.label AS t "
            "FROM ML.PREDICT(MODEL cancer, TABLE patients) AS c "
            "JOIN ML.PREDICT(MODEL tree, TABLE patients) AS t USING (id) ORDER BY id"
        ).fetchall()
    columns = ", ".join(X.columns)
    script = f"""
import json, sys, duckdb
con = duckdb.connect({str(path)!r}, read_only=True)
rows = con.sql('SELECT id, sqlml.cancer({columns}).probabilities[2], '
               'sqlml.cancer({columns}).predicted_malignant, '
               'sqlml."tree@1"({columns}).label FROM patients ORDER BY id').fetchall()
assert not any(name.startswith("sqlml") for name in sys.modules)
print(json.dumps(rows))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert [r[0] for r in got] == [r[0] for r in expected]
    assert max(abs(g[1] - e[1]) for g, e in zip(got, expected)) <= PROB_TOL
    assert [(g[2], g[3]) for g in got] == [(e[2], e[3]) for e in expected]


def duckdb_shell() -> str | None:
    """The `duckdb` command of the duckdb-cli package (the dev extra), beside this Python."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which("duckdb", path=path)


def test_macros_run_in_the_duckdb_shell(tmp_path, cancer):
    shell = duckdb_shell()
    if shell is None:
        pytest.skip("the duckdb command (pip install -e '.[dev]': duckdb-cli) is not installed")
    X, y = cancer
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(X, y)
    tree = RandomForestClassifier(n_estimators=4, max_depth=3, random_state=0).fit(X, y)
    path = tmp_path / "shell.duckdb"
    with sqlml.connect(path, storage_version="v1.4.0") as db:
        db.con.register("frame", X.assign(id=np.arange(len(X))))
        db.sql("CREATE TABLE patients AS SELECT * FROM frame")
        db.register_model("cancer", model, label="malignant")
        db.register_model("forest", tree, label="malignant")
        expected = db.sql(
            "SELECT id, c.probabilities[2] AS p, f.predicted_malignant AS f, "
            "f.predicted_malignant_probs[2].prob AS fp "
            "FROM ML.PREDICT(MODEL cancer, TABLE patients) AS c "
            "JOIN ML.PREDICT(MODEL forest, TABLE patients) AS f USING (id) ORDER BY id"
        ).fetchall()
    columns = ", ".join(X.columns)
    query = (
        f"SELECT id, sqlml.cancer({columns}).probabilities[2] AS p, "
        f"sqlml.forest({columns}).predicted_malignant AS f, "
        f'sqlml."forest@1"({columns}).predicted_malignant_probs[2].prob AS fp '
        "FROM patients ORDER BY id"
    )
    result = subprocess.run(
        [shell, "-readonly", "-json", str(path), "-c", query],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert [r["id"] for r in got] == [e[0] for e in expected]
    assert max(abs(r["p"] - e[1]) for r, e in zip(got, expected)) <= PROB_TOL
    assert [r["f"] for r in got] == [e[2] for e in expected]
    assert max(abs(r["fp"] - e[3]) for r, e in zip(got, expected)) <= PROB_TOL
    # the default storage format is too new for the 1.5 shell: why storage_version exists
    plain = tmp_path / "plain.duckdb"
    sqlml.connect(plain).close()
    refused = subprocess.run(
        [shell, "-readonly", str(plain), "-c", "SELECT 1"], capture_output=True, text=True
    )
    assert refused.returncode != 0


# -- choosing the path --------------------------------------------------------------------------


def test_engine_option_chooses_the_path(ab_db, text_model):
    db = ab_db
    db.register_model("m", binary_logistic().SerializeToString(), label="y")

    def rewritten(options: str = "") -> str:
        return rewrite_sql(parse(f"SELECT * FROM ML.PREDICT(MODEL m, TABLE ab{options})"), db)

    assert '"m"(' not in rewritten() and "__sqlml_t" in rewritten()  # auto: the SQL form
    assert "__sqlml_t" in rewritten(", STRUCT('sql' AS engine)")
    runtime = rewritten(", STRUCT('runtime' AS engine)").lower()
    assert '"m#runtime"(__sqlml_in."a", __sqlml_in."b")' in runtime and "__sqlml_t" not in runtime
    with pytest.raises(SqlCompileError, match="engine must be 'auto', 'sql' or 'runtime'"):
        rewritten(", STRUCT('fast' AS engine)")
    nested = (
        "SELECT count(*), sum(predicted_y) FROM ML.PREDICT(MODEL m, (SELECT id, a, b FROM "
        "ML.PREDICT(MODEL m, TABLE ab{}) WHERE predicted_y = 1){})"
    )
    sql_only = db.sql(nested.format("", "")).fetchall()
    assert sql_only == db.sql(nested.format(", STRUCT('runtime' AS engine)", "")).fetchall()
    assert sql_only == db.sql(nested.format("", ", STRUCT('runtime' AS engine)")).fetchall()
    for threshold in (0.2, 0.5, 0.8):
        sql = predict(db, "m", "sql", "ab", f", {threshold} AS threshold")
        runtime = predict(db, "m", "runtime", "ab", f", {threshold} AS threshold")
        np.testing.assert_array_equal(sql["predicted_y"], runtime["predicted_y"])
    # a model without a SQL form runs its runtime under 'auto', and refuses 'sql'
    db.register_model("reviews", text_model, inputs={"review": "string"})
    db.sql("CREATE TABLE texts AS SELECT 1 AS id, 'great value' AS review")
    assert len(predict(db, "reviews", "auto", "texts")) == 1
    with pytest.raises(SqlCompileError, match=r"engine 'sql' needs a model compiled to SQL.*op"):
        predict(db, "reviews", "sql", "texts")


def test_the_sql_path_gives_each_output_its_own_column(ab_db):
    """ML.PREDICT on the SQL form computes each output as a column of its own (DuckDB then
    builds only the columns a query reads), with the runtime path's names, types and values,
    and NULL in every output for a row with a NULL input."""
    db = ab_db
    db.sql("INSERT INTO ab VALUES (NULL, 1.0, 500)")
    db.register_model("m", binary_logistic().SerializeToString(), label="y")
    sql = rewrite_sql(parse("SELECT * FROM ML.PREDICT(MODEL m, TABLE ab)"), db)
    assert "__sqlml_out" not in sql and "__sqlml_t" in sql
    query = "SELECT * FROM ML.PREDICT(MODEL m, TABLE ab, STRUCT('{}' AS engine)) ORDER BY id"
    as_sql, by_runtime = (db.sql(query.format(engine)) for engine in ("sql", "runtime"))
    assert as_sql.columns == by_runtime.columns
    assert as_sql.types == by_runtime.types
    rows_sql, rows_runtime = as_sql.fetchall(), by_runtime.fetchall()
    assert rows_sql[-1][3:] == (None, None, None, None)  # id 500: a is NULL
    assert [r[5] for r in rows_sql] == [r[5] for r in rows_runtime]  # predicted_y
    probability = [r[6][1]["prob"] for r in rows_sql[:-1]]
    np.testing.assert_allclose(probability, [r[6][1]["prob"] for r in rows_runtime[:-1]], atol=1e-6)


def test_registration_engine(ab_db, tmp_path):
    db = ab_db
    db.register_model("m", binary_logistic().SerializeToString(), label="y", engine="runtime")
    form = db.sql_form("m")
    assert not form.compiled and form.reason == "registered with engine='runtime'"
    assert sqlml_macros(db.con) == set()
    onnx.save(binary_logistic(), tmp_path / "m.onnx")
    db.sql(
        f"CREATE OR REPLACE MODEL m OPTIONS(model_type='onnx', model_path='{tmp_path / 'm.onnx'}', "
        "label='y', engine='sql')"
    )
    assert db.sql_form("m@2").compiled and sqlml_macros(db.con) == {"m@2", "m"}
    with pytest.raises(SqlmlError, match="engine must be one of"):
        db.register_model("x", binary_logistic().SerializeToString(), engine="fast")


def test_null_policies_on_the_sql_path(db, diabetes):
    X, y = diabetes
    frame = X.assign(id=np.arange(len(X))).astype({"age": "float64"})
    frame.loc[[3, 7], "age"] = np.nan
    db.con.register("frame", frame)
    db.sql("CREATE TABLE rows AS SELECT * REPLACE (CASE WHEN isnan(age) THEN NULL ELSE age END "
           "AS age) FROM frame")  # fmt: skip
    model = make_pipeline(SimpleImputer(), Ridge()).fit(X, y)
    db.register_model("nulls_null", model, label="y")
    db.register_model("nulls_nan", model, label="y", nulls="nan")
    db.register_model("nulls_error", model, label="y", nulls="error")
    for name in ("nulls_null", "nulls_nan"):
        sql, runtime = predict(db, name, "sql"), predict(db, name, "runtime")
        assert db.sql_form(name).compiled
        np.testing.assert_allclose(sql["predicted_y"], runtime["predicted_y"], rtol=1e-6)
    assert predict(db, "nulls_null", "sql")["predicted_y"].isna().sum() == 2
    assert predict(db, "nulls_nan", "sql")["predicted_y"].isna().sum() == 0  # imputed
    error = r"model nulls_error@1: input column 'age' has NULL values"
    with pytest.raises(duckdb.Error, match=error):
        predict(db, "nulls_error", "sql")


# -- BigQuery -----------------------------------------------------------------------------------


def golden(name: str, sql: str) -> str:
    path = GOLDEN / f"{name}.expected.sql"
    if os.environ.get("SQLML_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sql)
    return path.read_text()


def test_bigquery_inlines_models_compiled_to_sql(ab_db):
    db = ab_db
    db.register_model("lr", binary_logistic().SerializeToString(), label="y")
    db.register_model("trees", small_trees().SerializeToString(), label="y")
    script = (
        "SELECT id, predicted_y, predicted_y_probs FROM ML.PREDICT(MODEL lr, "
        "(SELECT * FROM ab WHERE id < 100), STRUCT(0.3 AS threshold)) AS p;\n"
        "SELECT * FROM ML.PREDICT(MODEL `trees@1`, TABLE ab)"
    )
    sql = db.compile(script, dataset="analytics", inline_models=True)
    assert sql == golden("inline_models", sql)
    for statement in sqlglot.parse(sql, read="bigquery"):
        assert statement.find(exp.Predict) is None
        assert not isinstance(statement, exp.Command)
    assert "TANH(" in sql and "CAST(`a` AS FLOAT64)" in sql
    # the same SQL, read back into DuckDB, gives what ML.PREDICT gives there
    for statement, model in zip(sqlglot.parse(sql, read="bigquery"), ("lr", "trees")):
        duck = statement.sql(dialect="duckdb").replace("analytics.", "")
        got = db.sql(duck).df().sort_values("id")
        options = ", 0.3 AS threshold" if model == "lr" else ""
        want = predict(db, model, "runtime", "ab", options)
        want = want[want["id"].isin(got["id"])]
        column = "predicted_y" if model == "lr" else "variable"
        np.testing.assert_allclose(got[column].to_numpy(float), want[column].to_numpy(float),
                                   rtol=1e-6)  # fmt: skip


def test_bigquery_engine_option(ab_db):
    db = ab_db
    db.register_model("lr", binary_logistic().SerializeToString(), label="y")
    kept = db.compile(
        "SELECT * FROM ML.PREDICT(MODEL lr, TABLE ab, STRUCT('runtime' AS engine))",
        dataset="d",
        inline_models=True,
    )
    assert "ML.PREDICT(MODEL `d.lr`, TABLE ab)" in kept and "engine" not in kept
    forced = db.compile("SELECT * FROM ML.PREDICT(MODEL lr, TABLE ab, STRUCT('sql' AS engine))")
    assert "ML.PREDICT" not in forced
    assert "ML.PREDICT" in db.compile("SELECT * FROM ML.PREDICT(MODEL lr, TABLE ab)")
    with pytest.raises(SqlCompileError, match="engine 'sql' needs the model's SQL form"):
        db.compile("SELECT * FROM ML.PREDICT(MODEL other, TABLE ab, STRUCT('sql' AS engine))")
    create = db.compile(
        "CREATE MODEL m OPTIONS(model_type='onnx', model_path='gs://bucket/m.onnx', engine='sql')"
    )
    assert "engine" not in create.lower() and "MODEL_PATH='gs://bucket/m.onnx'" in create


def test_cli_compile_inline_models(tmp_path, capsys):
    path = tmp_path / "wh.duckdb"
    with sqlml.connect(path) as db:
        db.register_model("lr", binary_logistic().SerializeToString(), label="y")
    source = tmp_path / "q.sql"
    source.write_text("SELECT * FROM ML.PREDICT(MODEL lr, TABLE ab)")
    assert main(["compile", str(source), "--inline-models"]) == 1
    assert "--inline-models needs --db" in capsys.readouterr().err
    assert main(["compile", str(source), "--db", str(path), "--inline-models"]) == 0
    out = capsys.readouterr().out
    assert "ML.PREDICT" not in out and "predicted_y_probs" in out
