"""Bulk scoring: stream a query through a model into Parquet, CSV or a DuckDB table.

Batches far larger than DuckDB's 2048-row vectors amortize the per-call cost (cheap models
score several times faster than through the SQL function), a thread pool keeps every core
busy (onnxruntime releases the GIL), and at most `2 x workers` batches are in flight, so
memory stays bounded whatever the table size. The output is what ML.PREDICT returns: every
input column, then the model's columns. A failed job leaves no partial file or table.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sqlml.errors import ModelInputError, SqlmlError
from sqlml.names import ModelRef
from sqlml.rewrite.duckdb import match_inputs, quote
from sqlml.udf import ModelFunction

if TYPE_CHECKING:
    from sqlml.session import Database

FILE_FORMATS = (".parquet", ".csv")
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}")


@dataclass(frozen=True)
class BulkResult:
    """What a bulk job wrote."""

    target: str
    rows: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


def predict_to(
    db: Database,
    ref: str,
    source: Any,
    target: str | Path,
    *,
    threshold: float | None = None,
    batch_size: int = 65_536,
    workers: int | None = None,
    if_exists: str = "error",
    progress: bool | None = None,
    engine: str = "auto",
) -> BulkResult:
    """Score `source` (table name, SELECT text, relation, DataFrame or Arrow table) into `target`.

    `target` is a .parquet/.csv path or a DuckDB table name; `if_exists` is 'error', 'replace'
    or 'append' (tables only). `progress=None` shows a progress bar when stderr is a terminal.
    A model compiled to SQL (`engine` 'auto' or 'sql', as ML.PREDICT's) is scored and written
    by DuckDB itself into Parquet and tables: no Python per batch and no progress bar.
    """
    model = ModelRef.parse(ref)
    _, function = db.model_function(model)
    if threshold is not None and not function.layout.is_binary:
        raise SqlmlError(f"model {model}: threshold applies to binary classifiers with a label")
    if batch_size < 1:
        raise SqlmlError(f"batch_size must be positive, got {batch_size}")
    relation = _relation(db, source)
    columns = list(zip(relation.columns, (str(t) for t in relation.types)))
    feeding = match_inputs(str(model), function, columns)
    positions = [relation.columns.index(name) for name in feeding]
    as_sql = engine != "runtime" and db.sql_function(model, engine) is not None
    if as_sql:  # compiled to SQL: DuckDB's threads score it and write it, no Python per batch
        relation = db.predict(ref, relation, threshold=threshold, engine="sql")
    sink = _sink(db, target, if_exists, own_connection=as_sql)
    workers = workers or os.cpu_count() or 1
    started = time.perf_counter()
    rows = 0
    show = sys.stderr.isatty() if progress is None else progress
    total = _known_row_count(db, source) if show else None
    reader = relation.to_arrow_reader(batch_size) if not as_sql else None
    try:
        with (
            _Progress(show, total, f"scoring with {model}") as bar,
            ThreadPoolExecutor(workers) as pool,
        ):
            if as_sql:
                written = _sql_errors_named(sink.write_all, relation)
                batches = relation.to_arrow_reader(batch_size) if written is None else ()
                for batch in batches:
                    rows += sink.write(batch)
                    bar.update(rows)
                rows = rows if written is None else written
            pending: deque[Future[pa.RecordBatch]] = deque()
            for batch in reader or ():
                pending.append(pool.submit(_score, function, batch, positions, threshold))
                while len(pending) >= 2 * workers or (pending and pending[0].done()):
                    rows += sink.write(pending.popleft().result())
                    bar.update(rows)
            while pending:
                rows += sink.write(pending.popleft().result())
                bar.update(rows)
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    return BulkResult(sink.name, rows, time.perf_counter() - started)


def _sql_errors_named(write: Any, relation: duckdb.DuckDBPyRelation) -> int | None:
    """A model's own error raised inside DuckDB (the SQL form's NULL check) surfaces as the
    ModelInputError the Python path raises."""
    try:
        return write(relation)
    except duckdb.InvalidInputException as error:
        message = str(error).removeprefix("Invalid Input Error: ")
        if message.startswith("model "):
            raise ModelInputError(message) from None
        raise


def _score(
    function: ModelFunction, batch: pa.RecordBatch, positions: list[int], threshold: float | None
) -> pa.RecordBatch:
    arrays = [_numeric(batch.column(i)) for i in positions]
    result = function.predict_arrow(arrays, 0.5 if threshold is None else threshold)
    names = batch.schema.names + [field.name for field in result.type]
    return pa.RecordBatch.from_arrays(batch.columns + result.flatten(), names=names)


def _numeric(array: pa.Array) -> pa.Array:
    """DECIMAL columns as DOUBLE (the SQL path gets the same cast from DuckDB)."""
    return pc.cast(array, pa.float64()) if pa.types.is_decimal(array.type) else array


def _relation(db: Database, source: Any) -> duckdb.DuckDBPyRelation:
    if isinstance(source, duckdb.DuckDBPyRelation):
        return source
    if isinstance(source, str):
        text = source.strip()
        if re.match(r"(?is)^(select|with|from|values|table)\b", text):
            return db.sql(text)
        if not _TABLE_NAME.fullmatch(text):
            raise SqlmlError(f"source {source!r} is neither a table name nor a query")
        return db.con.sql(f"SELECT * FROM {_quoted_table(text)}")
    return db.con.from_arrow(source) if isinstance(source, pa.Table) else db.con.from_df(source)


def _known_row_count(db: Database, source: Any) -> int | None:
    """The total for the progress bar, when it is free (a table's row count)."""
    if isinstance(source, str) and _TABLE_NAME.fullmatch(source.strip()):
        return db.con.sql(f"SELECT count(*) FROM {_quoted_table(source.strip())}").fetchall()[0][0]
    if isinstance(source, pa.Table):
        return source.num_rows
    return len(source) if hasattr(source, "__len__") and not isinstance(source, str) else None


def _quoted_table(name: str) -> str:
    return ".".join(quote(part) for part in name.split("."))


# -- sinks: write batches, then commit (atomically) or abort (leaving nothing) ----------------


def _sink(
    db: Database, target: str | Path, if_exists: str, own_connection: bool = False
) -> _FileSink | _TableSink:
    if if_exists not in ("error", "replace", "append"):
        raise SqlmlError(f"if_exists must be 'error', 'replace' or 'append', got {if_exists!r}")
    if isinstance(target, Path) or str(target).lower().endswith(FILE_FORMATS):
        return _FileSink(Path(target), if_exists)
    if not _TABLE_NAME.fullmatch(str(target)):
        raise SqlmlError(
            f"target {target!r} is neither a .parquet/.csv path nor a table name "
            "([schema.]table, letters, digits and underscores)"
        )
    return _TableSink(db, str(target), if_exists, own_connection)


class _FileSink:
    """Parquet or CSV written to a temporary file beside the target, renamed on success."""

    def __init__(self, path: Path, if_exists: str):
        suffix = path.suffix.lower()
        if suffix not in FILE_FORMATS:
            raise SqlmlError(f"target {path}: write .parquet or .csv files")
        if if_exists == "append":
            raise SqlmlError(f"target {path}: files cannot be appended to; use a table")
        if path.exists() and if_exists == "error":
            raise SqlmlError(f"target {path} exists (pass if_exists='replace')")
        if not path.parent.is_dir():
            raise SqlmlError(f"target {path}: folder {path.parent} does not exist")
        self.name = str(path)
        self.path, self.format = path, suffix
        self.partial = path.with_name(f".{path.name}.partial")
        self.writer: pq.ParquetWriter | pacsv.CSVWriter | None = None
        self.written = False

    def write_all(self, relation: duckdb.DuckDBPyRelation) -> int | None:
        """Write the whole relation with DuckDB's (parallel) Parquet writer; None for CSV,
        whose nested columns need sqlml's formatting (`write`)."""
        if self.format != ".parquet":
            return None
        relation.write_parquet(str(self.partial))
        self.written = True
        rows = pq.read_metadata(self.partial).num_rows
        if rows == 0:
            raise SqlmlError(f"target {self.path}: the source has no rows; nothing was written")
        return rows

    def write(self, batch: pa.RecordBatch) -> int:
        if self.writer is None:
            if self.format == ".parquet":
                self.writer = pq.ParquetWriter(self.partial, batch.schema)
            else:
                self.writer = pacsv.CSVWriter(self.partial, _csv_schema(batch.schema))
        if self.format == ".csv":
            batch = _csv_batch(batch)
        self.writer.write_batch(batch)
        return batch.num_rows

    def commit(self) -> None:
        if self.writer is None and not self.written:
            raise SqlmlError(f"target {self.path}: the source has no rows; nothing was written")
        if self.writer is not None:
            self.writer.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.partial.unlink(missing_ok=True)


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, pa.string()) if _nested(f.type) else f for f in schema])


