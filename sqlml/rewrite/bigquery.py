"""Compile sqlml SQL (DuckDB SQL + BigQuery ML statements) to a BigQuery script.

Each statement is parsed in the sqlml dialect, rewritten, and generated with sqlglot's BigQuery
dialect; every generated statement is parsed back with that dialect before it is returned.

- `CREATE [OR REPLACE] MODEL [IF NOT EXISTS] m OPTIONS(model_type='onnx', model_path='m.onnx')`
  becomes a BigQuery import of an artifact in Cloud Storage, as documented in
  https://cloud.google.com/bigquery/docs/reference/standard-sql/bigqueryml-syntax-create-onnx and
  .../bigqueryml-syntax-create-tensorflow:

      CREATE OR REPLACE MODEL `dataset.m`
      OPTIONS (MODEL_TYPE='ONNX', MODEL_PATH='gs://bucket/prefix/m.onnx')

  A TensorFlow SavedModel folder becomes `MODEL_PATH='gs://bucket/prefix/m/*'` (the documented
  form `'gs://bucket/path/to/saved_model/*'`). The object is named after the model under the
  `model_uri` prefix (`--model-uri`); with `artifact_dir` the local file or folder is copied to
  `artifact_dir/m.onnx` or `artifact_dir/m/` ready for `gsutil cp -r`. A `model_path` that is
  already a `gs://` URI is used as it is. The sqlml-only options `label`, `input_label_cols`,
  `classes` and `nulls` are dropped (an imported model only accepts MODEL_TYPE, MODEL_PATH and
  KMS_KEY_NAME), and so is `description`, which BigQuery only sets through
  `ALTER MODEL ... SET OPTIONS`.
- `CREATE [OR REPLACE] MODEL [IF NOT EXISTS] m OPTIONS(model_type='logistic_reg', ...) AS
  SELECT ...` (training, `sqlml.training`) stays BigQuery's own training statement, as in
  https://cloud.google.com/bigquery/docs/reference/standard-sql/bigqueryml-syntax-create-glm:
  the options sqlml checked, upper-cased, with `INPUT_LABEL_COLS` always written and sqlml's
  choices made explicit (`DATA_SPLIT_METHOD='NO_SPLIT'`; `EARLY_STOP=FALSE` for boosted trees);
  sqlml-only options (`nulls`, `engine`, `description`, `random_seed`) are dropped; the query
  is compiled like any other statement.
- `ML.PREDICT(MODEL m, (query) | TABLE t [, STRUCT(...) | {'threshold': ...}])` stays
  ML.PREDICT; the model name gets the dataset. A version or alias pin (`m@3`, `m@champion`)
  compiles to the bare model `m`: BigQuery has no versions, so the imported model *is* the
  deployed version, whatever the pin. Table names are left as written.
- With `inline_models=True` (`--inline-models`), ML.PREDICT of a model compiled to SQL
  (`sqlml.sqlmodel`: linear models, small trees) becomes plain SQL instead —
  `SELECT * EXCEPT (temporaries), <output columns> FROM (<query>)` with one projection per stage
  of shared values — so it runs without importing an artifact; other models keep ML.PREDICT.
  `STRUCT('sql' AS engine)` asks for that per query (an error if the model has no SQL form),
  `STRUCT('runtime' AS engine)` keeps the imported model. The SQL form comes from the registry
  (`sql_models`, passed by `Database.compile` and `sqlml compile --db`).
- `DROP MODEL [IF EXISTS] m` becomes BigQuery's DROP MODEL with the dataset.
- Everything else is transpiled by sqlglot (DuckDB -> BigQuery) with unsupported syntax raising,
  plus a few fixes: list lambdas (`list_transform`, `list_filter`) become order-preserving
  `ARRAY(SELECT ... FROM UNNEST(...) WITH OFFSET ...)` subqueries. DuckDB-only statements
  (INSTALL, ATTACH, PRAGMA, COPY, SET ...), functions, types, joins and file scans that have no
  BigQuery equivalent raise SqlCompileError naming the construct and the statement number.
"""

from __future__ import annotations

import functools
import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.dialects.bigquery import BigQuery
from sqlglot.errors import ErrorLevel, SqlglotError
from sqlglot.parsers.bigquery import BigQueryParser

from sqlml import training
from sqlml.dialect import MLCall, Sqlml
from sqlml.errors import SqlCompileError, SqlmlError
from sqlml.names import SCORE_SUFFIX, ModelRef
from sqlml.outputs import OutputLayout
from sqlml.rewrite.mlfunctions import Target, expand_all
from sqlml.sqlmodel import SqlModel, staged_select
from sqlml.sqltext import (
    alter_model_alias,
    literal_value,
    model_ref,
    parse,
    parse_export_model,
    split_statements,
    struct_options,
)

