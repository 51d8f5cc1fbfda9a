//! Wire formats shared by the Strata programs.
//!
//! Everything two Strata programs say to each other is defined here once, so the sender and
//! the receiver can never disagree: the signed admin request, the ban and the node-to-node
//! ban exchange, and the comment queue shared by the proxy and the syncer. So is what both
//! must read of a comment alike: the ports of the PHP functions they apply to its fields.
// Unsafe code is denied everywhere but in one reviewed call (notify: reading the monotonic
// clock the service manager compares against).
#![deny(unsafe_code)]

pub mod auth;
pub mod ban;
pub mod comment;
pub mod config;
pub mod exposition;
pub mod ids;
#[cfg(feature = "logging")]
pub mod logging;
pub mod memcache;
#[cfg(feature = "notify")]
pub mod notify;
pub mod patch;
pub mod php;
pub mod process;
pub mod redirect;
