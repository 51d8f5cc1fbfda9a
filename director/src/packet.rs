//! Frame classification and construction: the pure half of the data plane.
//!
//! [`classify`] reads a received Ethernet frame at fixed offsets and says what it is to the
//! director: an ARP or neighbour question about the VIP, a packet of a flow to the VIP,
//! an ICMP "fragmentation needed"/"packet too big" about a VIP flow, or nothing of ours.
//! [`rewrite_macs`] is the only change made to a forwarded frame; IP and TCP stay
//! untouched. [`arp_reply`], [`gratuitous_arp`] and [`neighbor_advert`] build the frames
//! the director answers with.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::flow::FlowKey;

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let mut m = [0u8; 6];
        let mut parts = s.trim().split(':');
        for b in &mut m {
            let p = parts.next().ok_or_else(|| format!("{s:?} is not a MAC address"))?;
            *b = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{s:?} is not a MAC address"));
        }
        Ok(Mac(m))
    }
}

const ETH_IPV4: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;

/// What the director serves: its VIPs, ports and own MAC.
#[derive(Debug, Clone)]
pub struct Service {
    /// The director's MAC on the interface.
    pub mac: Mac,
    /// IPv4 VIP.
    pub vip4: Option<Ipv4Addr>,
    /// IPv6 VIP.
    pub vip6: Option<Ipv6Addr>,
    /// Forwarded ports (TCP and UDP); sorted.
    pub ports: Vec<u16>,
}

impl Service {
    fn serves(&self, port: u16) -> bool {
        self.ports.binary_search(&port).is_ok()
    }
}

/// What a received frame is to the director.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// ARP who-has for the IPv4 VIP.
    ArpRequest {
        /// Asker's MAC (the ARP sender hardware address).
        mac: Mac,
        /// Asker's IPv4 address.
        ip: Ipv4Addr,
    },
    /// IPv6 neighbour solicitation for the IPv6 VIP.
    NeighborSolicit {
        /// Asker's MAC (Ethernet source).
        mac: Mac,
        /// Asker's IPv6 address.
        ip: Ipv6Addr,
    },
    /// A TCP or UDP packet to a VIP port; fragments carry ports 0 and `pin = false`.
    Flow {
        /// The flow, client → VIP.
        key: FlowKey,
        /// Whether the flow may be pinned (not a fragment).
        pin: bool,
        /// A bare TCP SYN (SYN set, ACK clear): the flow is not established yet.
        syn: bool,
    },
    /// ICMP fragmentation-needed / packet-too-big about a flow from the VIP;
    /// `key` is that flow turned around (client → VIP).
    TooBig {
        /// The flow the error is about.
        key: FlowKey,
    },
    /// Not ours: left to the kernel.
    Other,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn mapped(ip: [u8; 4]) -> [u8; 16] {
    Ipv4Addr::from(ip).to_ipv6_mapped().octets()
}

fn arr<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N)?.try_into().ok()
}

/// Classifies a frame (see [`Class`]); anything malformed or not addressed to us is `Other`.
pub fn classify(frame: &[u8], svc: &Service) -> Class {
    classify_opt(frame, svc).unwrap_or(Class::Other)
}

fn classify_opt(f: &[u8], svc: &Service) -> Option<Class> {
    let dst = Mac(arr(f, 0)?);
    let mut l3 = 14;
    let mut ethertype = be16(f, 12)?;
    if ethertype == ETH_VLAN {
        ethertype = be16(f, 16)?;
        l3 = 18;
    }
    match ethertype {
        ETH_ARP => arp(f, l3, svc),
        ETH_IPV4 if dst == svc.mac => ipv4(f, l3, svc),
        ETH_IPV6 => ipv6(f, l3, dst, svc),
        _ => None,
    }
}

fn arp(f: &[u8], l3: usize, svc: &Service) -> Option<Class> {
    let vip = svc.vip4?;
    // Ethernet/IPv4 ARP request: htype 1, ptype 0x0800, hlen 6, plen 4, op 1.
    if be16(f, l3)? != 1 || be16(f, l3 + 2)? != ETH_IPV4 || f.get(l3 + 4..l3 + 6)? != [6, 4] || be16(f, l3 + 6)? != 1 {
        return None;
    }
    let target = Ipv4Addr::from(arr::<4>(f, l3 + 24)?);
    (target == vip).then(|| Class::ArpRequest {
        mac: Mac(arr(f, l3 + 8).unwrap_or_default()),
        ip: Ipv4Addr::from(arr::<4>(f, l3 + 14).unwrap_or_default()),
    })
}