FORMATS = {"onnx": "ONNX", "tensorflow": "TENSORFLOW"}
SQLML_ONLY_OPTIONS = {
    "input_label_cols", "label", "classes", "nulls", "description", "engine", "training_data",
}  # fmt: skip
PREDICT_OPTIONS = {"threshold", "keep_original_columns", "engine"}
ENGINES = ("auto", "sql", "runtime")

_GCS_URI = re.compile(r"gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^\s'\"`\\]*)?")
_DATASET = re.compile(r"(?:([a-z][a-z0-9-]{4,28}[a-z0-9])\.)?([A-Za-z0-9_]{1,1024})")
_FILE_SCAN = re.compile(
    r"[/\\*]|\.(parquet|csv|tsv|txt|json|jsonl|ndjson|xlsx|arrow|gz|zst)$", re.IGNORECASE
)
_BIGQUERY_TYPES = {
    "INT64", "FLOAT64", "NUMERIC", "BIGNUMERIC", "BOOL", "STRING", "BYTES", "DATE", "DATETIME",
    "TIME", "TIMESTAMP", "INTERVAL", "GEOGRAPHY", "JSON", "ARRAY", "STRUCT", "RANGE",
}  # fmt: skip
_NO_EQUIVALENT = {
    exp.ReadCSV: "read_csv (a DuckDB file scan)",
    exp.ReadParquet: "read_parquet (a DuckDB file scan)",
    exp.Columns: "COLUMNS(...) (a DuckDB star expression)",
    exp.Slice: "list slicing l[a:b]",
}
_SHARED_FUNCTIONS = {"error"}  # DuckDB builtins that BigQuery has under the same name


@dataclass(frozen=True)
class Artifact:
    """A model file or SavedModel folder to upload to Cloud Storage for a CREATE MODEL."""

    model: str
    format: str  # "onnx" | "tensorflow"
    source: Path  # the local file or folder named by model_path
    uri: str  # where BigQuery expects it: gs://.../m.onnx or the folder gs://.../m
    written: Path | None = None  # the copy under artifact_dir, if one was made

    @property
    def upload_command(self) -> str:
        """A shell command that uploads the artifact where MODEL_PATH points."""
        local = self.written or self.source
        if self.format == "tensorflow":
            return f"gsutil cp -r {shlex.quote(f'{local}/*')} {shlex.quote(self.uri + '/')}"
        return f"gsutil cp {shlex.quote(str(local))} {shlex.quote(self.uri)}"


@dataclass(frozen=True)
class CompiledScript:
    """BigQuery SQL (statements separated by `;`) and the artifacts it expects in Cloud Storage."""

    sql: str
    artifacts: list[Artifact] = field(default_factory=list)
    statements: tuple[str, ...] = ()


def compile_bigquery(
    text: str,
    *,
    dataset: str | None = None,
    model_uri: str | None = None,
    artifact_dir: str | Path | None = None,
    base_dir: str | Path | None = None,
    layouts: Callable[[ModelRef], OutputLayout | None] | None = None,
    sql_models: Callable[[ModelRef], SqlModel | None] | None = None,
    inline_models: bool = False,
    feature_stats: Callable[[ModelRef], list] | None = None,
    describe: Callable[[str], list[tuple[str, str]] | None] | None = None,
) -> CompiledScript:
    """Compile a sqlml script for BigQuery (see the module docstring for the translation).

    `layouts` tells what a registered model outputs (`Database.compile` passes the registry's):
    then ML.PREDICT of a classifier with a label also gets `predicted_<label>` columns.
    `sql_models` gives a registered model's SQL form; with `inline_models`, ML.PREDICT of such a
    model compiles to plain SQL rather than to a call of an imported model. `feature_stats`
    (training statistics) and `describe` (a query's column types, when the tables also exist in
    DuckDB) serve ML.FEATURE_INFO, ML.VALIDATE_DATA_SKEW and ML.VALIDATE_DATA_DRIFT.
    """
    compiler = _Compiler(
        dataset=_check_dataset(dataset),
        model_uri=_check_model_uri(model_uri),
        artifact_dir=Path(artifact_dir) if artifact_dir is not None else None,
        base_dir=Path(base_dir) if base_dir is not None else Path.cwd(),
        layouts=layouts or (lambda ref: None),
        sql_models=sql_models or (lambda ref: None),
        inline_models=bool(inline_models),
        feature_stats=feature_stats or (lambda ref: []),
        describe=describe or (lambda sql: None),
    )
    statements: list[str] = []
    for number, statement in enumerate(split_statements(text), start=1):
        try:
            tokens = Sqlml().tokenize(statement)
        except SqlglotError:
            tokens = None  # let the parser report it
        if tokens == []:
            continue  # only comments
        leading = tokens[0].comments if tokens else []
        body = statement[tokens[0].start :] if tokens else statement
        try:
            compiled = compiler.statement(body)
        except (SqlmlError, SqlglotError) as error:
            snippet = " ".join(body.split())
            snippet = snippet if len(snippet) <= 60 else snippet[:57] + "..."
            raise SqlCompileError(f"statement {number} ({snippet}): {error}") from error
        if compiled and leading:
            compiled[0] = _line_comments(leading) + compiled[0]
        statements.extend(compiled)
    sql = ";\n\n".join(statements) + ";\n" if statements else ""
    return CompiledScript(sql, list(compiler.artifacts.values()), tuple(statements))


