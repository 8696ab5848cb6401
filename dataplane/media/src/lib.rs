//! # edgeway-media
//!
//! The per-packet media logic of one edgeway data-plane worker: flow lookup (by local port,
//! or by port and source on the edge's demultiplexing ports), source latching, RTP/RTCP
//! validation, relaying (edge) or SRTP re-keying (core), per-entry counters and RFC 3550
//! receive statistics, keepalives, idle marking, and the export of resumable state to the
//! flow table.
//!
//! The crate is sans-IO: no sockets, no clock, no threads. One [`MediaWorker`] belongs to
//! one worker thread, which drives it so:
//!
//! - for every datagram received, [`MediaWorker::handle`]`(now, local_port, src, buf, len)`,
//!   with the buffer it arrived in (room after `len` for the SRTP trailer), and acts on the
//!   [`Verdict`]: send `buf[..len]` from `from_port` to `to`, or recycle the buffer;
//! - when the flow table changes, [`MediaWorker::install`] / [`MediaWorker::remove`];
//! - at [`MediaWorker::next_timeout`] (or on a short tick), [`MediaWorker::poll_timer`]`(now,
//!   ..)`, sending every [`TimerAction::Keepalive`] it hands out;
//! - every few milliseconds, [`MediaWorker::export`] to write changed state and counters
//!   back, and [`MediaWorker::node_counters`].
//!
//! `now` is any millisecond clock, the same for every call (the data plane uses Unix time,
//! which the flow table also uses). The packet path allocates nothing, takes no lock and
//! looks flows up in O(1).
//!
//! ```
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use edgeway_map_schema::{flags, Action, Endpoint, FlowEntry, FlowKey};
//! use edgeway_media::{MediaConfig, MediaWorker, Verdict};
//!
//! let mut worker = MediaWorker::new(MediaConfig::default());
//! // Packets from the client at 198.51.100.7 to port 40000 go to 192.0.2.1:36000 from 2776.
//! let entry = FlowEntry {
//!     action: Action::Relay as u8,
//!     flags: flags::LATCH,
//!     permit_ip: [198, 51, 100, 7],
//!     out_local_port: 2776,
//!     out_remote: Endpoint::new([192, 0, 2, 1], 36000),
//!     ..FlowEntry::default()
//! };
//! worker.install(0, FlowKey::port(40000), &entry, None).unwrap();
//! let mut buf = [0u8; 1500];
//! buf[..12].copy_from_slice(&[0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 42]);
//! let client = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 50000);
//! assert_eq!(
//!     worker.handle(0, 40000, client, &mut buf, 12),
//!     Verdict::Send { from_port: 2776, to: "192.0.2.1:36000".parse().unwrap(), len: 12 }
//! );
//! ```
#![forbid(unsafe_code)]

mod config;
mod error;
mod flow;
mod index;
mod stats;
mod worker;

pub use config::{DemuxLayout, MediaConfig, Role};
pub use edgeway_map_schema::NodeCounters;
pub use error::{ConfigError, Direction, InstallError};
pub use flow::{DEFAULT_CLOCK_RATE, DEFAULT_KEEPALIVE_MS, MAX_SSRCS_PER_ENTRY, SRTCP_RESUME_SKIP};
pub use worker::{MediaWorker, TimerAction, Verdict};
