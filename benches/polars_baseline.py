#!/usr/bin/env python3
"""Python Polars reference pipeline that refleet's throughput is measured against.

    python3 benches/polars_baseline.py validate INVENTORY.csv
    python3 benches/polars_baseline.py quote INVENTORY.csv CONTRACTS.csv [--as-of YYYY-MM-DD]

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

`quote` (issue 3) is the same kind of reference for `refleet quote` (SPEC
sections 4 and 5): the validate flags above, then a left join with the
contracts, the eligibility rules that these columns can express, a count per
(contract, region, family) and a per-device price from the default price book
times the term multiplier, summed per (contract, region). It too does less
than refleet: floats instead of decimal money, no volume tiers, no per_term
flat fee, no licences, no reasons or alternatives per item, no header aliases
or country-name normalisation, and no report files. A cost reference, not a
second implementation.

Output: one engine line, then one result line, so the query cannot be
optimised away and the run can be sanity-checked against refleet's counts.
"""

from __future__ import annotations

import argparse
import datetime as dt
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


def with_identifier_flags(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Add the normalised `serial`, `mac`, `date` and the SPEC section 3 flags.

    Shared by `validate` and `quote`, so both apply the same checks.
    """
    raw_serial = pl.col("serial_number").str.strip_chars()
    serial = raw_serial.str.replace_all(r"[ \-]", "").str.to_uppercase()
    mac = pl.col("mac_address").str.strip_chars()
    date = pl.col("deactivated_at").str.strip_chars()

    # infer_schema=False reads every column as String; empty cells are null.
    # A row without a serial is a licence (or not a device) and is neither a
    # serial reject nor a duplicate; a device without a MAC is a headset or
    # similar and is fine. The date is required on every row.
    return lf.with_columns(
        is_device=raw_serial.is_not_null() & (raw_serial != ""),
        serial=serial,
        mac=mac,
        date=date,
    ).with_columns(
        mac_invalid=pl.col("mac").is_not_null()
        & (pl.col("mac") != "")
        & ~pl.col("mac").str.contains(MAC_RE).fill_null(False),
        serial_invalid=pl.col("is_device")
        & ~pl.col("serial").str.contains(SERIAL_RE).fill_null(False),
        date_invalid=~pl.col("date").str.contains(DATE_RE).fill_null(False),
        duplicate=pl.col("is_device") & ~pl.col("serial").is_first_distinct(),
    )


def validate_query(path: str) -> pl.LazyFrame:
    lf = (
        with_identifier_flags(pl.scan_csv(path, infer_schema=False))
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


# --- quote (SPEC sections 2.3, 4 and 5, built-in defaults) -------------------

# Country -> sales region for the countries refleet's generator and the sample
# data use; anything else is EMEA (a cost reference, not the policy).
REGION = {
    **dict.fromkeys(["US", "CA", "MX", "BR"], "AMER"),
    **dict.fromkeys(["GB", "DE", "FR", "NL", "ES", "SE", "AE", "SA", "IL", "ZA", "IR"], "EMEA"),
    **dict.fromkeys(["JP", "AU", "SG", "IN", "NZ"], "APAC"),
}
RESTRICTED = ["CU", "IR", "KP", "SY"]

# Catalog models marked eligible, with their end of support (None: none).
# Models marked not eligible (VVX 301.., RealPresence Group) are left out.
CATALOG: dict[str, tuple[str, dt.date | None]] = {
    **{f"VVX {m}": ("vvx", dt.date(2027, 12, 31)) for m in (150, 250, 350, 450)},
    **{f"CCX {m}": ("ccx", None) for m in (400, 500, 505, 600, 700)},
    **{f"Edge E{m}": ("edge", None) for m in (100, 220, 300, 350, 400, 450, 500, 550)},
    "Trio 8300": ("trio", dt.date(2026, 6, 30)),
    "Trio 8800": ("trio", dt.date(2026, 6, 30)),
    "Trio C60": ("trio", None),
    **{f"Studio {m}": ("studio", None) for m in ("X30", "X50", "X52", "X70", "R30", "USB")},
    "G7500": ("gseries", None),
    **{f"Sync {m}": ("sync", None) for m in (20, 40, 60)},
    **{m: ("headset", None) for m in ("Voyager Focus 2", "Voyager 4320", "Savi 7320")},
}

# Per device per 12-month term: (standard, extended).
PRICE_BOOK = {
    "vvx": (19.00, 29.00),
    "ccx": (24.00, 36.00),
    "edge": (19.00, 29.00),
    "trio": (79.00, 119.00),
    "studio": (149.00, 219.00),
    "gseries": (199.00, 289.00),
    "group": (199.00, 289.00),
    "sync": (9.00, 14.00),
    "headset": (9.00, 14.00),
}
TERM_MULTIPLIER = {"12": 1.00, "24": 1.85, "36": 2.60}
TRUE = ["true", "yes", "1"]
FALSE_OR_EMPTY = ["false", "no", "0", ""]


def model_families(as_of: dt.date) -> dict[str, str]:
    """Lower-cased eligible model name -> family, as of `as_of`."""
    return {
        model.lower(): family
        for model, (family, end_of_support) in CATALOG.items()
        if end_of_support is None or end_of_support >= as_of
    }


def contracts_query(path: str, as_of: dt.date) -> pl.LazyFrame:
    """Per-contract columns of the eligibility rules, decided once per contract."""
    text = lambda c: pl.col(c).str.strip_chars()  # noqa: E731
    lower = lambda c: text(c).str.to_lowercase()  # noqa: E731
    start = text("start_date").str.to_date("%Y-%m-%d", strict=False)
    end = text("end_date").str.to_date("%Y-%m-%d", strict=False)
    return pl.scan_csv(path, infer_schema=False).select(
        contract_id=text("contract_id"),
        c_account=text("account_id"),
        # Status and dates, and reactivation coverage: every rule that does
        # not depend on the device.
        c_ok=(lower("status") == "active")
        & (start <= as_of)
        & (as_of <= end)
        & lower("covers_reactivation").is_in(TRUE),
        coverage=lower("coverage"),
        home_region=text("home_country")
        .str.to_uppercase()
        .replace_strict(REGION, default="EMEA"),
        term_months=text("term_months"),
        c_found=pl.lit(True),
    )


def quote_query(inventory: str, contracts: str, as_of: dt.date) -> pl.LazyFrame:
    """One row per (contract_id, region, family, coverage, term) with counts."""
    text = lambda c: pl.col(c).str.strip_chars()  # noqa: E731
    lower = lambda c: text(c).str.to_lowercase()  # noqa: E731
    families = model_families(as_of)

    inv = (
        with_identifier_flags(pl.scan_csv(inventory, infer_schema=False))
        .with_columns(
            contract_id=text("contract_id"),
            country=text("country").str.to_uppercase(),
            family=lower("model").replace_strict(families, default=None),
        )
        .with_columns(
            region=pl.col("country").replace_strict(REGION, default="EMEA"),
        )
    )
    # Left join: a device whose contract is missing stays, with null contract
    # columns, and is CONTRACT_NOT_FOUND below.
    joined = inv.join(contracts_query(contracts, as_of), on="contract_id", how="left")

    valid = ~pl.any_horizontal("mac_invalid", "serial_invalid", "date_invalid", "duplicate")
    eligible = (
        valid
        & pl.col("is_device")
        & pl.col("family").is_not_null()  # MODEL_UNKNOWN / NOT_ELIGIBLE / END_OF_SUPPORT
        & pl.col("c_found").fill_null(False)  # CONTRACT_NOT_FOUND
        & pl.col("c_ok").fill_null(False)  # CONTRACT_EXPIRED/SUSPENDED/NOT_STARTED, NO_REACTIVATION_COVERAGE
        & (text("account_id") == pl.col("c_account")).fill_null(False)  # CONTRACT_ACCOUNT_MISMATCH
        & ((pl.col("coverage") != "standard") | (pl.col("region") == pl.col("home_region")))
        .fill_null(False)  # REGION_NOT_COVERED
        & ~pl.col("country").is_in(RESTRICTED).fill_null(False)  # REGION_RESTRICTED
        & lower("repair_status").fill_null("").is_in(["none", ""])  # REPAIR_PENDING
        & lower("reported_lost").fill_null("").is_in(FALSE_OR_EMPTY)  # REPORTED_LOST
        & (lower("deactivation_reason") != "security_lock").fill_null(True)  # MANUAL_REVIEW
    )
    # Every row is counted (so the total is known without a second scan);
    # `eligible` counts the ones that reach a quote. coverage and term_months
    # depend on contract_id only, so they do not split a quote.
    return (
        joined.with_columns(eligible=eligible)
        .group_by("contract_id", "region", "family", "coverage", "term_months")
        .agg(n=pl.len(), eligible=pl.col("eligible").sum())
    )


def quote(args: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="polars_baseline.py quote")
    ap.add_argument("inventory")
    ap.add_argument("contracts")
    ap.add_argument(
        "--as-of",
        type=dt.date.fromisoformat,
        default=dt.datetime.now(dt.timezone.utc).date(),
        help="evaluate as of this date (YYYY-MM-DD); default today, UTC",
    )
    ns = ap.parse_args(args)
    for path in (ns.inventory, ns.contracts):
        if not os.path.exists(path):
            sys.exit(f"polars_baseline: no such file: {path}")
    engine = "streaming" if streaming_supported() else "auto"
    print(
        f"engine={engine} polars={pl.__version__} "
        f"threads={pl.thread_pool_size()}",
        flush=True,
    )

    t0 = time.perf_counter()
    lf = quote_query(ns.inventory, ns.contracts, ns.as_of)
    groups = lf.collect(engine="streaming") if engine == "streaming" else lf.collect()

    prices = pl.DataFrame(
        {
            "family": list(PRICE_BOOK) * 2,
            "coverage": ["standard"] * len(PRICE_BOOK) + ["extended"] * len(PRICE_BOOK),
            "unit": [p[0] for p in PRICE_BOOK.values()] + [p[1] for p in PRICE_BOOK.values()],
        }
    )
    quotes = (
        groups.lazy()
        .filter(pl.col("eligible") > 0)
        .join(prices.lazy(), on=["family", "coverage"], how="left")
        .with_columns(
            amount=pl.col("eligible")
            * pl.col("unit")
            * pl.col("term_months").replace_strict(TERM_MULTIPLIER, default=None, return_dtype=pl.Float64)
        )
        .group_by("contract_id", "region")
        .agg(devices=pl.col("eligible").sum(), amount=pl.col("amount").sum())
        .collect()
    )
    secs = time.perf_counter() - t0

    rows = int(groups["n"].sum())
    eligible = int(groups["eligible"].sum())
    print(
        f"rows={rows} eligible={eligible} not_eligible={rows - eligible} "
        f"quotes={quotes.height} total={quotes['amount'].sum():.2f} "
        f"as_of={ns.as_of.isoformat()} query_s={secs:.3f}"
    )


def main(argv: list[str]) -> None:
    usage = (
        "usage: polars_baseline.py validate INVENTORY.csv"
        " | quote INVENTORY.csv CONTRACTS.csv [--as-of YYYY-MM-DD]"
    )
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
