SELECT
  id,
  predicted_churned,
  predicted_churned_probs
FROM ML.PREDICT(
  MODEL `analytics.churn`,
  (
    SELECT
      id,
      CAST(tenure AS FLOAT64) AS tenure,
      plan
    FROM customers
    WHERE
      signup_date >= CAST('2024-01-01' AS DATE)
  ),
  STRUCT(0.6 AS threshold)
)
ORDER BY
  id NULLS LAST;
