-- Pins name a version in sqlml's registry; BigQuery serves the imported model.
SELECT id, predicted_churned FROM ML.PREDICT(MODEL `churn@champion`, TABLE customers);
SELECT id, predicted_churned FROM ML.PREDICT(MODEL "churn@3", (FROM customers SELECT id, tenure, plan));
