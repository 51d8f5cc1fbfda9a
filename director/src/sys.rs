//! The only module with `unsafe` code: AF_PACKET sockets, the TPACKET_V3 receive ring,
//! batched transmit, entering a network namespace and reading the monotonic clock. (The XDP
//! program's `bpf(2)` calls are made by the `aya` crate.)
//!
//! Everything it exports is safe to use: the ring hands out one block at a time as a
//! bounds-checked byte slice and gives it back to the kernel when the [`Block`] is dropped;
//! frames are sent from a [`TxBatch`] the caller fills with safe code.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const SOL_PACKET: libc::c_int = 263;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const TPACKET_V3: libc::c_int = 2;
const PACKET_FANOUT_HASH: u32 = 0;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const ETH_P_ALL: u16 = 0x0003;
/// Bytes of `tpacket_block_desc` before `offset_to_first_pkt` (version, offset_to_priv,
/// block_status, num_pkts); the block slice handed out starts after them.
const BLOCK_HEAD: usize = 16;
/// Size of `tpacket3_hdr` fields read (up to `hv1.tp_vlan_tpid`).
const FRAME_HEAD: usize = 38;
/// Status bit: `tp_vlan_tci` holds the tag the NIC stripped from the frame.
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
/// Status bit: `tp_vlan_tpid` holds that tag's protocol (else it is 802.1Q).
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

/// Status bit: the frame's L4 checksum was left for hardware to fill (veth, local senders).
pub const STATUS_CSUM_NOT_READY: u32 = 1 << 3;

/// Shape of a receive ring.
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
    /// Bytes per block (a multiple of the page size).
    pub block_size: u32,
    /// Blocks in the ring.
    pub block_count: u32,
    /// Nominal frame size the kernel uses to size the ring.
    pub frame_size: u32,
    /// A partly filled block is handed over after this many milliseconds.
    pub retire_ms: u32,
}

impl RingConfig {
    /// A ring for frames of up to `max_frame` bytes: the smallest blocks that hold two of
    /// them, about 8 MiB in all.
    ///
    /// Small blocks matter for latency: a TPACKET_V3 block reaches user space only when it
    /// is full or when its retire timer (1 ms, the smallest) fires, so the fewer frames a
    /// block holds, the sooner it is handed over under load.
    pub fn for_frames(max_frame: usize) -> RingConfig {
        let page = 4096;
        let per_frame = max_frame as u32 + 128; // tpacket3_hdr, sockaddr_ll, alignment
        let block_size = (2 * per_frame).div_ceil(page) * page;
        RingConfig {
            block_size,
            block_count: ((8 << 20) / block_size).max(8),
            frame_size: 2048,
            retire_ms: 1,
        }
    }
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised T and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    check(rc).map(drop)
}

fn packet_socket(protocol: u16) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success we own the returned descriptor.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::c_int::from(protocol.to_be()),
        )
    })?;
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(fd: &OwnedFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as libc::c_int;
    // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    check(rc).map(drop)
}

/// A TPACKET_V3 receive ring on one interface, optionally in a fanout group.
pub struct RxRing {
    /// The packet socket; closing it frees the ring.
    fd: OwnedFd,
    /// Start of the mapped ring (block_count blocks of block_size bytes).
    map: *mut u8,
    /// Bytes mapped, for munmap.
    map_len: usize,
    /// Bytes per block.
    block_size: usize,
    /// Blocks in the ring.
    block_count: usize,
    /// The block the kernel hands over next (blocks are filled in ring order).
    current: usize,
}

// SAFETY: the mapping is owned by this value alone; moving it to another thread is fine.
unsafe impl Send for RxRing {}

