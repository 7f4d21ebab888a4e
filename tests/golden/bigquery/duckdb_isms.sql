-- DuckDB syntax sqlglot transpiles: FROM-first, :: casts, list lambdas, date functions, EXCLUDE.
FROM customers
SELECT
  id::INTEGER AS id,
  tenure::DOUBLE AS tenure,
  tenure // 12 AS years,
  plan::VARCHAR AS plan,
  list_transform(monthly_spend, x -> x * 1.2) AS spend_with_tax,
  list_filter(monthly_spend, x -> x > 100) AS big_months,
  list_transform(monthly_spend, (x, i) -> x * i) AS weighted,
  array_length(monthly_spend) AS months,
  date_trunc('month', signup_date::DATE) AS signup_month,
  year(signup_date) AS signup_year,
  strftime(signup_date, '%Y-%m') AS signup_label,
  date_diff('day', signup_date, last_seen) AS days_active,
  * EXCLUDE (monthly_spend)
WHERE plan IN ('pro', 'team')
QUALIFY row_number() OVER (PARTITION BY plan ORDER BY tenure DESC) <= 10;
