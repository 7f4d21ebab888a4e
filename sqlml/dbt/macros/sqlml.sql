{#- sqlml's dbt macros: BigQuery ML functions over dbt relations, on dbt-duckdb with the
    sqlml plugin (`module: sqlml.dbt` in profiles.yml; docs/dbt.md).

        select * from {{ sqlml.predict('churn', ref('customers'), threshold=0.3) }}

    Each macro is the `ml.*` macro of the same name (sqlml/sql/ml.sql: same arguments, options
    as keyword arguments) and returns a subquery: the DuckDB SQL sqlml runs for that ML.* call,
    obtained from the plugin's SQL function sqlml_rewrite while the model compiles. -#}

{% macro predict(name, source) -%}
{{ return(sqlml._call('predict', [name, source | string], kwargs)) }}
{%- endmacro %}

{% macro evaluate(name, source) -%}
{{ return(sqlml._call('evaluate', [name, source | string], kwargs)) }}
{%- endmacro %}

{% macro confusion_matrix(name, source) -%}
{{ return(sqlml._call('confusion_matrix', [name, source | string], kwargs)) }}
{%- endmacro %}

{% macro roc_curve(name, source, thresholds=none) -%}
{{ return(sqlml._call('roc_curve', [name, source | string, thresholds], kwargs)) }}
{%- endmacro %}

{% macro top_k(name, source) -%}
{{ return(sqlml._call('top_k', [name, source | string], kwargs)) }}
{%- endmacro %}

{% macro feature_info(name) -%}
{{ return(sqlml._call('feature_info', [name], kwargs)) }}
{%- endmacro %}

{% macro validate_skew(name, source) -%}
{{ return(sqlml._call('validate_skew', [name, source | string], kwargs)) }}
{%- endmacro %}

{% macro validate_drift(base, study) -%}
{{ return(sqlml._call('validate_drift', [base | string, study | string], kwargs)) }}
{%- endmacro %}

{#- Any one sqlml query, e.g. several ML.* calls joined:
    sqlml.query("SELECT ... FROM ML.PREDICT(MODEL `churn@2`, TABLE " ~ ref('customers') ~ ")") -#}
{% macro query(sql) -%}
{{ return(sqlml._rewrite({'sql': sql | string})) }}
{%- endmacro %}

{% macro _call(function, args, options) -%}
{{ return(sqlml._rewrite({'function': function, 'args': args, 'options': options})) }}
{%- endmacro %}

{#- Parsing (execute is false) only needs a placeholder; running asks the plugin. A newline
    closes the subquery: the SQL may end with a -- comment. -#}
{% macro _rewrite(request) -%}
{%- if not execute -%}
  {{ return('(SELECT 1)') }}
{%- endif -%}
{%- set payload = tojson(request) -%}
{%- set result = run_query("SELECT sqlml_rewrite('" ~ payload | replace("'", "''") ~ "')") -%}
{{ return('(' ~ result.rows[0][0] ~ '\n)') }}
{%- endmacro %}
