"""Where ML.PREDICT's time goes: per-call stages of the model function, and per-query costs.

    python benchmarks/profile_predict.py [--rows 2000000] [--model gbdt|logistic]

Part 1 times one 2048-row call (what DuckDB hands the function) stage by stage, on one
thread: Arrow -> numpy inputs, the runtime, numpy -> Arrow struct. Part 2 runs whole queries
over the table and reports wall and CPU seconds (all threads), with the model swapped for a
function returning a precomputed result, to separate DuckDB's costs (scan, UDF plumbing,
table write) from the model's. Same data and models as bench_predict.py.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import os
import sys
import tempfile
import time
import timeit

import pandas as pd
import pyarrow as pa
from bench_predict import FEATURES, TRAIN_ROWS, make_data
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

import sqlml


def per_call(function, batch: list[pa.Array], number: int) -> None:
    runtime = function.runtime
    inputs = {p.name: p.to_numpy(a, "") for p, a in zip(function._inputs, batch)}
    outputs = runtime.predict(inputs)
    stages = {
        "inputs: Arrow -> numpy": lambda: {
            p.name: p.to_numpy(a, "") for p, a in zip(function._inputs, batch)
        },
        "runtime.predict": lambda: runtime.predict(inputs),
        "outputs: numpy -> Arrow struct": lambda: function.to_struct(outputs, len(batch[0])),
        "whole call (predict_arrow)": lambda: function.predict_arrow(batch),
    }
    print(f"\nPer call, {len(batch[0])} rows, one thread (best of 5 x {number}):")
    for label, fn in stages.items():
        seconds = min(timeit.repeat(fn, number=number, repeat=5)) / number
        print(f"  {label:34} {seconds * 1e6:9.1f} us")


def per_query(db, function, name: str, rows: int) -> None:
    con = db.con
    columns = ", ".join(FEATURES)
    sample = con.sql(f"SELECT * FROM features LIMIT {8 * 2048}").to_arrow_table()
    results = [
        function.predict_arrow([c.combine_chunks() for c in sample.slice(i, 2048).columns])
        for i in range(0, 8 * 2048, 2048)
    ]
    cycle = itertools.cycle(results)

    def precomputed(*batch):
        result = next(cycle)
        return result if len(batch[0]) == 2048 else result.slice(0, len(batch[0]))

    precomputed.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(f"x{i}", inspect.Parameter.POSITIONAL_ONLY) for i in FEATURES]
    )
    con.create_function(
        "precomputed",
        precomputed,
        function.parameter_types,
        function.layout.duckdb_type(),
        type="arrow",
        null_handling="special",
        side_effects=True,
    )

    def predict(fn: str) -> str:
        return f"SELECT * EXCLUDE (s), s.* FROM (SELECT *, {fn}({columns}) AS s FROM features)"

    stub = predict("precomputed")
    queries = {
        "scan only": "SELECT sum(f0 + f1 + f2 + f3 + f4 + f5 + f6 + f7) FROM features",
        "precomputed function, aggregated": f"SELECT sum(predicted_y) FROM ({stub})",
        "precomputed function, CREATE TABLE": f"CREATE OR REPLACE TABLE p AS {stub}",
        "model, aggregated": f"SELECT sum(predicted_y) FROM ({predict(name)})",
        "model, CREATE TABLE": f"CREATE OR REPLACE TABLE p AS {predict(name)}",
        "copy of the scored table": "CREATE OR REPLACE TABLE q AS FROM p",
    }
    print(f"\nPer query over {rows:,} rows (best of 3; CPU = all threads of this process):")
    for label, sql in queries.items():
        runs = []
        for _ in range(3):
            cpu, start = time.process_time(), time.perf_counter()
            con.execute(sql).fetchall()
            runs.append((time.perf_counter() - start, time.process_time() - cpu))
        wall, cpu = min(runs)
        print(
            f"  {label:36} wall {wall:6.2f} s  cpu {cpu:6.2f} s  {rows / wall / 1e6:6.2f} Mrows/s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--model", choices=["gbdt", "logistic"], default="gbdt")
    args = parser.parse_args(argv)
    x, y = make_data(args.rows)
    estimator = (
        GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0)
        if args.model == "gbdt"
        else LogisticRegression(max_iter=1000)
    )
    estimator.fit(pd.DataFrame(x[:TRAIN_ROWS], columns=FEATURES), y[:TRAIN_ROWS])
    with tempfile.TemporaryDirectory(prefix="sqlml-profile-") as tmp:
        db = sqlml.connect(os.path.join(tmp, "profile.duckdb"))
        db.register_model("m", estimator, label="y")
        db.con.register(
            "arrow", pa.table({f: x[:, i].astype("float64") for i, f in enumerate(FEATURES)})
        )
        db.con.execute("CREATE TABLE features AS FROM arrow")
        db.con.execute("CHECKPOINT")
        _, function = db._functions["m"]
        batch = [
            c.combine_chunks()
            for c in db.con.sql("FROM features LIMIT 2048").to_arrow_table().columns
        ]
        per_call(function, batch, number=20 if args.model == "gbdt" else 500)
        per_query(db, function, "m", args.rows)
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
