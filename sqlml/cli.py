"""The `sqlml` command: run SQL with models, manage the catalog, compile for BigQuery, a shell.

Every subcommand is a thin call into `sqlml.connect()` / `Database`; the shell exists because
DuckDB's own CLI cannot load the Python functions that serve the models.

    sqlml sql DB "SELECT * FROM ML.PREDICT(MODEL m, TABLE t)"
    sqlml models DB
    sqlml register DB NAME PATH [--label y]
    sqlml alias DB NAME ALIAS VERSION
    sqlml drop DB NAME
    sqlml compile --target bigquery FILE [-o OUT.sql]
    sqlml shell [DB]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TextIO

import duckdb
import pyarrow as pa
import sqlglot.errors

import sqlml
from sqlml.errors import SqlmlError
from sqlml.names import check_name
from sqlml.sqltext import split_statements
from sqlml.udf import NULL_POLICIES, parameter_type

FORMATS = ("table", "csv", "json")
DEFAULT_MAX_ROWS = 40
MAX_CELL_WIDTH = 80
HISTORY_FILE = "~/.sqlml_history"
PROMPT = "sqlml> "
CONTINUATION = "   ...> "

# Errors a user can cause: reported as one `Error: ...` line, never as a traceback.
USER_ERRORS = (SqlmlError, duckdb.Error, sqlglot.errors.SqlglotError, OSError)

# Statements whose result is a table even when DuckDB calls its only column "Count".
_QUERY_KEYWORDS = {
    "select", "with", "from", "values", "table", "show", "describe", "summarize", "pragma",
    "explain", "call", "pivot", "unpivot", "(",
}  # fmt: skip


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_text(error: BaseException) -> str:
    """The message for `Error: ...` (sqlglot underlines the culprit with terminal escapes)."""
    return _ANSI.sub("", str(error))


# -- output ---------------------------------------------------------------------------------
def _is_command_result(statement: str, relation: duckdb.DuckDBPyRelation) -> bool:
    """True for the row count DuckDB returns from CREATE/INSERT/...: nothing worth printing."""
    if relation.columns != ["Count"]:
        return False
    text = re.sub(r"^(\s+|--[^\n]*\n?|/\*.*?\*/)*", "", statement, flags=re.S)
    match = re.match(r"\(|[A-Za-z]+", text)
    return not match or match.group(0).lower() not in _QUERY_KEYWORDS


def _short_type(type_: object) -> str:
    text = str(type_)
    head = text.split("(", 1)[0]
    if head in ("STRUCT", "MAP", "UNION"):
        suffix = re.search(r"(\[\d*\])*$", text).group(0)
        return f"{head.lower()}(...){suffix}"
    return text.lower()


def _is_numeric(type_: object) -> bool:
    text = str(type_)
    return not text.endswith("]") and bool(
        re.match(r"(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|FLOAT|DOUBLE|DECIMAL|REAL)\b", text)
    )


def _cell(value: str | None) -> str:
    if value is None:
        return "NULL"
    value = value.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return value if len(value) <= MAX_CELL_WIDTH else value[: MAX_CELL_WIDTH - 1] + "…"


def _text_rows(
    relation: duckdb.DuckDBPyRelation, projection: str = "CAST(COLUMNS(*) AS VARCHAR)"
) -> Iterator[list[tuple]]:
    """The result as text, rendered by DuckDB, in batches of rows (run once, streamed)."""
    for batch in relation.project(projection).to_arrow_reader(2048):
        yield list(zip(*(column.to_pylist() for column in batch.columns)))


def write_table(
    relation: duckdb.DuckDBPyRelation, out: TextIO, max_rows: int = DEFAULT_MAX_ROWS
) -> None:
    """A DuckDB-style box: header, types, the first `max_rows` rows and a row count.

    Values are rendered by DuckDB itself (CAST AS VARCHAR), so nested types read as in DuckDB.
    """
    names, types = relation.columns, relation.types
    rows: list[tuple] = []
    total = 0
    for batch in _text_rows(relation):
        total += len(batch)
        if len(rows) < max_rows:
            rows.extend(batch[: max_rows - len(rows)])
    header = [_cell(n) for n in names]
    type_row = [_short_type(t) for t in types]
    body = [[_cell(v) for v in row] for row in rows]
    widths = [
        max([len(header[i]), len(type_row[i])] + [len(r[i]) for r in body])
        for i in range(len(names))
    ]
    right = [_is_numeric(t) for t in types]

    def line(left: str, fill: str, middle: str, end: str) -> str:
        return left + middle.join(fill * (w + 2) for w in widths) + end

    def centred(cells: list[str]) -> str:
        return "│" + "│".join(f" {c.center(w)} " for c, w in zip(cells, widths)) + "│"

    def aligned(cells: list[str]) -> str:
        return (
            "│"
            + "│".join(
                f" {c.rjust(w) if r else c.ljust(w)} " for c, w, r in zip(cells, widths, right)
            )
            + "│"
        )

    lines = [line("┌", "─", "┬", "┐"), centred(header), centred(type_row)]
    lines.append(line("├", "─", "┼", "┤"))
    lines.extend(aligned(r) for r in body)
    lines.append(line("└", "─", "┴", "┘"))
    count = f"{total} row" + ("" if total == 1 else "s")
    if total > len(rows):
        count += f" ({len(rows)} shown)"
    lines.append(f"  {count}")
    out.write("\n".join(lines) + "\n")


def write_csv(relation: duckdb.DuckDBPyRelation, out: TextIO) -> None:
    """Header plus rows; NULL is an empty field; lists and structs as DuckDB prints them."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(relation.columns)
    for batch in _text_rows(relation):
        writer.writerows(["" if v is None else v for v in row] for row in batch)


