"""Compiling sqlml SQL to BigQuery: golden files, BigQuery's documented shapes, artifacts, errors.

Every golden input `tests/golden/bigquery/<case>.sql` is compiled and compared with
`<case>.expected.sql` (whitespace-normalised); every output statement is parsed back with
sqlglot's BigQuery dialect. Regenerate the expected files with SQLML_UPDATE_GOLDEN=1 and review
the diff before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest
import sqlglot
from onnx import TensorProto, helper
from sqlglot import exp

import sqlml
from sqlml.errors import SqlCompileError
from sqlml.rewrite.bigquery import CompiledScript, compile_bigquery

GOLDEN = Path(__file__).parent / "golden" / "bigquery"
CASES = sorted(
    p.name.removesuffix(".sql") for p in GOLDEN.glob("*.sql") if ".expected." not in p.name
)
DATASET = "analytics"
MODEL_URI = "gs://acme-ml/models"


def tiny_onnx() -> bytes:
    """score = tenure * 0.1 (one float input column, one float output column)."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.1])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["tenure", "w"], ["score"])],
        "churn",
        [helper.make_tensor_value_info("tenure", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with the artifacts the golden inputs name (compile never loads them)."""
    models = tmp_path / "models"
    (models / "reviews" / "variables").mkdir(parents=True)
    (models / "churn.onnx").write_bytes(tiny_onnx())
    (models / "reviews" / "saved_model.pb").write_bytes(b"\x08\x01saved-model-stand-in")
    (models / "reviews" / "variables" / "variables.index").write_bytes(b"index-bytes")
    return tmp_path


def compile_text(text: str, base_dir: Path, **options) -> CompiledScript:
    options = {"dataset": DATASET, "model_uri": MODEL_URI, "base_dir": base_dir, **options}
    return compile_bigquery(text, **options)


def normalize(sql: str) -> str:
    return " ".join(sql.split())


def parse_bigquery(sql: str) -> list[exp.Expression]:
    """Every statement of a script, parsed with sqlglot's BigQuery dialect (no Command fallback)."""
    trees = [t for t in sqlglot.parse(sql, read="bigquery") if t is not None]
    for tree in trees:
        assert not isinstance(tree, exp.Command), tree.sql("bigquery")
    return trees


# -- golden files -----------------------------------------------------------------------------


def test_golden_cases_are_present():
    assert {
        "create_onnx_model",
        "create_tensorflow_model",
        "predict_query_threshold",
        "predict_table",
        "alias_pin",
        "duckdb_isms",
        "drop_model",
        "multi_statement",
    } <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, project: Path):
    result = compile_text((GOLDEN / f"{case}.sql").read_text(), project)
    expected_file = GOLDEN / f"{case}.expected.sql"
    if os.environ.get("SQLML_UPDATE_GOLDEN"):
        expected_file.write_text(result.sql)
    expected = expected_file.read_text()
    assert normalize(result.sql) == normalize(expected)
    # the output is BigQuery SQL: each statement parses on its own and the script as a whole
    trees = parse_bigquery(expected)
    assert len(trees) == len(result.statements)
    for statement in result.statements:
        assert not isinstance(sqlglot.parse_one(statement, read="bigquery"), exp.Command)
    assert result.sql.endswith(";\n")


# -- the shapes BigQuery documents ------------------------------------------------------------


def shape(sql: str) -> str:
    """A statement with every name and literal blanked: what is left is its syntax."""

    def blank(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and not isinstance(node.this, exp.Predict):
            return exp.to_table("name")
        if isinstance(node, exp.Literal):
            return exp.Literal.string("v") if node.is_string else exp.Literal.number(0)
        if isinstance(node, exp.Column):
            return exp.column("c")
        return node

    return sqlglot.parse_one(sql, read="bigquery").transform(blank).sql("bigquery")


def test_create_onnx_model_has_the_documented_shape(project: Path):
    # https://cloud.google.com/bigquery/docs/reference/standard-sql/bigqueryml-syntax-create-onnx
    #   {CREATE MODEL | CREATE MODEL IF NOT EXISTS | CREATE OR REPLACE MODEL}
    #   model_name
    #   OPTIONS(MODEL_TYPE = 'ONNX', MODEL_PATH = string_value [, KMS_KEY_NAME = string_value]);
    documented = (
        "CREATE OR REPLACE MODEL `myproject.mydataset.mymodel` "
        "OPTIONS(MODEL_TYPE = 'ONNX', MODEL_PATH = 'gs://bucket/path/to/model.onnx')"
    )
    result = compile_text(
        "CREATE OR REPLACE MODEL churn OPTIONS(model_type='onnx', "
        "model_path='models/churn.onnx', label='churned')",
        project,
    )
    assert shape(result.statements[0]) == shape(documented)
    tree = parse_bigquery(result.sql)[0]
    assert isinstance(tree, exp.Create) and tree.kind == "MODEL"
    assert tree.this.sql("bigquery") == "`analytics.churn`"
    options = {p.name.upper(): p.args["value"].name for p in tree.args["properties"].expressions}
    assert options == {"MODEL_TYPE": "ONNX", "MODEL_PATH": "gs://acme-ml/models/churn.onnx"}


def test_create_tensorflow_model_has_the_documented_shape(project: Path):
    # https://cloud.google.com/bigquery/docs/reference/standard-sql/bigqueryml-syntax-create-tensorflow
    #   OPTIONS(MODEL_TYPE = 'TENSORFLOW', MODEL_PATH = string_value [, KMS_KEY_NAME = ...]);
    #   Example: MODEL_PATH = 'gs://bucket/path/to/saved_model/*'
    documented = (
        "CREATE MODEL IF NOT EXISTS `mydataset.mymodel` "
        "OPTIONS(MODEL_TYPE = 'TENSORFLOW', MODEL_PATH = 'gs://bucket/path/to/saved_model/*')"
    )
    result = compile_text(
        "CREATE MODEL IF NOT EXISTS reviews OPTIONS(model_type='tensorflow', "
        "model_path='models/reviews')",
        project,
    )
    assert shape(result.statements[0]) == shape(documented)
    assert "MODEL_PATH='gs://acme-ml/models/reviews/*'" in result.sql


def test_predict_has_the_documented_shape(project: Path):
    # https://cloud.google.com/bigquery/docs/reference/standard-sql/bigqueryml-syntax-predict
    #   ML.PREDICT(
    #     MODEL `PROJECT_ID.DATASET.MODEL_NAME`,
    #     { TABLE `PROJECT_ID.DATASET.TABLE` | (QUERY_STATEMENT) }
    #     STRUCT([THRESHOLD AS threshold] [, KEEP_ORIGINAL_COLUMNS AS keep_original_columns] ...)
    #   )
    documented = {
        "query": "SELECT * FROM ML.PREDICT(MODEL `p.d.m`, (SELECT a FROM t), "
        "STRUCT(0.6 AS threshold))",
        "table": "SELECT * FROM ML.PREDICT(MODEL `p.d.m`, TABLE `p.d.t`, "
        "STRUCT(0.6 AS threshold, TRUE AS keep_original_columns))",
    }
    ours = {
        "query": "SELECT * FROM ML.PREDICT(MODEL churn, (FROM t SELECT tenure), "
        "STRUCT(0.6 AS threshold))",
        "table": "SELECT * FROM ML.PREDICT(MODEL `churn@champion`, TABLE `p.d.t`, "
        "{'threshold': 0.6, 'keep_original_columns': true})",
    }
    for form, text in ours.items():
        compiled = compile_text(text, project, dataset="my-project.analytics")
        assert shape(compiled.statements[0]) == shape(documented[form]), form
        predict = parse_bigquery(compiled.sql)[0].find(exp.Predict)
        model = predict.this
        assert (model.catalog, model.db, model.name) == ("my-project", "analytics", "churn")


def test_without_dataset_model_names_stay_bare(project: Path):
    result = compile_bigquery("SELECT * FROM ML.PREDICT(MODEL `churn@3`, TABLE t)")
    assert normalize(result.sql) == "SELECT * FROM ML.PREDICT(MODEL churn, TABLE t);"
    assert result.artifacts == []


# -- artifacts --------------------------------------------------------------------------------


def test_artifacts_are_listed_and_copied(project: Path, tmp_path: Path):
    out = tmp_path / "out" / "artifacts"
    text = (GOLDEN / "multi_statement.sql").read_text()
    result = compile_text(text, project, artifact_dir=out)
    by_model = {a.model: a for a in result.artifacts}
    assert set(by_model) == {"churn", "reviews"}

    churn = by_model["churn"]
    assert churn.format == "onnx"
    assert churn.source == project / "models" / "churn.onnx"
    assert churn.uri == "gs://acme-ml/models/churn.onnx"
    assert churn.written == out / "churn.onnx"
    assert churn.written.read_bytes() == churn.source.read_bytes() == tiny_onnx()
    assert churn.upload_command == f"gsutil cp {out / 'churn.onnx'} gs://acme-ml/models/churn.onnx"

    reviews = by_model["reviews"]
    assert reviews.format == "tensorflow"
    assert reviews.uri == "gs://acme-ml/models/reviews"
    assert reviews.written == out / "reviews"
    source_files = sorted(p.relative_to(reviews.source) for p in reviews.source.rglob("*"))
    copied_files = sorted(p.relative_to(reviews.written) for p in reviews.written.rglob("*"))
    assert copied_files == source_files
    for relative in source_files:
        if (reviews.source / relative).is_file():
            assert (reviews.written / relative).read_bytes() == (
                reviews.source / relative
            ).read_bytes()
    assert reviews.upload_command == (
        f"gsutil cp -r '{out / 'reviews'}/*' gs://acme-ml/models/reviews/"
    )

    # compiling again into the same folder is fine and gives the same script
    again = compile_text(text, project, artifact_dir=out)
    assert again.sql == result.sql


def test_without_artifact_dir_nothing_is_written(project: Path):
    before = sorted(project.rglob("*"))
    result = compile_text((GOLDEN / "create_onnx_model.sql").read_text(), project)
    assert [a.written for a in result.artifacts] == [None]
    assert sorted(project.rglob("*")) == before


def test_absolute_model_path_and_base_dir_default(project: Path, monkeypatch):
    absolute = project / "models" / "churn.onnx"
    text = f"CREATE MODEL churn OPTIONS(model_type='onnx', model_path='{absolute}')"
    assert compile_text(text, Path("/nonexistent")).artifacts[0].source == absolute
    monkeypatch.chdir(project)  # relative paths default to the working directory
    relative = "CREATE MODEL churn OPTIONS(model_type='onnx', model_path='models/churn.onnx')"
    result = compile_bigquery(relative, dataset=DATASET, model_uri=MODEL_URI)
    assert result.artifacts[0].source.resolve() == absolute.resolve()


def test_gcs_model_path_is_used_as_it_is(tmp_path: Path):
    text = (
        "CREATE MODEL churn OPTIONS(model_type='onnx', model_path='gs://other/churn.onnx');\n"
        "CREATE MODEL reviews OPTIONS(model_type='tensorflow', model_path='gs://other/reviews')"
    )
    result = compile_bigquery(text, dataset=DATASET, artifact_dir=tmp_path / "out")
    assert "MODEL_PATH='gs://other/churn.onnx'" in result.sql
    assert "MODEL_PATH='gs://other/reviews/*'" in result.sql
    assert result.artifacts == []
    assert not (tmp_path / "out").exists()


def test_model_uri_trailing_slash_is_ignored(project: Path):
    text = "CREATE MODEL churn OPTIONS(model_type='onnx', model_path='models/churn.onnx')"
    result = compile_text(text, project, model_uri="gs://acme-ml/models/")
    assert "MODEL_PATH='gs://acme-ml/models/churn.onnx'" in result.sql


# -- errors -----------------------------------------------------------------------------------


def test_missing_model_uri_names_the_model(project: Path):
    text = "SELECT 1;\nCREATE MODEL churn OPTIONS(model_type='onnx', model_path='models/x.onnx')"
    with pytest.raises(SqlCompileError, match=r"statement 2 .*CREATE MODEL churn.*--model-uri"):
        compile_text(text, project, model_uri=None)
    # scripts without CREATE MODEL do not need it
    assert compile_text("SELECT * FROM ML.PREDICT(MODEL churn, TABLE t)", project, model_uri=None)


@pytest.mark.parametrize(
    "uri", ["s3://bucket/models", "/local/models", "gs://", "gs://B/x", "models", "gs://b/x y"]
)
def test_model_uri_must_be_cloud_storage(project: Path, uri: str):
    with pytest.raises(SqlCompileError, match="gs://"):
        compile_text("SELECT 1", project, model_uri=uri)


@pytest.mark.parametrize("dataset", ["", "a b", "ds;DROP", "x.y.z.w", "`ds`", "Proj.ds"])
def test_invalid_dataset(project: Path, dataset: str):
    with pytest.raises(SqlCompileError, match="dataset"):
        compile_text("SELECT 1", project, dataset=dataset)


@pytest.mark.parametrize(
    "text",
    [
        "SELECT * FROM ML.PREDICT(MODEL analytics.churn, TABLE t)",
        "CREATE MODEL analytics.churn OPTIONS(model_type='onnx', model_path='models/churn.onnx')",
        "DROP MODEL analytics.churn",
    ],
)
def test_qualified_model_names_are_refused(project: Path, text: str):
    with pytest.raises(SqlCompileError, match="bare model name"):
        compile_text(text, project)


@pytest.mark.parametrize(
    ("text", "construct"),
    [
        ("INSTALL httpfs", "INSTALL"),
        ("LOAD httpfs", "LOAD"),
        ("ATTACH 'other.duckdb' AS other", "ATTACH"),
        ("PRAGMA threads=2", "PRAGMA"),
        ("SET threads = 2", "SET"),
        ("COPY customers TO 'customers.csv'", "COPY"),
        ("CREATE MACRO plus_one(x) AS x + 1", "CREATE MACRO"),
        ("CREATE SECRET s (TYPE s3)", "CREATE SECRET"),
        ("DESCRIBE customers", "DESCRIBE"),
        ("PIVOT customers ON plan USING count(*)", "PIVOT"),
        ("SELECT * FROM 'customers.parquet'", "file scan"),
        ("SELECT * FROM read_csv('customers.csv')", "read_csv"),
        ("SELECT list_sum(monthly_spend) FROM customers", "list_sum"),
        ("SELECT list_reduce(l, (a, b) -> a + b) FROM t", "list_reduce"),
        ("SELECT CAST(id AS HUGEINT) FROM customers", "HUGEINT|INT128"),
        ("SELECT CAST(m AS MAP(VARCHAR, INTEGER)) FROM t", "MAP"),
        ("SELECT * FROM a POSITIONAL JOIN b", "POSITIONAL JOIN"),
        ("SELECT COLUMNS('spend_.*') FROM customers", "COLUMNS"),
        ("SELECT monthly_spend[1:3] FROM customers", "slicing"),
        ("SELECT id FROM customers ORDER BY ALL", "ORDER BY ALL"),
    ],
)
def test_duckdb_only_syntax_is_refused(project: Path, text: str, construct: str):
    script = f"SELECT 1;\n{text};\nSELECT 2"
    with pytest.raises(SqlCompileError, match=rf"statement 2 .*({construct})") as info:
        compile_text(script, project)
    assert "BigQuery" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "CREATE MODEL churn OPTIONS(model_type='onnx', model_path='models/churn.onnx', "
            "learn_rate=0.1)",
            r"CREATE MODEL churn: unknown option\(s\) \['learn_rate'\]",
        ),
        (
            "CREATE MODEL churn OPTIONS(model_type='xgboost', model_path='models/churn.onnx')",
            "model_type='onnx' or 'tensorflow'",
        ),
        ("CREATE MODEL churn OPTIONS(model_type='onnx')", "model_path"),
        (
            "SELECT * FROM ML.PREDICT(MODEL churn, TABLE t, STRUCT(0.6 AS treshold))",
            r"ML.PREDICT\(MODEL churn\): unknown option\(s\) \['treshold'\]",
        ),
        (
            "SELECT * FROM ML.PREDICT(MODEL churn, TABLE t, STRUCT(1.5 AS threshold))",
            r"threshold must be in \[0, 1\]",
        ),
        (
            "CREATE MODEL churn OPTIONS(model_type='onnx', model_path='models/churn.onnx') "
            "AS SELECT * FROM t",
            "training",
        ),
        (
            "CREATE MODEL `churn@3` OPTIONS(model_type='onnx', model_path='models/churn.onnx')",
            "without a version or alias",
        ),
    ],
)
def test_bad_options(project: Path, text: str, message: str):
    with pytest.raises(SqlCompileError, match=message):
        compile_text(text, project)


