"""Train a model from SQL: `CREATE MODEL m OPTIONS(model_type='logistic_reg', ...) AS SELECT ...`.

BigQuery ML trains where the data lives; sqlml trains the same statement with scikit-learn on
the rows the SELECT returns in DuckDB, then registers the fitted Pipeline like any other
scikit-learn model (`sqlml.convert`: ONNX with one input per column, so ML.PREDICT binds by
name), with its label (`predicted_<label>` columns) and the training statistics of its features.
The options are checked here for both targets: `Database` trains, `sqlml.rewrite.bigquery`
compiles the statement to BigQuery's own CREATE MODEL, so a bad option fails the same way.

Preprocessing is BigQuery's automatic preprocessing, kept inside the Pipeline so that
prediction repeats it (docs: bigquery/docs/auto-preprocessing):
- numbers (integers, FLOAT, DOUBLE, DECIMAL), read as float32 as the model function feeds them:
  NULL/NaN -> the training mean; standardized for linear models (trees need no scaling);
- strings (VARCHAR): NULL -> the category '' (BigQuery: an extra category for NULL); one-hot
  encoded for linear models (an unseen value gets weight 0), label (ordinal) encoded for trees
  (an unseen value becomes -1);
- other types are refused, naming the column. BOOLEAN is among them for now: the model
  function takes numbers as DOUBLE and DuckDB does not cast BOOLEAN to it implicitly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlml.errors import SqlCompileError, SqlmlError
from sqlml.names import check_name
from sqlml.sqlcatalog import ENGINES
from sqlml.udf import NULL_POLICIES

MISSING_CATEGORY = ""  # what a NULL string is trained as
MAX_CLASSES = 50  # BigQuery's limit for logistic_reg labels
SQLML_OPTIONS = ("nulls", "description", "engine")  # passed to register_model
_INTEGERS = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
    "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
)  # fmt: skip
_NUMBERS = (*_INTEGERS, "FLOAT", "DOUBLE", "DECIMAL")


@dataclass(frozen=True)
class ModelType:
    name: str  # as in BigQuery, lower case
    family: str  # 'linear' | 'boosted' | 'forest'
    classifier: bool


MODEL_TYPES = {
    t.name: t
    for t in (
        ModelType("logistic_reg", "linear", True),
        ModelType("linear_reg", "linear", False),
        ModelType("boosted_tree_classifier", "boosted", True),
        ModelType("boosted_tree_regressor", "boosted", False),
        ModelType("random_forest_classifier", "forest", True),
        ModelType("random_forest_regressor", "forest", False),
    )
}

# BigQuery's defaults, except max_iterations of linear models: sklearn's solvers stop when they
# converge, and 20 of their iterations (BigQuery's default) is often too few.
DEFAULTS: dict[str, dict[str, Any]] = {
    "linear": {"l1_reg": 0.0, "l2_reg": 0.0, "max_iterations": 1000, "fit_intercept": True},
    "boosted": {
        "max_iterations": 20, "learn_rate": 0.3, "max_tree_depth": 6, "subsample": 1.0,
        "num_parallel_tree": 1, "early_stop": False,
    },
    "forest": {
        "num_parallel_tree": 100, "max_tree_depth": 20, "subsample": 0.8,
        "colsample_bynode": 0.8,
    },
}  # fmt: skip


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


# option -> (check, what a valid value is); which model types take it: DEFAULTS, plus below
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "l1_reg": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "l2_reg": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "max_iterations": (_count, "an integer >= 1"),
    "fit_intercept": (lambda v: isinstance(v, bool), "TRUE or FALSE"),
    "learn_rate": (lambda v: _number(v) and v > 0, "a number > 0"),
    "max_tree_depth": (_count, "an integer >= 1"),
    "subsample": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "colsample_bynode": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "num_parallel_tree": (_count, "an integer >= 1"),
    "early_stop": (lambda v: v is False, "FALSE (boosting always runs max_iterations rounds)"),
    "auto_class_weights": (lambda v: isinstance(v, bool), "TRUE or FALSE"),
    "class_weights": (
        lambda v: isinstance(v, list)
        and all(isinstance(p, tuple) and len(p) == 2 and _number(p[1]) and p[1] >= 0 for p in v),
        "a list of (label, weight >= 0) pairs: [STRUCT('a', 0.5), STRUCT('b', 2.0)]",
    ),
    "data_split_method": (
        lambda v: isinstance(v, str) and v.upper() == "NO_SPLIT",
        "'NO_SPLIT' (sqlml trains on every row; hold rows out in the SELECT and score them "
        "with ML.EVALUATE)",
    ),
    "random_seed": (lambda v: _count(v) or v == 0, "an integer >= 0"),
    "nulls": (lambda v: v in NULL_POLICIES, f"one of {NULL_POLICIES}"),
    "engine": (lambda v: v in ENGINES, f"one of {ENGINES}"),
    "description": (lambda v: isinstance(v, str), "a string"),
}  # fmt: skip
_CLASSIFIER_OPTIONS = ("class_weights", "auto_class_weights")
_ANY_MODEL = ("data_split_method", "random_seed")
_WHY_NOT = {
    ("boosted", "l1_reg"): "scikit-learn's gradient boosting has no leaf-weight regularization",
    ("boosted", "l2_reg"): "scikit-learn's gradient boosting has no leaf-weight regularization",
    ("forest", "l1_reg"): "scikit-learn's random forest has no leaf-weight regularization",
    ("forest", "l2_reg"): "scikit-learn's random forest has no leaf-weight regularization",
    ("linear", "learn_rate"): "linear models are fitted by lbfgs/saga/least squares, not by a "
    "fixed-rate gradient descent",
    ("boosted", "min_tree_child_weight"): "XGBoost's minimum hessian weight has no scikit-learn "
    "equivalent",
    ("forest", "min_tree_child_weight"): "XGBoost's minimum hessian weight has no scikit-learn "
    "equivalent",
}  # fmt: skip


@dataclass(frozen=True)
class TrainingSpec:
    """Checked options of a CREATE MODEL ... AS SELECT."""

    model: str
    model_type: ModelType
    label: str
    given: dict[str, Any]  # BigQuery options as written (lower case), compiled as they are
    register: dict[str, Any] = field(default_factory=dict)  # sqlml's: nulls, description...
    seed: int = 0  # sqlml's random_seed: training is reproducible by default

    def param(self, option: str) -> Any:
        return self.given.get(option, DEFAULTS[self.model_type.family].get(option))

    def bigquery_options(self) -> list[tuple[str, Any]]:
        """OPTIONS of BigQuery's statement: the options given, with sqlml's choices made
        explicit where BigQuery's defaults differ (no data split; every boosting round)."""
        options: list[tuple[str, Any]] = [
            ("MODEL_TYPE", self.model_type.name.upper()),
            ("INPUT_LABEL_COLS", [self.label]),
        ]
        options += [(k.upper(), v) for k, v in self.given.items() if k != "data_split_method"]
        options.append(("DATA_SPLIT_METHOD", "NO_SPLIT"))
        if self.model_type.family == "boosted" and "early_stop" not in self.given:
            options.append(("EARLY_STOP", False))
        return options


