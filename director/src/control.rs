//! The control plane: health checks, MAC resolution, publishing plans, reloads, flow expiry.
//!
//! Lifecycle of a node: configured → `Down` (starts there) → `rise` good checks → `Up`
//! → `fall` bad checks → `Down` (its flows purged at once) → … A check is good when the
//! HTTP probe answers 2xx within `timeout` *and* the node's MAC is resolved. Every state
//! change is logged. On reload a node keeps its id, state, counters and pinned flows if its
//! `addr` is still configured; a new node starts `Down`; a removed node's flows are purged.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::balancer::{now_ms, NodeCounters, NodeView, Snapshot};
use crate::config::{Backend, Config};
use crate::dataplane::{Plan, Shared};
use crate::health::{Checker, State};
use crate::iface;
use crate::packet::{Mac, Service};

/// Seconds between two sweeps of the XDP flow maps (idle flows deleted, sizes recounted).
const XDP_SWEEP_TICKS: u64 = 5;

/// What the admin listener shows about a node besides the data-plane view.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Node id.
    pub id: u32,
    /// Node address.
    pub addr: IpAddr,
    /// The configured health URL.
    pub health_url: String,
    /// Health state.
    pub state: State,
    /// Configured weight.
    pub weight: u32,
    /// Resolved MAC.
    pub mac: Option<Mac>,
    /// When the state last changed.
    pub since: SystemTime,
    /// The last failed check's reason (empty once checks pass).
    pub last_error: String,
    /// Shared counters.
    pub counters: Arc<NodeCounters>,
}

/// The node list the admin listener reads.
pub type NodeTable = Arc<Mutex<Vec<NodeInfo>>>;

/// One configured node, as the control plane tracks it.
struct Node {
    /// Its configuration.
    backend: Backend,
    /// Its stable id (what flows are pinned to).
    id: u32,
    /// Fall/rise state.
    checker: Checker,
    /// MAC last resolved.
    mac: Option<Mac>,
    /// When its state last changed.
    since: SystemTime,
    /// Why the last check failed (empty after a pass).
    last_error: String,
    /// Counters shared with the data plane.
    counters: Arc<NodeCounters>,
    /// Its probe task, aborted on reload or removal.
    probe: Option<JoinHandle<()>>,
}

/// One check's outcome, sent by a probe task.
struct CheckResult {
    /// Which node.
    id: u32,
    /// HTTP 2xx in time and MAC resolved.
    ok: bool,
    /// The MAC found in the neighbour table.
    mac: Option<Mac>,
    /// Why it failed (empty when ok).
    error: String,
}

/// Runs `check` every `interval`, the first at once, and sends each result until `results`
/// closes. A check that outlasts the interval delays the next (checks never overlap, and
/// missed ones are not made up in a burst).
async fn check_every<F, Fut>(interval: Duration, mut check: F, results: mpsc::Sender<CheckResult>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = CheckResult>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if results.send(check().await).await.is_err() {
            return;
        }
    }
}

/// A configuration read again (on SIGHUP), for the control plane to apply.
pub struct Reload {
    /// The new configuration, already validated.
    pub config: Config,
    /// Told, once the new plan is published, the keys that changed but take a restart:
    /// whoever asked for the reload (the SIGHUP handler telling the service manager)
    /// learns when it is done.
    pub applied: Option<tokio::sync::oneshot::Sender<Vec<&'static str>>>,
}

/// The control plane's state.
pub struct Control {
    /// Where plans are published and flows purged.
    shared: Arc<Shared>,
    /// The running configuration.
    cfg: Config,
    /// The interface's MAC (the source of forwarded frames).
    our_mac: Mac,
    /// The configured nodes, in config order.
    nodes: Vec<Node>,
    /// Node address → id, so a node keeps its id across reloads.
    ids: HashMap<IpAddr, u32>,
    /// The id the next new address gets.
    next_id: u32,
    /// Cloned into every probe task.
    results_tx: mpsc::Sender<CheckResult>,
    /// Check results from all probe tasks.
    results: mpsc::Receiver<CheckResult>,
    /// What the admin listener shows.
    pub info: NodeTable,
}

/// The data-plane plan for a config and node list.
fn plan(cfg: &Config, our_mac: Mac, nodes: &[Node]) -> Plan {
    Plan {
        service: Service {
            mac: our_mac,
            vip4: cfg.vip4,
            vip6: cfg.vip6,
            ports: cfg.ports.clone(),
        },
        snapshot: Snapshot::new(
            nodes
                .iter()
                .map(|n| NodeView {
                    id: n.id,
                    addr: n.backend.addr,
                    mac: n.mac,
                    state: n.checker.state(),
                    weight: n.backend.weight,
                    counters: n.counters.clone(),
                })
                .collect(),
        ),
    }
}

/// The plan to start the data plane with: every node down until checked.
pub fn initial_plan(cfg: &Config, our_mac: Mac) -> Plan {
    plan(cfg, our_mac, &[])
}

