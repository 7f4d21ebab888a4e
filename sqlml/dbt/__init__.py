"""sqlml in dbt: a dbt-duckdb plugin plus a dbt package of `sqlml.*` macros (docs/dbt.md).

This folder is both: the Python package `sqlml.dbt` (the plugin, `module: sqlml.dbt` in
profiles.yml) and a dbt package named `sqlml` (dbt_project.yml, macros/) that a dbt project
installs with `packages.yml: - local: <PACKAGE_DIR>` (`python -m sqlml.dbt` prints it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent


def __getattr__(name: str) -> Any:
    """`Plugin` is imported on first use: printing PACKAGE_DIR must not need dbt installed."""
    if name == "Plugin":
        from sqlml.dbt.plugin import Plugin

        return Plugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
