"""A templated SQL project: config, model declarations, Jinja rendering and the ref() graph.

    shop/
      sqlml_project.yml   name, targets (duckdb: database, schema; bigquery: dataset,
                          model_uri, project), vars, sources
      models.yml          model artifacts: name, path, format, label, classes, training_data
      sql/*.sql           one SELECT per file, templated; the file name is the relation name
      udfs/*.sql          optional project SQL macros (CREATE MACRO ...), run before the files

Rendering is for one target ('duckdb' or 'bigquery'): `ref('file')` and `source('name', 'table')`
become quoted relation names of that target, so the same file runs on DuckDB and compiles for
BigQuery. Rendering records each file's refs and `config(...)`, which give the run order.
"""

from __future__ import annotations

import graphlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from sqlml.errors import SqlmlError
from sqlml.names import check_name
from sqlml.templates import environment, template_line

CONFIG_FILE = "sqlml_project.yml"
TARGETS = ("duckdb", "bigquery")
MATERIALIZATIONS = ("table", "view")
_CONFIG_KEYS = {"name", "targets", "vars", "sources", "models_file"}
_TARGET_KEYS = {
    "duckdb": {"database", "schema"},
    "bigquery": {"project", "dataset", "model_uri"},
}
_SOURCE_KEYS = {"tables", "schema", "dataset", "project", "external_location"}
_READERS = {".csv": "read_csv", ".parquet": "read_parquet", ".json": "read_json"}
_MODEL_KEYS = {"name", "path", "format", "label", "classes", "nulls", "description",
               "training_data", "engine"}  # fmt: skip
_FILE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ProjectError(SqlmlError):
    """A project that cannot be loaded, rendered or ordered; the message names the file."""


@dataclass(frozen=True)
class ModelDecl:
    """A model artifact the project registers (models.yml)."""

    name: str
    path: Path  # resolved, inside the project folder
    format: str | None = None  # 'onnx' | 'tensorflow' | None (from the path)
    label: str | None = None
    classes: list | None = None
    nulls: str = "null"
    description: str | None = None
    training_data: str | None = None  # templated SQL: a query or a table name
    engine: str = "auto"


@dataclass
class Rendered:
    """One SQL file rendered for a target."""

    name: str
    path: Path
    sql: str
    refs: list[str] = field(default_factory=list)
    materialized: str = "table"


