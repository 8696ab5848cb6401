//! # edgeway-loadgen
//!
//! The media load generator for edgeway's relay benchmarks (`perf-lab/relay`). It sends
//! G.711 RTP or SRTP streams (172-byte packets, 20 ms cadence per stream) through a media
//! relay or re-keyer under test and receives them back, measuring per run: offered, sent
//! and received packet rates, loss (after a drain), corrupt packets (failed SRTP
//! authentication or misdelivered payloads), duplicates, reordering and one-way added
//! latency (HDR histogram), plus the CPU of the generator and of the system under test.
//!
//! It is target-agnostic: a [`scenario`] file lists the streams (addresses and SDES keys)
//! and is all it knows about the target. [`ng`] writes one for rtpengine over its ng
//! protocol ([`bencode`]); [`edgeway`] programs calls into edgeway's flow table and writes
//! one for edgeway; [`reflect`] is a trivial built-in relay used to measure the
//! generator's own ceiling.
//!
//! The [`engine`] is driven by the binary's `run` and `find-max` commands; it runs on one
//! pinned thread with batched syscalls ([`sys`], the crate's only unsafe code) and no
//! allocation per packet.
//!
//! The SIP side is separate and shares nothing with the media engine: [`sip_register`] is
//! one client's registration as a sans-IO state machine (digest, 423, refresh) over
//! edgeway-sip's messages, and [`sip_load`] runs thousands of them on one pinned tokio
//! thread, each on its own rustls connection, for the binary's `sip-register` command.
//! [`sip_call`] is one call at both of its ends (the caller's INVITE with an SRTP offer,
//! ACK and BYE; the inside phone's answer), sans-IO too, and [`sip_call_load`] runs
//! hundreds of them for `sip-call`: callers over TLS through the edge, phones over TCP at
//! the registrar, then the media engine over the streams both ends agreed.
//! [`https_load`] is the `https` command: closed-loop HTTPS GETs, kept-alive or one TLS
//! connection per request, with latency percentiles and CPU (`perf-lab/https`).

pub mod bencode;
pub mod edgeway;
pub mod engine;
pub mod https_load;
pub mod ng;
pub mod payload;
pub mod procstat;
pub mod reflect;
pub mod scenario;
pub mod sip_call;
pub mod sip_call_load;
pub mod sip_load;
pub mod sip_register;
pub mod sys;

pub use engine::{FindMaxParams, FindMaxReport, Generator, Options, TrialParams, TrialReport};
pub use scenario::{Scenario, ScenarioError};
