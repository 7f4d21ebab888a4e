"""Opt-in prediction logging and continuous evaluation over the log.

`db.log_predictions("churn", sample_rate=0.1, key="user_id")` makes every ML.PREDICT of
`churn` also record a sample of its rows in `sqlml.prediction_log`: model, version, time, key,
inputs and outputs as JSON, and an empty ground-truth column. Sampling hashes the key, so a
key is logged every time or never, and a 10% sample stays the same 10% of users.

Why a filter UDF: DuckDB cannot insert from inside a SELECT, so the rewritten ML.PREDICT keeps
a `WHERE NOT sampled OR __sqlml_log(...)` that hands sampled rows (a vector at a time) to a
buffer; `flush` writes the buffer in one transaction after the statement (db.sql flushes
before every statement and at close). Ground truth lands later by key (UPDATE or MERGE, see
docs/sql.md); ML.MONITOR evaluates the log per version and time window.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from sqlml.errors import SqlmlError

LOG_FUNCTION = "__sqlml_log"
BUCKETS = 1_000_000
WINDOWS = {"day": "1 day", "week": "7 days", "month": "30 days", "all": None}

_DDL = """
CREATE TABLE IF NOT EXISTS sqlml.prediction_log (
    model VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    logged_at TIMESTAMP NOT NULL,
    key VARCHAR,
    inputs JSON,
    outputs JSON,
    ground_truth JSON,            -- filled later by key (UPDATE / MERGE)
    ground_truth_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS sqlml.prediction_logging (
    model VARCHAR PRIMARY KEY,
    sample_rate DOUBLE NOT NULL,
    key_column VARCHAR NOT NULL
);
"""


@dataclass(frozen=True)
class LogSettings:
    model: str
    sample_rate: float
    key_column: str


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_DDL).fetchall()


def settings(con: duckdb.DuckDBPyConnection) -> dict[str, LogSettings]:
    with con.cursor() as cursor:
        rows = cursor.execute("SELECT * FROM sqlml.prediction_logging").fetchall()
    return {model: LogSettings(model, rate, key) for model, rate, key in rows}


def configure(con: duckdb.DuckDBPyConnection, model: str, rate: float, key: str) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise SqlmlError(f"model {model}: sample_rate must be in [0, 1], got {rate!r}")
    if rate == 0:
        con.execute("DELETE FROM sqlml.prediction_logging WHERE model = ?", [model]).fetchall()
        return
    con.execute(
        "INSERT OR REPLACE INTO sqlml.prediction_logging VALUES (?, ?, ?)", [model, rate, key]
    ).fetchall()


def sampled_predicate(key_sql: str, rate: float) -> str:
    """SQL true for the sampled keys (a stable hash of the key, not a random draw)."""
    return f"(hash(CAST({key_sql} AS VARCHAR)) % {BUCKETS} < {int(round(rate * BUCKETS))})"


class LogBuffer:
    """Rows handed over by the log UDF (any DuckDB thread), written by `flush`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: list[pa.RecordBatch] = []

    def udf(self, model, version, key, inputs, outputs):  # noqa: ANN001 - Arrow arrays
        """The filter function: buffer the rows, keep them all (returns TRUE)."""
        columns = [
            c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c
            for c in (model, version, key, inputs, outputs)
        ]
        batch = pa.RecordBatch.from_arrays(
            columns, names=["model", "version", "key", "inputs", "outputs"]
        )
        with self._lock:
            self._batches.append(batch)
        return pa.array([True] * len(batch), pa.bool_())

    def register(self, con: duckdb.DuckDBPyConnection) -> None:
        con.create_function(
            LOG_FUNCTION,
            self.udf,
            ["VARCHAR", "INTEGER", "VARCHAR", "VARCHAR", "VARCHAR"],
            "BOOLEAN",
            type="arrow",
            null_handling="special",
            side_effects=True,
        )

    def flush(self, con: duckdb.DuckDBPyConnection) -> int:
        """Write the buffered rows to sqlml.prediction_log in one transaction."""
        with self._lock:
            batches, self._batches = self._batches, []
        if not batches:
            return 0
        table = pa.Table.from_batches(batches)
        with con.cursor() as cursor:
            cursor.register("__sqlml_log_rows", table)
            cursor.execute(
                "INSERT INTO sqlml.prediction_log (model, version, logged_at, key, inputs, outputs)"
                " SELECT model, version, current_timestamp, key, inputs::JSON, outputs::JSON "
                "FROM __sqlml_log_rows"
            ).fetchall()
            cursor.unregister("__sqlml_log_rows")
        return table.num_rows
