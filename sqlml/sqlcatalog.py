"""Models compiled to SQL, stored in the database: `sqlml.sql_models` and the macros.

Every ONNX version has a row in `sqlml.sql_models` saying whether it compiled to SQL (then
with the staged plan ML.PREDICT inlines and the macro's body) or why not. Each compiled model
function name is a macro in the `sqlml` schema returning the same STRUCT as the function:

    sqlml."churn@2"(age, plan, spend)      -- version 2
    sqlml.churn(age, plan, spend)          -- the newest version, when it is compiled
    sqlml."churn@champion"(...)            -- an alias, when its version is compiled

`sqlml.sql_macros` lists the macros sqlml made, so they follow new versions, alias moves and
DROP MODEL. Macros live in the database file: any DuckDB process can call them, without Python
(the DuckDB 1.5 shell needs a file created with `storage_version='v1.4.0'`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb

from sqlml.outputs import OutputLayout
from sqlml.signature import Signature
from sqlml.sqlmodel import COMPILER_VERSION, Plan, SqlModel, quote

__all__ = ["COMPILER_VERSION", "ENGINES", "SqlForm", "SqlFunction"]

ENGINES = ("auto", "sql", "runtime")

_DDL = """
CREATE TABLE IF NOT EXISTS sqlml.sql_models (
    model VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    engine VARCHAR NOT NULL,      -- asked for at registration: auto | sql | runtime
    compiler INTEGER NOT NULL,    -- the translator version that decided
    compiled BOOLEAN NOT NULL,
    reason VARCHAR,               -- why not, when not compiled
    tree_nodes INTEGER,
    ops VARCHAR[],
    inputs VARCHAR[],             -- the macro's parameters, in order
    body VARCHAR,                 -- the macro body: the STRUCT as one expression
    plan JSON,                    -- the same, in stages, as ML.PREDICT inlines it
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS sqlml.sql_macros (
    name VARCHAR PRIMARY KEY,     -- the macro sqlml."<name>": m, m@3 or m@alias
    model VARCHAR NOT NULL,
    version INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class SqlForm:
    """What the catalog says about one version's SQL form."""

    model: str
    version: int
    engine: str
    compiler: int
    compiled: bool
    reason: str | None
    tree_nodes: int | None
    inputs: tuple[str, ...]
    body: str | None
    plan: Plan | None

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    @property
    def macro(self) -> str:
        """The version's macro as SQL: sqlml."m@3"."""
        return macro_name(self.ref)


@dataclass(frozen=True)
class SqlFunction:
    """A compiled version as the DuckDB rewrite uses it (quacks like udf.ModelFunction)."""

    form: SqlForm
    signature: Signature
    layout: OutputLayout

    @property
    def plan(self) -> Plan:
        assert self.form.plan is not None
        return self.form.plan


def macro_name(function_name: str) -> str:
    return f"sqlml.{quote(function_name)}"


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    con.execute("BEGIN TRANSACTION").fetchall()
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK").fetchall()
        raise
    con.execute("COMMIT").fetchall()


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_DDL).fetchall()


def has_tables(con: duckdb.DuckDBPyConnection) -> bool:
    rows = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'sqlml' "
        "AND table_name IN ('sql_models', 'sql_macros') AND database_name = current_database()"
    ).fetchall()
    return rows[0][0] == 2


def record(
    con: duckdb.DuckDBPyConnection,
    model: str,
    version: int,
    engine: str,
    compiled: SqlModel | None,
    reason: str | None,
) -> None:
    """Store a version's SQL form (or why it has none); the caller runs the transaction."""
    ref = f"{model}@{version}"
    con.execute(
        "DELETE FROM sqlml.sql_models WHERE model = ? AND version = ?", [model, version]
    ).fetchall()
    con.execute(
        "INSERT INTO sqlml.sql_models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            model,
            version,
            engine,
            COMPILER_VERSION,
            compiled is not None,
            reason,
            compiled.tree_nodes if compiled else None,
            list(compiled.ops) if compiled else None,
            compiled.parameters if compiled else None,
            compiled.macro_body(ref) if compiled else None,
            compiled.plan(ref).to_json() if compiled else None,
        ],
    ).fetchall()


def forms(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, int], SqlForm]:
    """Every version's row (without reading plans and bodies)."""
    rows = con.execute(
        "SELECT model, version, engine, compiler, compiled, reason, tree_nodes, inputs "
        "FROM sqlml.sql_models"
    ).fetchall()
    return {
        (m, v): SqlForm(m, v, e, c, ok, r, n, tuple(i or ()), None, None)
        for m, v, e, c, ok, r, n, i in rows
    }


def lookup(con: duckdb.DuckDBPyConnection, model: str, version: int) -> SqlForm | None:
    with con.cursor() as cursor:
        rows = cursor.execute(
            "SELECT model, version, engine, compiler, compiled, reason, tree_nodes, inputs, "
            "body, plan FROM sqlml.sql_models WHERE model = ? AND version = ?",
            [model, version],
        ).fetchall()
    if not rows:
        return None
    m, v, e, c, ok, r, n, i, body, plan = rows[0]
    return SqlForm(
        m, v, e, c, ok, r, n, tuple(i or ()), body, Plan.from_json(plan) if plan else None
    )


def _create_macro(con: duckdb.DuckDBPyConnection, name: str, form: SqlForm) -> None:
    parameters = ", ".join(quote(p) for p in form.inputs)
    con.execute(f"CREATE OR REPLACE MACRO {macro_name(name)}({parameters}) AS {form.body}")


def sync_macros(con: duckdb.DuckDBPyConnection, wanted: dict[str, tuple[str, int]]) -> None:
    """Make the `sqlml` macros exactly `wanted` (macro name -> compiled model version).

    Only what changed is written; the caller runs the transaction.
    """
    rows = con.execute("SELECT name, model, version FROM sqlml.sql_macros").fetchall()
    existing = {name: (model, version) for name, model, version in rows}
    present = {
        row[0]
        for row in con.execute(
            "SELECT function_name FROM duckdb_functions() WHERE schema_name = 'sqlml' "
            "AND function_type = 'macro' AND database_name = current_database()"
        ).fetchall()
    }
    bodies: dict[tuple[str, int], SqlForm | None] = {}
    for name, target in wanted.items():
        if existing.get(name) == target and name in present:
            continue
        if target not in bodies:
            bodies[target] = lookup(con, *target)
        form = bodies[target]
        if form is None or not form.compiled:
            continue
        _create_macro(con, name, form)
        con.execute("DELETE FROM sqlml.sql_macros WHERE name = ?", [name]).fetchall()
        con.execute("INSERT INTO sqlml.sql_macros VALUES (?, ?, ?)", [name, *target]).fetchall()
    for name in set(existing) - set(wanted):
        con.execute(f"DROP MACRO IF EXISTS {macro_name(name)}").fetchall()
        con.execute("DELETE FROM sqlml.sql_macros WHERE name = ?", [name]).fetchall()


def drop_model(con: duckdb.DuckDBPyConnection, model: str) -> None:
    """Remove a model's macros and rows; the caller runs the transaction."""
    names = con.execute("SELECT name FROM sqlml.sql_macros WHERE model = ?", [model]).fetchall()
    for (name,) in names:
        con.execute(f"DROP MACRO IF EXISTS {macro_name(name)}").fetchall()
    con.execute("DELETE FROM sqlml.sql_macros WHERE model = ?", [model]).fetchall()
    con.execute("DELETE FROM sqlml.sql_models WHERE model = ?", [model]).fetchall()