# -- checks of the options --------------------------------------------------------------------


def _check_dataset(dataset: str | None) -> tuple[str | None, str] | None:
    if dataset is None:
        return None
    match = _DATASET.fullmatch(dataset) if isinstance(dataset, str) else None
    if not match:
        raise SqlCompileError(
            f"invalid BigQuery dataset {dataset!r}: write dataset or project.dataset "
            "(dataset: letters, digits, underscores; project id: 6-30 lower-case letters, "
            "digits and hyphens)"
        )
    return match.group(1), match.group(2)


def _check_model_uri(model_uri: str | None) -> str | None:
    if model_uri is None:
        return None
    uri = model_uri.rstrip("/") if isinstance(model_uri, str) else model_uri
    if not isinstance(uri, str) or not _GCS_URI.fullmatch(uri):
        raise SqlCompileError(
            f"model_uri must be a Cloud Storage prefix like gs://bucket/models, got {model_uri!r} "
            "(BigQuery imports models only from Cloud Storage)"
        )
    return uri


def _line_comments(comments: list[str]) -> str:
    """A statement's leading comments, kept above it as `--` lines."""
    lines = [line.strip() for comment in comments for line in comment.strip().splitlines()]
    return "".join(f"-- {line}\n" if line else "--\n" for line in lines)


# -- the compiler ------------------------------------------------------------------------------


