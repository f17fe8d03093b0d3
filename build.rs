//! Marks the tests that need a tool this machine lacks, so that `cargo
//! test` lists them as ignored instead of passing them without running:
//! Chromium (`report.html` rendered), PostgreSQL (the shared ledger) and a
//! Python with polars, pyarrow and duckdb (Parquet read back).
//!
//! Each absent tool sets a `cfg` the tests carry as
//! `#[cfg_attr(no_chromium, ignore = "…")]`. In CI (`CI` set, and not
//! `false` or `0`) nothing is marked: there every tool must be present, and
//! a test whose tool is missing fails. The probes follow the tests' own
//! (`REFLEET_CHROMIUM`, `REFLEET_PG_BINDIR`, `REFLEET_PYTHON`), and run
//! again when those, `PATH` or the places the tools install into change.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    for cfg in ["no_chromium", "no_postgres", "no_python_readers"] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    for var in [
        "CI",
        "PATH",
        "REFLEET_CHROMIUM",
        "REFLEET_PG_BINDIR",
        "REFLEET_PYTHON",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    for dir in ["/usr/bin", "/usr/lib/postgresql"] {
        if Path::new(dir).is_dir() {
            println!("cargo::rerun-if-changed={dir}");
        }
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if ci {
        return;
    }
    if !has_chromium() {
        println!("cargo::rustc-cfg=no_chromium");
    }
    if !has_postgres() {
        println!("cargo::rustc-cfg=no_postgres");
    }
    if !has_python_readers() {
        println!("cargo::rustc-cfg=no_python_readers");
    }
}

/// `name` in a directory of `PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

fn has_chromium() -> bool {
    std::env::var_os("REFLEET_CHROMIUM").is_some()
        || ["chromium", "chromium-browser"].iter().any(|n| on_path(n))
}

/// The server's tools in `REFLEET_PG_BINDIR`, or a Debian install, or
/// where `pg_config` says (as `tests/pg/mod.rs` looks for them).
fn has_postgres() -> bool {
    const TOOLS: [&str; 5] = ["initdb", "pg_ctl", "postgres", "pg_isready", "psql"];
    let complete = |dir: &Path| TOOLS.iter().all(|tool| dir.join(tool).is_file());
    if let Some(dir) = std::env::var_os("REFLEET_PG_BINDIR") {
        return complete(Path::new(&dir));
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .collect();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = String::from_utf8_lossy(&out.stdout);
            candidates.push(PathBuf::from(dir.trim()));
        }
    }
    candidates.iter().any(|dir| complete(dir))
}

fn has_python_readers() -> bool {
    let python = std::env::var("REFLEET_PYTHON").unwrap_or_else(|_| "python3".into());
    Command::new(python)
        .args(["-c", "import polars, pyarrow, duckdb"])
        .output()
        .is_ok_and(|o| o.status.success())
}
