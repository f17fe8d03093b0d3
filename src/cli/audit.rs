//! `refleet audit verify FILE`: checks the hash chain of an audit log and
//! names the first broken record.

use std::path::PathBuf;

use super::{Global, Outcome};
use crate::report::audit;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Check every record's hash and link; exit 1 naming the first broken record.
    Verify {
        /// The audit log (audit.jsonl, beside the journal).
        file: PathBuf,
    },
}

pub(super) fn run(command: Command, global: &Global) -> anyhow::Result<Outcome> {
    match command {
        Command::Verify { file } => {
            let records = audit::verify(&file)?;
            if !global.quiet {
                println!("{}: {records} records, chain intact", file.display());
            }
            Ok(Outcome::Success)
        }
    }
}
