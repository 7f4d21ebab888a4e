"""Peak memory of scoring a big DuckDB table into a new table, measured in a fresh process.

    python benchmarks/bench_memory.py --db FILE --model lr --job sqlml [--engine runtime]
        [--memory-limit 1GB]
    python benchmarks/bench_memory.py --db FILE --model lr --job pandas --onnx MATRIX.onnx
    python benchmarks/bench_memory.py --db FILE --job copy

`run_all.py` builds the database (a table `big` with `id` and f0..f7, the model registered under
`--model`) and runs this once per job, so each job's peak resident set size is its own:

- sqlml: `CREATE TABLE out AS SELECT id, predicted_y, predicted_y_probs[2].prob AS probability
  FROM ML.PREDICT(MODEL m, TABLE big)` (with `--engine runtime`: `STRUCT('runtime' AS engine)`,
  the Arrow UDF even for a model sqlml compiled to SQL);
- pandas: what a user does by hand: `.df()` the whole table, onnxruntime (every core) on a
  float32 matrix, `con.register` the frame and `CREATE TABLE out AS SELECT id, predicted_y,
  probability FROM frame`;
- copy: DuckDB alone, the floor of any job here: the same scan of `big` (every feature read)
  and three columns of the same types written (`CREATE TABLE out AS SELECT id, (s > 0)::BIGINT
  AS predicted_y, s AS probability FROM (SELECT id, f0 + ... + f7 AS s FROM big)`), no model.

Prints one JSON line: peak RSS (VmHWM of /proc/self/status: the kernel's high-water mark of
this process's memory; not getrusage's ru_maxrss, which Linux carries over from the forking
parent across exec), RSS just before the job (after imports and connecting), rows written,
seconds and the DuckDB settings in force.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

FEATURES = [f"f{i}" for i in range(8)]
CHUNK = 65_536


def status_mb(field: str) -> float:
    """A /proc/self/status memory field (VmRSS: now, VmHWM: peak), in MB (10**6 bytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def run_sqlml(con, db, model: str, table: str, engine: str) -> None:
    options = f", STRUCT('{engine}' AS engine)" if engine != "auto" else ""
    db.sql(
        "CREATE OR REPLACE TABLE out AS SELECT id, predicted_y, predicted_y_probs[2].prob AS "
        f"probability FROM ML.PREDICT(MODEL {model}, TABLE {table}{options})"
    )


def runs_as(db, model: str, engine: str) -> str:
    """'sql' when ML.PREDICT inlines the model as SQL, else 'udf' (the Arrow UDF)."""
    lookup = getattr(db, "sql_form", None)
    form = lookup(model) if lookup is not None else None
    return "sql" if engine != "runtime" and form is not None and form.compiled else "udf"


def run_pandas(con, onnx_path: str, table: str) -> None:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    df = con.sql(f"SELECT * FROM {table}").df()
    x = df[FEATURES].to_numpy(np.float32)
    labels, probs = [], []
    for start in range(0, len(x), CHUNK):
        label, p = session.run(None, {"X": x[start : start + CHUNK]})
        labels.append(label)
        probs.append(p[:, 1].astype(np.float64))
    df["predicted_y"] = np.concatenate(labels)
    df["probability"] = np.concatenate(probs)
    con.register("scored_frame", df)
    con.execute(
        "CREATE OR REPLACE TABLE out AS SELECT id, predicted_y, probability FROM scored_frame"
    )
    con.unregister("scored_frame")


def run_copy(con, table: str) -> None:
    total = " + ".join(FEATURES)
    con.execute(
        "CREATE OR REPLACE TABLE out AS SELECT id, (s > 0)::BIGINT AS predicted_y, "
        f"s AS probability FROM (SELECT id, {total} AS s FROM {table})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--model", default="lr")
    parser.add_argument("--table", default="big")
    parser.add_argument("--job", choices=["sqlml", "pandas", "copy"], required=True)
    parser.add_argument("--onnx", help="matrix-input ONNX file of the model (pandas job)")
    parser.add_argument(
        "--engine",
        choices=["auto", "runtime"],
        default="auto",
        help="sqlml job: ML.PREDICT's engine ('runtime' forces the Arrow UDF)",
    )
    parser.add_argument("--memory-limit", help="DuckDB memory_limit, e.g. 1GB (default: DuckDB's)")
    args = parser.parse_args(argv)

    import sqlml

    db = sqlml.connect(args.db)
    con = db.con
    if args.memory_limit:
        con.execute(f"SET memory_limit = '{args.memory_limit}'")
    settings = dict(
        con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('memory_limit', 'threads', 'preserve_insertion_order', 'temp_directory')"
        ).fetchall()
    )
    before = status_mb("VmRSS")
    start = time.perf_counter()
    if args.job == "sqlml":
        run_sqlml(con, db, args.model, args.table, args.engine)
    elif args.job == "copy":
        run_copy(con, args.table)
    else:
        if not args.onnx:
            parser.error("--job pandas needs --onnx")
        run_pandas(con, args.onnx, args.table)
    seconds = time.perf_counter() - start
    rows = con.execute("SELECT count(*) FROM out").fetchone()[0]
    peak = status_mb("VmHWM")
    used = runs_as(db, args.model, args.engine) if args.job == "sqlml" else args.job
    con.execute("DROP TABLE out")
    db.close()
    print(
        json.dumps(
            {
                "job": args.job,
                "runs_as": used,
                "model": args.model,
                "rows": rows,
                "seconds": seconds,
                "peak_rss_mb": peak,
                "rss_before_mb": before,
                "settings": settings,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