class _Compiler:
    def __init__(
        self,
        *,
        dataset: tuple[str | None, str] | None,
        model_uri: str | None,
        artifact_dir: Path | None,
        base_dir: Path,
        layouts: Callable[[ModelRef], OutputLayout | None],
        sql_models: Callable[[ModelRef], SqlModel | None] = lambda ref: None,
        inline_models: bool = False,
        feature_stats: Callable[[ModelRef], list] = lambda ref: [],
        describe: Callable[[str], list[tuple[str, str]] | None] = lambda sql: None,
    ):
        self.layouts = layouts
        self._feature_stats = feature_stats
        self._describe = describe
        self.sql_models = sql_models
        self.inline_models = inline_models
        self.dataset = dataset
        self.model_uri = model_uri
        self.artifact_dir = artifact_dir
        self.base_dir = base_dir
        self.artifacts: dict[str, Artifact] = {}
        self.imported: dict[str, str] = {}  # model -> format, for the script's CREATE MODELs

    def statement(self, text: str) -> list[str]:
        if alter_model_alias(text) is not None:
            raise SqlCompileError(
                "ALTER MODEL ... ALIAS has no BigQuery form: BigQuery models have no versions; "
                "deploy a version with CREATE OR REPLACE MODEL"
            )
        export = parse_export_model(text)
        if export is not None:
            return [self.export_model(*export)]
        tree = parse(text)
        if isinstance(tree, exp.Create) and tree.kind == "MODEL":
            trees = [self.create_model(tree)]
        elif isinstance(tree, exp.Drop) and tree.kind == "MODEL":
            trees = self.drop_model(tree)
        else:
            check_statement(tree, text)
            self.check_model_functions(tree)
            outside = [p for p in tree.find_all(exp.Predict) if p.find_ancestor(MLCall) is None]
            expand_all(tree, self, Target("bigquery", self.scored_sql))  # compiles its own
            for predict in outside:
                self.predict(predict)
            rewrite_lambdas(tree)
            trees = [tree]
        return [generate(t) for t in trees]

    def check_model_functions(self, tree: exp.Expression) -> None:
        """`churn(...)` and `"churn:score"(...)` are DuckDB functions of a session: BigQuery
        has none, and passing them through would fail only when BigQuery runs the script."""
        for call in tree.find_all(exp.Anonymous):
            try:
                ref = ModelRef.parse(call.name.removesuffix(SCORE_SUFFIX))
                registered = self.layouts(ref) is not None
            except SqlmlError:
                continue  # not a model's name: an ordinary function
            if registered:
                raise SqlCompileError(
                    f"the model function {call.name}(...) runs in DuckDB only; in BigQuery "
                    f"score with ML.PREDICT(MODEL `{ref}`, ...)"
                )

    # -- what the ML.* expansion asks (sqlml.rewrite.mlfunctions.MLBinder) ----------------
    def scored_sql(self, text: str) -> str:
        """sqlml SQL (ML.PREDICT included) as BigQuery SQL, for the ML.* expansions."""
        tree = parse(text)
        check_statement(tree, text)
        for predict in list(tree.find_all(exp.Predict)):
            self.predict(predict)
        rewrite_lambdas(tree)
        return generate_fragment(tree)

    def model_layout(self, ref: ModelRef) -> OutputLayout:
        layout = self.layouts(ref)
        if layout is None:
            raise SqlCompileError(
                f"model {ref}: sqlml needs the registered model to know its outputs; compile "
                "with the database where it is registered (--db)"
            )
        return layout

    def feature_stats(self, ref: ModelRef) -> list:
        return self._feature_stats(ref)

    def describe(self, sql: str) -> list[tuple[str, str]] | None:
        return self._describe(sql)

    # -- models --------------------------------------------------------------------------
    def model_table(self, name: str) -> exp.Table:
        """`dataset.name` as sqlglot's BigQuery generator writes a quoted path: `p.d.m`."""
        if self.dataset is None:
            return exp.Table(this=exp.to_identifier(name))
        project, dataset = self.dataset
        table = exp.Table(
            this=exp.to_identifier(name, quoted=True),
            db=exp.to_identifier(dataset, quoted=True),
            catalog=exp.to_identifier(project, quoted=True) if project else None,
        )
        table.meta["quoted_table"] = True
        return table

    def unpinned(self, node: exp.Expression, what: str) -> str:
        ref = model_ref(node)
        if ref.version is not None or ref.alias is not None:
            raise SqlCompileError(
                f"{what} {ref}: name the model without a version or alias "
                "(BigQuery models have no versions)"
            )
        return ref.name

    def create_model(self, tree: exp.Create) -> exp.Create:
        name = self.unpinned(tree.this, "CREATE MODEL")
        if any(tree.args.get(k) for k in ("transform", "input", "output")):
            raise SqlCompileError(
                f"CREATE MODEL {name}: TRANSFORM, INPUT and OUTPUT are not supported"
            )
        options = _create_options(tree, name)
        if tree.expression is not None:
            return self.training_model(tree, training.parse_options(name, options))
        unknown = set(options) - {"model_type", "model_path"} - SQLML_ONLY_OPTIONS
        if unknown:
            raise SqlCompileError(f"CREATE MODEL {name}: unknown option(s) {sorted(unknown)}")
        model_type = str(options.get("model_type", "")).lower()
        path = options.get("model_path")
        if training.is_training_type(model_type):
            raise SqlCompileError(
                f"CREATE MODEL {name}: model_type='{model_type}' trains a model: add "
                "AS SELECT ... (the training data)"
            )
        if model_type not in FORMATS or not isinstance(path, str) or not path:
            raise SqlCompileError(
                f"CREATE MODEL {name}: OPTIONS need model_type='onnx' or 'tensorflow' and "
                "model_path='...'"
            )
        model_path = self.model_path(name, model_type, path)
        self.imported[name] = model_type
        properties = [
            exp.Property(this=exp.var("MODEL_TYPE"), value=exp.Literal.string(FORMATS[model_type])),
            exp.Property(this=exp.var("MODEL_PATH"), value=exp.Literal.string(model_path)),
        ]
        create = exp.Create(
            this=self.model_table(name),
            kind="MODEL",
            replace=bool(tree.args.get("replace")),
            exists=bool(tree.args.get("exists")),
            properties=exp.Properties(expressions=properties),
        )
        return create

    def training_model(self, tree: exp.Create, spec: training.TrainingSpec) -> exp.Create:
        """BigQuery trains the model itself: its CREATE MODEL ... AS <the query for BigQuery>,
        with the options sqlml checked (sqlml.training) and its defaults made explicit."""
        query = tree.expression
        check_statement(query, query.sql(dialect=Sqlml))
        outside = [p for p in query.find_all(exp.Predict) if p.find_ancestor(MLCall) is None]
        expand_all(query, self, Target("bigquery", self.scored_sql))
        for predict in outside:
            self.predict(predict)
        rewrite_lambdas(query)
        properties = [
            exp.Property(this=exp.var(key), value=_option_literal(value))
            for key, value in spec.bigquery_options()
        ]
        return exp.Create(
            this=self.model_table(spec.model),
            kind="MODEL",
            replace=bool(tree.args.get("replace")),
            exists=bool(tree.args.get("exists")),
            properties=exp.Properties(expressions=properties),
            expression=tree.expression,
        )

    def model_path(self, name: str, model_type: str, path: str) -> str:
        """MODEL_PATH for BigQuery; records (and copies) the local artifact to upload."""
        if path.startswith("gs://"):
            if model_type == "tensorflow" and not path.endswith("/*"):
                return path.rstrip("/") + "/*"
            return path
        if self.model_uri is None:
            raise SqlCompileError(
                f"CREATE MODEL {name}: BigQuery imports models from Cloud Storage; pass "
                f"--model-uri gs://bucket/prefix (model_uri=...) to say where {path} is uploaded"
            )
        source = Path(path.removesuffix("/*"))
        source = source if source.is_absolute() else self.base_dir / source
        check_artifact(name, model_type, source)
        if model_type == "onnx":
            uri, model_path = f"{self.model_uri}/{name}.onnx", f"{self.model_uri}/{name}.onnx"
        else:
            uri, model_path = f"{self.model_uri}/{name}", f"{self.model_uri}/{name}/*"
        previous = self.artifacts.get(name)
        if previous is not None:
            if previous.source.resolve() != source.resolve():
                raise SqlCompileError(
                    f"CREATE MODEL {name}: the script already imports {name} from "
                    f"{previous.source}; both would be uploaded to {previous.uri}"
                )
            return model_path
        written = self.copy_artifact(name, model_type, source)
        self.artifacts[name] = Artifact(name, model_type, source, uri, written)
        return model_path

    def copy_artifact(self, name: str, model_type: str, source: Path) -> Path | None:
        if self.artifact_dir is None:
            return None
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
        target = self.artifact_dir / (f"{name}.onnx" if model_type == "onnx" else name)
        if target.exists() and target.resolve() == source.resolve():
            return target
        try:
            if model_type == "onnx":
                shutil.copyfile(source, target)
            else:
                if target.resolve().is_relative_to(source.resolve()):
                    raise SqlCompileError(
                        f"CREATE MODEL {name}: the artifact folder {target} is inside the "
                        f"SavedModel {source}"
                    )
                shutil.copytree(source, target, dirs_exist_ok=True)
        except OSError as error:
            raise SqlCompileError(
                f"CREATE MODEL {name}: cannot copy {source} to {target}: {error}"
            ) from error
        return target

    def export_model(self, ref: str, options: dict[str, object]) -> str:
        """BigQuery's `EXPORT MODEL m OPTIONS(URI = 'gs://...')` (a SavedModel; sqlglot cannot
        generate it, so it is written here). BigQuery cannot export an imported ONNX model."""
        name = ModelRef.parse(ref)
        if name.version is not None or name.alias is not None:
            raise SqlCompileError(
                f"EXPORT MODEL {ref}: name the model without a version or alias "
                "(BigQuery models have no versions)"
            )
        uri = options.pop("uri", None)
        fmt = str(options.pop("format", "saved_model")).lower()
        if options:
            raise SqlCompileError(f"EXPORT MODEL {ref}: unknown option(s) {sorted(options)}")
        if fmt != "saved_model":
            raise SqlCompileError(
                f"EXPORT MODEL {ref}: BigQuery exports SavedModels only; make the {fmt} file "
                "with `sqlml export` from the DuckDB registry"
            )
        if not isinstance(uri, str) or not uri.startswith("gs://"):
            raise SqlCompileError(
                f"EXPORT MODEL {ref}: BigQuery exports to Cloud Storage: OPTIONS(uri='gs://...')"
            )
        if self.imported.get(name.name) == "onnx":
            raise SqlCompileError(
                f"EXPORT MODEL {ref}: BigQuery cannot export an imported ONNX model; export the "
                "SavedModel with `sqlml export` and upload it"
            )
        table = self.model_table(name.name).sql(dialect="bigquery")
        return f"EXPORT MODEL {table} OPTIONS(uri = {exp.Literal.string(uri).sql('bigquery')})"

    def drop_model(self, tree: exp.Drop) -> list[exp.Drop]:
        drops = []
        for table in tree.args.get("tables") or tree.expressions:
            name = self.unpinned(table, "DROP MODEL")
            drops.append(
                exp.Drop(
                    tables=[self.model_table(name)],
                    kind="MODEL",
                    exists=bool(tree.args.get("exists")),
                )
            )
        return drops

    def predict(self, predict: exp.Predict) -> None:
        ref: ModelRef = model_ref(predict.this)
        what = f"ML.PREDICT(MODEL {ref})"
        options = struct_options(predict.args.get("params_struct"), what)
        unknown = set(options) - PREDICT_OPTIONS
        if unknown:
            raise SqlCompileError(f"{what}: unknown option(s) {sorted(unknown)}")
        threshold = options.get("threshold")
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not 0 <= threshold <= 1
        ):
            raise SqlCompileError(f"{what}: threshold must be in [0, 1], got {threshold!r}")
        if not isinstance(predict.expression, (exp.Subquery, exp.Table)):
            raise SqlCompileError(f"{what}: needs a query in parentheses or TABLE name as input")
        engine = options.get("engine", "auto")
        if engine not in ENGINES:
            raise SqlCompileError(
                f"{what}: engine must be 'auto', 'sql' or 'runtime', got {engine!r}"
            )
        if engine == "sql" or (engine == "auto" and self.inline_models):
            model = self.sql_models(ref)
            if model is not None:
                inline_predict(predict, str(ref), model, threshold)
                return
            if engine == "sql":
                raise SqlCompileError(
                    f"{what}: engine 'sql' needs the model's SQL form; compile with the "
                    f"database where {ref} is registered and compiled to SQL (--db)"
                )
        params = predict.args.get("params_struct")
        if params is not None and "engine" in options:  # sqlml's option, unknown to BigQuery
            kept = [e for e in params.expressions if e.this.name.lower() != "engine"]
            predict.set("params_struct", exp.Struct(expressions=kept) if kept else None)
        predict.this.replace(self.model_table(ref.name))  # a pin compiles to the bare model
        layout = self.layouts(ref)
        if layout is None or layout.native:  # BigQuery trained it: its own columns, threshold
            return
        if layout.predicted_probs and isinstance(predict.parent, exp.Table):
            with_predicted_columns(predict, layout, threshold)


