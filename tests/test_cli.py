"""The `sqlml` command, run as real processes on real DuckDB files (no mocks)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import sqlglot
from conftest import PROBA_TOL
from sklearn.linear_model import LogisticRegression

from sqlml import convert
from sqlml.cli import main, statement_complete

INPUTS = {"a": "float32", "b": "float32"}


def run(cwd: Path, *args: object, stdin: str | None = None, env: dict | None = None):
    """`python -m sqlml.cli ARGS` in `cwd`; never a traceback, never DuckDB's exit-time leaks."""
    result = subprocess.run(
        [sys.executable, "-m", "sqlml.cli", *map(str, args)],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert "nanobind" not in result.stderr + result.stdout  # a connection left open at exit
    return result


def ok(cwd: Path, *args: object, stdin: str | None = None) -> str:
    result = run(cwd, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two different classifiers on columns a, b as .onnx files, and the data they score."""
    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(60, 2)).astype("float32"), columns=["a", "b"])
    y = (X.a + 0.5 * X.b + rng.normal(scale=0.5, size=len(X)) > 0).astype(int)
    v1 = LogisticRegression().fit(X, y)
    v2 = LogisticRegression(C=0.05).fit(X, 1 - y)  # predicts roughly the opposite of v1
    folder = tmp_path_factory.mktemp("onnx")
    paths = {}
    for name, model in {"v1": v1, "v2": v2}.items():
        paths[name] = folder / f"{name}.onnx"
        paths[name].write_bytes(convert.sklearn_to_onnx(model, INPUTS))
    return SimpleNamespace(X=X, v1=v1, v2=v2, v1_path=paths["v1"], v2_path=paths["v2"])


@pytest.fixture
def ws(tmp_path, models):
    """A folder with data.csv and wh.duckdb holding table t(id, a, b) made by `sqlml sql`."""
    models.X.assign(id=np.arange(len(models.X)))[["id", "a", "b"]].to_csv(
        tmp_path / "data.csv", index=False
    )
    assert ok(tmp_path, "sql", "wh.duckdb", "CREATE TABLE t AS FROM read_csv('data.csv')") == ""
    return tmp_path


@pytest.fixture
def registered(ws, models):
    ok(ws, "register", "wh.duckdb", "clf", models.v1_path, "--label", "y")
    return ws


def p1_column(stdout: str, column: str = "p") -> np.ndarray:
    rows = read_csv(stdout)
    assert [int(r["id"]) for r in rows] == list(range(len(rows)))
    return np.array([float(r[column]) for r in rows])


# -- register / models ------------------------------------------------------------------------
def test_version_and_usage(tmp_path):
    assert ok(tmp_path, "--version").startswith("sqlml 0.1.0")
    result = run(tmp_path)
    assert result.returncode == 2 and "usage: sqlml" in result.stderr


def test_register_prints_version_and_sha256_then_models_lists_it(ws, models):
    out = ok(ws, "register", "wh.duckdb", "clf", models.v1_path, "--label", "y",
             "--description", "first try")  # fmt: skip
    digest = hashlib.sha256(models.v1_path.read_bytes()).hexdigest()
    assert out.splitlines()[0] == f"registered clf version 1 (sha256 {digest})"
    assert "clf(a DOUBLE, b DOUBLE)" in out
    assert (
        out.splitlines()[2]
        == '  ML.PREDICT runs it as SQL: the expressions of macro sqlml."clf@1", no Python'
    )
    out = ok(ws, "register", "wh.duckdb", "clf", models.v2_path, "--nulls", "nan")
    assert out.startswith("registered clf version 2 (sha256 ")

    (row,) = read_csv(ok(ws, "models", "wh.duckdb", "--format", "csv"))
    assert row["model"] == "clf" and row["latest_version"] == "2" and row["versions"] == "2"
    assert row["inputs"] == "[a, b]" and row["outputs"] == "[label, probabilities]"
    (entry,) = json.loads(ok(ws, "models", "wh.duckdb", "--format", "json"))
    assert entry["classes"] == [0, 1] and entry["format"] == "onnx"
    table = ok(ws, "models", "wh.duckdb")
    assert "│ clf " in table and table.rstrip().endswith("1 row")


def test_register_with_classes_and_missing_file(ws, models):
    out = ok(ws, "register", "wh.duckdb", "yesno", models.v1_path, "--classes", "no,yes",
             "--label", "answer")  # fmt: skip
    assert out.startswith("registered yesno version 1")
    rows = read_csv(ok(ws, "sql", "wh.duckdb", "--format", "csv",
                       "SELECT id, predicted_answer FROM ML.PREDICT(MODEL yesno, TABLE t) "
                       "ORDER BY id"))  # fmt: skip
    expected = np.where(models.v1.predict(models.X) == 1, "yes", "no")
    assert [r["predicted_answer"] for r in rows] == list(expected)

    result = run(ws, "register", "wh.duckdb", "other", ws / "missing.onnx")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and "missing.onnx" in result.stderr


# -- sql ----------------------------------------------------------------------------------------
def test_sql_ml_predict_matches_sklearn(registered, models):
    out = ok(registered, "sql", "wh.duckdb", "--format", "csv",
             "SELECT id, probabilities[1] AS p0, probabilities[2] AS p, predicted_y "
             "FROM ML.PREDICT(MODEL clf, TABLE t) ORDER BY id")  # fmt: skip
    expected = models.v1.predict_proba(models.X)
    assert np.abs(p1_column(out) - expected[:, 1]).max() < PROBA_TOL
    assert np.abs(p1_column(out, "p0") - expected[:, 0]).max() < PROBA_TOL
    predicted = [int(r["predicted_y"]) for r in read_csv(out)]
    assert predicted == list(models.v1.predict(models.X))


def test_scalar_function_form_matches_sklearn(registered, models):
    expected = models.v1.predict_proba(models.X)[:, 1]
    out = ok(registered, "sql", "wh.duckdb", "--format", "csv",
             "SELECT id, clf(a, b).probabilities[2] AS p FROM t ORDER BY id")  # fmt: skip
    assert np.abs(p1_column(out) - expected).max() < PROBA_TOL

    rows = json.loads(ok(registered, "sql", "wh.duckdb", "--format", "json",
                         "SELECT id, clf(a, b) AS out FROM t ORDER BY id"))  # fmt: skip
    assert len(rows) == len(models.X)
    probs = np.array([row["out"]["probabilities"] for row in rows])
    assert np.abs(probs[:, 1] - expected).max() < PROBA_TOL
    assert [row["out"]["predicted_y_probs"][1]["label"] for row in rows[:1]] == [1]


def test_sql_from_file_from_stdin_and_last_result_only(registered, models):
    expected = models.v1.predict_proba(models.X)[:, 1]
    script = registered / "score.sql"
    script.write_text(
        "-- the last statement's result is printed\n"
        "CREATE TABLE scored AS SELECT id, clf(a, b).probabilities[2] AS p FROM t;\n"
        "SELECT 'not printed' AS x;\n"
        "SELECT * FROM scored ORDER BY id;\n"
    )
    out = ok(registered, "sql", "wh.duckdb", "-f", script, "--format", "csv")
    assert np.abs(p1_column(out) - expected).max() < PROBA_TOL
    out = ok(registered, "sql", "wh.duckdb", "-", "--format", "csv",
             stdin="SELECT id, p FROM scored ORDER BY id")  # fmt: skip
    assert np.abs(p1_column(out) - expected).max() < PROBA_TOL


def test_table_output_and_statements_without_a_result(ws):
    assert ok(ws, "sql", "wh.duckdb", "CREATE TABLE u (i INTEGER); INSERT INTO u VALUES (1)") == ""
    out = ok(ws, "sql", "wh.duckdb", "SELECT i, 'x' AS s, NULL AS n FROM u")
    lines = out.splitlines()
    assert [c.strip() for c in lines[1].split("│")[1:4]] == ["i", "s", "n"]
    assert lines[2].split("│")[1].strip() == "integer"
    assert [c.strip() for c in lines[4].split("│")[1:4]] == ["1", "x", "NULL"]
    assert lines[-1] == "  1 row"
    out = ok(ws, "sql", "wh.duckdb", "SELECT * FROM range(100)", "--max-rows", "3")
    assert out.splitlines()[-1] == "  100 rows (3 shown)"
    assert out.count("│") == 5 * 2  # one column: header, type row and 3 rows
    csv_out = ok(ws, "sql", "wh.duckdb", "--format", "csv", "SELECT 1 AS a, NULL AS b, 'x,y' AS c")
    assert csv_out == 'a,b,c\n1,,"x,y"\n'
    assert (
        json.loads(ok(ws, "sql", "wh.duckdb", "--format", "json", "SELECT 1 AS a WHERE false"))
        == []
    )


# -- shell --------------------------------------------------------------------------------------
SESSION = """\
SELECT id,
       clf(a, b).probabilities[2] AS p
FROM t
ORDER BY id
LIMIT 3;
.models
.tables
SELECT * FROM no_such_table;
SELECT 'a;b' AS s; -- a semicolon inside quotes does not end the statement
.mode csv
SELECT 40 + 2 AS answer;
.quit
SELECT 'after quit' AS never;
"""


def test_shell_session_from_stdin(registered, models):
    result = run(registered, "shell", "wh.duckdb", stdin=SESSION)
    out = result.stdout
    assert "sqlml>" not in out  # no prompts when stdin is not a terminal
    expected = models.v1.predict_proba(models.X)[:3, 1]
    values = [float(line.split("│")[2]) for line in out.splitlines()[4:7]]
    assert np.abs(np.array(values) - expected).max() < PROBA_TOL
    assert "│ clf   " in out and "clf(a, b)" in out  # .models shows how to call it
    assert "\nt\n" in out  # .tables
    assert "model_versions" not in out  # sqlml's catalog tables are not listed
    assert "│ a;b     │" in out
    assert out.endswith("answer\n42\n")
    assert "after quit" not in out
    # the error is reported and the shell went on; piped input with errors exits 1
    assert result.stderr.startswith("Error: Catalog Error: Table with name no_such_table")
    assert result.returncode == 1


def test_shell_read_schema_and_eof_without_quit(registered, models):
    (registered / "setup.sql").write_text(
        "CREATE TABLE scores AS\n  SELECT id, clf(a, b).label AS label FROM t;\n"
        ".mode csv\nSELECT count(*) AS n FROM scores"  # no `;` at the end of the file
    )
    result = run(registered, "shell", "wh.duckdb", stdin=(
        ".read setup.sql\n.schema scores\n.schema nope\n.help\n"
        "SELECT label, count(*) AS n FROM scores GROUP BY 1 ORDER BY 1;"
    ))  # fmt: skip
    assert result.returncode == 1  # the one error: `.schema nope`
    assert result.stderr == "Error: no table or view named nope\n"
    assert result.stdout.startswith('n\n60\nCREATE TABLE scores(id BIGINT, "label" BIGINT);\n')
    assert ".read FILE" in result.stdout
    counts = np.bincount(models.v1.predict(models.X))
    assert result.stdout.endswith(f"label,n\n0,{counts[0]}\n1,{counts[1]}\n")
    ok_result = run(registered, "shell", "wh.duckdb", stdin="SELECT 1 AS one;\n")
    assert ok_result.returncode == 0 and ok_result.stderr == ""


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_shell_interactive_prompts_and_history(registered):
    """A real terminal: banner, prompts, continuation prompt, and statements in the history."""
    history = registered / "history"
    env = {**os.environ, "SQLML_HISTORY": str(history), "TERM": "dumb"}
    master, slave = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "sqlml.cli", "shell", "wh.duckdb"],
        stdin=slave, stdout=slave, stderr=slave, cwd=registered, env=env,
    )  # fmt: skip
    os.close(slave)
    seen = b""

    def wait_for(prompt: bytes, count: int, timeout: float = 60) -> None:
        """Read output until `prompt` was shown `count` times (type only at a live prompt)."""
        nonlocal seen
        deadline = time.monotonic() + timeout
        while seen.count(prompt) < count and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    return

    try:
        for keys, prompt, count in [
            (b"SELECT 40 +\n", b"sqlml> ", 1),
            (b"2 AS answer;\n", b"   ...> ", 1),
            (b"SELECT * FROM nope;\n", b"sqlml> ", 2),
            (b".tables\n", b"sqlml> ", 3),
            (b"\x04", b"sqlml> ", 4),  # Ctrl-D on an empty line exits
        ]:
            wait_for(prompt, count)
            os.write(master, keys)
        assert process.wait(timeout=60) == 0
        wait_for(b"never shown", 1, timeout=0.5)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    text = seen.decode()
    assert text.startswith("sqlml 0.1.0")
    assert "│      42 │" in text and "Error: Catalog Error" in text
    assert "\r\nt\r\n" in text  # .tables
    assert "Traceback" not in text and "nanobind" not in text
    assert history.read_text().splitlines()[-3:] == [
        "SELECT 40 + 2 AS answer;",
        "SELECT * FROM nope;",
        ".tables",
    ]


def test_statement_complete():
    assert statement_complete("SELECT 1;")
    assert statement_complete("SELECT 1; -- done")
    assert not statement_complete("SELECT 'a;")
    assert not statement_complete("SELECT 'it''s;'")
    assert statement_complete("SELECT 'it''s';")
    assert not statement_complete('SELECT "x;"')
    assert not statement_complete("SELECT 1 -- ;")
    assert not statement_complete("SELECT 1 /* ; */")
    assert statement_complete("SELECT * FROM ML.PREDICT(MODEL `m;x`, TABLE t) /* c */ ;")


# -- aliases, drop --------------------------------------------------------------------------------
def test_alias_move_and_rollback(registered, models):
    ok(registered, "register", "wh.duckdb", "clf", models.v2_path, "--label", "y")
    p1 = {v: getattr(models, v).predict_proba(models.X)[:, 1] for v in ("v1", "v2")}
    query = (
        'SELECT id, "clf@champion"(a, b).probabilities[2] AS p, q.probabilities[2] AS q '
        "FROM ML.PREDICT(MODEL `clf@champion`, TABLE t) AS q ORDER BY id"
    )

    def champion() -> np.ndarray:
        out = ok(registered, "sql", "wh.duckdb", "--format", "csv", query)
        # the scalar function runs onnxruntime; ML.PREDICT the model compiled to SQL
        np.testing.assert_allclose(p1_column(out), p1_column(out, "q"), rtol=0, atol=1e-6)
        return p1_column(out)

    assert ok(registered, "alias", "wh.duckdb", "clf", "champion", "1") == (
        "clf@champion -> version 1 (new alias)\n"
    )
    assert np.abs(champion() - p1["v1"]).max() < PROBA_TOL
    assert ok(registered, "alias", "wh.duckdb", "clf", "champion", "2") == (
        "clf@champion -> version 2 (was version 1)\n"
    )
    assert np.abs(champion() - p1["v2"]).max() < PROBA_TOL
    (row,) = json.loads(ok(registered, "models", "wh.duckdb", "--format", "json"))
    assert row["aliases"] == {"champion": 2}
    # rollback: point the alias back at version 1
    assert ok(registered, "alias", "wh.duckdb", "clf", "champion", "1") == (
        "clf@champion -> version 1 (was version 2)\n"
    )
    assert np.abs(champion() - p1["v1"]).max() < PROBA_TOL
    latest = ok(registered, "sql", "wh.duckdb", "--format", "csv",
                "SELECT id, clf(a, b).probabilities[2] AS p FROM t ORDER BY id")  # fmt: skip
    assert np.abs(p1_column(latest) - p1["v2"]).max() < PROBA_TOL  # unpinned: newest version

    result = run(registered, "alias", "wh.duckdb", "clf", "champion", "7")
    assert result.returncode == 1 and "no version 7" in result.stderr
    assert ok(registered, "alias", "wh.duckdb", "clf", "champion", "--delete") == (
        "deleted clf@champion (was version 1)\n"
    )
    result = run(registered, "sql", "wh.duckdb", query)
    assert result.returncode == 1 and "no alias 'champion'" in result.stderr


def test_drop(registered):
    assert ok(registered, "drop", "wh.duckdb", "clf") == "dropped clf\n"
    result = run(registered, "drop", "wh.duckdb", "clf")
    assert result.returncode == 1 and "unknown model 'clf'" in result.stderr
    assert ok(registered, "drop", "wh.duckdb", "clf", "--if-exists") == "no model clf\n"
    assert read_csv(ok(registered, "models", "wh.duckdb", "--format", "csv")) == []


# -- compile -----------------------------------------------------------------------------------
SCRIPT = """\
CREATE OR REPLACE MODEL clf OPTIONS (model_type='onnx', model_path='models/v1.onnx', label='y');
SELECT id, predicted_y
FROM ML.PREDICT(MODEL clf, (SELECT id, a, b FROM t WHERE a > 0));
"""


def test_compile_writes_bigquery_sql_and_artifacts(tmp_path, models):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "v1.onnx").write_bytes(models.v1_path.read_bytes())
    (tmp_path / "job.sql").write_text(SCRIPT)
    out = ok(tmp_path, "compile", "--target", "bigquery", "job.sql", "-o", "build/job.sql",
             "--dataset", "analytics", "--model-uri", "gs://bucket/models")  # fmt: skip
    compiled = (tmp_path / "build" / "job.sql").read_text()
    statements = sqlglot.parse(compiled, read="bigquery")
    assert len([s for s in statements if s is not None]) == 2
    assert "gs://bucket/models/clf.onnx" in compiled and "`analytics.clf`" in compiled
    copy = tmp_path / "build" / "artifacts" / "clf.onnx"
    assert copy.read_bytes() == models.v1_path.read_bytes()
    assert "wrote build/job.sql" in out
    upload = out.splitlines()[-1]  # the exact quoting of the command is compile_bigquery's
    assert "gsutil cp" in upload and str(Path("build/artifacts/clf.onnx")) in upload
    assert upload.rstrip("'").endswith("gs://bucket/models/clf.onnx")

    # to stdout: the SQL alone on stdout, the upload list on stderr, no files written
    result = run(tmp_path, "compile", "job.sql", "--dataset", "analytics",
                 "--model-uri", "gs://bucket/models")  # fmt: skip
    assert result.returncode == 0 and result.stdout == compiled
    assert "gsutil cp" in result.stderr and "gs://bucket/models/clf.onnx" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "job.sql", "models"]


def test_compile_errors(tmp_path):
    (tmp_path / "job.sql").write_text(SCRIPT)
    result = run(tmp_path, "compile", "job.sql")  # no --model-uri for a local model file
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: ") and "--model-uri" in result.stderr
    result = run(tmp_path, "compile", "nope.sql")
    assert result.returncode == 1 and "nope.sql" in result.stderr


# -- bad input ---------------------------------------------------------------------------------
def test_unknown_model_exits_1_and_names_it(registered):
    for sql in (
        "SELECT * FROM ML.PREDICT(MODEL churn, TABLE t)",
        "SELECT * FROM ML.PREDICT(MODEL `churn@champion`, TABLE t)",
    ):
        result = run(registered, "sql", "wh.duckdb", sql)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr == "Error: unknown model 'churn' (registered: clf)\n"
    result = run(registered, "sql", "wh.duckdb", "SELECT churn(a, b) FROM t")
    assert result.returncode == 1 and "churn" in result.stderr
    result = run(registered, "alias", "wh.duckdb", "churn", "champion", "1")
    assert result.returncode == 1 and "unknown model 'churn'" in result.stderr


@pytest.mark.parametrize("name", ["bad;name", "bad'name", 'x"; DROP TABLE t; --'])
def test_model_names_with_quotes_or_semicolons_are_refused(registered, models, name):
    result = run(registered, "register", "wh.duckdb", name, models.v1_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"Error: invalid model name {name!r}")
    assert "letters, digits and underscores" in result.stderr
    assert ok(registered, "sql", "wh.duckdb", "--format", "csv", "SELECT count(*) AS n FROM t") == (
        "n\n60\n"
    )


def test_model_name_with_a_semicolon_in_sql(registered):
    result = run(registered, "sql", "wh.duckdb",
                 "SELECT * FROM ML.PREDICT(MODEL `clf; DROP TABLE t`, TABLE t)")  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("Error: invalid model name 'clf; DROP TABLE t': use letters")
    # unquoted, the semicolon ends the statement, which then fails to parse: nothing runs
    result = run(registered, "sql", "wh.duckdb",
                 "SELECT * FROM ML.PREDICT(MODEL clf; DROP TABLE t; SELECT 1")  # fmt: skip
    assert result.returncode == 1 and result.stderr.startswith("Error: cannot parse SQL")
    assert "\x1b[" not in result.stderr  # no terminal escapes in the message
    assert ok(registered, "sql", "wh.duckdb", "--format", "csv", "SELECT count(*) AS n FROM t") == (
        "n\n60\n"
    )


def test_missing_database_and_bad_sql_in_process(tmp_path, capsys):
    assert main(["models", str(tmp_path / "typo.duckdb")]) == 1
    assert capsys.readouterr().err == f"Error: no database file at {tmp_path / 'typo.duckdb'}\n"
    assert not (tmp_path / "typo.duckdb").exists()
    assert main(["sql", str(tmp_path / "new.duckdb"), "SELEC 1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith('Error: Parser Error: syntax error at or near "SELEC"')
    assert main(["sql", str(tmp_path / "new.duckdb"), "SELECT 42 AS x", "--format", "csv"]) == 0
    assert capsys.readouterr().out == "x\n42\n"


def test_compile_with_db_adds_predicted_columns(registered):
    """With --db the registry's label and classes turn into predicted_<label> SQL for BigQuery."""
    (registered / "score.sql").write_text(
        "SELECT a, predicted_y FROM ML.PREDICT(MODEL clf, TABLE t, STRUCT(0.8 AS threshold));\n"
    )
    out = ok(registered, "compile", "score.sql", "--dataset", "analytics", "--db", "wh.duckdb")
    sqlglot.parse_one(out, read="bigquery")
    assert "IF(probabilities[OFFSET(1)] > 0.8, 1, 0) AS predicted_y" in out
    assert "FROM ML.PREDICT(MODEL `analytics.clf`, TABLE t)" in out
    result = run(registered, "compile", "score.sql", "--db", "missing.duckdb")
    assert result.returncode == 1 and "no database file at missing.duckdb" in result.stderr
