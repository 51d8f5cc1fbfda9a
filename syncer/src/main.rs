//! `strata-syncer`: run the comment syncer, or check its configuration.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use strata_syncer::cli::Cli;
use strata_syncer::config::Config;
use strata_wire::notify;

/// mimalloc: every batch builds and frees SQL text, records and verdicts, which glibc's
/// allocator serves with locks and consolidation (a tenth of the syncer's CPU under load).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    tell_manager(&notify::stopping("finishing the round in progress"));
}

/// Tells the service manager (systemd, when it started this process) what the syncer is
/// doing; a failure is logged and changes nothing else.
fn tell_manager(message: &str) {
    if let Err(e) = notify::send(message) {
        tracing::warn!(error = %e, "cannot tell the service manager");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {} problem(s):", cli.config.display(), e.problems.len());
            for p in &e.problems {
                eprintln!("  {p}");
            }
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!("{}: ok", cli.config.display());
        return ExitCode::SUCCESS;
    }
    strata_wire::logging::init();
    // One thread: a round's steps follow one another, and the requests it sends meanwhile
    // are short. With two workers, a third of the syncer's CPU under load went to the two
    // waking each other (a profile), and its rounds took longer.
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-syncer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let admin = strata_syncer::bind(&cfg)
        .await
        .with_context(|| format!("cannot bind the admin listener {:?}", cfg.admin_listen))?;
    // The admin listener is bound and listening: a `Type=notify` unit's start returns now.
    // MySQL and memcached are not waited for: the syncer retries them and loses nothing.
    let status = match admin.as_ref().map(|l| l.local_addr()) {
        Some(Ok(a)) => format!("syncing; admin {a}"),
        _ => "syncing".to_string(),
    };
    tell_manager(&notify::ready(&status));
    strata_syncer::run(cfg, admin, shutdown_signal())
        .await
        .context("cannot start")?;
    Ok(())
}
