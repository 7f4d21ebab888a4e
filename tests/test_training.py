"""CREATE MODEL ... AS SELECT: trained with scikit-learn on DuckDB rows, served like any model.

Each model is compared with the scikit-learn Pipeline the test fits itself on the same rows
(BigQuery's automatic preprocessing written out by hand), through ML.PREDICT of a real DuckDB
file (SQL form and onnxruntime); bad input must leave the catalog exactly as it was; the
BigQuery statement is parsed back with sqlglot.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlglot
from sklearn import ensemble, linear_model
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics import accuracy_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from sqlml.errors import SqlCompileError, SqlmlError
from sqlml.rewrite.bigquery import compile_bigquery

TOL = 1e-5


# -- data and the reference pipelines ----------------------------------------------------------


def add_table(db, name: str, frame: pd.DataFrame) -> None:
    db.con.register("frame", frame.assign(id=np.arange(len(frame))))
    db.sql(f"CREATE TABLE {name} AS SELECT * FROM frame")
    db.con.unregister("frame")


@pytest.fixture
def patients(db, cancer):
    X, y = cancer
    add_table(db, "patients", X.assign(malignant=y.to_numpy()))
    return db


@pytest.fixture
def customers(db):
    """Numbers with NULLs, an INTEGER, a DECIMAL, a string with NULLs, a BOOLEAN label."""
    rng = np.random.default_rng(7)
    n = 400
    age = rng.normal(40, 12, n)
    plan = rng.choice(["basic", "pro", "team"], n).astype(object)
    visits = rng.poisson(5, n)
    spend = np.round(rng.gamma(2, 30, n), 2)
    score = 0.05 * (age - 40) + (plan == "pro") - 0.6 * (plan == "team") + 0.1 * (visits - 5)
    churned = score + rng.normal(0, 0.8, n) > 0
    age[rng.random(n) < 0.1] = np.nan
    plan[rng.random(n) < 0.1] = None
    frame = pd.DataFrame({"age": age, "plan": plan, "visits": visits, "spend": spend})
    add_table(db, "raw_customers", frame.assign(churned=churned))
    db.sql(
        "CREATE TABLE customers AS SELECT id, age, plan, visits::INTEGER AS visits, "
        "spend::DECIMAL(10, 2) AS spend, churned FROM raw_customers"
    )
    return db


def features(db, sql: str) -> pd.DataFrame:
    """Rows as the model reads them: float32 numbers, NULL strings as the '' category."""
    frame = db.sql(sql).df()
    for column in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].astype("float32")
        else:
            frame[column] = frame[column].fillna("").astype(object)
    return frame


def reference(estimator, numbers: list[str], strings: list[str] = (), *, linear: bool):
    parts = []
    if numbers:
        impute = SimpleImputer(strategy="mean")
        scaled = Pipeline([("impute", impute), ("scale", StandardScaler())])
        parts.append(("numbers", scaled if linear else impute, numbers))
    if strings:
        encode = (
            OneHotEncoder(handle_unknown="ignore")
            if linear
            else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
        )
        parts.append(("strings", encode, list(strings)))
    return Pipeline([("prepare", ColumnTransformer(parts)), ("model", estimator)])


def predicted(db, model: str, source: str, label: str, engine: str = "auto") -> pd.DataFrame:
    return db.sql(
        f"SELECT id, predicted_{label} AS predicted, "
        f"list_transform(predicted_{label}_probs, e -> e.prob) AS probs "
        f"FROM ML.PREDICT(MODEL {model}, {source}, STRUCT('{engine}' AS engine)) ORDER BY id"
    ).df()


def catalog(db) -> tuple:
    """Everything a registration writes: a failed CREATE MODEL must leave it unchanged."""
    return tuple(
        db.sql(f"SELECT count(*) FROM sqlml.{table}").fetchall()[0][0]
        for table in ("model_versions", "artifacts", "feature_stats", "sql_models")
    )


# -- training matches scikit-learn --------------------------------------------------------------


def test_logistic_reg_matches_sklearn_and_evaluates(patients, cancer):
    db = patients
    X, y = cancer
    db.sql(
        "CREATE MODEL cancer OPTIONS(model_type='logistic_reg', input_label_cols=['malignant'], "
        "l2_reg=0.5) AS SELECT * EXCLUDE (id) FROM patients"
    )
    sk = reference(
        linear_model.LogisticRegression(C=1 / (2 * 0.5), max_iter=1000, random_state=0),
        list(X.columns),
        linear=True,
    ).fit(X, y)
    expected = sk.predict_proba(X)
    assert db.sql("SELECT compiled FROM sqlml.sql_models").fetchall() == [(True,)]
    for engine in ("sql", "runtime"):
        out = predicted(db, "cancer", "TABLE patients", "malignant", engine)
        np.testing.assert_allclose(np.stack(out["probs"]), expected, atol=TOL)
        assert (out["predicted"].to_numpy() == sk.predict(X)).all()
    row = db.sql("SELECT * FROM ML.EVALUATE(MODEL cancer, TABLE patients)").df()
    assert row["accuracy"][0] == pytest.approx(accuracy_score(y, sk.predict(X)))
    info = db.sql("SELECT * FROM sqlml.models").df().iloc[0]
    assert info["label"] == "malignant" and list(info["inputs"]) == list(X.columns)
    versions = db.sql("SELECT nulls, source FROM sqlml.model_versions").fetchall()
    assert versions == [("nan", "trained:logistic_reg")]


def test_multiclass_string_labels(db, iris):
    X, y = iris
    species = y.map({0: "setosa", 1: "versicolor", 2: "virginica"}).to_numpy()
    add_table(db, "flowers", X.assign(species=species))
    db.sql(
        "CREATE MODEL iris OPTIONS(model_type='boosted_tree_classifier', "
        "input_label_cols=['species'], max_iterations=5, max_tree_depth=2, learn_rate=0.5) "
        "AS SELECT * EXCLUDE (id) FROM flowers"
    )
    sk = reference(
        ensemble.GradientBoostingClassifier(
            n_estimators=5, max_depth=2, learning_rate=0.5, random_state=0
        ),
        list(X.columns),
        linear=False,
    ).fit(X, species)
    out = predicted(db, "iris", "TABLE flowers", "species")
    np.testing.assert_allclose(np.stack(out["probs"]), sk.predict_proba(X), atol=TOL)
    assert list(out["predicted"]) == list(sk.predict(X))
    scored = db.sql("SELECT * FROM ML.PREDICT(MODEL iris, TABLE flowers)")
    assert dict(zip(scored.columns, map(str, scored.types)))["predicted_species"] == "VARCHAR"
    matrix = db.sql("SELECT * FROM ML.CONFUSION_MATRIX(MODEL iris, TABLE flowers)").df()
    assert list(matrix["expected_label"]) == ["setosa", "versicolor", "virginica"]


@pytest.mark.parametrize(
    ("options", "estimator"),
    [
        (
            "model_type='random_forest_classifier', num_parallel_tree=4, max_tree_depth=3, "
            "subsample=0.7, colsample_bynode=0.5, random_seed=3",
            ensemble.RandomForestClassifier(
                n_estimators=4, max_depth=3, max_samples=0.7, max_features=0.5, random_state=3
            ),
        ),
        (
            "model_type='boosted_tree_classifier', max_iterations=8, max_tree_depth=3, "
            "subsample=0.8",
            ensemble.GradientBoostingClassifier(
                n_estimators=8, max_depth=3, learning_rate=0.3, subsample=0.8, random_state=0
            ),
        ),
    ],
)
def test_tree_classifiers_match_sklearn(patients, cancer, options, estimator):
    db = patients
    X, y = cancer
    db.sql(
        f"CREATE MODEL trees OPTIONS({options}, input_label_cols=['malignant']) "
        "AS SELECT * EXCLUDE (id) FROM patients"
    )
    sk = reference(estimator, list(X.columns), linear=False).fit(X, y)
    out = predicted(db, "trees", "TABLE patients", "malignant")
    np.testing.assert_allclose(np.stack(out["probs"]), sk.predict_proba(X), atol=TOL)


@pytest.mark.parametrize(
    ("options", "estimator", "linear"),
    [
        ("model_type='linear_reg'", linear_model.LinearRegression(), True),
        ("model_type='linear_reg', l2_reg=3.0", linear_model.Ridge(alpha=3.0), True),
        (
            "model_type='linear_reg', l1_reg=2.0",
            linear_model.Lasso(alpha=2.0 / (2 * 442), max_iter=1000),
            True,
        ),
        (
            "model_type='boosted_tree_regressor', max_iterations=10, max_tree_depth=3, "
            "learn_rate=0.1",
            ensemble.GradientBoostingRegressor(
                n_estimators=10, max_depth=3, learning_rate=0.1, random_state=0
            ),
            False,
        ),
        (
            "model_type='random_forest_regressor', num_parallel_tree=3, max_tree_depth=4",
            ensemble.RandomForestRegressor(
                n_estimators=3, max_depth=4, max_samples=0.8, max_features=0.8, random_state=0
            ),
            False,
        ),
    ],
)
def test_regressors_match_sklearn(db, diabetes, options, estimator, linear):
    X, y = diabetes
    add_table(db, "visits", X.assign(progression=y.to_numpy()))
    db.sql(
        f"CREATE MODEL progress OPTIONS({options}, input_label_cols=['progression']) "
        "AS SELECT * EXCLUDE (id) FROM visits"
    )
    sk = reference(estimator, list(X.columns), linear=linear).fit(X, y)
    out = db.sql(
        "SELECT predicted_progression FROM ML.PREDICT(MODEL progress, TABLE visits) ORDER BY id"
    ).df()
    np.testing.assert_allclose(out["predicted_progression"], sk.predict(X), rtol=TOL, atol=TOL)
    regression = db.sql("SELECT * FROM ML.EVALUATE(MODEL progress, TABLE visits)").df()
    assert 0 < regression["r2_score"][0] <= 1


@pytest.mark.parametrize(
    ("options", "estimator"),
    [
        (
            "model_type='logistic_reg', l2_reg=0.1",
            linear_model.LogisticRegression(C=5.0, max_iter=1000, random_state=0),
        ),
        (
            "model_type='boosted_tree_classifier', max_iterations=10",
            ensemble.GradientBoostingClassifier(  # BigQuery's defaults: depth 6, rate 0.3
                n_estimators=10, max_depth=6, learning_rate=0.3, random_state=0
            ),
        ),
    ],
)
def test_strings_nulls_and_boolean_label(customers, options, estimator):
    """One-hot (linear) or label encoding (trees), NULL numbers imputed with the training mean
    at training and prediction, NULL strings as their own category."""
    db = customers
    db.sql(
        f"CREATE MODEL churn OPTIONS({options}, input_label_cols=['churned']) "
        "AS SELECT * EXCLUDE (id) FROM customers"
    )
    train = features(db, "SELECT age, plan, visits, spend FROM customers ORDER BY id")
    y = db.sql("SELECT churned FROM customers ORDER BY id").df()["churned"].to_numpy()
    linear = "logistic_reg" in options
    sk = reference(estimator, ["age", "visits", "spend"], ["plan"], linear=linear).fit(train, y)
    source = "(SELECT * REPLACE (coalesce(plan, '') AS plan) FROM customers)"
    out = predicted(db, "churn", source, "churned")
    assert train["age"].isna().any()  # NULL ages are scored, with the training mean
    np.testing.assert_allclose(np.stack(out["probs"]), sk.predict_proba(train), atol=TOL)
    assert out["predicted"].dtype == bool and (out["predicted"] == sk.predict(train)).all()
    unseen = db.sql(
        "SELECT predicted_churned FROM ML.PREDICT(MODEL churn, "
        "(SELECT 41.0 AS age, 'enterprise' AS plan, 5 AS visits, 20.0 AS spend))"
    ).fetchall()
    assert unseen[0][0] in (True, False)  # a category never seen in training still scores
    info = db.sql("SELECT * FROM ML.FEATURE_INFO(MODEL churn)").df().set_index("input")
    assert list(info.index) == ["age", "plan", "visits", "spend"]
    counts = db.sql("SELECT count(*) - count(age), count(*) - count(plan) FROM customers")
    null_age, null_plan = counts.fetchall()[0]
    assert (info.loc["age", "null_count"], info.loc["plan", "null_count"]) == (null_age, null_plan)
    assert info.loc["plan", "category_count"] == 3
    assert info.loc["spend", "mean"] == pytest.approx(train["spend"].astype(float).mean(), 1e-5)
    # a NULL string at prediction is the NULL category of training, in either engine
    for engine in ("auto", "runtime"):
        direct = predicted(db, "churn", "TABLE customers", "churned", engine)
        np.testing.assert_allclose(np.stack(direct["probs"]), sk.predict_proba(train), atol=TOL)


def test_class_weights(customers):
    db = customers
    select = "AS SELECT age, visits, churned FROM customers"
    db.sql(
        "CREATE MODEL weighted OPTIONS(model_type='logistic_reg', input_label_cols=['churned'], "
        f"l2_reg=0.1, class_weights=[STRUCT('true', 3.0)]) {select}"
    )
    db.sql(
        "CREATE MODEL balanced OPTIONS(model_type='logistic_reg', input_label_cols=['churned'], "
        f"l2_reg=0.1, auto_class_weights=TRUE) {select}"
    )
    train = features(db, "SELECT age, visits FROM customers ORDER BY id")
    y = db.sql("SELECT churned FROM customers ORDER BY id").df()["churned"].to_numpy()
    for model, weights in (
        ("weighted", np.where(y, 3.0, 1.0)),
        ("balanced", compute_sample_weight("balanced", y)),
    ):
        sk = reference(
            linear_model.LogisticRegression(C=5.0, max_iter=1000, random_state=0),
            ["age", "visits"],
            linear=True,
        ).fit(train, y, model__sample_weight=weights)
        out = predicted(db, model, "TABLE customers", "churned")
        np.testing.assert_allclose(np.stack(out["probs"]), sk.predict_proba(train), atol=TOL)


def test_training_query_may_use_ml_predict_and_sqlml_options(patients):
    db = patients
    db.sql(
        "CREATE MODEL base OPTIONS(model_type='logistic_reg', input_label_cols=['malignant'], "
        "l2_reg=1.0) AS SELECT mean_radius, mean_texture, malignant FROM patients"
    )
    db.sql(
        "CREATE MODEL stacked OPTIONS(model_type='linear_reg', input_label_cols=['p'], "
        "engine='runtime', description='stacked') AS SELECT mean_area, "
        "predicted_malignant_probs[2].prob AS p FROM ML.PREDICT(MODEL base, TABLE patients)"
    )
    rows = db.sql(
        "SELECT m.description, s.compiled FROM sqlml.models m JOIN sqlml.sql_models s "
        "ON s.model = m.model WHERE m.model = 'stacked'"
    ).fetchall()
    assert rows == [("stacked", False)]
    assert db.sql("SELECT count(*) FROM ML.PREDICT(MODEL stacked, TABLE patients)").fetchall()[0][0]


def test_create_replace_and_if_not_exists(patients):
    db = patients
    create = (
        "CREATE {} MODEL {} m OPTIONS(model_type='logistic_reg', input_label_cols=['malignant'],"
        " l2_reg=1.0) AS SELECT mean_radius, malignant FROM {}"
    )
    assert db.sql(create.format("", "", "patients")).fetchall() == [("m", 1)]
    before = catalog(db)
    with pytest.raises(SqlmlError, match="model m already exists.*OR REPLACE"):
        db.sql(create.format("", "", "patients"))
    assert catalog(db) == before
    # IF NOT EXISTS reads and trains nothing: a missing table is not even looked at
    assert db.sql(create.format("", "IF NOT EXISTS", "no_such_table")).fetchall() == [("m", 1)]
    assert db.sql(create.format("OR REPLACE", "", "patients")).fetchall() == [("m", 2)]
    assert db.sql("SELECT versions FROM sqlml.models").fetchall()[0][0] == 2


# -- bad input: a clear error, nothing registered --------------------------------------------


@pytest.mark.parametrize(
    ("statement", "error", "message"),
    [
        (
            "CREATE MODEL m OPTIONS(model_type='logistic_reg', input_label_cols=['outcome']) "
            "AS SELECT age, visits FROM customers",
            SqlmlError,
            r"CREATE MODEL m: label column 'outcome' is not in the training query",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='logistic_reg') AS SELECT age, churned AS label "
            "FROM customers WHERE false",
            SqlmlError,
            "CREATE MODEL m: the training query returned no rows",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='linear_reg', input_label_cols=['age']) "
            "AS SELECT visits, age FROM customers",
            SqlmlError,
            r"label column 'age' has \d+ NULL values.*WHERE age IS NOT NULL",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='logistic_reg', input_label_cols=['churned']) "
            "AS SELECT age, churned FROM customers WHERE churned",
            SqlmlError,
            r"label column 'churned' has a single class \(True\)",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='logistic_reg', input_label_cols=['spend']) "
            "AS SELECT age, spend FROM customers",
            SqlmlError,
            r"label column 'spend' has type DECIMAL\(10,2\); a classifier's label",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='linear_reg', input_label_cols=['plan']) "
            "AS SELECT age, plan FROM customers WHERE plan IS NOT NULL",
            SqlmlError,
            "label column 'plan' has type VARCHAR; linear_reg needs a numeric label",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='logistic_reg', input_label_cols=['churned']) "
            "AS SELECT age, DATE '2024-01-01' + visits AS day, churned FROM customers",
            SqlmlError,
            r"feature column 'day' has type DATE; sqlml trains on numbers and VARCHAR",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='logistic_reg', input_label_cols=['churned']) "
            "AS SELECT age, visits > 4 AS busy, churned FROM customers",
            SqlmlError,
            r"feature column 'busy' has type BOOLEAN.*CAST it to INTEGER",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='linear_reg', input_label_cols=['visits']) "
            "AS SELECT 'inf'::DOUBLE AS big, visits FROM customers",
            SqlmlError,
            "feature column 'big' has infinite values",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='linear_reg', input_label_cols=['visits']) "
            "AS SELECT visits FROM customers",
            SqlmlError,
            "no feature columns besides 'visits'",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='linear_reg', input_label_cols=['visits']) "
            "AS SELECT age, age AS AGE, visits FROM customers",
            SqlmlError,
            r"duplicate column names \['age'\]",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='linear_reg', input_label_cols=['visits']) "
            "AS SELECT nope, visits FROM customers",
            SqlmlError,
            r"CREATE MODEL m: the training query failed: .*nope",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='dnn_classifier') AS SELECT age AS label "
            "FROM customers",
            SqlCompileError,
            r"sqlml cannot train model_type='dnn_classifier'; it trains 'logistic_reg'",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='boosted_tree_regressor', l2_reg=1.0, "
            "input_label_cols=['age']) AS SELECT visits, age FROM customers",
            SqlCompileError,
            r"option 'l2_reg' is not supported for model_type='boosted_tree_regressor' "
            r"\(scikit-learn's gradient boosting",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='logistic_reg', optimize_strategy='auto_strategy')"
            " AS SELECT age AS label FROM customers",
            SqlCompileError,
            r"option 'optimize_strategy' is not supported .*supported: auto_class_weights",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='logistic_reg', l2_reg=-1) AS SELECT 1 AS label",
            SqlCompileError,
            "CREATE MODEL m: l2_reg must be a number >= 0, got -1",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='boosted_tree_classifier', early_stop=TRUE) "
            "AS SELECT 1 AS label",
            SqlCompileError,
            "early_stop must be FALSE",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='logistic_reg', input_label_cols=['churned'], "
            "class_weights=[STRUCT('maybe', 2.0)]) AS SELECT age, churned FROM customers",
            SqlmlError,
            r"class_weights names 'maybe', which is not a class of the label",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='linear_reg', data_split_eval_fraction=0.2) "
            "AS SELECT 1 AS label",
            SqlCompileError,
            r"'data_split_eval_fraction' is not supported .*sqlml trains on every row",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='linear_reg', nulls='zero') AS SELECT 1 AS label",
            SqlCompileError,
            r"CREATE MODEL m: nulls must be one of \('null', 'nan', 'error'\)",
        ),
        (
            "CREATE MODEL analytics.m OPTIONS(model_type='linear_reg') AS SELECT 1 AS label",
            SqlCompileError,
            "write the bare model name",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='onnx', model_path='m.onnx') AS SELECT 1 AS x",
            SqlCompileError,
            "model_type='onnx' imports a trained model.*takes no AS SELECT",
        ),
        (
            "CREATE MODEL m OPTIONS(model_type='logistic_reg', input_label_cols=['churned'])",
            SqlCompileError,
            "model_type='logistic_reg' trains a model: add AS SELECT",
        ),
    ],
)
def test_bad_input_is_refused_and_nothing_is_registered(customers, statement, error, message):
    db = customers
    before = catalog(db)
    with pytest.raises(error, match=message):
        db.sql(statement)
    assert catalog(db) == before == (0, 0, 0, 0)
    assert db.registry.names() == []


def test_failed_replace_keeps_the_current_version(customers):
    db = customers
    db.sql(
        "CREATE MODEL m OPTIONS(model_type='linear_reg', input_label_cols=['visits']) "
        "AS SELECT spend, visits FROM customers"
    )
    before = catalog(db)
    with pytest.raises(SqlmlError, match="label column 'age' has"):
        db.sql(
            "CREATE OR REPLACE MODEL m OPTIONS(model_type='linear_reg', "
            "input_label_cols=['age']) AS SELECT visits, age FROM customers"
        )
    assert catalog(db) == before
    assert db.sql("SELECT version FROM sqlml.model_versions").fetchall() == [(1,)]


# -- BigQuery -----------------------------------------------------------------------------------


def test_compiles_to_bigquery_training(customers):
    db = customers
    text = (
        "-- weekly retrain\n"
        "CREATE OR REPLACE MODEL churn OPTIONS(model_type='boosted_tree_classifier', "
        "input_label_cols=['churned'], max_iterations=30, learn_rate=0.1, random_seed=4, "
        "nulls='nan') AS SELECT * EXCLUDE (id), spend::DOUBLE / visits AS per_visit "
        "FROM customers WHERE plan IS NOT NULL"
    )
    sql = db.compile(text, dataset="analytics")
    tree = sqlglot.parse_one(sql.rstrip().rstrip(";"), read="bigquery")
    assert isinstance(tree, sqlglot.exp.Create) and tree.kind == "MODEL"
    assert tree.this.sql(dialect="bigquery") == "`analytics.churn`" and tree.args["replace"]
    options = {p.name.upper(): p.args["value"].sql("bigquery") for p in tree.args["properties"]}
    assert options == {
        "MODEL_TYPE": "'BOOSTED_TREE_CLASSIFIER'",
        "INPUT_LABEL_COLS": "['churned']",
        "MAX_ITERATIONS": "30",
        "LEARN_RATE": "0.1",
        "DATA_SPLIT_METHOD": "'NO_SPLIT'",
        "EARLY_STOP": "FALSE",
    }
    query = tree.expression.sql("bigquery")
    assert "EXCEPT (id)" in query and "CAST(spend AS FLOAT64)" in query
    assert sql.startswith("-- weekly retrain\n")


def test_bigquery_treats_a_trained_model_as_native(customers):
    """BigQuery trains the model itself, so its ML.PREDICT already has predicted_<label> and
    predicted_<label>_probs, the latter in BigQuery's own order: sqlml passes ML.PREDICT through
    and finds each class's probability by label. Checked by running the compiled ML.EVALUATE and
    ML.TOP_K on DuckDB over a stand-in for BigQuery's output with the probabilities reversed."""
    db = customers
    db.sql(
        "CREATE MODEL churn OPTIONS(model_type='logistic_reg', input_label_cols=['churned']) "
        "AS SELECT age, plan, visits, churned FROM customers"
    )
    predict = db.compile(
        "SELECT * FROM ML.PREDICT(MODEL churn, TABLE customers, STRUCT(0.3 AS threshold))",
        dataset="ds",
    )
    assert sqlglot.parse_one(predict.rstrip().rstrip(";"), read="bigquery").sql("bigquery") == (
        "SELECT * FROM ML.PREDICT(MODEL `ds.churn`, TABLE customers, STRUCT(0.3 AS threshold))"
    )
    db.sql("CREATE TABLE scoring AS SELECT * FROM customers")
    db.sql(
        "CREATE TABLE bigquery_predict AS SELECT * EXCLUDE (label, probabilities, "
        "predicted_churned_probs), list_reverse(predicted_churned_probs) AS predicted_churned_probs"
        " FROM ML.PREDICT(MODEL churn, TABLE scoring)"
    )

    def on_stand_in(query: str) -> list[tuple]:
        compiled = db.compile(query, dataset="ds")
        tree = sqlglot.parse_one(compiled.rstrip().rstrip(";"), read="bigquery")
        assert "probabilities[" not in compiled  # a native model has no such column
        for call in list(tree.find_all(sqlglot.exp.Predict)):  # FROM ML.PREDICT(...) [AS a]
            stand_in = sqlglot.exp.to_table("bigquery_predict")
            stand_in.set("alias", call.parent.args.get("alias"))
            call.parent.replace(stand_in)
        return db.sql(tree.sql("duckdb")).fetchall()

    evaluate = "SELECT * FROM ML.EVALUATE(MODEL churn, TABLE scoring)"
    expected = db.sql(evaluate).fetchall()
    assert on_stand_in(evaluate)[0] == pytest.approx(expected[0], abs=1e-12)
    top = "SELECT id, score FROM ML.TOP_K(MODEL churn, TABLE scoring, STRUCT(5 AS k))"
    assert on_stand_in(top) == db.sql(top).fetchall()


