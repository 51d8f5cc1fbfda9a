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
    /// For the director (ARP, a neighbour solicitation, IP sent to its MAC) but cut short or
    /// contradicting itself: a runt, a VLAN tag with nothing after it, an IPv4 header shorter
    /// than 20 bytes or than its IHL, a total length past the frame, a transport header past
    /// the packet's end, an ICMP error whose quote is cut short. Never forwarded; left to the
    /// kernel and counted.
    Malformed,
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

/// Classifies a frame (see [`Class`]). Every read is bounds-checked: a frame cut short or
/// whose lengths contradict each other is [`Class::Malformed`] when it was for the director,
/// `Other` when it was not.
pub fn classify(frame: &[u8], svc: &Service) -> Class {
    classify_opt(frame, svc).unwrap_or(Class::Malformed)
}

/// Whether the frame carries IPv4 (after at most one VLAN tag): with the XDP plane running,
/// such frames reach user space only when the program left them to the kernel.
pub fn is_ipv4(frame: &[u8]) -> bool {
    l2(frame).is_some_and(|(ethertype, _)| ethertype == ETH_IPV4)
}

/// Where the network layer starts and what it is: the ethertype and its offset, after at
/// most one VLAN tag. `None` for a runt or a tag with nothing after it.
fn l2(f: &[u8]) -> Option<(u16, usize)> {
    match be16(f, 12)? {
        ETH_VLAN => Some((be16(f, 16)?, 18)),
        ethertype => Some((ethertype, 14)),
    }
}

/// An IP packet whose header lengths agree with each other and with the frame.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Offset of the transport header (after the IPv4 options, or the fixed IPv6 header).
    l4: usize,
    /// Offset just past the packet; what follows is Ethernet padding, never read.
    end: usize,
    /// The transport protocol (IPv6: the first next header).
    proto: u8,
}

/// The IPv4 packet at `l3`: version 4, IHL ≥ 5, IHL ≤ total length, total length within
/// the frame. `None` otherwise.
fn ipv4_layout(f: &[u8], l3: usize) -> Option<Layout> {
    let vihl = *f.get(l3)?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    let end = l3 + usize::from(be16(f, l3 + 2)?);
    if vihl >> 4 != 4 || ihl < 20 || end < l3 + ihl || end > f.len() {
        return None;
    }
    Some(Layout {
        l4: l3 + ihl,
        end,
        proto: *f.get(l3 + 9)?,
    })
}

/// The IPv6 packet at `l3`: version 6, payload length within the frame. `None` otherwise.
fn ipv6_layout(f: &[u8], l3: usize) -> Option<Layout> {
    if *f.get(l3)? >> 4 != 6 {
        return None;
    }
    let end = l3 + 40 + usize::from(be16(f, l3 + 4)?);
    if end > f.len() {
        return None;
    }
    Some(Layout {
        l4: l3 + 40,
        end,
        proto: *f.get(l3 + 6)?,
    })
}

/// The source and destination ports of the TCP or UDP header at `l4` of `packet` (cut at
/// the packet's end), if the whole header is there: 20 bytes and its data offset for TCP,
/// 8 bytes and a length that fits for UDP.
fn ports(packet: &[u8], l4: usize, proto: u8) -> Option<(u16, u16)> {
    let room = packet.len().checked_sub(l4)?;
    let fits = match proto {
        PROTO_TCP => {
            let header = usize::from(*packet.get(l4 + 12)? >> 4) * 4;
            header >= 20 && header <= room
        }
        PROTO_UDP => (8..=room).contains(&usize::from(be16(packet, l4 + 4)?)),
        _ => false,
    };
    fits.then_some(())?;
    Some((be16(packet, l4)?, be16(packet, l4 + 2)?))
}

// Below, `None` (and so `?`) means malformed; a frame that is not the director's business
// is `Some(Class::Other)`.

