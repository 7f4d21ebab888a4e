"""The model catalog, stored inside the DuckDB database (schema `sqlml`).

Tables: `model_versions` (one row per version: format, signature, label, sha256),
`artifacts` (content-addressed BLOBs), `derived_artifacts` (e.g. the ONNX form of a
TensorFlow model) and `model_aliases`; the view `models` summarises them.
Every change runs in one transaction, so a failure leaves the catalog exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb

from sqlml.artifacts import sha256
from sqlml.errors import ArtifactError, ModelNotFoundError, SqlmlError
from sqlml.names import ModelRef, check_name
from sqlml.signature import Signature

SCHEMA_VERSION = 1
# model_versions.source of a version made by CREATE MODEL ... AS SELECT: in BigQuery such a model
# is trained natively, which changes how its ML.PREDICT compiles (sqlml.rewrite.bigquery).
TRAINED_SOURCE = "trained:"

_DDL = f"""
CREATE SCHEMA IF NOT EXISTS sqlml;
CREATE TABLE IF NOT EXISTS sqlml.meta (key VARCHAR PRIMARY KEY, value VARCHAR);
INSERT OR IGNORE INTO sqlml.meta VALUES ('schema_version', '{SCHEMA_VERSION}');
CREATE TABLE IF NOT EXISTS sqlml.artifacts (
    sha256 VARCHAR PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sqlml.model_versions (
    model VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    format VARCHAR NOT NULL,
    label VARCHAR,
    nulls VARCHAR NOT NULL DEFAULT 'null',
    signature JSON NOT NULL,
    sha256 VARCHAR NOT NULL,
    size_bytes BIGINT NOT NULL,
    source VARCHAR,
    description VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS sqlml.derived_artifacts (
    source_sha256 VARCHAR NOT NULL,  -- the registered artifact
    kind VARCHAR NOT NULL,           -- 'onnx': a faster runtime form of a TensorFlow model
    sha256 VARCHAR,                  -- in sqlml.artifacts; NULL when there is none (see reason)
    converter INTEGER NOT NULL,
    reason VARCHAR,
    PRIMARY KEY (source_sha256, kind)
);
CREATE TABLE IF NOT EXISTS sqlml.model_aliases (
    model VARCHAR NOT NULL,
    alias VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (model, alias)
);
CREATE OR REPLACE VIEW sqlml.models AS
SELECT
    v.model,
    v.version AS latest_version,
    n.versions,
    coalesce(a.aliases, MAP {{}}) AS aliases,
    v.format,
    v.label,
    CAST(json_extract_string(v.signature, '$.inputs[*].name') AS VARCHAR[]) AS inputs,
    CAST(json_extract_string(v.signature, '$.outputs[*].name') AS VARCHAR[]) AS outputs,
    json_extract(v.signature, '$.classes') AS classes,
    v.description,
    v.created_at
FROM sqlml.model_versions v
JOIN (SELECT model, max(version) AS latest, count(*) AS versions
      FROM sqlml.model_versions GROUP BY model) n
  ON v.model = n.model AND v.version = n.latest
LEFT JOIN (SELECT model, map(list(alias ORDER BY alias), list(version ORDER BY alias)) AS aliases
           FROM sqlml.model_aliases GROUP BY model) a
  ON v.model = a.model
ORDER BY v.model;
"""


@dataclass(frozen=True)
class ModelVersion:
    """One registered version, as stored (the artifact bytes are fetched separately)."""

    name: str
    version: int
    format: str
    signature: Signature
    label: str | None
    nulls: str
    sha256: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class Registry:
    """Reads and writes the catalog through one DuckDB connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, *, read_only: bool = False):
        self.con = con
        if read_only:
            if not self._run("SELECT 1 FROM duckdb_schemas() WHERE schema_name = 'sqlml'"):
                raise SqlmlError("this read-only database has no sqlml catalog (schema sqlml)")
            return
        with self._transaction():
            self._run(_DDL)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._run("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self._run("ROLLBACK")
            raise
        self._run("COMMIT")

    def add_version(
        self,
        name: str,
        fmt: str,
        data: bytes,
        signature: Signature,
        *,
        label: str | None = None,
        nulls: str = "null",
        source: str | None = None,
        description: str | None = None,
        must_be_new: bool = False,
        on_added: Callable[[ModelVersion], None] | None = None,
    ) -> ModelVersion:
        """Store an artifact as the next version of `name` (version 1 for a new model).

        `on_added` runs inside the same transaction (e.g. to store the model's SQL form), so
        a failure there leaves nothing behind either.
        """
        name = check_name(name)
        digest = sha256(data)
        with self._transaction():
            (latest,) = self.con.execute(
                "SELECT coalesce(max(version), 0) FROM sqlml.model_versions WHERE model = ?",
                [name],
            ).fetchall()[0]
            if must_be_new and latest:
                raise SqlmlError(
                    f"model {name} already exists (version {latest}); use CREATE OR REPLACE "
                    "MODEL to add a new version"
                )
            self._run("INSERT OR IGNORE INTO sqlml.artifacts VALUES (?, ?)", [digest, data])
            self._run(
                "INSERT INTO sqlml.model_versions (model, version, format, label, nulls, "
                "signature, sha256, size_bytes, source, description) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    name,
                    latest + 1,
                    fmt,
                    label,
                    nulls,
                    signature.to_json(),
                    digest,
                    len(data),
                    source,
                    description,
                ],
            )
            version = ModelVersion(name, latest + 1, fmt, signature, label, nulls, digest)
            if on_added is not None:
                on_added(version)
        return version

    def _run(self, sql: str, params: list | None = None) -> list[tuple]:
        """Execute and fetch all: DuckDB keeps a connection busy until a result is drained."""
        return (
            self.con.execute(sql, params).fetchall() if params else self.con.execute(sql).fetchall()
        )

    def _first(self, sql: str, params: list) -> tuple | None:
        """First row of a query; fetches everything so no result stays open on the connection."""
        rows = self._run(sql, params)
        return rows[0] if rows else None

    def resolve(self, ref: ModelRef | str) -> ModelVersion:
        """The version a reference points at: pinned, via alias, or the newest."""
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        query = (
            "SELECT model, version, format, signature, label, nulls, sha256 "
            "FROM sqlml.model_versions WHERE model = ? "
        )
        if ref.version is not None:
            row = self._first(query + "AND version = ?", [ref.name, ref.version])
        elif ref.alias is not None:
            row = self._first(
                query + "AND version = (SELECT version FROM sqlml.model_aliases "
                "WHERE model = ? AND alias = ?)",
                [ref.name, ref.name, ref.alias],
            )
        else:
            row = self._first(query + "ORDER BY version DESC LIMIT 1", [ref.name])
        if row is None:
            raise ModelNotFoundError(self._not_found_message(ref))
        name, version, fmt, signature, label, nulls, digest = row
        return ModelVersion(
            name, version, fmt, Signature.from_json(signature), label, nulls, digest
        )

    def _not_found_message(self, ref: ModelRef) -> str:
        known = self.names()
        if ref.name not in known:
            hint = f" (registered: {', '.join(known)})" if known else " (no models are registered)"
            return f"unknown model {ref.name!r}{hint}"
        if ref.version is not None:
            versions = [
                v
                for (v,) in self.con.execute(
                    "SELECT version FROM sqlml.model_versions WHERE model = ? ORDER BY 1",
                    [ref.name],
                ).fetchall()
            ]
            return f"model {ref.name} has no version {ref.version} (versions: {versions})"
        aliases = sorted(self.aliases(ref.name))
        return f"model {ref.name} has no alias {ref.alias!r} (aliases: {aliases})"

    def artifact(self, version: ModelVersion) -> bytes:
        """The artifact bytes, verified against the sha256 recorded at registration.

        Read through a separate cursor: this also runs inside a model function, while DuckDB
        is executing a query on the main connection.
        """
        with self.con.cursor() as cursor:
            rows = cursor.execute(
                "SELECT data FROM sqlml.artifacts WHERE sha256 = ?", [version.sha256]
            ).fetchall()
        row = rows[0] if rows else None
        if row is None:
            raise ArtifactError(f"model {version.ref}: artifact {version.sha256[:12]} is missing")
        data = bytes(row[0])
        if sha256(data) != version.sha256:
            raise ArtifactError(
                f"model {version.ref}: artifact sha256 mismatch (stored {version.sha256[:12]}..., "
                f"found {sha256(data)[:12]}...): it was modified after registration"
            )
        return data

    def add_derived(
        self,
        source: ModelVersion,
        kind: str,
        data: bytes | None,
        converter: int,
        reason: str | None,
    ) -> None:
        """Record a derived form of a version's artifact (or why it has none); the caller
        runs the transaction (e.g. `add_version`'s on_added)."""
        digest = sha256(data) if data is not None else None
        if data is not None:
            self._run("INSERT OR IGNORE INTO sqlml.artifacts VALUES (?, ?)", [digest, data])
        self._run(
            "INSERT OR REPLACE INTO sqlml.derived_artifacts VALUES (?, ?, ?, ?, ?)",
            [source.sha256, kind, digest, converter, reason],
        )

    def derived(self, version: ModelVersion, kind: str) -> bytes | None:
        """A derived artifact of `version` (sha256-verified like the artifact), or None."""
        with self.con.cursor() as cursor:
            if not cursor.execute(
                "SELECT 1 FROM duckdb_tables() WHERE schema_name = 'sqlml' "
                "AND table_name = 'derived_artifacts' AND database_name = current_database()"
            ).fetchall():
                return None  # a read-only file from before derived artifacts
            rows = cursor.execute(
                "SELECT d.sha256, a.data FROM sqlml.derived_artifacts d "
                "LEFT JOIN sqlml.artifacts a ON a.sha256 = d.sha256 "
                "WHERE d.source_sha256 = ? AND d.kind = ? AND d.sha256 IS NOT NULL",
                [version.sha256, kind],
            ).fetchall()
        if not rows:
            return None
        digest, data = rows[0]
        if data is None or sha256(bytes(data)) != digest:
            raise ArtifactError(
                f"model {version.ref}: its {kind} form {digest[:12]}... is missing or was "
                "modified after registration"
            )
        return bytes(data)

    def is_trained(self, version: ModelVersion) -> bool:
        """Made by CREATE MODEL ... AS SELECT (sqlml.training), not imported."""
        row = self._first(
            "SELECT source FROM sqlml.model_versions WHERE model = ? AND version = ?",
            [version.name, version.version],
        )
        return bool(row and row[0] and row[0].startswith(TRAINED_SOURCE))

    def runtime_artifact(self, version: ModelVersion) -> tuple[str, bytes]:
        """The format and bytes to load for a version (sha256-verified): a TensorFlow model's
        ONNX form when it has one (onnxruntime serves it ~3x faster; it was checked against
        TensorFlow at registration), else the artifact itself."""
        if version.format != "onnx":
            onnx_form = self.derived(version, "onnx")
            if onnx_form is not None:
                self.artifact(version)  # the ONNX form stands for it: verify that too
                return "onnx", onnx_form
        return version.format, self.artifact(version)

    def versions(self) -> list[ModelVersion]:
        """Every version of every model, oldest first."""
        rows = self._run(
            "SELECT model, version, format, signature, label, nulls, sha256 "
            "FROM sqlml.model_versions ORDER BY model, version"
        )
        return [
            ModelVersion(name, version, fmt, Signature.from_json(sig), label, nulls, digest)
            for name, version, fmt, sig, label, nulls, digest in rows
        ]

    def names(self) -> list[str]:
        rows = self.con.execute(
            "SELECT DISTINCT model FROM sqlml.model_versions ORDER BY 1"
        ).fetchall()
        return [r[0] for r in rows]

    def aliases(self, name: str) -> dict[str, int]:
        rows = self.con.execute(
            "SELECT alias, version FROM sqlml.model_aliases WHERE model = ?", [name]
        ).fetchall()
        return dict(rows)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point `alias` at `version` (creating or moving it): rollback = move it back."""
        alias = check_name(alias, "alias")
        target = self.resolve(ModelRef(check_name(name), version=int(version)))
        with self._transaction():
            self._run(
                "INSERT OR REPLACE INTO sqlml.model_aliases VALUES (?, ?, ?, current_timestamp)",
                [target.name, alias, target.version],
            )

    def delete_alias(self, name: str, alias: str) -> None:
        name, alias = check_name(name), check_name(alias, "alias")
        if alias not in self.aliases(name):
            raise ModelNotFoundError(f"model {name} has no alias {alias!r}")
        with self._transaction():
            self._run(
                "DELETE FROM sqlml.model_aliases WHERE model = ? AND alias = ?", [name, alias]
            )

    def drop(
        self,
        name: str,
        *,
        missing_ok: bool = False,
        on_drop: Callable[[str], None] | None = None,
    ) -> bool:
        """Remove a model with all its versions and aliases (and artifacts no one else uses).

        `on_drop` runs inside the same transaction, before the catalog rows go.
        """
        name = check_name(name)
        if name not in self.names():
            if missing_ok:
                return False
            raise ModelNotFoundError(self._not_found_message(ModelRef(name)))
        with self._transaction():
            if on_drop is not None:
                on_drop(name)
            self._run("DELETE FROM sqlml.model_aliases WHERE model = ?", [name])
            self._run("DELETE FROM sqlml.model_versions WHERE model = ?", [name])
            self._run(
                "DELETE FROM sqlml.derived_artifacts WHERE source_sha256 NOT IN "
                "(SELECT sha256 FROM sqlml.model_versions)"
            )
            self._run(
                "DELETE FROM sqlml.artifacts WHERE sha256 NOT IN "
                "(SELECT sha256 FROM sqlml.model_versions) AND sha256 NOT IN "
                "(SELECT sha256 FROM sqlml.derived_artifacts WHERE sha256 IS NOT NULL)"
            )
        return True
