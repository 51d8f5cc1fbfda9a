//! `server.max_connections_per_client`: how many public connections each client has open.
//! A client is its IPv4 address, or the /64 of its IPv6 address (one subscriber usually holds
//! a whole /64, so counting single IPv6 addresses would bound nothing).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

/// The open public connections of every client, when a limit is set.
pub(super) struct PerClient {
    /// Most connections per client; 0 = no limit (nothing is counted).
    limit: usize,
    /// Open connections by client; a client with none has no entry.
    open: parking_lot::Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted for its client until dropped.
pub(super) struct ClientSlot(Option<(Arc<PerClient>, IpAddr)>);

impl PerClient {
    pub(super) fn new(limit: usize) -> Arc<PerClient> {
        Arc::new(PerClient {
            limit,
            open: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, or `None` when its client has `limit`
    /// open already. Without a limit every connection gets a slot that counts nothing.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        if self.limit == 0 {
            return Some(ClientSlot(None));
        }
        let client = client_of(ip);
        let mut open = self.open.lock();
        let n = open.entry(client).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot(Some((self.clone(), client))))
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.open.lock().len()
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let Some((counts, client)) = self.0.take() else { return };
        let mut open = counts.open.lock();
        if let Some(n) = open.get_mut(&client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&client);
            }
        }
    }
}

/// The client an address belongs to: an IPv4 address (also when mapped into IPv6), or the
/// /64 of an IPv6 address.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_client_gets_the_limit_and_no_more() {
        let c = PerClient::new(2);
        let a1 = c.admit(ip("192.0.2.1")).unwrap();
        let _a2 = c.admit(ip("192.0.2.1")).unwrap();
        assert!(c.admit(ip("192.0.2.1")).is_none(), "the third from one address");
        assert!(
            c.admit(ip("::ffff:192.0.2.1")).is_none(),
            "the same address mapped into IPv6"
        );
        let _b = c.admit(ip("192.0.2.2")).expect("another address has its own count");
        drop(a1);
        let _a3 = c.admit(ip("192.0.2.1")).expect("a closed connection frees its slot");
        assert_eq!(c.clients(), 2);
    }

    #[test]
    fn an_ipv6_client_is_its_64() {
        let c = PerClient::new(1);
        let _a = c.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(c.admit(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(c.admit(ip("2001:db8:1:3::1")).is_some());
    }

    #[test]
    fn closed_clients_are_forgotten_and_no_limit_counts_nothing() {
        let c = PerClient::new(3);
        let slots: Vec<_> = (0..3).filter_map(|_| c.admit(ip("198.51.100.7"))).collect();
        assert_eq!(slots.len(), 3);
        drop(slots);
        assert_eq!(c.clients(), 0);
        let unlimited = PerClient::new(0);
        let many: Vec<_> = (0..1000).filter_map(|_| unlimited.admit(ip("198.51.100.7"))).collect();
        assert_eq!(many.len(), 1000);
        assert_eq!(unlimited.clients(), 0);
    }
}