def write_json(relation: duckdb.DuckDBPyRelation, out: TextIO) -> None:
    """A JSON array with one object per row (values encoded by DuckDB's to_json)."""
    keys = [json.dumps(name) for name in relation.columns]
    first = True
    out.write("[")
    for batch in _text_rows(relation, "CAST(to_json(COLUMNS(*)) AS VARCHAR)"):
        for row in batch:
            fields = ", ".join(f"{k}: {'null' if v is None else v}" for k, v in zip(keys, row))
            out.write(("\n" if first else ",\n") + "{" + fields + "}")
            first = False
    out.write("\n]\n" if not first else "]\n")


def write_result(
    relation: duckdb.DuckDBPyRelation | None,
    out: TextIO,
    fmt: str = "table",
    max_rows: int = DEFAULT_MAX_ROWS,
    statement: str = "",
) -> None:
    if relation is None or _is_command_result(statement, relation):
        return
    if fmt == "csv":
        write_csv(relation, out)
    elif fmt == "json":
        write_json(relation, out)
    else:
        write_table(relation, out, max_rows)
    out.flush()


def run_and_print(
    db: sqlml.Database,
    text: str,
    out: TextIO,
    fmt: str = "table",
    max_rows: int = DEFAULT_MAX_ROWS,
) -> None:
    """Run every statement; print the last one's result (what `sqlml sql` shows)."""
    last: tuple[str, duckdb.DuckDBPyRelation | None] | None = None
    for statement in split_statements(text):
        last = (statement, db.sql(statement))
    if last is not None:
        write_result(last[1], out, fmt, max_rows, last[0])


# -- helpers --------------------------------------------------------------------------------
@contextmanager
def open_database(
    path: str, *, must_exist: bool = False, read_only: bool = False
) -> Iterator[sqlml.Database]:
    """Open a database and always close it (an unclosed DuckDB 2.0 connection warns at exit)."""
    if (must_exist or read_only) and path != ":memory:" and not Path(path).exists():
        raise SqlmlError(f"no database file at {path}")
    db = sqlml.connect(path, read_only=read_only)
    try:
        yield db
    finally:
        db.close()


def _read_source(path: str) -> str:
    """The text of a file, or of stdin when the path is '-'."""
    return sys.stdin.read() if path == "-" else Path(path).read_text()


def _parse_classes(text: str | None) -> list | None:
    """`a,b,c` -> ['a', 'b', 'c']; all-integer lists become ints (`0,1` -> [0, 1])."""
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    if items and all(re.fullmatch(r"-?\d+", item) for item in items):
        return [int(item) for item in items]
    return items


