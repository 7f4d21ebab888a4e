"""`sqlml.connect()`: a DuckDB connection where every registered model is a SQL function.

The Python API is a thin layer over the SQL pipeline: `db.predict(...)` runs the same
ML.PREDICT rewrite as `db.sql("SELECT * FROM ML.PREDICT(...)")`.
"""

from __future__ import annotations

import atexit
import itertools
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
from sqlglot import exp

from sqlml import convert, featurestats, predlog, sqlcatalog, tf_onnx
from sqlml.artifacts import pack_directory, sha256
from sqlml.errors import ArtifactError, InvalidNameError, SqlCompileError, SqlmlError
from sqlml.names import SCORE_SUFFIX, ModelRef, check_name
from sqlml.outputs import OutputLayout
from sqlml.registry import TRAINED_SOURCE, ModelVersion, Registry
from sqlml.rewrite import duckdb as duckdb_rewrite
from sqlml.rewrite.duckdb import quote
from sqlml.runtimes import FORMATS, Runtime, load_runtime
from sqlml.signature import Signature
from sqlml.sqlmodel import NotCompilable, SqlModel, check_against_runtime, compile_onnx
from sqlml.sqltext import (
    alter_model_alias,
    mentions_ml,
    parse,
    parse_export_model,
    property_options,
    split_statements,
)
from sqlml.udf import NULL_POLICIES, ModelFunction, ScoreFunction

if TYPE_CHECKING:
    from sqlml.bulk import BulkResult

_input_names = itertools.count(1)
_open_databases: weakref.WeakSet[Database] = weakref.WeakSet()


@atexit.register
def _close_open_databases() -> None:
    """Close what scripts left open: duckdb 2.0 prints 'nanobind: leaked ...' at exit when a
    connection with Python functions is still open."""
    for database in list(_open_databases):
        database.close()


MACRO_DIR = Path(__file__).resolve().parent / "udfs"