def test_bigquery_training_options_and_errors():
    text = (
        "CREATE MODEL IF NOT EXISTS m OPTIONS(model_type='logistic_reg', label='y', "
        "l1_reg=0.5, class_weights=[STRUCT('a', 0.25), STRUCT('b', 4.0)], "
        "data_split_method='no_split') AS SELECT x, list_value(1, 2)[1] AS first, y FROM t"
    )
    sql = compile_bigquery(text, dataset="ds").sql
    tree = sqlglot.parse_one(sql.rstrip().rstrip(";"), read="bigquery")
    assert tree.args["exists"] and not tree.args.get("replace")
    assert "INPUT_LABEL_COLS=['y']" in sql and "L1_REG=0.5" in sql
    assert "CLASS_WEIGHTS=[STRUCT('a', 0.25), STRUCT('b', 4.0)]" in sql
    assert sql.count("DATA_SPLIT_METHOD") == 1 and "EARLY_STOP" not in sql
    assert "[1, 2][0]" in sql  # DuckDB's 1-based list index, as BigQuery's 0-based one
    with pytest.raises(SqlCompileError, match=r"statement 1 .*max_tree_depth must be an integer"):
        compile_bigquery(
            "CREATE MODEL m OPTIONS(model_type='random_forest_classifier', max_tree_depth=2.5) "
            "AS SELECT * FROM t"
        )
    with pytest.raises(SqlCompileError, match="num_parallel_tree must be 1 for boosted trees"):
        compile_bigquery(
            "CREATE MODEL m OPTIONS(model_type='boosted_tree_regressor', num_parallel_tree=4) "
            "AS SELECT * FROM t"
        )
    with pytest.raises(SqlCompileError, match="read_csv"):
        compile_bigquery(
            "CREATE MODEL m OPTIONS(model_type='linear_reg') AS SELECT * FROM read_csv('x.csv')"
        )