# -- subcommands ----------------------------------------------------------------------------
def cmd_sql(args: argparse.Namespace) -> int:
    if args.file is not None and args.query is not None:
        raise SqlmlError("give the SQL either as an argument or with -f FILE, not both")
    if args.file is not None:
        text = _read_source(args.file)
    elif args.query is None or args.query == "-":
        if args.query is None and sys.stdin.isatty():
            raise SqlmlError('no SQL given: sqlml sql DB "SELECT ...", -f FILE, or - for stdin')
        text = sys.stdin.read()
    else:
        text = args.query
    with open_database(args.database) as db:
        run_and_print(db, text, sys.stdout, args.format, args.max_rows)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    with open_database(args.database, must_exist=True) as db:
        write_result(db.models(), sys.stdout, args.format, args.max_rows)
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    with open_database(args.database) as db:
        version = db.register_model(
            args.name,
            args.path,
            label=args.label,
            classes=_parse_classes(args.classes),
            nulls=args.nulls,
            description=args.description,
        )
        inputs = ", ".join(f"{t.name} {parameter_type(t)}" for t in version.signature.inputs)
        outputs = ", ".join(t.name for t in version.signature.outputs)
        runs_as = db.runs_as(version.ref)
    print(f"registered {version.name} version {version.version} (sha256 {version.sha256})")
    print(f"  call as {version.name}({inputs}) -> {outputs}")
    print(f"  ML.PREDICT runs it as {runs_as}")
    return 0


def cmd_alias(args: argparse.Namespace) -> int:
    with open_database(args.database, must_exist=True) as db:
        name = check_name(args.name)
        previous = db.registry.aliases(name).get(args.alias.lower())
        if args.delete:
            db.delete_alias(name, args.alias)
            print(f"deleted {name}@{args.alias.lower()} (was version {previous})")
            return 0
        db.set_alias(name, args.alias, args.version)
    was = f"was version {previous}" if previous is not None else "new alias"
    print(f"{name}@{args.alias.lower()} -> version {args.version} ({was})")
    return 0


def cmd_drop(args: argparse.Namespace) -> int:
    with open_database(args.database, must_exist=True) as db:
        name = check_name(args.name)
        existed = name in db.registry.names()
        db.drop_model(name, missing_ok=args.if_exists)
    print(f"dropped {name}" if existed else f"no model {name}")
    return 0


def _vars(text: str | None) -> dict[str, Any]:
    """--vars '{"k": 1}' (JSON, or YAML like dbt's --vars)."""
    if not text:
        return {}
    import yaml

    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SqlmlError(f"--vars is not valid JSON/YAML: {error}") from None
    if not isinstance(values, dict):
        raise SqlmlError("--vars must be a mapping, e.g. '{\"top_k\": 5}'")
    return values


def cmd_run(args: argparse.Namespace) -> int:
    from sqlml import project as projects
    from sqlml.project_run import run

    project = projects.load(args.project)
    database = Path(args.database) if args.database else None
    if database is None:
        database = projects.inside(
            project.root, project.targets["duckdb"]["database"], "targets.duckdb.database"
        )
    marks = {"ok": "OK   ", "error": "ERROR", "skipped": "SKIP "}

    def report(result: Any, number: int, total: int) -> None:
        what = result.materialized
        if result.rows is not None:
            what += f", {result.rows:,} rows"
        line = f"{number}/{total} {marks[result.status]} {result.name} ({what})"
        if result.status == "ok":
            line += f" in {result.seconds:.2f}s"
        else:
            line += f": {result.message}"
        print(line, flush=True)

    with open_database(str(database)) as db:
        result = run(project, db, selectors=args.select, overrides=_vars(args.vars), report=report)
    for ref in result.registered:
        print(f"registered {ref}")
    counts = {s: sum(f.status == s for f in result.files) for s in marks}
    print(f"done: {counts['ok']} ok, {counts['error']} failed, {counts['skipped']} skipped "
          f"-> {database}")  # fmt: skip
    return 0 if result.ok else 1


