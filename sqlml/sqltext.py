"""Small helpers over SQL text and sqlglot trees shared by the rewrites."""

from __future__ import annotations

import re
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError
from sqlglot.tokens import TokenType

from sqlml.dialect import ML_FUNCTIONS, Sqlml
from sqlml.errors import SqlCompileError
from sqlml.names import ModelRef

_ML_TOKENS = {TokenType.MODEL}


def split_statements(text: str) -> list[str]:
    """Split on top-level semicolons (strings and comments respected by the tokenizer)."""
    try:
        tokens = Sqlml().tokenize(text)
    except Exception:  # leave untokenizable text whole: DuckDB will report it
        return [text] if text.strip() else []
    pieces, start = [], 0
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            pieces.append(text[start : token.start])
            start = token.end + 1
    pieces.append(text[start:])
    return [p.strip() for p in pieces if p.strip()]


def mentions_ml(text: str) -> bool:
    """True when a statement uses sqlml syntax (MODEL keyword or an ML.* function)."""
    try:
        tokens = Sqlml().tokenize(text)
    except Exception:
        return False
    for i, token in enumerate(tokens):
        if token.token_type in _ML_TOKENS:
            return True
        if (
            token.text.upper() == "ML"
            and i + 1 < len(tokens)
            and tokens[i + 1].token_type == TokenType.DOT
        ):
            return True
    return False


def parse(text: str) -> exp.Expression:
    try:
        return sqlglot.parse_one(text, read=Sqlml)
    except ParseError as error:
        unknown = unknown_ml_function(text)
        if unknown:
            raise SqlCompileError(
                f"ML.{unknown} is a BigQuery ML function with no DuckDB equivalent in sqlml "
                f"(sqlml runs ML.PREDICT, ML.{', ML.'.join(ML_FUNCTIONS)})"
            ) from None
        raise SqlCompileError(f"cannot parse SQL: {describe_parse_error(error)}") from None


def unknown_ml_function(text: str) -> str | None:
    """The first `ML.<name>(` that sqlml does not implement (e.g. ML.FORECAST), if any."""
    try:
        tokens = Sqlml().tokenize(text)
    except Exception:
        return None
    known = {"PREDICT", *ML_FUNCTIONS}
    for i in range(len(tokens) - 3):
        ml, dot, name, paren = tokens[i : i + 4]
        if (
            ml.text.upper() == "ML"
            and dot.token_type == TokenType.DOT
            and paren.token_type == TokenType.L_PAREN
            and name.text.upper() not in known
        ):
            return name.text.upper()
    return None


def describe_parse_error(error: ParseError) -> str:
    """'line 1, col 52: expected table name near `... (SELECT FROM` `)`', without terminal codes."""
    if not error.errors:
        return str(error)
    first = error.errors[0]
    description = re.sub(
        r"<Token token_type: TokenType\.(\w+), text: ([^,]*),.*?>",
        lambda m: f"{m.group(2)!r}" if m.group(1) != "SENTINEL" else "the end of the statement",
        first.get("description", ""),
    )
    context = (first.get("start_context") or "")[-40:] + (first.get("highlight") or "")
    return f"line {first.get('line')}, col {first.get('col')}: {description} (near {context!r})"


def model_ref(node: exp.Expression) -> ModelRef:
    """The model named by `MODEL x` (a Table node); dataset-qualified names are refused."""
    if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
        raise SqlCompileError(f"expected a model name after MODEL, got {node.sql()!r}")
    if node.args.get("db") or node.args.get("catalog"):
        raise SqlCompileError(
            f"model {node.sql(dialect=Sqlml)}: write the bare model name; the BigQuery "
            "dataset is added when compiling (--dataset)"
        )
    return ModelRef.parse(node.name)


def literal_value(node: exp.Expression) -> Any:
    """A Python value from a literal, an ARRAY/list of literals, TRUE/FALSE or NULL."""
    if isinstance(node, exp.Literal):
        return (
            node.this
            if node.is_string
            else float(node.this)
            if "." in node.this or "e" in node.this.lower()
            else int(node.this)
        )
    if isinstance(node, exp.Boolean):
        return node.this
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Neg):
        return -literal_value(node.this)
    if isinstance(node, exp.Array):
        return [literal_value(e) for e in node.expressions]
    if isinstance(node, (exp.Tuple, exp.Struct)):  # ('col', 0.1) / STRUCT('col', 0.1): a pair
        return tuple(
            literal_value(e.expression if isinstance(e, exp.PropertyEQ) else e)
            for e in node.expressions
        )
    raise SqlCompileError(f"expected a literal value, got {node.sql()!r}")