fn classify_opt(f: &[u8], svc: &Service) -> Option<Class> {
    let dst = Mac(arr(f, 0)?);
    let (ethertype, l3) = l2(f)?;
    match ethertype {
        ETH_ARP => arp(f, l3, svc),
        ETH_IPV4 if dst == svc.mac => ipv4(f, l3, svc),
        ETH_IPV6 => ipv6(f, l3, dst, svc),
        _ => Some(Class::Other),
    }
}

fn arp(f: &[u8], l3: usize, svc: &Service) -> Option<Class> {
    let Some(vip) = svc.vip4 else {
        return Some(Class::Other);
    };
    // Ethernet/IPv4 ARP request: htype 1, ptype 0x0800, hlen 6, plen 4, op 1.
    if arr::<8>(f, l3)? != [0, 1, 8, 0, 6, 4, 0, 1] {
        return Some(Class::Other);
    }
    // Then sender MAC and IP, target MAC and IP: 28 bytes in all.
    let target = Ipv4Addr::from(arr::<4>(f, l3 + 24)?);
    Some(if target == vip {
        Class::ArpRequest {
            mac: Mac(arr(f, l3 + 8)?),
            ip: Ipv4Addr::from(arr::<4>(f, l3 + 14)?),
        }
    } else {
        Class::Other
    })
}

fn ipv4(f: &[u8], l3: usize, svc: &Service) -> Option<Class> {
    let Some(vip) = svc.vip4 else {
        return Some(Class::Other);
    };
    // The fixed header first: to our MAC, it must be there; then only the VIP's packets
    // are looked at further.
    let fixed = arr::<20>(f, l3)?;
    if Ipv4Addr::from(arr::<4>(&fixed, 16)?) != vip {
        return Some(Class::Other);
    }
    let ip = ipv4_layout(f, l3)?;
    let p = f.get(..ip.end)?;
    let src = arr::<4>(p, l3 + 12)?;
    let fragment = be16(p, l3 + 6)? & 0x3fff != 0; // MF set or a non-zero offset
    let key = |sport, dport| FlowKey {
        src: mapped(src),
        dst: mapped(vip.octets()),
        sport,
        dport,
        proto: ip.proto,
    };
    Some(match ip.proto {
        PROTO_TCP | PROTO_UDP if fragment => Class::Flow {
            key: key(0, 0),
            pin: false,
            syn: false,
        },
        PROTO_TCP | PROTO_UDP => {
            let (sport, dport) = ports(p, ip.l4, ip.proto)?;
            if !svc.serves(dport) {
                return Some(Class::Other);
            }
            Class::Flow {
                key: key(sport, dport),
                pin: true,
                syn: ip.proto == PROTO_TCP && bare_syn(p, ip.l4),
            }
        }
        // Type 3 code 4: fragmentation needed; the quoted header starts 8 bytes in.
        PROTO_ICMP if !fragment => {
            if arr::<8>(p, ip.l4)?[..2] != [3, 4] {
                return Some(Class::Other);
            }
            too_big4(p, ip.l4 + 8, vip, svc)?
        }
        _ => Class::Other,
    })
}

/// The flow an ICMP fragmentation-needed is about, from the IPv4 header and the first 8
/// bytes of its payload quoted at `inner` (RFC 792); the quote must hold both.
fn too_big4(p: &[u8], inner: usize, vip: Ipv4Addr, svc: &Service) -> Option<Class> {
    let h = arr::<20>(p, inner)?;
    let iihl = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || iihl < 20 {
        return None;
    }
    let iproto = h[9];
    if Ipv4Addr::from(arr::<4>(&h, 12)?) != vip || !matches!(iproto, PROTO_TCP | PROTO_UDP) {
        return Some(Class::Other);
    }
    let (sport, dport) = (be16(p, inner + iihl)?, be16(p, inner + iihl + 2)?);
    Some(if svc.serves(sport) {
        Class::TooBig {
            key: FlowKey {
                src: mapped(arr(&h, 16)?),
                dst: mapped(vip.octets()),
                sport: dport,
                dport: sport,
                proto: iproto,
            },
        }
    } else {
        Class::Other
    })
}

