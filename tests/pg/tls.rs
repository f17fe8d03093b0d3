//! TLS to the ledger when the URL asks for it (`sslmode=require`,
//! `verify-ca`, `verify-full`): the server's certificate and name are
//! checked against `sslrootcert`; without `sslmode` the connection is plain.

use std::path::Path;
use std::process::Command;

use refleet::submit::pg::PgLedger;

use super::Pg;
use crate::refleet;

/// Makes a CA named `ca_name` and, unless `server` is false, a server
/// certificate it signs for 127.0.0.1 and localhost, in `dir`.
fn certificates(dir: &Path, ca_name: &str, server: bool) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (Debian's openssl package)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let subject = format!("/CN={ca_name}");
    let mut ca = vec![
        "req", "-x509", "-days", "2", "-keyout", "ca.key", "-out", "ca.crt", "-subj", &subject,
    ];
    ca.extend(ec);
    openssl(&ca);
    if server {
        let mut csr = vec![
            "req",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ];
        csr.extend(ec);
        openssl(&csr);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ]);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn the_ledger_is_reached_over_tls_when_the_url_asks_and_a_wrong_certificate_is_refused() {
    let Some(pg) = Pg::start_or_skip(
        "the_ledger_is_reached_over_tls_when_the_url_asks_and_a_wrong_certificate_is_refused",
    ) else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path(), "refleet test CA", true);
    pg.enable_tls(
        &certs.path().join("server.crt"),
        &certs.path().join("server.key"),
    );
    let root = certs.path().join("ca.crt");
    let tls_url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(),
        root.display()
    );

    // A runner over TLS makes the ledger; the server says the connection
    // was encrypted.
    runtime().block_on(async {
        PgLedger::connect(&tls_url, "tls-runner").await.unwrap();
    });
    let log = pg.log();
    assert!(log.contains("SSL enabled"), "the server saw TLS:\n{log}");

    // The command line takes the same URL; PGSSLMODE and PGSSLROOTCERT
    // do for a URL that says nothing.
    let export = refleet()
        .args(["audit", "export", "--quiet", "--state", &tls_url])
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let by_env = refleet()
        .args(["audit", "verify", "--state", &pg.url()])
        .env("PGSSLMODE", "require")
        .env("PGSSLROOTCERT", &root)
        .output()
        .unwrap();
    assert!(
        by_env.status.success(),
        "{}",
        String::from_utf8_lossy(&by_env.stderr)
    );

    // Another CA's certificate: refused, saying why.
    let other = tempfile::tempdir().unwrap();
    certificates(other.path(), "another CA", false);
    let wrong = format!(
        "{}?sslmode=require&sslrootcert={}",
        pg.url(),
        other.path().join("ca.crt").display()
    );
    let refused = refleet()
        .args(["audit", "verify", "--state", &wrong])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{text}");
    assert!(
        text.contains("cannot reach the PostgreSQL ledger"),
        "{text}"
    );
    assert!(text.to_lowercase().contains("certificate"), "{text}");

    // No sslmode: a plain connection, as before, to the same server.
    let before = pg.log().matches("SSL enabled").count();
    let plain = refleet()
        .args(["audit", "verify", "--state", &pg.url()])
        .output()
        .unwrap();
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let log = pg.log();
    assert_eq!(log.matches("SSL enabled").count(), before, "{log}");
}

#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn a_server_without_tls_is_refused_when_the_url_asks_for_it() {
    let Some(pg) = Pg::start_or_skip("a_server_without_tls_is_refused_when_the_url_asks_for_it")
    else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path(), "refleet test CA", false);
    let url = format!(
        "{}?sslmode=require&sslrootcert={}",
        pg.url(),
        certs.path().join("ca.crt").display()
    );
    let out = refleet()
        .args(["audit", "export", "--state", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("TLS"), "{text}");
}
