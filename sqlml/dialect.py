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

ML_FUNCTIONS = (
    "EVALUATE",
    "CONFUSION_MATRIX",
    "ROC_CURVE",
    "TOP_K",
    "FEATURE_INFO",
    "VALIDATE_DATA_SKEW",
    "VALIDATE_DATA_DRIFT",
    "MONITOR",
)


class ModelArg(exp.Expression):
    """`MODEL m` as an argument of an ML.* function."""

    arg_types = {"this": True}


class TableArg(exp.Expression):
    """`TABLE t` as an argument of an ML.* function."""

    arg_types = {"this": True}


class MLCall(exp.Expression, exp.Func):
    """ML.<name>(...) other than PREDICT: `MODEL m`, `TABLE t`, `(query)` or value arguments.

    sqlglot's BigQuery dialect does not parse these; sqlml expands each into plain SQL
    (`sqlml.rewrite.mlfunctions`) before DuckDB or BigQuery sees it.
    """

    arg_types = {"this": True, "expressions": False}

    @property
    def function(self) -> str:
        return self.this.name.upper()


def _parse_ml_call(self: DuckDB.Parser, name: str) -> MLCall:
    arguments: list[exp.Expression] = []
    while not self._match(TokenType.R_PAREN, advance=False):
        if self._match(TokenType.MODEL):
            arguments.append(ModelArg(this=self._parse_table()))
        elif self._match(TokenType.TABLE):
            arguments.append(TableArg(this=self._parse_table()))
        elif self._match(TokenType.L_PAREN, advance=False) and self._next.token_type in (
            TokenType.SELECT,
            TokenType.WITH,
            TokenType.FROM,
        ):
            arguments.append(self._parse_table())
        else:
            arguments.append(self._parse_bitwise())
        if not self._match(TokenType.COMMA):
            break
    return self.expression(MLCall(this=exp.var(name), expressions=arguments))


class Sqlml(DuckDB):
    """DuckDB dialect with BigQuery ML syntax; backticks quote identifiers as in BigQuery."""

    class Tokenizer(DuckDB.Tokenizer):
        IDENTIFIERS = ['"', "`"]
        KEYWORDS = {**DuckDB.Tokenizer.KEYWORDS, "MODEL": TokenType.MODEL}

    class Parser(DuckDB.Parser):
        FUNCTION_PARSERS = {
            **DuckDB.Parser.FUNCTION_PARSERS,
            "PREDICT": lambda self: self._parse_ml(exp.Predict),
            **{name: (lambda self, name=name: _parse_ml_call(self, name)) for name in ML_FUNCTIONS},
        }
        PROPERTY_PARSERS = {
            **DuckDB.Parser.PROPERTY_PARSERS,
            "OPTIONS": lambda self: self._parse_with_property(),
        }
        _parse_ml = BigQueryParser._parse_ml

    class Generator(DuckDB.Generator):
        TRANSFORMS = {
            **DuckDB.Generator.TRANSFORMS,
            ModelArg: lambda self, e: f"MODEL {self.sql(e, 'this')}",
            TableArg: lambda self, e: f"TABLE {self.sql(e, 'this')}",
            MLCall: lambda self, e: f"{e.function}({self.expressions(e, flat=True)})",
        }
