-- a model compiled to SQL called by its plain name: a TEMP macro on each dbt cursor
select id, small(mean_radius, mean_texture, mean_smoothness).probabilities[2] as p
from {{ source('raw', 'patients') }}