def cmd_compile_project(args: argparse.Namespace) -> int:
    from sqlml import project as projects
    from sqlml.project_compile import compile_project

    project = projects.load(args.file)
    out = Path(args.output) if args.output else project.root / "target" / "bigquery"
    compiled = compile_project(project, out, database=args.db, overrides=_vars(args.vars))
    for path in compiled.files:
        print(f"wrote {path}")
    print(f"wrote {compiled.out / 'manifest.json'}")
    uploads = compiled.manifest["uploads"]
    if uploads:
        print("upload these artifacts before running the SQL:")
        for upload in uploads:
            print(f"  {upload['command']}")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from sqlml.rewrite.bigquery import compile_bigquery

    if args.file != "-" and Path(args.file).is_dir():
        return cmd_compile_project(args)
    text = _read_source(args.file)
    base_dir = Path.cwd() if args.file == "-" else Path(args.file).resolve().parent
    output = Path(args.output) if args.output else None
    # copies of the model files go beside the output; SQL on stdout writes no files unless asked
    if args.artifacts:
        artifact_dir: Path | None = Path(args.artifacts)
    else:
        artifact_dir = output.parent / "artifacts" if output else None
    options = dict(
        dataset=args.dataset, model_uri=args.model_uri, artifact_dir=artifact_dir, base_dir=base_dir
    )
    if args.inline_models and not args.db:
        raise SqlmlError("--inline-models needs --db: the models' SQL form is in the registry")
    if args.db:  # the registry knows labels and classes: predicted_<label> columns compile too
        with open_database(args.db, read_only=True) as db:
            compiled = compile_bigquery(
                text,
                layouts=db.output_layout,
                sql_models=db.sql_model,
                inline_models=args.inline_models,
                feature_stats=db.feature_stats,
                describe=db.describe_if_possible,
                **options,
            )
    else:
        compiled = compile_bigquery(text, **options)
    sql = compiled.sql if compiled.sql.endswith("\n") or not compiled.sql else compiled.sql + "\n"
    if output is None:
        sys.stdout.write(sql)
        sys.stdout.flush()
        report = sys.stderr
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(sql)
        report = sys.stdout
        print(f"wrote {output}", file=report)
    if compiled.artifacts:
        where = f" to {args.model_uri}" if args.model_uri else ""
        print(f"upload these artifacts{where} before running the SQL:", file=report)
        for artifact in compiled.artifacts:
            print(f"  {artifact.upload_command}", file=report)
    return 0


def _query_argument(text: str) -> str:
    """`--query` text, or a file's text with @FILE (and stdin with -)."""
    if text == "-":
        return sys.stdin.read()
    if text.startswith("@"):
        return _read_source(text[1:])
    return text


