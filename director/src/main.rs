//! `strata-director`: run the director, or check a config.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use strata_director::admin::{self, Admin};
use strata_director::cli::Cli;
use strata_director::config::{Config, DataPlane};
use strata_director::control::{self, Control, Reload};
use strata_director::dataplane::{self, Shared, Worker};
use strata_director::flow::FlowTable;
use strata_director::iface::{self, Iface};
use strata_director::packet::Service;
use strata_director::sys::TxSocket;
use strata_director::xdp::{self, Xdp};
use strata_wire::notify;
use tokio::sync::{mpsc, watch};

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{}: {} problem(s):", path.display(), e.problems.len());
        for p in &e.problems {
            eprintln!("  {p}");
        }
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match load(&cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cli.check_config {
        println!("{}: ok", cli.config.display());
        return ExitCode::SUCCESS;
    }
    strata_wire::logging::init();
    match run(cli.config, cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-director: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf, cfg: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let iface = Iface::read(&cfg.interface)?;
    for w in iface::kernel_warnings(cfg.vip4, cfg.vip6) {
        tracing::warn!("{w}");
    }
    let _claim = iface::claim(&cfg.interface)?;
    let plan = control::initial_plan(&cfg, iface.mac);
    let flows = FlowTable::new(cfg.flows.capacity, cfg.flows.idle_timeout.as_millis() as u64);
    let shared = Arc::new(match start_xdp(&cfg, &plan.service)? {
        Some(x) => Shared::with_xdp(plan, flows, Arc::new(x)),
        None => Shared::new(plan, flows),
    });

    // Open every socket before announcing anything, so a failure leaves the segment alone.
    // Room for the MTU plus an Ethernet header with one VLAN tag.
    let max_frame = iface.mtu + 18;
    let group = (std::process::id() & 0xffff) as u16;
    let mut threads = Vec::new();
    for i in 0..cfg.workers {
        let worker = Worker::open(shared.clone(), iface.index, group, max_frame)
            .with_context(|| format!("cannot open packet sockets on {} (needs CAP_NET_RAW)", cfg.interface))?;
        let t = std::thread::Builder::new()
            .name(format!("strata-dp-{i}"))
            .spawn(move || {
                let result = worker.run();
                if let Err(e) = &result {
                    tracing::error!(error = %e, worker = i, "data-plane worker stopped; its share of flows is lost until restart");
                }
                result
            })
            .context("cannot start a worker thread")?;
        threads.push(t);
    }
    let announcer = TxSocket::open(iface.index).context("cannot open the announcing socket")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let result = rt.block_on(async {
        let admin_listener = tokio::net::TcpListener::bind(cfg.admin_listen)
            .await
            .with_context(|| format!("cannot bind admin_listen {}", cfg.admin_listen))?;
        tracing::info!(
            interface = %cfg.interface, mac = %iface.mac, vip = ?cfg.vip4, vip6 = ?cfg.vip6, ports = ?cfg.ports,
            nodes = cfg.backends.len(), workers = cfg.workers, admin = %admin_listener.local_addr()?,
            data_plane = shared.xdp.as_ref().map_or("af_packet", |x| x.mode().as_str()),
            "strata-director started"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let (reload_tx, reload_rx) = mpsc::channel(4);
        let control = Control::new(shared.clone(), cfg.clone(), iface.mac);
        let admin = Arc::new(Admin {
            shared: shared.clone(),
            nodes: control.info.clone(),
            started,
        });
        let control_task = tokio::spawn(control.run(reload_rx, stopped(stop_rx.clone())));
        let admin_task = tokio::spawn(admin::run(admin_listener, admin, stopped(stop_rx.clone())));

        // Gratuitous ARP: three times, so one lost frame does not leave stale caches.
        let plan = shared.plan();
        for _ in 0..3 {
            if let Err(e) = dataplane::announce(&announcer, &plan.service) {
                tracing::warn!(error = %e, "gratuitous ARP failed");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Packet sockets open, the admin listener bound, the VIP announced: a `Type=notify`
        // unit's start returns now.
        let vips: Vec<String> = cfg
            .vip4
            .map(|v| v.to_string())
            .into_iter()
            .chain(cfg.vip6.map(|v| v.to_string()))
            .collect();
        tell_manager(&notify::ready(&format!(
            "forwarding {} on {}; admin {}",
            vips.join(" and "),
            cfg.interface,
            cfg.admin_listen
        )));
        signals(&path, reload_tx).await;
        tell_manager(&notify::stopping("stopping"));
        let _ = stop_tx.send(true);
        let _ = control_task.await;
        let _ = admin_task.await;
        anyhow::Ok(())
    });
    shared.shutdown.store(true, Ordering::Relaxed);
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {} // logged when it happened
            Err(_) => tracing::error!("a worker panicked"),
        }
    }
    result
}

/// Loads and attaches the XDP program as `data_plane` says: `None` for the AF_PACKET plane.
/// `xdp` fails when neither native nor generic XDP attaches; `auto` then falls back to
/// AF_PACKET and logs why, unless another program holds the interface.
fn start_xdp(cfg: &Config, svc: &Service) -> anyhow::Result<Option<Xdp>> {
    let modes = [xdp::Mode::Native, xdp::Mode::Generic];
    let idle_ns = u64::try_from(cfg.flows.idle_timeout.as_nanos()).unwrap_or(u64::MAX);
    let start = || Xdp::start(&cfg.interface, &modes, svc, cfg.flows.capacity, idle_ns);
    match cfg.data_plane {
        DataPlane::AfPacket => Ok(None),
        DataPlane::Xdp => start()
            .map(Some)
            .with_context(|| format!("data_plane = \"xdp\" on {}", cfg.interface)),
        DataPlane::Auto => match start() {
            Ok(x) => Ok(Some(x)),
            Err(e) if e.is_busy() => Err(e).context("data_plane = \"auto\""),
            Err(e) => {
                tracing::warn!(error = %e, "data_plane = \"auto\": XDP unavailable; forwarding with AF_PACKET in user space");
                Ok(None)
            }
        },
    }
}

/// Tells the service manager (systemd, when it started this process) what the director is
/// doing; a failure is logged and changes nothing else.
fn tell_manager(message: &str) {
    if let Err(e) = notify::send(message) {
        tracing::warn!(error = %e, "cannot tell the service manager");
    }
}

/// Waits for SIGTERM/SIGINT; on SIGHUP re-reads the config and hands it to the control
/// plane, the service manager hearing `RELOADING=1` then `READY=1` once it is applied or
/// refused.
async fn signals(path: &std::path::Path, reload: mpsc::Sender<Reload>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received; stopping"); return; }
            _ = int.recv() => { tracing::info!("SIGINT received; stopping"); return; }
            _ = hup.recv() => {
                tell_manager(&notify::reloading(notify::monotonic_usec(), &format!("reloading {}", path.display())));
                let status = reload_once(path, &reload).await;
                tell_manager(&notify::ready(&status));
            }
        }
    }
}

/// Reads the configuration again and waits until the control plane has applied it; returns
/// the `STATUS=` saying what happened.
async fn reload_once(path: &std::path::Path, reload: &mpsc::Sender<Reload>) -> String {
    match Config::load(path) {
        Ok(cfg) => {
            let (applied, done) = tokio::sync::oneshot::channel();
            let asked = Reload {
                config: cfg,
                applied: Some(applied),
            };
            if reload.send(asked).await.is_err() {
                return "stopping".to_string();
            }
            match done.await {
                Ok(stuck) if stuck.is_empty() => "configuration reloaded".to_string(),
                Ok(stuck) => format!(
                    "configuration reloaded; changed but take a restart: {}",
                    stuck.join(", ")
                ),
                Err(_) => "stopping".to_string(),
            }
        }
        Err(e) => {
            tracing::error!(
                "SIGHUP: {} has {} problem(s); keeping the running config",
                path.display(),
                e.problems.len()
            );
            for p in &e.problems {
                tracing::error!("  {p}");
            }
            format!("configuration refused, the running one stays: {e}")
        }
    }
}
