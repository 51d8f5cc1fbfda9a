//! `strata-proxy`: run the caching proxy, check a config, or send a signed ban.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use strata_proxy::cli::{BanArgs, Cli, Command};
use strata_proxy::client;
use strata_proxy::config::Config;
use strata_wire::ban::{Ban, Kind};
use strata_wire::notify;

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{}: {} problem(s):", path.display(), e.problems.len());
        for p in &e.problems {
            eprintln!("  {p}");
        }
        ExitCode::from(2)
    })
}

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
    tell_manager(&notify::stopping("finishing in-flight requests"));
}

/// Tells the service manager (systemd, when it started this process) what the proxy is
/// doing; a failure is logged and changes nothing else.
fn tell_manager(message: &str) {
    if let Err(e) = notify::send(message) {
        tracing::warn!(error = %e, "cannot tell the service manager");
    }
}

/// How often freed heap memory is handed back to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Hands freed heap pages back to the kernel, periodically.
///
/// Cached objects come and go in many sizes; glibc's allocator keeps the pages of freed
/// objects resident until told otherwise, so without this the process would hold far more
/// than `cache.capacity` after churn. `malloc_trim` returns every wholly free page.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn start_trimmer() {
    let spawned = std::thread::Builder::new().name("strata-trim".into()).spawn(|| loop {
        std::thread::sleep(TRIM_INTERVAL);
        // SAFETY: malloc_trim only releases free memory inside the allocator; it takes the
        // allocator's own locks and touches no memory owned by Rust code.
        unsafe {
            libc::malloc_trim(0);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the heap trimmer; memory use may exceed the cache capacity");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn start_trimmer() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `tune` works on the kernel, not on a proxy configuration.
    if let Some(Command::Tune(t)) = &cli.command {
        return strata_proxy::tune::run(t);
    }
    let cfg = match load(&cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cli.check_config {
        println!("{}: ok", cli.config.display());
        return ExitCode::SUCCESS;
    }
    strata_wire::logging::init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Some(Command::Ban(b)) => ban(cfg, b).await,
            Some(Command::Tune(_)) => Ok(()), // handled above, before the configuration
            None => {
                start_trimmer();
                serve(cfg, cli.config.clone()).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cfg: Config, path: PathBuf) -> anyhow::Result<()> {
    let listeners = strata_proxy::bind_all(&cfg).await.with_context(|| {
        let tls = cfg
            .server
            .tls
            .as_ref()
            .map(|t| format!(" / {}", t.listen))
            .unwrap_or_default();
        format!("cannot bind {} / {}{tls}", cfg.server.listen, cfg.server.admin_listen)
    })?;
    let (reload, reloads) = tokio::sync::mpsc::unbounded_channel();
    reload_on_sighup(listeners.tls.as_ref().map(|t| t.certs.clone()), path, reload);
    // Every listener is bound and listening (connections wait in its backlog until the
    // accept loop below takes them) and SIGHUP is handled: a `Type=notify` unit's start
    // returns now.
    tell_manager(&notify::ready(&serving(&listeners)));
    strata_proxy::run_reloadable(listeners, cfg, shutdown_signal(), reloads).await;
    Ok(())
}

/// The `STATUS=` of a running proxy: where it listens.
fn serving(l: &strata_proxy::Listeners) -> String {
    let addr = |t: &tokio::net::TcpListener| t.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string());
    let tls = l
        .tls
        .as_ref()
        .map(|t| format!(", https {}", addr(&t.listener)))
        .unwrap_or_default();
    format!("serving http {}{tls}, admin {}", addr(&l.public), addr(&l.admin))
}

/// From now on, SIGHUP reads the configuration file again and applies what can change
/// without a restart (cache lifetimes, policy, purge and admin allowlists…; the proxy logs
/// the keys that take a restart), and the certificate and key files (when TLS is on). A
/// file with problems is refused, each problem logged with its key, and the running
/// configuration stays; so do the old certificates on any error. The handler is installed
/// before this returns, so no SIGHUP after it stops the process (`systemctl reload` never
/// empties the cache).
///
/// The service manager hears `RELOADING=1` when the signal arrives and `READY=1` once the
/// new configuration is applied or refused, with a `STATUS=` saying which.
fn reload_on_sighup(
    certs: Option<std::sync::Arc<strata_proxy::tls::Certs>>,
    path: PathBuf,
    reload: tokio::sync::mpsc::UnboundedSender<strata_proxy::Reload>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the configuration will not be reloaded");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tell_manager(&notify::reloading(
                notify::monotonic_usec(),
                &format!("reloading {}", path.display()),
            ));
            let mut status = match Config::load(&path) {
                Ok(cfg) => {
                    let (applied, done) = tokio::sync::oneshot::channel();
                    let asked = strata_proxy::Reload {
                        config: cfg,
                        applied: Some(applied),
                    };
                    if reload.send(asked).is_err() {
                        return;
                    }
                    match done.await {
                        Ok(restart) if restart.is_empty() => "configuration reloaded".to_string(),
                        Ok(restart) => format!(
                            "configuration reloaded; changed but take a restart: {}",
                            restart.join(", ")
                        ),
                        Err(_) => return, // the proxy is stopping
                    }
                }
                Err(e) => {
                    for p in &e.problems {
                        tracing::error!(key = %p.key, problem = %p.message, "SIGHUP: configuration refused");
                    }
                    tracing::error!(
                        file = %path.display(),
                        "SIGHUP: configuration not reloaded; the running one stays"
                    );
                    format!("configuration refused, the running one stays: {e}")
                }
            };
            match certs.as_ref().map(|c| c.reload()) {
                Some(Ok(n)) => tracing::info!(certificates = n, "SIGHUP: certificates reloaded"),
                Some(Err(e)) => {
                    tracing::error!(error = %e, "SIGHUP: certificates not reloaded; keeping the ones in use");
                    status.push_str("; certificates not reloaded");
                }
                None => {}
            }
            tell_manager(&notify::ready(&status));
        }
    });
}

async fn ban(cfg: Config, b: BanArgs) -> anyhow::Result<()> {
    let t = b.target;
    let (kind, value) = if let Some(v) = t.tag {
        (Kind::Tag, v)
    } else if let Some(v) = t.url {
        (Kind::Url, v)
    } else if let Some(v) = t.prefix {
        (Kind::Prefix, v)
    } else if let Some(v) = t.regex {
        (Kind::Regex, v)
    } else if t.all {
        (Kind::All, String::new())
    } else {
        anyhow::bail!("give one of --tag, --url, --prefix, --regex, --all");
    };
    let ban = Ban {
        kind,
        value,
        host: b.host,
        soft: b.soft,
        bounded: false,
        id: 0,
        patch: None,
    };
    let addr = strata_proxy::local_target(cfg.server.admin_listen);
    let answer = client::send_ban(addr, &cfg.cluster.secret, &ban, b.wait).await?;
    println!("{answer}");
    Ok(())
}
