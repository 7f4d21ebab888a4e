-- cancer in its runtime (onnxruntime) instead of its SQL form; cancer_gb is registered by the
-- plugin config with engine: runtime
select p.id, p.probabilities as lr_probabilities, g.probabilities as gb_probabilities
from {{ sqlml.predict('cancer', source('raw', 'patients'), engine='runtime') }} as p
join {{ sqlml.predict('cancer_gb', source('raw', 'patients')) }} as g using (id)
