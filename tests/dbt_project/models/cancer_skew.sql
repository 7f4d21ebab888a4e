-- against the training statistics stored when cancer was registered (training_data)
select * from {{ sqlml.validate_skew('cancer', source('raw', 'patients')) }}
