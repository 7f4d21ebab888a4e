"""Model references: `name`, `name@3` (a version) and `name@champion` (an alias).

Names become DuckDB function names and BigQuery model ids, so only plain identifiers are
allowed: that alone rules out quoting tricks and SQL injection through a model name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlml.errors import InvalidNameError

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
SCORE_SUFFIX = ":score"  # `"churn:score"(...)`: a model function's one-number twin (udf.py)


def check_name(name: object, what: str = "model name") -> str:
    """Return `name` lower-cased, or raise if it is not a plain identifier."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name.lower()):
        raise InvalidNameError(
            f"invalid {what} {name!r}: use letters, digits and underscores, "
            "starting with a letter or underscore (at most 63 characters)"
        )
    return name.lower()


@dataclass(frozen=True)
class ModelRef:
    """What a SQL text or API call names: a model, optionally pinned to a version or alias."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        if not isinstance(text, str):
            raise InvalidNameError(f"invalid model reference {text!r}")
        name, sep, pin = text.partition("@")
        name = check_name(name)
        if not sep:
            return cls(name)
        if pin.isdigit():
            return cls(name, version=int(pin))
        return cls(name, alias=check_name(pin, "alias"))

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name
