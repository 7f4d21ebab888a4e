-- DuckDB syntax sqlglot transpiles: FROM-first, :: casts, list lambdas, date functions, EXCLUDE.
SELECT
  CAST(id AS INT64) AS id,
  CAST(tenure AS FLOAT64) AS tenure,
  DIV(tenure, 12) AS years,
  CAST(plan AS STRING) AS plan,
  ARRAY(
    SELECT
      x * 1.2
    FROM UNNEST(monthly_spend) AS x WITH OFFSET AS _sqlml_offset
    ORDER BY
      _sqlml_offset
  ) AS spend_with_tax,
  ARRAY(
    SELECT
      x
    FROM UNNEST(monthly_spend) AS x WITH OFFSET AS _sqlml_offset
    WHERE
      x > 100
    ORDER BY
      _sqlml_offset
  ) AS big_months,
  ARRAY(
    SELECT
      x * i
    FROM (
      SELECT
        x,
        _sqlml_offset + 1 AS i,
        _sqlml_offset
      FROM UNNEST(monthly_spend) AS x WITH OFFSET AS _sqlml_offset
    )
    ORDER BY
      _sqlml_offset
  ) AS weighted,
  ARRAY_LENGTH(monthly_spend) AS months,
  DATE_TRUNC(CAST(signup_date AS DATE), MONTH) AS signup_month,
  EXTRACT(YEAR FROM signup_date) AS signup_year,
  FORMAT_DATE('%Y-%m', signup_date) AS signup_label,
  DATE_DIFF(last_seen, signup_date, DAY) AS days_active,
  *
  EXCEPT (monthly_spend)
FROM customers
WHERE
  plan IN ('pro', 'team')
QUALIFY
  ROW_NUMBER() OVER (PARTITION BY plan ORDER BY tenure DESC) <= 10;