def is_training_type(model_type: object) -> bool:
    return str(model_type).lower() in MODEL_TYPES


def parse_options(model: str, options: dict[str, Any]) -> TrainingSpec:
    """Check OPTIONS(...) of `CREATE MODEL model ... AS SELECT`: unknown or unsupported options
    and bad values raise SqlCompileError naming the model and the option."""
    options = dict(options)
    what = f"CREATE MODEL {model}"
    name = str(options.pop("model_type", "")).lower()
    if name in ("onnx", "tensorflow"):
        raise SqlCompileError(
            f"{what}: model_type='{name}' imports a trained model (model_path=...) and takes no "
            f"AS SELECT; training needs model_type {_type_list()}"
        )
    if name not in MODEL_TYPES:
        raise SqlCompileError(
            f"{what}: sqlml cannot train model_type={name!r}; it trains {_type_list()}"
        )
    model_type = MODEL_TYPES[name]
    label = _label(what, options)
    allowed = set(DEFAULTS[model_type.family]) | set(_ANY_MODEL) | set(SQLML_OPTIONS)
    allowed |= set(_CLASSIFIER_OPTIONS) if model_type.classifier else set()
    for option, value in options.items():
        if option not in allowed:
            why = _WHY_NOT.get((model_type.family, option))
            if option.startswith("data_split_"):
                why = "sqlml trains on every row: data_split_method='NO_SPLIT'"
            raise SqlCompileError(
                f"{what}: option {option!r} is not supported for model_type='{name}'"
                + (f" ({why})" if why else "")
                + f"; supported: {', '.join(sorted(allowed))}"
            )
        check, valid = _CHECKS[option]
        if not check(value):
            raise SqlCompileError(f"{what}: {option} must be {valid}, got {value!r}")
    register = {k: options.pop(k) for k in SQLML_OPTIONS if k in options}
    if model_type.family == "boosted" and options.get("num_parallel_tree", 1) != 1:
        raise SqlCompileError(
            f"{what}: num_parallel_tree must be 1 for boosted trees (boosted random forests "
            "are not supported); use model_type='random_forest_...' for a forest"
        )
    if options.get("auto_class_weights") and options.get("class_weights"):
        raise SqlCompileError(f"{what}: give class_weights or auto_class_weights=TRUE, not both")
    seed = options.pop("random_seed", 0)
    return TrainingSpec(model, model_type, label, options, register, seed)


