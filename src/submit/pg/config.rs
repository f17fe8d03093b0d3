//! Connections to the ledger: their settings from a URL and the `PG*` variables, their label, and opening one.
//!
//! TLS is used when the URL (or `PGSSLMODE`) asks for it: `sslmode=require`,
//! `verify-ca` or `verify-full`. refleet then always checks the server's
//! certificate and its name (libpq's `verify-full`), against the CA
//! certificates of `sslrootcert` (or `PGSSLROOTCERT`: a PEM file) or else
//! the system's. `disable`, `allow` and `prefer` (and no `sslmode`)
//! connect without TLS, as before.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

use super::LedgerError;

/// How to reach the ledger: the connection's settings, and its TLS client
/// settings when the connection is to be encrypted.
#[derive(Clone)]
pub struct Settings {
    pub postgres: tokio_postgres::Config,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A new connection, its driver on the runtime.
pub(super) async fn open(settings: &Settings, label: &str) -> Result<Client, LedgerError> {
    let failed = |e| LedgerError::Connect(label.to_string(), e);
    let for_log = label.to_string();
    let lost = move |e: tokio_postgres::Error| {
        tracing::warn!(ledger = %for_log, error = %e, "connection to the ledger lost");
    };
    let client = match &settings.tls {
        None => {
            let (client, connection) = settings.postgres.connect(NoTls).await.map_err(failed)?;
            tokio::spawn(async move { connection.await.unwrap_or_else(lost) });
            client
        }
        Some(tls) => {
            let tls =
                tokio_postgres_rustls::MakeRustlsConnect::new(rustls::ClientConfig::clone(tls));
            let (client, connection) = settings.postgres.connect(tls).await.map_err(failed)?;
            tokio::spawn(async move { connection.await.unwrap_or_else(lost) });
            client
        }
    };
    // The ledger's statements are short and many: compiling one with JIT
    // costs more than running it.
    client
        .batch_execute("SET jit = off")
        .await
        .map_err(|e| LedgerError::Db(label.to_string(), e))?;
    Ok(client)
}

/// [`config_of`], and TLS as `sslmode` and `sslrootcert` (in the URL, or
/// `PGSSLMODE` and `PGSSLROOTCERT`) ask: see the module's docs.
pub fn settings_of(
    url: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Settings, LedgerError> {
    let (rest, mode, root) = take_tls_options(url);
    let mut postgres = config_of(&rest, &env)?;
    let mode = mode.or_else(|| env("PGSSLMODE"));
    let encrypt = match mode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => false,
        Some("require" | "verify-ca" | "verify-full") => true,
        Some(other) => {
            return Err(LedgerError::Setting {
                name: "sslmode".into(),
                value: other.into(),
            })
        }
    };
    if !encrypt {
        postgres.ssl_mode(SslMode::Disable);
        return Ok(Settings {
            postgres,
            tls: None,
        });
    }
    postgres.ssl_mode(SslMode::Require);
    let root = root.or_else(|| env("PGSSLROOTCERT")).map(PathBuf::from);
    Ok(Settings {
        postgres,
        tls: Some(Arc::new(tls_config(root.as_deref())?)),
    })
}

/// `url` without its `sslmode` and `sslrootcert` options (tokio-postgres
/// knows neither `verify-full` nor `sslrootcert`), and their values.
fn take_tls_options(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if is_url {
        let Ok(mut parsed) = reqwest::Url::parse(url) else {
            return (url.to_string(), None, None);
        };
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .filter_map(|(k, v)| match k.as_ref() {
                "sslmode" => {
                    mode = Some(v.into_owned());
                    None
                }
                "sslrootcert" => {
                    root = Some(v.into_owned());
                    None
                }
                _ => Some((k.into_owned(), v.into_owned())),
            })
            .collect();
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
        return (parsed.into(), mode, root);
    }
    // libpq's `key=value` form: unquoted values only.
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|token| {
            if let Some(v) = token.strip_prefix("sslmode=") {
                mode = Some(v.to_string());
                false
            } else if let Some(v) = token.strip_prefix("sslrootcert=") {
                root = Some(v.to_string());
                false
            } else {
                true
            }
        })
        .collect();
    (kept.join(" "), mode, root)
}

/// A TLS client that checks the server's certificate chain and name
/// against the CA certificates in `root` (PEM), or the system's.
fn tls_config(root: Option<&std::path::Path>) -> Result<rustls::ClientConfig, LedgerError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let tls = |why: String| LedgerError::Tls(why);
    let mut roots = rustls::RootCertStore::empty();
    match root {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| tls(format!("sslrootcert {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(tls(format!(
                    "sslrootcert {}: no certificate in it",
                    path.display()
                )));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| tls(format!("sslrootcert {}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(tls(
                    "no CA certificates on this system to check the server's: give sslrootcert=FILE (or PGSSLROOTCERT)".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The connection settings of `url` (`postgres://user@host:port/db?…`,
/// or libpq's `key=value` form), with what it leaves out taken from the
/// `PG*` variables as libpq takes them (`env` reads one): `PGHOST`,
/// `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGCONNECT_TIMEOUT`,
/// `PGAPPNAME`. The URL wins over a variable.
pub fn config_of(
    url: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<tokio_postgres::Config, LedgerError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(LedgerError::Url)?;
    let bad = |name: &str, value: &str| LedgerError::Setting {
        name: name.to_string(),
        value: value.to_string(),
    };
    if config.get_hosts().is_empty() {
        if let Some(hosts) = env("PGHOST") {
            for h in hosts.split(',').filter(|h| !h.is_empty()) {
                config.host(h);
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(port) = env("PGPORT") {
            let p = port.parse::<u16>().map_err(|_| bad("PGPORT", &port))?;
            config.port(p);
        }
    }
    if config.get_user().is_none() {
        if let Some(user) = env("PGUSER") {
            config.user(&user);
        }
    }
    if config.get_password().is_none() {
        if let Some(password) = env("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env("PGDATABASE") {
            config.dbname(&db);
        }
    }
    if config.get_connect_timeout().is_none() {
        if let Some(secs) = env("PGCONNECT_TIMEOUT") {
            // libpq: seconds, 0 or less for none; refleet takes 1..=3600.
            let s = secs
                .parse::<u64>()
                .ok()
                .filter(|s| (1..=3600).contains(s))
                .ok_or_else(|| bad("PGCONNECT_TIMEOUT", &secs))?;
            config.connect_timeout(Duration::from_secs(s));
        }
    }
    if config.get_application_name().is_none() {
        config.application_name(env("PGAPPNAME").unwrap_or_else(|| "refleet".into()));
    }
    Ok(config)
}

/// `host:port/database` of a connection's settings.
pub(super) fn label(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""))
}
