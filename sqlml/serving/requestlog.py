"""Sampled request/response logging into sqlml.prediction_log, written off the request path.

A request only decides which of its rows are sampled and appends references to a bounded
buffer (microseconds). A background thread turns them into the same rows ML.PREDICT's logging
writes (model, version, logged_at, key, inputs and outputs as JSON, ground_truth NULL), so
ML.MONITOR evaluates server traffic like SQL traffic, and writes them in one short read-write
open of the database every `flush_seconds` or `flush_rows`. When the file stays locked by
another process the rows wait for the next flush; beyond `max_rows` new rows are dropped and
counted, so a locked database can never grow the server's memory without bound.

Sampling hashes the key (crc32), so a key is logged every time or never; rows without a key
are sampled at random.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sqlml import predlog
from sqlml.errors import SqlmlError
from sqlml.serving.models import DatabaseBusy, DatabaseFile, Servable

log = logging.getLogger("sqlml.serve")

BUCKETS = 1_000_000
_TABLE = "__sqlml_serve_log"
_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("version", pa.int32()),
        ("logged_at", pa.float64()),
        ("key", pa.string()),
        ("inputs", pa.string()),
        ("outputs", pa.string()),
    ]
)
_TYPES = [f.type for f in _SCHEMA]


def sample(rate: float, n: int, keys: list | None) -> list[int]:
    """Rows to log: every row at rate 1, a stable share of keys, else a random share."""
    if rate >= 1:
        return list(range(n))
    if rate <= 0:
        return []
    threshold = int(round(rate * BUCKETS))
    if keys is None:
        return [i for i in range(n) if random.random() < rate]
    return [
        i
        for i, key in enumerate(keys)
        if (
            random.random() < rate
            if key is None
            else zlib.crc32(key.encode("utf-8", "replace")) % BUCKETS < threshold
        )
    ]


def key_text(value: object) -> str | None:
    """A key as the VARCHAR the SQL path would store (CAST(key AS VARCHAR))."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


@dataclass
class _Entry:
    servable: Servable
    logged_at: float
    keys: list[str | None]
    inputs: dict[str, list]
    outputs: dict[str, np.ndarray]


class RequestLog:
    """The buffer, its writer thread and its counters (written, dropped, failed flushes)."""

    def __init__(
        self,
        db: DatabaseFile,
        *,
        flush_seconds: float = 2.0,
        flush_rows: int = 1_000,
        max_rows: int = 100_000,
    ):
        self.db = db
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self.max_rows = max_rows
        self.written = 0
        self.dropped = 0
        self._entries: list[_Entry] = []
        self._ready: list[tuple] = []  # rows already turned into JSON, waiting for the database
        self._pending = 0  # rows in _entries and _ready
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_warning = 0.0

    # -- request path -------------------------------------------------------------------------
    def add(
        self,
        servable: Servable,
        rows: list[int],
        keys: list | None,
        inputs: dict[str, list],
        raw_outputs: dict[str, np.ndarray],
        logged_at: float | None = None,
    ) -> None:
        """Buffer the sampled `rows` of one request (indices into its batch)."""
        n = len(rows)
        if not n:
            return
        with self._lock:
            if self._pending + n > self.max_rows:
                self.dropped += n
                return
            self._pending += n
        entry = _Entry(
            servable,
            time.time() if logged_at is None else logged_at,
            [key_text(keys[i]) for i in rows] if keys is not None else [None] * n,
            {name: [values[i] for i in rows] for name, values in inputs.items()},
            {name: np.asarray(array)[rows] for name, array in raw_outputs.items()},
        )
        with self._lock:
            self._entries.append(entry)
            full = self._pending >= self.flush_rows
        if full:
            self._wake.set()

    # -- writer thread -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sqlml-serve-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the writer must survive anything
                log.exception("request log flush failed")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and write what is left, retrying a busy database until `timeout`."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.flush(quiet=True)
            except Exception:  # noqa: BLE001
                log.exception("request log flush failed")
                break
            if not self.pending or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if self.pending:
            log.warning("request log: %d rows not written (database busy)", self.pending)
            self.dropped += self.pending
        if self.dropped:
            log.warning("request log: %d sampled rows were dropped in all", self.dropped)

    @property
    def pending(self) -> int:
        return self._pending

    def flush(self, *, quiet: bool = False) -> int:
        """Write buffered rows now; returns how many (0 when the database is busy)."""
        with self._write_lock:
            with self._lock:
                entries, self._entries = self._entries, []
            for entry in entries:
                try:
                    self._ready.extend(_rows(entry))
                except Exception:  # noqa: BLE001 - one odd entry must not stop the log
                    log.exception("request log: cannot log a request to %s", entry.servable.ref)
                    with self._lock:
                        self._pending -= len(entry.keys)
                        self.dropped += len(entry.keys)
            if not self._ready:
                return 0
            table = pa.Table.from_arrays(
                [pa.array(column, type) for column, type in zip(zip(*self._ready), _TYPES)],
                schema=_SCHEMA,
            )
            try:
                with self.db.write() as con:
                    _insert(con, table)
            except (DatabaseBusy, SqlmlError) as error:
                now = time.monotonic()
                if not quiet and now - self._last_warning > 60:
                    self._last_warning = now
                    log.warning(
                        "request log: %s; %d rows wait for the next flush", error, len(self._ready)
                    )
                return 0
            written = len(self._ready)
            self._ready = []
            with self._lock:
                self._pending -= written
            self.written += written
            return written


def _insert(con, table: pa.Table) -> None:  # noqa: ANN001 - a DuckDB connection
    predlog.ensure_tables(con)
    con.register(_TABLE, table)
    try:
        con.execute(
            "INSERT INTO sqlml.prediction_log (model, version, logged_at, key, inputs, outputs) "
            "SELECT model, version, CAST(to_timestamp(logged_at) AS TIMESTAMP), key, "
            f"inputs::JSON, outputs::JSON FROM {_TABLE}"
        ).fetchall()
    finally:
        con.unregister(_TABLE)


def _rows(entry: _Entry) -> list[tuple]:
    servable = entry.servable
    n = len(entry.keys)
    outputs = servable.log_rows(entry.outputs, n)
    names = list(entry.inputs)
    return [
        (
            servable.name,
            servable.number,
            entry.logged_at,
            entry.keys[i],
            _json({name: entry.inputs[name][i] for name in names}),
            _json(outputs[i]),
        )
        for i in range(n)
    ]


def _json(value: object) -> str:
    """JSON DuckDB accepts: NaN and infinities (which JSON lacks) become null."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value))


def _finite(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
