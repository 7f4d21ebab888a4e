-- TABLE names are left as written; DuckDB's {'threshold': ...} becomes a STRUCT.
SELECT *
FROM ML.PREDICT(MODEL churn, TABLE `analytics.customers`, {'threshold': 0.3}) AS p
WHERE p.predicted_churned = 1;
