//! Where a run keeps its history, for the scenarios that run on both: the
//! SQLite journal (the default, in the state folder of the run's `--out`)
//! and a PostgreSQL ledger on a throwaway server (`crate::pg::Pg`).
//!
//! ```text
//! on_both!(scenario: scenario_on_sqlite, scenario_on_postgres);
//! fn scenario(store: Store) { … run_cmd(…, &store.args(&["--rate", "300"])) … }
//! ```

use std::path::{Path, PathBuf};

use crate::pg::Pg;

/// The lease of the ledger's runs in tests: short, so that a killed
/// runner's batches are taken over within the test's time.
pub(crate) const LEASE: &str = "2s";

pub(crate) enum Store {
    Sqlite,
    Postgres { pg: Pg, url: String },
}

impl Store {
    /// A ledger on a new server, or `None` when PostgreSQL is not installed
    /// (outside CI only: in CI that fails the test).
    pub(crate) fn postgres(test: &str) -> Option<Store> {
        let pg = Pg::start_or_skip(test)?;
        let url = pg.url();
        Some(Store::Postgres { pg, url })
    }

    /// `extra` and what makes a run use this store: nothing for the
    /// default journal; `--state URL` and a short lease for a ledger.
    pub(crate) fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = extra.to_vec();
        if let Store::Postgres { url, .. } = self {
            args.extend(["--state", url.as_str(), "--lease", LEASE]);
        }
        args
    }

    /// What makes `status`, `report` or `audit` read this store: nothing
    /// for the default journal, `--state URL` for a ledger.
    pub(crate) fn state_args(&self) -> Vec<&str> {
        match self {
            Store::Sqlite => Vec::new(),
            Store::Postgres { url, .. } => vec!["--state", url.as_str()],
        }
    }

    /// [`Store::args`] for runs on one history whatever their `--out`: a
    /// journal in `dir`, or the ledger.
    pub(crate) fn shared_args<'a>(&'a self, dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        match self {
            Store::Sqlite => {
                let mut args = extra.to_vec();
                args.extend(["--state", dir]);
                args
            }
            Store::Postgres { .. } => self.args(extra),
        }
    }

    /// The audit log of the runs writing to `out`: the journal's file, or
    /// the ledger's chain exported with `refleet audit export`.
    pub(crate) fn audit_log(&self, out: &Path) -> PathBuf {
        match self {
            Store::Sqlite => super::journal_of(out).with_file_name("audit.jsonl"),
            Store::Postgres { url, .. } => {
                let file = out.join("exported-audit.jsonl");
                super::refleet()
                    .args(["audit", "export", "--state", url, "--out"])
                    .arg(&file)
                    .assert()
                    .code(0);
                file
            }
        }
    }

    /// The event keys of the activations the audit log holds so far (none
    /// while it does not exist yet), read while a run may be writing it.
    pub(crate) fn logged_activations(&self, out: &Path) -> Vec<String> {
        let log = match self {
            Store::Sqlite => super::journal_of(out).with_file_name("audit.jsonl"),
            Store::Postgres { url, .. } => {
                let file = out.join("exported-audit.jsonl");
                let exported = super::refleet()
                    .args(["audit", "export", "--state", url, "--out"])
                    .arg(&file)
                    .output()
                    .unwrap();
                if !exported.status.success() {
                    return Vec::new();
                }
                file
            }
        };
        match std::fs::metadata(&log) {
            Ok(_) => super::activation_keys(&log),
            Err(_) => Vec::new(),
        }
    }

    /// `refleet audit verify` of this store's audit log passes.
    pub(crate) fn assert_audit_verifies(&self, out: &Path) {
        let mut cmd = super::refleet();
        cmd.args(["audit", "verify"]);
        match self {
            Store::Sqlite => cmd.arg(self.audit_log(out)),
            Store::Postgres { url, .. } => cmd.args(["--state", url]),
        };
        cmd.assert().code(0);
    }

    /// The ledger's server (PostgreSQL only).
    pub(crate) fn server(&self) -> &Pg {
        match self {
            Store::Postgres { pg, .. } => pg,
            Store::Sqlite => panic!("no server behind a SQLite store"),
        }
    }

    /// Waits (at most 30 s) until the ledger holds `n` accepted batches
    /// (PostgreSQL only; 0 until a runner has made the schema).
    pub(crate) fn wait_for_accepted(&self, n: u64) {
        let started = std::time::Instant::now();
        let accepted = "SELECT CASE WHEN to_regclass('batches') IS NULL THEN 0 ELSE 1 END";
        while started.elapsed() < std::time::Duration::from_secs(30) {
            if self.psql(accepted) == "1"
                && self
                    .psql("SELECT count(*) FROM batches WHERE state = 'accepted'")
                    .parse::<u64>()
                    .unwrap_or(0)
                    >= n
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("fewer than {n} accepted batches after 30 s");
    }

    /// Runs `sql` on the ledger (PostgreSQL only).
    pub(crate) fn psql(&self, sql: &str) -> String {
        match self {
            Store::Postgres { pg, .. } => pg.psql(sql),
            Store::Sqlite => panic!("psql on a SQLite store"),
        }
    }
}

/// Two tests of one scenario: on the SQLite journal and on a PostgreSQL
/// ledger.
macro_rules! on_both {
    ($scenario:ident: $sqlite:ident, $postgres:ident) => {
        #[test]
        fn $sqlite() {
            $scenario(crate::run::store::Store::Sqlite);
        }

        #[test]
        #[cfg_attr(
            no_postgres,
            ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
        )]
        fn $postgres() {
            if let Some(store) = crate::run::store::Store::postgres(stringify!($postgres)) {
                $scenario(store);
            }
        }
    };
}
pub(crate) use on_both;
