-- TABLE names are left as written; DuckDB's {'threshold': ...} becomes a STRUCT.
SELECT
  *
FROM ML.PREDICT(MODEL `analytics.churn`, TABLE `analytics.customers`, STRUCT(0.3 AS threshold)) AS p
WHERE
  p.predicted_churned = 1;