impl RxRing {
    /// Opens an ETH_P_ALL ring on `ifindex` that ignores frames this host sends. With
    /// `fanout = Some(group)`, joins that PACKET_FANOUT_HASH group, so every socket of the
    /// group sees a disjoint share of the flows.
    pub fn open(ifindex: u32, cfg: &RingConfig, fanout: Option<u16>) -> io::Result<RxRing> {
        let fd = packet_socket(ETH_P_ALL)?;
        setsockopt(&fd, SOL_PACKET, PACKET_VERSION, &TPACKET_V3)?;
        setsockopt(&fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &1 as &libc::c_int)?;
        // SAFETY: tpacket_req3 is plain data.
        let mut req: libc::tpacket_req3 = unsafe { std::mem::zeroed() };
        req.tp_block_size = cfg.block_size;
        req.tp_block_nr = cfg.block_count;
        req.tp_frame_size = cfg.frame_size;
        req.tp_frame_nr = cfg.block_size / cfg.frame_size * cfg.block_count;
        req.tp_retire_blk_tov = cfg.retire_ms;
        setsockopt(&fd, SOL_PACKET, PACKET_RX_RING, &req)?;
        let map_len = cfg.block_size as usize * cfg.block_count as usize;
        // SAFETY: maps the ring the kernel just allocated for this socket; checked below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_LOCKED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        let map = if map == libc::MAP_FAILED {
            // MAP_LOCKED can fail under a low memlock limit; retry without it.
            // SAFETY: as above.
            let m = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    map_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_POPULATE,
                    fd.as_raw_fd(),
                    0,
                )
            };
            if m == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            m
        } else {
            map
        };
        let ring = RxRing {
            fd,
            map: map.cast(),
            map_len,
            block_size: cfg.block_size as usize,
            block_count: cfg.block_count as usize,
            current: 0,
        };
        bind(&ring.fd, ifindex, ETH_P_ALL)?;
        if let Some(group) = fanout {
            let arg: u32 = u32::from(group) | (PACKET_FANOUT_HASH << 16);
            setsockopt(&ring.fd, SOL_PACKET, PACKET_FANOUT, &arg)?;
        }
        Ok(ring)
    }

    fn status(&self, block: usize) -> &AtomicU32 {
        // SAFETY: block < block_count so the word lies inside the mapping; block_status sits
        // 8 bytes into the (page-aligned) block and is 4-byte aligned. The kernel and we
        // hand the block back and forth through this word, so it is accessed atomically.
        unsafe { &*(self.map.add(block * self.block_size + 8) as *const AtomicU32) }
    }

    /// Waits up to `timeout` for the next filled block; `None` if none came.
    pub fn next_block(&mut self, timeout: Duration) -> io::Result<Option<Block<'_>>> {
        if self.status(self.current).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN | libc::POLLERR,
                revents: 0,
            };
            let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd.
            match check(unsafe { libc::poll(&mut pfd, 1, ms) }) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
                Err(e) => return Err(e),
            }
            if self.status(self.current).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                return Ok(None);
            }
        }
        Ok(Some(self.take_block()))
    }

    /// The next block if the kernel has already handed it over; never waits or calls the
    /// kernel.
    pub fn try_next_block(&mut self) -> Option<Block<'_>> {
        if self.status(self.current).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
            return None;
        }
        Some(self.take_block())
    }

    /// The current block, which the caller has seen in TP_STATUS_USER.
    fn take_block(&mut self) -> Block<'_> {
        let base = self.current * self.block_size;
        let map = self.map;
        // SAFETY: the kernel gave this block to us (status USER, acquire-ordered); it will not
        // write to it until we store TP_STATUS_KERNEL, which only Block::drop does, after the
        // slice is gone. The slice skips the block's first 16 bytes, so the status word
        // (8 bytes in) is only ever accessed atomically. All offsets lie inside the mapping.
        let (num, data, release) = unsafe {
            (
                std::ptr::read(map.add(base + 12) as *const u32),
                std::slice::from_raw_parts(map.add(base + BLOCK_HEAD), self.block_size - BLOCK_HEAD),
                &*(map.add(base + 8) as *const AtomicU32),
            )
        };
        let first = u32_at(data, 0).map_or(0, |o| o as usize);
        Block {
            data,
            remaining: num,
            next: first.checked_sub(BLOCK_HEAD),
            release,
            current: &mut self.current,
            count: self.block_count,
        }
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what open() mapped; no Block can outlive the ring.
        unsafe {
            libc::munmap(self.map.cast(), self.map_len);
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// One received block; handed back to the kernel when dropped.
pub struct Block<'a> {
    /// The block after its first 16 bytes (offsets below are relative to this).
    data: &'a [u8],
    /// Frames not yet read.
    remaining: u32,
    /// Offset of the next frame header, if any.
    next: Option<usize>,
    /// The block's status word: storing TP_STATUS_KERNEL gives the block back.
    release: &'a AtomicU32,
    /// The ring's cursor, advanced when the block is given back.
    current: &'a mut usize,
    /// Blocks in the ring, for wrapping the cursor.
    count: usize,
}

/// One received frame.
#[derive(Debug)]
pub struct RxFrame<'a> {
    /// The frame from its Ethernet header on (as captured: at most the ring's snap length).
    pub data: &'a [u8],
    /// Bytes the frame had on the wire.
    pub wire_len: u32,
    /// `tp_status` bits, e.g. [`STATUS_CSUM_NOT_READY`].
    pub status: u32,
    /// The VLAN tag (TPID, TCI) the kernel took out of the frame, if any; it must be put
    /// back when the frame is sent on.
    pub vlan: Option<(u16, u16)>,
}

