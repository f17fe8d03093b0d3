//! Tests of the PostgreSQL ledger that need no server (`tests/pg/` has the rest).

use super::quota::gcra;
use super::*;

#[test]
fn gcra_costs_one_interval_a_request_and_tolerates_a_burst() {
    let (cost, tolerance) = gcra(20.0, 5, 2);
    assert!((cost - 0.1).abs() < 1e-12);
    assert!((tolerance - 0.25).abs() < 1e-12);
}

#[test]
fn the_url_wins_and_pg_variables_fill_what_it_leaves_out() {
    let vars: std::collections::HashMap<&str, &str> = [
        ("PGHOST", "db.internal"),
        ("PGPORT", "6543"),
        ("PGUSER", "runner"),
        ("PGPASSWORD", "from-env"),
        ("PGDATABASE", "fleet"),
        ("PGCONNECT_TIMEOUT", "7"),
    ]
    .into();
    let env = |k: &str| vars.get(k).map(|v| v.to_string());
    let c = config_of("postgres://", env).unwrap();
    assert_eq!(label(&c), "db.internal:6543/fleet");
    assert_eq!(c.get_user(), Some("runner"));
    assert_eq!(c.get_password(), Some(&b"from-env"[..]));
    assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(7)));
    assert_eq!(c.get_application_name(), Some("refleet"));
    let c = config_of("postgres://admin:pw@primary:5432/ledger", env).unwrap();
    assert_eq!(label(&c), "primary:5432/ledger");
    assert_eq!(c.get_user(), Some("admin"));
    assert_eq!(c.get_password(), Some(&b"pw"[..]));
    let c = config_of("host=h port=1 dbname=d user=u", |_| None).unwrap();
    assert_eq!(label(&c), "h:1/d");
    for (k, v) in [("PGPORT", "99999"), ("PGCONNECT_TIMEOUT", "0")] {
        let err = config_of("postgres://", |name| (name == k).then(|| v.to_string()));
        assert!(err.is_err(), "{k}={v}");
    }
    assert!(config_of("mysql://x", |_| None).is_err());
}

#[test]
fn a_label_never_holds_the_password() {
    let config: tokio_postgres::Config = "postgres://refleet:s3cret@db.example:6432/ledger"
        .parse()
        .unwrap();
    assert_eq!(label(&config), "db.example:6432/ledger");
}

#[test]
fn tls_is_used_when_sslmode_asks_for_it_and_its_options_leave_the_url() {
    use tokio_postgres::config::SslMode;
    let none = |_: &str| None;
    // No sslmode, or one that does not ask for TLS: a plain connection.
    for url in [
        "postgres://u@h/d",
        "postgres://u@h/d?sslmode=disable",
        "postgres://u@h/d?sslmode=prefer&application_name=x",
        "host=h dbname=d sslmode=allow",
    ] {
        let s = settings_of(url, none).unwrap();
        assert!(s.tls.is_none(), "{url}");
        assert_eq!(s.postgres.get_ssl_mode(), SslMode::Disable, "{url}");
    }
    assert_eq!(
        settings_of("postgres://u@h/d?sslmode=prefer&application_name=x", none)
            .unwrap()
            .postgres
            .get_application_name(),
        Some("x"),
        "other options stay"
    );
    // Asked for: required, whatever the spelling; PGSSLMODE when the URL
    // says nothing.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    for (url, env_mode) in [
        ("postgres://u@h/d?sslmode=require", None),
        ("postgres://u@h/d?sslmode=verify-full", None),
        ("host=h dbname=d sslmode=verify-ca", None),
        ("postgres://u@h/d", Some("require")),
    ] {
        let env = |k: &str| {
            (k == "PGSSLMODE")
                .then(|| env_mode.unwrap_or("").to_string())
                .filter(|v| !v.is_empty())
        };
        // A root certificate file that is not there is named.
        let with_root = if url.contains("://") {
            format!(
                "{url}{}sslrootcert={}",
                if url.contains('?') { "&" } else { "?" },
                missing.display()
            )
        } else {
            format!("{url} sslrootcert={}", missing.display())
        };
        let err = settings_of(&with_root, env).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("sslrootcert") && e.contains("missing.pem")),
            "{with_root}: {err:?}"
        );
    }
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = settings_of(
        &format!(
            "postgres://u@h/d?sslmode=require&sslrootcert={}",
            empty.display()
        ),
        none,
    )
    .err()
    .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("no certificate")),
        "{err:?}"
    );
    let err = settings_of("postgres://u@h/d?sslmode=sometimes", none).err();
    assert!(
        matches!(err, Some(LedgerError::Setting { ref name, .. }) if name == "sslmode"),
        "{err:?}"
    );
}
