-- Features with their diagnosis: what ML.EVALUATE scores.
{{ config(materialized='view') }}
SELECT p.* EXCLUDE (clinic), d.malignant
FROM {{ source('raw', 'patients') }} AS p
JOIN {{ source('raw', 'diagnoses') }} AS d USING (id)