impl Control {
    /// A control plane for `cfg`, publishing into `shared`.
    pub fn new(shared: Arc<Shared>, cfg: Config, our_mac: Mac) -> Control {
        let (results_tx, results) = mpsc::channel(1024);
        let mut c = Control {
            shared,
            cfg: cfg.clone(),
            our_mac,
            nodes: Vec::new(),
            ids: HashMap::new(),
            next_id: 0,
            results_tx,
            results,
            info: Arc::default(),
        };
        c.apply(cfg);
        c
    }

    fn id_for(&mut self, addr: IpAddr) -> u32 {
        *self.ids.entry(addr).or_insert_with(|| {
            self.next_id += 1;
            self.next_id - 1
        })
    }

    /// Takes a (new) config: keeps surviving nodes' state, (re)starts probes, publishes.
    fn apply(&mut self, cfg: Config) {
        let mut old: HashMap<IpAddr, Node> = self.nodes.drain(..).map(|n| (n.backend.addr, n)).collect();
        let mut nodes = Vec::new();
        for b in &cfg.backends {
            let node = match old.remove(&b.addr) {
                Some(mut n) => {
                    if n.backend.weight != b.weight {
                        tracing::info!(node = %b.addr, from = n.backend.weight, to = b.weight, "node weight changed{}", if b.weight == 0 { " (draining: existing flows stay, no new ones)" } else { "" });
                    }
                    n.backend = b.clone();
                    n.checker.retune(cfg.health.fall, cfg.health.rise);
                    n
                }
                None => {
                    tracing::info!(node = %b.addr, weight = b.weight, "node added; down until {} checks pass", cfg.health.rise);
                    Node {
                        backend: b.clone(),
                        id: self.id_for(b.addr),
                        checker: Checker::new(cfg.health.fall, cfg.health.rise),
                        mac: None,
                        since: SystemTime::now(),
                        last_error: "not checked yet".into(),
                        counters: Arc::default(),
                        probe: None,
                    }
                }
            };
            nodes.push(node);
        }
        let removed: Vec<u32> = old.values().map(|n| n.id).collect();
        for (addr, n) in old {
            tracing::info!(node = %addr, "node removed from the config; its flows are purged");
            if let Some(p) = n.probe {
                p.abort();
            }
        }
        self.nodes = nodes;
        self.cfg = cfg;
        for i in 0..self.nodes.len() {
            self.start_probe(i);
        }
        self.publish();
        if !removed.is_empty() {
            let shared = self.shared.clone();
            // Off the runtime: the XDP flow maps are walked with a syscall per flow.
            tokio::task::spawn_blocking(move || {
                let n = shared.purge(|id| removed.contains(&id));
                tracing::info!(flows = n, "purged the removed nodes' flows");
            });
        }
    }

    fn start_probe(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(p) = node.probe.take() {
            p.abort();
        }
        let (id, addr) = (node.id, node.backend.addr);
        let (interval, timeout) = (self.cfg.health.interval, self.cfg.health.timeout);
        let target = Arc::new((node.backend.probe.clone(), self.cfg.interface.clone()));
        let check = move || {
            let target = target.clone();
            async move {
                let (probe, dev) = &*target;
                let http = probe.check(timeout).await;
                let mac = iface::neighbor_mac(addr, dev);
                let (ok, error) = match (&http, mac) {
                    (Ok(()), Some(_)) => (true, String::new()),
                    (Ok(()), None) => (false, format!("MAC of {addr} not resolved on {dev}")),
                    (Err(e), _) => (false, format!("GET {}: {e}", probe.path)),
                };
                CheckResult { id, ok, mac, error }
            }
        };
        node.probe = Some(tokio::spawn(check_every(interval, check, self.results_tx.clone())));
    }

    fn publish(&mut self) {
        self.shared.publish(plan(&self.cfg, self.our_mac, &self.nodes));
        *self.info.lock() = self
            .nodes
            .iter()
            .map(|n| NodeInfo {
                id: n.id,
                addr: n.backend.addr,
                health_url: n.backend.health_url.clone(),
                state: n.checker.state(),
                weight: n.backend.weight,
                mac: n.mac,
                since: n.since,
                last_error: n.last_error.clone(),
                counters: n.counters.clone(),
            })
            .collect();
    }

