select * from {{ sqlml.confusion_matrix('cancer', source('raw', 'patients')) }}
