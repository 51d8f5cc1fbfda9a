//! Wire formats shared by the Strata programs.
//!
//! Everything two Strata programs say to each other is defined here once, so the sender and
//! the receiver can never disagree: today the signed admin request (purges and bans).
#![forbid(unsafe_code)]

pub mod auth;
