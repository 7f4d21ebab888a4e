CREATE MODEL IF NOT EXISTS reviews
OPTIONS (model_type = 'TensorFlow', model_path = 'models/reviews/*', label = 'positive');
