//! ucm-sim, a Unified CM stand-in for edgeway's tests and benchmarks: a SIP registrar with
//! digest authentication over TCP and TLS, a user directory with per-user phone security
//! profiles, call routing between registered users, simulated inside phones that answer,
//! place calls and send and check RTP/SRTP, and an admin API.
//!
//! The library is sans-IO: [`Registrar::handle_request`] takes a parsed REGISTER (from
//! `edgeway-sip`), the connection it came on and `now`, and returns the response;
//! [`Registrar::expire`] is called about once a second; [`Registrar::outbound_request`]
//! builds a request towards a user, to be written on the connection its REGISTER came on.
//! Every other request and every response goes to [`Switch`] ([`calls`]), which returns
//! [`Action`]s: bytes for a connection, media to start or stop on a UDP socket the IO layer
//! bound. A phone's media is a [`MediaStream`] ([`media`]) the IO layer ticks every 20 ms;
//! its SDP is [`offer`]. The `ucm-sim` binary is the thin tokio/rustls layer around them.
//!
//! # The stable interfaces (used by other crates' tests and the SIP load generator)
//!
//! **Command line** (`ucm-sim --help` lists every option; flags override `--config`):
//! `--sip-tcp ADDR`, `--sip-tls ADDR` (with `--cert PEM --key PEM`), `--admin ADDR`
//! (default `127.0.0.1:0`), `--users FILE` or `--generate-users N --password-prefix P`,
//! `--domain D` (repeatable; none = any), `--realm R` (default `ccmsipline`),
//! `--min-expires`, `--max-expires`, `--nonce-lifetime`, `--max-message-size`,
//! `--tls-handshake-timeout`, `--require-tls-for-secure`, `--threads`,
//! `--ready-file PATH`, `--config FILE` (the same names in TOML, `_` for `-`, and
//! `domains = [..]` for the repeatable `--domain`: see [`Settings`]).
//!
//! **Ready file**: once every listener is bound, one JSON line is written (atomically, by
//! rename) with the bound addresses; absent listeners are `null`:
//! `{"sip_tcp":"127.0.0.1:41234","sip_tls":"127.0.0.1:41235","admin":"127.0.0.1:41236","pid":123}`.
//!
//! **Users file** (TOML; see [`User`]):
//! ```toml
//! [[user]]
//! name = "alice"            # user id = digest username
//! password = "secret"
//! number = "1001"           # directory number; the AOR user may be the name or the number
//! security_profile = "secure"   # or "non-secure"
//! devices = ["CSFALICE"]    # optional
//! phone = "sim"             # optional: a simulated inside phone answered by ucm-sim
//! busy = true               # optional: calls to the user get 486 Busy Here
//! digest_authentication = true  # optional: its INVITEs are challenged (407)
//! ```
//! `--generate-users N --password-prefix P` makes `user0001`.. with password `P0001`..
//! and number `100001`.. (see [`UserDirectory::generated`]).
//!
//! **Admin API**: TCP on 127.0.0.1, JSON lines; one request object per line, one
//! response object per line, `{"ok":true,...}` or `{"ok":false,"error":"..."}`:
//! * `{"cmd":"bindings"}` → `{"ok":true,"bindings":[BindingView...]}` (see [`BindingView`]:
//!   user, number, security_profile, aor, contact, path, expires, connection, transport,
//!   peer);
//! * `{"cmd":"counters"}` → `{"ok":true,"counters":{...}}`: [`RegistrarCounters`] plus the
//!   IO layer's (`connections_open`, `connections_accepted`, `tls_handshake_failures`,
//!   `framing_errors`, `oversized`, `keepalives`, `sent`, `send_failures`);
//! * `{"cmd":"send","method":"OPTIONS"|"MESSAGE","to":"alice","body":"hi","timeout_ms":10000}`
//!   → sends the request to the user's most recent binding over the connection the
//!   REGISTER came on, with Route from the stored Path, and answers
//!   `{"ok":true,"status":200,"reason":"OK","connection":7}` once the final response
//!   arrives, or `{"ok":false,"error":...}` (not registered, connection closed, timeout);
//! * `{"cmd":"call","from":"1001","to":"alice"}` → `{"ok":true,"call":N}`: simulated phone
//!   `from` sends an INVITE with an SDP offer to `to`'s binding (or, when `to` is another
//!   simulated phone, the two exchange offer and answer in process); poll `calls` for its
//!   state;
//! * `{"cmd":"hangup","call":N}` → BYE when established, CANCEL while a placed call rings,
//!   603 for an answered call still ringing;
//! * `{"cmd":"calls"}` → `{"ok":true,"calls":[CallView...]}` (see [`CallView`]: call,
//!   call_id, kind `proxied|sim-answered|sim-placed|sim-to-sim`, state
//!   `trying|ringing|established|ending`, from, to, age, legs; a simulated phone's leg has
//!   media_local, media_remote, srtp, direction and `media`: [`MediaCounters`] tx, rx,
//!   decrypt_failures, bad, lost);
//! * `{"cmd":"answer_mode","user":"1001","mode":"auto|busy|ring|early"}`: how a simulated phone
//!   answers (`busy` also makes a registered user's calls get 486).
//!
//! Call routing, refusals and the digest choice are documented in [`calls`]; SDP checks
//! and the 488 `Warning`s in [`offer`]. `--media-ip IP` (default 127.0.0.1) is where the
//! simulated phones bind their media sockets.
//!
//! Registrar behaviour (RFC 3261 §10.3, RFC 3327, RFC 2617 qop=auth) and the choices made
//! where Unified CM's answers differ from a generic registrar are in [`registrar`].
#![forbid(unsafe_code)]

pub mod calls;
pub mod digest;
mod error;
pub mod media;
pub mod offer;
pub mod registrar;
mod settings;
pub mod users;

pub use calls::{Action, AnswerMode, CallView, Switch, SwitchCounters};
pub use digest::{DigestAuthenticator, DigestConfig, DigestVerdict};
pub use error::UcmSimError;
pub use media::{MediaCounters, MediaStream};
pub use registrar::{
    BindingView, ConnectionId, Origin, Outbound, Registrar, RegistrarConfig, RegistrarCounters,
    Transport,
};
pub use settings::Settings;
pub use users::{PhoneKind, SecurityProfile, User, UserDirectory};
