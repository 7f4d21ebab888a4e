"""db.predict_to: streaming bulk scoring into Parquet, CSV and tables; all or nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from sqlml.errors import ModelInputError, SqlmlError


def ml_predict(db, table: str = "patients", engine: str = "auto") -> pd.DataFrame:
    # bulk scoring takes the same engine as ML.PREDICT: the logistic regression is compiled to
    # SQL, which agrees with onnxruntime to ~1e-7, not bit for bit
    return db.sql(
        f"SELECT * FROM ML.PREDICT(MODEL cancer, TABLE {table}, STRUCT('{engine}' AS engine)) "
        "ORDER BY id"
    ).df()


def test_parquet_output_equals_ml_predict(cancer_db, cancer_lr, tmp_path):
    target = tmp_path / "scores.parquet"
    result = cancer_db.predict_to("cancer", "patients", target, batch_size=100, progress=False)
    assert result.rows == 569 and result.target == str(target)
    written = pq.read_table(target).to_pandas().sort_values("id").reset_index(drop=True)
    expected = ml_predict(cancer_db)
    assert list(written.columns) == list(expected.columns)
    probs = np.stack(written["probabilities"].to_numpy())
    assert np.abs(probs - np.stack(expected["probabilities"].to_numpy())).max() == 0
    np.testing.assert_array_equal(written["predicted_malignant"], expected["predicted_malignant"])
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("engine", ["sql", "runtime"])
def test_both_engines_write_what_ml_predict_returns(cancer_db, tmp_path, engine):
    """engine='sql': DuckDB scores and writes the compiled model; 'runtime': Arrow batches
    through onnxruntime in a thread pool. Each equals ML.PREDICT on the same engine."""
    db = cancer_db
    target = tmp_path / f"{engine}.parquet"
    db.predict_to("cancer", "patients", target, engine=engine, progress=False)
    db.predict_to("cancer", "patients", f"scores_{engine}", engine=engine, progress=False)
    expected = ml_predict(db, engine=engine)
    for written in (
        pq.read_table(target).to_pandas(),
        db.sql(f"SELECT * FROM scores_{engine}").df(),
    ):
        written = written.sort_values("id").reset_index(drop=True)
        assert list(written.columns) == list(expected.columns)
        probs = np.stack(written["probabilities"].to_numpy())
        assert np.abs(probs - np.stack(expected["probabilities"].to_numpy())).max() == 0


def test_table_output_modes_and_threshold(cancer_db, cancer, cancer_lr):
    X, _ = cancer
    db = cancer_db
    db.predict_to("cancer", "SELECT * FROM patients WHERE id < 300", "scores", progress=False)
    assert db.sql("SELECT count(*) FROM scores").fetchall() == [(300,)]
    with pytest.raises(SqlmlError, match="table scores exists"):
        db.predict_to("cancer", "patients", "scores", progress=False)
    db.predict_to("cancer", "SELECT * FROM patients WHERE id >= 300", "scores",
                  if_exists="append", progress=False)  # fmt: skip
    assert db.sql("SELECT count(DISTINCT id) FROM scores").fetchall() == [(569,)]
    db.predict_to("cancer", "patients", "scores", if_exists="replace", threshold=0.9,
                  progress=False)  # fmt: skip
    got = db.sql("SELECT predicted_malignant FROM scores ORDER BY id").df()
    expected = (cancer_lr.predict_proba(X)[:, 1] > 0.9).astype(int)
    np.testing.assert_array_equal(got["predicted_malignant"], expected)


def test_dataframe_source_csv_target_and_progress(cancer_db, cancer, cancer_lr, tmp_path, capsys):
    X, _ = cancer
    target = tmp_path / "scores.csv"
    frame = X.assign(id=np.arange(len(X)))
    result = cancer_db.predict_to("cancer", frame, target, batch_size=64, progress=True)
    assert result.rows == len(X)
    written = pd.read_csv(target).sort_values("id")
    expected = cancer_lr.predict(X)
    np.testing.assert_array_equal(written["predicted_malignant"], expected)
    assert "scoring with cancer" in capsys.readouterr().err


def test_failed_job_leaves_nothing(db, cancer, cancer_lr, tmp_path):
    X, _ = cancer
    db.register_model("strict", cancer_lr, nulls="error")
    broken = X.assign(id=np.arange(len(X)))
    broken.loc[500, "mean_area"] = np.nan
    db.con.register("broken_df", broken)
    db.sql("CREATE TABLE broken AS SELECT * REPLACE (nullif(mean_area, 'NaN') AS mean_area) "
           "FROM broken_df")  # fmt: skip
    target = tmp_path / "scores.parquet"
    with pytest.raises(ModelInputError, match="input column 'mean_area' has NULL"):
        db.predict_to("strict", "broken", target, batch_size=64, progress=False)
    assert not target.exists()
    assert not list(tmp_path.glob(".*partial"))
    with pytest.raises(ModelInputError):
        db.predict_to("strict", "broken", "scores", batch_size=64, progress=False)
    tables = db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'scores'")
    assert tables.fetchall() == [(0,)]


def test_bad_targets_and_sources(cancer_db, tmp_path):
    with pytest.raises(SqlmlError, match="neither a .parquet/.csv path nor a table name"):
        cancer_db.predict_to("cancer", "patients", "scores; DROP TABLE patients", progress=False)
    with pytest.raises(SqlmlError, match="neither a table name nor a query"):
        cancer_db.predict_to("cancer", "patients; --", "scores", progress=False)
    with pytest.raises(SqlmlError, match="does not exist"):
        cancer_db.predict_to("cancer", "patients", tmp_path / "no" / "x.parquet", progress=False)
    with pytest.raises(ModelInputError, match="input column 'mean_radius' is missing"):
        cancer_db.predict_to("cancer", "SELECT id FROM patients", "scores", progress=False)
    assert cancer_db.sql("SELECT count(*) FROM patients").fetchall() == [(569,)]
