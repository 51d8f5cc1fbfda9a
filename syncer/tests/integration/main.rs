//! Integration tests of strata-syncer against the real MariaDB, memcached and WordPress of
//! the test machine (scripts/wordpress.sh and scripts/memcached.sh bring them up).

mod harness;

mod bans;
mod batch;
mod crash;
mod e2e;
mod flood;
mod notify;
mod queue;
mod rules;
mod tls;