def test_missing_or_wrong_artifacts_name_model_and_path(project: Path):
    missing = "CREATE MODEL churn OPTIONS(model_type='onnx', model_path='models/nope.onnx')"
    with pytest.raises(SqlCompileError, match=r"CREATE MODEL churn: model_path .*nope\.onnx"):
        compile_text(missing, project)
    (project / "models" / "empty").mkdir()
    not_saved_model = "CREATE MODEL r OPTIONS(model_type='tensorflow', model_path='models/empty')"
    with pytest.raises(SqlCompileError, match=r"CREATE MODEL r: .*empty.*saved_model\.pb"):
        compile_text(not_saved_model, project)
    folder_as_onnx = "CREATE MODEL r OPTIONS(model_type='onnx', model_path='models/reviews')"
    with pytest.raises(SqlCompileError, match="is a folder"):
        compile_text(folder_as_onnx, project)


def test_one_model_name_cannot_come_from_two_artifacts(project: Path):
    (project / "models" / "other.onnx").write_bytes(tiny_onnx())
    text = (
        "CREATE MODEL churn OPTIONS(model_type='onnx', model_path='models/churn.onnx');\n"
        "CREATE OR REPLACE MODEL churn OPTIONS(model_type='onnx', model_path='models/other.onnx')"
    )
    with pytest.raises(SqlCompileError, match=r"statement 2 .*already imports churn"):
        compile_text(text, project)


