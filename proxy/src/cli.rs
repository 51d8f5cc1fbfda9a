//! The command line of `strata-proxy`, here rather than in `main.rs` so that the manual
//! page and the shell completions are generated from the same definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Strata's caching HTTP front for WordPress-style sites.
#[derive(Parser)]
#[command(name = "strata-proxy", version, about)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short = 'c', global = true, default_value = "/etc/strata/proxy.toml")]
    pub config: PathBuf,
    /// Validate the configuration, print every problem, and exit (non-zero if any).
    #[arg(long)]
    pub check_config: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Sign an invalidation with the cluster secret and send it to this node's admin API.
    Ban(BanArgs),
    /// Compare a sysctl profile (sysctl/*.conf) with this kernel, or apply it.
    Tune(crate::tune::TuneArgs),
}

#[derive(Args)]
pub struct BanArgs {
    #[command(flatten)]
    pub target: BanTarget,
    /// Only this site (Host); gives --url and --prefix paths their host.
    #[arg(long)]
    pub host: Option<String>,
    /// Mark matches stale (served while refreshed) instead of removing them.
    #[arg(long)]
    pub soft: bool,
    /// Wait up to this many milliseconds for every sibling to acknowledge the ban.
    #[arg(long, value_name = "MS")]
    pub wait: Option<u64>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct BanTarget {
    /// Every object tagged T (e.g. post:12, list, html, or an origin's Surrogate-Key).
    #[arg(long, value_name = "T")]
    pub tag: Option<String>,
    /// One URL with all its variants: absolute (http://host/path) or a path with --host.
    #[arg(long)]
    pub url: Option<String>,
    /// Every URL starting with P: absolute (http://host/path) or a path (all hosts, or --host).
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// Every cache key (host/path?query) the regular expression R matches.
    #[arg(long, value_name = "R")]
    pub regex: Option<String>,
    /// Everything in the cache.
    #[arg(long)]
    pub all: bool,
}
