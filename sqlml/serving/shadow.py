"""Shadow scoring: a second model scores the same requests after the response has gone out.

Why a separate thread with a bounded queue: the shadow must never slow down, change or fail a
request. The request only enqueues its input arrays (dropped and counted when the queue is
full); this thread scores them and hands every row to the request log, where the shadow's
predictions can be compared with the served ones (same key, same time).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from sqlml.serving.models import Servable
from sqlml.serving.requestlog import RequestLog
from sqlml.signature import NUMPY_TYPES

log = logging.getLogger("sqlml.serve")


@dataclass
class ShadowJob:
    servable: Servable
    served_by: str
    n: int
    arrays: dict[str, np.ndarray]
    values: dict[str, list]
    keys: list | None
    logged_at: float


class ShadowRunner:
    """One worker thread; counters say how many jobs were scored, failed or dropped."""

    def __init__(self, requestlog: RequestLog, max_queue: int = 1_000):
        self.requestlog = requestlog
        self.scored = 0
        self.failed = 0
        self.dropped = 0
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(max_queue)
        self._thread: threading.Thread | None = None
        self._reported: dict[str, float] = {}

    def submit(self, job: ShadowJob) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sqlml-serve-shadow", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Score what is queued (up to `timeout`), then stop."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        while True:  # drop what is left, then wake the thread with the sentinel
            try:
                self._queue.get_nowait()
                self.dropped += 1
            except queue.Empty:
                break
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._score(job)
                self.scored += 1
            except Exception as error:  # noqa: BLE001 - a shadow failure only gets counted
                self.failed += 1
                self._report(job, error)

    def _score(self, job: ShadowJob) -> None:
        servable = job.servable
        arrays = {}
        for tensor in servable.version.signature.inputs:
            if tensor.name not in job.arrays:
                raise KeyError(
                    f"shadow model {servable.ref} needs input {tensor.name!r}, which requests "
                    f"to {job.served_by} do not carry"
                )
            arrays[tensor.name] = job.arrays[tensor.name].astype(
                NUMPY_TYPES[tensor.dtype], copy=False
            )
        raw = servable.predict(arrays, job.n)
        names = [t.name for t in servable.version.signature.inputs]
        values = {name: job.values[name] for name in names if name in job.values}
        self.requestlog.add(servable, list(range(job.n)), job.keys, values, raw, job.logged_at)

    def _report(self, job: ShadowJob, error: Exception) -> None:
        """Log a failure once a minute per shadow model, not once per request."""
        now = time.monotonic()
        ref = job.servable.ref
        if now - self._reported.get(ref, 0.0) > 60:
            self._reported[ref] = now
            log.warning("shadow model %s failed (%d failures so far): %s", ref, self.failed, error)
