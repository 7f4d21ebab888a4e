"""ML.PREDICT of scikit-learn pipelines ending in trees: sqlml's C tree walker vs onnxruntime.

In a pipeline (encoders, imputer or scaler, then a tree ensemble) the steps before the trees
run in onnxruntime and the trees on the walker (sqlml.runtimes.trees). This measures what that
buys over onnxruntime scoring the whole graph, in the same process on the same DuckDB table:

    python benchmarks/bench_tree_pipelines.py [--rows 1000000] [--repeat 3]

Data: two DOUBLE columns (5% NULL, read as NaN) and two VARCHAR categories, numpy seed 0;
models trained on the first 50,000 rows. Each path is `SELECT sum(...) FROM ML.PREDICT(...)`
(every row scored, nothing written) and `CREATE TABLE ... AS SELECT * FROM ML.PREDICT(...)`,
best of --repeat, interleaved. The onnxruntime path is the same registered model with its
walker switched off (what `SQLML_TREE_WALKER=0` does). Results: stdout and
benchmarks/results/tree-pipelines.md. Ratios only; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import sqlml

TRAIN_ROWS = 50_000
RESULTS = Path(__file__).parent / "results" / "tree-pipelines.md"


def customers(rows: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 12, rows),
            "spend": rng.gamma(2.0, 50.0, rows),
            "plan": rng.choice(["basic", "plus", "pro"], rows),
            "region": rng.choice(["north", "south", "east", "west"], rows),
        }
    )
    noise = rng.normal(0, 0.5, rows)
    score = (frame.age - 40) / 12 + (frame.plan == "plus") - (frame.spend - 100) / 70 + noise
    frame.loc[rng.random(rows) < 0.05, "spend"] = np.nan
    return frame, (score > 0).to_numpy().astype(int), score.to_numpy()


def pipelines() -> dict[str, tuple[object, bool]]:
    """name -> (unfitted pipeline, is a classifier)."""
    encode = make_column_transformer(
        (OneHotEncoder(), ["plan", "region"]), remainder=SimpleImputer()
    )
    return {
        "one-hot + imputer -> gradient boosting, 100 trees x depth 6": (
            make_pipeline(encode, GradientBoostingClassifier(max_depth=6, random_state=0)),
            True,
        ),
        "imputer -> HistGradientBoosting, 100 trees": (
            make_pipeline(SimpleImputer(), HistGradientBoostingClassifier(random_state=0)),
            True,
        ),
        "scaler -> random forest regressor, 30 trees x depth 10": (
            make_pipeline(
                StandardScaler(),
                RandomForestRegressor(n_estimators=30, max_depth=10, random_state=0),
            ),
            False,
        ),
    }


def seconds(db: sqlml.Database, statements: list[str]) -> float:
    """One timed run (the caller interleaves the paths and keeps each one's best)."""
    started = time.perf_counter()
    for statement in statements:
        db.sql(statement).fetchall()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    frame, labels, score = customers(args.rows)
    lines = [
        "# Pipelines ending in trees: the C tree walker vs onnxruntime",
        "",
        f"Command: `python benchmarks/bench_tree_pipelines.py --rows {args.rows} "
        f"--repeat {args.repeat}`",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, duckdb {duckdb.__version__}. {args.rows:,} rows "
        "(2 DOUBLE columns with 5% NULL, 2 VARCHAR categories), models trained on the first "
        f"{TRAIN_ROWS:,}. Best of {args.repeat}, interleaved, one process.",
        "",
        "| pipeline | path | ML.PREDICT -> sum | -> CREATE TABLE | max abs difference |",
        "|---|---|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory(prefix="sqlml-bench-") as folder:
        db = sqlml.connect(Path(folder) / "pipelines.duckdb")
        db.con.execute("CREATE TABLE customers AS SELECT * FROM frame")
        train = frame.iloc[:TRAIN_ROWS]
        for number, (name, (pipeline, classifier)) in enumerate(pipelines().items()):
            target = labels if classifier else score
            columns = list(train) if number == 0 else ["age", "spend"]  # categories: first only
            pipeline.fit(train[columns], target[:TRAIN_ROWS])
            model = f"pipeline_{number}"
            db.register_model(model, pipeline, nulls="nan", engine="runtime")
            runtime = db.runtime(db.model(model))
            walker = runtime.tree_scorer
            assert walker is not None, f"{name}: the walker did not take the trees"
            value = "probabilities[2]" if classifier else "variable"
            aggregate = f"SELECT sum({value}) FROM ML.PREDICT(MODEL {model}, TABLE customers)"
            create = [
                "DROP TABLE IF EXISTS scored",
                f"CREATE TABLE scored AS SELECT * FROM ML.PREDICT(MODEL {model}, TABLE customers)",
            ]
            sums, creates, outputs = {}, {}, {}
            for _ in range(args.repeat):
                for path, scorer in (("walker", walker), ("onnxruntime", None)):
                    runtime.tree_scorer = scorer
                    sums[path] = min(sums.get(path, np.inf), seconds(db, [aggregate]))
                    creates[path] = min(creates.get(path, np.inf), seconds(db, create))
                    outputs[path] = np.asarray(
                        [
                            r[0]
                            for r in db.sql(f"SELECT {value} FROM scored ORDER BY rowid").fetchall()
                        ],
                        dtype=np.float64,
                    )
            runtime.tree_scorer = walker
            difference = float(np.nanmax(np.abs(outputs["walker"] - outputs["onnxruntime"])))
            for path in ("walker", "onnxruntime"):
                ratio = sums["onnxruntime"] / sums[path]
                lines.append(
                    f"| {name} | {path} | {args.rows / sums[path] / 1e6:.2f} M rows/s "
                    f"({ratio:.2f}x) | {args.rows / creates[path] / 1e6:.2f} M rows/s "
                    f"({creates['onnxruntime'] / creates[path]:.2f}x) | "
                    f"{difference:.1e} |"
                )
            print(lines[-2], lines[-1], sep="\n", flush=True)
        db.close()
    lines += [
        "",
        "(ratios: onnxruntime's time over this path's. The difference column compares the "
        "probability of the second class, or the regression value, between the two paths on "
        "every row.)",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