impl Block<'_> {
    /// The next frame of the block, or `None` at its end (or at a malformed header).
    pub fn next_frame(&mut self) -> Option<RxFrame<'_>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let off = self.next?;
        let hdr = self.data.get(off..off + FRAME_HEAD)?;
        let next_off = u32_at(hdr, 0)? as usize;
        let snap = u32_at(hdr, 12)? as usize;
        let wire_len = u32_at(hdr, 16)?;
        let status = u32_at(hdr, 20)?;
        let mac = usize::from(u16_at(hdr, 24)?);
        self.next = if next_off == 0 { None } else { Some(off + next_off) };
        let vlan = (status & TP_STATUS_VLAN_VALID != 0).then(|| {
            let tci = u32_at(hdr, 32).unwrap_or(0) as u16;
            let tpid = match u16_at(hdr, 36) {
                Some(t) if status & TP_STATUS_VLAN_TPID_VALID != 0 && t != 0 => t,
                _ => 0x8100,
            };
            (tpid, tci)
        });
        let data = self.data.get(off + mac..off + mac + snap)?;
        Some(RxFrame {
            data,
            wire_len,
            status,
            vlan,
        })
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        self.release.store(TP_STATUS_KERNEL, Ordering::Release);
        *self.current = (*self.current + 1) % self.count;
    }
}

/// Frames waiting to be sent in one `sendmmsg` call; filled and rewritten with safe code.
pub struct TxBatch {
    /// Fixed slots of `slot` bytes, one per frame; allocated once.
    buf: Vec<u8>,
    /// Length of each queued frame (its slot is its index).
    lens: Vec<usize>,
    /// Bytes per slot: the largest frame accepted.
    slot: usize,
}

impl TxBatch {
    /// Room for `frames` frames of at most `slot` bytes each.
    pub fn new(frames: usize, slot: usize) -> TxBatch {
        TxBatch {
            buf: vec![0; frames * slot],
            lens: Vec::with_capacity(frames),
            slot,
        }
    }

    /// Copies `frame` in and returns the copy to edit; `None` if full or the frame too big.
    pub fn push(&mut self, frame: &[u8]) -> Option<&mut [u8]> {
        if frame.len() > self.slot || self.is_full() {
            return None;
        }
        let at = self.lens.len() * self.slot;
        self.lens.push(frame.len());
        let dst = &mut self.buf[at..at + frame.len()];
        dst.copy_from_slice(frame);
        Some(dst)
    }

    /// Like [`push`](Self::push), putting the VLAN tag `(tpid, tci)` back after the two
    /// Ethernet addresses when there is one.
    pub fn push_tagged(&mut self, frame: &[u8], vlan: Option<(u16, u16)>) -> Option<&mut [u8]> {
        let Some((tpid, tci)) = vlan else {
            return self.push(frame);
        };
        if frame.len() < 12 || frame.len() + 4 > self.slot || self.is_full() {
            return None;
        }
        let at = self.lens.len() * self.slot;
        self.lens.push(frame.len() + 4);
        let dst = &mut self.buf[at..at + frame.len() + 4];
        dst[..12].copy_from_slice(&frame[..12]);
        dst[12..14].copy_from_slice(&tpid.to_be_bytes());
        dst[14..16].copy_from_slice(&tci.to_be_bytes());
        dst[16..].copy_from_slice(&frame[12..]);
        Some(dst)
    }

    /// Whether another frame fits.
    pub fn is_full(&self) -> bool {
        (self.lens.len() + 1) * self.slot > self.buf.len()
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Largest frame accepted.
    pub fn slot_size(&self) -> usize {
        self.slot
    }

    /// Forgets the queued frames.
    pub fn clear(&mut self) {
        self.lens.clear();
    }

    /// The queued frames.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> {
        self.lens
            .iter()
            .enumerate()
            .map(|(i, &l)| &self.buf[i * self.slot..i * self.slot + l])
    }
}

/// A send-only packet socket on one interface (receives nothing; bypasses the qdisc).
pub struct TxSocket {
    /// The packet socket, bound to the interface with protocol 0 (so it receives nothing).
    fd: OwnedFd,
}

impl TxSocket {
    /// Opens it on `ifindex`.
    pub fn open(ifindex: u32) -> io::Result<TxSocket> {
        let fd = packet_socket(0)?;
        bind(&fd, ifindex, 0)?;
        // Best effort: without it frames take the qdisc path, which also works.
        let _ = setsockopt(&fd, SOL_PACKET, PACKET_QDISC_BYPASS, &1 as &libc::c_int);
        Ok(TxSocket { fd })
    }