fn ipv4(f: &[u8], l3: usize, svc: &Service) -> Option<Class> {
    let vip = svc.vip4?;
    let vihl = *f.get(l3)?;
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    if ihl < 20 || Ipv4Addr::from(arr::<4>(f, l3 + 16)?) != vip {
        return None;
    }
    let proto = *f.get(l3 + 9)?;
    let src = arr::<4>(f, l3 + 12)?;
    let frag = be16(f, l3 + 6)?;
    let fragment = frag & 0x3fff != 0; // MF set or a non-zero offset
    let l4 = l3 + ihl;
    match proto {
        PROTO_TCP | PROTO_UDP if fragment => Some(Class::Flow {
            key: FlowKey {
                src: mapped(src),
                dst: mapped(vip.octets()),
                sport: 0,
                dport: 0,
                proto,
            },
            pin: false,
            syn: false,
        }),
        PROTO_TCP | PROTO_UDP => {
            let dport = be16(f, l4 + 2)?;
            svc.serves(dport).then_some(Class::Flow {
                key: FlowKey {
                    src: mapped(src),
                    dst: mapped(vip.octets()),
                    sport: be16(f, l4)?,
                    dport,
                    proto,
                },
                pin: true,
                syn: proto == PROTO_TCP && bare_syn(f, l4),
            })
        }
        // Type 3 code 4: fragmentation needed; the quoted header starts 8 bytes in.
        PROTO_ICMP if !fragment && f.get(l4..l4 + 2)? == [3, 4] => {
            let inner = l4 + 8;
            let iihl = usize::from(*f.get(inner)? & 0x0f) * 4;
            let iproto = *f.get(inner + 9)?;
            if Ipv4Addr::from(arr::<4>(f, inner + 12)?) != vip || !matches!(iproto, PROTO_TCP | PROTO_UDP) {
                return None;
            }
            let (sport, dport) = (be16(f, inner + iihl)?, be16(f, inner + iihl + 2)?);
            svc.serves(sport).then_some(Class::TooBig {
                key: FlowKey {
                    src: mapped(arr(f, inner + 16)?),
                    dst: mapped(vip.octets()),
                    sport: dport,
                    dport: sport,
                    proto: iproto,
                },
            })
        }
        _ => None,
    }
}

fn ipv6(f: &[u8], l3: usize, dst_mac: Mac, svc: &Service) -> Option<Class> {
    let vip = svc.vip6?;
    if *f.get(l3)? >> 4 != 6 {
        return None;
    }
    let next = *f.get(l3 + 6)?;
    let src = arr::<16>(f, l3 + 8)?;
    let dst = Ipv6Addr::from(arr::<16>(f, l3 + 24)?);
    let l4 = l3 + 40;
    // Neighbour solicitation (type 135) for the VIP, sent to its solicited-node group or to us.
    if next == PROTO_ICMPV6 && *f.get(l4)? == 135 && *f.get(l3 + 7)? == 255 {
        let target = Ipv6Addr::from(arr::<16>(f, l4 + 8)?);
        return (target == vip).then_some(Class::NeighborSolicit {
            mac: Mac(arr(f, 6)?),
            ip: Ipv6Addr::from(src),
        });
    }
    if dst != vip || dst_mac != svc.mac {
        return None;
    }
    match next {
        PROTO_TCP | PROTO_UDP => {
            let dport = be16(f, l4 + 2)?;
            svc.serves(dport).then_some(Class::Flow {
                key: FlowKey {
                    src,
                    dst: vip.octets(),
                    sport: be16(f, l4)?,
                    dport,
                    proto: next,
                },
                pin: true,
                syn: next == PROTO_TCP && bare_syn(f, l4),
            })
        }
        // Fragment header: hash non-first and first fragments alike, without ports.
        44 => Some(Class::Flow {
            key: FlowKey {
                src,
                dst: vip.octets(),
                sport: 0,
                dport: 0,
                proto: *f.get(l4)?,
            },
            pin: false,
            syn: false,
        }),
        // Packet too big (type 2); the quoted IPv6 header starts 8 bytes in.
        PROTO_ICMPV6 if *f.get(l4)? == 2 => {
            let inner = l4 + 8;
            let iproto = *f.get(inner + 6)?;
            if Ipv6Addr::from(arr::<16>(f, inner + 8)?) != vip || !matches!(iproto, PROTO_TCP | PROTO_UDP) {
                return None;
            }
            let (sport, dport) = (be16(f, inner + 40)?, be16(f, inner + 42)?);
            svc.serves(sport).then_some(Class::TooBig {
                key: FlowKey {
                    src: arr(f, inner + 24)?,
                    dst: vip.octets(),
                    sport: dport,
                    dport: sport,
                    proto: iproto,
                },
            })
        }
        _ => None,
    }
}

