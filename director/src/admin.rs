//! The admin listener: `GET /healthz`, `/metrics`, `/status` and `/flow`. Never the VIP.
//!
//! `/flow?src=IP:PORT&dst=VIP:PORT&proto=tcp` answers which node a packet of that flow would
//! go to now and why (a pinned flow, or its Maglev slot), without changing anything.

use std::convert::Infallible;
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::balancer::NodeCounters;
use crate::balancer::{now_ms, Reason};
use crate::control::{NodeInfo, NodeTable};
use crate::dataplane::Shared;
use crate::flow::FlowKey;
use crate::maglev::{key_of, TABLE_SIZE};
use crate::metrics;
use crate::xdp;

/// What the admin listener reads.
pub struct Admin {
    /// Data-plane state (plan, flows, counters).
    pub shared: Arc<Shared>,
    /// Node details from the control plane.
    pub nodes: NodeTable,
    /// Process start, for the uptime line.
    pub started: Instant,
}

fn reply(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    reply(status, body.into() + "\n", "text/plain; charset=utf-8")
}

impl Admin {
    /// Answers one request.
    pub fn handle(&self, method: &Method, path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
        match (method, path) {
            (&Method::GET, "/healthz") => plain(StatusCode::OK, "ok"),
            (&Method::GET, "/metrics") => {
                let nodes = self.nodes_with_totals();
                let body = metrics::render(&nodes, &self.shared.flow_stats(), &self.shared.counters, self.plane());
                reply(StatusCode::OK, body, "text/plain; version=0.0.4; charset=utf-8")
            }
            (&Method::GET, "/status") => plain(StatusCode::OK, self.status()),
            (&Method::GET, "/flow") => match self.flow(query.unwrap_or("")) {
                Ok(s) => plain(StatusCode::OK, s),
                Err(e) => plain(StatusCode::BAD_REQUEST, e),
            },
            (_, "/healthz" | "/metrics" | "/status" | "/flow") => plain(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
            _ => plain(
                StatusCode::NOT_FOUND,
                "unknown admin path; try /healthz, /metrics, /status, /flow?src=IP:PORT&dst=VIP:PORT&proto=tcp",
            ),
        }
    }

    /// The plane forwarding IPv4 and its kernel counters.
    fn plane(&self) -> metrics::Plane {
        match &self.shared.xdp {
            Some(x) => metrics::Plane {
                name: x.mode().as_str(),
                xdp: Some(x.stats()),
                run_time: x.run_time(),
            },
            None => metrics::Plane {
                name: "af_packet",
                xdp: None,
                run_time: (0, 0),
            },
        }
    }

    /// The nodes, their counters summed over both planes.
    fn nodes_with_totals(&self) -> Vec<NodeInfo> {
        let mut nodes = self.nodes.lock().clone();
        if self.shared.xdp.is_some() {
            for n in &mut nodes {
                let [packets, bytes, new_flows] = self.shared.node_totals(n.id, &n.counters);
                let c = &n.counters;
                n.counters = Arc::new(NodeCounters {
                    packets: packets.into(),
                    bytes: bytes.into(),
                    new_flows: new_flows.into(),
                    check_failures: c.check_failures.load(Ordering::Relaxed).into(),
                    transitions: c.transitions.load(Ordering::Relaxed).into(),
                });
            }
        }
        nodes
    }

    fn status(&self) -> String {
        let plan = self.shared.plan();
        let flows = self.shared.flow_stats();
        let nodes = self.nodes_with_totals();
        let vips: Vec<String> = [plan.service.vip4.map(IpAddr::V4), plan.service.vip6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
            .map(|v| v.to_string())
            .collect();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "strata-director {}\nuptime {}s\ndata plane {}\nvip {} ports {:?} mac {}\nflows {} pinned; {} evicted, {} expired, {} purged",
            env!("CARGO_PKG_VERSION"),
            self.started.elapsed().as_secs(),
            self.plane().name,
            vips.join(", "),
            plan.service.ports,
            plan.service.mac,
            flows.len,
            flows.evictions,
            flows.expirations,
            flows.purges,
        );
        let now = SystemTime::now();
        for n in nodes {
            let c = &n.counters;
            let _ = writeln!(
                s,
                "node {addr} {state} for {since:.3}s weight {w}{drain} mac {mac}: {p} packets, {b} bytes, {nf} new flows, {fl} pinned{err}",
                addr = n.addr,
                state = n.state.as_str(),
                since = now.duration_since(n.since).map_or(0.0, |d| d.as_secs_f64()),
                w = n.weight,
                drain = if n.weight == 0 { " (draining)" } else { "" },
                mac = n.mac.map_or("unresolved".to_string(), |m| m.to_string()),
                p = c.packets.load(Ordering::Relaxed),
                b = c.bytes.load(Ordering::Relaxed),
                nf = c.new_flows.load(Ordering::Relaxed),
                fl = flows.len_by_node.get(n.id as usize).copied().unwrap_or(0),
                err = if n.last_error.is_empty() { String::new() } else { format!("; last check: {}", n.last_error) },
            );
        }
        s.trim_end().to_string()
    }

    /// `/flow?src=IP:PORT&dst=VIP:PORT&proto=tcp|udp`.
    pub fn flow(&self, query: &str) -> Result<String, String> {
        let mut src = None;
        let mut dst = None;
        let mut proto = 6u8;
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = v
                .replace("%3A", ":")
                .replace("%3a", ":")
                .replace("%5B", "[")
                .replace("%5D", "]");
            match k {
                "src" => {
                    src = Some(
                        v.parse::<SocketAddr>()
                            .map_err(|_| format!("src={v:?}: expected IP:PORT"))?,
                    )
                }
                "dst" => {
                    dst = Some(
                        v.parse::<SocketAddr>()
                            .map_err(|_| format!("dst={v:?}: expected VIP:PORT"))?,
                    )
                }
                "proto" => {
                    proto = match v.as_str() {
                        "tcp" => 6,
                        "udp" => 17,
                        _ => return Err(format!("proto={v:?}: expected tcp or udp")),
                    }
                }
                _ => return Err(format!("unknown parameter {k:?}; give src, dst and proto")),
            }
        }
        let (Some(src), Some(dst)) = (src, dst) else {
            return Err("give src=IP:PORT and dst=VIP:PORT (and proto=tcp|udp)".into());
        };
        let plan = self.shared.plan();
        let key = FlowKey {
            src: key_of(src.ip()),
            dst: key_of(dst.ip()),
            sport: src.port(),
            dport: dst.port(),
            proto,
        };
        let served =
            Some(dst.ip()) == plan.service.vip4.map(IpAddr::V4) || Some(dst.ip()) == plan.service.vip6.map(IpAddr::V6);
        let mut out = format!("{src} -> {dst}/{}: ", if proto == 6 { "tcp" } else { "udp" });
        if !served || plan.service.ports.binary_search(&dst.port()).is_err() {
            out.push_str("not a VIP:port this director serves; ");
        }
        // IPv4 flows are pinned in the XDP program's map when it runs.
        let decision = match &self.shared.xdp {
            Some(x) if xdp::flow_key(&key).is_some() => plan.snapshot.explain_pinned(x.peek(&key), key.hash()),
            _ => plan.snapshot.explain(&self.shared.flows, &key, key.hash(), now_ms()),
        };
        match decision {
            None => out.push_str("no node is up: packets are dropped"),
            Some(d) => {
                let n = &plan.snapshot.nodes[d.node];
                let _ = match d.reason {
                    Reason::Pinned { idle_ms } => write!(out, "node {} (pinned flow, idle {idle_ms} ms)", n.addr),
                    Reason::Slot { slot } | Reason::NewFlow { slot } => write!(
                        out,
                        "node {} (maglev slot {slot} of {TABLE_SIZE}; no pinned flow)",
                        n.addr
                    ),
                };
            }
        }
        Ok(out)
    }
}

