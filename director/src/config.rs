//! Configuration: TOML → raw serde structs → validated [`Config`].
//!
//! Unknown keys are refused. [`Config::from_toml`] collects *every* problem with the dotted
//! key it belongs to (`backend[2].weight`, `health.fall`), so `--check-config` prints them
//! all at once. Each key group, `[[backend]]` entry and section has its own validation
//! function: it records a bad value's problem and goes on with a stand-in, so the checks after
//! it still run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use strata_wire::config::Checker;
pub use strata_wire::config::{parse_duration, ConfigError, Problem};

use crate::health::Probe;

/// Ports forwarded when `ports` is not set.
pub const DEFAULT_PORTS: &[u16] = &[80];
/// Admin listener when `admin_listen` is not set.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Node weight when `weight` is not set.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Largest weight accepted (keeps a Maglev build's rounds short).
pub const MAX_WEIGHT: u32 = 1000;
/// Time between two checks of one node.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(200);
/// Time one check may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(150);
/// Failed checks in a row that take a node out.
pub const DEFAULT_FALL: u32 = 3;
/// Passed checks in a row that bring a node (back) in.
pub const DEFAULT_RISE: u32 = 5;
/// Flows pinned at most; least recently used ones go first.
pub const DEFAULT_FLOW_CAPACITY: usize = 1_000_000;
/// A flow unused this long is forgotten.
pub const DEFAULT_FLOW_IDLE: Duration = Duration::from_secs(300);
/// Data-plane threads when `workers` is not set: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interface: Option<String>,
    vip: Option<String>,
    vip6: Option<String>,
    ports: Option<Vec<i64>>,
    admin_listen: Option<String>,
    workers: Option<i64>,
    data_plane: Option<String>,
    #[serde(default)]
    backend: Vec<RawBackend>,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    flows: RawFlows,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    addr: Option<String>,
    health_url: Option<String>,
    weight: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    interval: Option<toml::Value>,
    timeout: Option<toml::Value>,
    fall: Option<i64>,
    rise: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlows {
    capacity: Option<i64>,
    idle_timeout: Option<toml::Value>,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Interface the director receives and sends on (the segment shared with the nodes).
    pub interface: String,
    /// IPv4 VIP (answered by ARP from userspace, never configured on the director).
    pub vip4: Option<Ipv4Addr>,
    /// IPv6 VIP (answered by neighbour advertisements from userspace).
    pub vip6: Option<Ipv6Addr>,
    /// Ports forwarded (TCP and UDP), sorted, without duplicates.
    pub ports: Vec<u16>,
    /// Admin HTTP listener.
    pub admin_listen: SocketAddr,
    /// Data-plane threads (one packet socket each, in one fanout group).
    pub workers: usize,
    /// Which data plane forwards IPv4 VIP traffic.
    pub data_plane: DataPlane,
    /// The nodes, in file order.
    pub backends: Vec<Backend>,
    /// Health-check timing.
    pub health: Health,
    /// Flow-table bounds.
    pub flows: Flows,
}

/// `data_plane`: where IPv4 VIP packets are forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPlane {
    /// XDP at the driver (native, else generic); refuse to start without it.
    Xdp,
    /// Packet sockets in user space only.
    AfPacket,
    /// XDP native, else XDP generic, else AF_PACKET; the choice is logged.
    Auto,
}

impl DataPlane {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DataPlane::Xdp => "xdp",
            DataPlane::AfPacket => "af_packet",
            DataPlane::Auto => "auto",
        }
    }
}

/// `data_plane` when not set.
pub const DEFAULT_DATA_PLANE: DataPlane = DataPlane::Auto;

/// `[[backend]]`: one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Node address on the segment (its MAC is resolved from it); its identity.
    pub addr: IpAddr,
    /// Health check target, parsed from `health_url`.
    pub probe: Probe,
    /// The URL as written, for logs and the status page.
    pub health_url: String,
    /// Share of new flows; 0 drains (existing flows stay, no new ones).
    pub weight: u32,
}

/// `[health]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Time between checks of one node.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Failures in a row that take a node out.
    pub fall: u32,
    /// Successes in a row that bring a node in.
    pub rise: u32,
}