/// SYN set and ACK clear in the TCP header at `l4`.
fn bare_syn(f: &[u8], l4: usize) -> bool {
    f.get(l4 + 13).is_some_and(|flags| flags & 0x12 == 0x02)
}

/// Sets the Ethernet destination and source: the only change made to a forwarded frame.
pub fn rewrite_macs(frame: &mut [u8], dst: Mac, src: Mac) {
    if let Some(h) = frame.get_mut(..12) {
        h[..6].copy_from_slice(&dst.0);
        h[6..].copy_from_slice(&src.0);
    }
}

/// Length of an ARP frame on the wire (Ethernet header + 28, padded to the 60-byte minimum).
pub const ARP_FRAME_LEN: usize = 60;

fn arp_frame(eth_dst: Mac, op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    let mut f = [0u8; ARP_FRAME_LEN];
    f[..6].copy_from_slice(&eth_dst.0);
    f[6..12].copy_from_slice(&sha.0);
    f[12..14].copy_from_slice(&ETH_ARP.to_be_bytes());
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 0]);
    f[20..22].copy_from_slice(&op.to_be_bytes());
    f[22..28].copy_from_slice(&sha.0);
    f[28..32].copy_from_slice(&spa.octets());
    f[32..38].copy_from_slice(&tha.0);
    f[38..42].copy_from_slice(&tpa.octets());
    f
}

/// ARP reply "VIP is at `our`" to the asker.
pub fn arp_reply(our: Mac, vip: Ipv4Addr, asker_mac: Mac, asker_ip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    arp_frame(asker_mac, 2, our, vip, asker_mac, asker_ip)
}

/// Gratuitous ARP announcing "VIP is at `our`" to the segment (a broadcast request).
pub fn gratuitous_arp(our: Mac, vip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    arp_frame(Mac::BROADCAST, 1, our, vip, Mac::BROADCAST, vip)
}

/// Length of a neighbour advertisement frame (Ethernet 14 + IPv6 40 + ICMPv6 32).
pub const NA_FRAME_LEN: usize = 86;

/// Solicited neighbour advertisement "VIP6 is at `our`" to the asker; with `to = None`,
/// an unsolicited one to all nodes (the IPv6 gratuitous ARP).
pub fn neighbor_advert(our: Mac, vip: Ipv6Addr, to: Option<(Mac, Ipv6Addr)>) -> [u8; NA_FRAME_LEN] {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let (mac, ip, flags) = match to {
        Some((m, ip)) if !ip.is_unspecified() => (m, ip, 0x60u8), // solicited + override
        _ => (Mac([0x33, 0x33, 0, 0, 0, 1]), all_nodes, 0x20),    // override only
    };
    let mut f = [0u8; NA_FRAME_LEN];
    f[..6].copy_from_slice(&mac.0);
    f[6..12].copy_from_slice(&our.0);
    f[12..14].copy_from_slice(&ETH_IPV6.to_be_bytes());
    f[14] = 0x60;
    f[18..20].copy_from_slice(&32u16.to_be_bytes());
    f[20] = PROTO_ICMPV6;
    f[21] = 255;
    f[22..38].copy_from_slice(&vip.octets());
    f[38..54].copy_from_slice(&ip.octets());
    f[54] = 136;
    f[58] = flags;
    f[62..78].copy_from_slice(&vip.octets());
    f[78] = 2; // target link-layer address option, 1 × 8 bytes
    f[79] = 1;
    f[80..86].copy_from_slice(&our.0);
    let sum = l4_checksum(&f[22..38], &f[38..54], PROTO_ICMPV6, &f[54..]);
    f[56..58].copy_from_slice(&sum.to_be_bytes());
    f
}

