//! Diagnostics through `tracing`, on stderr, off unless `REFLEET_LOG` asks
//! (e.g. `REFLEET_LOG=debug`). Never logs secrets.

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
