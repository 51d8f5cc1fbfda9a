//! The host around the director: its interface (index, MAC, MTU), the kernel's neighbour
//! table (node MACs) and the sysctls that keep the kernel away from VIP traffic.
//!
//! All of it is read from `/sys` and `/proc`; the parsers are pure functions.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;

use crate::packet::Mac;

/// What the director needs to know about its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iface {
    /// Kernel interface index.
    pub index: u32,
    /// Its MAC: the source of every frame we send, the answer to ARP for the VIP.
    pub mac: Mac,
    /// Its MTU.
    pub mtu: usize,
}

/// Why the interface cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("interface {name}: {what}")]
pub struct IfaceError {
    name: String,
    what: String,
}

/// Held for the process's life: no other director may run on the same interface.
#[derive(Debug)]
pub struct Claim {
    /// Bound to an abstract name; the kernel releases it when the process ends, however.
    _socket: std::os::unix::net::UnixListener,
}

/// Claims `name` for this director: a second director on the same interface would answer
/// ARP for the VIP too and fight over the XDP hook. The claim is an abstract Unix socket
/// named after the interface, which exists per network namespace, as interfaces do.
pub fn claim(name: &str) -> Result<Claim, IfaceError> {
    use std::os::linux::net::SocketAddrExt;
    let err = |what: String| IfaceError {
        name: name.to_string(),
        what,
    };
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(format!("strata-director/{name}"))
        .map_err(|e| err(format!("cannot name the claim: {e}")))?;
    match std::os::unix::net::UnixListener::bind_addr(&addr) {
        Ok(socket) => Ok(Claim { _socket: socket }),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(err(
            "another strata-director is already running on it (in this network namespace)".into(),
        )),
        Err(e) => Err(err(format!("cannot claim it: {e}"))),
    }
}

impl Iface {
    /// Reads `/sys/class/net/NAME/{ifindex,address,mtu}`.
    pub fn read(name: &str) -> Result<Iface, IfaceError> {
        let dir = Path::new("/sys/class/net").join(name);
        let err = |what: String| IfaceError {
            name: name.to_string(),
            what,
        };
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .map(|s| s.trim().to_string())
                .map_err(|e| err(format!("cannot read {f}: {e}")))
        };
        Ok(Iface {
            index: read("ifindex")?.parse().map_err(|_| err("bad ifindex".into()))?,
            mac: read("address")?.parse().map_err(err)?,
            mtu: read("mtu")?.parse().map_err(|_| err("bad mtu".into()))?,
        })
    }
}

/// The MAC of `ip` on `dev` in `/proc/net/arp` text, if the entry is complete.
pub fn parse_proc_arp(text: &str, ip: Ipv4Addr, dev: &str) -> Option<Mac> {
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [addr, _hw, flags, mac, _mask, device] = f.as_slice() else {
            return None;
        };
        // ATF_COM (0x2): the entry is resolved.
        let complete = u32::from_str_radix(flags.trim_start_matches("0x"), 16).is_ok_and(|v| v & 0x2 != 0);
        (complete && *device == dev && addr.parse() == Ok(ip))
            .then(|| mac.parse().ok())
            .flatten()
            .filter(|m: &Mac| m.0 != [0; 6])
    })
}

/// The node's MAC from the kernel's neighbour table. When it is missing, nudges the kernel
/// to resolve it (a datagram to the discard port) so a later call finds it.
pub fn neighbor_mac(ip: IpAddr, dev: &str) -> Option<Mac> {
    let IpAddr::V4(v4) = ip else { return None };
    let found = std::fs::read_to_string("/proc/net/arp")
        .ok()
        .and_then(|t| parse_proc_arp(&t, v4, dev));
    if found.is_none() {
        if let Ok(s) = UdpSocket::bind("0.0.0.0:0") {
            let _ = s.send_to(b"", (v4, 9));
        }
    }
    found
}

/// Problems with the host's setup that would let the kernel answer or forward VIP traffic.
/// Returns one line per problem; empty is good.
pub fn kernel_warnings(vip4: Option<Ipv4Addr>, vip6: Option<std::net::Ipv6Addr>) -> Vec<String> {
    let mut w = Vec::new();
    let sysctl = |p: &str| std::fs::read_to_string(Path::new("/proc/sys").join(p)).map(|s| s.trim().to_string());
    if sysctl("net/ipv4/ip_forward").is_ok_and(|v| v != "0") {
        w.push("net.ipv4.ip_forward=1: the kernel would forward a second copy of every VIP packet (see sysctl/director.conf)".to_string());
    }
    if vip6.is_some() && sysctl("net/ipv6/conf/all/forwarding").is_ok_and(|v| v != "0") {
        w.push(
            "net.ipv6.conf.all.forwarding=1: the kernel would forward a second copy of every VIP packet".to_string(),
        );
    }
    // Binding succeeds only for a local address (unless ip_nonlocal_bind is set).
    let local = |ip: IpAddr| UdpSocket::bind((ip, 0)).is_ok();
    if sysctl("net/ipv4/ip_nonlocal_bind").is_ok_and(|v| v == "0") {
        if let Some(v) = vip4.filter(|v| local(IpAddr::V4(*v))) {
            w.push(format!(
                "the VIP {v} is configured on this host: its kernel would answer VIP traffic itself; remove it"
            ));
        }
    }
    if let Some(v) = vip6.filter(|v| local(IpAddr::V6(*v))) {
        w.push(format!("the VIP {v} is configured on this host: remove it"));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARP: &str = "IP address       HW type     Flags       HW address            Mask     Device
192.0.2.11       0x1         0x2         02:00:00:00:00:0b     *        eth0
192.0.2.12       0x1         0x0         00:00:00:00:00:00     *        eth0
192.0.2.13       0x1         0x2         02:00:00:00:00:0d     *        eth1
";

    #[test]
    fn reads_complete_entries_on_the_right_device_only() {
        let ip = |l| Ipv4Addr::new(192, 0, 2, l);
        assert_eq!(parse_proc_arp(ARP, ip(11), "eth0"), Some(Mac([2, 0, 0, 0, 0, 0x0b])));
        assert_eq!(parse_proc_arp(ARP, ip(12), "eth0"), None);
        assert_eq!(parse_proc_arp(ARP, ip(13), "eth0"), None);
        assert_eq!(parse_proc_arp(ARP, ip(14), "eth0"), None);
        assert_eq!(parse_proc_arp("", ip(11), "eth0"), None);
    }
}