fn fold(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Internet checksum of an L4 segment (checksum field must be zero) with its pseudo-header.
fn l4_checksum(src: &[u8], dst: &[u8], proto: u8, segment: &[u8]) -> u16 {
    let mut sum = fold(0, src);
    sum = fold(sum, dst);
    sum += u32::from(proto) + segment.len() as u32;
    let mut sum = u64::from(fold(sum, segment));
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Fills in the TCP/UDP checksum of a frame whose sender left it to the hardware.
///
/// Only frames the kernel marks "checksum not ready" need this: locally generated traffic
/// crossing a veth arrives with a partial checksum, and a frame re-sent from a packet socket
/// is not completed by anyone else. Frames from real NICs always carry a full checksum.
/// Returns false (frame unchanged) if it is not an unfragmented TCP/UDP packet.
pub fn complete_checksum(frame: &mut [u8]) -> bool {
    let mut l3 = 14;
    let Some(mut et) = be16(frame, 12) else { return false };
    if et == ETH_VLAN {
        let Some(t) = be16(frame, 16) else { return false };
        et = t;
        l3 = 18;
    }
    let (proto, l4, end, src, dst) = match et {
        ETH_IPV4 => {
            let Some(&vihl) = frame.get(l3) else { return false };
            let Some(total) = be16(frame, l3 + 2) else { return false };
            if be16(frame, l3 + 6).is_none_or(|f| f & 0x3fff != 0) {
                return false;
            }
            (
                frame[l3 + 9],
                l3 + usize::from(vihl & 0x0f) * 4,
                l3 + usize::from(total),
                l3 + 12..l3 + 16,
                l3 + 16..l3 + 20,
            )
        }
        ETH_IPV6 => {
            let Some(plen) = be16(frame, l3 + 4) else { return false };
            (
                frame[l3 + 6],
                l3 + 40,
                l3 + 40 + usize::from(plen),
                l3 + 8..l3 + 24,
                l3 + 24..l3 + 40,
            )
        }
        _ => return false,
    };
    let at = match proto {
        PROTO_TCP => l4 + 16,
        PROTO_UDP => l4 + 6,
        _ => return false,
    };
    if end > frame.len() || at + 2 > end {
        return false;
    }
    frame[at..at + 2].fill(0);
    let mut sum = l4_checksum(&frame[src], &frame[dst], proto, &frame[l4..end]);
    if proto == PROTO_UDP && sum == 0 {
        sum = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const DIRECTOR: Mac = Mac([0x02, 0, 0, 0, 0, 0x02]);
    pub const CLIENT: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);
    pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    pub fn svc() -> Service {
        Service {
            mac: DIRECTOR,
            vip4: Some(VIP),
            vip6: Some(VIP.to_ipv6_mapped()),
            ports: vec![80, 443],
        }
    }

    /// An Ethernet + IPv4 + TCP frame with a correct checksum.
    pub fn tcp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[..6].copy_from_slice(&DIRECTOR.0);
        f[6..12].copy_from_slice(&CLIENT.0);
        f[12..14].copy_from_slice(&ETH_IPV4.to_be_bytes());
        f[14] = 0x45;
        let total = (40 + payload.len()) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[20] = 0x40; // DF
        f[22] = 64;
        f[23] = PROTO_TCP;
        f[26..30].copy_from_slice(&src.octets());
        f[30..34].copy_from_slice(&dst.octets());
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[46] = 0x50;
        f[47] = flags;
        f.extend_from_slice(payload);
        let ip_sum = !(fold(0, &f[14..34]) as u16); // small header: no carry beyond one fold
        f[24..26].copy_from_slice(&ip_sum.to_be_bytes());
        assert!(complete_checksum(&mut f));
        f
    }

    fn mapped_ip(ip: Ipv4Addr) -> [u8; 16] {
        ip.to_ipv6_mapped().octets()
    }

    #[test]
    fn tcp_to_vip_port_is_a_flow() {
        let f = tcp4(CLIENT_IP, 40000, VIP, 80, 0x02, b"");
        let want = FlowKey {
            src: mapped_ip(CLIENT_IP),
            dst: mapped_ip(VIP),
            sport: 40000,
            dport: 80,
            proto: 6,
        };
        assert_eq!(
            classify(&f, &svc()),
            Class::Flow {
                key: want,
                pin: true,
                syn: true
            }
        );
        let ack = tcp4(CLIENT_IP, 40000, VIP, 80, 0x12, b"");
        assert!(matches!(classify(&ack, &svc()), Class::Flow { syn: false, .. }));
    }

    #[test]
    fn other_ports_hosts_and_macs_are_not_ours() {
        let s = svc();
        assert_eq!(classify(&tcp4(CLIENT_IP, 1, VIP, 22, 2, b""), &s), Class::Other);
        assert_eq!(
            classify(&tcp4(CLIENT_IP, 1, Ipv4Addr::new(192, 0, 2, 2), 80, 2, b""), &s),
            Class::Other
        );
        let mut f = tcp4(CLIENT_IP, 1, VIP, 80, 2, b"");
        f[0] = 0x04;
        assert_eq!(classify(&f, &s), Class::Other);
        assert_eq!(classify(&f[..20], &s), Class::Other);
        assert_eq!(classify(&[], &s), Class::Other);
    }

    #[test]
    fn fragments_hash_without_ports_and_are_not_pinned() {
        let mut f = tcp4(CLIENT_IP, 40000, VIP, 80, 0x10, b"x");
        f[20] = 0x20; // MF
        match classify(&f, &svc()) {
            Class::Flow { key, pin: false, .. } => assert_eq!((key.sport, key.dport), (0, 0)),
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn vlan_tagged_frames_are_parsed() {
        let f = tcp4(CLIENT_IP, 40000, VIP, 80, 0x02, b"");
        let mut v = f[..12].to_vec();
        v.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
        v.extend_from_slice(&f[12..]);
        assert!(matches!(classify(&v, &svc()), Class::Flow { pin: true, .. }));
    }

    #[test]
    fn arp_who_has_vip_and_reply() {
        let req = arp_frame(Mac::BROADCAST, 1, CLIENT, CLIENT_IP, Mac::default(), VIP);
        assert_eq!(
            classify(&req, &svc()),
            Class::ArpRequest {
                mac: CLIENT,
                ip: CLIENT_IP
            }
        );
        let other = arp_frame(
            Mac::BROADCAST,
            1,
            CLIENT,
            CLIENT_IP,
            Mac::default(),
            Ipv4Addr::new(192, 0, 2, 3),
        );
        assert_eq!(classify(&other, &svc()), Class::Other);
        let reply = arp_reply(DIRECTOR, VIP, CLIENT, CLIENT_IP);
        assert_eq!(&reply[..6], &CLIENT.0);
        assert_eq!(&reply[6..12], &DIRECTOR.0);
        assert_eq!(be16(&reply, 20), Some(2));
        assert_eq!(&reply[22..28], &DIRECTOR.0);
        assert_eq!(&reply[28..32], &VIP.octets());
        assert_eq!(&reply[38..42], &CLIENT_IP.octets());
        // A reply is not a question.
        assert_eq!(classify(&reply, &svc()), Class::Other);
        let g = gratuitous_arp(DIRECTOR, VIP);
        assert_eq!(
            (&g[..6], &g[28..32], &g[38..42]),
            (&[0xff; 6][..], &VIP.octets()[..], &VIP.octets()[..])
        );
    }

    #[test]
    fn icmp_frag_needed_maps_to_the_client_flow() {
        // The VIP's segment back to the client, quoted by a router on the path.
        let quoted = tcp4(VIP, 80, CLIENT_IP, 40000, 0x10, b"");
        let mut f = vec![0u8; 14 + 20 + 8];
        f[..14].copy_from_slice(&quoted[..14]);
        f[14] = 0x45;
        f[23] = PROTO_ICMP;
        f[26..30].copy_from_slice(&[198, 51, 100, 1]);
        f[30..34].copy_from_slice(&VIP.octets());
        f[34] = 3;
        f[35] = 4;
        f.extend_from_slice(&quoted[14..14 + 28]);
        let want = FlowKey {
            src: mapped_ip(CLIENT_IP),
            dst: mapped_ip(VIP),
            sport: 40000,
            dport: 80,
            proto: 6,
        };
        assert_eq!(classify(&f, &svc()), Class::TooBig { key: want });
        f[35] = 1; // host unreachable: not ours
        assert_eq!(classify(&f, &svc()), Class::Other);
    }

    #[test]
    fn ipv6_flow_and_neighbor_solicitation() {
        let vip6 = VIP.to_ipv6_mapped();
        let client6 = CLIENT_IP.to_ipv6_mapped();
        let mut f = vec![0u8; 14 + 40 + 20];
        f[..6].copy_from_slice(&DIRECTOR.0);
        f[6..12].copy_from_slice(&CLIENT.0);
        f[12..14].copy_from_slice(&ETH_IPV6.to_be_bytes());
        f[14] = 0x60;
        f[18..20].copy_from_slice(&20u16.to_be_bytes());
        f[20] = PROTO_TCP;
        f[21] = 64;
        f[22..38].copy_from_slice(&client6.octets());
        f[38..54].copy_from_slice(&vip6.octets());
        f[54..56].copy_from_slice(&5555u16.to_be_bytes());
        f[56..58].copy_from_slice(&443u16.to_be_bytes());
        f[66] = 0x50;
        let c = classify(&f, &svc());
        assert!(
            matches!(c, Class::Flow { key, pin: true, .. } if key.sport == 5555 && key.dport == 443),
            "{c:?}"
        );
        assert!(complete_checksum(&mut f));

        let mut ns = vec![0u8; 14 + 40 + 24];
        ns[6..12].copy_from_slice(&CLIENT.0);
        ns[12..14].copy_from_slice(&ETH_IPV6.to_be_bytes());
        ns[14] = 0x60;
        ns[20] = PROTO_ICMPV6;
        ns[21] = 255;
        ns[22..38].copy_from_slice(&client6.octets());
        ns[54] = 135;
        ns[62..78].copy_from_slice(&vip6.octets());
        assert_eq!(
            classify(&ns, &svc()),
            Class::NeighborSolicit {
                mac: CLIENT,
                ip: client6
            }
        );
        let na = neighbor_advert(DIRECTOR, vip6, Some((CLIENT, client6)));
        // A correct ICMPv6 checksum sums to zero over pseudo-header + message.
        assert_eq!(l4_checksum(&na[22..38], &na[38..54], PROTO_ICMPV6, &na[54..]), 0);
        assert_eq!((na[54], na[58]), (136, 0x60));
    }

    #[test]
    fn checksum_completion_matches_a_known_segment() {
        // A valid segment verifies to zero; a partial one is fixed up to the same value.
        let f = tcp4(CLIENT_IP, 40000, VIP, 80, 0x18, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(l4_checksum(&f[26..30], &f[30..34], PROTO_TCP, &f[34..]), 0);
        let mut partial = f.clone();
        partial[50] = 0x12;
        partial[51] = 0x34;
        assert!(complete_checksum(&mut partial));
        assert_eq!(partial, f);
    }

    #[test]
    fn rewrite_touches_only_the_ethernet_addresses() {
        let f = tcp4(CLIENT_IP, 40000, VIP, 80, 0x02, b"abc");
        let mut g = f.clone();
        let node = Mac([0x02, 0, 0, 0, 0, 0x11]);
        rewrite_macs(&mut g, node, DIRECTOR);
        assert_eq!(&g[..6], &node.0);
        assert_eq!(&g[6..12], &DIRECTOR.0);
        assert_eq!(&g[12..], &f[12..]);
    }

    #[test]
    fn mac_parsing() {
        assert_eq!("02:00:00:00:00:11".parse::<Mac>(), Ok(Mac([2, 0, 0, 0, 0, 0x11])));
        assert!("02:00:00:00:00".parse::<Mac>().is_err());
        assert!("02:00:00:00:00:11:22".parse::<Mac>().is_err());
        assert_eq!(Mac([2, 0, 0, 0, 0, 0x11]).to_string(), "02:00:00:00:00:11");
    }
}
