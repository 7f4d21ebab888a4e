"""Render templated SQL with the `ml.*` Jinja macro library shipped in sqlml/sql/ml.sql.

    render("SELECT * FROM {{ ml.predict('churn', 'users', threshold=0.3) }}")

The output is sqlml SQL, which then goes through the one pipeline (DuckDB or BigQuery).
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import jinja2

from sqlml.errors import SqlCompileError

LIBRARY_DIR = Path(__file__).resolve().parent / "sql"


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(LIBRARY_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render(text: str, **variables: Any) -> str:
    """Render `text` with `ml` (the macro library) and `variables` in scope."""
    env = environment()
    try:
        ml = env.get_template("ml.sql").module
        return env.from_string(text).render(ml=ml, **variables)
    except jinja2.TemplateError as error:
        line = getattr(error, "lineno", None) or template_line(error)
        where = f" (line {line})" if line else ""
        raise SqlCompileError(f"template error{where}: {error}") from None


def template_line(error: Exception) -> int | None:
    """Jinja puts the template's own line into the traceback of runtime errors."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == "<template>"]
    return frames[-1].lineno if frames else None
