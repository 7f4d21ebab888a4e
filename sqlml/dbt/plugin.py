"""The dbt-duckdb plugin: sqlml's models and ML.* functions on dbt's DuckDB connection.

profiles.yml (docs/dbt.md):

    plugins:
      - module: sqlml.dbt
        config:
          models:            # optional: a new version whenever the artifact's sha256 changed
            - {name: churn, path: artifacts/churn.onnx, label: churned}

When dbt opens its DuckDB connection (`configure_connection`; once per process, as the plugin
requires `keep_open: true`), sqlml is set up on a cursor of its own of that connection
(`Database.attach`), the models declared in the config are registered, and the SQL function
`sqlml_rewrite(request)` is created. dbt macros are Jinja and reach Python only through SQL:
`{{ sqlml.predict('churn', ref('customers')) }}` runs
`SELECT sqlml_rewrite('{"function": "predict", ...}')` and inlines the DuckDB SQL it returns, the
SQL `Database.sql` would run for `SELECT * FROM ML.PREDICT(MODEL churn, TABLE ...)`.

Why it is built this way:
- A function may not use the connection that executes it, and the rewrite describes the input
  query: it runs on sqlml's own cursor, under a lock (dbt runs several threads; a Database is
  not thread-safe), never on dbt's cursors.
- Python functions (the models, sqlml_rewrite) are database-wide, so every dbt cursor sees
  them, but a transaction only sees those created before it began: every function a rewrite
  can name (`m#runtime` for engine='runtime' included) is created here, up front.
- TEMP macros are per connection: those serving models compiled to SQL under their plain name
  (`m(...)` in hand-written SQL) are created again on each dbt cursor (`configure_cursor`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.flags import get_flags
from duckdb import DuckDBPyConnection
from duckdb.sqltypes import VARCHAR
from sqlglot import exp

from sqlml.errors import ArtifactError, SqlCompileError, SqlmlError
from sqlml.names import SCORE_SUFFIX, ModelRef, check_name
from sqlml.rewrite import duckdb as duckdb_rewrite
from sqlml.session import Database
from sqlml.sqltext import mentions_ml, parse, split_statements
from sqlml.templates import render

REWRITE_FUNCTION = "sqlml_rewrite"
# the `ml.*` macros of sqlml/sql/ml.sql that the dbt macros (macros/sqlml.sql) call
ML_MACROS = (
    "predict",
    "evaluate",
    "confusion_matrix",
    "roc_curve",
    "top_k",
    "feature_info",
    "validate_skew",
    "validate_drift",
)
_MODEL_OPTIONS = {
    "format", "label", "classes", "nulls", "description", "engine", "training_data",
}  # fmt: skip


@dataclass(frozen=True)
class ModelSpec:
    """A model artifact declared in the plugin config: registered when it changed."""

    name: str
    path: Path
    options: dict[str, Any] = field(default_factory=dict)  # register_model's keywords


def model_specs(config: Mapping[str, Any], root: Path) -> list[ModelSpec]:
    """The config's `models:` list, relative paths resolved against `root` (the dbt project).

    Other keys are left alone: without a `config:` dbt-duckdb passes the profile's settings.
    """
    entries = config.get("models") or []
    if not isinstance(entries, list):
        raise SqlmlError("sqlml plugin config: `models` must be a list of {name, path, ...}")
    specs = []
    for number, entry in enumerate(entries, start=1):
        where = f"sqlml plugin config: models entry {number}"
        if not isinstance(entry, Mapping) or not {"name", "path"} <= entry.keys():
            raise SqlmlError(f"{where}: needs at least `name` and `path`, got {entry!r}")
        unknown = set(entry) - _MODEL_OPTIONS - {"name", "path"}
        if unknown:
            raise SqlmlError(
                f"{where} ({entry['name']}): unknown key(s) {sorted(unknown)} "
                f"(known: name, path, {', '.join(sorted(_MODEL_OPTIONS))})"
            )
        path = Path(str(entry["path"])).expanduser()
        options = {k: v for k, v in entry.items() if k in _MODEL_OPTIONS}
        specs.append(ModelSpec(check_name(entry["name"]), root / path, options))
    return specs


def register_changed(db: Database, specs: list[ModelSpec]) -> list[str]:
    """Register a new version of each declared model whose artifact is new or changed
    (sha256 of the file, or of the packed SavedModel folder); returns the new `name@N`."""
    registered = []
    for spec in specs:
        if not spec.path.exists():
            raise ArtifactError(f"sqlml plugin config: model {spec.name}: no file at {spec.path}")
        if not db.artifact_changed(spec.name, spec.path):
            continue
        version = db.register_model(spec.name, str(spec.path), **spec.options)
        registered.append(version.ref)
    return registered


def sqlml_text(request: Mapping[str, Any]) -> str:
    """The sqlml query a macro asks for: `{"sql": text}`, or an `ml.*` macro rendered as
    `SELECT * FROM ML...` (`{"function": "predict", "args": [...], "options": {...}}`)."""
    if "sql" in request:
        return str(request["sql"])
    function = request.get("function")
    if function not in ML_MACROS:
        raise SqlCompileError(f"sqlml: unknown macro {function!r} (known: {', '.join(ML_MACROS)})")
    return render(
        "SELECT * FROM {{ ml[call](*args, **options) }}",
        call=function,
        args=list(request.get("args") or []),
        options=dict(request.get("options") or {}),
    )


def rewrite(db: Database, text: str) -> str:
    """The DuckDB SQL `db.sql(text)` would run for one sqlml query."""
    statements = split_statements(text)
    if len(statements) != 1:
        raise SqlCompileError(f"sqlml: expected one query, got {len(statements)} statements")
    statement = statements[0]
    if not mentions_ml(statement):
        return statement
    tree = parse(statement)
    if not isinstance(tree, exp.Query):
        raise SqlCompileError(
            "sqlml: only queries run in dbt models; register models in the plugin config "
            "(`models:`) or beforehand with `sqlml register`"
        )
    if not duckdb_rewrite.has_predict(tree):
        return statement
    return duckdb_rewrite.rewrite_sql(tree, db)


class Rewriter:
    """The SQL function `sqlml_rewrite(request VARCHAR) -> VARCHAR` the dbt macros call:
    request is JSON (`sqlml_text`), the result the DuckDB SQL to inline."""

    def __init__(self, db: Database):
        self.db = db
        self._lock = threading.Lock()

    def __call__(self, request: str) -> str:
        with self._lock:
            self.db.flush_prediction_log()  # rows logged by earlier models (sqlml.predlog)
            parsed = json.loads(request)
            if not isinstance(parsed, dict):
                raise SqlCompileError(f"sqlml_rewrite: expected a JSON object, got {request!r}")
            text = sqlml_text(parsed)
            sql = rewrite(self.db, text)
        # the sqlml text heads the SQL dbt writes to target/compiled, for whoever reads it
        return f"/* sqlml: {text.replace('*/', '* /')} */\n{sql}"


class Plugin(BasePlugin):
    """`module: sqlml.dbt` in profiles.yml (see the module docstring)."""

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        if self.creds is not None and not (self.creds.keep_open or self.creds.path == ":memory:"):
            raise SqlmlError(
                "the sqlml plugin needs `keep_open: true` in the dbt profile: else dbt reopens "
                "the database between models, loading every model again and losing the "
                "predictions sampled for sqlml.prediction_log"
            )
        project = getattr(get_flags(), "PROJECT_DIR", None)
        root = Path(project).resolve() if project else Path.cwd()
        self.specs = model_specs(plugin_config, root)
        self.db: Database | None = None
        self.cursor_setup: list[str] = []

    def configure_connection(self, conn: DuckDBPyConnection) -> None:
        own = conn.cursor()
        try:
            db = Database.attach(own)
            register_changed(db, self.specs)
            for name in db.temp_macro_statements():  # creates `name#runtime` (see above)
                if not name.endswith(SCORE_SUFFIX):  # `"name:score"` calls `name`'s macro
                    db.model_function(ModelRef.parse(name))
            own.create_function(
                REWRITE_FUNCTION, Rewriter(db), [VARCHAR], VARCHAR, side_effects=True
            )
        except BaseException:
            # dbt drops a connection its plugins failed on: close it, so that the next
            # attempt starts from a fresh database instance, without this one's functions
            own.close()
            conn.close()
            raise
        self.db = db
        self.cursor_setup = list(db.temp_macro_statements().values())

    def configure_cursor(self, cursor: DuckDBPyConnection) -> None:
        for statement in self.cursor_setup:
            cursor.execute(statement).fetchall()
