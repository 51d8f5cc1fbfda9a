//! `strata-syncer`: drains the comment queue that the proxies fill in memcached into
//! WordPress's MySQL tables, applying WordPress's comment rules exactly, once per comment,
//! then publishes each verdict and bans what changed.
//!
//! Modules, one concern each:
//! - [`config`]: the TOML file → validated [`config::Config`]; [`cli`]: the command line;
//! - [`queue`]: the memcached queue (epoch, counter, records) and restart detection;
//! - [`rules`]: WordPress's checks and approval as pure functions;
//! - [`format`], [`kses`], [`escape`]: ports of the WordPress filters a comment goes through
//!   (`escape` holds what the other two share);
//! - [`options`]: the site's options, as the rules read them;
//! - [`site`]: timezone, salts, settings and permalinks of the site;
//! - [`store`]: the MySQL transaction that applies a batch and moves the cursor;
//! - [`flood`]: the last hour's comments by address and e-mail, for the flood check;
//! - [`verdicts`]: the answer for each record (`Location`, cookies, errors);
//! - [`bans`]: signed bans to the proxies;
//! - [`wake`]: the proxies' word that a comment was queued, for an idle queue;
//! - [`syncer`]: one tick, separate from the timer in [`run`];
//! - [`pace`]: the timing of [`run`] (quick looks, backoff) as plain data;
//! - [`admin`], [`metrics`]: the admin listener and the metrics.
#![forbid(unsafe_code)]

pub mod admin;
pub mod bans;
pub mod cli;
pub mod config;
pub mod date;
pub mod escape;
pub mod flood;
pub mod format;
#[cfg(test)]
mod golden;
pub mod kses;
pub mod metrics;
pub mod options;
pub mod pace;
pub mod patches;
pub mod queue;
pub mod rules;
pub mod site;
pub mod store;
pub mod syncer;
pub mod verdicts;
pub mod wake;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pace::{Pace, Wait};
use crate::syncer::Syncer;

/// Binds the admin listener, if configured.
///
/// Errors: the address cannot be bound.
pub async fn bind(cfg: &Config) -> std::io::Result<Option<TcpListener>> {
    match cfg.admin_listen {
        Some(addr) => Ok(Some(TcpListener::bind(addr).await?)),
        None => Ok(None),
    }
}

/// Runs the syncer: a round every `interval` (while the queue is idle and every proxy
/// announces its comments, see [`wake`]: every `idle_interval`, and at once when one
/// does), every [`pace::QUICK_LOOK`] for `interval` after a
/// round that applied records, or at once after such a round
/// (whose bans and verdicts go out as soon as it commits, their answers and the memcached
/// writes then awaited during the next round's transaction, see [`Syncer::advance`]); failures retried with a growing pause, nothing is lost; the admin
/// API on `admin`; until `shutdown` completes: the round in progress then finishes and the
/// last batch's verdicts go out.
///
/// Errors: the MySQL URL is unusable.
pub async fn run(
    cfg: Config,
    admin: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), store::StoreError> {
    let metrics = Arc::new(Metrics::new());
    let interval = cfg.interval;
    let idle_interval = cfg.idle_interval;
    let wake = wake::Wake::new(&cfg.cluster.siblings, &cfg.cluster.secret, cfg.cluster.ban_timeout);
    let mut syncer = Syncer::new(cfg, metrics.clone())?;
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_task = admin.map(|listener| {
        let a = admin::Admin {
            metrics: metrics.clone(),
            status: syncer.status(),
        };
        tokio::spawn(a.serve(listener, async {
            let _ = admin_stopped.await;
        }))
    });
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pace = Pace::new(interval);
    tracing::info!(?interval, "syncer running");
    loop {
        match pace.wait(Instant::now(), syncer.unsettled()) {
            // While a batch is unsettled the next one starts at once: its transaction runs
            // while the proxies answer the previous batch's bans and verdicts.
            Wait::Nothing => {
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = std::future::ready(()) => {}
                }
            }
            Wait::Quick(pause) => {
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            Wait::Idle => {
                // While every proxy announces its comments, the queue is looked at as soon
                // as one does, and otherwise only every `idle_interval`.
                wake.set_idle(true);
                let announced = wake.announced();
                metrics.proxies_announcing.set(wake.announcing() as i64);
                tokio::select! {
                    () = &mut shutdown => break,
                    _ = ticker.tick(), if !announced => {}
                    () = tokio::time::sleep(idle_interval), if announced => {}
                    () = wake.queued() => {}
                }
            }
        }
        wake.set_idle(false);
        match syncer.advance().await {
            Ok(report) => {
                if report.applied == 0 {
                    syncer.settle().await;
                }
                if pace.succeeded(Instant::now(), report.applied) {
                    tracing::info!(cursor = report.cursor.seq, "recovered");
                }
            }
            Err(e) => {
                syncer.settle().await;
                let msg = e.to_string();
                let retry = pace.failed(Instant::now(), &msg);
                if retry.log {
                    tracing::error!(error = %msg, "tick failed; retrying (nothing is lost: the cursor did not move)");
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(retry.pause) => {}
                }
            }
        }
    }
    tracing::info!("shutting down");
    let _ = stop_admin.send(());
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    syncer.close().await;
    Ok(())
}
