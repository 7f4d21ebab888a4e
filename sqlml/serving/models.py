"""The model pool: what each URL serves, loaded once, swapped atomically when the catalog moves.

Why the database is never held open: a DuckDB file opened read-write by one process cannot be
opened by another, and the server must let a data scientist register a version or move an
alias (the `sqlml` CLI, Python) while it runs. So the pool opens the file briefly, read-only,
on start and at each poll (only when the file or the config changed), reads the catalog,
fetches the artifacts it lacks (sha256-verified by the Registry), closes the file, and only then
loads the new runtimes, off the request path. The new routing is built as an immutable
`PoolState` and published with one reference assignment: a request reads `pool.state` once,
so in-flight requests finish on the versions they started with.
"""

from __future__ import annotations

import bisect
import logging
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from sqlml import predlog
from sqlml.errors import ArtifactError, ModelNotFoundError, SqlmlError
from sqlml.online import SIGNATURES, OnlineSignature, online_signature
from sqlml.registry import ModelVersion, Registry
from sqlml.runtimes import Runtime, load_runtime
from sqlml.serving.config import (
    ConfigError,
    LogConfig,
    ModelConfig,
    ServeConfig,
    Target,
    load_config,
)
from sqlml.serving.rest import HttpError, Route
from sqlml.signature import NUMPY_TYPES
from sqlml.udf import ModelFunction

log = logging.getLogger("sqlml.serve")

FULL_REFRESH_SECONDS = 30.0  # re-read the catalog this often even when the file looks unchanged
MAX_PINNED = 8  # versions loaded only for /versions/V or /labels/L requests (LRU)
BUSY_WARNING_SECONDS = 60.0  # a database locked for long is reported once a minute


class DatabaseBusy(SqlmlError):
    """The database file is locked by another process (or connection) right now."""


