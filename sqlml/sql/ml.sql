{#- sqlml's Jinja macro library: `{{ ml.predict('churn', ref('customers')) }}` renders the sqlml
    SQL of an ML.* table function, which runs on DuckDB and compiles to BigQuery. Loaded as the
    `ml` namespace by sqlml.templates (project files and render()).

    `source`: a table name (also what ref() and source() return) or a query (SELECT/WITH/FROM).
    Options are keyword arguments and become the function's STRUCT: numbers, strings,
    booleans, lists, and pairs such as thresholds=[('col', 0.1)]. -#}

{% macro model(name) -%}
`{{ name }}`
{%- endmacro %}

{% macro literal(value, nested=false) -%}
{%- if value is none -%}NULL
{%- elif value is sameas true -%}TRUE
{%- elif value is sameas false -%}FALSE
{%- elif value is number -%}{{ value }}
{%- elif value is string -%}'{{ value | replace("'", "''") }}'
{%- elif value is mapping -%}[{% for k, v in value.items() %}({{ literal(k) }}, {{ literal(v) }}){{ ", " if not loop.last }}{% endfor %}]
{%- elif value is iterable and nested -%}({% for v in value %}{{ literal(v) }}{{ ", " if not loop.last }}{% endfor %})
{%- elif value is iterable -%}[{% for v in value %}{{ literal(v, true) }}{{ ", " if not loop.last }}{% endfor %}]
{%- else -%}{{ value }}
{%- endif -%}
{%- endmacro %}

{% macro struct(options) -%}
{%- set given = {} -%}
{%- for key, value in options.items() if value is not none -%}{%- set _ = given.update({key: value}) -%}{%- endfor -%}
{%- if given -%}, STRUCT({% for key, value in given.items() %}{{ literal(value) }} AS {{ key }}{{ ", " if not loop.last }}{% endfor %}){%- endif -%}
{%- endmacro %}

{% macro _source(source) -%}
{%- set text = source | string -%}
{%- if text.strip().lower().startswith(("select", "with", "from", "(")) -%}({{ text }}){%- else -%}TABLE {{ text }}{%- endif -%}
{%- endmacro %}

{#- ML.PREDICT: ml.predict('churn@champion', 'users', threshold=0.3) -#}
{% macro predict(name, source) -%}
ML.PREDICT(MODEL {{ model(name) }}, {{ _source(source) }}{{ struct(kwargs) }})
{%- endmacro %}

{#- ML.EVALUATE: ml.evaluate('churn', ref('labelled'), threshold=0.5, label='churned') -#}
{% macro evaluate(name, source) -%}
ML.EVALUATE(MODEL {{ model(name) }}, {{ _source(source) }}{{ struct(kwargs) }})
{%- endmacro %}

{% macro confusion_matrix(name, source) -%}
ML.CONFUSION_MATRIX(MODEL {{ model(name) }}, {{ _source(source) }}{{ struct(kwargs) }})
{%- endmacro %}

{#- ML.ROC_CURVE: thresholds=[0.1, 0.5, 0.9] (default: percentiles of the scores) -#}
{% macro roc_curve(name, source, thresholds=none) -%}
ML.ROC_CURVE(MODEL {{ model(name) }}, {{ _source(source) }}{{ (", " ~ literal(thresholds)) if thresholds is not none }}{{ struct(kwargs) }})
{%- endmacro %}

{#- ML.TOP_K: ml.top_k('ranker', ref('candidates'), k=5, partition_by='user_id') -#}
{% macro top_k(name, source) -%}
ML.TOP_K(MODEL {{ model(name) }}, {{ _source(source) }}{{ struct(kwargs) }})
{%- endmacro %}

{% macro feature_info(name) -%}
ML.FEATURE_INFO(MODEL {{ model(name) }})
{%- endmacro %}

{#- ML.VALIDATE_DATA_SKEW against the model's training statistics -#}
{% macro validate_skew(name, source) -%}
ML.VALIDATE_DATA_SKEW(MODEL {{ model(name) }}, {{ _source(source) }}{{ struct(kwargs) }})
{%- endmacro %}

{% macro validate_drift(base, study) -%}
ML.VALIDATE_DATA_DRIFT({{ _source(base) }}, {{ _source(study) }}{{ struct(kwargs) }})
{%- endmacro %}