def load_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Create the SQL macros of sqlml/udfs/*.sql (pure SQL, persisted in the database file)."""
    for path in sorted(MACRO_DIR.glob("*.sql")):
        con.execute(path.read_text()).fetchall()


def connect(
    path: str | Path | None = None,
    *,
    read_only: bool = False,
    threads: int | None = None,
    storage_version: str | None = None,
    memory_limit: str | None = None,
) -> Database:
    """Open (or create) a DuckDB database file with sqlml's catalog and model functions.

    `storage_version` (e.g. 'v1.4.0') creates a new file older DuckDB versions can open, such
    as the DuckDB 1.5 shell that runs the models compiled to SQL (an existing file keeps its
    format). `memory_limit` (e.g. '1GB') caps DuckDB's buffer cache: by default DuckDB may
    keep up to 80% of RAM of a scanned table cached, which big scoring jobs do not need.
    """
    return Database(
        path, read_only=read_only, threads=threads, storage_version=storage_version,
        memory_limit=memory_limit,
    )  # fmt: skip


LOCK_WAIT_SECONDS = 5.0


def _connect_waiting_for_lock(
    path: str, read_only: bool, config: dict[str, Any]
) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, retried for a few seconds while another process holds the file lock.

    Why: `sqlml serve` opens the file for a few milliseconds at each poll and log flush, so a
    `sqlml register` run at that moment must wait its turn rather than fail. A lock held for
    longer (an open notebook session) still fails, with DuckDB's message naming the holder.
    """
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            return duckdb.connect(path, read_only=read_only, config=config)
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _probe(x: float) -> float:
    return x


def _temp_macro_sql(function_name: str, form: sqlcatalog.SqlForm, layout: OutputLayout) -> str:
    """A session macro `"<name>"(...)` calling the version's stored macro `sqlml."m@N"`; for
    `"<name>:score"` the one number of that macro's STRUCT (`ScoreFunction`'s)."""
    parameters = ", ".join(quote(p) for p in form.inputs)
    body = f"{form.macro}({parameters})"
    if function_name.endswith(SCORE_SUFFIX):
        body = score_of_struct(layout, body)
    return f"CREATE OR REPLACE TEMP MACRO {quote(function_name)}({parameters}) AS {body}"


def score_of_struct(layout: OutputLayout, struct: str) -> str:
    """SQL for the score (`ScoreFunction.result`) of a model function's STRUCT value."""
    signature = layout.signature
    name = signature.probabilities if layout.is_binary else layout.regression_output.name
    tensor = next(t for t in signature.outputs if t.name == name)
    value = f"({struct}).{quote(name)}"
    if layout.is_binary and not tensor.is_scalar:
        value += "[2]"
    return f"CAST({value} AS DOUBLE)"


class Database:
    """A DuckDB connection plus the model registry and one SQL function per model."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        read_only: bool = False,
        threads: int | None = None,
        storage_version: str | None = None,
        memory_limit: str | None = None,
        connection: duckdb.DuckDBPyConnection | None = None,
    ):
        config: dict[str, Any] = {"threads": threads} if threads else {}
        if memory_limit:
            config["memory_limit"] = memory_limit
        if storage_version:
            config["storage_compatibility_version"] = storage_version
        self.read_only = read_only
        self._owns_connection = connection is None
        if connection is None:
            self.path = str(path) if path else ":memory:"
            self.con = _connect_waiting_for_lock(self.path, read_only, config)
        else:  # someone else's connection (dbt's): used, never closed
            self.con = connection
            rows = connection.execute(
                "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
            ).fetchall()
            self.path = (rows[0][0] if rows else None) or ":memory:"
        self._runtimes: dict[str, Runtime] = {}
        self._runtime_lock = threading.Lock()
        self._functions: dict[str, tuple[str, ModelFunction]] = {}  # function name -> (sha, fn)
        # names served as SQL -> (the form, the CREATE TEMP MACRO statement)
        self._macro_functions: dict[str, tuple[sqlcatalog.SqlForm, str]] = {}
        self._sql_models: dict[tuple[str, str | None, str], SqlModel] = {}
        self._verified: set[str] = set()  # artifacts whose sha256 was checked (SQL path)
        try:
            self.registry = Registry(self.con, read_only=read_only)
            if not read_only:
                load_macros(self.con)
                with sqlcatalog.transaction(self.con):
                    featurestats.ensure_table(self.con)
                    predlog.ensure_tables(self.con)
            self._log = predlog.LogBuffer()
            self._log.register(self.con)
            self._sql_tables = self._init_sql_forms()
            self.sync_functions()
        except BaseException:
            if self._owns_connection:
                self.con.close()
            raise
        _open_databases.add(self)

    @classmethod
    def attach(cls, connection: duckdb.DuckDBPyConnection) -> Database:
        """sqlml on a connection opened elsewhere (e.g. by dbt-duckdb): the catalog and model
        functions are set up on it; `close()` leaves the connection open."""
        return cls(connection=connection)

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.flush_prediction_log()
        finally:
            if self._owns_connection:
                self.con.close()
        _open_databases.discard(self)

    # -- SQL -------------------------------------------------------------------------------
    def sql(self, text: str) -> duckdb.DuckDBPyRelation | None:
        """Run one or more statements; return the last one's relation (None for DROP MODEL).

        Relations are lazy, as in DuckDB: each fetch (`.df()`, `.fetchall()`) runs the query,
        and so the models, again. Materialize with CREATE TABLE ... AS to score once.
        """
        result = None
        for statement in split_statements(text):
            self.flush_prediction_log()  # rows sampled by earlier statements (see sqlml.predlog)
            result = self._run_statement(statement)
        return result

    # -- prediction logging (sqlml.predlog) --------------------------------------------------
    def log_predictions(self, name: str, sample_rate: float = 1.0, *, key: str) -> None:
        """Log a `sample_rate` share of ML.PREDICT's rows of `name` (by a hash of `key`, the
        column ground truth will join on) into sqlml.prediction_log; 0 turns logging off."""
        name = check_name(name)
        self.registry.resolve(ModelRef(name))
        check_name(key, "key column")
        with sqlcatalog.transaction(self.con):
            predlog.configure(self.con, name, sample_rate, key)

    def flush_prediction_log(self) -> int:
        """Write the rows sampled so far to sqlml.prediction_log (sqlml does it before each
        statement and at close); returns how many."""
        if self.read_only or not hasattr(self, "_log"):
            return 0
        return self._log.flush(self.con)

    def log_slices(self, model: str) -> list[tuple[int, str, int]]:
        if not self._has_table("prediction_log"):
            return []
        slices = []
        for window, span in predlog.WINDOWS.items():
            recent = f" AND logged_at >= current_timestamp - INTERVAL '{span}'" if span else ""
            rows = self.con.execute(
                "SELECT version, count(*) FROM sqlml.prediction_log WHERE model = ? "
                f"AND ground_truth IS NOT NULL{recent} GROUP BY version ORDER BY version",
                [model],
            ).fetchall()
            slices += [(version, window, count) for version, count in rows]
        return slices

    def prediction_logging(self, ref: ModelRef) -> tuple[predlog.LogSettings, int] | None:
        if self.read_only or not self._has_table("prediction_logging"):
            return None
        settings = predlog.settings(self.con).get(ref.name)
        if settings is None:
            return None
        return settings, self.registry.resolve(ref).version

    def _run_statement(self, text: str) -> duckdb.DuckDBPyRelation | None:
        if not mentions_ml(text):
            return self.con.sql(text)
        alias_change = alter_model_alias(text)
        if alias_change is not None:
            name, alias, version = alias_change
            if version is None:
                self.delete_alias(name, alias)
            else:
                self.set_alias(name, alias, version)
            return self.con.sql(
                "SELECT model, alias, version FROM sqlml.model_aliases WHERE model = ? "
                "ORDER BY alias",
                params=[check_name(name)],
            )
        export = parse_export_model(text)
        if export is not None:
            return self._export_statement(*export)
        tree = parse(text)
        if isinstance(tree, exp.Create) and tree.kind == "MODEL":
            return self._create_model(tree)
        if isinstance(tree, exp.Drop) and tree.kind == "MODEL":
            for table in tree.args.get("tables") or [tree.this]:
                self.drop_model(table.name, missing_ok=bool(tree.args.get("exists")))
            return None
        if not duckdb_rewrite.has_predict(tree):
            return self.con.sql(text)
        return self.con.sql(duckdb_rewrite.rewrite_sql(tree, self))

    def _create_model(self, tree: exp.Create) -> duckdb.DuckDBPyRelation:
        """CREATE MODEL: import an artifact (model_type='onnx'|'tensorflow', model_path=...)
        or train one on the rows of `AS SELECT ...` (sqlml.training)."""
        from sqlml import training
        from sqlml.dialect import Sqlml
        from sqlml.sqltext import model_ref

        model_ref(tree.this)  # refuses dataset-qualified names
        name = check_name(tree.this.name)
        options = property_options(tree)
        replace = bool(tree.args.get("replace"))
        exists = name in self.registry.names()
        skip = exists and bool(tree.args.get("exists"))  # IF NOT EXISTS: a no-op
        if tree.expression is not None:
            spec = training.parse_options(name, options)  # checked before anything runs
            if exists and not (replace or skip):  # fail now rather than after training
                latest = self.registry.resolve(ModelRef(name)).version
                raise SqlmlError(
                    f"model {name} already exists (version {latest}); use CREATE OR REPLACE "
                    "MODEL to add a new version"
                )
            if not skip:
                self._check_not_builtin(name)
                query = tree.expression
                sql = (
                    duckdb_rewrite.rewrite_sql(query, self)
                    if duckdb_rewrite.has_predict(query)
                    else query.sql(dialect=Sqlml)
                )
                trained = training.train(self.con, spec, sql)
                self.register_model(
                    name,
                    trained.pipeline,
                    label=trained.label,
                    inputs=trained.inputs,
                    training_data=trained.features,
                    must_be_new=not replace,
                    source=f"{TRAINED_SOURCE}{spec.model_type.name}",
                    **{"nulls": "nan", **spec.register},  # NULL numbers: the training mean
                )
        else:
            model_type = str(options.pop("model_type", "")).lower()
            path = options.pop("model_path", None)
            if training.is_training_type(model_type):
                raise SqlCompileError(
                    f"CREATE MODEL {name}: model_type='{model_type}' trains a model: add "
                    "AS SELECT ... (the training data)"
                )
            if model_type not in FORMATS or not path:
                raise SqlCompileError(
                    f"CREATE MODEL {name}: OPTIONS need model_type='onnx' or 'tensorflow' and "
                    "model_path='...'"
                )
            labels = options.pop("input_label_cols", None)
            label = options.pop("label", labels[0] if isinstance(labels, list) and labels else None)
            kwargs = {
                k: options.pop(k)
                for k in ("classes", "nulls", "description", "engine", "training_data")
                if k in options
            }
            if options:
                raise SqlCompileError(f"CREATE MODEL {name}: unknown option(s) {sorted(options)}")
            if not skip:
                self.register_model(
                    name,
                    str(path).removesuffix("/*"),
                    format=model_type,
                    label=label,
                    must_be_new=not replace,
                    **kwargs,
                )
        version = self.registry.resolve(ModelRef(name))
        return self.con.sql(
            "SELECT ? AS model, ? AS version", params=[version.name, version.version]
        )

    def _export_statement(self, ref: str, options: dict[str, Any]) -> duckdb.DuckDBPyRelation:
        """EXPORT MODEL m OPTIONS(uri='dir', format='saved_model'|'tflite')."""
        uri = options.pop("uri", None)
        fmt = options.pop("format", "saved_model")
        if options:
            raise SqlCompileError(f"EXPORT MODEL {ref}: unknown option(s) {sorted(options)}")
        if not uri:
            raise SqlCompileError(f"EXPORT MODEL {ref}: OPTIONS(uri='...') is required")
        version = self.model(ref)  # resolved once: the row names the version written
        path = self.export_model(version.ref, uri, format=fmt)
        return self.con.sql(
            "SELECT ? AS model, ? AS version, ? AS format, ? AS uri",
            params=[version.name, version.version, str(fmt).lower(), str(path)],
        )

    def export_model(self, ref: str, uri: str | Path, *, format: str = "saved_model") -> Path:
        """Write a version as a TensorFlow SavedModel (signatures `serving_default` and
        `keyed_prediction`) or a .tflite file, for TF Serving or devices (sqlml.export)."""
        from sqlml.export import export_artifact
        from sqlml.export.target import export_target

        version = self.model(ref)
        target = export_target(version.ref, uri, format)
        data = self.registry.artifact(version)  # sha256-verified
        return export_artifact(
            version.format, data, version.signature, version.ref, target, format.lower()
        )

    # -- models ----------------------------------------------------------------------------
    def register_model(
        self,
        name: str,
        model: Any,
        *,
        label: str | None = None,
        classes: list | None = None,
        inputs: dict[str, str] | list[str] | None = None,
        nulls: str = "null",
        description: str | None = None,
        format: str | None = None,
        must_be_new: bool = False,
        engine: str = "auto",
        training_data: Any = None,
        source: str | None = None,
    ) -> ModelVersion:
        """Add a version of `name` from an .onnx file, SavedModel folder, sklearn or Keras model.

        `label` names the target column (adds `predicted_<label>` columns); `classes` gives class
        labels when the artifact does not carry them (Keras); `nulls` is what a NULL input does:
        'null' (that row's prediction is NULL), 'nan' (floats become NaN) or 'error'.
        `engine`: 'auto' compiles the model to SQL when it can (docs/sql.md, "Models compiled
        to SQL"), 'sql' fails unless it can, 'runtime' never compiles it.
        `training_data` (a table name, SELECT text, relation or DataFrame) stores per-input
        statistics for ML.FEATURE_INFO and ML.VALIDATE_DATA_SKEW. `source` (stored in the
        catalog) says where the artifact came from; by default it is derived from `model`.
        """
        name = check_name(name)
        self._check_not_builtin(name)
        if label is not None:
            check_name(label, "label column")
        if nulls not in NULL_POLICIES:
            raise SqlmlError(f"model {name}: nulls must be one of {NULL_POLICIES}, got {nulls!r}")
        if engine not in sqlcatalog.ENGINES:
            raise SqlmlError(
                f"model {name}: engine must be one of {sqlcatalog.ENGINES}, got {engine!r}"
            )
        fmt, data, derived_source = self._artifact_from(name, model, inputs, format)
        source = source or derived_source
        runtime = load_runtime(fmt, data, name)  # proves the artifact loads before storing it
        signature: Signature = runtime.signature.with_classes(classes)
        if classes and not signature.is_classifier:
            raise ArtifactError(
                f"model {name}: no float output matches {len(classes)} classes "
                f"(outputs: {[t.name for t in signature.outputs]})"
            )
        compiled, reason = self._compile_sql(fmt, data, runtime, signature, label, nulls, engine)
        if engine == "sql" and compiled is None:
            raise SqlmlError(f"model {name}: engine='sql' but it does not compile to SQL: {reason}")
        stats = self._training_stats(name, signature, training_data)
        onnx_form, onnx_reason = (
            self._onnx_form(runtime, signature, engine) if fmt == "tensorflow" else (None, None)
        )

        def store_sql_form(added: ModelVersion) -> None:  # inside the registration transaction
            sqlcatalog.record(self.con, added.name, added.version, engine, compiled, reason)
            if stats:
                featurestats.record(self.con, added.name, added.version, stats)
            if fmt == "tensorflow":
                self.registry.add_derived(
                    added, "onnx", onnx_form[0] if onnx_form else None,
                    tf_onnx.CONVERTER_VERSION, onnx_reason,
                )  # fmt: skip
            self._sync_sql_macros()

        version = self.registry.add_version(
            name,
            fmt,
            data,
            signature,
            label=label,
            nulls=nulls,
            source=source,
            description=description,
            must_be_new=must_be_new,
            on_added=store_sql_form,
        )
        with self._runtime_lock:
            self._runtimes.setdefault(version.sha256, onnx_form[1] if onnx_form else runtime)
        self.sync_functions()
        return version

    def _training_stats(
        self, name: str, signature: Signature, data: Any
    ) -> list[featurestats.FeatureStats]:
        """Statistics of the model's inputs over its training data (before any write)."""
        if data is None:
            return []
        view = f"__sqlml_training_{next(_input_names)}"
        if isinstance(data, str):
            text = data.strip()
            source = (
                text
                if text.lower().startswith(("select", "with", "from"))
                else (f"SELECT * FROM {duckdb_rewrite.quote(text)}")
            )
        else:
            self.con.register(view, data)
            source = f"SELECT * FROM {view}"
        try:
            return featurestats.compute(self.con, source, [t.name for t in signature.inputs])
        except duckdb.Error as error:
            raise SqlmlError(f"model {name}: cannot read training_data: {error}") from None
        finally:
            if not isinstance(data, str):
                self.con.unregister(view)

    @staticmethod
    def _onnx_form(
        runtime: Runtime, signature: Signature, engine: str
    ) -> tuple[tuple[bytes, Runtime] | None, str | None]:
        """A TensorFlow model translated to ONNX and checked against TF (sqlml.tf_onnx):
        onnxruntime serves it ~3x faster. Else None and why not."""
        if engine == "runtime":
            return None, "registered with engine='runtime'"
        try:
            data = tf_onnx.convert(runtime.serving_function, signature)  # type: ignore[attr-defined]
            translated = load_runtime("onnx", data, "probe")
            tf_onnx.verify(runtime, translated, signature)
        except tf_onnx.NotConvertible as error:
            return None, str(error)
        except Exception as error:  # noqa: BLE001 - the model still runs in TensorFlow
            return None, f"translation failed: {type(error).__name__}: {error}"
        return (data, translated), None

    def _check_not_builtin(self, name: str) -> None:
        """A model is a SQL function: it must not shadow one of DuckDB's (e.g. `text`, `sum`)."""
        if name in self.registry.names():
            return
        builtin = self.con.execute(
            "SELECT count(*) FROM duckdb_functions() WHERE lower(function_name) = ?", [name]
        ).fetchall()[0][0]
        if not builtin:  # functions of autoloadable extensions (e.g. `text`) show up only here
            try:
                self.con.create_function(name, _probe, ["DOUBLE"], "DOUBLE")
                self.con.remove_function(name)
            except duckdb.Error:
                builtin = 1
        if builtin:
            raise InvalidNameError(
                f"invalid model name {name!r}: DuckDB already has a function of that name; "
                f"pick another (e.g. {name}_model)"
            )

    def _artifact_from(
        self, name: str, model: Any, inputs: Any, fmt: str | None
    ) -> tuple[str, bytes, str]:
        if isinstance(model, (str, Path)):
            path = Path(model)
            if path.is_dir():
                if not (path / "saved_model.pb").is_file():
                    raise ArtifactError(f"model {name}: {path} is a folder without saved_model.pb")
                return "tensorflow", pack_directory(path), str(path)
            if not path.is_file():
                raise ArtifactError(f"model {name}: no file or folder at {path}")
            if fmt not in (None, "onnx"):
                raise ArtifactError(
                    f"model {name}: {path} is a file; a TensorFlow model is a folder"
                )
            return "onnx", path.read_bytes(), str(path)
        if isinstance(model, bytes):
            return "onnx", model, "bytes"
        if type(model).__name__ == "ModelProto":
            return "onnx", model.SerializeToString(), "onnx.ModelProto"
        if convert.is_sklearn_model(model):
            columns = convert.sklearn_inputs(model, inputs)
            try:
                data = convert.sklearn_to_onnx(model, columns)
            except ArtifactError as error:
                raise ArtifactError(f"model {name}: {error}") from None
            return "onnx", data, f"sklearn:{type(model).__name__}"
        if convert.is_keras_model(model):
            with tempfile.TemporaryDirectory(prefix="sqlml-keras-") as folder:
                return (
                    "tensorflow",
                    pack_directory(convert.keras_to_saved_model(model, folder)),
                    "keras",
                )
        raise ArtifactError(
            f"model {name}: cannot register a {type(model).__name__}; pass an .onnx path, a "
            "SavedModel folder, a scikit-learn estimator or a Keras model"
        )

    def artifact_changed(self, name: str, path: str | Path) -> bool:
        """Whether an .onnx file or SavedModel folder differs from the latest version of `name`
        (or `name` has none): what project runs and the dbt plugin register."""
        path = Path(path)
        data = pack_directory(path) if path.is_dir() else path.read_bytes()
        if name not in self.registry.names():
            return True
        return self.registry.resolve(ModelRef(name)).sha256 != sha256(data)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point an alias (e.g. 'champion') at a version; moving it back is a rollback."""
        self.registry.set_alias(name, alias, version)
        self.sync_functions()

    def delete_alias(self, name: str, alias: str) -> None:
        self.registry.delete_alias(name, alias)
        self.sync_functions()

    def drop_model(self, name: str, *, missing_ok: bool = False) -> None:
        self.registry.drop(
            name,
            missing_ok=missing_ok,
            on_drop=self._drop_derived,
        )
        self.sync_functions()

    def _drop_derived(self, model: str) -> None:
        """Inside DROP MODEL's transaction: its SQL forms, training statistics and logging
        settings (logged predictions stay: they are history)."""
        sqlcatalog.drop_model(self.con, model)
        if self._has_table("feature_stats"):
            featurestats.drop_model(self.con, model)
        if self._has_table("prediction_logging"):
            predlog.configure(self.con, model, 0, "")

    def models(self) -> duckdb.DuckDBPyRelation:
        return self.con.sql("SELECT * FROM sqlml.models")

    def model(self, ref: str) -> ModelVersion:
        return self.registry.resolve(ModelRef.parse(ref))

    def predict(
        self, ref: str, data: Any, *, threshold: float | None = None, engine: str = "auto"
    ) -> duckdb.DuckDBPyRelation:
        """ML.PREDICT over a relation, DataFrame, Arrow table or table name.

        `engine`: 'auto', 'sql' or 'runtime', as ML.PREDICT's option (docs/sql.md).
        """
        duckdb_rewrite.check_engine(ref, engine)
        model = ModelRef.parse(ref)
        view = f"__sqlml_input_{next(_input_names)}"
        if isinstance(data, str):
            source = duckdb_rewrite.quote(data)  # a table or view name, quoted, never spliced
        else:  # a relation, DataFrame or Arrow table, visible to this connection only
            self.con.register(view, data)
            source = view
        fields = [f"{float(threshold)!r} AS threshold"] if threshold is not None else []
        fields += [f"'{engine}' AS engine"] if engine != "auto" else []
        options = f", STRUCT({', '.join(fields)})" if fields else ""
        return self.sql(f"SELECT * FROM ML.PREDICT(MODEL `{model}`, TABLE {source}{options})")

    # -- functions (also the Binder of the DuckDB rewrite) ------------------------------------
    def runtime(self, version: ModelVersion) -> Runtime:
        """The loaded model for a version: loaded once, after its sha256 is verified."""
        with self._runtime_lock:
            runtime = self._runtimes.get(version.sha256)
        if runtime is None:
            runtime = load_runtime(*self.registry.runtime_artifact(version), version.ref)
            with self._runtime_lock:
                runtime = self._runtimes.setdefault(version.sha256, runtime)
        return runtime

    def model_function(self, ref: ModelRef) -> tuple[str, ModelFunction]:
        """The Python (Arrow) function running `ref` in its runtime, and its SQL name.

        A name whose model runs as SQL is a macro (`sync_functions`); its runtime function
        is then `"<name>#runtime"`, made on first use (ML.PREDICT's engine='runtime').
        """
        version = self.registry.resolve(ref)
        self.runtime(version)  # load (and verify) now, so errors surface before the query runs
        name = str(ref) if str(ref) not in self._macro_functions else f"{ref}#runtime"
        return name, self._ensure_function(name, version)

    def query_columns(self, sql: str) -> list[tuple[str, str]]:
        relation = self.con.sql(sql)
        return [(name, str(type_)) for name, type_ in zip(relation.columns, relation.types)]

    def _ensure_function(self, function_name: str, version: ModelVersion) -> ModelFunction:
        current = self._functions.get(function_name)
        if current and current[0] == version.sha256 + str(version.version):
            return current[1]
        if current:
            self.con.remove_function(function_name)
        kind = ScoreFunction if function_name.endswith(SCORE_SUFFIX) else ModelFunction
        function = kind(
            version.ref,
            version.signature,
            version.label,
            lambda: self.runtime(version),
            version.nulls,
        )
        self.con.create_function(
            function_name,
            function.as_duckdb_callable(),
            function.parameter_types,
            function.duckdb_type,
            type="arrow",
            null_handling="special",
            side_effects=True,
        )
        self._functions[function_name] = (version.sha256 + str(version.version), function)
        return function

    def sync_functions(self) -> None:
        """Functions `name` (newest version), `name@N` (each version), `name@alias` (each alias).

        Registering a function is cheap: the model itself loads on first use. The macros of
        the models compiled to SQL (`sqlml."name@N"` ...) follow the same names.
        """
        wanted = self._function_targets()
        if not self.read_only:
            with sqlcatalog.transaction(self.con):
                self._sync_sql_macros(wanted)
        as_sql = self._sql_served(wanted)
        scores = {
            name + SCORE_SUFFIX: version
            for name, version in wanted.items()
            if OutputLayout(version.signature, version.label).has_score
        }
        as_sql |= {
            name: as_sql[base]
            for name in scores
            if (base := name.removesuffix(SCORE_SUFFIX)) in as_sql
        }
        wanted = wanted | scores
        for function_name in list(self._functions):
            if function_name.removesuffix("#runtime") not in wanted or function_name in as_sql:
                self.con.remove_function(function_name)
                del self._functions[function_name]
        for function_name in list(self._macro_functions):
            if as_sql.get(function_name) != self._macro_functions[function_name][0]:
                self.con.execute(f"DROP MACRO IF EXISTS temp.main.{quote(function_name)}")
                del self._macro_functions[function_name]
        for function_name, version in wanted.items():
            if function_name in as_sql:
                self._ensure_macro_function(function_name, as_sql[function_name], version)
            else:
                self._ensure_function(function_name, version)

    def _sql_served(self, wanted: dict[str, ModelVersion]) -> dict[str, sqlcatalog.SqlForm]:
        """Function names whose version runs as SQL: a macro serves them, not Python.

        As fast as `sqlml."<name>"(...)`, ~3x the Arrow function (benchmarks/README.md).
        """
        if not self._sql_tables:
            return {}
        forms = sqlcatalog.forms(self.con)
        served = {}
        for function_name, version in wanted.items():
            form = forms.get((version.name, version.version))
            if form is not None and form.compiled:
                served[function_name] = form
        return served

    def _ensure_macro_function(
        self, function_name: str, form: sqlcatalog.SqlForm, version: ModelVersion
    ) -> None:
        """A session macro `"<name>"(...)` calling the version's stored macro `sqlml."m@N"`."""
        current = self._macro_functions.get(function_name)
        if current is not None and current[0] == form:
            return
        layout = OutputLayout(version.signature, version.label)
        statement = _temp_macro_sql(function_name, form, layout)
        self.con.execute(statement).fetchall()
        self._macro_functions[function_name] = (form, statement)

    def temp_macro_statements(self) -> dict[str, str]:
        """Function name -> the CREATE TEMP MACRO serving it (models compiled to SQL).

        Python functions are database-wide but TEMP macros belong to one connection: another
        connection to the same database (a dbt cursor) runs these to call `m(...)` too.
        """
        return {name: statement for name, (_, statement) in self._macro_functions.items()}

    def _function_targets(self) -> dict[str, ModelVersion]:
        wanted: dict[str, ModelVersion] = {}
        for version in self.registry.versions():
            wanted[version.ref] = version
            wanted[version.name] = version  # versions come oldest first: the newest wins
        for name in self.registry.names():
            for alias in self.registry.aliases(name):
                wanted[f"{name}@{alias}"] = self.registry.resolve(ModelRef(name, alias=alias))
        return wanted

    # -- models compiled to SQL (sqlmodel translates, sqlcatalog stores) ---------------------
    def _init_sql_forms(self) -> bool:
        """Create the catalog tables and compile versions registered before (or by an older
        translator); True when the tables exist."""
        if self.read_only:
            return sqlcatalog.has_tables(self.con)
        with sqlcatalog.transaction(self.con):
            sqlcatalog.ensure_tables(self.con)
        known = sqlcatalog.forms(self.con)
        for version in self.registry.versions():
            form = known.get((version.name, version.version))
            if form is not None and (
                form.compiler >= sqlcatalog.COMPILER_VERSION or form.engine == "runtime"
            ):
                continue
            engine = form.engine if form is not None else "auto"
            try:  # only ONNX graphs compile: no need to load (say) TensorFlow to know that
                runtime = self.runtime(version) if version.format == "onnx" else None
                data = self.registry.artifact(version) if version.format == "onnx" else b""
            except SqlmlError as error:
                compiled, reason = None, f"the artifact does not load: {error}"
            else:
                compiled, reason = self._compile_sql(
                    version.format, data, runtime, version.signature, version.label,
                    version.nulls, engine,
                )  # fmt: skip
            with sqlcatalog.transaction(self.con):
                sqlcatalog.record(self.con, version.name, version.version, engine, compiled, reason)
        return True

    def _compile_sql(
        self,
        fmt: str,
        data: bytes,
        runtime: Runtime | None,
        signature: Signature,
        label: str | None,
        nulls: str,
        engine: str,
    ) -> tuple[SqlModel | None, str | None]:
        """The model as SQL, checked against its runtime on probe rows; else why not."""
        if engine == "runtime":
            return None, "registered with engine='runtime'"
        if fmt != "onnx":
            return None, f"{fmt} models are not compiled to SQL (only ONNX graphs)"
        try:
            compiled = compile_onnx(data, signature, label, nulls)
            function = ModelFunction("probe", signature, label, lambda: runtime, nulls)
            check_against_runtime(compiled, function.predict_arrow)
        except NotCompilable as error:
            return None, str(error)
        except Exception as error:  # noqa: BLE001 - the model still runs in its runtime
            return None, f"translation failed: {type(error).__name__}: {error}"
        return compiled, None

    def _sync_sql_macros(self, wanted: dict[str, ModelVersion] | None = None) -> None:
        """Macros `sqlml."<function name>"` for each function whose version compiled to SQL
        (the caller runs the transaction)."""
        if not self._sql_tables:
            return
        targets = wanted if wanted is not None else self._function_targets()
        compiled = {key for key, form in sqlcatalog.forms(self.con).items() if form.compiled}
        sqlcatalog.sync_macros(
            self.con,
            {
                name: (v.name, v.version)
                for name, v in targets.items()
                if (v.name, v.version) in compiled
            },
        )

    def sql_form(self, ref: str | ModelRef) -> sqlcatalog.SqlForm | None:
        """Whether (and how) a model version runs as SQL: its macro, plan, or why not."""
        version = self.registry.resolve(ModelRef.parse(ref) if isinstance(ref, str) else ref)
        if not self._sql_tables:
            return None
        return sqlcatalog.lookup(self.con, version.name, version.version)

    def runs_as(self, ref: str | ModelRef) -> str:
        """How ML.PREDICT (engine='auto') scores a model version, in words: its SQL form, or
        the runtime and why it is not SQL. Says what a team sees in the speed it gets."""
        version = self.registry.resolve(ModelRef.parse(ref) if isinstance(ref, str) else ref)
        form = self.sql_form(ModelRef(version.name, version=version.version))
        if form is not None and form.compiled:
            return f'SQL: the expressions of macro sqlml."{version.ref}", no Python'
        scorer = self.runtime(version).scorer
        reason = form.reason if form is not None and form.reason else None
        return f"{scorer} (not SQL: {reason})" if reason else scorer

    def sql_function(self, ref: ModelRef, engine: str = "auto") -> sqlcatalog.SqlFunction | None:
        """The compiled form ML.PREDICT inlines for `engine` ('auto' | 'sql'), or None to use
        the model function ('runtime', or 'auto' for a model that did not compile)."""
        if engine == "runtime":
            return None
        version = self.registry.resolve(ref)
        form = self.sql_form(ModelRef(version.name, version=version.version))
        if form is not None and form.compiled and form.plan is not None:
            if version.sha256 not in self._verified:
                # the SQL form stands for the artifact: refuse it too if that was modified
                self.registry.artifact(version)
                self._verified.add(version.sha256)
            return sqlcatalog.SqlFunction(
                form, version.signature, OutputLayout(version.signature, version.label)
            )
        if engine == "sql":
            why = form.reason if form is not None else "it has not been compiled"
            raise SqlCompileError(
                f"ML.PREDICT(MODEL {ref}): engine 'sql' needs a model compiled to SQL, and "
                f"{version.ref} is not: {why}"
            )
        return None

    def sql_model(self, ref: ModelRef) -> SqlModel | None:
        """A registered version's SQL expressions (for compiling to BigQuery), if it has them."""
        if ref.name not in self.registry.names():
            return None
        version = self.registry.resolve(ref)
        form = self.sql_form(ModelRef(version.name, version=version.version))
        if form is None or not form.compiled:
            return None
        key = (version.sha256, version.label, version.nulls)
        if key not in self._sql_models:
            data = self.registry.artifact(version)
            try:  # checked against onnxruntime when it was registered
                compiled = compile_onnx(data, version.signature, version.label, version.nulls)
            except NotCompilable:  # e.g. a smaller node budget than at registration
                return None
            self._sql_models[key] = compiled
        return self._sql_models[key]

    def predict_to(self, ref: str, source: Any, target: str | Path, **options: Any) -> BulkResult:
        """Stream `source` through a model into a .parquet/.csv file or a table (see sqlml.bulk).

        Bounded memory, all cores, large batches, a progress bar on a terminal; the output is
        ML.PREDICT's (input columns, then model columns) and a failed job writes nothing.
        """
        from sqlml.bulk import predict_to

        return predict_to(self, ref, source, target, **options)

    # -- compile ---------------------------------------------------------------------------
    def compile(self, text: str, target: str = "bigquery", **options: Any) -> str:
        """Translate sqlml SQL for another engine (see `sqlml.rewrite.bigquery`)."""
        if target != "bigquery":
            raise SqlCompileError(f"unknown compile target {target!r} (supported: bigquery)")
        from sqlml.rewrite.bigquery import compile_bigquery

        return compile_bigquery(
            text,
            layouts=self.output_layout,
            sql_models=self.sql_model,
            feature_stats=self.feature_stats,
            describe=self.describe_if_possible,
            **options,
        ).sql

    # -- what the ML.* expansion asks (sqlml.rewrite.mlfunctions.MLBinder) --------------------
    def model_layout(self, ref: ModelRef) -> OutputLayout:
        version = self.registry.resolve(ref)
        return OutputLayout(version.signature, version.label)

    def feature_stats(self, ref: ModelRef) -> list[featurestats.FeatureStats]:
        """Training statistics stored at registration (`training_data=`), or []."""
        version = self.registry.resolve(ref)
        if not self._has_table("feature_stats"):
            return []
        return featurestats.load(self.con, version.name, version.version)

    def describe(self, sql: str) -> list[tuple[str, str]]:
        relation = self.sql(sql)
        if relation is None:
            raise SqlCompileError("expected a query")
        return [(name, str(type_)) for name, type_ in zip(relation.columns, relation.types)]

    def describe_if_possible(self, sql: str) -> list[tuple[str, str]] | None:
        """Column types for compiling, when the query's tables also exist in this database."""
        try:
            return self.describe(sql)
        except (duckdb.Error, SqlmlError):
            return None

    def _has_table(self, table: str) -> bool:
        rows = self.con.execute(
            "SELECT 1 FROM duckdb_tables() WHERE schema_name = 'sqlml' AND table_name = ? "
            "AND database_name = current_database()",
            [table],
        ).fetchall()
        return bool(rows)

    def output_layout(self, ref: ModelRef) -> OutputLayout | None:
        """What a registered model outputs, for compiling its predicted_<label> columns."""
        if ref.name not in self.registry.names():
            return None
        version = self.registry.resolve(ref)
        native = self.registry.is_trained(version)  # BigQuery trains it: a native model there
        return OutputLayout(version.signature, version.label, native=native)