fn ipv6(f: &[u8], l3: usize, dst_mac: Mac, svc: &Service) -> Option<Class> {
    let Some(vip) = svc.vip6 else {
        return Some(Class::Other);
    };
    let ours = dst_mac == svc.mac;
    let Some(ip) = ipv6_layout(f, l3) else {
        // Broken: the director's business only if it was sent to the director.
        return (!ours).then_some(Class::Other);
    };
    let p = f.get(..ip.end)?;
    let src = arr::<16>(p, l3 + 8)?;
    let dst = Ipv6Addr::from(arr::<16>(p, l3 + 24)?);
    let l4 = ip.l4;
    // Neighbour solicitation (type 135) for the VIP, sent to its solicited-node group or to us.
    if ip.proto == PROTO_ICMPV6 && p.get(l4) == Some(&135) && p.get(l3 + 7) == Some(&255) {
        let target = Ipv6Addr::from(arr::<16>(p, l4 + 8)?);
        return Some(if target == vip {
            Class::NeighborSolicit {
                mac: Mac(arr(f, 6)?),
                ip: Ipv6Addr::from(src),
            }
        } else {
            Class::Other
        });
    }
    if dst != vip || !ours {
        return Some(Class::Other);
    }
    let key = |sport, dport, proto| FlowKey {
        src,
        dst: vip.octets(),
        sport,
        dport,
        proto,
    };
    Some(match ip.proto {
        PROTO_TCP | PROTO_UDP => {
            let (sport, dport) = ports(p, l4, ip.proto)?;
            if !svc.serves(dport) {
                return Some(Class::Other);
            }
            Class::Flow {
                key: key(sport, dport, ip.proto),
                pin: true,
                syn: ip.proto == PROTO_TCP && bare_syn(p, l4),
            }
        }
        // Fragment header (8 bytes): hash non-first and first fragments alike, without ports.
        44 => Class::Flow {
            key: key(0, 0, arr::<8>(p, l4)?[0]),
            pin: false,
            syn: false,
        },
        // Packet too big (type 2); the quoted IPv6 header starts 8 bytes in.
        PROTO_ICMPV6 if arr::<8>(p, l4)?[0] == 2 => too_big6(p, l4 + 8, vip, svc)?,
        _ => Class::Other,
    })
}

