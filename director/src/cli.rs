//! The command line of `strata-director`, here rather than in `main.rs` so that the manual
//! page and the shell completions are generated from the same definitions.

use std::path::PathBuf;

use clap::Parser;

/// Strata's L2 direct-server-return load balancer: answers ARP for the VIP, Maglev-hashes
/// each flow to a healthy proxy node and rewrites only the Ethernet addresses.
///
/// Signals: SIGHUP reloads the config (pinned flows are kept); SIGTERM/SIGINT stop.
#[derive(Parser)]
#[command(name = "strata-director", version, about, long_about)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short = 'c', default_value = "/etc/strata/director.toml")]
    pub config: PathBuf,
    /// Validate the configuration, print every problem, and exit (non-zero if any).
    #[arg(long)]
    pub check_config: bool,
}
