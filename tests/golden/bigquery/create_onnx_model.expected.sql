-- Import a scikit-learn churn classifier converted to ONNX.
CREATE OR REPLACE MODEL `analytics.churn`
OPTIONS (
  MODEL_TYPE='ONNX',
  MODEL_PATH='gs://acme-ml/models/churn.onnx'
);