def _csv_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """CSV has no lists or structs: nested columns are written as JSON-like text."""
    columns = [
        pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())
        if _nested(column.type)
        else column
        for column in batch.columns
    ]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _nested(type_: pa.DataType) -> bool:
    return pa.types.is_nested(type_)


class _TableSink:
    """A DuckDB table filled in one transaction: all rows or none.

    Batches are inserted through a cursor of their own (the source streams on the main
    connection); `own_connection` runs the transaction on the main connection instead, for a
    relation DuckDB writes in one statement (`write_all`).
    """

    def __init__(self, db: Database, table: str, if_exists: str, own_connection: bool = False):
        self.name = table
        self.table = _quoted_table(table)
        self.owned = not own_connection
        self.cursor = db.con.cursor() if self.owned else db.con
        exists = bool(
            self.cursor.execute(
                "SELECT 1 FROM duckdb_tables() WHERE lower(table_name) = lower(?)",
                [table.split(".")[-1]],
            ).fetchall()
        )
        if exists and if_exists == "error":
            self._close()
            raise SqlmlError(f"table {table} exists (pass if_exists='replace' or 'append')")
        self.mode = "append" if exists and if_exists == "append" else "create"
        self.cursor.execute("BEGIN TRANSACTION").fetchall()
        if exists and if_exists == "replace":
            self.cursor.execute(f"DROP TABLE {self.table}").fetchall()
        self.created = self.mode == "append"
        self.done = False

    def _close(self) -> None:
        if self.owned:
            self.cursor.close()

    def write_all(self, relation: duckdb.DuckDBPyRelation) -> int:
        """Insert the whole relation in one statement (DuckDB's threads, no Arrow copies)."""
        self.cursor.register("__sqlml_bulk_source", relation)
        verb = f"INSERT INTO {self.table}" if self.created else f"CREATE TABLE {self.table} AS"
        try:
            (rows,) = self.cursor.execute(f"{verb} SELECT * FROM __sqlml_bulk_source").fetchall()[0]
        except BaseException:
            self.abort()  # before unregistering: the failed transaction refuses everything else
            raise
        finally:
            self.cursor.unregister("__sqlml_bulk_source")
        self.created = self.created or rows > 0
        return rows

    def write(self, batch: pa.RecordBatch) -> int:
        self.cursor.register("__sqlml_batch", pa.Table.from_batches([batch]))
        if self.created:
            self.cursor.execute(f"INSERT INTO {self.table} SELECT * FROM __sqlml_batch").fetchall()
        else:
            self.cursor.execute(f"CREATE TABLE {self.table} AS SELECT * FROM __sqlml_batch")
            self.cursor.fetchall()
            self.created = True
        self.cursor.unregister("__sqlml_batch")
        return batch.num_rows

    def commit(self) -> None:
        if not self.created:
            self.cursor.execute("ROLLBACK").fetchall()
            self._close()
            raise SqlmlError(f"table {self.name}: the source has no rows; nothing was written")
        self.cursor.execute("COMMIT").fetchall()
        self._close()

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.cursor.execute("ROLLBACK").fetchall()
        finally:
            self._close()


class _Progress:
    """A rich progress bar (rows done, rows/s) on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int | None, description: str):
        self.enabled, self.total, self.description = enabled, total, description
        self.bar: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False,
            )  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task(self.description, total=self.total)
        return self

    def update(self, rows: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=rows)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