def inline_predict(predict: exp.Predict, ref: str, model: SqlModel, threshold: object) -> None:
    """Replace `ML.PREDICT(MODEL m, source)` by the model's SQL over `source`.

    The columns are those sqlml adds on DuckDB: the raw outputs, then `predicted_<label>` and
    `predicted_<label>_probs` (with `threshold` applied) when the model has a label.
    """
    holder = predict.parent
    if not isinstance(holder, exp.Table):
        raise SqlCompileError(f"ML.PREDICT(MODEL {ref}): use it as a table (in FROM or JOIN)")
    plan = model.plan(ref, "bigquery", struct=False, threshold=threshold)
    sql = staged_select(plan, "_sqlml_input AS __sqlml_in", "bigquery")
    wrapper = sqlglot.parse_one(sql, read="bigquery")
    placeholder = next(t for t in wrapper.find_all(exp.Table) if t.name == "_sqlml_input")
    source = predict.expression
    alias = exp.TableAlias(this=exp.to_identifier("__sqlml_in"))
    if isinstance(source, exp.Subquery):
        replacement = exp.Subquery(this=source.this, alias=alias)
    else:
        replacement = source.copy()
        replacement.set("alias", alias)
    placeholder.replace(replacement)
    alias = holder.args.get("alias") or exp.TableAlias(this=exp.to_identifier("ml_predict"))
    holder.replace(exp.Subquery(this=wrapper, alias=alias))


