//! The command line of `strata-syncer`, here rather than in `main.rs` so that the manual
//! page and the shell completions are generated from the same definitions.

use std::path::PathBuf;

use clap::Parser;

/// Drains Strata's comment queue into WordPress's database.
#[derive(Parser)]
#[command(name = "strata-syncer", version, about)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short = 'c', default_value = "/etc/strata/syncer.toml")]
    pub config: PathBuf,
    /// Validate the configuration, print every problem, and exit (non-zero if any).
    #[arg(long)]
    pub check_config: bool,
}
