-- Pins name a version in sqlml's registry; BigQuery serves the imported model.
SELECT
  id,
  predicted_churned
FROM ML.PREDICT(MODEL `analytics.churn`, TABLE customers);

SELECT
  id,
  predicted_churned
FROM ML.PREDICT(
  MODEL `analytics.churn`,
  (
    SELECT
      id,
      tenure,
      plan
    FROM customers
  )
);
