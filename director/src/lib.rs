//! strata-director: an L2 direct-server-return load balancer for Strata's proxy nodes.
//!
//! Only requests pass through it: it answers ARP for the VIP from userspace, picks a node
//! per flow (pinned flow, else Maglev slot), rewrites the Ethernet source and destination
//! and sends the frame back onto the same segment; the node, which has the VIP on `lo`,
//! answers the client directly.
//!
//! Modules, pure first:
//! - [`hash`]: the fixed hash every director shares;
//! - [`maglev`]: the Maglev table (M = 65537);
//! - [`flow`]: the bounded, idle-expiring flow table;
//! - [`packet`]: frame classification, MAC rewrite, ARP/ND construction;
//! - [`balancer`]: which node gets a packet, and why;
//! - [`health`]: the fall/rise state machine and the HTTP probe;
//! - [`config`]: TOML → validated [`config::Config`]; [`cli`]: the command line;
//! - [`iface`]: interface, neighbour table and sysctl checks from `/sys` and `/proc`;
//! - [`sys`]: the only `unsafe` code (AF_PACKET ring, batched send, setns);
//! - [`dataplane`]: the worker threads; [`control`]: health checks, reloads, purges;
//! - [`xdp`]: the XDP program (`bpf/director.bpf.c`) that forwards IPv4 at the driver
//!   when `data_plane` allows it, and its maps;
//! - [`admin`], [`metrics`]: the admin listener.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod balancer;
pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod flow;
pub mod hash;
pub mod health;
pub mod iface;
pub mod maglev;
pub mod metrics;
pub mod packet;
pub mod sys;
pub mod xdp;
