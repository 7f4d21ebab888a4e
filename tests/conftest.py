"""Shared fixtures: bundled scikit-learn datasets, fitted models and a fresh DuckDB file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import sqlml

# Tolerances: ONNX computes in float32, scikit-learn in float64.
PROBA_TOL = 1e-5


def _frame(loader) -> tuple[pd.DataFrame, pd.Series]:
    X, y = loader(return_X_y=True, as_frame=True)
    X.columns = [c.replace(" ", "_").replace("(", "").replace(")", "") for c in X.columns]
    return X.astype("float32"), y


@pytest.fixture(scope="session")
def cancer() -> tuple[pd.DataFrame, pd.Series]:
    return _frame(load_breast_cancer)


@pytest.fixture(scope="session")
def iris() -> tuple[pd.DataFrame, pd.Series]:
    return _frame(load_iris)


@pytest.fixture(scope="session")
def diabetes() -> tuple[pd.DataFrame, pd.Series]:
    return _frame(load_diabetes)


@pytest.fixture(scope="session")
def cancer_lr(cancer):
    X, y = cancer
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)


@pytest.fixture(scope="session")
def cancer_gb(cancer):
    X, y = cancer
    return GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0).fit(X, y)


@pytest.fixture(scope="session")
def iris_lr(iris):
    X, y = iris
    y = y.map({0: "setosa", 1: "versicolor", 2: "virginica"})
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)


@pytest.fixture(scope="session")
def diabetes_gb(diabetes):
    X, y = diabetes
    return GradientBoostingRegressor(n_estimators=40, random_state=0).fit(X, y)


REVIEWS = [
    ("the product arrived broken and support never answered", 0),
    ("terrible quality, waste of money", 0),
    ("awful experience, refund took weeks", 0),
    ("great value and fast delivery", 1),
    ("excellent quality, works perfectly", 1),
    ("love it, friendly support and quick shipping", 1),
]


@pytest.fixture(scope="session")
def reviews() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [REVIEWS[i] for i in rng.integers(0, len(REVIEWS), 200)]
    return pd.DataFrame(rows, columns=["review", "positive"])


@pytest.fixture(scope="session")
def text_model(reviews):
    return make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(
        reviews["review"], reviews["positive"]
    )


@pytest.fixture
def db(tmp_path):
    database = sqlml.connect(tmp_path / "wh.duckdb")
    yield database
    database.close()


@pytest.fixture
def cancer_db(db, cancer, cancer_lr):
    """A database with the breast-cancer table (with an id key) and the LR model registered."""
    X, y = cancer
    frame = X.assign(id=np.arange(len(X)), malignant=y.to_numpy())
    db.con.register("cancer_frame", frame)
    db.sql("CREATE TABLE patients AS SELECT * FROM cancer_frame")
    db.con.unregister("cancer_frame")
    db.register_model("cancer", cancer_lr, label="malignant")
    return db