def with_predicted_columns(predict: exp.Predict, layout: OutputLayout, threshold: object) -> None:
    """Add `predicted_<label>` and `predicted_<label>_probs` as sqlml does on DuckDB.

    BigQuery returns only the raw outputs of an imported model and accepts `threshold` only for
    models it trained, so both are computed in SQL over ML.PREDICT's `probabilities` array.
    """
    classes = [exp.convert(c).sql(dialect="bigquery") for c in layout.signature.classes]
    probs = exp.to_identifier(layout.signature.probabilities).sql(dialect="bigquery")
    width = layout.signature.output(layout.signature.probabilities).width
    prob = (
        (lambda i: f"{probs}[OFFSET({i})]")
        if width > 1
        else (lambda i: f"{'1 - ' if i == 0 else ''}{probs}")
    )
    entries = ", ".join(f"STRUCT({c} AS label, {prob(i)} AS prob)" for i, c in enumerate(classes))
    if layout.is_binary:
        cut = float(threshold) if threshold is not None else 0.5
        predicted = f"IF({prob(1)} > {cut!r}, {classes[1]}, {classes[0]})"
    else:
        predicted = (
            f"(SELECT e.label FROM UNNEST([{entries}]) AS e WITH OFFSET AS i "
            "ORDER BY e.prob DESC, i LIMIT 1)"
        )
    label = exp.to_identifier(layout.predicted).sql(dialect="bigquery")
    label_probs = exp.to_identifier(layout.predicted_probs).sql(dialect="bigquery")
    params = predict.args.get("params_struct")
    if params is not None:  # threshold is applied above; keep_original_columns stays
        kept = [e for e in params.expressions if e.this.name.lower() != "threshold"]
        predict.set("params_struct", exp.Struct(expressions=kept) if kept else None)
    holder = predict.parent
    native = holder.copy()
    native.set("alias", None)
    wrapper = sqlglot.parse_one(
        f"SELECT *, {predicted} AS {label}, [{entries}] AS {label_probs} FROM _sqlml_predict",
        read="bigquery",
    )
    wrapper.args["from_"].this.replace(native)
    alias = holder.args.get("alias") or exp.TableAlias(this=exp.to_identifier("ml_predict"))
    holder.replace(exp.Subquery(this=wrapper, alias=alias))