/// The flow an ICMPv6 packet-too-big is about, from the IPv6 header and the transport
/// ports quoted at `inner`; the quote must hold both.
fn too_big6(p: &[u8], inner: usize, vip: Ipv6Addr, svc: &Service) -> Option<Class> {
    let h = arr::<40>(p, inner)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let iproto = h[6];
    if Ipv6Addr::from(arr::<16>(&h, 8)?) != vip || !matches!(iproto, PROTO_TCP | PROTO_UDP) {
        return Some(Class::Other);
    }
    let (sport, dport) = (be16(p, inner + 40)?, be16(p, inner + 42)?);
    Some(if svc.serves(sport) {
        Class::TooBig {
            key: FlowKey {
                src: arr(&h, 24)?,
                dst: vip.octets(),
                sport: dport,
                dport: sport,
                proto: iproto,
            },
        }
    } else {
        Class::Other
    })
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
    let Some((ethertype, l3)) = l2(frame) else {
        return false;
    };
    let (ip, src, dst) = match ethertype {
        ETH_IPV4 => {
            if be16(frame, l3 + 6).is_none_or(|f| f & 0x3fff != 0) {
                return false;
            }
            (ipv4_layout(frame, l3), l3 + 12..l3 + 16, l3 + 16..l3 + 20)
        }
        ETH_IPV6 => (ipv6_layout(frame, l3), l3 + 8..l3 + 24, l3 + 24..l3 + 40),
        _ => return false,
    };
    let Some(ip) = ip else { return false };
    let at = match ip.proto {
        PROTO_TCP => ip.l4 + 16,
        PROTO_UDP => ip.l4 + 6,
        _ => return false,
    };
    // The layout keeps the addresses inside the frame and the segment inside the packet;
    // the checksum field must be inside the segment.
    if at + 2 > ip.end {
        return false;
    }
    let Some(old) = arr::<2>(frame, at) else {
        return false;
    };
    if let Some(field) = frame.get_mut(at..at + 2) {
        field.fill(0);
    }
    let sum = match (frame.get(src), frame.get(dst), frame.get(ip.l4..ip.end)) {
        (Some(s), Some(d), Some(segment)) => l4_checksum(s, d, ip.proto, segment),
        _ => {
            // Unreachable after the layout checks; put the field back all the same.
            if let Some(field) = frame.get_mut(at..at + 2) {
                field.copy_from_slice(&old);
            }
            return false;
        }
    };
    let sum = if ip.proto == PROTO_UDP && sum == 0 { 0xffff } else { sum };
    if let Some(field) = frame.get_mut(at..at + 2) {
        field.copy_from_slice(&sum.to_be_bytes());
    }
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

    /// Sets the IPv4 total length of the packet at offset 14 to the rest of the frame.
    pub fn set_ipv4_total(f: &mut [u8]) {
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
    }

    /// An ICMP fragmentation-needed from a router to the VIP, quoting the IPv4 header and
    /// first 8 bytes of `quoted` (an Ethernet + IPv4 frame from the VIP).
    pub fn frag_needed(quoted: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[..6].copy_from_slice(&DIRECTOR.0);
        f[6..12].copy_from_slice(&CLIENT.0);
        f[12..14].copy_from_slice(&ETH_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[23] = PROTO_ICMP;
        f[26..30].copy_from_slice(&[198, 51, 100, 1]);
        f[30..34].copy_from_slice(&VIP.octets());
        f[34] = 3;
        f[35] = 4;
        f.extend_from_slice(&quoted[14..14 + 28]);
        set_ipv4_total(&mut f);
        f
    }

    /// An Ethernet + IPv4 + UDP frame to `dport` on the VIP.
    fn udp4(dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = tcp4(CLIENT_IP, 5353, VIP, dport, 0, b"");
        f.truncate(14 + 20);
        f[23] = PROTO_UDP;
        f.extend_from_slice(&5353u16.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        set_ipv4_total(&mut f);
        f
    }

    /// An Ethernet + IPv6 frame from the client to `dst` carrying `next` and `payload`.
    fn ip6(dst_mac: Mac, dst: Ipv6Addr, next: u8, hops: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40];
        f[..6].copy_from_slice(&dst_mac.0);
        f[6..12].copy_from_slice(&CLIENT.0);
        f[12..14].copy_from_slice(&ETH_IPV6.to_be_bytes());
        f[14] = 0x60;
        f[18..20].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        f[20] = next;
        f[21] = hops;
        f[22..38].copy_from_slice(&CLIENT_IP.to_ipv6_mapped().octets());
        f[38..54].copy_from_slice(&dst.octets());
        f.extend_from_slice(payload);
        f
    }

    /// A TCP header from port 5555 to `dport`, SYN set.
    fn tcp_header(dport: u16) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[..2].copy_from_slice(&5555u16.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 0x50;
        t[13] = 0x02;
        t
    }

    /// One valid frame of each kind the director reads, with the length up to which its
    /// bytes matter (the rest is padding) and what any shorter prefix of it must be.
    fn valid_frames() -> Vec<(&'static str, Vec<u8>, usize, Class)> {
        let vip6 = VIP.to_ipv6_mapped();
        let mut frames = Vec::new();
        let mut add = |name, f: Vec<u8>, meaningful: usize, truncated| frames.push((name, f, meaningful, truncated));

        let syn = tcp4(CLIENT_IP, 40000, VIP, 80, 0x02, b"GET");
        add("tcp4", syn.clone(), syn.len(), Class::Malformed);
        let mut padded = udp4(443, b"q");
        let n = padded.len();
        padded.resize(60, 0xee);
        add("udp4 padded", padded, n, Class::Malformed);
        let mut v = syn[..12].to_vec();
        v.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
        v.extend_from_slice(&syn[12..]);
        add("tcp4 in a vlan", v.clone(), v.len(), Class::Malformed);
        let mut frag = tcp4(CLIENT_IP, 40000, VIP, 80, 0x10, b"x");
        frag[20] = 0x20; // MF
        add("ipv4 fragment", frag.clone(), frag.len(), Class::Malformed);
        let req = arp_frame(Mac::BROADCAST, 1, CLIENT, CLIENT_IP, Mac::default(), VIP);
        add("arp request", req.to_vec(), 14 + 28, Class::Malformed);
        let icmp = frag_needed(&tcp4(VIP, 80, CLIENT_IP, 40000, 0x10, b""));
        add("icmp frag-needed", icmp.clone(), icmp.len(), Class::Malformed);

        let tcp6 = ip6(DIRECTOR, vip6, PROTO_TCP, 64, &tcp_header(443));
        add("tcp6", tcp6.clone(), tcp6.len(), Class::Malformed);
        let mut fh = vec![PROTO_TCP, 0, 0, 8, 0, 0, 0, 1];
        fh.extend_from_slice(&[0; 8]);
        let frag6 = ip6(DIRECTOR, vip6, 44, 64, &fh);
        add("ipv6 fragment", frag6.clone(), frag6.len(), Class::Malformed);
        let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
        ns.extend_from_slice(&vip6.octets());
        let ns = ip6(Mac([0x33, 0x33, 0xff, 0, 2, 100]), vip6, PROTO_ICMPV6, 255, &ns);
        // Sent to a multicast group: a broken one is not known to be ours.
        add("neighbour solicitation", ns.clone(), ns.len(), Class::Other);
        let quoted = {
            let mut q = tcp_header(40000);
            q[..4].copy_from_slice(&[0x01, 0xbb, 0x9c, 0x40]); // 443 → 40000
            let mut h = ip6(CLIENT, CLIENT_IP.to_ipv6_mapped(), PROTO_TCP, 64, &q);
            h[22..38].copy_from_slice(&vip6.octets());
            h[38..54].copy_from_slice(&CLIENT_IP.to_ipv6_mapped().octets());
            h[14..].to_vec()
        };
        let mut ptb = vec![2, 0, 0, 0, 0, 0, 0x05, 0xdc];
        ptb.extend_from_slice(&quoted);
        let ptb = ip6(DIRECTOR, vip6, PROTO_ICMPV6, 64, &ptb);
        add("icmpv6 packet-too-big", ptb.clone(), ptb.len(), Class::Malformed);
        frames
    }

    #[test]
    fn every_prefix_of_a_valid_frame_is_refused_and_nothing_panics() {
        let s = svc();
        for (name, frame, meaningful, truncated) in valid_frames() {
            let whole = classify(&frame, &s);
            assert!(!matches!(whole, Class::Other | Class::Malformed), "{name}: {whole:?}");
            for n in 0..frame.len() {
                let got = classify(&frame[..n], &s);
                let want = match n {
                    0..14 => Class::Malformed,
                    n if n < meaningful => truncated,
                    _ => whole,
                };
                assert_eq!(got, want, "{name} cut to {n} bytes");
                let mut cut = frame[..n].to_vec();
                if complete_checksum(&mut cut) {
                    assert!(n >= meaningful, "{name} cut to {n} bytes had its checksum completed");
                } else {
                    assert_eq!(cut, frame[..n], "{name} cut to {n} bytes was changed");
                }
            }
        }
    }

    #[test]
    fn checksum_completion_reads_no_byte_past_the_frame() {
        // Cut inside the IPv4 header, right before the protocol byte: this once panicked.
        let f = tcp4(CLIENT_IP, 40000, VIP, 80, 0x02, b"");
        for n in [0, 13, 14, 20, 22, 23, 24, 33, 34, 49] {
            let mut cut = f[..n].to_vec();
            assert!(!complete_checksum(&mut cut), "cut to {n}");
        }
    }

    #[test]
    fn ipv4_lengths_that_lie_are_malformed() {
        let s = svc();
        let good = tcp4(CLIENT_IP, 40000, VIP, 80, 0x02, b"abcd");
        // IP-level lies also keep the checksum from being completed.
        let lie = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut f = good.clone();
            edit(&mut f);
            let mut g = f.clone();
            assert!(!complete_checksum(&mut g));
            classify(&f, &s)
        };
        // TCP-level ones leave a checksum that can still be computed over the bytes.
        let tcp_lie = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut f = good.clone();
            edit(&mut f);
            classify(&f, &s)
        };
        for ihl in 0..5u8 {
            assert_eq!(lie(&|f| f[14] = 0x40 | ihl), Class::Malformed, "IHL {ihl}");
        }
        // IHL 15 (60 bytes) in a 44-byte packet; IHL 8 leaving 12 bytes for a TCP header.
        assert_eq!(lie(&|f| f[14] = 0x4f), Class::Malformed);
        assert_eq!(lie(&|f| f[14] = 0x48), Class::Malformed);
        // Total length: past the frame, shorter than the header, leaving no room for TCP.
        assert_eq!(
            lie(&|f| f[16..18].copy_from_slice(&45u16.to_be_bytes())),
            Class::Malformed
        );
        assert_eq!(
            lie(&|f| f[16..18].copy_from_slice(&19u16.to_be_bytes())),
            Class::Malformed
        );
        assert_eq!(
            lie(&|f| f[16..18].copy_from_slice(&0u16.to_be_bytes())),
            Class::Malformed
        );
        assert_eq!(
            tcp_lie(&|f| f[16..18].copy_from_slice(&39u16.to_be_bytes())),
            Class::Malformed
        );
        // A TCP data offset below 5 or past the packet; a UDP length past it.
        assert_eq!(tcp_lie(&|f| f[46] = 0x40), Class::Malformed);
        assert_eq!(tcp_lie(&|f| f[46] = 0x70), Class::Malformed);
        assert_eq!(lie(&|f| f[14] = 0x65), Class::Malformed, "version 6 in an IPv4 frame");
        let mut udp = udp4(80, b"abc");
        udp[38..40].copy_from_slice(&12u16.to_be_bytes());
        assert_eq!(classify(&udp, &s), Class::Malformed);
        // Ports are never read from the padding after the packet's end.
        let mut empty = good[..34].to_vec();
        set_ipv4_total(&mut empty);
        empty.extend_from_slice(&good[34..]);
        assert_eq!(classify(&empty, &s), Class::Malformed);
        // Honest padding changes nothing.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0xaa; 10]);
        assert_eq!(classify(&padded, &s), classify(&good, &s));
        // Not to the VIP: not ours, however broken past the fixed header.
        let mut other = good.clone();
        other[30..34].copy_from_slice(&[192, 0, 2, 2]);
        other[14] = 0x41;
        assert_eq!(classify(&other, &s), Class::Other);
    }

    #[test]
    fn ipv6_lengths_that_lie_are_malformed() {
        let s = svc();
        let vip6 = VIP.to_ipv6_mapped();
        let mut long = ip6(DIRECTOR, vip6, PROTO_TCP, 64, &tcp_header(443));
        long[18..20].copy_from_slice(&21u16.to_be_bytes());
        assert_eq!(classify(&long, &s), Class::Malformed);
        let mut short = ip6(DIRECTOR, vip6, PROTO_TCP, 64, &tcp_header(443));
        short[18..20].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(classify(&short, &s), Class::Malformed);
        let mut wrong = ip6(DIRECTOR, vip6, PROTO_TCP, 64, &tcp_header(443));
        wrong[14] = 0x40;
        assert_eq!(classify(&wrong, &s), Class::Malformed);
        // The same to another MAC is none of the director's business.
        wrong[..6].copy_from_slice(&CLIENT.0);
        assert_eq!(classify(&wrong, &s), Class::Other);
    }

    #[test]
    fn a_vlan_tag_with_nothing_after_it_is_malformed() {
        let f = tcp4(CLIENT_IP, 40000, VIP, 80, 0x02, b"");
        let mut v = f[..12].to_vec();
        v.extend_from_slice(&[0x81, 0x00]);
        assert_eq!(classify(&v, &svc()), Class::Malformed);
        v.extend_from_slice(&[0x00, 0x07]);
        assert_eq!(classify(&v, &svc()), Class::Malformed);
        v.extend_from_slice(&[0x08, 0x00]);
        assert_eq!(classify(&v, &svc()), Class::Malformed);
        assert!(!complete_checksum(&mut v));
    }

    #[test]
    fn arp_cut_short_is_malformed_and_other_arp_is_not_ours() {
        let req = arp_frame(Mac::BROADCAST, 1, CLIENT, CLIENT_IP, Mac::default(), VIP);
        for n in 14..42 {
            assert_eq!(classify(&req[..n], &svc()), Class::Malformed, "cut to {n}");
        }
        let reply = arp_reply(DIRECTOR, VIP, CLIENT, CLIENT_IP);
        assert_eq!(classify(&reply[..30], &svc()), Class::Other);
        let no_vip4 = Service { vip4: None, ..svc() };
        assert_eq!(classify(&req[..20], &no_vip4), Class::Other);
    }

    #[test]
    fn frag_needed_with_a_cut_quote_is_malformed() {
        let s = svc();
        let quoted = tcp4(VIP, 80, CLIENT_IP, 40000, 0x10, b"");
        let whole = frag_needed(&quoted);
        assert!(matches!(classify(&whole, &s), Class::TooBig { .. }));
        // The quote cut at every length, the outer lengths telling the truth about it.
        for n in 0..24 {
            let mut f = whole[..14 + 20 + 8 + n].to_vec();
            set_ipv4_total(&mut f);
            assert_eq!(classify(&f, &s), Class::Malformed, "quote of {n} bytes");
        }
        // The quoted IHL below 5, or pointing past the quote.
        for ihl in [0x40, 0x44, 0x4f] {
            let mut f = whole.clone();
            f[42] = ihl;
            assert_eq!(classify(&f, &s), Class::Malformed, "quoted IHL {ihl:#x}");
        }
        // Not about the VIP: not ours.
        let mut f = whole.clone();
        f[42 + 12..42 + 16].copy_from_slice(&[192, 0, 2, 9]);
        assert_eq!(classify(&f, &s), Class::Other);
    }

    #[test]
    fn packet_too_big_with_a_cut_quote_is_malformed() {
        let s = svc();
        let (_, ptb, _, _) = valid_frames()
            .into_iter()
            .find(|(name, ..)| *name == "icmpv6 packet-too-big")
            .unwrap();
        assert!(matches!(classify(&ptb, &s), Class::TooBig { key } if key.dport == 443 && key.sport == 40000));
        for n in 0..44 {
            let mut f = ptb[..14 + 40 + 8 + n].to_vec();
            f[18..20].copy_from_slice(&((8 + n) as u16).to_be_bytes());
            assert_eq!(classify(&f, &s), Class::Malformed, "quote of {n} bytes");
        }
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
        // A runt can't be told apart from the director's own frames.
        assert_eq!(classify(&[], &s), Class::Malformed);
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
        set_ipv4_total(&mut f);
        assert_eq!(f, frag_needed(&quoted));
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
        ns[18..20].copy_from_slice(&24u16.to_be_bytes());
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