class DatabaseFile:
    """Brief, serialized opens of the .duckdb file, and a cheap check of whether it changed.

    The fingerprint (size and mtime of the file and its WAL) lets a poll skip opening the file
    when nobody wrote to it: fewer opens, fewer moments where a writer would find it locked.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: tuple | None = None

    def fingerprint(self) -> tuple:
        stamps = []
        for path in (self.path, Path(f"{self.path}.wal")):
            try:
                st = os.stat(path)
                stamps.append((st.st_size, st.st_mtime_ns))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def changed(self) -> bool:
        return self.fingerprint() != self._seen

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if not self.path.is_file():
            raise SqlmlError(f"database {self.path} does not exist")
        try:
            return duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as error:
            text = str(error)
            if "lock" in text.lower() or "different configuration" in text:
                raise DatabaseBusy(f"database {self.path} is in use: {text}") from None
            raise SqlmlError(f"cannot open database {self.path}: {text}") from None

    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection, closed on exit; marks the file's state as seen."""
        with self._lock:
            con = self._connect(read_only=True)
            try:
                seen = self.fingerprint()  # no other process can write while we hold it
                yield con
            finally:
                con.close()
            self._seen = seen

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection, closed on exit. Our own write does not count as a change
        unless the file had already changed before it (then the next poll reads the catalog)."""
        with self._lock:
            con = self._connect(read_only=False)
            try:
                before = self.fingerprint()
                yield con
            finally:
                con.close()
            if before == self._seen:
                self._seen = self.fingerprint()


class Servable:
    """One loaded model version and everything a request needs from it, computed once."""

    def __init__(self, version: ModelVersion, runtime: Runtime):
        self.version = version
        self.runtime = runtime
        self.name, self.number, self.ref = version.name, version.version, version.ref
        self.nan_for_null = version.nulls == "nan"
        self.signatures = online_signatures(version)
        self._feed = [
            (t.name, np.dtype(NUMPY_TYPES[t.dtype]), len(t.shape) == 1, t.shape[1:])
            for t in version.signature.inputs
        ]
        self._squeeze = {t.name for t in version.signature.outputs if t.is_scalar}
        self._function: ModelFunction | None = None

    def signature(self, name: str) -> OnlineSignature:
        found = self.signatures.get(name)
        if isinstance(found, OnlineSignature):
            return found
        if isinstance(found, SqlmlError):
            raise HttpError(400, str(found))
        raise HttpError(
            400,
            f"model {self.ref}: unknown signature_name {name!r} "
            f"(use one of {', '.join(SIGNATURES)})",
        )

    def predict(self, arrays: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """The runtime's raw outputs for online-shaped inputs (a [n] input feeds [n, 1])."""
        feed = {}
        for name, dtype, flat, inner in self._feed:
            array = arrays[name]
            if array.dtype != dtype:
                array = array.astype(dtype)
            if not flat and array.ndim == 1:
                array = array.reshape(n, *[-1 if d is None else d for d in inner])
            feed[name] = array
        return self.runtime.predict(feed)

    def online(self, raw: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """Raw outputs in the online shapes: scalar outputs squeezed to [n]."""
        return {
            name: value.reshape(n) if name in self._squeeze else value
            for name, value in raw.items()
        }

    def log_rows(self, raw: dict[str, np.ndarray], n: int) -> list[dict]:
        """The outputs as ML.PREDICT logs them (raw outputs plus predicted_<label> columns),
        so ML.MONITOR reads server rows like SQL ones."""
        if self._function is None:
            self._function = ModelFunction(
                self.ref, self.version.signature, self.version.label, lambda: self.runtime
            )
        struct: pa.StructArray = self._function.to_struct(raw, n)
        return struct.to_pylist()


def online_signatures(version: ModelVersion) -> dict[str, OnlineSignature | SqlmlError]:
    """serving_default and keyed_prediction (or why the latter does not exist)."""
    found: dict[str, OnlineSignature | SqlmlError] = {}
    for name in SIGNATURES:
        try:
            found[name] = online_signature(version.name, version.signature, name)
        except SqlmlError as error:
            found[name] = error
    return found


@dataclass(frozen=True)
class Catalog:
    versions: dict[str, dict[int, ModelVersion]]
    aliases: dict[str, dict[str, int]]
    logging: dict[str, predlog.LogSettings]

    def resolve(self, target: Target) -> int | None:
        versions = self.versions.get(target.model)
        if not versions:
            return None
        if target.version is not None:
            return target.version if target.version in versions else None
        if target.alias is not None:
            return self.aliases.get(target.model, {}).get(target.alias)
        return max(versions)

    def problem(self, target: Target) -> str | None:
        """Why a target does not resolve (None when it does)."""
        if target.model not in self.versions:
            known = ", ".join(sorted(self.versions)) or "none"
            return f"unknown model {target.model!r} (registered: {known})"
        if self.resolve(target) is not None:
            return None
        if target.version is not None:
            return f"model {target.model} has no version {target.version}"
        aliases = sorted(self.aliases.get(target.model, {}))
        return f"model {target.model} has no alias {target.alias!r} (aliases: {aliases})"


def read_catalog(con: duckdb.DuckDBPyConnection) -> Catalog:
    registry = Registry(con, read_only=True)
    versions: dict[str, dict[int, ModelVersion]] = {}
    for version in registry.versions():
        versions.setdefault(version.name, {})[version.version] = version
    aliases: dict[str, dict[str, int]] = {}
    for model, alias, number in con.execute(
        "SELECT model, alias, version FROM sqlml.model_aliases"
    ).fetchall():
        aliases.setdefault(model, {})[alias] = number
    has_logging = con.execute(
        "SELECT 1 FROM duckdb_tables() WHERE schema_name = 'sqlml' "
        "AND table_name = 'prediction_logging' AND database_name = current_database()"
    ).fetchall()
    return Catalog(versions, aliases, predlog.settings(con) if has_logging else {})


def check_config(config: ServeConfig, catalog: Catalog) -> None:
    """Every model, version and alias a config names must exist when it is applied."""
    for name, model in config.models.items():
        if name not in catalog.versions:
            known = ", ".join(sorted(catalog.versions)) or "none"
            raise ConfigError(f"models.{name}: no model {name!r} is registered (models: {known})")
        targets = [arm.target for arm in model.traffic]
        targets += [model.shadow.target] if model.shadow else []
        for target in targets:
            problem = catalog.problem(target)
            if problem:
                raise ConfigError(f"{target.where}: {problem}")


@dataclass(frozen=True)
class ModelRoutes:
    """One model's routing in a PoolState: the weighted default route, shadow and logging."""

    name: str
    versions: dict[int, ModelVersion]
    aliases: dict[str, int]
    latest: int
    arms: tuple[Servable, ...]
    cumulative: tuple[float, ...]
    shadow: Servable | None = None
    shadow_rate: float = 0.0
    logging: LogConfig | None = None

    def pick(self, draw: float) -> Servable:
        index = bisect.bisect_right(self.cumulative, draw * self.cumulative[-1])
        return self.arms[min(index, len(self.arms) - 1)]


@dataclass(frozen=True)
class PoolState:
    models: dict[str, ModelRoutes] = field(default_factory=dict)
    servables: dict[tuple[str, int], Servable] = field(default_factory=dict)


@dataclass(frozen=True)
class Selection:
    servable: Servable
    routes: ModelRoutes
    default_route: bool  # True when the traffic split chose the version


class ModelPool:
    """Routes requests to loaded versions; `refresh` follows the catalog and the config."""

    def __init__(self, db: DatabaseFile, config_path: Path | None = None):
        self.db = db
        self.config_path = Path(config_path) if config_path else None
        self.config = ServeConfig()
        self.state = PoolState()
        self._config_stamp: tuple | None = None
        self._runtimes: dict[str, Runtime] = {}  # by the registered artifact's sha256
        self._failed: dict[str, str] = {}  # sha256 -> why it does not load
        self._pinned: OrderedDict[tuple[str, int, str], Servable] = OrderedDict()
        self._pin_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._last_read = 0.0
        self._busy_warned = 0.0
        self._warnings: set[str] = set()
        self._random = random.Random()

    # -- requests -----------------------------------------------------------------------------
    def select(self, route: Route) -> Selection:
        """The servable for a predict route: pinned version, label (alias), or the split."""
        state = self.state
        routes = self._routes(state, route)
        if route.version is None and route.label is None:
            if not routes.arms:
                latest = routes.versions[routes.latest]
                why = self._failed.get(latest.sha256, "it is not loaded")
                raise HttpError(503, f"model {latest.ref} cannot be served: {why}")
            return Selection(routes.pick(self._random.random()), routes, True)
        number = self._version_number(routes, route)
        servable = state.servables.get((routes.name, number))
        if servable is None:
            servable = self._load_pinned(routes.versions[number])
        return Selection(servable, routes, False)

    def describe(self, route: Route) -> tuple[ModelRoutes, list[int]]:
        """The versions a status request covers (all, newest first, unless pinned)."""
        routes = self._routes(self.state, route)
        if route.version is None and route.label is None:
            return routes, sorted(routes.versions, reverse=True)
        return routes, [self._version_number(routes, route)]

    def failure(self, version: ModelVersion) -> str | None:
        return self._failed.get(version.sha256)

    def _routes(self, state: PoolState, route: Route) -> ModelRoutes:
        routes = state.models.get(route.model)
        if routes is None:
            known = ", ".join(sorted(state.models)) or "none"
            raise HttpError(
                404,
                f"Servable not found for request: {route.describe()}: no model "
                f"{route.model!r} is registered (models: {known})",
            )
        return routes

    @staticmethod
    def _version_number(routes: ModelRoutes, route: Route) -> int:
        if route.version is not None:
            if route.version not in routes.versions:
                raise HttpError(
                    404,
                    f"Servable not found for request: {route.describe()}: model {routes.name} "
                    f"has no version {route.version} (versions: {sorted(routes.versions)})",
                )
            return route.version
        number = routes.aliases.get(route.label or "")
        if number is None:
            raise HttpError(
                404,
                f"Servable not found for request: {route.describe()}: model {routes.name} has "
                f"no label {route.label!r} (labels: {sorted(routes.aliases)})",
            )
        return number

    def _load_pinned(self, version: ModelVersion) -> Servable:
        """A version only asked for by number or label: loaded on first use (on the request
        path, once), kept in a small LRU."""
        key = (version.name, version.version, version.sha256)
        with self._pin_lock:
            found = self._pinned.get(key)
            if found is not None:
                self._pinned.move_to_end(key)
                return found
            if version.sha256 in self._failed:
                raise HttpError(
                    503, f"model {version.ref} failed to load: {self._failed[version.sha256]}"
                )
            runtime = self._runtimes.get(version.sha256)
            if runtime is None:
                try:
                    with self.db.read() as con:
                        kind, data = Registry(con, read_only=True).runtime_artifact(version)
                    runtime = load_runtime(kind, data, version.ref)
                except DatabaseBusy:
                    raise HttpError(
                        503,
                        f"model {version.ref} is not loaded yet and the database is busy; retry",
                        {"Retry-After": "1"},
                    ) from None
                except ModelNotFoundError as error:
                    raise HttpError(404, str(error)) from None
                except ArtifactError as error:
                    self._failed[version.sha256] = str(error)
                    raise HttpError(503, f"model {version.ref} failed to load: {error}") from None
            servable = Servable(version, runtime)
            self._pinned[key] = servable
            while len(self._pinned) > MAX_PINNED:
                self._pinned.popitem(last=False)
            return servable

    # -- refresh ------------------------------------------------------------------------------
    def refresh(self, *, force: bool = False, strict: bool = False) -> bool:
        """Follow the config file and the catalog; True when a new state was published.

        `strict` (at start) raises on an invalid config or a busy database instead of
        logging and keeping the previous state.
        """
        with self._refresh_lock:
            new_config = self._read_config(strict)
            due = (
                force
                or new_config is not None
                or self.db.changed()
                or time.monotonic() - self._last_read > FULL_REFRESH_SECONDS
            )
            if not due:
                return False
            config = self.config
            try:
                with self.db.read() as con:
                    catalog = read_catalog(con)
                    if new_config is not None:
                        try:
                            check_config(new_config, catalog)
                            config = new_config
                            if self.config_path:
                                log.info("config %s applied", self.config_path)
                        except ConfigError as error:
                            if strict:
                                raise ConfigError(f"config {self.config_path}: {error}") from None
                            log.error(
                                "config %s rejected: %s; the previous config stays in force",
                                self.config_path,
                                error,
                            )
                    wanted = self._wanted(config, catalog)
                    blobs = self._fetch(Registry(con, read_only=True), wanted)
            except DatabaseBusy as error:
                if new_config is not None:
                    self._config_stamp = None  # re-read it at the next try
                if strict:
                    raise
                now = time.monotonic()
                if now - self._busy_warned > BUSY_WARNING_SECONDS:
                    self._busy_warned = now
                    log.warning("%s; retrying at the next poll", error)
                return False
            self._last_read = time.monotonic()
            if self._busy_warned:
                self._busy_warned = 0.0
                log.info("database %s readable again", self.db.path)
            self._load(blobs)
            old = self.state
            self.state = self._build(config, catalog, old)  # the atomic swap
            self.config = config
            self._forget(self.state)
            _log_changes(old, self.state)
            return True

    def _read_config(self, strict: bool) -> ServeConfig | None:
        if self.config_path is None:
            return None
        try:
            st = os.stat(self.config_path)
            stamp: tuple | None = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
        if stamp == self._config_stamp:
            return None
        self._config_stamp = stamp
        try:
            return load_config(self.config_path)
        except ConfigError as error:
            if strict:
                raise
            log.error("%s; the previous config stays in force", error)
            return None

    def _wanted(self, config: ServeConfig, catalog: Catalog) -> list[ModelVersion]:
        """Versions the routes need loaded: latest, every alias, traffic arms, shadows."""
        wanted: dict[tuple[str, int], ModelVersion] = {}
        for name, versions in catalog.versions.items():
            numbers = {max(versions), *catalog.aliases.get(name, {}).values()}
            model = config.models.get(name, ModelConfig())
            targets = [arm.target for arm in model.traffic]
            targets += [model.shadow.target] if model.shadow else []
            for target in targets:
                number = catalog.resolve(target)
                if number is not None:
                    wanted[(target.model, number)] = catalog.versions[target.model][number]
            for number in numbers:
                if number in versions:
                    wanted[(name, number)] = versions[number]
        return list(wanted.values())

    def _fetch(
        self, registry: Registry, versions: list[ModelVersion]
    ) -> dict[str, tuple[ModelVersion, str, bytes]]:
        blobs = {}
        with self._pin_lock:  # a version loaded for a pinned request is not loaded twice
            pinned = {key[2]: servable.runtime for key, servable in self._pinned.items()}
        for version in versions:
            if version.sha256 in self._runtimes or version.sha256 in self._failed:
                continue
            if version.sha256 in pinned:
                self._runtimes[version.sha256] = pinned[version.sha256]
                continue
            if version.sha256 in blobs:
                continue
            try:
                kind, data = registry.runtime_artifact(version)
            except SqlmlError as error:
                self._failed[version.sha256] = str(error)
                log.error("model %s cannot be served: %s", version.ref, error)
                continue
            blobs[version.sha256] = (version, kind, data)
        return blobs

    def _load(self, blobs: dict[str, tuple[ModelVersion, str, bytes]]) -> None:
        for digest, (version, kind, data) in blobs.items():
            started = time.perf_counter()
            try:
                self._runtimes[digest] = load_runtime(kind, data, version.ref)
            except Exception as error:  # noqa: BLE001 - any loader failure: serve the others
                self._failed[digest] = str(error)
                log.error("model %s cannot be served: %s", version.ref, error)
                continue
            elapsed = 1e3 * (time.perf_counter() - started)
            log.info("loaded model %s (%s, %.0f ms)", version.ref, kind, elapsed)

    def _build(self, config: ServeConfig, catalog: Catalog, old: PoolState) -> PoolState:
        servables: dict[tuple[str, int], Servable] = {}
        warnings: list[str] = []

        def servable(target: Target) -> Servable | None:
            number = catalog.resolve(target)
            if number is None:
                return None
            version = catalog.versions[target.model][number]
            key = (target.model, number)
            if key in servables:
                return servables[key]
            runtime = self._runtimes.get(version.sha256)
            if runtime is None:
                return None
            previous = old.servables.get(key)
            made = (
                previous
                if previous is not None and previous.version.sha256 == version.sha256
                else Servable(version, runtime)
            )
            servables[key] = made
            return made

        models = {}
        for name, versions in catalog.versions.items():
            model = config.models.get(name, ModelConfig())
            latest = max(versions)
            arms, weights = [], []
            for arm in model.traffic:
                found = servable(arm.target)
                if found is None:
                    why = catalog.problem(arm.target) or self._failed.get(
                        catalog.versions[name][catalog.resolve(arm.target)].sha256, "not loaded"
                    )
                    warnings.append(f"{arm.target.where}: {why}; that share of traffic is skipped")
                    continue
                arms.append(found)
                weights.append(arm.weight)
            if not arms:
                found = servable(Target(name, latest))
                if found is None and name in old.models and old.models[name].arms:
                    found = old.models[name].arms[0]
                    warnings.append(
                        f"model {name}@{latest} cannot be served "
                        f"({self._failed.get(versions[latest].sha256, 'not loaded')}); "
                        f"still serving {found.ref}"
                    )
                    servables[(name, found.number)] = found
                arms, weights = ([found], [1.0]) if found else ([], [])
            for number in catalog.aliases.get(name, {}).values():
                servable(Target(name, number))
            shadow = None
            if model.shadow is not None:
                shadow = servable(model.shadow.target)
                if shadow is None:
                    warnings.append(f"{model.shadow.target.where}: cannot be served; no shadow")
            logging_config = model.logging
            if logging_config is None and name in catalog.logging:
                settings = catalog.logging[name]
                logging_config = LogConfig(settings.sample_rate, settings.key_column)
            models[name] = ModelRoutes(
                name,
                versions,
                catalog.aliases.get(name, {}),
                latest,
                tuple(arms),
                tuple(np.cumsum(weights).tolist()),
                shadow,
                model.shadow.sample_rate if shadow is not None and model.shadow else 0.0,
                logging_config,
            )
        for text in warnings:
            if text not in self._warnings:
                log.warning(text)
        self._warnings = set(warnings)
        return PoolState(models, servables)

    def _forget(self, state: PoolState) -> None:
        """Drop runtimes nothing routes to any more (requests holding them finish first)."""
        used = {s.version.sha256 for s in state.servables.values()}
        with self._pin_lock:
            for key in [k for k in self._pinned if k[0] not in state.models]:
                del self._pinned[key]
            used |= {key[2] for key in self._pinned}
        for digest in [d for d in self._runtimes if d not in used]:
            del self._runtimes[digest]


def _log_changes(old: PoolState, new: PoolState) -> None:
    for name, routes in new.models.items():
        before = old.models.get(name)
        now = [s.ref for s in routes.arms]
        if before is None:
            log.info("serving model %s: %s", name, ", ".join(now) or "nothing loadable")
        elif [s.ref for s in before.arms] != now:
            log.info(
                "model %s: default route %s -> %s",
                name,
                ", ".join(s.ref for s in before.arms),
                ", ".join(now),
            )
    for name in old.models.keys() - new.models.keys():
        log.info("model %s was dropped from the catalog: no longer served", name)
