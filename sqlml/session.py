"""`sqlml.connect()`: a DuckDB connection where every registered model is a SQL function.

The Python API is a thin layer over the SQL pipeline: `db.predict(...)` runs the same
ML.PREDICT rewrite as `db.sql("SELECT * FROM ML.PREDICT(...)")`.
"""

from __future__ import annotations

import atexit
import itertools
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
from sqlglot import exp

from sqlml import convert
from sqlml.artifacts import pack_directory
from sqlml.errors import ArtifactError, SqlCompileError, SqlmlError
from sqlml.names import ModelRef, check_name
from sqlml.outputs import OutputLayout
from sqlml.registry import ModelVersion, Registry
from sqlml.rewrite import duckdb as duckdb_rewrite
from sqlml.runtimes import FORMATS, Runtime, load_runtime
from sqlml.signature import Signature
from sqlml.sqltext import mentions_ml, parse, property_options, split_statements
from sqlml.udf import NULL_POLICIES, ModelFunction

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
MACRO_DIR = Path(__file__).resolve().parent.parent / "udfs"


def load_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Create the SQL macros of udfs/*.sql (pure SQL, persisted in the database file)."""
    for path in sorted(MACRO_DIR.glob("*.sql")):
        con.execute(path.read_text()).fetchall()


def connect(
    path: str | Path | None = None, *, read_only: bool = False, threads: int | None = None
) -> Database:
    """Open (or create) a DuckDB database file with sqlml's catalog and model functions."""
    return Database(path, read_only=read_only, threads=threads)


class Database:
    """A DuckDB connection plus the model registry and one SQL function per model."""

    def __init__(
        self, path: str | Path | None = None, *, read_only: bool = False, threads: int | None = None
    ):
        config = {"threads": threads} if threads else {}
        self.path = str(path) if path else ":memory:"
        self.con = duckdb.connect(self.path, read_only=read_only, config=config)
        self._runtimes: dict[str, Runtime] = {}
        self._runtime_lock = threading.Lock()
        self._functions: dict[str, tuple[str, ModelFunction]] = {}  # function name -> (sha, fn)
        try:
            self.registry = Registry(self.con, read_only=read_only)
            if not read_only:
                load_macros(self.con)
            self.sync_functions()
        except BaseException:
            self.con.close()
            raise
        _open_databases.add(self)

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
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
            result = self._run_statement(statement)
        return result

    def _run_statement(self, text: str) -> duckdb.DuckDBPyRelation | None:
        if not mentions_ml(text):
            return self.con.sql(text)
        tree = parse(text)
        if isinstance(tree, exp.Create) and tree.kind == "MODEL":
            return self._create_model(tree)
        if isinstance(tree, exp.Drop) and tree.kind == "MODEL":
            for table in tree.args.get("tables") or [tree.this]:
                self.drop_model(table.name, missing_ok=bool(tree.args.get("exists")))
            return None
        if not duckdb_rewrite.has_predict(tree):
            return self.con.sql(text)
        rewritten = duckdb_rewrite.rewrite(tree, self)
        return self.con.sql(rewritten.sql(dialect="duckdb"))

    def _create_model(self, tree: exp.Create) -> duckdb.DuckDBPyRelation:
        name = tree.this.name
        options = property_options(tree)
        if tree.expression is not None:
            raise SqlCompileError(
                f"CREATE MODEL {name} ... AS SELECT (training) is not supported yet; "
                "import a trained model: OPTIONS(model_type='onnx'|'tensorflow', model_path=...)"
            )
        model_type = str(options.pop("model_type", "")).lower()
        path = options.pop("model_path", None)
        if model_type not in FORMATS or not path:
            raise SqlCompileError(
                f"CREATE MODEL {name}: OPTIONS need model_type='onnx' or 'tensorflow' and "
                "model_path='...'"
            )
        labels = options.pop("input_label_cols", None)
        label = options.pop("label", labels[0] if isinstance(labels, list) and labels else None)
        kwargs = {k: options.pop(k) for k in ("classes", "nulls", "description") if k in options}
        if options:
            raise SqlCompileError(f"CREATE MODEL {name}: unknown option(s) {sorted(options)}")
        if tree.args.get("exists") and check_name(name) in self.registry.names():
            version = self.registry.resolve(ModelRef(check_name(name)))
        else:
            version = self.register_model(
                name,
                str(path).removesuffix("/*"),
                format=model_type,
                label=label,
                must_be_new=not tree.args.get("replace"),
                **kwargs,
            )
        return self.con.sql(
            "SELECT ? AS model, ? AS version", params=[version.name, version.version]
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
    ) -> ModelVersion:
        """Add a version of `name` from an .onnx file, SavedModel folder, sklearn or Keras model.

        `label` names the target column (adds `predicted_<label>` columns); `classes` gives class
        labels when the artifact does not carry them (Keras); `nulls` is what a NULL input does:
        'null' (that row's prediction is NULL), 'nan' (floats become NaN) or 'error'.
        """
        name = check_name(name)
        if label is not None:
            check_name(label, "label column")
        if nulls not in NULL_POLICIES:
            raise SqlmlError(f"model {name}: nulls must be one of {NULL_POLICIES}, got {nulls!r}")
        fmt, data, source = self._artifact_from(name, model, inputs, format)
        runtime = load_runtime(fmt, data, name)  # proves the artifact loads before storing it
        signature: Signature = runtime.signature.with_classes(classes)
        if classes and not signature.is_classifier:
            raise ArtifactError(
                f"model {name}: no float output matches {len(classes)} classes "
                f"(outputs: {[t.name for t in signature.outputs]})"
            )
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
        )
        with self._runtime_lock:
            self._runtimes.setdefault(version.sha256, runtime)
        self.sync_functions()
        return version

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
            return (
                "onnx",
                convert.sklearn_to_onnx(model, columns),
                f"sklearn:{type(model).__name__}",
            )
        if convert.is_keras_model(model):
            return "tensorflow", pack_directory(convert.keras_to_saved_model(model)), "keras"
        raise ArtifactError(
            f"model {name}: cannot register a {type(model).__name__}; pass an .onnx path, a "
            "SavedModel folder, a scikit-learn estimator or a Keras model"
        )

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point an alias (e.g. 'champion') at a version; moving it back is a rollback."""
        self.registry.set_alias(name, alias, version)
        self.sync_functions()

    def delete_alias(self, name: str, alias: str) -> None:
        self.registry.delete_alias(name, alias)
        self.sync_functions()

    def drop_model(self, name: str, *, missing_ok: bool = False) -> None:
        self.registry.drop(name, missing_ok=missing_ok)
        self.sync_functions()

    def models(self) -> duckdb.DuckDBPyRelation:
        return self.con.sql("SELECT * FROM sqlml.models")

    def model(self, ref: str) -> ModelVersion:
        return self.registry.resolve(ModelRef.parse(ref))

    def predict(
        self, ref: str, data: Any, *, threshold: float | None = None
    ) -> duckdb.DuckDBPyRelation:
        """ML.PREDICT over a relation, DataFrame, Arrow table or table name."""
        model = ModelRef.parse(ref)
        view = f"__sqlml_input_{next(_input_names)}"
        if isinstance(data, str):
            source = duckdb_rewrite.quote(data)  # a table or view name, quoted, never spliced
        elif isinstance(data, duckdb.DuckDBPyRelation):
            data.create_view(view, replace=True)
            source = view
        else:
            self.con.register(view, data)
            source = view
        options = f", STRUCT({float(threshold)!r} AS threshold)" if threshold is not None else ""
        return self.sql(f"SELECT * FROM ML.PREDICT(MODEL `{model}`, TABLE {source}{options})")

    # -- functions (also the Binder of the DuckDB rewrite) ------------------------------------
    def runtime(self, version: ModelVersion) -> Runtime:
        """The loaded model for a version: loaded once, after its sha256 is verified."""
        with self._runtime_lock:
            runtime = self._runtimes.get(version.sha256)
        if runtime is None:
            runtime = load_runtime(version.format, self.registry.artifact(version), version.ref)
            with self._runtime_lock:
                runtime = self._runtimes.setdefault(version.sha256, runtime)
        return runtime

    def model_function(self, ref: ModelRef) -> tuple[str, ModelFunction]:
        version = self.registry.resolve(ref)
        self.runtime(version)  # load (and verify) now, so errors surface before the query runs
        return str(ref), self._ensure_function(str(ref), version)

    def query_columns(self, sql: str) -> list[tuple[str, str]]:
        relation = self.con.sql(sql)
        return [(name, str(type_)) for name, type_ in zip(relation.columns, relation.types)]

    def _ensure_function(self, function_name: str, version: ModelVersion) -> ModelFunction:
        current = self._functions.get(function_name)
        if current and current[0] == version.sha256 + str(version.version):
            return current[1]
        if current:
            self.con.remove_function(function_name)
        function = ModelFunction(
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
            function.layout.duckdb_type(),
            type="arrow",
            null_handling="special",
            side_effects=True,
        )
        self._functions[function_name] = (version.sha256 + str(version.version), function)
        return function

    def sync_functions(self) -> None:
        """Functions `name` (newest version), `name@N` (each version), `name@alias` (each alias).

        Registering a function is cheap: the model itself loads on first use.
        """
        wanted: dict[str, ModelVersion] = {}
        for version in self.registry.versions():
            wanted[version.ref] = version
            wanted[version.name] = version  # versions come oldest first: the newest wins
        for name in self.registry.names():
            for alias in self.registry.aliases(name):
                wanted[f"{name}@{alias}"] = self.registry.resolve(ModelRef(name, alias=alias))
        for function_name in list(self._functions):
            if function_name not in wanted:
                self.con.remove_function(function_name)
                del self._functions[function_name]
        for function_name, version in wanted.items():
            self._ensure_function(function_name, version)

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

        return compile_bigquery(text, layouts=self.output_layout, **options).sql

    def output_layout(self, ref: ModelRef) -> OutputLayout | None:
        """What a registered model outputs, for compiling its predicted_<label> columns."""
        if ref.name not in self.registry.names():
            return None
        version = self.registry.resolve(ref)
        return OutputLayout(version.signature, version.label)
