//! The director's frame classification (`strata_director::packet`) on arbitrary frames.
//!
//! Never a panic, and what it decides holds up: nothing is read past a packet's end (padding
//! appended to a frame changes no decision), an in-band VLAN tag changes nothing, a pinned
//! flow is to a served port, checksum completion touches only the checksum field and is
//! idempotent, the MAC rewrite touches only the Ethernet addresses.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use strata_director::packet::{classify, complete_checksum, rewrite_macs, Class, Mac, Service};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn service() -> Service {
    Service {
        mac: Mac([0x02, 0, 0, 0, 0, 0x02]),
        vip4: Some(VIP),
        vip6: Some(VIP.to_ipv6_mapped()),
        ports: vec![80, 443],
    }
}

/// The frame with an 802.1Q tag inserted after the two addresses.
fn tagged(frame: &[u8]) -> Vec<u8> {
    let mut v = frame[..12].to_vec();
    v.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
    v.extend_from_slice(&frame[12..]);
    v
}

/// Where the ARP or IP packet of a frame says it ends (after at most one VLAN tag).
fn packet_end(f: &[u8]) -> Option<usize> {
    let be16 = |at: usize| Some(u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]));
    let (ethertype, l3) = match be16(12)? {
        0x8100 => (be16(16)?, 18),
        t => (t, 14),
    };
    match ethertype {
        0x0806 => Some(l3 + 28),
        0x0800 => {
            // Only a total length covering the header (fixed part and options) says anything.
            let ihl = usize::from(*f.get(l3)? & 0x0f) * 4;
            let total = usize::from(be16(l3 + 2)?);
            (total >= ihl.max(20)).then_some(l3 + total)
        }
        0x86dd => Some(l3 + 40 + usize::from(be16(l3 + 4)?)),
        _ => None,
    }
}

fn check_checksum(frame: &[u8]) -> Option<Vec<u8>> {
    let mut done = frame.to_vec();
    if !complete_checksum(&mut done) {
        assert_eq!(done, frame, "a refused frame was changed");
        return None;
    }
    assert_eq!(done.len(), frame.len());
    let changed: Vec<usize> = (0..frame.len()).filter(|&i| done[i] != frame[i]).collect();
    assert!(
        changed.len() <= 2 && changed.windows(2).all(|w| w[1] == w[0] + 1),
        "checksum completion changed bytes {changed:?}"
    );
    let mut again = done.clone();
    assert!(complete_checksum(&mut again));
    assert_eq!(again, done, "checksum completion is not idempotent");
    Some(done)
}

fuzz_target!(|frame: &[u8]| {
    let svc = service();
    let class = classify(frame, &svc);
    assert_eq!(class, classify(frame, &svc));
    match class {
        Class::Flow { key, pin, syn } => {
            if pin {
                assert!(svc.ports.contains(&key.dport), "pinned flow to port {}", key.dport);
            } else {
                assert_eq!((key.sport, key.dport, syn), (0, 0, false));
            }
            assert!(key.proto == 6 || key.proto == 17 || !pin);
        }
        Class::TooBig { key } => {
            assert!(svc.ports.contains(&key.dport));
            assert!(key.proto == 6 || key.proto == 17);
        }
        _ => {}
    }
    if !matches!(class, Class::Malformed | Class::Other) {
        // A decision needs no byte past the frame.
        let mut longer = frame.to_vec();
        longer.extend_from_slice(&[0x45, 0x00, 0x01, 0xbb, 0x00, 0x50, 0xff, 0x06]);
        assert_eq!(
            classify(&longer, &svc),
            class,
            "bytes after the frame changed the decision"
        );
    }
    if let Some(end) = packet_end(frame).filter(|&e| e < frame.len()) {
        // Nothing past the packet's own end (Ethernet padding) is read.
        let mut repadded = frame.to_vec();
        for b in &mut repadded[end..] {
            *b = !*b;
        }
        assert_eq!(classify(&repadded, &svc), class, "padding changed the decision");
        assert_eq!(check_checksum(&repadded).is_some(), check_checksum(frame).is_some());
    }
    let done = check_checksum(frame);
    if frame.len() >= 14 && frame[12..14] != [0x81, 0x00] {
        let t = tagged(frame);
        assert_eq!(classify(&t, &svc), class, "an in-band VLAN tag changed the decision");
        let t_done = check_checksum(&t);
        assert_eq!(t_done.map(|t| [&t[..12], &t[16..]].concat()), done);
    }
    let mut rewritten = frame.to_vec();
    rewrite_macs(&mut rewritten, Mac([0x02, 0, 0, 0, 0, 0x11]), svc.mac);
    if frame.len() >= 12 {
        assert_eq!(rewritten[12..], frame[12..]);
    } else {
        assert_eq!(rewritten, frame);
    }
});
