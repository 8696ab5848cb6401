//! Shared by the integration tests: a real flow table (its port allocator is the pool),
//! SDP bodies of a Jabber-like client and of inside phones, and readers of what the
//! planner wrote.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use edgeway_b2bua::{CoreConfig, EdgeConfig, FlowUpdate};
use edgeway_flowtable::{srtp_params_from_crypto, FlowTable, TableOptions};
use edgeway_map_schema::SrtpParams;
use edgeway_sip::sdp::SessionDescription;
use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_srtp::SrtpProfile;
use rand::rngs::StdRng;
use rand::SeedableRng;

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub const EDGE_PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const EDGE_INSIDE: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
pub const CORE_OUTSIDE: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);
pub const CORE_INSIDE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const PHONE_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 9);
pub const NOW: u64 = 1_000_000;

/// A flow table of its own under /dev/shm (removed on drop): 256 slots, media ports 40000-40999.
pub struct Table {
    pub table: FlowTable,
    dir: PathBuf,
}

impl Table {
    pub fn new() -> Table {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(format!(
            "/dev/shm/edgeway-b2bua-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut opts = TableOptions::default();
        opts.capacity = 256;
        opts.port_range = (40000, 40999);
        opts.excluded_ports = vec![];
        let table = FlowTable::create_at(&dir, &opts).unwrap();
        Table { table, dir }
    }

    pub fn apply(&self, u: &FlowUpdate) {
        u.apply(&self.table).unwrap();
    }

    pub fn entries(&self) -> usize {
        self.table.iter().count()
    }

    pub fn ports_in_use(&self) -> u32 {
        self.table.ports().usage(NOW).in_use
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn edge_config() -> EdgeConfig {
    EdgeConfig::new(EDGE_PUBLIC, EDGE_INSIDE)
}

pub fn core_config() -> CoreConfig {
    CoreConfig::new(CORE_OUTSIDE, CORE_INSIDE)
}

/// An SDP body from `ip`: one `m=` line per `(media, port, proto, crypto lines, extra)`.
pub fn sdp(ip: &str, media: &[(&str, u16, &str, &[String], &str)]) -> Vec<u8> {
    let mut s = format!("v=0\r\no=- 7 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n");
    for (kind, port, proto, crypto, extra) in media {
        let fmt = if *kind == "video" { "97" } else { "0 101" };
        s.push_str(&format!("m={kind} {port} {proto} {fmt}\r\n"));
        if *kind == "video" {
            s.push_str("a=rtpmap:97 H264/90000\r\n");
        } else {
            s.push_str("a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n");
        }
        for c in *crypto {
            s.push_str(&format!("a=crypto:{c}\r\n"));
        }
        s.push_str(extra);
    }
    s.into_bytes()
}

/// The keys a Jabber-like client offers: AES_CM_128_HMAC_SHA1_80 and the two AEAD suites.
pub fn jabber_keys(seed: u64) -> Vec<CryptoAttribute> {
    let mut r = rng(seed);
    [
        SrtpProfile::AesCm128HmacSha1_80,
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
    ]
    .iter()
    .zip(1..)
    .map(|(p, tag)| CryptoAttribute::generate(tag, *p, &mut r))
    .collect()
}

pub fn lines(keys: &[CryptoAttribute]) -> Vec<String> {
    keys.iter().map(ToString::to_string).collect()
}

/// A Jabber-like client's audio offer from port 50000.
pub fn jabber_offer(seed: u64, extra: &str) -> (Vec<u8>, Vec<CryptoAttribute>) {
    let keys = jabber_keys(seed);
    let body = sdp(
        "198.51.100.7",
        &[("audio", 50000, "RTP/SAVP", &lines(&keys), extra)],
    );
    (body, keys)
}

pub fn parse(body: &[u8]) -> SessionDescription {
    SessionDescription::parse(body).expect("the planner's SDP parses")
}

/// The `a=crypto` lines of `m=` line `i`, parsed by edgeway-srtp.
pub fn crypto_of(body: &[u8], i: usize) -> Vec<CryptoAttribute> {
    parse(body).media()[i]
        .crypto()
        .unwrap()
        .iter()
        .map(|c| c.to_string().parse().unwrap())
        .collect()
}

/// Where `m=` line `i` says to send: (address, port).
pub fn address_of(body: &[u8], i: usize) -> (String, u16) {
    let sdp = parse(body);
    let (c, port) = sdp.media_address(i).unwrap();
    (c.unwrap().address, port)
}

pub fn params(a: &CryptoAttribute) -> SrtpParams {
    srtp_params_from_crypto(&a.to_string()).unwrap()
}

pub fn has_line(body: &[u8], line: &str) -> bool {
    String::from_utf8_lossy(body).lines().any(|l| l == line)
}

/// The phone's answer to an inside offer: it takes `tag` of the offered keys (secure) or
/// plain RTP, from port 20000.
pub fn phone_answer(
    inside_offer: &[u8],
    tag: Option<u32>,
    seed: u64,
    extra: &str,
) -> (Vec<u8>, Option<edgeway_srtp::sdes::CryptoAttribute>) {
    match tag {
        Some(tag) => {
            let offered = crypto_of(inside_offer, 0);
            let chosen = offered.iter().find(|c| c.tag == tag).unwrap();
            let key =
                edgeway_srtp::sdes::CryptoAttribute::generate(tag, chosen.profile, &mut rng(seed));
            let body = sdp(
                "10.1.1.9",
                &[(
                    "audio",
                    20000,
                    "RTP/SAVP",
                    &lines(std::slice::from_ref(&key)),
                    extra,
                )],
            );
            (body, Some(key))
        }
        None => (
            sdp("10.1.1.9", &[("audio", 20000, "RTP/AVP", &[], extra)]),
            None,
        ),
    }
}
