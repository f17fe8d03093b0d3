//! Connections to the ledger: their settings from a URL and the `PG*` variables, their label, and opening one.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::LedgerError;

/// A new connection, its driver on the runtime.
pub(super) async fn open(
    config: &tokio_postgres::Config,
    label: &str,
) -> Result<Client, LedgerError> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| LedgerError::Connect(label.to_string(), e))?;
    let for_log = label.to_string();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(ledger = %for_log, error = %e, "connection to the ledger lost");
        }
    });
    Ok(client)
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
