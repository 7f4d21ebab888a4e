-- Keyed predictions joined to ground truth that arrived later.
{{ config(materialized='view') }}
SELECT s.id, s.clinic, s.p_malignant, s.predicted_malignant, d.malignant,
       s.predicted_malignant = d.malignant AS correct
FROM {{ ref('scores') }} AS s
JOIN {{ source('raw', 'diagnoses') }} AS d USING (id)
