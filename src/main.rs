//! The `refleet` binary: parse, run, map the outcome to an exit code (SPEC §7).

#![deny(unsafe_code)]

use std::process::ExitCode;

// Items are built on worker threads and freed on another: mimalloc handles
// that without the arena growth of glibc's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match refleet::cli::run() {
        Ok(outcome) => ExitCode::from(outcome.exit_code() as u8),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("refleet: {}", refleet::cli::error_text(err.as_ref()));
            if err.is::<refleet::cli::UsageError>() {
                ExitCode::from(2)
            } else if err.is::<refleet::app::Interrupted>() {
                ExitCode::from(4)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
