SELECT
  id,
  predicted_y,
  predicted_y_probs
FROM (
  SELECT
    *
    EXCEPT (`__sqlml_t1`, `__sqlml_t3`, `__sqlml_t2`, `__sqlml_t5`, `__sqlml_t4`, `__sqlml_t6`),
    CASE
      WHEN `__sqlml_t3`
      THEN NULL
      ELSE CAST(CASE
        WHEN `__sqlml_t1` >= `__sqlml_t2`
        THEN CAST(0 AS INT64)
        ELSE CAST(1 AS INT64)
      END AS INT64)
    END AS `label`,
    CASE
      WHEN `__sqlml_t3`
      THEN NULL
      ELSE [CAST(`__sqlml_t5` AS FLOAT64), CAST(`__sqlml_t4` AS FLOAT64)]
    END AS `probabilities`,
    CASE
      WHEN `__sqlml_t3`
      THEN NULL
      ELSE CASE WHEN `__sqlml_t6` > 0.3e0 THEN CAST(1 AS INT64) ELSE CAST(0 AS INT64) END
    END AS `predicted_y`,
    CASE
      WHEN `__sqlml_t3`
      THEN NULL
      ELSE [
        STRUCT(
          CAST(0 AS INT64) AS `label`,
          CAST(CAST(`__sqlml_t5` AS FLOAT64) AS FLOAT64) AS `prob`
        ),
        STRUCT(CAST(1 AS INT64) AS `label`, `__sqlml_t6` AS `prob`)
      ]
    END AS `predicted_y_probs`
  FROM (
    SELECT
      *,
      CAST(CAST(`__sqlml_t4` AS FLOAT64) AS FLOAT64) AS `__sqlml_t6`
    FROM (
      SELECT
        *,
        (
          (
            0.5e0 * TANH((
              0.5e0 * `__sqlml_t2`
            ))
          ) + 0.5e0
        ) AS `__sqlml_t4`
      FROM (
        SELECT
          *,
          (
            (
              -1.0e0
            ) * `__sqlml_t1`
          ) AS `__sqlml_t2`,
          (
            (
              0.5e0 * TANH((
                0.5e0 * `__sqlml_t1`
              ))
            ) + 0.5e0
          ) AS `__sqlml_t5`
        FROM (
          SELECT
            *,
            (
              (
                (
                  -0.375e0
                ) * CAST(`a` AS FLOAT64)
              ) + (
                (
                  2.5e0 * CAST(`b` AS FLOAT64)
                ) + 5.625e0
              )
            ) AS `__sqlml_t1`,
            (
              `a` IS NULL OR `b` IS NULL
            ) AS `__sqlml_t3`
          FROM (
            SELECT
              *
            FROM ab
            WHERE
              id < 100
          ) AS __sqlml_in
        )
      )
    )
  )
) AS p;

SELECT
  *
FROM (
  SELECT
    *
    EXCEPT (`__sqlml_t1`, `__sqlml_t2`),
    CASE WHEN `__sqlml_t2` THEN NULL ELSE CAST(`__sqlml_t1` AS FLOAT64) END AS `variable`,
    CASE
      WHEN `__sqlml_t2`
      THEN NULL
      ELSE CAST(CAST(`__sqlml_t1` AS FLOAT64) AS FLOAT64)
    END AS `predicted_y`
  FROM (
    SELECT
      *,
      (
        (
          (
            CASE
              WHEN CAST(`a` AS FLOAT64) <= 0.5e0
              THEN CAST(1.5e0 AS FLOAT64)
              ELSE CASE
                WHEN (
                  CAST(`b` AS FLOAT64) < (
                    -1.0e0
                  ) OR IS_NAN(CAST(`b` AS FLOAT64))
                )
                THEN CAST(2.5e0 AS FLOAT64)
                ELSE CAST((
                  -0.25e0
                ) AS FLOAT64)
              END
            END + CAST(0.125e0 AS FLOAT64)
          ) / CAST(2.0e0 AS FLOAT64)
        ) + CAST(10.0e0 AS FLOAT64)
      ) AS `__sqlml_t1`,
      (
        `a` IS NULL OR `b` IS NULL
      ) AS `__sqlml_t2`
    FROM ab AS __sqlml_in
  )
) AS ml_predict;