/// `[flows]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flows {
    /// Most flows pinned at once.
    pub capacity: usize,
    /// Idle time after which a flow is forgotten.
    pub idle_timeout: Duration,
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem {
                key: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }],
        })?;
        Config::from_toml(&text)
    }

    /// Validates TOML text, reporting every problem.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![Problem {
                key: String::new(),
                message: format!("not valid director TOML: {}", e.to_string().trim()),
            }],
        })?;
        let mut c = Checker::default();

        let interface = interface(&mut c, raw.interface);
        let (vip4, vip6) = vips(&mut c, raw.vip, raw.vip6);
        let ports = ports(&mut c, raw.ports);
        let admin_listen = admin_listen(&mut c, raw.admin_listen.as_deref());
        let workers = c.int("workers", raw.workers, default_workers() as i64, 1, 64) as usize;
        let data_plane = data_plane(&mut c, raw.data_plane.as_deref());
        let backends = backends(&mut c, raw.backend, vip4, vip6);
        let health = health(&mut c, &raw.health);
        let flows = flows(&mut c, &raw.flows);

        if !c.problems.is_empty() {
            return Err(ConfigError { problems: c.problems });
        }
        Ok(Config {
            interface,
            vip4,
            vip6,
            ports,
            admin_listen,
            workers,
            data_plane,
            backends,
            health,
            flows,
        })
    }

    /// Keys whose change needs a restart (SIGHUP keeps the old value and says so).
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.interface != new.interface {
            v.push("interface");
        }
        if self.vip4 != new.vip4 || self.vip6 != new.vip6 {
            v.push("vip");
        }
        if self.admin_listen != new.admin_listen {
            v.push("admin_listen");
        }
        if self.workers != new.workers {
            v.push("workers");
        }
        if self.data_plane != new.data_plane {
            v.push("data_plane");
        }
        if self.flows != new.flows {
            v.push("flows");
        }
        v
    }
}

/// `interface`.
fn interface(c: &mut Checker, interface: Option<String>) -> String {
    match interface {
        Some(i) if !i.is_empty() && i.len() < 16 && !i.contains('/') && !i.contains(char::is_whitespace) => i,
        Some(i) => {
            c.problem("interface", format!("{i:?} is not an interface name"));
            String::new()
        }
        None => {
            c.problem(
                "interface",
                "missing: the interface on the nodes' segment, e.g. \"eth0\"",
            );
            String::new()
        }
    }
}

/// `data_plane`.
fn data_plane(c: &mut Checker, plane: Option<&str>) -> DataPlane {
    match plane {
        None => DEFAULT_DATA_PLANE,
        Some("xdp") => DataPlane::Xdp,
        Some("af_packet") => DataPlane::AfPacket,
        Some("auto") => DataPlane::Auto,
        Some(other) => {
            c.problem(
                "data_plane",
                format!("{other:?} is not a data plane: \"xdp\", \"af_packet\" or \"auto\""),
            );
            DEFAULT_DATA_PLANE
        }
    }
}

/// `vip` and `vip6`.
fn vips(c: &mut Checker, vip: Option<String>, vip6_text: Option<String>) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let (mut vip4, mut vip6) = (None, None);
    match vip.as_deref().map(str::parse::<IpAddr>) {
        Some(Ok(IpAddr::V4(v))) => vip4 = Some(v),
        Some(Ok(IpAddr::V6(v))) => vip6 = Some(v),
        Some(Err(_)) => c.problem("vip", format!("{:?} is not an IP address", vip.unwrap_or_default())),
        None => c.problem("vip", "missing: the virtual IP the nodes serve, e.g. \"192.0.2.100\""),
    }
    if let Some(s) = vip6_text {
        match s.parse::<Ipv6Addr>() {
            Ok(v) if vip6.is_none() => vip6 = Some(v),
            Ok(_) => c.problem("vip6", "vip is already an IPv6 address; give the IPv4 VIP in vip"),
            Err(_) => c.problem("vip6", format!("{s:?} is not an IPv6 address")),
        }
    }
    (vip4, vip6)
}

