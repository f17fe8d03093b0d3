//! Real-world inputs through `refleet validate`: every applicable code on a
//! rejected row, records over `--max-record-bytes`, Parquet files of any
//! column type written by pyarrow, Polars and DuckDB. Inputs are generated
//! here, small.

use std::path::Path;

use super::{parquet_python, rejects, rj, validate};

const HEADER: &str =
    "serial_number,mac_address,model,account_id,contract_id,country,deactivated_at";

/// A valid desk phone row: its serial is its MAC's 12 hex digits.
fn phone(n: u32) -> String {
    format!(
        "0004F2{n:06X},00:04:F2:{:02X}:{:02X}:{:02X},VVX 450,ACME-1,C-1,US,2026-10-01",
        n >> 16,
        (n >> 8) & 0xFF,
        n & 0xFF
    )
}

/// The first column of each line of `valid.csv` (the row numbers).
fn valid_rows(out: &Path) -> Vec<u64> {
    let mut r = csv::Reader::from_path(out.join("valid.csv")).expect("valid.csv");
    r.records()
        .map(|rec| rec.unwrap()[0].parse().unwrap())
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn assert_ok(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A row whose serial repeats an earlier valid row's and does not match
/// its MAC gets both codes; one rejected for its country that repeats a
/// MAC gets both; a rejected row's own serial and MAC do not make the
/// later rows that carry them duplicates.
#[test]
fn a_rejected_row_gets_every_code_that_applies() {
    let dir = tempfile::tempdir().unwrap();
    let csv = [
        HEADER.to_string(),
        phone(1),
        // Serial of row 1, another MAC.
        "0004F2000001,00:04:F2:00:00:02,VVX 450,ACME-1,C-1,US,2026-10-01".into(),
        // MAC of row 1, an unknown country, a serial that is not its MAC.
        "0004F2000003,00:04:F2:00:00:01,VVX 450,ACME-1,C-1,Atlantis,2026-10-01".into(),
        // Rejected (serial is not its MAC): neither is recorded...
        "0004F2000004,00:04:F2:00:00:05,VVX 450,ACME-1,C-1,US,2026-10-01".into(),
        // ...so these rows are the first valid ones with them.
        phone(4),
        phone(5),
    ]
    .join("\n");
    let input = write(dir.path(), "inventory.csv", csv.as_bytes());
    let (out, output) = validate(&input, &["--emit-valid"]);
    assert_ok(&output);
    assert_eq!(
        rejects(&out.path().join("rejects.csv")),
        vec![
            rj(2, "serial_number", "SERIAL_MAC_MISMATCH"),
            rj(2, "serial_number", "DUPLICATE_SERIAL"),
            rj(3, "country", "COUNTRY_INVALID"),
            rj(3, "serial_number", "SERIAL_MAC_MISMATCH"),
            rj(3, "mac_address", "DUPLICATE_MAC"),
            rj(4, "serial_number", "SERIAL_MAC_MISMATCH"),
        ]
    );
    assert_eq!(valid_rows(out.path()), [1, 5, 6]);
}

/// The inventory of `rows` valid phones, with `oversize` in place of row
/// `at` (1-based).
fn with_oversize(rows: u32, at: u32, oversize: &str) -> String {
    let mut text = format!("{HEADER}\n");
    for n in 1..=rows {
        if n == at {
            text.push_str(oversize);
        } else {
            text.push_str(&phone(n));
            text.push('\n');
        }
    }
    text
}

/// A record over `--max-record-bytes` is one reject at its row, and every
/// later row keeps its number: an unquoted line, a quoted field of 70,000
/// lines, either at the end of the file, plain or gzip.
#[test]
fn a_record_over_the_cap_keeps_every_later_row_number() {
    let dir = tempfile::tempdir().unwrap();
    let long = "z".repeat(70_000);
    let many_lines: String = (0..70_000).map(|i| format!("note {i}\n")).collect();
    let unquoted =
        format!("0004F2000002,00:04:F2:00:00:02,VVX 450,ACME-1,C-1,US,2026-10-01,{long}\n");
    let quoted = format!("0004F2000002,00:04:F2:00:00:02,VVX 450,ACME-1,C-1,US,\"{many_lines}\"\n");
    for (name, text, at, rows) in [
        ("unquoted.csv", with_oversize(5, 2, &unquoted), 2, 5),
        ("quoted.csv", with_oversize(5, 2, &quoted), 2, 5),
        (
            "unquoted_last.csv",
            with_oversize(3, 3, unquoted.trim_end()),
            3,
            3,
        ),
        ("quoted_last.csv", with_oversize(3, 3, &quoted), 3, 3),
    ] {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
        let gzip = gz.finish().unwrap();
        for (file, bytes) in [
            (name.to_string(), text.as_bytes()),
            (format!("{name}.gz"), &gzip[..]),
        ] {
            let input = write(dir.path(), &file, bytes);
            let (out, output) = validate(&input, &["--emit-valid", "--max-record-bytes", "1024"]);
            assert_ok(&output);
            assert_eq!(
                rejects(&out.path().join("rejects.csv")),
                vec![rj(at, "", "RECORD_TOO_LARGE")],
                "{file}"
            );
            let valid: Vec<u64> = (1..=rows).filter(|&r| r != at).collect();
            assert_eq!(valid_rows(out.path()), valid, "{file}");
        }
    }
}

/// `valid.csv` as (header, cells) per row.
fn valid_table(out: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(out.join("valid.csv")).expect("valid.csv");
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// The cells of `column` of `valid.csv`, in row order.
fn cells(table: &[std::collections::HashMap<String, String>], column: &str) -> Vec<String> {
    table
        .iter()
        .map(|row| {
            row.get(column)
                .cloned()
                .unwrap_or_else(|| panic!("no column {column}"))
        })
        .collect()
}

/// Parquet files as pyarrow, Polars and DuckDB write database and Spark
/// exports: a column refleet reads that is a decimal, an integer or a
/// date-time becomes its text; a date outside chrono's range rejects its
/// row; an unknown decimal, date or UUID column is carried as text; an
/// unknown map, list, struct, binary or interval column is left out with a
/// warning naming it; one refleet reads with no text form is a usage error
/// naming it. None panics, with or without carried columns.
#[test]
#[cfg_attr(
    no_python_readers,
    ignore = "needs a Python with polars, pyarrow and duckdb (REFLEET_PYTHON); runs in CI"
)]
fn parquet_columns_of_any_type_from_pyarrow_polars_and_duckdb() {
    let Some(python) = parquet_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inputs/write_parquet.py");
    let written = std::process::Command::new(python)
        .arg(script)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let file = |name: &str| dir.path().join(name);

    for name in ["pyarrow.parquet", "polars.parquet", "duckdb.parquet"] {
        // Without carried columns the unknown ones are not even decoded.
        let (_out, output) = validate(&file(name), &[]);
        assert_ok(&output);
    }

    let (out, output) = validate(&file("pyarrow.parquet"), &["--emit-valid"]);
    assert_ok(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("column `tags` holds map values"),
        "{stderr}"
    );
    let mut r = csv::Reader::from_path(out.path().join("rejects.csv")).unwrap();
    let lines: Vec<Vec<String>> = r
        .records()
        .map(|rec| rec.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        &lines[0][..4],
        ["3", "deactivated_at", "'+5881580-07-11", "DATE_INVALID"]
    );
    let valid = valid_table(out.path());
    assert_eq!(cells(&valid, "row"), ["1", "2"]);
    assert_eq!(cells(&valid, "account_id"), ["1001", "1002"]);
    assert_eq!(
        cells(&valid, "deactivated_at"),
        ["2025-10-01", "2025-10-02"]
    );
    // Cells starting with - or + are neutralised against formulas.
    assert_eq!(cells(&valid, "price"), ["12.50", "'-0.05"]);
    assert_eq!(cells(&valid, "big"), ["12345678901234567890", "'-1"]);
    assert_eq!(
        cells(&valid, "wide"),
        ["'-123456789012345678901234567890123456789012345.67", "0.00"]
    );
    assert_eq!(cells(&valid, "d"), ["'-5877641-06-23", "1970-01-01"]);
    assert!(!valid[0].contains_key("tags"));

    let (out, output) = validate(&file("polars.parquet"), &["--emit-valid"]);
    assert_ok(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for (column, kind) in [("st", "struct"), ("lst", "list"), ("bin", "binary")] {
        assert!(
            stderr.contains(&format!("column `{column}` holds {kind} values")),
            "{stderr}"
        );
    }
    assert!(rejects(&out.path().join("rejects.csv")).is_empty());
    let valid = valid_table(out.path());
    assert_eq!(cells(&valid, "account_id"), ["1001", "1002", "1003"]);
    assert_eq!(cells(&valid, "deactivated_at")[0], "2026-10-01T09:30:00Z");
    assert_eq!(cells(&valid, "price"), ["12.50", "'-0.05", ""]);
    assert!(!valid[0].contains_key("st") && !valid[0].contains_key("bin"));

    let (out, output) = validate(&file("duckdb.parquet"), &["--emit-valid"]);
    assert_ok(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for (column, kind) in [("tags", "map"), ("iv", "interval")] {
        assert!(
            stderr.contains(&format!("column `{column}` holds {kind} values")),
            "{stderr}"
        );
    }
    assert!(rejects(&out.path().join("rejects.csv")).is_empty());
    let valid = valid_table(out.path());
    assert_eq!(cells(&valid, "account_id"), ["1001", "1002", "1003"]);
    assert_eq!(cells(&valid, "deactivated_at")[0], "2026-10-01T23:30:00Z");
    assert_eq!(cells(&valid, "price"), ["12.50", "'-0.05", ""]);
    assert_eq!(
        cells(&valid, "u")[0],
        "e70b4461-6375-4669-b529-618ba1f8e4f2"
    );

    let (_out, output) = validate(&file("country_map.parquet"), &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("column `country` holds map values, which have no single text form"),
        "{stderr}"
    );
}

/// A panic inside polars on a hostile file is an error, not the end of the
/// process: one byte of the footer of `fixtures/exotic.parquet` (a thrift
/// bool field, set to 3) makes polars' metadata decoder panic.
#[test]
fn a_panic_inside_polars_is_a_clear_error() {
    let mut bytes = std::fs::read(super::fixture("exotic.parquet")).unwrap();
    let at = bytes.len() - 2537;
    bytes[at] = 3;
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "hostile.parquet", &bytes);
    let (_out, output) = validate(&input, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the Parquet reader failed on this file"),
        "the byte no longer makes polars panic (fixtures/exotic.parquet regenerated?): {stderr}"
    );
    assert_eq!(output.status.code(), Some(2), "{stderr}");
}
