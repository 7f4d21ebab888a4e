select id, malignant, predicted_malignant, probabilities
from {{ sqlml.predict('cancer', source('raw', 'patients')) }}