/// `ports`: sorted, without duplicates.
fn ports(c: &mut Checker, list: Option<Vec<i64>>) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::new();
    match list {
        None => ports = DEFAULT_PORTS.to_vec(),
        Some(list) if list.is_empty() => c.problem("ports", "empty: list the ports to forward, e.g. [80, 443]"),
        Some(list) => {
            for p in list {
                match u16::try_from(p) {
                    Ok(p) if p > 0 => ports.push(p),
                    _ => c.problem("ports", format!("{p} is not a port (1 to 65535)")),
                }
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// `admin_listen`.
fn admin_listen(c: &mut Checker, addr: Option<&str>) -> SocketAddr {
    addr.unwrap_or(DEFAULT_ADMIN_LISTEN)
        .parse::<SocketAddr>()
        .unwrap_or_else(|_| {
            c.problem("admin_listen", "expected IP:PORT, e.g. \"127.0.0.1:9090\"");
            SocketAddr::from(([127, 0, 0, 1], 9090))
        })
}

/// Every `[[backend]]`.
fn backends(c: &mut Checker, raw: Vec<RawBackend>, vip4: Option<Ipv4Addr>, vip6: Option<Ipv6Addr>) -> Vec<Backend> {
    let mut backends: Vec<Backend> = Vec::new();
    if raw.is_empty() {
        c.problem("backend", "no [[backend]]: list at least one node");
    }
    for (i, b) in raw.into_iter().enumerate() {
        if let Some(backend) = backend(c, i, b, &backends, vip4, vip6) {
            backends.push(backend);
        }
    }
    if backends.len() > 4096 {
        c.problem("backend", "at most 4096 nodes");
    }
    backends
}

/// `backend[i]`, checked against the nodes before it and the VIPs; none when its address or
/// health URL is unusable.
fn backend(
    c: &mut Checker,
    i: usize,
    b: RawBackend,
    backends: &[Backend],
    vip4: Option<Ipv4Addr>,
    vip6: Option<Ipv6Addr>,
) -> Option<Backend> {
    let key = |k: &str| format!("backend[{i}].{k}");
    let addr = match b.addr.as_deref().map(str::parse::<IpAddr>) {
        Some(Ok(IpAddr::V6(_))) => {
            c.problem(
                &key("addr"),
                "IPv6 node addresses are not supported: give the node's IPv4 address (the IPv6 VIP still works)",
            );
            None
        }
        Some(Ok(a)) if !a.is_unspecified() && !a.is_multicast() => Some(a),
        Some(_) => {
            c.problem(
                &key("addr"),
                format!(
                    "{:?} is not a node IP address (no port: DSR keeps the VIP's port)",
                    b.addr.unwrap_or_default()
                ),
            );
            None
        }
        None => {
            c.problem(&key("addr"), "missing: the node's IP address on the segment");
            None
        }
    };
    if let Some(a) = addr {
        if backends.iter().any(|x| x.addr == a) {
            c.problem(&key("addr"), format!("{a} is listed twice"));
        }
        if Some(a) == vip4.map(IpAddr::V4) || Some(a) == vip6.map(IpAddr::V6) {
            c.problem(&key("addr"), "a node cannot have the VIP as its address");
        }
    }
    let health_url = b.health_url.unwrap_or_default();
    let probe = if health_url.is_empty() {
        c.problem(&key("health_url"), "missing: e.g. \"http://192.0.2.11:9080/healthz\"");
        None
    } else {
        Probe::parse(&health_url)
            .map_err(|e| c.problem(&key("health_url"), e))
            .ok()
    };
    let weight = c.int(
        &key("weight"),
        b.weight,
        i64::from(DEFAULT_WEIGHT),
        0,
        i64::from(MAX_WEIGHT),
    ) as u32;
    if let (Some(addr), Some(probe)) = (addr, probe) {
        Some(Backend {
            addr,
            probe,
            health_url,
            weight,
        })
    } else {
        None
    }
}

/// `[health]`.
fn health(c: &mut Checker, raw: &RawHealth) -> Health {
    let health = Health {
        interval: c.duration("health.interval", &raw.interval, DEFAULT_INTERVAL),
        timeout: c.duration("health.timeout", &raw.timeout, DEFAULT_TIMEOUT),
        fall: c.int("health.fall", raw.fall, i64::from(DEFAULT_FALL), 1, 100) as u32,
        rise: c.int("health.rise", raw.rise, i64::from(DEFAULT_RISE), 1, 100) as u32,
    };
    if health.interval < Duration::from_millis(10) {
        c.problem("health.interval", "below 10ms: the checks would load the nodes");
    }
    if health.timeout.is_zero() || health.timeout > health.interval {
        c.problem("health.timeout", "must be above 0 and at most health.interval");
    }
    health
}

/// `[flows]`.
fn flows(c: &mut Checker, raw: &RawFlows) -> Flows {
    let flows = Flows {
        capacity: c.int(
            "flows.capacity",
            raw.capacity,
            DEFAULT_FLOW_CAPACITY as i64,
            1024,
            1 << 28,
        ) as usize,
        idle_timeout: c.duration("flows.idle_timeout", &raw.idle_timeout, DEFAULT_FLOW_IDLE),
    };
    if flows.idle_timeout < Duration::from_secs(1) {
        c.problem(
            "flows.idle_timeout",
            "below 1s: idle keep-alive connections would be moved",
        );
    }
    flows
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        interface = "eth0"
        vip = "192.0.2.100"
        ports = [443, 80, 80]
        admin_listen = "127.0.0.1:9090"
        [[backend]]
        addr = "192.0.2.11"
        health_url = "http://192.0.2.11:9080/healthz"
        [[backend]]
        addr = "192.0.2.12"
        health_url = "http://192.0.2.12:9080/healthz"
        weight = 0
    "#;

    #[test]
    fn good_config_with_defaults() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.ports, vec![80, 443]);
        assert_eq!(c.vip4, Some(Ipv4Addr::new(192, 0, 2, 100)));
        assert_eq!(c.backends.len(), 2);
        assert_eq!((c.backends[0].weight, c.backends[1].weight), (1, 0));
        assert_eq!(
            c.health,
            Health {
                interval: Duration::from_millis(200),
                timeout: Duration::from_millis(150),
                fall: 3,
                rise: 5
            }
        );
        assert_eq!(c.flows.capacity, DEFAULT_FLOW_CAPACITY);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let bad = r#"
            vip = "192.0.2.300"
            ports = [0, 70000]
            admin_listen = "nowhere"
            [[backend]]
            addr = "192.0.2.11:80"
            health_url = "https://192.0.2.11/"
            weight = 5000
            [[backend]]
            health_url = "http://192.0.2.12/"
            [health]
            interval = "100ms"
            timeout = "1s"
            fall = 0
            rise = "x"
        "#;
        // `rise = "x"` is a type error: serde refuses the whole file first, with its key.
        let e = Config::from_toml(bad).unwrap_err();
        assert_eq!(e.problems.len(), 1);
        assert!(e.problems[0].message.contains("rise"), "{e}");

        let e = Config::from_toml(&bad.replace("rise = \"x\"", "rise = 2")).unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "interface",
                "vip",
                "ports",
                "ports",
                "admin_listen",
                "backend[0].addr",
                "backend[0].health_url",
                "backend[0].weight",
                "backend[1].addr",
                "health.fall",
                "health.timeout",
            ],
            "{e}"
        );
    }

    /// What `validate` returns, with the problems it recorded as `key: message`.
    fn checked<T>(validate: impl FnOnce(&mut Checker) -> T) -> (T, Vec<String>) {
        let mut c = Checker::default();
        let value = validate(&mut c);
        (value, c.problems.iter().map(|p| p.to_string()).collect())
    }

    fn raw_backend(addr: &str, health_url: &str, weight: Option<i64>) -> RawBackend {
        RawBackend {
            addr: Some(addr.into()),
            health_url: Some(health_url.into()),
            weight,
        }
    }

    #[test]
    fn interface_and_vips() {
        let (i, problems) = checked(|c| interface(c, Some("eth0".into())));
        assert_eq!((i.as_str(), problems.len()), ("eth0", 0));
        for bad in ["", "a/b", "eth 0", "sixteen-letters!"] {
            let (_, problems) = checked(|c| interface(c, Some(bad.into())));
            assert_eq!(problems, [format!("interface: {bad:?} is not an interface name")]);
        }
        let (_, problems) = checked(|c| interface(c, None));
        assert!(problems[0].starts_with("interface: missing"), "{problems:?}");

        let (v, problems) = checked(|c| vips(c, Some("192.0.2.100".into()), Some("2001:db8::100".into())));
        assert_eq!(problems.len(), 0, "{problems:?}");
        assert_eq!(
            v,
            (
                Some(Ipv4Addr::new(192, 0, 2, 100)),
                Some("2001:db8::100".parse().unwrap())
            )
        );
        let (v, _) = checked(|c| vips(c, Some("2001:db8::100".into()), None));
        assert_eq!(v, (None, Some("2001:db8::100".parse().unwrap())));
        let (_, problems) = checked(|c| vips(c, Some("2001:db8::100".into()), Some("2001:db8::101".into())));
        assert_eq!(
            problems,
            ["vip6: vip is already an IPv6 address; give the IPv4 VIP in vip"]
        );
        let (_, problems) = checked(|c| vips(c, None, Some("192.0.2.1".into())));
        assert!(problems[0].starts_with("vip: missing"), "{problems:?}");
        assert_eq!(problems[1], "vip6: \"192.0.2.1\" is not an IPv6 address");
        let (_, problems) = checked(|c| vips(c, Some("192.0.2.300".into()), None));
        assert_eq!(problems, ["vip: \"192.0.2.300\" is not an IP address"]);
    }

    #[test]
    fn ports_and_admin_listen() {
        let (p, problems) = checked(|c| ports(c, Some(vec![443, 80, 443])));
        assert_eq!((p, problems.len()), (vec![80, 443], 0));
        let (p, _) = checked(|c| ports(c, None));
        assert_eq!(p, DEFAULT_PORTS);
        let (_, problems) = checked(|c| ports(c, Some(vec![])));
        assert_eq!(problems, ["ports: empty: list the ports to forward, e.g. [80, 443]"]);
        let (p, problems) = checked(|c| ports(c, Some(vec![0, 80, 65536])));
        assert_eq!(p, [80]);
        assert_eq!(
            problems,
            [
                "ports: 0 is not a port (1 to 65535)",
                "ports: 65536 is not a port (1 to 65535)"
            ]
        );

        let (a, problems) = checked(|c| admin_listen(c, None));
        assert_eq!((a.to_string().as_str(), problems.len()), (DEFAULT_ADMIN_LISTEN, 0));
        let (_, problems) = checked(|c| admin_listen(c, Some("9090")));
        assert_eq!(problems, ["admin_listen: expected IP:PORT, e.g. \"127.0.0.1:9090\""]);
    }

    #[test]
    fn backend_entries() {
        let vip4 = Some(Ipv4Addr::new(192, 0, 2, 100));
        let url = "http://192.0.2.11:9080/healthz";
        let (b, problems) = checked(|c| backend(c, 0, raw_backend("192.0.2.11", url, None), &[], vip4, None));
        assert!(problems.is_empty(), "{problems:?}");
        let b = b.unwrap();
        assert_eq!(
            (b.addr.to_string().as_str(), b.weight, b.health_url.as_str()),
            ("192.0.2.11", 1, url)
        );

        let taken = [b];
        for (addr, says) in [
            ("192.0.2.11", "192.0.2.11 is listed twice"),
            ("192.0.2.100", "a node cannot have the VIP as its address"),
            ("2001:db8::11", "IPv6 node addresses are not supported"),
            ("192.0.2.11:80", "is not a node IP address (no port"),
            ("0.0.0.0", "is not a node IP address"),
        ] {
            let (_, problems) = checked(|c| backend(c, 2, raw_backend(addr, url, None), &taken, vip4, None));
            assert_eq!(problems.len(), 1, "{addr}: {problems:?}");
            assert!(problems[0].starts_with("backend[2].addr: "), "{problems:?}");
            assert!(problems[0].contains(says), "{addr}: {problems:?}");
        }
        let (b, problems) = checked(|c| {
            backend(
                c,
                1,
                raw_backend("192.0.2.12", "https://192.0.2.12/", Some(1001)),
                &[],
                vip4,
                None,
            )
        });
        assert!(b.is_none());
        assert_eq!(
            problems,
            [
                "backend[1].health_url: \"https://192.0.2.12/\": only http:// health URLs are supported",
                "backend[1].weight: 1001 is out of range: expected 0 to 1000",
            ]
        );
        let (_, problems) = checked(|c| backend(c, 0, RawBackend::default(), &[], vip4, None));
        assert_eq!(
            problems,
            [
                "backend[0].addr: missing: the node's IP address on the segment",
                "backend[0].health_url: missing: e.g. \"http://192.0.2.11:9080/healthz\"",
            ]
        );
    }

    #[test]
    fn the_backend_list() {
        let (b, problems) = checked(|c| backends(c, Vec::new(), None, None));
        assert!(b.is_empty());
        assert_eq!(problems, ["backend: no [[backend]]: list at least one node"]);
        let list = vec![
            raw_backend("192.0.2.11", "http://192.0.2.11/", Some(0)),
            raw_backend("192.0.2.11", "http://192.0.2.11/", None),
        ];
        let (b, problems) = checked(|c| backends(c, list, None, None));
        assert_eq!(b.len(), 2, "a duplicate is reported, not dropped");
        assert_eq!(problems, ["backend[1].addr: 192.0.2.11 is listed twice"]);
    }

    #[test]
    fn health_and_flows_sections() {
        let (h, problems) = checked(|c| health(c, &RawHealth::default()));
        assert_eq!(problems.len(), 0);
        assert_eq!(
            (h.interval, h.timeout, h.fall, h.rise),
            (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, 3, 5)
        );
        let bad: RawHealth = toml::from_str("interval = \"5ms\"\ntimeout = \"0\"\nfall = 0\nrise = 101\n").unwrap();
        let (_, problems) = checked(|c| health(c, &bad));
        assert_eq!(
            problems,
            [
                "health.fall: 0 is out of range: expected 1 to 100",
                "health.rise: 101 is out of range: expected 1 to 100",
                "health.interval: below 10ms: the checks would load the nodes",
                "health.timeout: must be above 0 and at most health.interval",
            ]
        );

        let (f, problems) = checked(|c| flows(c, &RawFlows::default()));
        assert_eq!(
            (f.capacity, f.idle_timeout, problems.len()),
            (DEFAULT_FLOW_CAPACITY, DEFAULT_FLOW_IDLE, 0)
        );
        let bad: RawFlows = toml::from_str("capacity = 1023\nidle_timeout = \"500ms\"\n").unwrap();
        let (_, problems) = checked(|c| flows(c, &bad));
        assert_eq!(
            problems,
            [
                "flows.capacity: 1023 is out of range: expected 1024 to 268435456",
                "flows.idle_timeout: below 1s: idle keep-alive connections would be moved",
            ]
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = Config::from_toml(&format!("{GOOD}\n[health]\nintervall = \"1s\"\n")).unwrap_err();
        assert!(e.to_string().contains("intervall"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn restart_only_keys() {
        let a = Config::from_toml(GOOD).unwrap();
        let mut b = a.clone();
        b.backends.pop();
        assert!(a.restart_only_changes(&b).is_empty());
        b.interface = "eth1".into();
        assert_eq!(a.restart_only_changes(&b), vec!["interface"]);
    }

    #[test]
    fn data_plane_choices() {
        assert_eq!(Config::from_toml(GOOD).unwrap().data_plane, DataPlane::Auto);
        for (text, plane) in [
            ("xdp", DataPlane::Xdp),
            ("af_packet", DataPlane::AfPacket),
            ("auto", DataPlane::Auto),
        ] {
            let c = Config::from_toml(&format!("data_plane = \"{text}\"\n{GOOD}")).unwrap();
            assert_eq!((c.data_plane, c.data_plane.as_str()), (plane, text));
        }
        let e = Config::from_toml(&format!("data_plane = \"dpdk\"\n{GOOD}")).unwrap_err();
        assert_eq!(
            e.problems[0].to_string(),
            "data_plane: \"dpdk\" is not a data plane: \"xdp\", \"af_packet\" or \"auto\""
        );
    }
}
