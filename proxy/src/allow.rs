//! Address allow lists (`cluster.admin_allow`, `bans.purge_allow`): each entry one address or
//! a CIDR range, and a client on an IPv6 socket that is really an IPv4 client
//! (`::ffff:192.0.2.1`) matched as its IPv4 address.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One allow-list entry: an address and how many of its leading bits a client must share
/// (32 or 128 for a single address). Always held in canonical form: an IPv4-mapped IPv6
/// entry is stored as the IPv4 address (and range) it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// The network's first address (no host bits set).
    addr: IpAddr,
    /// Prefix length in bits.
    prefix: u8,
}

/// Why an allow-list entry was refused; the message names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpNetError {
    #[error("{0:?} is not an IP address or CIDR range (e.g. \"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\")")]
    Syntax(String),
    #[error("{0:?}: the prefix length must be at most {1}")]
    Prefix(String, u8),
    #[error("{entry:?} has bits set after its /{prefix} prefix: did you mean \"{network}/{prefix}\"?")]
    HostBits { entry: String, network: IpAddr, prefix: u8 },
}

impl IpNet {
    /// Whether `client` is inside this range; an IPv4-mapped IPv6 client counts as its
    /// IPv4 address.
    pub fn contains(&self, client: IpAddr) -> bool {
        match (self.addr, client.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

/// Whether any entry of `list` contains `client`.
pub fn any_contains(list: &[IpNet], client: IpAddr) -> bool {
    list.iter().any(|n| n.contains(client))
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || IpNetError::Syntax(s.to_string());
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| syntax())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or(IpNetError::Prefix(s.to_string(), max))?,
            Some(_) => return Err(syntax()),
        };
        // `::ffff:a.b.c.d/96+n` is the IPv4 range `a.b.c.d/n`.
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
                _ => (addr, prefix),
            },
            v4 => (v4, prefix),
        };
        let net = IpNet { addr, prefix }.network();
        if net.addr != addr {
            return Err(IpNetError::HostBits {
                entry: s.to_string(),
                network: net.addr,
                prefix,
            });
        }
        Ok(net)
    }
}

impl IpNet {
    /// The same range with the bits after the prefix cleared.
    fn network(self) -> IpNet {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        IpNet { addr, ..self }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == max {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl From<IpAddr> for IpNet {
    fn from(addr: IpAddr) -> Self {
        let addr = addr.to_canonical();
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        IpNet { addr, prefix }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn single_addresses_match_only_themselves() {
        let n = net("192.0.2.7");
        assert!(n.contains(ip("192.0.2.7")));
        assert!(!n.contains(ip("192.0.2.8")));
        assert!(net("2001:db8::1").contains(ip("2001:db8::1")));
        assert!(!net("2001:db8::1").contains(ip("2001:db8::2")));
        assert_eq!(n.to_string(), "192.0.2.7");
    }

    #[test]
    fn ranges_match_their_members() {
        let ten = net("10.0.0.0/8");
        assert!(ten.contains(ip("10.0.0.0")) && ten.contains(ip("10.255.255.255")));
        assert!(!ten.contains(ip("11.0.0.0")) && !ten.contains(ip("9.255.255.255")));
        let doc = net("2001:db8::/32");
        assert!(doc.contains(ip("2001:db8:ffff::1")));
        assert!(!doc.contains(ip("2001:db9::1")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        assert!(net("198.51.100.128/25").contains(ip("198.51.100.200")));
        assert!(!net("198.51.100.128/25").contains(ip("198.51.100.127")));
        assert_eq!(doc.to_string(), "2001:db8::/32");
    }

    #[test]
    fn ipv4_mapped_clients_match_ipv4_entries_and_back() {
        assert!(net("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
        assert!(net("192.0.2.1").contains(ip("::ffff:192.0.2.1")));
        assert!(!net("192.0.2.1").contains(ip("::ffff:192.0.2.2")));
        // An entry written in the mapped form names the IPv4 address or range.
        assert_eq!(net("::ffff:192.0.2.1"), net("192.0.2.1"));
        assert_eq!(net("::ffff:10.0.0.0/104"), net("10.0.0.0/8"));
        assert!(net("::ffff:10.0.0.0/104").contains(ip("10.1.2.3")));
        // An IPv4 range never matches a native IPv6 client, nor the other way round.
        assert!(!net("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(!net("::/0").contains(ip("192.0.2.1")));
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        for s in [
            "localhost",
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0/8",
            "/8",
            "10.0.0.0/8/8",
            "",
            " 10.0.0.1",
        ] {
            assert!(matches!(s.parse::<IpNet>(), Err(IpNetError::Syntax(_))), "{s}");
        }
        assert_eq!(
            "10.0.0.0/33".parse::<IpNet>().unwrap_err().to_string(),
            "\"10.0.0.0/33\": the prefix length must be at most 32"
        );
        assert!(matches!("::/129".parse::<IpNet>(), Err(IpNetError::Prefix(_, 128))));
        assert_eq!(
            "10.1.2.3/8".parse::<IpNet>().unwrap_err().to_string(),
            "\"10.1.2.3/8\" has bits set after its /8 prefix: did you mean \"10.0.0.0/8\"?"
        );
        assert!(matches!(
            "2001:db8::1/32".parse::<IpNet>(),
            Err(IpNetError::HostBits { .. })
        ));
    }

    #[test]
    fn any_contains_checks_every_entry() {
        let list = [net("10.0.0.0/8"), net("2001:db8::/32")];
        assert!(any_contains(&list, ip("10.9.9.9")));
        assert!(any_contains(&list, ip("2001:db8::5")));
        assert!(!any_contains(&list, ip("192.0.2.1")));
        assert!(!any_contains(&[], ip("192.0.2.1")));
    }
}
