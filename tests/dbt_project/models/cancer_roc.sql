select * from {{ sqlml.roc_curve('cancer', source('raw', 'patients'), thresholds=[0.5, 0.8]) }}