def _option_literal(value: object) -> exp.Expression:
    """An OPTIONS value: a literal, an array, or a (label, weight) pair as STRUCT('a', 0.5)."""
    if isinstance(value, list):
        return exp.Array(expressions=[_option_literal(v) for v in value])
    if isinstance(value, tuple):
        return exp.Struct(expressions=[_option_literal(v) for v in value])
    return exp.convert(value)


def _create_options(tree: exp.Create, name: str) -> dict[str, object]:
    props = tree.args.get("properties")
    options: dict[str, object] = {}
    for prop in props.expressions if props else []:
        if isinstance(prop, exp.EngineProperty):  # sqlml's engine='sql' parses as ENGINE=
            options["engine"] = literal_value(prop.this)
            continue
        if not isinstance(prop, exp.Property):
            raise SqlCompileError(f"CREATE MODEL {name}: unsupported clause {prop.sql(Sqlml)!r}")
        options[prop.name.lower()] = literal_value(prop.args["value"])
    return options


def check_artifact(name: str, model_type: str, source: Path) -> None:
    if not source.exists():
        raise SqlCompileError(f"CREATE MODEL {name}: model_path {source} does not exist")
    if model_type == "onnx" and not source.is_file():
        raise SqlCompileError(
            f"CREATE MODEL {name}: model_path {source} is a folder; an ONNX model is one file"
        )
    if model_type == "tensorflow" and not (source / "saved_model.pb").is_file():
        raise SqlCompileError(
            f"CREATE MODEL {name}: model_path {source} is not a TensorFlow SavedModel folder "
            "(no saved_model.pb)"
        )


# -- generic statements ------------------------------------------------------------------------


_CREATE_KINDS = {"TABLE", "VIEW", "SCHEMA"}
_DROP_KINDS = {"TABLE", "VIEW", "SCHEMA"}


def check_statement(tree: exp.Expression, text: str) -> None:
    """Raise for DuckDB statements and constructs BigQuery has no equivalent for."""
    ok = (
        isinstance(tree, (exp.Query, exp.Insert, exp.Update, exp.Delete, exp.Merge))
        or (isinstance(tree, exp.Create) and tree.kind in _CREATE_KINDS)
        or (isinstance(tree, exp.Drop) and tree.kind in _DROP_KINDS)
        or (isinstance(tree, exp.Alter) and str(tree.args.get("kind", "")).upper() == "TABLE")
        or isinstance(tree, exp.TruncateTable)
    )
    if not ok:
        raise SqlCompileError(
            f"{_statement_name(tree, text)} is DuckDB syntax with no BigQuery equivalent; "
            "run it in DuckDB only, or leave it out of the script compiled for BigQuery"
        )
    for node in tree.walk():
        construct = _no_equivalent(node)
        if construct:
            raise SqlCompileError(f"{construct} has no BigQuery equivalent")


def _statement_name(tree: exp.Expression, text: str) -> str:
    if isinstance(tree, (exp.Create, exp.Drop)) and tree.kind:
        verb = "CREATE" if isinstance(tree, exp.Create) else "DROP"
        return f"{verb} {tree.kind}"
    words = [token.text.upper() for token in Sqlml().tokenize(text)[:2]]
    if words and words[0] in ("CREATE", "DROP", "ALTER"):
        return " ".join(words)
    return f"the {words[0]} statement" if words else "the statement"


