"""sqlml: serve machine-learning models where the data lives, from SQL."""

from sqlml.errors import (
    ArtifactError,
    InvalidNameError,
    ModelInputError,
    ModelNotFoundError,
    SqlCompileError,
    SqlmlError,
)
from sqlml.session import Database, connect

__version__ = "0.1.0"
__all__ = [
    "ArtifactError",
    "Database",
    "InvalidNameError",
    "ModelInputError",
    "ModelNotFoundError",
    "SqlCompileError",
    "SqlmlError",
    "connect",
]
