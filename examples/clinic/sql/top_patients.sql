-- The patients most likely malignant in each clinic (ML.TOP_K: ties broken by id).
SELECT clinic, rank, id, score
FROM {{ ml.top_k('cancer', source('raw', 'patients'), k=var('top_k'), partition_by='clinic',
                 order_by=['id']) }}
