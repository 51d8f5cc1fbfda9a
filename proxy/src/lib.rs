//! strata-proxy: the caching HTTP front of Strata.
//!
//! Modules, one concern each, from the top floor down (a module uses only those below it):
//! - [`listen`]: binding the listeners, the accept loop and the worker threads;
//! - [`access`]: the access log's lines (event, combined, JSON) and its writer thread;
//! - [`admin`]: health, metrics, status, bans and the node-to-node sync; [`status`]: the
//!   `/status` page's numbers and charts; [`client`]: the `ban` command's side; [`cli`]: the
//!   command line;
//! - [`server`]: the request path (refuse, route, try_hit) and, in its rooms, lookups and
//!   delivery, fills and refreshes, the fill lock, pass-through, and the ban side;
//! - [`comments`]: comment POSTs queued in memcached for the syncer, answered like WordPress;
//! - [`shield`]: which node is a key's home, and asking it for a fill instead of the origin;
//! - [`cluster`]: broadcasting bans to siblings, and knowing this node holds all of theirs;
//! - [`bans`]: applying bans (URL, prefix, regex, tag, all; hard or soft) to the store;
//! - [`patch`]: comment patches applied to a stored page; [`patch_checks`]: which patched
//!   pages are checked against WordPress's render when, and how the two are compared;
//! - [`tags`]: what a stored response is tagged with; [`writes`]: which bans a write implies;
//! - [`freshness`]: may a response be stored, for how long, with how much grace, and what a
//!   `304` updates; [`validators`]: entity tags and conditional requests; [`ranges`]: byte
//!   ranges of a stored body;
//! - [`allow`]: address allow lists (single addresses and CIDR ranges);
//! - [`policy`]: pass or look up, the normalised host and cache key (WordPress rules);
//! - [`origin`]: the pooled origin client, its errors and the headers a request to it gets;
//! - [`config`]: TOML → validated [`config::Config`], every problem named by key;
//! - [`cache`]: the byte-bounded store with variants and hit-for-pass;
//! - [`tls`]: HTTPS certificates (SNI, reload), the handshake and ALPN, the HTTPS redirect;
//! - [`compress`]: compress once at store time, negotiate at delivery;
//! - [`framing`]: refusing ambiguous request framing before parsing;
//! - [`timer`]: the coarse header-read timer (slowloris guard); [`tune`]: the `tune` command;
//! - [`answer`]: the proxy's own answers and the `X-Cache`/`Cache-Status`/`Age` values;
//!   [`metrics`], [`outcome`], [`body`]: shared pieces on the ground floor.
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod allow;
pub mod answer;
pub mod bans;
pub mod body;
pub mod budget;
pub mod cache;
pub mod cli;
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
pub mod patch;
pub mod patch_checks;
pub mod policy;
pub mod ranges;
pub mod server;
pub mod shield;
pub mod status;
pub mod tags;
pub mod timer;
pub mod tls;
pub mod tune;
pub mod validators;
pub mod writes;

pub use listen::{bind, bind_all, local_target, run, run_reloadable, run_with, Listeners, Reload, TlsListener};
