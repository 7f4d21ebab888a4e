"""ML.TOP_K on 1M candidate rows vs the pandas way (fetch, predict_proba, groupby head(k)).

    python benchmarks/bench_top_k.py [--rows 1000000] [--users 10000] [--k 5] [--repeat 3]

Ratios are from one process (best of --repeat); nothing here passes or fails a test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

import sqlml

FEATURES = [f"f{i}" for i in range(8)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows, 8))
    y = (x @ rng.normal(size=8) + rng.normal(size=args.rows) > 0).astype(int)
    frame = pd.DataFrame(x, columns=FEATURES)
    model = LogisticRegression().fit(frame[:50_000], y[:50_000])
    db = sqlml.connect()
    db.register_model("ranker", model, label="y")
    db.con.register(
        "c", frame.assign(item_id=np.arange(args.rows), user_id=np.arange(args.rows) % args.users)
    )
    db.sql("CREATE TABLE candidates AS SELECT * FROM c")

    def sqlml_top_k(engine: str) -> pd.DataFrame:
        return db.sql(
            f"SELECT user_id, item_id, rank, score FROM ML.TOP_K(MODEL ranker, TABLE candidates, "
            f"STRUCT({args.k} AS k, 'user_id' AS partition_by, 'item_id' AS order_by, "
            f"'{engine}' AS engine))"
        ).df()

    def pandas_top_k() -> pd.DataFrame:
        df = db.con.sql("SELECT * FROM candidates").df()
        df["score"] = model.predict_proba(df[FEATURES])[:, 1]
        df = df.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True])
        return df.groupby("user_id").head(args.k)

    paths = {
        "sqlml ML.TOP_K (model compiled to SQL)": lambda: sqlml_top_k("auto"),
        "sqlml ML.TOP_K (engine='runtime': onnxruntime UDF)": lambda: sqlml_top_k("runtime"),
        "pandas: .df(), predict_proba, sort, groupby().head(k)": pandas_top_k,
    }
    best = {name: float("inf") for name in paths}
    results = {}
    for _ in range(args.repeat):
        for name, run in paths.items():
            start = time.perf_counter()
            results[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
    a = results["sqlml ML.TOP_K (model compiled to SQL)"].sort_values(["user_id", "rank"])
    b = results["pandas: .df(), predict_proba, sort, groupby().head(k)"]
    # sklearn scores in float64, the ONNX/SQL model with float32 weights: near-equal scores
    # can swap ranks, so compare each user's top-k set and the k-th score
    sets_a = a.groupby("user_id")["item_id"].apply(frozenset)
    sets_b = b.groupby("user_id")["item_id"].apply(frozenset)
    differing = int((sets_a != sets_b.reindex(sets_a.index)).sum())
    kth = np.abs(
        a.groupby("user_id")["score"].min().to_numpy()
        - b.groupby("user_id")["score"].min().to_numpy()
    ).max()
    baseline = best["pandas: .df(), predict_proba, sort, groupby().head(k)"]
    print(f"{args.rows:,} candidates, {args.users:,} users, k={args.k}, best of {args.repeat}")
    print("| path | seconds | rows/s | vs pandas |\n|---|---:|---:|---:|")
    for name, seconds in best.items():
        print(
            f"| {name} | {seconds:.2f} | {args.rows / seconds / 1e6:.2f} M | "
            f"{baseline / seconds:.2f}x |"
        )
    print(
        f"users whose top-{args.k} set differs from pandas: {differing} of {len(sets_a):,}; "
        f"max |k-th score difference| {kth:.1e}"
    )
    db.close()


if __name__ == "__main__":
    main()
