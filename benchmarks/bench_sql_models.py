"""ML.PREDICT of models compiled to SQL against the same models through the Arrow function.

For a logistic regression and small tree models on N rows x 8 float features (same process,
same data, best of --repeat), rows/s of:

- `sql`: ML.PREDICT with STRUCT('sql' AS engine) (the staged plan, inlined; the default),
- `macro`: the stored macro as a scalar, `SELECT sqlml."m@1"(x0, ...)` (what the DuckDB shell
  runs),
- `runtime`: ML.PREDICT with STRUCT('runtime' AS engine) (onnxruntime in the Arrow function),

each query consuming every output column. `--sweep` adds ensembles of growing size, the data
behind sqlml.sqlmodel.MAX_TREE_NODES.

    .venv/bin/python benchmarks/bench_sql_models.py --rows 2000000 --repeat 3 [--sweep]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

import sqlml
from sqlml import sqlmodel

FEATURES = [f"x{i}" for i in range(8)]


def models(sweep: bool) -> dict[str, object]:
    chosen = {
        "logistic regression (scaler + LR)": make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=1000)
        ),
        "decision tree, depth 6": DecisionTreeClassifier(max_depth=6, random_state=0),
        "random forest, 5 trees x depth 4": RandomForestClassifier(
            n_estimators=5, max_depth=4, random_state=0
        ),
    }
    if sweep:
        for trees in (10, 20, 40, 80):
            chosen[f"gradient boosting, {trees} trees x depth 3"] = GradientBoostingClassifier(
                n_estimators=trees, max_depth=3, random_state=0
            )
    return chosen


def best_of(db: sqlml.Database, sql: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        db.sql(sql).fetchall()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sweep", action="store_true", help="also larger tree ensembles")
    args = parser.parse_args()
    if args.sweep:  # compile past the default budget, to see where SQL stops paying off
        sqlmodel.MAX_TREE_NODES = 100_000

    X, y = make_classification(
        n_samples=5000, n_features=8, n_informative=5, random_state=0
    )  # binary: predicted_y and its probabilities
    frame = pd.DataFrame(X.astype(np.float32), columns=FEATURES)
    db = sqlml.connect(threads=args.threads)
    columns = ", ".join(f"(random() * 4 - 2)::FLOAT AS {c}" for c in FEATURES)
    db.sql(f"CREATE TABLE t AS SELECT {columns} FROM range({args.rows})")
    consume = (
        "SELECT sum(label), sum(probabilities[2]), sum(predicted_y), "
        "sum(predicted_y_probs[2].prob) FROM "
    )
    print(f"{args.rows:,} rows x {len(FEATURES)} features, best of {args.repeat}\n")
    print("| model | tree nodes | ML.PREDICT sql | macro (scalar) | runtime (Arrow UDF) "
          "| sql / runtime |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for i, (title, model) in enumerate(models(args.sweep).items()):
        name = f"m{i}"
        model.fit(frame, y)
        db.register_model(name, model, label="y")
        form = db.sql_form(name)
        if form is None or not form.compiled:
            print(f"| {title} | - | not compiled: {form.reason if form else '?'} | | | |")
            continue
        arguments = ", ".join(FEATURES)
        timings = {
            engine: best_of(
                db,
                consume + f"ML.PREDICT(MODEL {name}, TABLE t, STRUCT('{engine}' AS engine))",
                args.repeat,
            )
            for engine in ("sql", "runtime")
        }
        timings["macro"] = best_of(
            db,
            consume + f'(SELECT r.* FROM (SELECT sqlml."{name}@1"({arguments}) AS r FROM t))',
            args.repeat,
        )
        rate = {k: args.rows / v / 1e6 for k, v in timings.items()}
        print(
            f"| {title} | {form.tree_nodes} | {rate['sql']:.1f} M rows/s "
            f"| {rate['macro']:.1f} M rows/s | {rate['runtime']:.1f} M rows/s "
            f"| **{timings['runtime'] / timings['sql']:.1f}x** |"
        )
    db.close()


if __name__ == "__main__":
    main()