def test_unparsable_sql_names_the_statement(project: Path):
    with pytest.raises(SqlCompileError, match=r"statement 2 .*cannot parse"):
        compile_text("SELECT 1; SELECT FROM WHERE (", project)


def test_comments_and_empty_scripts(project: Path):
    assert compile_text("-- nothing here\n;\n", project).sql == ""
    result = compile_text("-- first\n/* two\n lines */ SELECT 1 AS a; -- trailing note", project)
    assert result.sql == "-- first\n-- two\n-- lines\nSELECT\n  1 AS a;\n"


# -- through the session ----------------------------------------------------------------------


def test_session_compile_matches_and_duckdb_runs_the_same_text(project: Path, tmp_path: Path):
    model_path = project / "models" / "churn.onnx"
    text = (
        f"CREATE OR REPLACE MODEL churn OPTIONS(model_type='onnx', model_path='{model_path}');\n"
        "SELECT id, score FROM ML.PREDICT(MODEL churn, "
        "(SELECT id, tenure::FLOAT AS tenure FROM customers)) ORDER BY id"
    )
    with sqlml.connect(tmp_path / "wh.duckdb") as db:
        compiled = db.compile(text, target="bigquery", dataset=DATASET, model_uri=MODEL_URI)
        assert compiled == compile_bigquery(text, dataset=DATASET, model_uri=MODEL_URI).sql
        assert "MODEL_PATH='gs://acme-ml/models/churn.onnx'" in compiled
        assert "ML.PREDICT(\n  MODEL `analytics.churn`" in compiled
        assert len(parse_bigquery(compiled)) == 2
        with pytest.raises(SqlCompileError, match="unknown compile target"):
            db.compile(text, target="snowflake")

        # the same statements run on DuckDB
        db.sql("CREATE TABLE customers AS FROM (VALUES (1, 10.0), (2, 20.0)) t(id, tenure)")
        rows = None
        for statement in text.split(";\n"):
            rows = db.sql(statement)
        assert [(i, round(s, 5)) for i, s in rows.fetchall()] == [(1, 1.0), (2, 2.0)]
