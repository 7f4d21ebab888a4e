SELECT * FROM {{ ml.evaluate('cancer', ref('labelled'), threshold=var('threshold')) }}