    fn on_result(&mut self, r: CheckResult) {
        let Some(n) = self.nodes.iter_mut().find(|n| n.id == r.id) else {
            return; // a probe of a node removed meanwhile
        };
        if !r.ok {
            n.counters.check_failures.fetch_add(1, Ordering::Relaxed);
        }
        let mac_changed = r.mac.is_some() && r.mac != n.mac;
        if mac_changed {
            if let (Some(old), Some(new)) = (n.mac, r.mac) {
                tracing::warn!(node = %n.backend.addr, %old, %new, "node MAC changed");
            }
            n.mac = r.mac;
        }
        let error_changed = n.last_error != r.error;
        n.last_error = r.error;
        let changed = n.checker.record(r.ok);
        if let Some(state) = changed {
            n.since = SystemTime::now();
            n.counters.transitions.fetch_add(1, Ordering::Relaxed);
            match state {
                State::Up => {
                    tracing::info!(node = %n.backend.addr, mac = %n.mac.unwrap_or_default(), "node up: passed {} checks in a row", self.cfg.health.rise)
                }
                State::Down => {
                    tracing::warn!(node = %n.backend.addr, reason = %n.last_error, "node down: failed {} checks in a row; purging its flows", self.cfg.health.fall)
                }
            }
        }
        let down_id = (changed == Some(State::Down)).then_some(n.id);
        if changed.is_some() || mac_changed {
            self.publish();
        } else if error_changed {
            let info = &mut *self.info.lock();
            if let (Some(i), Some(n)) = (
                info.iter_mut().find(|i| i.id == r.id),
                self.nodes.iter().find(|n| n.id == r.id),
            ) {
                i.last_error = n.last_error.clone();
            }
        }
        if let Some(id) = down_id {
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || {
                let purged = shared.purge(|x| x == id);
                tracing::info!(flows = purged, "purged the dead node's flows");
            });
        }
    }

    /// Runs until `shutdown` resolves: handles check results, reloads, and expires idle flows.
    pub async fn run(mut self, mut reloads: mpsc::Receiver<Reload>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut expire = tokio::time::interval(Duration::from_secs(1));
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                Some(r) = self.results.recv() => self.on_result(r),
                Some(Reload { config: cfg, applied }) = reloads.recv() => {
                    let stuck = self.cfg.restart_only_changes(&cfg);
                    if !stuck.is_empty() {
                        tracing::warn!(keys = ?stuck, "these keys change only on restart; keeping their old values");
                    }
                    let mut cfg = cfg;
                    cfg.interface = self.cfg.interface.clone();
                    cfg.vip4 = self.cfg.vip4;
                    cfg.vip6 = self.cfg.vip6;
                    cfg.admin_listen = self.cfg.admin_listen;
                    cfg.workers = self.cfg.workers;
                    cfg.data_plane = self.cfg.data_plane;
                    cfg.flows = self.cfg.flows;
                    self.apply(cfg);
                    tracing::info!(nodes = self.nodes.len(), "configuration reloaded; pinned flows kept");
                    if let Some(applied) = applied {
                        let _ = applied.send(stuck);
                    }
                }
                _ = expire.tick() => {
                    self.shared.flows.expire(now_ms());
                    ticks += 1;
                    // The XDP flow maps are walked less often: one syscall per flow. (The
                    // program itself already ignores a pin idle past the timeout.)
                    if let Some(x) = self.shared.xdp.clone().filter(|_| ticks.is_multiple_of(XDP_SWEEP_TICKS)) {
                        tokio::task::spawn_blocking(move || x.sweep_idle());
                    }
                }
                () = &mut shutdown => break,
            }
        }
        for n in &mut self.nodes {
            if let Some(p) = n.probe.take() {
                p.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_FALL, DEFAULT_INTERVAL, DEFAULT_RISE, DEFAULT_TIMEOUT};
    use tokio::time::Instant;

    /// The state changes of a node checked as by default (every 200 ms, fall 3, rise 5)
    /// that answers from the start, dies `dies` later, and then fails each check after
    /// `fails_in` (at once when refused, the timeout when silent): when each happens.
    async fn changes(dies: Duration, fails_in: Duration) -> Vec<(State, Duration)> {
        let start = Instant::now();
        let check = move || async move {
            let ok = start.elapsed() < dies;
            if !ok {
                tokio::time::sleep(fails_in).await;
            }
            CheckResult {
                id: 0,
                ok,
                mac: None,
                error: String::new(),
            }
        };
        let (tx, mut results) = mpsc::channel(1);
        tokio::spawn(check_every(DEFAULT_INTERVAL, check, tx));
        let mut checker = Checker::new(DEFAULT_FALL, DEFAULT_RISE);
        let mut changes = Vec::new();
        while changes.len() < 2 {
            let r = results.recv().await.expect("checks go on");
            if let Some(state) = checker.record(r.ok) {
                changes.push((state, start.elapsed()));
            }
        }
        changes
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_is_up_rise_checks_in_and_out_fall_intervals_after_its_last_good_check() {
        let ms = Duration::from_millis;
        // The schedule below is for these.
        assert_eq!(
            (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, DEFAULT_FALL, DEFAULT_RISE),
            (ms(200), ms(150), 3, 5)
        );
        // Checks at 0, 200, 400…: the fifth good one, at 800 ms, brings the node up. It dies
        // right after the check at 1 s: refused at 1.2, 1.4 and 1.6 s, it is down then…
        assert_eq!(
            changes(ms(1001), ms(0)).await,
            [(State::Up, ms(800)), (State::Down, ms(1600))]
        );
        // …and a silent one a timeout later: fall × interval plus one timeout after its last
        // good check, the health module's bound.
        assert_eq!(
            changes(ms(1001), DEFAULT_TIMEOUT).await,
            [(State::Up, ms(800)), (State::Down, ms(1750))]
        );
        // A check that outlasts the interval delays the next instead of overlapping it:
        // failing checks then follow each other back to back.
        assert_eq!(
            changes(ms(1001), ms(500)).await,
            [(State::Up, ms(800)), (State::Down, ms(1200 + 3 * 500))]
        );
    }
}
