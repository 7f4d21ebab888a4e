select grp, id, score, rank
from {{ sqlml.top_k('cancer', source('raw', 'patients'), k=3, partition_by='grp') }}
