//! `--config FILE` (or `REFLEET_CONFIG`): a TOML file of settings for
//! scheduled runs, with the precedence flags > environment > file >
//! defaults. Each key is a flag's long name (`rate`, `batch-size` or
//! `batch_size`, `api-url`, `state`, …); it fills the flag's `REFLEET_*`
//! environment variable when that is not set, so clap's own precedence does
//! the rest. Secrets never come from here: the API token is read from
//! `REFLEET_API_TOKEN` or `--token-file` only.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::CommandFactory;

use super::{Cli, UsageError};

/// The config file named by `--config FILE`, `--config=FILE` or `REFLEET_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("REFLEET_CONFIG").map(PathBuf::from)
}

/// Every `REFLEET_*` variable a flag reads.
fn known_env() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env().and_then(|e| e.to_str()) {
                out.insert(env.to_string());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&Cli::command(), &mut out);
    out.remove("REFLEET_CONFIG");
    out.remove("REFLEET_SIM_TOKEN");
    out
}

/// The `(variable, value)` pairs a config file sets, checked against the flags.
pub(super) fn settings(text: &str, origin: &str) -> Result<Vec<(String, String)>, UsageError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e| UsageError(format!("config {origin}: {e}")))?;
    let known = known_env();
    let mut out = Vec::new();
    for (key, value) in table {
        let var = format!("REFLEET_{}", key.to_ascii_uppercase().replace('-', "_"));
        if key.contains("token") && var != "REFLEET_TOKEN_FILE" {
            return Err(UsageError(format!(
                "config {origin}: `{key}`: the API token never goes in a config file; set REFLEET_API_TOKEN or token-file"
            )));
        }
        if !known.contains(&var) {
            let names: Vec<String> = known
                .iter()
                .map(|v| {
                    v.trim_start_matches("REFLEET_")
                        .to_ascii_lowercase()
                        .replace('_', "-")
                })
                .collect();
            return Err(UsageError(format!(
                "config {origin}: unknown setting `{key}` (known: {})",
                names.join(", ")
            )));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(UsageError(format!(
                    "config {origin}: `{key}` must be a string, number or boolean, not {}",
                    other.type_str()
                )))
            }
        };
        out.push((var, value));
    }
    Ok(out)
}

/// Reads the config file, if any, into the environment (only variables
/// not already set: the environment wins over the file). Called once, at
/// start-up, before any thread exists.
pub(super) fn apply(args: &[OsString]) -> Result<(), UsageError> {
    let Some(path) = config_path(args) else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| UsageError(format!("config {}: {e}", path.display())))?;
    for (var, value) in settings(&text, &path.display().to_string())? {
        if std::env::var_os(&var).is_none() {
            std::env::set_var(var, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_flag_names_and_secrets_are_refused() {
        let got = settings(
            "rate = 12.5\nbatch-size = 50\ndry_run = true\napi-url = \"https://x\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            got,
            [
                ("REFLEET_API_URL".to_string(), "https://x".to_string()),
                ("REFLEET_BATCH_SIZE".into(), "50".into()),
                ("REFLEET_DRY_RUN".into(), "true".into()),
                ("REFLEET_RATE".into(), "12.5".into()),
            ]
        );
        assert!(settings("api_token = \"s\"", "t")
            .unwrap_err()
            .0
            .contains("never"));
        assert!(settings("colour = 1", "t")
            .unwrap_err()
            .0
            .contains("unknown setting `colour`"));
        assert!(settings("rate = [1]", "t").is_err());
    }

    #[test]
    fn the_path_comes_from_the_flag() {
        let args: Vec<OsString> = ["refleet", "run", "--config", "a.toml"]
            .map(Into::into)
            .to_vec();
        assert_eq!(config_path(&args), Some(PathBuf::from("a.toml")));
        let args: Vec<OsString> = ["refleet", "--config=b.toml", "run"]
            .map(Into::into)
            .to_vec();
        assert_eq!(config_path(&args), Some(PathBuf::from("b.toml")));
    }
}
