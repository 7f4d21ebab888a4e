CREATE MODEL IF NOT EXISTS `analytics.reviews`
OPTIONS (
  MODEL_TYPE='TENSORFLOW',
  MODEL_PATH='gs://acme-ml/models/reviews/*'
);
