"""Demo data and models for the quickstart, the example artifacts in models/ and the tests.

Everything is generated or bundled (scikit-learn's breast-cancer dataset, a synthetic corpus
of customer complaints), so nothing is downloaded and every run gives the same data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 7
KERAS_FEATURES = ["mean_radius", "mean_texture", "mean_smoothness", "worst_area", "worst_concavity"]

_SUBJECTS = [
    "the delivery",
    "customer support",
    "the refund",
    "the mobile app",
    "my invoice",
    "the technician",
    "the replacement part",
    "the checkout page",
]
_POSITIVE = [
    "was quick and friendly",
    "solved everything in minutes",
    "was great, thank you",
    "arrived early and works perfectly",
    "was easy and pleasant",
    "exceeded my expectations",
]
_NEGATIVE = [
    "never arrived",
    "was rude and unhelpful",
    "charged me twice",
    "crashed again and lost my data",
    "took six weeks and nobody answered",
    "was broken on arrival",
]
_NEUTRAL = [
    "I called on Monday.",
    "Order number is on file.",
    "This is my second message.",
    "Please see the attached photo.",
    "",
]


def cancer_frame() -> pd.DataFrame:
    """Breast-cancer features (float32, snake_case names), `id` key and `malignant` label."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X.columns = [c.replace(" ", "_") for c in X.columns]
    frame = X.astype("float32")
    frame.insert(0, "id", np.arange(len(frame), dtype=np.int64))
    frame["malignant"] = (y.to_numpy() == 0).astype(np.int64)  # sklearn: 0 = malignant
    return frame


def complaints_frame(n: int = 600, seed: int = SEED) -> pd.DataFrame:
    """Short customer messages with a `positive` label; ~15% of texts mix both tones."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        positive = int(rng.random() < 0.45)
        subject = _SUBJECTS[rng.integers(len(_SUBJECTS))]
        phrases = _POSITIVE if positive else _NEGATIVE
        text = f"{subject} {phrases[rng.integers(len(phrases))]}."
        if rng.random() < 0.15:  # a mixed message: harder to score
            other = _NEGATIVE if positive else _POSITIVE
            text += f" But {_SUBJECTS[rng.integers(len(_SUBJECTS))]} {other[rng.integers(6)]}."
        text = f"{_NEUTRAL[rng.integers(len(_NEUTRAL))]} {text}".strip().capitalize()
        rows.append((1000 + i, text, positive))
    return pd.DataFrame(rows, columns=["complaint_id", "text", "positive"])


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in ("id", "malignant")]


def train_cancer_classifier(frame: pd.DataFrame):
    """Gradient-boosted trees on the 30 breast-cancer features."""
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=SEED)
    return model.fit(frame[feature_columns(frame)], frame["malignant"])


def train_complaint_classifier(frame: pd.DataFrame):
    """TF-IDF + logistic regression: strings in, probability of a positive message out."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(C=5.0))
    return model.fit(frame["text"], frame["positive"])


def train_keras_classifier(frame: pd.DataFrame):
    """A small Keras network with one named input per feature (exported as a SavedModel)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(SEED)
    inputs = {c: keras.Input(shape=(1,), name=c) for c in KERAS_FEATURES}
    normalize = keras.layers.Normalization()
    normalize.adapt(frame[KERAS_FEATURES].to_numpy())
    x = normalize(keras.layers.Concatenate()(list(inputs.values())))
    x = keras.layers.Dense(16, activation="relu")(x)
    output = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, output)
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy")
    model.fit(keras_inputs(frame), frame["malignant"].to_numpy(), epochs=30, verbose=0)
    return model


def keras_inputs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: frame[[c]].to_numpy() for c in KERAS_FEATURES}


def export_keras(model, folder: Path) -> Path:
    model.export(str(folder), verbose=False)
    return folder
