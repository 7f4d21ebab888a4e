"""`sqlml run`: a project's files materialized in DuckDB, in ref() order.

Before any file: project macros (udfs/*.sql) are created and declared models whose artifact
changed (sha256) get a new version. Then each file becomes a table or view in its own
transaction. A file that fails rolls back alone: what was built before stays, files that ref()
it (directly or not) are skipped, independent files still run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import sqlglot.errors

from sqlml.errors import SqlmlError
from sqlml.project import Project, ProjectError, Rendered, check_model_files, order, select
from sqlml.session import Database
from sqlml.sqlcatalog import transaction
from sqlml.sqltext import split_statements


@dataclass
class FileResult:
    name: str
    status: str  # 'ok' | 'error' | 'skipped'
    materialized: str
    rows: int | None = None
    seconds: float = 0.0
    message: str = ""


@dataclass
class RunResult:
    registered: list[str]  # "name@version" of models registered by this run
    files: list[FileResult]

    @property
    def ok(self) -> bool:
        return all(f.status == "ok" for f in self.files)


def run(
    project: Project,
    db: Database,
    *,
    selectors: Iterable[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    report: Callable[[FileResult, int, int], None] | None = None,
) -> RunResult:
    """Render, order, register models, then materialize the selected files (see module doc)."""
    rendered = project.render("duckdb", overrides)
    sequence = order(rendered)
    chosen = select(rendered, selectors)
    check_model_files(project)
    _create_udfs(project, db)
    registered = register_changed_models(project, db)
    schema = project.targets["duckdb"].get("schema", "main")
    db.con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema.replace(chr(34), chr(34) * 2)}"')
    failed: set[str] = set()
    results: list[FileResult] = []
    todo = [name for name in sequence if name in chosen]
    for number, name in enumerate(todo, start=1):
        file = rendered[name]
        broken = [r for r in file.refs if r in failed]
        if broken:
            why = f"depends on {', '.join(broken)}, which failed"
            result = FileResult(name, "skipped", file.materialized, message=why)
            failed.add(name)
        else:
            result = _materialize(project, db, file)
            if result.status != "ok":
                failed.add(name)
        results.append(result)
        if report is not None:
            report(result, number, len(todo))
    return RunResult(registered, results)


def _create_udfs(project: Project, db: Database) -> None:
    for path in project.udfs:
        where = path.relative_to(project.root)
        try:
            with transaction(db.con):
                for statement in split_statements(path.read_text()):
                    db.con.execute(statement).fetchall()
        except duckdb.Error as error:
            raise ProjectError(f"{where}{_line(error)}: {error}") from None


def register_changed_models(project: Project, db: Database) -> list[str]:
    """A new version of every declared model whose artifact is new or changed."""
    registered = []
    for model in project.models:
        if not db.artifact_changed(model.name, model.path):
            continue
        training = None
        if model.training_data:
            training = project.render_text(
                model.training_data, "duckdb", f"models.yml model {model.name} training_data"
            )
        try:
            version = db.register_model(
                model.name, str(model.path), format=model.format, label=model.label,
                classes=model.classes, nulls=model.nulls, description=model.description,
                engine=model.engine, training_data=training,
            )  # fmt: skip
        except SqlmlError as error:
            raise ProjectError(f"models.yml model {model.name}: {error}") from None
        registered.append(version.ref)
    return registered


def _materialize(project: Project, db: Database, file: Rendered) -> FileResult:
    relation = project.relation(file.name, "duckdb")
    kind = "TABLE" if file.materialized == "table" else "VIEW"
    other = "VIEW" if kind == "TABLE" else "TABLE"  # dropped first if the file switched kinds
    started = time.perf_counter()
    try:
        with transaction(db.con):
            if _existing_kind(db, project, file.name) == other:
                db.con.execute(f"DROP {other} {relation}")
            # same line as the file's first line: DuckDB's LINE n is the file's line n
            db.sql(f"CREATE OR REPLACE {kind} {relation} AS {file.sql}")
            rows = None
            if kind == "TABLE":
                rows = db.con.execute(f"SELECT count(*) FROM {relation}").fetchall()[0][0]
    except (duckdb.Error, SqlmlError, sqlglot.errors.SqlglotError) as error:
        where = file.path.relative_to(project.root)
        message = str(error).strip().splitlines()
        text = " ".join(line.strip() for line in message if line.strip())
        return FileResult(
            file.name, "error", file.materialized,
            seconds=time.perf_counter() - started, message=f"{where}{_line(error)}: {text}",
        )  # fmt: skip
    return FileResult(file.name, "ok", file.materialized, rows, time.perf_counter() - started)


def _existing_kind(db: Database, project: Project, name: str) -> str | None:
    """'TABLE' or 'VIEW' when the file's relation already exists (a file may switch kinds)."""
    schema = project.targets["duckdb"].get("schema", "main")
    rows = db.con.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_schema = ? "
        "AND table_name = ? AND table_catalog = current_database()",
        [schema, name],
    ).fetchall()
    if not rows:
        return None
    return "VIEW" if rows[0][0] == "VIEW" else "TABLE"


def _line(error: BaseException) -> str:
    """' line N' from a DuckDB ('LINE N:') or sqlglot (errors[].line) error, if it has one."""
    if isinstance(error, sqlglot.errors.ParseError) and error.errors:
        line = error.errors[0].get("line")
        return f" line {line}" if line else ""
    found = re.search(r"\bLINE (\d+):", str(error))
    return f" line {found.group(1)}" if found else ""