def struct_options(node: exp.Expression | None, what: str) -> dict[str, Any]:
    """`STRUCT(0.6 AS threshold)` or `{'threshold': 0.6}` as a dict of lower-cased names."""
    if node is None:
        return {}
    if not isinstance(node, exp.Struct):
        raise SqlCompileError(f"{what}: expected STRUCT(value AS name, ...), got {node.sql()!r}")
    options = {}
    for item in node.expressions:
        if isinstance(item, exp.PropertyEQ):
            key = item.this.name
            options[key.lower()] = literal_value(item.expression)
        else:
            raise SqlCompileError(f"{what}: every STRUCT field needs a name ({item.sql()!r})")
    return options


def property_options(create: exp.Create) -> dict[str, Any]:
    """OPTIONS(key=value, ...) of a CREATE MODEL statement, keys lower-cased."""
    props = create.args.get("properties")
    options = {}
    for prop in props.expressions if props else []:
        if isinstance(prop, exp.EngineProperty):  # engine='sql' parses as MySQL's ENGINE=
            options["engine"] = literal_value(prop.this)
        elif isinstance(prop, exp.FileFormatProperty):  # format='tflite' (EXPORT MODEL)
            options["format"] = literal_value(prop.this)
        elif isinstance(prop, exp.Property):
            options[prop.name.lower()] = literal_value(prop.args["value"])
    return options


_ALTER_MODEL = re.compile(
    r"^\s*ALTER\s+MODEL\s+(?P<name>`[^`]+`|\"[^\"]+\"|[A-Za-z_][A-Za-z0-9_]*)\s+"
    r"(?:(?P<set>SET\s+ALIAS)\s+(?P<alias>[A-Za-z_][A-Za-z0-9_]*)\s*(?:=|TO)\s*"
    r"(?:VERSION\s+)?(?P<version>\d+)|(?P<drop>DROP\s+ALIAS)\s+(?P<dropped>[A-Za-z_][A-Za-z0-9_]*))"
    r"\s*;?\s*$",
    re.IGNORECASE,
)


def alter_model_alias(text: str) -> tuple[str, str, int | None] | None:
    """`ALTER MODEL m SET ALIAS champion = 2` -> ('m', 'champion', 2);
    `ALTER MODEL m DROP ALIAS champion` -> ('m', 'champion', None); else None.

    sqlml's statement for moving an alias in SQL (a rollback is moving it back); BigQuery
    models have no versions, so it has no BigQuery form.
    """
    match = _ALTER_MODEL.match(text)
    if match is None:
        if re.match(r"^\s*ALTER\s+MODEL\b", text, re.IGNORECASE):
            raise SqlCompileError(
                "ALTER MODEL: expected ALTER MODEL <name> SET ALIAS <alias> = <version> "
                "or ALTER MODEL <name> DROP ALIAS <alias>"
            )
        return None
    name = match["name"].strip('`"')
    if match["set"]:
        return name, match["alias"].lower(), int(match["version"])
    return name, match["dropped"].lower(), None


_EXPORT_MODEL = re.compile(
    r"^\s*EXPORT\s+MODEL\s+(?P<name>`[^`]+`|\"[^\"]+\"|[A-Za-z_][A-Za-z0-9_.@]*)"
    r"(?:\s+OPTIONS\s*\((?P<options>.*)\))?\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)


def parse_export_model(text: str) -> tuple[str, dict[str, Any]] | None:
    """`EXPORT MODEL m OPTIONS(uri='dir', format='tflite')` -> ('m', {'uri': ..., ...}); else None.

    BigQuery's statement; sqlglot cannot parse it, so the options are read by parsing them as a
    CREATE MODEL's OPTIONS list (the same literal rules as everywhere else).
    """
    match = _EXPORT_MODEL.match(text)
    if match is None:
        if re.match(r"^\s*EXPORT\s+MODEL\b", text, re.IGNORECASE):
            raise SqlCompileError(
                "EXPORT MODEL: expected EXPORT MODEL <name> OPTIONS(uri='...', format='...')"
            )
        return None
    name = match["name"].strip('`"')
    if not match["options"]:
        return name, {}
    tree = parse(f"CREATE MODEL __sqlml_export OPTIONS({match['options']})")
    if not isinstance(tree, exp.Create) or tree.expression is not None:
        raise SqlCompileError(
            f"EXPORT MODEL {name}: OPTIONS(...) must hold only name = value pairs"
        )
    return name, property_options(tree)
