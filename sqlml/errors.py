"""Errors sqlml raises. Each message names the model, column or field at fault."""

from __future__ import annotations


class SqlmlError(Exception):
    """Base class: every error sqlml raises on purpose."""


class ModelNotFoundError(SqlmlError, LookupError):
    """An unknown model, version or alias."""


class InvalidNameError(SqlmlError, ValueError):
    """A model or alias name that is not a plain identifier (quotes, semicolons, SQL...)."""


class ArtifactError(SqlmlError):
    """A model artifact that cannot be read, is corrupt, or does not match its sha256."""


class ModelInputError(SqlmlError, ValueError):
    """Query columns that do not fit a model's inputs (missing, wrong type, NULL)."""


class SqlCompileError(SqlmlError):
    """SQL that sqlml cannot parse, rewrite or compile for a target."""