def _no_equivalent(node: exp.Expression) -> str | None:
    for kind, construct in _NO_EQUIVALENT.items():
        if isinstance(node, kind):
            return construct
    if isinstance(node, exp.Anonymous):
        name = node.name.lower()
        if name in duckdb_builtins() and name.upper() not in BigQueryParser.FUNCTIONS:
            return f"the DuckDB function {name}() (rewrite it with a BigQuery function)"
    if isinstance(node, exp.Ordered) and isinstance(node.this, exp.Var) and node.name == "ALL":
        return "ORDER BY ALL"
    if isinstance(node, exp.Join):
        method = node.text("method").upper()
        if method in ("POSITIONAL", "ASOF"):
            return f"{method} JOIN"
    if (
        isinstance(node, exp.Table)
        and isinstance(node.this, exp.Identifier)
        and node.this.quoted
        and not node.args.get("db")
        and _FILE_SCAN.search(node.name)
    ):
        return f"the DuckDB file scan FROM '{node.name}' (load the file into a BigQuery table)"
    if isinstance(node, exp.DataType):
        type_sql = node.sql(dialect="bigquery")
        base = re.match(r"[A-Za-z_][A-Za-z0-9_]*", type_sql)
        if base is None or base.group().upper() not in _BIGQUERY_TYPES:
            return f"the type {node.sql(dialect=Sqlml)} (BigQuery: {type_sql})"
        if type_sql.endswith("]"):
            return f"the fixed-size list type {node.sql(dialect=Sqlml)}"
    return None


@functools.cache
def duckdb_builtins() -> frozenset[str]:
    """Names of DuckDB's built-in functions (sqlglot leaves unknown ones as Anonymous)."""
    import duckdb

    with duckdb.connect() as con:
        rows = con.sql("SELECT DISTINCT function_name FROM duckdb_functions()").fetchall()
    return frozenset(row[0].lower() for row in rows) - _SHARED_FUNCTIONS


def rewrite_lambdas(tree: exp.Expression) -> None:
    """`list_transform` / `list_filter` with a lambda -> ordered ARRAY(SELECT ... UNNEST) subquery.

    sqlglot writes list_transform as TRANSFORM(l, x -> ...), which BigQuery lacks, and
    list_filter as an ARRAY subquery without ORDER BY; both keep the list order here. A lambda
    (x, i) gets DuckDB's 1-based index as i.
    """
    nodes = [n for n in tree.find_all(exp.Transform, exp.ArrayFilter, bfs=False)]
    for node in reversed(nodes):  # innermost first
        lam = node.expression
        if not isinstance(lam, exp.Lambda) or not 1 <= len(lam.expressions) <= 2:
            raise SqlCompileError(f"unsupported lambda in {node.sql(dialect=Sqlml)!r}")
        array = generate_fragment(node.this)
        body = generate_fragment(lam.this)
        var = generate_fragment(lam.expressions[0])
        offset = "_sqlml_offset"
        if len(lam.expressions) == 2:
            index = generate_fragment(lam.expressions[1])
            source = (
                f"(SELECT {var}, {offset} + 1 AS {index}, {offset} "
                f"FROM UNNEST({array}) AS {var} WITH OFFSET AS {offset})"
            )
        else:
            source = f"UNNEST({array}) AS {var} WITH OFFSET AS {offset}"
        if isinstance(node, exp.Transform):
            sql = f"ARRAY(SELECT {body} FROM {source} ORDER BY {offset})"
        else:
            sql = f"ARRAY(SELECT {var} FROM {source} WHERE {body} ORDER BY {offset})"
        node.replace(sqlglot.parse_one(sql, read="bigquery"))


def generate_fragment(node: exp.Expression) -> str:
    return node.sql(dialect="bigquery", unsupported_level=ErrorLevel.RAISE)


def generate(tree: exp.Expression) -> str:
    """BigQuery SQL for one statement, parsed back with sqlglot's BigQuery dialect as a check."""
    sql = tree.sql(dialect="bigquery", pretty=True, unsupported_level=ErrorLevel.RAISE)
    try:
        again = sqlglot.parse_one(sql, read=BigQuery, error_level=ErrorLevel.RAISE)
    except SqlglotError as error:
        raise SqlCompileError(f"generated BigQuery SQL does not parse: {error}\n{sql}") from None
    if isinstance(again, exp.Command):
        raise SqlCompileError(f"generated SQL is not a BigQuery statement sqlglot knows:\n{sql}")
    if again.find(exp.Lambda):
        raise SqlCompileError(f"BigQuery has no lambda functions: {again.find(exp.Lambda).sql()}")
    return sql
