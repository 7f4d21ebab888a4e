SELECT * FROM {{ ml.confusion_matrix('cancer', ref('labelled')) }}
