"""AST rewrites of sqlml SQL, one module per target (DuckDB execution, BigQuery compilation)."""
