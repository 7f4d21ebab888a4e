-- fails: no sqlml model `no_such_model` (tests/test_dbt.py runs it on its own)
select * from {{ sqlml.predict('no_such_model', source('raw', 'patients')) }}
