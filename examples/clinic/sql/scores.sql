-- Batch prediction: every patient scored, with a risk band.
SELECT id, clinic, predicted_malignant,
       probabilities[2] AS p_malignant,
       risk_band(probabilities[2]) AS risk
FROM {{ ml.predict('cancer', source('raw', 'patients'), threshold=var('threshold')) }}
