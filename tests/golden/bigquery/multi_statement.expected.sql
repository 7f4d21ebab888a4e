-- A scoring job: import the models, score, keep the results, retire the old model.
CREATE OR REPLACE TABLE features AS
SELECT
  id,
  CAST(tenure AS FLOAT64) AS tenure,
  plan,
  review
FROM customers;

CREATE OR REPLACE MODEL `analytics.churn`
OPTIONS (
  MODEL_TYPE='ONNX',
  MODEL_PATH='gs://acme-ml/models/churn.onnx'
);

CREATE OR REPLACE MODEL `analytics.reviews`
OPTIONS (
  MODEL_TYPE='TENSORFLOW',
  MODEL_PATH='gs://acme-ml/models/reviews/*'
);

CREATE OR REPLACE TABLE scores AS
SELECT
  c.id,
  c.predicted_churned,
  r.positive_probability
FROM ML.PREDICT(MODEL `analytics.churn`, TABLE features) AS c
JOIN ML.PREDICT(MODEL `analytics.reviews`, (
  SELECT
    id,
    review
  FROM features
)) AS r
  USING (id);

DROP MODEL IF EXISTS `analytics.churn_2023`;
