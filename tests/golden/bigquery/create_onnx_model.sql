-- Import a scikit-learn churn classifier converted to ONNX.
CREATE OR REPLACE MODEL churn
OPTIONS (
  model_type = 'onnx',
  model_path = 'models/churn.onnx',
  input_label_cols = ['churned'],
  classes = [0, 1],
  nulls = 'null',
  description = 'churn classifier'
);