@dataclass
class Project:
    root: Path
    name: str
    targets: dict[str, dict[str, str]]
    vars: dict[str, Any]
    sources: dict[str, dict[str, Any]]
    models: list[ModelDecl]
    files: dict[str, Path]  # relation name -> sql file
    udfs: list[Path]

    # -- relation names per target -----------------------------------------------------------
    def relation(self, name: str, target: str) -> str:
        """Where a file's result lives in `target`, as quoted SQL."""
        if target == "duckdb":
            return _quoted(self.targets["duckdb"].get("schema", "main"), name)
        bigquery = self.targets.get("bigquery", {})
        return _quoted(bigquery.get("project"), bigquery.get("dataset"), name)

    def source_relation(self, source: str, table: str, target: str) -> str:
        spec = self.sources.get(source)
        if spec is None:
            known = ", ".join(self.sources) or "none declared"
            raise ProjectError(f"unknown source {source!r} (sources: {known})")
        tables = spec.get("tables")
        if tables is not None and table not in tables:
            raise ProjectError(f"source {source!r} has no table {table!r} (tables: {tables})")
        if target == "duckdb" and spec.get("external_location"):
            return self._external(source, table, str(spec["external_location"]))
        if target == "duckdb":
            return _quoted(spec.get("schema"), table)
        bigquery = self.targets.get("bigquery", {})
        dataset = spec.get("dataset", source)
        return _quoted(spec.get("project", bigquery.get("project")), dataset, table)

    def _external(self, source: str, table: str, location: str) -> str:
        """dbt-duckdb's `external_location`: files read in place, e.g. 'data/{name}.csv'."""
        what = f"source {source!r} external_location"
        path = inside(self.root, location.replace("{name}", table), what)
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            raise ProjectError(f"{what}: {path.name} is not .csv, .parquet or .json")
        if not path.is_file():
            raise ProjectError(f"{what}: no file {path.relative_to(self.root)} for table {table!r}")
        return f"(SELECT * FROM {reader}('{str(path).replace(chr(39), chr(39) * 2)}'))"

    # -- rendering ---------------------------------------------------------------------------
    def render(
        self, target: str, overrides: Mapping[str, Any] | None = None
    ) -> dict[str, Rendered]:
        """Every SQL file rendered for `target`; `overrides` replace vars (`--vars`)."""
        if target not in TARGETS:
            raise ProjectError(f"unknown target {target!r}: use one of {TARGETS}")
        env = environment()
        ml = env.get_template("ml.sql").module
        values = {**self.vars, **(overrides or {})}
        return {
            name: self._render_file(env, ml, name, path, target, values)
            for name, path in self.files.items()
        }

    def render_text(self, text: str, target: str, what: str) -> str:
        """Render a templated snippet (e.g. a model's training_data) with source() and var()."""
        env = environment()
        ml = env.get_template("ml.sql").module
        record = Rendered(what, self.root, "")
        context = self._context(record, target, self.vars, ml)
        try:
            return env.from_string(text).render(**context)
        except jinja2.TemplateError as error:
            raise ProjectError(f"{what}: template error: {error}") from None

    def _render_file(
        self, env: jinja2.Environment, ml: Any, name: str, path: Path, target: str,
        values: Mapping[str, Any],
    ) -> Rendered:  # fmt: skip
        record = Rendered(name, path, "")
        where = path.relative_to(self.root)
        try:
            template = env.from_string(path.read_text())
            # leading blank lines stay: line N of the SQL is line N of the file
            record.sql = template.render(**self._context(record, target, values, ml)).rstrip()
        except jinja2.TemplateSyntaxError as error:
            raise ProjectError(f"{where} line {error.lineno}: template error: {error}") from None
        except (jinja2.TemplateError, ProjectError) as error:
            line = template_line(error)
            at = f" line {line}" if line else ""
            text = str(error) if isinstance(error, ProjectError) else f"template error: {error}"
            raise ProjectError(f"{where}{at}: {text}") from None
        while record.sql.endswith(";"):
            record.sql = record.sql[:-1].rstrip()
        if not record.sql.strip():
            raise ProjectError(f"{where}: the file renders to no SQL")
        return record

    def _context(
        self, record: Rendered, target: str, values: Mapping[str, Any], ml: Any
    ) -> dict[str, Any]:
        def ref(name: str) -> str:
            if name not in self.files:
                raise ProjectError(
                    f"ref({name!r}): no file sql/{name}.sql in the project "
                    f"(files: {', '.join(sorted(self.files))})"
                )
            if name not in record.refs:
                record.refs.append(name)
            return self.relation(name, target)

        def source(name: str, table: str) -> str:
            return self.source_relation(name, table, target)

        def var(name: str, default: Any = _MISSING) -> Any:
            if name in values:
                return values[name]
            if default is _MISSING:
                raise ProjectError(f"var({name!r}) is not set in vars: or --vars, and no default")
            return default

        def config(materialized: str = "table", **unknown: Any) -> str:
            if unknown:
                raise ProjectError(f"config() got unknown option(s) {sorted(unknown)}")
            if materialized not in MATERIALIZATIONS:
                raise ProjectError(
                    f"config(materialized={materialized!r}): use one of {MATERIALIZATIONS}"
                )
            record.materialized = materialized
            return ""

        return {"ref": ref, "source": source, "var": var, "config": config, "ml": ml,
                "target": {"name": target, **self.targets.get(target, {})}}  # fmt: skip


_MISSING = object()


def _quoted(*parts: str | None) -> str:
    return ".".join('"' + str(p).replace('"', '""') + '"' for p in parts if p)


# -- ordering and selection -------------------------------------------------------------------


