-- SQL macros loaded into every sqlml database (persisted in the .duckdb file).
-- Pure SQL: they also work in a plain DuckDB session without sqlml.

-- Probability of one class from a predicted_<label>_probs list, e.g.
--   ml_prob(predicted_churned_probs, 1)
CREATE OR REPLACE MACRO ml_prob(probs, class_label) AS
    list_filter(probs, lambda x: x.label = class_label)[1].prob;

-- The most probable class of a predicted_<label>_probs list (first one on ties).
CREATE OR REPLACE MACRO ml_top_label(probs) AS
    probs[list_position(list_transform(probs, lambda x: x.prob),
                        list_max(list_transform(probs, lambda x: x.prob)))].label;
