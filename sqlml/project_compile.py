"""`sqlml compile PROJECT --target bigquery`: one BigQuery file per project file, plus a manifest.

    OUT/_models.sql          CREATE OR REPLACE MODEL for every declared model (imports)
    OUT/_udfs.sql            the project's scalar macros (udfs/*.sql) as BigQuery SQL UDFs
    OUT/<file>.sql           CREATE OR REPLACE TABLE|VIEW `project.dataset.file` AS ...
    OUT/artifacts/           the model files to upload
    OUT/manifest.json        run order, dependencies, and the uploads to do first

What the models output (labels, classes) and their training statistics come from a DuckDB
registry: the project's database when `sqlml run` has built it, else the declared artifacts
registered in memory, with statistics when their training_data is readable here.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from sqlml.errors import SqlmlError
from sqlml.project import Project, ProjectError, check_model_files, order
from sqlml.rewrite.bigquery import compile_bigquery
from sqlml.session import Database, connect

MODELS_FILE = "_models.sql"
UDFS_FILE = "_udfs.sql"


@dataclass
class CompiledProject:
    out: Path
    files: list[Path]  # in run order, _models.sql first
    manifest: dict[str, Any]


def compile_project(
    project: Project,
    out: str | Path,
    *,
    database: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> CompiledProject:
    """Write the BigQuery form of `project` into `out` (replaced whole; see module doc)."""
    bigquery = project.targets.get("bigquery", {})
    if not bigquery.get("dataset"):
        raise ProjectError("sqlml_project.yml: targets.bigquery.dataset is required to compile")
    check_model_files(project)
    rendered = project.render("bigquery", overrides)
    sequence = order(rendered)
    target = Path(out).resolve()
    if target == project.root or project.root.is_relative_to(target):
        raise ProjectError(f"output folder {target} would overwrite the project")
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with _registry(project, database) as db:
            options = dict(
                dataset=_dataset(bigquery),
                model_uri=bigquery.get("model_uri"),
                base_dir=project.root,
                layouts=db.output_layout,
                feature_stats=db.feature_stats,
                describe=db.describe_if_possible,
            )
            models_sql, uploads = _models(project, staging, options)
            macros = _udfs(project, staging, options["dataset"])
            entries = []
            for name in sequence:
                file = rendered[name]
                kind = "TABLE" if file.materialized == "table" else "VIEW"
                relation = project.relation(name, "bigquery")
                text = f"CREATE OR REPLACE {kind} {relation} AS {file.sql}"
                where = file.path.relative_to(project.root)
                try:
                    compiled = _qualify_macros(
                        compile_bigquery(text, **options).sql, macros, options["dataset"]
                    )
                except (SqlmlError, sqlglot.errors.SqlglotError) as error:
                    raise ProjectError(f"{where}: {error}") from None
                (staging / f"{name}.sql").write_text(_header(where) + compiled)
                entries.append({
                    "name": name, "file": f"{name}.sql", "source": str(where),
                    "materialized": file.materialized, "relation": relation.replace('"', ""),
                    "depends_on": sorted(file.refs),
                })  # fmt: skip
        manifest = {
            "project": project.name,
            "target": "bigquery",
            "dataset": bigquery.get("dataset"),
            "models_file": MODELS_FILE if models_sql else None,
            "udfs_file": UDFS_FILE if macros else None,
            "uploads": uploads,
            "order": entries,
        }
        text = json.dumps(manifest, indent=2) + "\n"
        (staging / "manifest.json").write_text(text.replace(str(staging), str(target)))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        for upload in uploads:  # the commands name the final folder, not the staging one
            upload["command"] = upload["command"].replace(str(staging), str(target))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    setup = [target / MODELS_FILE] if models_sql else []
    setup += [target / UDFS_FILE] if macros else []
    files = setup + [target / e["file"] for e in entries]
    return CompiledProject(target, files, manifest)


def _dataset(bigquery: dict[str, str]) -> str:
    project = bigquery.get("project")
    return f"{project}.{bigquery['dataset']}" if project else bigquery["dataset"]


def _header(source: Any) -> str:
    return f"-- compiled by sqlml from {source}; do not edit\n"


def _models(project: Project, staging: Path, options: dict[str, Any]) -> tuple[str, list]:
    """CREATE OR REPLACE MODEL statements for the declared models, and the uploads they need."""
    if not project.models:
        return "", []
    statements = []
    for model in project.models:
        fmt = model.format or ("tensorflow" if model.path.is_dir() else "onnx")
        relative = model.path.relative_to(project.root).as_posix()
        statements.append(
            f"CREATE OR REPLACE MODEL {model.name} OPTIONS(model_type='{fmt}', "
            f"model_path='{relative}')"
        )
    compiled = compile_bigquery(
        ";\n".join(statements), artifact_dir=staging / "artifacts", **options
    )
    (staging / MODELS_FILE).write_text(_header("models.yml") + compiled.sql)
    uploads = [
        {"model": a.model, "local": str(Path("artifacts") / Path(a.written or a.source).name),
         "uri": a.uri, "command": a.upload_command}
        for a in compiled.artifacts
    ]  # fmt: skip
    return compiled.sql, uploads


def _udfs(project: Project, staging: Path, dataset: str) -> set[str]:
    """udfs/*.sql scalar macros -> `CREATE OR REPLACE FUNCTION dataset.f(x ANY TYPE) AS (...)`;
    returns their lower-cased names, which file SQL then calls qualified by the dataset."""
    statements, names = [], set()
    for path in project.udfs:
        where = path.relative_to(project.root)
        try:
            trees = [t for t in sqlglot.parse(path.read_text(), read="duckdb") if t is not None]
        except sqlglot.errors.SqlglotError as error:
            raise ProjectError(f"{where}: {error}") from None
        for tree in trees:
            function = tree.this if isinstance(tree, exp.Create) else None
            if (
                not isinstance(function, exp.UserDefinedFunction)
                or str(tree.args.get("kind", "")).upper() not in ("MACRO", "FUNCTION")
                or isinstance(tree.expression, exp.Query)
            ):
                raise ProjectError(
                    f"{where}: only scalar macros (CREATE MACRO f(x) AS expression) compile for "
                    f"BigQuery; this has no BigQuery equivalent: {tree.sql('duckdb')[:80]}"
                )
            name = function.this.name
            params = ", ".join(f"{p.name} ANY TYPE" for p in function.expressions)
            body = tree.expression.sql("bigquery")
            statements.append(
                f"CREATE OR REPLACE FUNCTION `{dataset}.{name}`({params}) AS ({body})"
            )
            names.add(name.lower())
    if statements:
        text = ";\n\n".join(statements) + ";\n"
        sqlglot.parse(text, read="bigquery")
        (staging / UDFS_FILE).write_text(_header("udfs/") + text)
    return names


def _qualify_macros(sql: str, macros: set[str], dataset: str) -> str:
    """Calls of project macros become `dataset`.f(...): BigQuery UDFs live in a dataset. The
    result is parsed with BigQuery's dialect (it must, to be run there)."""
    trees = sqlglot.parse(sql, read="bigquery")
    if not macros:
        return sql
    for tree in trees:
        for call in list(tree.find_all(exp.Anonymous)):
            if call.name.lower() in macros:
                qualifier = exp.to_identifier(dataset, quoted=True)
                call.replace(exp.Dot(this=qualifier, expression=call.copy()))
    return ";\n\n".join(t.sql("bigquery", pretty=True) for t in trees if t) + ";\n"


class _registry:
    """The project's DuckDB registry (read-only) if built, else the models registered in memory."""

    def __init__(self, project: Project, database: str | Path | None) -> None:
        self.project = project
        path = Path(database) if database else project.root / project.targets["duckdb"]["database"]
        self.path = path if path.is_file() else None
        self.db: Database | None = None

    def __enter__(self) -> Database:
        if self.path is not None:
            self.db = connect(self.path, read_only=True)
            return self.db
        self.db = connect()
        for model in self.project.models:
            options = dict(format=model.format, label=model.label, classes=model.classes,
                           nulls=model.nulls, engine="runtime")  # fmt: skip
            try:  # statistics too, when the training data is readable here (e.g. files)
                training = model.training_data and self.project.render_text(
                    model.training_data, "duckdb", f"model {model.name} training_data"
                )
                self.db.register_model(model.name, str(model.path), training_data=training or None,
                                       **options)  # fmt: skip
            except (SqlmlError, duckdb.Error):
                self.db.register_model(model.name, str(model.path), **options)
        return self.db

    def __exit__(self, *exc: object) -> None:
        if self.db is not None:
            self.db.close()
