//! Integration tests: strata-proxy in process, in front of the real WordPress origin
//! (`scripts/wordpress.sh`) or, for HTTP edge cases WordPress never produces, a small
//! programmable origin.

mod admin_plane;
mod allow;
mod attacks;
mod budget;
mod cluster;
mod comments;
mod conformance;
mod fixture;
mod h2_attacks;
mod harness;
mod http_edges;
mod nodes;
mod notify;
mod patch_checks;
mod plugin;
mod plugin_admin;
mod raw;
mod reload;
mod shield;
mod status;
mod tls;
mod tune;
mod wordpress;
