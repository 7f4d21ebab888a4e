-- Today's patients against the model's training data: is any input off?
SELECT * FROM {{ ml.validate_skew('cancer', source('raw', 'patients_today')) }}
