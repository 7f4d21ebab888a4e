select * from {{ sqlml.evaluate('cancer', source('raw', 'patients')) }}
