"""The serving config file (traffic, shadow, logging per model) and the server's limits.

The config file is YAML, re-read whenever its modification time changes, so traffic moves
without a restart:

    models:
      churn:
        traffic:                       # weighted split of /v1/models/churn:predict
          - {version: 1, weight: 90}
          - {alias: candidate, weight: 10}
        shadow: churn_challenger@2     # or {model: ..., version: 2 | alias: ..., sample_rate: 0.5}
        logging: {sample_rate: 0.1, key_column: user_id}

Every error names the field at fault (`models.churn.traffic[1].weight`), so that a bad edit is
rejected with a message saying where, and the previous config stays in force.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from sqlml.errors import InvalidNameError, SqlmlError
from sqlml.names import ModelRef, check_name


class ConfigError(SqlmlError):
    """An invalid serving config file or limit; the message names the field."""


@dataclass(frozen=True)
class Limits:
    """Server limits and intervals (`run_server(**limits)`); fixed for the server's lifetime."""

    max_body_bytes: int = 10 * 1024 * 1024  # larger bodies get 413 before they are read
    max_instances: int = 10_000  # rows per request; more is a 400
    timeout: float = 30.0  # seconds a client may stall mid-request (or idle on keep-alive)
    max_connections: int = 256  # open client connections; more get 503 at once
    poll_interval: float = 2.0  # seconds between catalog/config checks
    log_flush_seconds: float = 2.0  # request-log writes at least this often...
    log_flush_rows: int = 1_000  # ...or as soon as this many rows wait
    log_max_rows: int = 100_000  # buffered log rows beyond this are dropped (and counted)
    shadow_queue: int = 1_000  # pending shadow jobs beyond this are dropped (and counted)

    @classmethod
    def from_options(cls, **options: Any) -> Limits:
        """Limits from keyword options, each checked to be a positive number of the right kind."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(f"unknown server option(s) {unknown} (known: {sorted(known)})")
        values = {}
        for name, value in options.items():
            if value is None:
                continue
            integer = isinstance(getattr(cls, name), int)
            ok = (
                isinstance(value, int) if integer else isinstance(value, (int, float))
            ) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value <= 0:
                kind = "a positive integer" if integer else "a positive number"
                raise ConfigError(f"server option {name} must be {kind}, got {value!r}")
            values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class Target:
    """A version or alias of a model (neither: its latest version); `where` names the field."""

    model: str
    version: int | None = None
    alias: str | None = None
    where: str = ""

    def __str__(self) -> str:
        return str(ModelRef(self.model, self.version, self.alias))


@dataclass(frozen=True)
class Arm:
    target: Target
    weight: float


@dataclass(frozen=True)
class Shadow:
    target: Target
    sample_rate: float = 1.0  # share of requests also scored by the shadow model


@dataclass(frozen=True)
class LogConfig:
    sample_rate: float
    key_column: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    traffic: tuple[Arm, ...] = ()
    shadow: Shadow | None = None
    logging: LogConfig | None = None  # None: the database's sqlml.prediction_logging settings


@dataclass(frozen=True)
class ServeConfig:
    models: dict[str, ModelConfig] = field(default_factory=dict)


def load_config(path: Path) -> ServeConfig:
    """Read and check a config file (structure only; `models.py` checks names against the
    catalog)."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError(f"config {path}: cannot read it: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config {path}: not valid YAML: {error}") from None
    try:
        return parse_config(data)
    except ConfigError as error:
        raise ConfigError(f"config {path}: {error}") from None


def parse_config(data: object) -> ServeConfig:
    if data is None:
        return ServeConfig()
    top = _mapping(data, "the top level", {"models"})
    models = {}
    for name, body in _mapping(top.get("models") or {}, "models").items():
        where = f"models.{name}"
        model = _name(name, where, "model name")
        if model in models:
            raise ConfigError(f"{where}: model {model} appears twice")
        models[model] = _model_config(model, body or {}, where)
    return ServeConfig(models)


def _model_config(model: str, body: object, where: str) -> ModelConfig:
    spec = _mapping(body, where, {"traffic", "shadow", "logging"})
    traffic = spec.get("traffic") or []
    if not isinstance(traffic, list):
        raise ConfigError(f"{where}.traffic: must be a list of {{version|alias, weight}}")
    arms = []
    for i, item in enumerate(traffic):
        at = f"{where}.traffic[{i}]"
        entry = _mapping(item, at, {"version", "alias", "weight"})
        target = _target(model, entry, at, required=True)
        if "weight" not in entry:
            raise ConfigError(f"{at}.weight: missing (a positive number)")
        arms.append(Arm(target, _number(entry["weight"], f"{at}.weight", positive=True)))
    shadow = _shadow(model, spec["shadow"], f"{where}.shadow") if "shadow" in spec else None
    logging = _logging(spec["logging"], f"{where}.logging") if "logging" in spec else None
    return ModelConfig(tuple(arms), shadow, logging)


def _shadow(model: str, value: object, where: str) -> Shadow | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            ref = ModelRef.parse(value)
        except InvalidNameError as error:
            raise ConfigError(f"{where}: {error}") from None
        return Shadow(Target(ref.name, ref.version, ref.alias, where))
    entry = _mapping(value, where, {"model", "version", "alias", "sample_rate"})
    if "model" not in entry:
        raise ConfigError(f"{where}.model: missing (the shadow model's name)")
    name = _name(entry["model"], f"{where}.model", "model name")
    rate = _number(entry.get("sample_rate", 1.0), f"{where}.sample_rate", unit=True)
    return Shadow(_target(name, entry, where, required=False), rate)


def _logging(value: object, where: str) -> LogConfig:
    if value is False or value is None:
        return LogConfig(0.0)
    entry = _mapping(value, where, {"sample_rate", "key_column"})
    if "sample_rate" not in entry:
        raise ConfigError(f"{where}.sample_rate: missing (a number in [0, 1])")
    rate = _number(entry["sample_rate"], f"{where}.sample_rate", unit=True)
    key = entry.get("key_column")
    return LogConfig(rate, None if key is None else _name(key, f"{where}.key_column", "column"))


def _target(model: str, entry: dict, where: str, *, required: bool) -> Target:
    has_version, has_alias = "version" in entry, "alias" in entry
    if has_version and has_alias:
        raise ConfigError(f"{where}: give version or alias, not both")
    if required and not (has_version or has_alias):
        raise ConfigError(f"{where}: needs a version or an alias")
    version = alias = None
    if has_version:
        version = entry["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ConfigError(f"{where}.version: must be a version number, got {version!r}")
    if has_alias:
        alias = _name(entry["alias"], f"{where}.alias", "alias")
    return Target(model, version, alias, where)


def _mapping(value: object, where: str, allowed: set[str] | None = None) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping, got {type(value).__name__}")
    if allowed is not None:
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            prefix = "" if where == "the top level" else f"{where}."
            raise ConfigError(
                f"{prefix}{unknown[0]}: unknown field (allowed here: {', '.join(sorted(allowed))})"
            )
    return value


def _name(value: object, where: str, what: str) -> str:
    try:
        return check_name(value, what)
    except InvalidNameError as error:
        raise ConfigError(f"{where}: {error}") from None


def _number(value: object, where: str, *, positive: bool = False, unit: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and positive and value <= 0:
        ok = False
    if ok and unit and not 0 <= value <= 1:
        ok = False
    if not ok:
        kind = "a number in [0, 1]" if unit else "a positive number"
        raise ConfigError(f"{where}: must be {kind}, got {value!r}")
    return float(value)
