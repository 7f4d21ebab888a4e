{#- sqlml's Jinja macro library: `{{ ml.predict(...) }}` renders the sqlml SQL of ML.* calls.
    Loaded as the `ml` namespace by sqlml.templates.render(). -#}

{% macro model(name) -%}
`{{ name }}`
{%- endmacro %}

{% macro struct(options) -%}
{%- if options -%}, STRUCT({% for key, value in options.items() %}{{ value | tojson }} AS {{ key }}{{ ", " if not loop.last }}{% endfor %}){%- endif -%}
{%- endmacro %}

{#- ML.PREDICT over a table name or a query: ml.predict('churn@champion', 'users', threshold=0.3) -#}
{% macro predict(name, source, threshold=none) -%}
ML.PREDICT(MODEL {{ model(name) }}, {{ _source(source) }}{{ struct({"threshold": threshold} if threshold is not none else {}) }})
{%- endmacro %}

{% macro _source(source) -%}
{%- if source.strip().lower().startswith(("select", "with", "from")) -%}({{ source }}){%- else -%}TABLE {{ source }}{%- endif -%}
{%- endmacro %}
