//! `refleet policy show`: the effective policy, built-in merged with --policy.

use clap::Subcommand;

use super::{Global, Outcome};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the effective policy as TOML.
    Show,
}

pub(super) fn run(command: Command, global: &Global) -> anyhow::Result<Outcome> {
    match command {
        Command::Show => {
            let policy = global.load_policy()?;
            print!("{}", policy.file.to_toml());
            Ok(Outcome::Success)
        }
    }
}