def _data_source(args: argparse.Namespace) -> str:
    from sqlml.reports import source_sql

    if (args.query is None) == (args.table is None):
        raise SqlmlError("give the data with --query SQL or --table NAME (one of them)")
    query = None if args.query is None else _query_argument(args.query)
    return source_sql(query=query, table=args.table)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sqlml import reports

    source = _data_source(args)
    if args.plot:
        from sqlml.plots import check_plot_path

        check_plot_path(args.plot)  # before any work: a bad path fails fast
    with open_database(args.database, must_exist=True) as db:
        call = reports.evaluate_call(args.model, source, label=args.label, threshold=args.threshold)
        write_result(db.sql(f"SELECT * FROM ML.EVALUATE({call})"), sys.stdout, args.format)
        if args.plot:
            from sqlml.plots import plot_evaluation

            report = reports.evaluation_report(
                db, args.model, source, label=args.label, threshold=args.threshold
            )
            print(f"wrote {plot_evaluation(report, args.plot)}", file=sys.stderr)
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from sqlml import reports

    if (args.model is None) == (args.base is None):
        raise SqlmlError(
            "compare against a model's training data (--model NAME) or a base query (--base SQL)"
        )
    if args.plot:
        from sqlml.plots import check_plot_path

        check_plot_path(args.plot)
    options: dict[str, object] = {}
    if args.threshold is not None:
        options = {
            "numerical_default_threshold": args.threshold,
            "categorical_default_threshold": args.threshold,
        }
    study = _query_argument(args.query)
    with open_database(args.database, must_exist=True) as db:
        if args.model is not None:
            report = reports.skew_report(db, args.model, study, options)
        else:
            report = reports.drift_report(db, _query_argument(args.base), study, options)
        write_result(db.con.from_arrow(pa.Table.from_pylist(report.rows)), sys.stdout, args.format)
        if args.plot:
            from sqlml.plots import plot_drift

            print(f"wrote {plot_drift(report, args.plot)}", file=sys.stderr)
    if report.flagged and args.fail_on_anomaly:
        print(f"anomalies in: {', '.join(report.flagged)}", file=sys.stderr)
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sqlml.online import KEY

    with open_database(args.database, read_only=True) as db:
        version = db.model(args.model)
        path = db.export_model(version.ref, args.uri, format=args.format)
    keyed = not any(t.name == KEY for t in version.signature.inputs + version.signature.outputs)
    signatures = "serving_default and keyed_prediction" if keyed else "serving_default"
    print(f"exported {version.ref} to {path} ({args.format}, signatures {signatures})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from sqlml.serving import run_server

    if not Path(args.database).is_file():
        raise SqlmlError(f"no database file at {args.database}")
    limits = {
        "max_body_bytes": args.max_body_bytes,
        "max_instances": args.max_instances,
        "timeout": args.timeout,
        "poll_interval": args.poll,
    }
    run_server(args.database, host=args.host, port=args.port, config=args.config, **limits)
    return 0


def cmd_shell(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()
    with open_database(args.database) as db:
        shell = Shell(db, sys.stdout, sys.stderr, fmt=args.format, max_rows=args.max_rows)
        if interactive:
            shell.interactive(args.database)
            return 0
        shell.feed_lines(sys.stdin)
        return 1 if shell.errors else 0


# -- the shell ------------------------------------------------------------------------------
def statement_complete(text: str) -> bool:
    """True when `text` ends with a `;` outside quotes and comments (DuckDB quoting rules)."""
    quote, i, last = "", 0, ""
    while i < len(text):
        char, pair = text[i], text[i : i + 2]
        if quote:
            if char == quote:
                quote = ""
        elif pair == "--":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif pair == "/*":
            end = text.find("*/", i + 2)
            if end < 0:
                return False
            i = end + 2
            continue
        elif char in "'\"`":
            quote = last = char
        elif not char.isspace():
            last = char
        i += 1
    return not quote and last == ";"


SHELL_HELP = """\
Enter SQL statements ending with ';' (they may span lines). Every registered model is a
function: SELECT m(a, b).probabilities FROM t, or SELECT * FROM ML.PREDICT(MODEL m, TABLE t).
  .tables [PATTERN]  tables and views (LIKE PATTERN), not sqlml's own catalog
  .schema [TABLE]    CREATE statements of tables and views
  .models            registered models and how to call them
  .read FILE         run the statements (and dot commands) in FILE
  .mode table|csv|json   how results are printed
  .maxrows N         rows shown in table mode
  .help              this text
  .quit, .exit       leave (so does Ctrl-D)"""


class Shell:
    """Line-oriented SQL shell over a Database: statements end with `;`, plus dot commands."""

    def __init__(
        self,
        db: sqlml.Database,
        out: TextIO,
        err: TextIO,
        *,
        fmt: str = "table",
        max_rows: int = DEFAULT_MAX_ROWS,
    ):
        self.db = db
        self.out = out
        self.err = err
        self.fmt = fmt
        self.max_rows = max_rows
        self.buffer: list[str] = []
        self.errors = 0
        self.done = False
        self.depth = 0  # nesting of .read

    # input ---------------------------------------------------------------------------------
    def feed(self, line: str) -> str | None:
        """Take one input line; return the complete statement or command it finished, if any."""
        line = line.rstrip("\r\n")
        if not self.buffer:
            if not line.strip():
                return None
            if line.lstrip().startswith("."):
                self.command(line.strip())
                return line.strip()
        self.buffer.append(line)
        text = "\n".join(self.buffer)
        if not statement_complete(text):
            return None
        self.buffer = []
        self.execute(text)
        return text

    def flush(self) -> None:
        """Run what is left in the buffer (a last statement without its `;`)."""
        if self.buffer and "\n".join(self.buffer).strip():
            text, self.buffer = "\n".join(self.buffer), []
            self.execute(text)
        self.buffer = []

    def feed_lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.feed(line)
            if self.done:
                return
        self.flush()

    def interactive(self, database: str) -> None:
        readline = _setup_readline()
        self.out.write(
            f"sqlml {sqlml.__version__} (duckdb {duckdb.__version__}) on {database}\n"
            'Enter ".help" for usage hints; every registered model is a SQL function.\n'
        )
        try:
            while not self.done:
                try:
                    line = input(CONTINUATION if self.buffer else PROMPT)
                except EOFError:
                    self.out.write("\n")
                    break
                except KeyboardInterrupt:
                    self.out.write("^C\n")
                    self.buffer = []
                    continue
                try:
                    finished = self.feed(line)
                except KeyboardInterrupt:
                    self.report("interrupted")
                    finished = None
                if readline is not None and finished:
                    readline.add_history(" ".join(part.strip() for part in finished.splitlines()))
            self.flush()
        finally:
            if readline is not None:
                with suppress(OSError):
                    readline.write_history_file(_history_path())

    # work ----------------------------------------------------------------------------------
    def report(self, message: object) -> None:
        self.out.flush()
        self.errors += 1
        self.err.write(f"Error: {message}\n")
        self.err.flush()

    def execute(self, text: str) -> None:
        """Run each statement and print its result; the first error ends this input."""
        for statement in split_statements(text):
            try:
                relation = self.db.sql(statement)
                write_result(relation, self.out, self.fmt, self.max_rows, statement)
            except USER_ERRORS as error:
                self.report(error_text(error))
                return
            except Exception as error:  # a bug must not cost the user their session
                self.report(f"internal error {type(error).__name__}: {error}")
                return

    def show(self, relation: duckdb.DuckDBPyRelation) -> None:
        write_result(relation, self.out, self.fmt, self.max_rows, "SELECT")

    def command(self, line: str) -> None:
        name, _, rest = line.partition(" ")
        arg = rest.strip()
        handler = {
            ".quit": self._quit,
            ".exit": self._quit,
            ".help": self._help,
            ".tables": self._tables,
            ".schema": self._schema,
            ".models": self._models,
            ".read": self._read,
            ".mode": self._mode,
            ".maxrows": self._maxrows,
        }.get(name.lower())
        if handler is None:
            self.report(f'unknown command {name}; enter ".help" for the list')
            return
        try:
            handler(arg)
        except USER_ERRORS as error:
            self.report(error_text(error))

    def _quit(self, arg: str) -> None:
        self.done = True

    def _help(self, arg: str) -> None:
        self.out.write(SHELL_HELP + "\n")

    def _tables(self, arg: str) -> None:
        rows = self.db.con.execute(
            """
            SELECT CASE WHEN database_name <> current_database() AND NOT temporary
                        THEN database_name || '.' || schema_name || '.' || name
                        WHEN schema_name <> 'main' THEN schema_name || '.' || name
                        ELSE name END AS name
            FROM (SELECT database_name, schema_name, table_name AS name, temporary
                  FROM duckdb_tables()
                  UNION ALL
                  SELECT database_name, schema_name, view_name, temporary
                  FROM duckdb_views() WHERE NOT internal)
            WHERE schema_name <> 'sqlml' AND (? = '' OR name LIKE ?)
            ORDER BY 1
            """,
            [arg, arg],
        ).fetchall()
        self.out.write("".join(f"{name}\n" for (name,) in rows))

    def _schema(self, arg: str) -> None:
        table = arg.rstrip(";").strip()
        schema, _, name = table.rpartition(".")
        rows = self.db.con.execute(
            """
            SELECT sql FROM (
                SELECT schema_name, table_name AS name, sql FROM duckdb_tables()
                UNION ALL
                SELECT schema_name, view_name, sql FROM duckdb_views() WHERE NOT internal)
            WHERE CASE WHEN ? = '' THEN schema_name <> 'sqlml'
                       ELSE lower(name) = lower(?) AND (? = '' OR lower(schema_name) = lower(?))
                  END
            ORDER BY schema_name, name
            """,
            [table, name, schema, schema],
        ).fetchall()
        if table and not rows:
            raise SqlmlError(f"no table or view named {table}")
        for (sql,) in rows:
            sql = sql.strip()
            self.out.write(sql + ("" if sql.endswith(";") else ";") + "\n")

    def _models(self, arg: str) -> None:
        self.show(
            self.db.con.sql(
                "SELECT model, latest_version, aliases, format, label, "
                "model || '(' || array_to_string(inputs, ', ') || ')' AS call, outputs "
                "FROM sqlml.models ORDER BY model"
            )
        )

    def _read(self, arg: str) -> None:
        if not arg:
            raise SqlmlError(".read needs a file name")
        if self.depth >= 16:
            raise SqlmlError(f".read {arg}: files read each other more than 16 levels deep")
        text = Path(arg).expanduser().read_text()
        saved, self.buffer = self.buffer, []
        self.depth += 1
        try:
            self.feed_lines(text.splitlines())
        finally:
            self.buffer = saved
            self.depth -= 1

    def _mode(self, arg: str) -> None:
        if arg not in FORMATS:
            raise SqlmlError(f".mode takes one of {', '.join(FORMATS)} (now {self.fmt})")
        self.fmt = arg

    def _maxrows(self, arg: str) -> None:
        if not arg.isdigit() or int(arg) < 1:
            raise SqlmlError(f".maxrows takes a positive number (now {self.max_rows})")
        self.max_rows = int(arg)


def _history_path() -> str:
    return os.path.expanduser(os.environ.get("SQLML_HISTORY") or HISTORY_FILE)


def _setup_readline() -> Any:
    """readline with the history file loaded, or None where readline is missing."""
    try:
        import readline
    except ImportError:
        return None
    readline.set_auto_history(False)  # whole statements are added, not their lines
    readline.set_history_length(1000)
    with suppress(OSError):
        readline.read_history_file(_history_path())
    return readline


# -- argument parsing -----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sqlml",
        description="Serve machine-learning models inside DuckDB with BigQuery ML SQL.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"sqlml {sqlml.__version__} (duckdb {duckdb.__version__})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def output_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--format", choices=FORMATS, default="table", help="result format (default: table)"
        )
        command.add_argument(
            "--max-rows",
            type=int,
            default=DEFAULT_MAX_ROWS,
            metavar="N",
            help=f"rows printed in table format (default: {DEFAULT_MAX_ROWS})",
        )

    def data_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--query", metavar="SQL", help="the data as a query (@FILE reads one)")
        command.add_argument("--table", metavar="NAME", help="the data as a table")

    sql = commands.add_parser("sql", help="run SQL and print the last statement's result")
    sql.add_argument("database", metavar="DB", help="DuckDB file (created if missing)")
    sql.add_argument("query", metavar="SQL", nargs="?", help="SQL text, or - to read stdin")
    sql.add_argument("-f", "--file", metavar="FILE", help="read the SQL from FILE")
    output_options(sql)
    sql.set_defaults(func=cmd_sql)

    models = commands.add_parser("models", help="list registered models")
    models.add_argument("database", metavar="DB")
    output_options(models)
    models.set_defaults(func=cmd_models)

    register = commands.add_parser(
        "register", help="add a model version from an .onnx file or a SavedModel folder"
    )
    register.add_argument("database", metavar="DB")
    register.add_argument("name", metavar="NAME")
    register.add_argument("path", metavar="PATH")
    register.add_argument("--label", help="target column: adds predicted_<label> columns")
    register.add_argument("--classes", help="class labels, comma-separated (e.g. no,yes)")
    register.add_argument(
        "--nulls",
        choices=NULL_POLICIES,
        default="null",
        help="what a NULL input does (default: the row's prediction is NULL)",
    )
    register.add_argument("--description")
    register.set_defaults(func=cmd_register)

    alias = commands.add_parser(
        "alias", help="point NAME@ALIAS at a version (rollback: point it back)"
    )
    alias.add_argument("database", metavar="DB")
    alias.add_argument("name", metavar="NAME")
    alias.add_argument("alias", metavar="ALIAS")
    alias.add_argument("version", metavar="VERSION", type=int, nargs="?")
    alias.add_argument("--delete", action="store_true", help="remove the alias")
    alias.set_defaults(func=cmd_alias)

    drop = commands.add_parser("drop", help="remove a model with all its versions and aliases")
    drop.add_argument("database", metavar="DB")
    drop.add_argument("name", metavar="NAME")
    drop.add_argument("--if-exists", action="store_true")
    drop.set_defaults(func=cmd_drop)

    run = commands.add_parser("run", help="build a templated SQL project in DuckDB")
    run.add_argument("project", metavar="PROJECT", nargs="?", default=".", help="project folder")
    run.add_argument(
        "--select", "-s", nargs="+", metavar="SEL", help="files to run: name, +name, name+"
    )
    run.add_argument("--vars", help="override vars: '{\"top_k\": 5}'")
    run.add_argument("--database", metavar="DB", help="DuckDB file (default: the project's)")
    run.set_defaults(func=cmd_run)

    compile_ = commands.add_parser("compile", help="compile sqlml SQL (or a project) for BigQuery")
    compile_.add_argument("file", metavar="FILE", help="SQL file, - for stdin, or a project folder")
    compile_.add_argument("--vars", help="project: override vars")
    compile_.add_argument("--target", choices=("bigquery",), default="bigquery")
    compile_.add_argument(
        "-o", "--output", metavar="OUT",
        help="write the SQL here (project: a folder, default PROJECT/target/bigquery)",
    )  # fmt: skip
    compile_.add_argument("--dataset", help="BigQuery dataset for model names")
    compile_.add_argument("--model-uri", help="where artifacts are uploaded (gs://bucket/path)")
    compile_.add_argument(
        "--db", metavar="DB", help="a sqlml database whose models' labels and classes to use"
    )
    compile_.add_argument(
        "--inline-models",
        action="store_true",
        help="ML.PREDICT of models compiled to SQL becomes plain SQL (no import; needs --db)",
    )
    compile_.add_argument(
        "--artifacts",
        metavar="DIR",
        help="copy model artifacts here (default: artifacts/ beside OUT; none for stdout)",
    )
    compile_.set_defaults(func=cmd_compile)

    evaluate = commands.add_parser(
        "evaluate", help="ML.EVALUATE a model against ground truth; --plot draws ROC and matrix"
    )
    evaluate.add_argument("database", metavar="DB")
    evaluate.add_argument("model", metavar="MODEL", help="name, name@alias or name@VERSION")
    data_options(evaluate)
    evaluate.add_argument("--label", help="ground-truth column (default: the model's label)")
    evaluate.add_argument(
        "--threshold", type=float, help="binary classifiers: positive above this (default 0.5)"
    )
    evaluate.add_argument(
        "--plot", metavar="FILE", help="draw the ROC curve and confusion matrix (.png/.svg/.pdf)"
    )
    evaluate.add_argument("--format", choices=FORMATS, default="table")
    evaluate.set_defaults(func=cmd_evaluate)

    drift = commands.add_parser(
        "drift",
        help="compare serving data with a model's training data (or a base query), per input",
    )
    drift.add_argument("database", metavar="DB")
    drift.add_argument("--model", help="skew against this model's training statistics")
    drift.add_argument("--base", metavar="SQL", help="drift against this query (@FILE reads one)")
    drift.add_argument(
        "--query", metavar="SQL", required=True, help="the data to check (@FILE reads one)"
    )
    drift.add_argument(
        "--threshold", type=float, help="default threshold for every input (default 0.3)"
    )
    drift.add_argument(
        "--plot", metavar="FILE", help="draw histograms of the flagged inputs (.png/.svg/.pdf)"
    )
    drift.add_argument(
        "--fail-on-anomaly", action="store_true", help="exit 1 when an input is over its threshold"
    )
    drift.add_argument("--format", choices=FORMATS, default="table")
    drift.set_defaults(func=cmd_drift)

    export = commands.add_parser(
        "export",
        help="write a model as a TensorFlow SavedModel (for TF Serving) or a .tflite file",
    )
    export.add_argument("database", metavar="DB")
    export.add_argument("model", metavar="MODEL", help="name, name@alias or name@VERSION")
    export.add_argument("uri", metavar="OUT", help="SavedModel folder, or FILE.tflite")
    export.add_argument("--format", choices=("saved_model", "tflite"), default="saved_model")
    export.set_defaults(func=cmd_export)

    serve = commands.add_parser(
        "serve", help="serve the registered models over TensorFlow Serving's REST API"
    )
    serve.add_argument("database", metavar="DB")
    serve.add_argument("--port", type=int, default=8501, help="default 8501, as TF Serving")
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine)")
    serve.add_argument(
        "--config", metavar="FILE", help="traffic config (YAML: A/B split, shadow, logging)"
    )
    serve.add_argument("--max-body-bytes", type=int, help="larger requests get 413 (10 MiB)")
    serve.add_argument("--max-instances", type=int, help="rows per request (10000)")
    serve.add_argument("--timeout", type=float, help="seconds a client may stall (30)")
    serve.add_argument(
        "--poll", type=float, help="seconds between checks for new versions and config (2)"
    )
    serve.set_defaults(func=cmd_serve)

    shell = commands.add_parser("shell", help="interactive SQL shell where models are functions")
    shell.add_argument("database", metavar="DB", nargs="?", default=":memory:")
    output_options(shell)
    shell.set_defaults(func=cmd_shell)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse gives an optional positional nothing when options come first
    # (`sqlml sql DB --format csv "SELECT ..."`): take the SQL from what was left over
    if args.command == "sql" and args.query is None and len(extra) == 1:
        args.query = extra.pop()
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "alias" and (args.version is None) == (not args.delete):
        parser.error("alias: give a VERSION to point the alias at, or --delete")
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `sqlml sql ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except USER_ERRORS as error:
        sys.stdout.flush()
        print(f"Error: {error_text(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