/// Serves the admin listener until `shutdown` resolves.
pub async fn run(listener: TcpListener, admin: Arc<Admin>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let r = admin.handle(req.method(), req.uri().path(), req.uri().query());
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::{NodeCounters, NodeView, Snapshot};
    use crate::dataplane::Plan;
    use crate::flow::FlowTable;
    use crate::health::State;
    use crate::packet::tests::svc;
    use crate::packet::Mac;
    use std::net::Ipv4Addr;

    fn admin() -> Admin {
        let nodes = vec![NodeView {
            id: 0,
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)),
            mac: Some(Mac([2, 0, 0, 0, 0, 11])),
            state: State::Up,
            weight: 1,
            counters: Arc::new(NodeCounters::default()),
        }];
        let plan = Plan {
            service: svc(),
            snapshot: Snapshot::new(nodes),
        };
        Admin {
            shared: Arc::new(Shared::new(plan, FlowTable::new(1024, 60_000))),
            nodes: Arc::default(),
            started: Instant::now(),
        }
    }

    #[test]
    fn flow_query_says_slot_then_pin() {
        let a = admin();
        let q = "src=192.0.2.1:40000&dst=192.0.2.100:80&proto=tcp";
        let fresh = a.flow(q).unwrap();
        assert!(fresh.contains("node 192.0.2.11 (maglev slot"), "{fresh}");
        let key = FlowKey {
            src: key_of("192.0.2.1".parse().unwrap()),
            dst: key_of("192.0.2.100".parse().unwrap()),
            sport: 40000,
            dport: 80,
            proto: 6,
        };
        a.shared.flows.insert(key, key.hash(), 0, false, now_ms());
        let pinned = a.flow(q).unwrap();
        assert!(pinned.contains("(pinned flow, idle"), "{pinned}");
        assert!(a
            .flow("src=192.0.2.1:1&dst=192.0.2.100:22")
            .unwrap()
            .contains("not a VIP:port"));
    }

    #[test]
    fn flow_query_errors_are_400s() {
        let a = admin();
        assert!(a.flow("").is_err());
        assert!(a.flow("src=nope&dst=192.0.2.100:80").is_err());
        assert!(a.flow("src=192.0.2.1:1&dst=192.0.2.100:80&proto=sctp").is_err());
        assert_eq!(
            a.handle(&Method::GET, "/flow", Some("src=x")).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            a.handle(&Method::POST, "/status", None).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(a.handle(&Method::GET, "/nope", None).status(), StatusCode::NOT_FOUND);
        assert_eq!(a.handle(&Method::GET, "/metrics", None).status(), StatusCode::OK);
    }
}
