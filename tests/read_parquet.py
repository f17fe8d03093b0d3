"""Reads refleet's Parquet reports with polars, pyarrow and DuckDB and prints,
per file and reader, the row count, the column names and the first row, as
JSON (tests/run compares them with the CSV files)."""
import json
import sys

import duckdb
import polars as pl
import pyarrow.parquet as pq

out = {}
for path in sys.argv[1:]:
    p = pl.read_parquet(path)
    a = pq.read_table(path)
    d = duckdb.sql(f"SELECT * FROM read_parquet('{path}')")
    d_rows = d.fetchall()
    out[path] = {
        "polars": {"rows": p.height, "columns": p.columns, "first": [str(v) for v in p.row(0)] if p.height else []},
        "pyarrow": {"rows": a.num_rows, "columns": a.column_names,
                     "first": [str(a.column(i)[0].as_py()) for i in range(a.num_columns)] if a.num_rows else []},
        "duckdb": {"rows": len(d_rows), "columns": d.columns, "first": [str(v) for v in d_rows[0]] if d_rows else []},
    }
print(json.dumps(out))