def _type_list() -> str:
    return " | ".join(f"'{t}'" for t in MODEL_TYPES)


def _label(what: str, options: dict[str, Any]) -> str:
    """input_label_cols=['y'] (BigQuery) or label='y' (sqlml); BigQuery's default is `label`."""
    columns = options.pop("input_label_cols", None)
    label = options.pop("label", None)
    if columns is not None:
        if not isinstance(columns, list) or len(columns) != 1 or not isinstance(columns[0], str):
            raise SqlCompileError(
                f"{what}: input_label_cols must name one column, e.g. ['y'], got {columns!r}"
            )
        if label is not None and str(label).lower() != columns[0].lower():
            raise SqlCompileError(f"{what}: input_label_cols and label name different columns")
        label = columns[0]
    label = "label" if label is None else label
    if not isinstance(label, str):
        raise SqlCompileError(f"{what}: label must be a column name, got {label!r}")
    return check_name(label, "label column")


# -- training -----------------------------------------------------------------------------------


@dataclass
class TrainedModel:
    """A fitted Pipeline and what `Database.register_model` needs to register it."""

    pipeline: Any
    label: str  # the label column as the SELECT spells it
    inputs: dict[str, str]  # feature column -> ONNX input type, in SELECT order
    features: pa.Table  # the training rows without the label: training statistics


def train(con: duckdb.DuckDBPyConnection, spec: TrainingSpec, sql: str) -> TrainedModel:
    """Run the training query and fit the model's Pipeline on its rows."""
    what = f"CREATE MODEL {spec.model}"
    try:
        relation = con.sql(sql)
        types = {c: str(t) for c, t in zip(relation.columns, relation.types)}
        table = relation.to_arrow_table()
    except duckdb.Error as error:
        raise SqlmlError(f"{what}: the training query failed: {error}") from None
    lowered = [c.lower() for c in table.column_names]
    duplicates = sorted({c for c in lowered if lowered.count(c) > 1})
    if duplicates:
        raise SqlmlError(f"{what}: the training query has duplicate column names {duplicates}")
    if spec.label.lower() not in lowered:
        raise SqlmlError(
            f"{what}: label column {spec.label!r} is not in the training query "
            f"(columns: {', '.join(table.column_names)})"
        )
    label = table.column_names[lowered.index(spec.label.lower())]
    features = table.drop_columns([label])
    if features.num_columns == 0:
        raise SqlmlError(f"{what}: the training query has no feature columns besides {label!r}")
    if table.num_rows == 0:
        raise SqlmlError(f"{what}: the training query returned no rows")
    y = _label_values(what, spec, label, types[label], table.column(label))
    frame, inputs = _feature_frame(what, features, types)
    pipeline = _pipeline(spec, inputs, table.num_rows)
    weights = _sample_weights(what, spec, y)
    try:
        pipeline.fit(frame, y, **({"model__sample_weight": weights} if weights is not None else {}))
    except ValueError as error:
        raise SqlmlError(f"{what}: training failed: {error}") from None
    return TrainedModel(pipeline, label, inputs, features)


