//! `edgeway-control`, the control-plane process of an edgeway node, in either role:
//!
//! * **edge** (Expressway-E): SIP over TLS for clients (each connection a flow), the
//!   traversal zone listener the core dials with mutual TLS; the edge never dials inwards.
//! * **core** (Expressway-C): dials the edge, proxies SIP to Unified CM over TCP or TLS
//!   through the auto-generated `CEtcp-`/`CEtls-` zones, and keeps the registrations.
//!
//! The protocol decisions are sans-IO: [`edge::EdgeProxy`] and [`core::CoreProxy`] take a
//! parsed message (and `now`) and return what to send where; [`run`] is the thin tokio +
//! rustls layer that feeds them and owns the sockets, timers and the admin API (JSON lines
//! on a Unix socket: `status`, `registrations`, `maintenance on|off`). Driven by
//! `edgeway-control --config node.toml` ([`config::Config`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod calls;
pub mod config;
pub mod core;
pub mod counters;
pub mod edge;
pub mod http;
pub mod media;
pub mod protect;
pub mod run;
mod sip_util;
pub mod tls;
