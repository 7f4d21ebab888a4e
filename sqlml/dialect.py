"""The sqlml SQL dialect: DuckDB SQL plus BigQuery ML's model statements and ML.* functions.

Users write the SQL they already know from DuckDB; the BigQuery ML extensions
(`CREATE MODEL ... OPTIONS(...)`, `DROP MODEL`, `ML.PREDICT(MODEL m, (q) | TABLE t, STRUCT(...))`)
are added on top, so one text can run on DuckDB and compile to BigQuery.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.parsers.bigquery import BigQueryParser
from sqlglot.tokens import TokenType


class Sqlml(DuckDB):
    """DuckDB dialect with BigQuery ML syntax; backticks quote identifiers as in BigQuery."""

    class Tokenizer(DuckDB.Tokenizer):
        IDENTIFIERS = ['"', "`"]
        KEYWORDS = {**DuckDB.Tokenizer.KEYWORDS, "MODEL": TokenType.MODEL}

    class Parser(DuckDB.Parser):
        FUNCTION_PARSERS = {
            **DuckDB.Parser.FUNCTION_PARSERS,
            "PREDICT": lambda self: self._parse_ml(exp.Predict),
        }
        PROPERTY_PARSERS = {
            **DuckDB.Parser.PROPERTY_PARSERS,
            "OPTIONS": lambda self: self._parse_with_property(),
        }
        _parse_ml = BigQueryParser._parse_ml

    class Generator(DuckDB.Generator):
        pass