def _label_values(what: str, spec: TrainingSpec, name: str, dtype: str, column: pa.ChunkedArray):
    base = dtype.split("(")[0].upper()
    nulls = column.null_count
    if base in ("FLOAT", "DOUBLE") and len(column):
        nulls += int(pc.sum(pc.is_nan(column)).as_py() or 0)
    if nulls:
        raise SqlmlError(
            f"{what}: label column {name!r} has {nulls} NULL values; a label must be known for "
            f"every training row (BigQuery ML fails too): add WHERE {name} IS NOT NULL"
        )
    if not spec.model_type.classifier:
        if base not in _NUMBERS:
            raise SqlmlError(
                f"{what}: label column {name!r} has type {dtype}; {spec.model_type.name} needs "
                "a numeric label"
            )
        y = pc.cast(column, pa.float64()).to_numpy()
        if not np.isfinite(y).all():
            raise SqlmlError(f"{what}: label column {name!r} has infinite values")
        return y
    if base in _INTEGERS:
        y = pc.cast(column, pa.int64()).to_numpy()
    elif base in ("BOOLEAN", "VARCHAR"):
        y = column.to_numpy(zero_copy_only=False)
    else:
        raise SqlmlError(
            f"{what}: label column {name!r} has type {dtype}; a classifier's label must be "
            "an integer, BOOLEAN or VARCHAR (CAST it)"
        )
    classes = np.unique(y)
    if len(classes) < 2:
        raise SqlmlError(
            f"{what}: label column {name!r} has a single class ({_plain(classes[0])!r}); a "
            "classifier needs at least two"
        )
    if len(classes) > MAX_CLASSES:
        raise SqlmlError(
            f"{what}: label column {name!r} has {len(classes)} classes; at most {MAX_CLASSES} "
            "are supported (as in BigQuery ML)"
        )
    return y


def _feature_frame(what: str, features: pa.Table, types: dict[str, str]):
    """The features as the model function will feed them: float32 numbers, strings with
    NULL as the missing category; and each column's ONNX input type."""
    import pandas as pd

    data: dict[str, np.ndarray] = {}
    inputs: dict[str, str] = {}
    for name, column in zip(features.column_names, features.columns):
        dtype = types[name]
        base = dtype.split("(")[0].upper()
        if base in _NUMBERS:
            values = pc.cast(column, pa.float64()).to_numpy().astype(np.float32)
            if np.isinf(values).any():
                raise SqlmlError(
                    f"{what}: feature column {name!r} has infinite values (or values beyond "
                    "float32's range, which the model reads)"
                )
            if np.isnan(values).all():
                raise SqlmlError(f"{what}: feature column {name!r} has only NULL values")
            data[name], inputs[name] = values, "float32"
        elif base == "VARCHAR":
            filled = pc.fill_null(pc.cast(column, pa.string()), MISSING_CATEGORY)
            data[name], inputs[name] = filled.to_numpy(zero_copy_only=False), "string"
        else:
            hint = (
                "CAST it to INTEGER (0/1) or VARCHAR"
                if base == "BOOLEAN"
                else "CAST it to a number or VARCHAR"
            )
            raise SqlmlError(
                f"{what}: feature column {name!r} has type {dtype}; sqlml trains on numbers and "
                f"VARCHAR: {hint}, or leave it out of the SELECT"
            )
    return pd.DataFrame(data), inputs


