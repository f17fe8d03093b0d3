//! Integration tests: the real `refleet` binary on the fixtures in
//! `fixtures/` and on generated inventories. One test binary on purpose
//! (polars makes each one large).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

mod history;
mod inputs;
mod numbers;
mod pg;
mod report;
mod run;
mod secrets;
mod sim;

/// The binary, with none of the user's settings. Nor the user's state
/// folder: without HOME and XDG_STATE_HOME a run that names no journal is
/// refused, so no test ever reads or writes the journal of whoever runs the
/// tests. A test that runs `refleet run` gives it a state folder of its own
/// ([`refleet_for`]) or a `--state`.
fn refleet() -> Command {
    let mut cmd = Command::cargo_bin("refleet").expect("binary built");
    cmd.env_remove("REFLEET_POLICY")
        .env_remove("REFLEET_STATE")
        .env_remove("XDG_STATE_HOME")
        .env_remove("HOME");
    cmd
}

/// The state folder (XDG_STATE_HOME) the tests give the runs that write
/// their reports to `out`: inside the test's temporary folder, so that it
/// goes with it, and the same for every run on `out`, as a run that resumes
/// needs. (Only a test's choice: refleet itself keeps the journal out of
/// `--out`; tests/run checks it with a state folder elsewhere.)
fn state_home(out: &Path) -> PathBuf {
    out.join(".state")
}

/// The default journal of those runs.
fn journal_of(out: &Path) -> PathBuf {
    state_home(out).join("refleet").join("journal.sqlite")
}

/// [`refleet`] for a run writing its reports to `out`, with its state folder.
fn refleet_for(out: &Path) -> Command {
    let mut cmd = refleet();
    cmd.env("XDG_STATE_HOME", state_home(out));
    cmd
}

/// `results.csv` by site: rows, active, on the way, failed or rejected,
/// escalated, ineligible, invalid (the by-site table's columns).
pub fn results_by_site(results: &Path) -> BTreeMap<String, Vec<u64>> {
    let mut by_site: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut rd = csv::Reader::from_path(results).unwrap();
    let headers = rd.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (state, site) = (col("state"), col("site"));
    for r in rd.records() {
        let r = r.unwrap();
        let column = match &r[state] {
            "active" => 1,
            "planned" | "submitted" | "accepted" | "provisioning" | "manual_review" => 2,
            "rejected" | "failed" => 3,
            "escalated" => 4,
            "ineligible" => 5,
            "invalid" => 6,
            other => panic!("state {other} in results.csv"),
        };
        let counts = by_site.entry(r[site].to_string()).or_insert(vec![0; 7]);
        counts[0] += 1;
        counts[column] += 1;
    }
    by_site
}

/// `summary.json`'s `by_site` as [`results_by_site`] gives it.
pub fn summary_by_site(summary: &serde_json::Value) -> BTreeMap<String, Vec<u64>> {
    let columns = [
        "rows",
        "active",
        "on_the_way",
        "failed_or_rejected",
        "escalated",
        "ineligible",
        "invalid",
    ];
    summary["by_site"]
        .as_object()
        .expect("summary.json has by_site")
        .iter()
        .map(|(site, c)| {
            let counts = columns.iter().map(|k| c[*k].as_u64().unwrap()).collect();
            (site.clone(), counts)
        })
        .collect()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// (row, column, code) of each line of a rejects file.
fn rejects(path: &Path) -> Vec<(u64, String, String)> {
    let mut r = csv::Reader::from_path(path).expect("rejects file");
    assert_eq!(
        r.headers().unwrap(),
        vec!["row", "column", "value", "code", "message"]
    );
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (
                rec[0].parse().unwrap(),
                rec[1].to_string(),
                rec[3].to_string(),
            )
        })
        .collect()
}

fn rj(row: u64, column: &str, code: &str) -> (u64, String, String) {
    (row, column.to_string(), code.to_string())
}

/// Runs `refleet validate` and returns the output directory.
fn validate(input: &Path, extra: &[&str]) -> (tempfile::TempDir, std::process::Output) {
    let out = tempfile::tempdir().unwrap();
    let output = refleet()
        .arg("validate")
        .arg(input)
        .arg("--out")
        .arg(out.path())
        .args(extra)
        .output()
        .unwrap();
    (out, output)
}

