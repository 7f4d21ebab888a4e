-- A scoring job: import the models, score, keep the results, retire the old model.
CREATE OR REPLACE TABLE features AS
SELECT id, tenure::DOUBLE AS tenure, plan, review FROM customers;

CREATE OR REPLACE MODEL churn OPTIONS (model_type = 'onnx', model_path = 'models/churn.onnx');

CREATE OR REPLACE MODEL reviews OPTIONS (model_type = 'tensorflow', model_path = 'models/reviews');

CREATE OR REPLACE TABLE scores AS
SELECT c.id, c.predicted_churned, r.positive_probability
FROM ML.PREDICT(MODEL churn, TABLE features) AS c
JOIN ML.PREDICT(MODEL `reviews@champion`, (SELECT id, review FROM features)) AS r USING (id);

DROP MODEL IF EXISTS churn_2023;
