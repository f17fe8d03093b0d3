//! Diagnostics through `tracing`, on stderr, off unless `REFLEET_LOG` asks
//! (e.g. `REFLEET_LOG=debug`); one JSON object per line with
//! `--log-format json`, for schedulers. Never logs secrets.

/// Logs to `stderr`: the CLI's makes a log line clear the progress line
/// and draws it again below (`cli::progress::log_line`). Colours only on a
/// terminal.
pub fn init<W>(json: bool, stderr: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("REFLEET_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
    };
    // Colours only for a person at a terminal: never escape codes in a
    // pipe, a file or a scheduler's log (nor with NO_COLOR set).
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_writer(stderr)
        .with_ansi(colours);
    let _ = if json {
        builder.json().with_env_filter(filter()).try_init()
    } else {
        builder.with_env_filter(filter()).try_init()
    };
}
