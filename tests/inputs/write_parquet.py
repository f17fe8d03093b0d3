"""Writes the Parquet inventories of tests/inputs/mod.rs into the folder given
as the first argument, each with the column types its writer produces from
database and Spark exports: decimals, maps, lists, structs, binary, UUIDs,
intervals, time-zone-aware timestamps, dates outside chrono's range.
Needs pyarrow, polars and duckdb (.ci/run installs them)."""
import datetime
import decimal
import os
import sys
import uuid

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

OUT = sys.argv[1]
D = decimal.Decimal
COMMON = {
    "serial_number": ["0004F2000001", "0004F2000002", "0004F2000003"],
    "mac_address": ["00:04:F2:00:00:01", "00:04:F2:00:00:02", "00:04:F2:00:00:03"],
    "model": ["VVX 450", "VVX 450", "VVX 450"],
    "contract_id": ["C-1", "C-1", "C-1"],
    "country": ["US", "US", "US"],
}
UUID = "e70b4461-6375-4669-b529-618ba1f8e4f2"

# pyarrow: the account id a decimal(20, 0), dates as date32 with one beyond
# chrono's range; unused decimals of every width, a map, a date32 at the
# bottom of its range. Row groups of two rows, so values span several.
pq.write_table(
    pa.table({
        **COMMON,
        "account_id": pa.array([D(1001), D(1002), D(1003)], pa.decimal128(20, 0)),
        "deactivated_at": pa.array([20362, 20363, 2147483647], pa.int32()).cast(pa.date32()),
        "price": pa.array([D("12.50"), D("-0.05"), None], pa.decimal128(10, 2)),
        "big": pa.array([D("12345678901234567890"), D(-1), D(0)], pa.decimal128(38, 0)),
        "wide": pa.array([D("-123456789012345678901234567890123456789012345.67"), D(0), D(1)], pa.decimal256(50, 2)),
        "tags": pa.array([[("a", "b")], [], None], pa.map_(pa.string(), pa.string())),
        "d": pa.array([-2147483648, 0, None], pa.int32()).cast(pa.date32()),
    }),
    os.path.join(OUT, "pyarrow.parquet"),
    row_group_size=2,
)

# Polars: the account id a decimal stored as INT64, the date a naive
# date-time; unused struct, list and binary columns.
pl.DataFrame({
    **COMMON,
    "account_id": pl.Series([D(1001), D(1002), D(1003)], dtype=pl.Decimal(12, 0)),
    "deactivated_at": [datetime.datetime(2026, 10, 1, 9, 30)] * 3,
    "price": pl.Series([D("12.50"), D("-0.05"), None], dtype=pl.Decimal(10, 2)),
    "st": [{"x": 1}, {"x": 2}, None],
    "lst": [[1, 2], [], None],
    "bin": [b"\x00\x01", b"", None],
}).write_parquet(os.path.join(OUT, "polars.parquet"))

# DuckDB: the account id a DECIMAL(18, 0), the date a TIMESTAMPTZ; unused
# MAP, UUID and INTERVAL columns.
duckdb.connect().execute(f"""
COPY (
  SELECT serial_number, mac_address, model, contract_id, country,
         account_id::DECIMAL(18, 0) AS account_id,
         TIMESTAMPTZ '2026-10-01 23:30:00+00' AS deactivated_at,
         price::DECIMAL(10, 2) AS price,
         MAP {{'a': 'b'}} AS tags,
         '{UUID}'::UUID AS u,
         INTERVAL 3 DAY AS iv
  FROM (VALUES
    ('0004F2000001', '00:04:F2:00:00:01', 'VVX 450', 'C-1', 'US', 1001, 12.50),
    ('0004F2000002', '00:04:F2:00:00:02', 'VVX 450', 'C-1', 'US', 1002, -0.05),
    ('0004F2000003', '00:04:F2:00:00:03', 'VVX 450', 'C-1', 'US', 1003, NULL)
  ) t(serial_number, mac_address, model, contract_id, country, account_id, price)
) TO '{os.path.join(OUT, "duckdb.parquet")}' (FORMAT parquet)
""")

# A column refleet reads, of a type with no text form.
pq.write_table(
    pa.table({
        **{k: v for k, v in COMMON.items() if k != "country"},
        "account_id": ["ACME-1"] * 3,
        "deactivated_at": ["2026-10-01"] * 3,
        "country": pa.array([[("iso", "US")]] * 3, pa.map_(pa.string(), pa.string())),
    }),
    os.path.join(OUT, "country_map.parquet"),
)