def _pipeline(spec: TrainingSpec, inputs: dict[str, str], rows: int):
    """Preprocessing (BigQuery's automatic one) and the estimator, as one Pipeline."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    linear = spec.model_type.family == "linear"
    numbers = [c for c, t in inputs.items() if t == "float32"]
    strings = [c for c, t in inputs.items() if t == "string"]
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
        parts.append(("strings", encode, strings))
    return Pipeline([("prepare", ColumnTransformer(parts)), ("model", _estimator(spec, rows))])


def _estimator(spec: TrainingSpec, rows: int):
    from sklearn import ensemble

    kind, p, seed = spec.model_type, spec.param, spec.seed
    if kind.family == "linear":
        l1, l2 = float(p("l1_reg")), float(p("l2_reg"))
        common = {"fit_intercept": p("fit_intercept"), "max_iter": p("max_iterations")}
        if kind.classifier:
            return _logistic(l1, l2, seed, **common)
        return _linear(l1, l2, rows, **common)
    if kind.family == "boosted":
        boosted = (
            ensemble.GradientBoostingClassifier
            if kind.classifier
            else ensemble.GradientBoostingRegressor
        )
        return boosted(
            n_estimators=p("max_iterations"),
            learning_rate=p("learn_rate"),
            max_depth=p("max_tree_depth"),
            subsample=p("subsample"),
            random_state=seed,
        )
    forest = ensemble.RandomForestClassifier if kind.classifier else ensemble.RandomForestRegressor
    sample = p("subsample")
    return forest(
        n_estimators=p("num_parallel_tree"),
        max_depth=p("max_tree_depth"),
        max_features=p("colsample_bynode"),
        bootstrap=sample < 1,
        max_samples=sample if sample < 1 else None,
        random_state=seed,
    )


def _logistic(l1: float, l2: float, seed: int, fit_intercept: bool, max_iter: int):
    """Minimizes sum(log loss) + l1 * |w|_1 + l2 * |w|^2 (sklearn: C * sum(loss) + penalty)."""
    from sklearn.linear_model import LogisticRegression

    C = 1 / (l1 + 2 * l2) if l1 or l2 else math.inf
    ratio = l1 * C if l1 else 0.0
    kwargs: dict[str, Any] = {
        "C": C, "l1_ratio": ratio, "solver": "saga" if l1 else "lbfgs", "max_iter": max_iter,
        "fit_intercept": fit_intercept, "random_state": seed,
    }  # fmt: skip
    if LogisticRegression().get_params()["penalty"] != "deprecated":  # scikit-learn < 1.8
        penalty = None if not (l1 or l2) else "l2" if not l1 else "l1" if not l2 else "elasticnet"
        kwargs.update(penalty=penalty, C=1.0 if penalty is None else C)
        if penalty != "elasticnet":
            del kwargs["l1_ratio"]
    return LogisticRegression(**kwargs)


def _linear(l1: float, l2: float, rows: int, fit_intercept: bool, max_iter: int):
    """Minimizes sum((y - y')^2) + l1 * |w|_1 + l2 * |w|^2, in scikit-learn's scaling."""
    from sklearn import linear_model

    if not l1 and not l2:
        return linear_model.LinearRegression(fit_intercept=fit_intercept)
    if not l1:
        return linear_model.Ridge(alpha=l2, fit_intercept=fit_intercept)
    if not l2:
        return linear_model.Lasso(
            alpha=l1 / (2 * rows), fit_intercept=fit_intercept, max_iter=max_iter
        )
    return linear_model.ElasticNet(
        alpha=(l1 / 2 + l2) / rows,
        l1_ratio=(l1 / 2) / (l1 / 2 + l2),
        fit_intercept=fit_intercept,
        max_iter=max_iter,
    )


def _sample_weights(what: str, spec: TrainingSpec, y: np.ndarray) -> np.ndarray | None:
    """class_weights / auto_class_weights as per-row weights (every estimator takes them)."""
    if spec.given.get("auto_class_weights"):
        from sklearn.utils.class_weight import compute_sample_weight

        return compute_sample_weight("balanced", y)
    pairs = spec.given.get("class_weights")
    if not pairs:
        return None
    classes = list(np.unique(y))
    weights = {}
    for key, weight in pairs:
        matches = [c for c in classes if _same_label(key, c)]
        if not matches:
            raise SqlmlError(
                f"{what}: class_weights names {key!r}, which is not a class of the label "
                f"(classes: {[_plain(c) for c in classes]})"
            )
        weights[matches[0]] = float(weight)
    return np.array([weights.get(c, 1.0) for c in y], dtype=np.float64)


def _same_label(key: object, value: object) -> bool:
    """BigQuery writes class labels as strings in class_weights: '1', 'true' match 1, TRUE."""
    value = _plain(value)
    if isinstance(value, bool):
        return str(key).lower() == str(value).lower()
    return str(key) == str(value)


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value
