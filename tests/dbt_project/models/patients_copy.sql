select * from {{ source('raw', 'patients') }}
