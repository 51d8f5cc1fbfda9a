//! strata-proxy: the caching HTTP front of Strata.
//!
//! Modules, one concern each:
//! - [`config`]: TOML → validated [`config::Config`], every problem named by key;
//! - [`policy`]: pass or look up, and the normalised cache key (WordPress rules);
//! - [`freshness`]: may a response be stored, for how long, with how much grace;
//! - [`cache`]: the byte-bounded store with variants and hit-for-pass;
//! - [`compress`]: compress once at store time, negotiate at delivery;
//! - [`origin`]: the pooled origin client and its errors;
//! - [`framing`]: refusing ambiguous request framing before parsing;
//! - [`server`]: the request path (refuse, pass, lookup, coalesced fill, grace);
//! - [`tags`]: what a stored response is tagged with; [`writes`]: which bans a write implies;
//! - [`bans`]: applying bans (URL, prefix, regex, tag, all; hard or soft) to the store;
//! - [`cluster`]: broadcasting bans to siblings, and knowing this node holds all of theirs;
//! - [`comments`]: comment POSTs queued in memcached for the syncer, answered like WordPress;
//! - [`admin`]: health, metrics, status, bans and the node-to-node sync; [`status`]: the
//!   `/status` page's numbers and charts; [`client`]: the `ban` command's side;
//! - [`timer`]: the coarse header-read timer (slowloris guard); [`tune`]: the `tune` command;
//! - [`tls`]: HTTPS certificates (SNI, reload), the handshake and ALPN, the HTTPS redirect;
//! - [`metrics`], [`outcome`], [`body`]: shared pieces.
#![forbid(unsafe_code)]

pub mod admin;
pub mod answer;
pub mod bans;
pub mod body;
pub mod cache;
pub mod client;
pub mod cluster;
pub mod comments;
pub mod compress;
pub mod config;
pub mod framing;
pub mod freshness;
pub mod listen;
pub mod metrics;
pub mod origin;
pub mod outcome;
pub mod policy;
pub mod server;
pub mod status;
pub mod tags;
pub mod timer;
pub mod tls;
pub mod tune;
pub mod writes;

pub use listen::{bind, bind_all, local_target, run, run_reloadable, run_with, Listeners, TlsListener};
