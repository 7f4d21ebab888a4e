-- the threshold option, on a dbt model (ref) rather than a source
select id, predicted_malignant
from {{ sqlml.predict('cancer', ref('patients_copy'), threshold=0.8) }}
