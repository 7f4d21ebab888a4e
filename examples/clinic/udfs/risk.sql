-- Project macros, created before the SQL files run.
CREATE OR REPLACE MACRO risk_band(p) AS
    CASE WHEN p >= 0.9 THEN 'high' WHEN p >= 0.5 THEN 'medium' ELSE 'low' END;
