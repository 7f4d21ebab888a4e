select *
from {{ sqlml.query("SELECT id, predicted_malignant FROM ML.PREDICT(MODEL `small@1`, (SELECT id, mean_radius, mean_texture, mean_smoothness FROM " ~ source('raw', 'patients') ~ ")) -- a comment") }}