def order(rendered: Mapping[str, Rendered]) -> list[str]:
    """Files in dependency order (refs first, then by name); a cycle is an error naming it."""
    sorter = graphlib.TopologicalSorter({name: r.refs for name, r in rendered.items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as error:
        cycle = error.args[1]
        raise ProjectError(f"ref() cycle: {' -> '.join(cycle)}") from None
    result: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        result.extend(ready)
        sorter.done(*ready)
    return result


def select(rendered: Mapping[str, Rendered], selectors: Iterable[str] | None) -> set[str]:
    """dbt's basic selectors: `name`, `+name` (with what it refs), `name+` (with its dependents)."""
    names = set(rendered)
    chosen_all = list(selectors or [])
    if not chosen_all:
        return names
    dependents: dict[str, set[str]] = {n: set() for n in names}
    for name, r in rendered.items():
        for parent in r.refs:
            dependents[parent].add(name)
    chosen: set[str] = set()
    for selector in chosen_all:
        for item in selector.replace(",", " ").split():
            up, down = item.startswith("+"), item.endswith("+")
            name = item.strip("+")
            if name not in names:
                raise ProjectError(f"--select {item}: no file sql/{name}.sql")
            chosen.add(name)
            if up:
                chosen |= _closure(name, lambda n: rendered[n].refs)
            if down:
                chosen |= _closure(name, lambda n: dependents[n])
    return chosen


def _closure(start: str, step: Any) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for nxt in step(stack.pop()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


# -- loading ----------------------------------------------------------------------------------


def load(root: str | Path) -> Project:
    """Read a project folder; every problem is an error naming the file and key at fault."""
    folder = Path(root).resolve()
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ProjectError(f"no {CONFIG_FILE} in {folder}: not a sqlml project folder")
    config = _yaml(config_path)
    _check_keys(config, _CONFIG_KEYS, CONFIG_FILE)
    if not isinstance(config.get("name"), str) or not config["name"]:
        raise ProjectError(f"{CONFIG_FILE}: `name` is required")
    targets = config.get("targets") or {}
    if not isinstance(targets, dict):
        raise ProjectError(f"{CONFIG_FILE}: `targets` must be a mapping")
    for target, options in targets.items():
        if target not in TARGETS:
            raise ProjectError(f"{CONFIG_FILE}: unknown target {target!r} (use {TARGETS})")
        _check_keys(options or {}, _TARGET_KEYS[target], f"{CONFIG_FILE} targets.{target}")
    targets = {t: {k: str(v) for k, v in (targets.get(t) or {}).items()} for t in TARGETS}
    targets["duckdb"].setdefault("database", f"{config['name']}.duckdb")
    sources = config.get("sources") or {}
    for name, spec in sources.items():
        _check_keys(spec or {}, _SOURCE_KEYS, f"{CONFIG_FILE} sources.{name}")
    models_file = folder / str(config.get("models_file", "models.yml"))
    models = _models(folder, models_file) if models_file.is_file() else []
    if "models_file" in config and not models_file.is_file():
        raise ProjectError(f"{CONFIG_FILE}: models_file {models_file.name!r} does not exist")
    return Project(
        root=folder,
        name=config["name"],
        targets=targets,
        vars=dict(config.get("vars") or {}),
        sources={n: dict(s or {}) for n, s in sources.items()},
        models=models,
        files=_sql_files(folder),
        udfs=sorted((folder / "udfs").glob("*.sql")),
    )


def inside(root: Path, relative: str, what: str) -> Path:
    """`relative` resolved under `root`; a path that escapes the project folder is an error."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ProjectError(f"{what}: path {relative!r} is outside the project folder")
    return path


def _sql_files(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    sql_dir = folder / "sql"
    for path in sorted(sql_dir.rglob("*.sql")):
        name = path.stem
        if not _FILE_NAME.match(name):
            raise ProjectError(
                f"{path.relative_to(folder)}: file names become table names; use letters, "
                "digits and _"
            )
        if name in files:
            raise ProjectError(
                f"two files are named {name}.sql: {files[name].relative_to(folder)} and "
                f"{path.relative_to(folder)}"
            )
        files[name] = path
    return files


def _models(folder: Path, path: Path) -> list[ModelDecl]:
    data = _yaml(path)
    _check_keys(data, {"models"}, path.name)
    declared = []
    seen: set[str] = set()
    for i, item in enumerate(data.get("models") or []):
        what = f"{path.name} models[{i}]"
        if not isinstance(item, dict):
            raise ProjectError(f"{what}: expected a mapping with name and path")
        _check_keys(item, _MODEL_KEYS, what)
        if "name" not in item or "path" not in item:
            raise ProjectError(f"{what}: `name` and `path` are required")
        try:
            name = check_name(item["name"])
        except SqlmlError as error:
            raise ProjectError(f"{what}: {error}") from None
        if name in seen:
            raise ProjectError(f"{path.name}: model {name} is declared twice")
        seen.add(name)
        fmt = item.get("format")
        if fmt not in (None, "onnx", "tensorflow"):
            raise ProjectError(f"{what} ({name}): format must be onnx or tensorflow, got {fmt!r}")
        declared.append(
            ModelDecl(
                name=name,
                path=inside(folder, str(item["path"]), f"{path.name} model {name}"),
                format=fmt,
                label=item.get("label"),
                classes=item.get("classes"),
                nulls=item.get("nulls", "null"),
                description=item.get("description"),
                training_data=item.get("training_data"),
                engine=item.get("engine", "auto"),
            )
        )
    return declared


def _yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        raise ProjectError(f"{path.name}{at}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ProjectError(f"{path.name}: expected a mapping at the top")
    return data


def _check_keys(data: Mapping[str, Any], allowed: set[str], what: str) -> None:
    if not isinstance(data, Mapping):
        raise ProjectError(f"{what}: expected a mapping")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ProjectError(
            f"{what}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )


def check_model_files(project: Project) -> None:
    """Every declared artifact exists (before anything runs)."""
    for model in project.models:
        if not model.path.exists():
            raise ProjectError(
                f"model {model.name}: no file or folder at {model.path.relative_to(project.root)}"
            )
