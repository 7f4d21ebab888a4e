SELECT id, predicted_churned, predicted_churned_probs
FROM ML.PREDICT(
  MODEL churn,
  (SELECT id, tenure::DOUBLE AS tenure, plan FROM customers WHERE signup_date >= DATE '2024-01-01'),
  STRUCT(0.6 AS threshold)
)
ORDER BY id;