    /// Sends one complete Ethernet frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: the pointer and length describe `frame`, which outlives the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sends every frame of `batch` with as few `sendmmsg` calls as the kernel allows.
    /// Returns how many were sent; stops at the first error (the rest are dropped).
    pub fn send_batch(&self, batch: &TxBatch) -> io::Result<usize> {
        let mut iov: Vec<libc::iovec> = batch
            .frames()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: mmsghdr is plain data; all-zero is valid (no name, no control).
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut sent = 0;
        while sent < msgs.len() {
            // SAFETY: `msgs[sent..]` point at iovecs that point into `batch`; all outlive the
            // call, and the kernel only reads them (it writes msg_len, which we own).
            let n = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs[sent..].as_mut_ptr(),
                    (msgs.len() - sent) as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return if sent == 0 { Err(e) } else { Ok(sent) };
            }
            if n == 0 {
                break;
            }
            sent += n as usize;
        }
        Ok(sent)
    }
}

/// Moves the calling thread into the network namespace `ns` (an open `/run/netns/NAME` or
/// `/proc/PID/ns/net`). Other threads stay where they are. Needs CAP_SYS_ADMIN.
pub fn enter_netns(ns: &File) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we hold open for its duration.
    check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

/// Nanoseconds on CLOCK_MONOTONIC: the clock of `bpf_ktime_get_ns`, which stamps the XDP
/// plane's pinned flows.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_blocks_hold_two_frames_and_are_page_sized() {
        let std = RingConfig::for_frames(1518);
        assert_eq!((std.block_size, std.block_count), (4096, 2048));
        let jumbo = RingConfig::for_frames(9018);
        assert_eq!(jumbo.block_size % 4096, 0);
        assert!(jumbo.block_size >= 2 * 9018);
    }

    #[test]
    fn tx_batch_slots() {
        let mut b = TxBatch::new(2, 64);
        assert!(b.push(&[0u8; 65]).is_none());
        b.push(&[1, 2, 3]).unwrap()[0] = 9;
        b.push(&[4; 64]).unwrap();
        assert!(b.is_full());
        assert!(b.push(&[5]).is_none());
        let frames: Vec<&[u8]> = b.frames().collect();
        assert_eq!(frames, vec![&[9u8, 2, 3][..], &[4u8; 64][..]]);
        b.clear();
        assert!(b.is_empty());
        let frame: Vec<u8> = (0..20).collect();
        let tagged = b.push_tagged(&frame, Some((0x8100, 7))).unwrap().to_vec();
        assert_eq!(&tagged[..12], &frame[..12]);
        assert_eq!(&tagged[12..16], &[0x81, 0x00, 0x00, 0x07]);
        assert_eq!(&tagged[16..], &frame[12..]);
        assert_eq!(b.push_tagged(&frame, None).unwrap(), &frame[..]);
    }

    /// Loopback round trip through a real ring and socket; needs CAP_NET_RAW (skipped without).
    #[test]
    fn ring_receives_what_a_packet_socket_sends_on_loopback() {
        let ifindex = match std::fs::read_to_string("/sys/class/net/lo/ifindex") {
            Ok(s) => s.trim().parse::<u32>().unwrap(),
            Err(_) => return,
        };
        let mut ring = match RxRing::open(
            ifindex,
            &RingConfig {
                block_size: 1 << 16,
                block_count: 4,
                frame_size: 2048,
                retire_ms: 1,
            },
            None,
        ) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                eprintln!("skipping: packet sockets need CAP_NET_RAW");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let tx = TxSocket::open(ifindex).unwrap();
        // An Ethernet frame with a local-experimental EtherType that nothing else uses.
        let mut frame = vec![0u8; 60];
        frame[12] = 0x88;
        frame[13] = 0xb5;
        frame[14..22].copy_from_slice(b"strata!!");
        let mut batch = TxBatch::new(4, 128);
        batch.push(&frame).unwrap();
        batch.push(&frame).unwrap();
        assert_eq!(tx.send_batch(&batch).unwrap(), 2);
        // Frames sent on lo come back as incoming, so the ring sees them despite
        // PACKET_IGNORE_OUTGOING (which only drops the outgoing copy).
        let mut seen = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while seen < 2 && std::time::Instant::now() < deadline {
            if let Some(mut block) = ring.next_block(Duration::from_millis(50)).unwrap() {
                while let Some(f) = block.next_frame() {
                    if f.data.get(14..22) == Some(b"strata!!") {
                        assert_eq!(f.data.len(), 60);
                        seen += 1;
                    }
                }
            }
        }
        assert_eq!(seen, 2);
    }
}
