#!/usr/bin/env python3
"""Python Polars reference pipeline that refleet's throughput is measured against.

    python3 benches/polars_baseline.py validate INVENTORY.csv
    python3 benches/polars_baseline.py quote ...      (not written yet: issue 3)

`validate` is the idiomatic fast Polars version of refleet's identifier checks
(SPEC section 3), trimmed to what a data engineer would write for the same
question: scan the CSV as strings, regex-check MAC, serial and date, flag
repeated serials, count rows per (country, reject flags), collect.  It is run
under `/usr/bin/time -v` by benches/throughput.sh, so the whole process
(interpreter start and `import polars` included) is what gets measured, as
it is for refleet.

It deliberately does less than refleet (no header aliases, no country, OUI,
licence-id or MAC/license duplicate checks, no reject report written), which
makes the comparison conservative for refleet, never flattering.

Output: one engine line, then one result line, so the query cannot be
optimised away and the run can be sanity-checked against refleet's counts.
"""

from __future__ import annotations

import os
import sys
import time

import polars as pl

HEX = "[0-9A-Fa-f]"
# 12 hex digits as 00:04:f2:ab:cd:ef, 00-04-F2-AB-CD-EF, 0004.f2ab.cdef or
# 0004F2ABCDEF. Separators may not be mixed, as in refleet's parser.
MAC_RE = (
    f"^(?:{HEX}{{2}}(?::{HEX}{{2}}){{5}}"
    f"|{HEX}{{2}}(?:-{HEX}{{2}}){{5}}"
    f"|{HEX}{{4}}(?:\\.{HEX}{{4}}){{2}}"
    f"|{HEX}{{12}})$"
)
SERIAL_RE = "^[A-Z0-9]{8,20}$"
# ISO 8601 date, optionally followed by a time part and an offset. Explicit
# [0-9] rather than \d: Rust's regex (and so Polars') makes \d Unicode-aware.
DATE_RE = (
    "^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    "(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?$"
)


def streaming_supported() -> bool:
    """True when `LazyFrame.collect(engine="streaming")` exists (polars >= 1.23)."""
    try:
        import typing

        from polars._typing import EngineType

        def literals(tp: object) -> set[str]:
            args = typing.get_args(tp)
            if not args:
                return set()
            out = {a for a in args if isinstance(a, str)}
            for a in args:
                out |= literals(a)
            return out

        return "streaming" in literals(EngineType)
    except Exception:
        # Private module moved: fall back to the release that introduced it.
        parts = pl.__version__.split(".")
        try:
            return (int(parts[0]), int(parts[1])) >= (1, 23)
        except (ValueError, IndexError):
            return False


def validate_query(path: str) -> pl.LazyFrame:
    raw_serial = pl.col("serial_number").str.strip_chars()
    serial = raw_serial.str.replace_all(r"[ \-]", "").str.to_uppercase()
    mac = pl.col("mac_address").str.strip_chars()
    date = pl.col("deactivated_at").str.strip_chars()

    # infer_schema=False reads every column as String; empty cells are null.
    # A row without a serial is a licence (or not a device) and is neither a
    # serial reject nor a duplicate; a device without a MAC is a headset or
    # similar and is fine. The date is required on every row.
    lf = (
        pl.scan_csv(path, infer_schema=False)
        .with_columns(
            is_device=raw_serial.is_not_null() & (raw_serial != ""),
            serial=serial,
            mac=mac,
            date=date,
        )
        .with_columns(
            mac_invalid=pl.col("mac").is_not_null()
            & (pl.col("mac") != "")
            & ~pl.col("mac").str.contains(MAC_RE).fill_null(False),
            serial_invalid=pl.col("is_device")
            & ~pl.col("serial").str.contains(SERIAL_RE).fill_null(False),
            date_invalid=~pl.col("date").str.contains(DATE_RE).fill_null(False),
            duplicate=pl.col("is_device") & ~pl.col("serial").is_first_distinct(),
        )
        .group_by("country", "mac_invalid", "serial_invalid", "date_invalid", "duplicate")
        .agg(pl.len().alias("n"))
    )
    return lf


def validate(path: str) -> None:
    if not os.path.exists(path):
        sys.exit(f"polars_baseline: no such file: {path}")
    engine = "streaming" if streaming_supported() else "auto"
    print(
        f"engine={engine} polars={pl.__version__} "
        f"threads={pl.thread_pool_size()}",
        flush=True,
    )

    t0 = time.perf_counter()
    lf = validate_query(path)
    groups = lf.collect(engine="streaming") if engine == "streaming" else lf.collect()
    secs = time.perf_counter() - t0

    flags = ["mac_invalid", "serial_invalid", "date_invalid", "duplicate"]
    bad = pl.any_horizontal(flags)
    summary = groups.select(
        rows=pl.col("n").sum(),
        invalid=pl.col("n").filter(bad).sum(),
        **{f: pl.col("n").filter(pl.col(f)).sum() for f in flags},
    ).row(0, named=True)
    valid = summary["rows"] - summary["invalid"]
    print(
        f"rows={summary['rows']} valid={valid} invalid={summary['invalid']} "
        f"groups={groups.height} countries={groups['country'].n_unique()} "
        f"mac_invalid={summary['mac_invalid']} serial_invalid={summary['serial_invalid']} "
        f"date_invalid={summary['date_invalid']} duplicate={summary['duplicate']} "
        f"query_s={secs:.3f}"
    )


def quote(_args: list[str]) -> None:
    raise NotImplementedError("issue 3")


def main(argv: list[str]) -> None:
    usage = "usage: polars_baseline.py validate INVENTORY.csv | quote ..."
    if len(argv) < 2:
        sys.exit(usage)
    cmd, args = argv[1], argv[2:]
    if cmd == "validate" and len(args) == 1:
        validate(args[0])
    elif cmd == "quote":
        quote(args)
    else:
        sys.exit(usage)


if __name__ == "__main__":
    main(sys.argv)