fn ok_validate(input: &Path, extra: &[&str]) -> tempfile::TempDir {
    let (out, output) = validate(input, extra);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

#[test]
fn every_reject_code_on_its_row() {
    let out = ok_validate(&fixture("every_code.csv"), &["--emit-valid"]);
    assert_eq!(
        rejects(&out.path().join("rejects.csv")),
        vec![
            rj(4, "mac_address", "MAC_INVALID"),
            rj(5, "mac_address", "MAC_RESERVED"),
            rj(6, "mac_address", "MAC_RESERVED"),
            rj(8, "serial_number", "SERIAL_INVALID"),
            rj(9, "serial_number", "SERIAL_MAC_MISMATCH"),
            rj(10, "license_id", "LICENSE_INVALID"),
            rj(11, "account_id", "ACCOUNT_INVALID"),
            rj(12, "contract_id", "CONTRACT_ID_INVALID"),
            rj(13, "country", "COUNTRY_INVALID"),
            rj(14, "deactivated_at", "DATE_INVALID"),
            rj(15, "deactivated_at", "DATE_AMBIGUOUS"),
            rj(16, "serial_number", "DUPLICATE_SERIAL"),
            rj(17, "mac_address", "DUPLICATE_MAC"),
            rj(19, "license_id", "DUPLICATE_LICENSE"),
            rj(20, "account_id", "MISSING_FIELD"),
            rj(21, "mac_address", "MISSING_FIELD"),
            rj(22, "item_type", "VALUE_INVALID"),
            rj(22, "deactivation_reason", "VALUE_INVALID"),
            rj(22, "repair_status", "VALUE_INVALID"),
            rj(22, "reported_lost", "VALUE_INVALID"),
            rj(23, "", "FIELD_COUNT_MISMATCH"),
            rj(24, "account_id", "MISSING_FIELD"),
            rj(24, "contract_id", "MISSING_FIELD"),
            rj(24, "country", "MISSING_FIELD"),
            rj(24, "deactivated_at", "MISSING_FIELD"),
            rj(24, "serial_number", "SERIAL_INVALID"),
            rj(24, "mac_address", "MAC_INVALID"),
            rj(25, "serial_number", "DUPLICATE_SERIAL"),
            rj(25, "mac_address", "DUPLICATE_MAC"),
        ]
    );
    // The foreign OUI is a warning: the row is kept.
    assert_eq!(
        rejects(&out.path().join("warnings.csv")),
        vec![rj(7, "mac_address", "MAC_FOREIGN_OUI")]
    );
    let valid = std::fs::read_to_string(out.path().join("valid.csv")).unwrap();
    let rows: Vec<&str> = valid
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(rows, vec!["1", "2", "3", "7", "18"]);
    // Canonical forms: MAC notation, date-time in UTC, license id grouping.
    assert!(
        valid.contains("2,device,0004F2000002,00:04:F2:00:00:02,CCX 500,"),
        "{valid}"
    );
    assert!(
        valid.contains(",JP,APAC,Tokyo,2026-10-03T00:30:00Z,manual,none,false"),
        "{valid}"
    );
    assert!(
        valid.contains("18,license,,,,ABCD-EFGH-1234-5678,0004F2000001,"),
        "{valid}"
    );
}

#[test]
fn export_quirks_give_the_same_single_reject() {
    for name in [
        "bom_crlf.csv",
        "semicolon.csv",
        "aliased_headers.csv",
        "quoted_newlines.csv",
    ] {
        let out = ok_validate(&fixture(name), &["--emit-valid"]);
        assert_eq!(
            rejects(&out.path().join("rejects.csv")),
            vec![rj(4, "mac_address", "MAC_INVALID")],
            "{name}"
        );
        let mut valid = csv::Reader::from_path(out.path().join("valid.csv")).unwrap();
        assert_eq!(valid.records().count(), 3, "{name}");
    }
}

#[test]
fn aliased_headers_are_canonical_in_valid_csv_and_unknown_columns_carried() {
    let out = ok_validate(&fixture("aliased_headers.csv"), &["--emit-valid"]);
    let mut valid = csv::Reader::from_path(out.path().join("valid.csv")).unwrap();
    let headers = valid.headers().unwrap().clone();
    assert_eq!(&headers[2], "serial_number");
    assert_eq!(&headers[3], "mac_address");
    assert_eq!(headers.iter().next_back(), Some("Cost Center"));
    let first = valid.records().next().unwrap().unwrap();
    assert_eq!(first.iter().next_back(), Some("CC-0"));
}

#[test]
fn quoted_newlines_survive_into_valid_csv() {
    let out = ok_validate(&fixture("quoted_newlines.csv"), &["--emit-valid"]);
    let mut valid = csv::Reader::from_path(out.path().join("valid.csv")).unwrap();
    let first = valid.records().next().unwrap().unwrap();
    assert_eq!(&first[11], "HQ\nBuilding 2, Floor \"3\"");
}

#[test]
fn latin1_byte_rejects_only_its_row() {
    let out = ok_validate(&fixture("latin1.csv"), &["--emit-valid"]);
    assert_eq!(
        rejects(&out.path().join("rejects.csv")),
        vec![rj(2, "site", "ENCODING_INVALID")]
    );
    let valid = std::fs::read_to_string(out.path().join("valid.csv")).unwrap();
    assert_eq!(valid.lines().count(), 3);
}

#[test]
fn unterminated_quote_is_reported_where_it_starts_and_the_rest_is_read() {
    let out = ok_validate(&fixture("unterminated_quote.csv"), &["--emit-valid"]);
    assert_eq!(
        rejects(&out.path().join("rejects.csv")),
        vec![
            rj(2, "", "UNTERMINATED_QUOTE"),
            rj(4, "mac_address", "MAC_INVALID")
        ]
    );
    let valid = std::fs::read_to_string(out.path().join("valid.csv")).unwrap();
    let rows: Vec<&str> = valid
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(rows, vec!["1", "3"]);
}

#[test]
fn missing_required_column_is_one_clear_fatal_error() {
    let (_out, output) = validate(&fixture("missing_column.csv"), &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("required column `country` is missing"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`countrycode`"),
        "names the aliases tried: {stderr}"
    );
}

/// A German asset-tool export: every missing column in one message, with
/// the file's own headers, not one column per run.
#[test]
fn every_missing_column_is_named_at_once_with_the_headers_found() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(sample("inventory.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap()
        .replace("account_id", "Kundennummer")
        .replace("contract_id", "Vertragsnummer");
    let mut file = header.clone() + "\n";
    for l in lines.take(3) {
        file.push_str(l);
        file.push('\n');
    }
    let input = dir.path().join("export.csv");
    std::fs::write(&input, file).unwrap();
    let (_out, output) = validate(&input, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("2 required columns are missing: `account_id`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`contract_id` (looked for `contract_id`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`Kundennummer`") && stderr.contains("`Vertragsnummer`"),
        "{stderr}"
    );
}

#[test]
fn empty_file_is_a_usage_error_and_header_only_is_fine() {
    let (_out, output) = validate(&fixture("empty.csv"), &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("empty"));
    let out = ok_validate(&fixture("header_only.csv"), &[]);
    assert!(rejects(&out.path().join("rejects.csv")).is_empty());
}

#[test]
fn typed_parquet_columns_are_read_as_text() {
    let out = ok_validate(&fixture("typed.parquet"), &["--emit-valid"]);
    assert_eq!(
        rejects(&out.path().join("rejects.csv")),
        vec![
            rj(4, "deactivated_at", "MISSING_FIELD"),
            rj(4, "mac_address", "MAC_INVALID")
        ]
    );
    let mut valid = csv::Reader::from_path(out.path().join("valid.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = valid.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    // Integer account id, categorical model and country, date, boolean, carried integer column.
    assert_eq!(
        (&rows[0][4], &rows[0][7], &rows[0][9], &rows[0][12]),
        ("VVX 450", "1001", "US", "2026-10-01")
    );
    assert_eq!(&rows[2][15], "true");
    assert_eq!(&rows[2][16], "3");
}

#[test]
fn formula_cells_are_neutralised_in_every_report() {
    let out = ok_validate(&fixture("formulas.csv"), &["--emit-valid"]);
    for file in ["rejects.csv", "valid.csv"] {
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_path(out.path().join(file))
            .unwrap();
        for rec in r.records() {
            for cell in rec.unwrap().iter() {
                assert!(
                    !cell.starts_with(['=', '+', '-', '@', '\t', '\r', '\0']),
                    "{file}: {cell:?}"
                );
            }
        }
    }
    let valid = std::fs::read_to_string(out.path().join("valid.csv")).unwrap();
    assert!(
        valid.contains("'@SUM(A1)") && valid.contains("'=HYPERLINK"),
        "{valid}"
    );
    assert_eq!(valid.lines().count(), 3, "{valid}");
}

#[test]
fn date_format_resolves_ambiguous_dates() {
    let out = ok_validate(
        &fixture("every_code.csv"),
        &["--date-format", "dmy", "--emit-valid"],
    );
    assert!(!rejects(&out.path().join("rejects.csv"))
        .iter()
        .any(|r| r.2 == "DATE_AMBIGUOUS"));
    let valid = std::fs::read_to_string(out.path().join("valid.csv")).unwrap();
    assert!(valid.contains(",2025-04-03,"), "{valid}");
    let (_o, output) = validate(&fixture("every_code.csv"), &["--date-format", "sometimes"]);
    assert_eq!(output.status.code(), Some(2));
}

fn gen(dir: &Path, rows: u64, format: &str) {
    refleet()
        .args([
            "gen",
            "--rows",
            &rows.to_string(),
            "--seed",
            "11",
            "--defects",
            "0.2",
            "--format",
            format,
            "--out",
        ])
        .arg(dir)
        .assert()
        .success();
}

/// `gen` derives its defects from the reject codes and the eligibility
/// reasons: every code it says it plants comes out of `validate` (in
/// rejects.csv or, for a warning, warnings.csv), and every reason out of
/// the eligibility stage (eligibility.csv), on a generated inventory where
/// every row carries a defect.
#[test]
fn gen_plants_every_reject_code_it_claims_and_every_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (dir.path().join("data"), dir.path().join("out"));
    refleet()
        .args(["gen", "--rows", "20000", "--seed", "7", "--defects", "1"])
        .args(["--as-of", "2026-11-24", "--out"])
        .arg(&data)
        .assert()
        .success();
    refleet()
        .arg("quote")
        .arg(data.join("inventory.csv"))
        .arg("--contracts")
        .arg(data.join("contracts.csv"))
        .args(["--as-of", "2026-11-24", "--quiet", "--out"])
        .arg(&out)
        .assert()
        .success();
    let column = |file: &str, name: &str| -> std::collections::BTreeSet<String> {
        let mut r = csv::Reader::from_path(out.join(file)).expect(file);
        let i = r.headers().unwrap().iter().position(|h| h == name).unwrap();
        r.records()
            .flat_map(|rec| {
                let rec = rec.unwrap();
                rec[i].split(';').map(str::to_string).collect::<Vec<_>>()
            })
            .filter(|v| !v.is_empty())
            .collect()
    };
    let mut codes = column("rejects.csv", "code");
    codes.extend(column("warnings.csv", "code"));
    let planted: Vec<&str> = refleet::gen::planted_reject_codes()
        .map(|c| c.as_str())
        .collect();
    assert!(planted.len() >= 15, "{planted:?}");
    for code in &planted {
        assert!(
            codes.contains(*code),
            "gen claims to plant {code}, validate never gave it: {codes:?}"
        );
    }
    let reasons = column("eligibility.csv", "reasons");
    for reason in refleet::eligibility::Reason::ALL {
        assert!(
            reasons.contains(reason.as_str()),
            "gen never planted {}: {reasons:?}",
            reason.as_str()
        );
    }
}

/// `--threads N` bounds the threads that work: looked at while `validate`
/// is part-way through an inventory read from a pipe (Linux's
/// `/proc/PID/task/*/comm` names each thread), `--threads 1` runs no
/// reading, dispatching or validating thread beside the calling one, and
/// `--threads 3` one reader and one validating thread beside the walk (and
/// the one that only hands chunks to the validating threads).
#[test]
fn threads_bounds_the_threads_of_the_validate_stage() {
    use std::io::Write;
    if !Path::new("/proc/self/task").is_dir() {
        eprintln!("SKIPPED: no /proc/PID/task here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    gen(dir.path(), 60_000, "csv");
    let inventory = std::fs::read(dir.path().join("inventory.csv")).unwrap();
    let half = inventory.len() / 2;
    for (threads, want) in [
        ("1", &[][..]),
        ("2", &["refleet-read"][..]),
        ("3", &["refleet-check", "refleet-read", "refleet-val0"][..]),
    ] {
        let out = dir.path().join(format!("out-{threads}"));
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("refleet"))
            .args(["validate", "-", "--quiet", "--threads", threads, "--out"])
            .arg(&out)
            .env_remove("REFLEET_THREADS")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&inventory[..half]).unwrap();
        stdin.flush().unwrap();
        // Until the first half is read (the pipe's buffer holds far less):
        // the stage is then part-way, whatever the machine's load.
        let read_so_far = || -> u64 {
            std::fs::read_to_string(format!("/proc/{}/io", child.id()))
                .ok()
                .and_then(|io| {
                    io.lines()
                        .find_map(|l| l.strip_prefix("rchar: ").map(|n| n.trim().parse().ok()))
                        .flatten()
                })
                .unwrap_or(0)
        };
        let waited = std::time::Instant::now();
        while read_so_far() < half as u64 / 2 && waited.elapsed().as_secs() < 60 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let tasks = format!("/proc/{}/task", child.id());
        let mut names: Vec<String> = std::fs::read_dir(&tasks)
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .filter(|n| n == "refleet-read" || n == "refleet-check" || n.starts_with("refleet-val"))
            .collect();
        names.sort();
        stdin.write_all(&inventory[half..]).unwrap();
        drop(stdin);
        assert!(child.wait().unwrap().success());
        assert_eq!(names, want, "--threads {threads}");
    }
}

#[test]
fn csv_gzip_zstd_parquet_and_stdin_give_identical_rejects() {
    let dir = tempfile::tempdir().unwrap();
    gen(dir.path(), 6000, "csv");
    gen(dir.path(), 6000, "parquet");
    let csv_path = dir.path().join("inventory.csv");
    let plain = std::fs::read(&csv_path).unwrap();
    // Deliberately named without .gz/.zst: the format is told by magic bytes.
    let gz_path = dir.path().join("inventory.gzipped");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    std::fs::write(&gz_path, gz.finish().unwrap()).unwrap();
    let zst_path = dir.path().join("inventory.csv.zst");
    std::fs::write(&zst_path, zstd::encode_all(&plain[..], 3).unwrap()).unwrap();

    let reference = std::fs::read(ok_validate(&csv_path, &[]).path().join("rejects.csv")).unwrap();
    let codes: std::collections::BTreeSet<String> =
        rejects(&ok_validate(&csv_path, &[]).path().join("rejects.csv"))
            .into_iter()
            .map(|r| r.2)
            .collect();
    assert!(
        codes.len() >= 12,
        "a generated file has most reject codes: {codes:?}"
    );
    for input in [gz_path, zst_path, dir.path().join("inventory.parquet")] {
        let got = std::fs::read(ok_validate(&input, &[]).path().join("rejects.csv")).unwrap();
        assert!(
            got == reference,
            "{} differs from the CSV's rejects",
            input.display()
        );
    }
    let out = tempfile::tempdir().unwrap();
    refleet()
        .args(["validate", "-", "--out"])
        .arg(out.path())
        .write_stdin(plain)
        .assert()
        .success();
    assert!(
        std::fs::read(out.path().join("rejects.csv")).unwrap() == reference,
        "stdin differs"
    );
}

#[test]
fn rejects_are_in_source_order_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    gen(dir.path(), 80_000, "csv");
    let input = dir.path().join("inventory.csv");
    let one = std::fs::read(
        ok_validate(&input, &["--threads", "1"])
            .path()
            .join("rejects.csv"),
    )
    .unwrap();
    let four = std::fs::read(
        ok_validate(&input, &["--threads", "4"])
            .path()
            .join("rejects.csv"),
    )
    .unwrap();
    assert!(one == four);
    let rows: Vec<u64> = rejects(
        &ok_validate(&input, &["--threads", "3"])
            .path()
            .join("rejects.csv"),
    )
    .iter()
    .map(|r| r.0)
    .collect();
    assert!(rows.windows(2).all(|w| w[0] <= w[1]));
    assert!(rows.len() > 1000);
}

#[test]
fn summary_and_quiet() {
    let (_out, output) = validate(&fixture("every_code.csv"), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("25 rows, 5 valid, 20 rejected, 1 warnings"),
        "{stderr}"
    );
    assert!(stderr.contains("rows/s"), "{stderr}");
    let (_out, output) = validate(&fixture("every_code.csv"), &["--quiet"]);
    assert!(output.stderr.is_empty());
}

#[test]
fn policy_show_and_user_policy() {
    let out = refleet().args(["policy", "show"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[models.\"VVX 450\"]") && text.contains("restricted_countries"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[identifiers]\nserial_min_len = 8\nserial_max_len = \"x\"\n",
    )
    .unwrap();
    let out = refleet()
        .args(["policy", "show", "--policy"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3"));

    // A user alias makes an otherwise unknown header the serial column.
    let user = dir.path().join("user.toml");
    std::fs::write(&user, "[headers.aliases]\nassettag = \"serial_number\"\n").unwrap();
    let inv = dir.path().join("inv.csv");
    std::fs::write(
        &inv,
        "Asset Tag,mac,model,account,contract,country,deactivated\n0004F2000001,00:04:F2:00:00:01,VVX 450,A-1,C-1,US,2026-01-01\n",
    )
    .unwrap();
    let out = ok_validate(&inv, &["--policy", user.to_str().unwrap(), "--emit-valid"]);
    assert!(std::fs::read_to_string(out.path().join("valid.csv"))
        .unwrap()
        .contains("0004F2000001"));
}

#[test]
fn sample_data_validates_with_a_believable_mix() {
    let out = ok_validate(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/inventory.csv"),
        &[],
    );
    let r = rejects(&out.path().join("rejects.csv"));
    let codes: std::collections::BTreeSet<&str> = r.iter().map(|x| x.2.as_str()).collect();
    assert!(r.len() > 20 && r.len() < 200, "{}", r.len());
    assert!(codes.len() >= 8, "{codes:?}");
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample-data")
        .join(name)
}

fn quote_cmd(out: &Path, extra: &[&str]) -> std::process::Output {
    refleet()
        .arg("quote")
        .arg(sample("inventory.csv"))
        .arg("--contracts")
        .arg(sample("contracts.csv"))
        .args(["--as-of", "2026-11-24", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn quote_on_sample_data_gives_a_verdict_per_valid_row_and_checkable_quotes() {
    let out = tempfile::tempdir().unwrap();
    let o = quote_cmd(out.path(), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rejected: std::collections::BTreeSet<u64> = rejects(&out.path().join("rejects.csv"))
        .iter()
        .map(|r| r.0)
        .collect();
    let mut elig = csv::Reader::from_path(out.path().join("eligibility.csv")).unwrap();
    assert_eq!(
        elig.headers().unwrap(),
        vec![
            "row",
            "item_key",
            "item_type",
            "serial_number",
            "license_id",
            "contract_id",
            "country",
            "region",
            "eligible",
            "reasons",
            "alternative",
            "eta"
        ]
    );
    let rows: Vec<csv::StringRecord> = elig.records().map(Result::unwrap).collect();
    // Every input row is either rejected or has exactly one verdict, in row order.
    let verdict_rows: Vec<u64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(verdict_rows.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(verdict_rows.len() + rejected.len(), 2000);
    assert!(verdict_rows.iter().all(|r| !rejected.contains(r)));
    let ineligible: Vec<&csv::StringRecord> = rows.iter().filter(|r| &r[8] == "false").collect();
    assert!(
        ineligible.len() > 20,
        "the sample has planted ineligibility"
    );
    assert!(ineligible.iter().all(|r| !r[9].is_empty()));
    assert!(
        rows.iter()
            .filter(|r| &r[8] == "true")
            .all(|r| !r[11].is_empty()),
        "eligible rows have an ETA"
    );
    // Each ETA is as-of plus the SLA's business days for the country and the
    // contract's coverage.
    let policy = refleet::policy::Policy::load(None).unwrap();
    let mut contracts = csv::Reader::from_path(sample("contracts.csv")).unwrap();
    let columns = contracts.headers().unwrap().clone();
    let col = |name: &str| columns.iter().position(|c| c == name).unwrap();
    let (id, coverage) = (col("contract_id"), col("coverage"));
    let coverage_of: std::collections::HashMap<String, refleet::domain::Coverage> = contracts
        .records()
        .map(Result::unwrap)
        .filter_map(|r| {
            Some((
                r[id].to_string(),
                refleet::domain::Coverage::parse(&r[coverage])?,
            ))
        })
        .collect();
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
    for r in rows.iter().filter(|r| &r[8] == "true") {
        let country = policy.countries.parse(&r[6]).unwrap();
        let expected = policy
            .activation_eta(country, coverage_of[&r[5]], as_of)
            .unwrap();
        assert_eq!(&r[11], expected.to_string(), "row {}", &r[0]);
    }

    // quotes.json alone is enough to check every quote by hand.
    let quotes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("quotes.json")).unwrap()).unwrap();
    let quotes = quotes.as_array().unwrap();
    assert!(quotes.len() >= 3);
    let dec = |v: &serde_json::Value| -> f64 { v.as_str().unwrap().parse().unwrap() };
    let mut quoted_items = 0;
    for q in quotes {
        let mut sum_cents = 0i64;
        for l in q["lines"].as_array().unwrap() {
            let amount = dec(&l["amount"]);
            if l["kind"] != "volume_discount" {
                let by_hand =
                    l["quantity"].as_f64().unwrap() * dec(&l["unit_price"]) * dec(&l["multiplier"]);
                assert!((by_hand - amount).abs() <= 0.005 + 1e-9, "{l}");
            }
            sum_cents += (amount * 100.0).round() as i64;
        }
        assert_eq!(sum_cents, (dec(&q["total"]) * 100.0).round() as i64, "{q}");
        quoted_items += q["devices"].as_u64().unwrap() + q["licenses"].as_u64().unwrap();
    }
    assert_eq!(
        quoted_items as usize,
        rows.iter().filter(|r| &r[8] == "true").count()
    );
    let quotes_csv = std::fs::read_to_string(out.path().join("quotes.csv")).unwrap();
    assert_eq!(quotes_csv.lines().count(), quotes.len() + 1);

    // The same input gives the same quotes, ids included.
    let again = tempfile::tempdir().unwrap();
    assert!(quote_cmd(again.path(), &[]).status.success());
    assert_eq!(
        std::fs::read(out.path().join("quotes.json")).unwrap(),
        std::fs::read(again.path().join("quotes.json")).unwrap()
    );
}

#[test]
fn quote_budget_guard() {
    let out = tempfile::tempdir().unwrap();
    let o = quote_cmd(
        out.path(),
        &["--budget", "1000", "USD", "--budget", "10000000", "EUR"],
    );
    assert_eq!(o.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("budget exceeded: USD: quoted") && !stderr.contains("EUR: quoted"),
        "{stderr}"
    );
    let o = quote_cmd(
        out.path(),
        &["--budget", "10000000", "USD", "--budget", "10000000", "EUR"],
    );
    assert!(o.status.success());
    let o = quote_cmd(out.path(), &["--budget", "lots", "USD"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn quote_reads_the_inventory_from_stdin_and_reports_bad_contracts() {
    let dir = tempfile::tempdir().unwrap();
    let contracts = dir.path().join("contracts.csv");
    let mut text = std::fs::read_to_string(sample("contracts.csv")).unwrap();
    text.push_str("C-00000-1,ACME-00000,active,extended,true,2026-01-01,2027-01-01,US,per_device,12,,false,30\n");
    text.push_str(
        "C-BAD,ACME-00000,paused,extended,true,2026-01-01,2027-01-01,US,per_device,12,,false,30\n",
    );
    std::fs::write(&contracts, text).unwrap();
    let out = tempfile::tempdir().unwrap();
    refleet()
        .args([
            "quote",
            "-",
            "--as-of",
            "2026-11-24",
            "--quiet",
            "--contracts",
        ])
        .arg(&contracts)
        .arg("--out")
        .arg(out.path())
        .write_stdin(std::fs::read(sample("inventory.csv")).unwrap())
        .assert()
        .success();
    let codes: Vec<String> = rejects(&out.path().join("contract_rejects.csv"))
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(codes, vec!["DUPLICATE_CONTRACT", "VALUE_INVALID"]);
    assert!(
        std::fs::read_to_string(out.path().join("quotes.csv"))
            .unwrap()
            .lines()
            .count()
            > 1
    );
}

/// (item_key, eligible, reasons) of every line of an eligibility report.
fn verdicts(path: &Path) -> Vec<(String, String, String)> {
    let mut r = csv::Reader::from_path(path).expect("eligibility file");
    let mut v: Vec<_> = r
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            (rec[1].to_string(), rec[8].to_string(), rec[9].to_string())
        })
        .collect();
    v.sort();
    v
}

/// The sample inventory with an eligible license moved to the first row and
/// its bound device to the last, more than a chunk of rows (32,768) later,
/// with rejected rows in between: the plan must then read the inventory a
/// second time. Returns the file, the license id and the number of rows.
fn license_first_inventory(dir: &Path) -> (PathBuf, String, usize) {
    let out = tempfile::tempdir().unwrap();
    assert!(quote_cmd(out.path(), &[]).status.success());
    let before = verdicts(&out.path().join("eligibility.csv"));
    let mut reader = csv::Reader::from_path(sample("inventory.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    let mut rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (lic, bound, serial) = (col("license_id"), col("bound_serial"), col("serial_number"));
    let canonical = |s: &str| {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_uppercase()
    };
    let mac = col("mac_address");
    let unique = |c: usize, v: &str| rows.iter().filter(|r| canonical(&r[c]) == v).count() == 1;
    // An eligible license whose device is the only row with its serial and
    // MAC, so that moving the device last keeps it the first occurrence.
    let (key, at, device_at) = before
        .iter()
        .filter(|(k, e, _)| e == "true" && k.len() == 19)
        .find_map(|(k, _, _)| {
            let at = rows.iter().position(|r| &r[lic] == k)?;
            let want = canonical(&rows[at][bound]);
            let device_at = rows.iter().position(|r| canonical(&r[serial]) == want)?;
            let device = &rows[device_at];
            (unique(serial, &want) && unique(mac, &canonical(&device[mac])))
                .then(|| (k.clone(), at, device_at))
        })
        .expect("an eligible license in the sample");
    let license = rows[at].clone();
    let device = rows[device_at].clone();
    rows.retain(|r| r != &license && r != &device);
    let mut junk = device.clone();
    junk = junk
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if i == serial {
                "!"
            } else if i == mac {
                ""
            } else {
                v
            }
        })
        .collect();
    let inventory = dir.join("inventory.csv");
    let mut w = csv::Writer::from_path(&inventory).unwrap();
    w.write_record(&headers).unwrap();
    w.write_record(&license).unwrap();
    for r in &rows {
        w.write_record(r).unwrap();
    }
    let padding = 33_000;
    for _ in 0..padding {
        w.write_record(&junk).unwrap();
    }
    w.write_record(&device).unwrap();
    w.flush().unwrap();
    (inventory, key, rows.len() + 2 + padding)
}

#[test]
fn quote_judges_a_license_listed_before_its_device_on_the_whole_inventory() {
    // Every verdict must stay what it was, each exactly once.
    let out = tempfile::tempdir().unwrap();
    assert!(quote_cmd(out.path(), &[]).status.success());
    let before = verdicts(&out.path().join("eligibility.csv"));
    let dir = tempfile::tempdir().unwrap();
    let (inventory, key, _) = license_first_inventory(dir.path());

    let moved_out = tempfile::tempdir().unwrap();
    let assert = refleet()
        .arg("quote")
        .arg(&inventory)
        .arg("--contracts")
        .arg(sample("contracts.csv"))
        .args(["--as-of", "2026-11-24", "--out"])
        .arg(moved_out.path())
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(stderr.contains("read twice"), "{stderr}");
    let after = verdicts(&moved_out.path().join("eligibility.csv"));
    assert_eq!(after, before);
    let first = csv::Reader::from_path(moved_out.path().join("eligibility.csv"))
        .unwrap()
        .records()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        (&first[0], &first[1], &first[8]),
        ("1", key.as_str(), "true")
    );
}

#[test]
fn quote_reports_do_not_depend_on_the_thread_count() {
    // Verdicts and lines are made on the worker threads and taken in row
    // order: the files must be the same whatever the number of threads.
    let one = tempfile::tempdir().unwrap();
    let three = tempfile::tempdir().unwrap();
    assert!(quote_cmd(one.path(), &["--threads", "1", "--quiet"])
        .status
        .success());
    assert!(quote_cmd(three.path(), &["--threads", "3", "--quiet"])
        .status
        .success());
    for f in [
        "eligibility.csv",
        "rejects.csv",
        "warnings.csv",
        "quotes.csv",
        "quotes.json",
    ] {
        assert_eq!(
            std::fs::read(one.path().join(f)).unwrap(),
            std::fs::read(three.path().join(f)).unwrap(),
            "{f}"
        );
    }
}

/// A Python with pyarrow, polars and duckdb (`REFLEET_PYTHON`, which
/// `.ci/run` provides), or `None` with a loud skip; in CI, a failure.
fn parquet_python() -> Option<String> {
    let candidate = std::env::var("REFLEET_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&candidate)
        .args(["-c", "import polars, pyarrow, duckdb"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(candidate);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "CI needs REFLEET_PYTHON with polars, pyarrow and duckdb (.ci/run makes one)"
    );
    eprintln!(
        "\n*** SKIPPED: no Python with polars, pyarrow and duckdb (set REFLEET_PYTHON) ***\n"
    );
    None
}

/// A missing file or a folder given as an input: one line that says so
/// (the system's error once), and nothing left behind: no `--out`, no
/// journal.
#[test]
fn a_missing_file_or_a_folder_as_input_is_said_once_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("exports");
    std::fs::create_dir(&folder).unwrap();
    let missing = dir.path().join("fleet.csv");
    let contracts = sample("contracts.csv");
    let inventory = sample("inventory.csv");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let cases: Vec<(Vec<String>, i32, String)> = vec![
        (
            vec!["validate".into(), s(&missing)],
            1,
            format!(
                "refleet: cannot open {}: No such file or directory (os error 2)",
                missing.display()
            ),
        ),
        (
            vec!["validate".into(), s(&folder)],
            2,
            format!("refleet: {} is a folder, not a file", folder.display()),
        ),
        (
            vec![
                "quote".into(),
                s(&inventory),
                "--contracts".into(),
                s(&folder),
            ],
            2,
            format!("refleet: {} is a folder, not a file", folder.display()),
        ),
        (
            vec![
                "run".into(),
                s(&folder),
                "--contracts".into(),
                s(&contracts),
                "--state".into(),
                s(&dir.path().join("j.sqlite")),
            ],
            2,
            format!("refleet: {} is a folder, not a file", folder.display()),
        ),
        (
            vec![
                "run".into(),
                s(&missing),
                "--contracts".into(),
                s(&contracts),
                "--state".into(),
                s(&dir.path().join("j.sqlite")),
            ],
            1,
            format!(
                "refleet: cannot open {}: No such file or directory (os error 2)",
                missing.display()
            ),
        ),
    ];
    for (args, code, line) in cases {
        let out = dir.path().join("out");
        let output = refleet()
            .args(&args)
            .arg("--out")
            .arg(&out)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.starts_with(&line), "{args:?}: {stderr}");
        assert_eq!(
            stderr.matches("os error").count(),
            usize::from(code == 1),
            "{stderr}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["exports"], "{args:?}: nothing left behind");
    }
}

/// Everyday exports that are not UTF-8 CSV: Excel's "CSV" in Europe
/// (Windows-1252), a "Unicode text" export (UTF-16, with or without its
/// byte-order mark), a workbook. Each is read, or refused with what to do.
#[test]
fn exports_in_other_encodings_are_read_or_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(sample("inventory.csv")).unwrap();
    let mut lines = text.lines();
    let mut csv = lines.next().unwrap().to_string() + "\r\n";
    for l in lines.take(20) {
        let mut f: Vec<&str> = l.split(',').collect();
        f[9] = "München Büro";
        csv.push_str(&f.join(","));
        csv.push_str("\r\n");
    }
    let write = |name: &str, bytes: Vec<u8>| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let utf16: Vec<u8> = csv.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    let cp1252 = write(
        "cp1252.csv",
        csv.chars()
            .map(|c| match c {
                'ü' => 0xFC,
                c => u8::try_from(u32::from(c)).unwrap(),
            })
            .collect(),
    );
    let with_bom = write("utf16.csv", [&[0xFF, 0xFE][..], &utf16].concat());
    let no_bom = write("utf16-nobom.csv", utf16.clone());
    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend_from_slice(&[0; 60]);
    let workbook = write("fleet.xlsx", zip);

    // Read as it is: every row ENCODING_INVALID, and one hint for the file.
    let (out, output) = validate(&cp1252, &["--emit-valid"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("20 of 20 rows are not UTF-8")
            && stderr.contains("--encoding windows-1252"),
        "{stderr}"
    );
    drop(out);
    // Read with --encoding, and UTF-16 by itself: every row valid, the
    // site's text intact.
    for (input, extra) in [
        (&cp1252, &["--encoding", "windows-1252"][..]),
        (&with_bom, &[][..]),
        (&no_bom, &[][..]),
    ] {
        let mut args = vec!["--emit-valid"];
        args.extend(extra);
        let (out, output) = validate(input, &args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}: {stderr}",
            input.display()
        );
        assert!(!stderr.contains("not UTF-8"), "{stderr}");
        let valid = std::fs::read_to_string(out.path().join("valid.csv")).unwrap();
        assert_eq!(
            valid.matches("München Büro").count(),
            20,
            "{}",
            input.display()
        );
    }
    // A workbook: what to do, in one line; an unknown encoding: refused.
    let (_out, output) = validate(&workbook, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is an Excel workbook (.xlsx), not CSV") && stderr.contains("CSV UTF-8"),
        "{stderr}"
    );
    let (_out, output) = validate(&cp1252, &["--encoding", "klingon"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a text encoding refleet knows"));
}
