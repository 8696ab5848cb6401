//! `MediaWorker::handle` per packet with 3,000 installed flows (so lookups touch a realistic
//! table): relay on the edge (client port -> demux port: port index; demux port -> client:
//! hash lookup plus the peer's latch) and re-key on the core (client -> phone, with the
//! peer lookup) for AES_CM_128_HMAC_SHA1_80 and AEAD_AES_128_GCM, 172-byte RTP. Packets
//! rotate over 16 streams; SRTP inputs are protected in criterion's untimed setup.
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use edgeway_map_schema::{flags, Action, Endpoint, FlowEntry, FlowKey, SrtpParams};
use edgeway_media::{DemuxLayout, MediaConfig, MediaWorker, Role, Verdict};
use edgeway_srtp::{MasterKey, SrtpConfig, SrtpContext, SrtpProfile};

const FLOWS: u16 = 3000;
const ACTIVE: u16 = 16;
const PAYLOAD: usize = 160;

fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend((0..PAYLOAD).map(|i| i as u8));
    p
}

fn master(profile: SrtpProfile, seed: u8) -> MasterKey {
    let k: Vec<u8> = (0..profile.master_key_len())
        .map(|i| seed ^ i as u8)
        .collect();
    let s: Vec<u8> = (0..profile.master_salt_len())
        .map(|i| seed.wrapping_add(i as u8))
        .collect();
    MasterKey::new(profile, &k, &s).unwrap()
}

fn params(profile: SrtpProfile, seed: u8) -> SrtpParams {
    let m = master(profile, seed);
    let mut p = SrtpParams {
        suite: profile.id() as u8,
        ..SrtpParams::PLAIN
    };
    p.key[..m.key().len()].copy_from_slice(m.key());
    p.salt[..m.salt().len()].copy_from_slice(m.salt());
    p
}

fn relay(c: &mut Criterion) {
    let mut w = MediaWorker::new(MediaConfig {
        layout: DemuxLayout::Large,
        ..MediaConfig::default()
    });
    let core_ip = [10, 0, 0, 5];
    let client =
        |n: u16| SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, (n % 250) as u8), 50_000 + n);
    let core = |n: u16| SocketAddrV4::new(Ipv4Addr::from(core_ip), 37_000 + 2 * n);
    let demux = |n: u16| 36_000 + 2 * (n % 6);
    for n in 0..FLOWS / 2 {
        let cport = 36_012 + 2 * n;
        let dk = FlowKey::demux(demux(n), core_ip, core(n).port());
        let to_core = FlowEntry {
            generation: 1,
            action: Action::Relay as u8,
            flags: flags::LATCH,
            permit_ip: client(n).ip().octets(),
            out_local_port: demux(n),
            out_remote: Endpoint::new(core_ip, core(n).port()),
            peer: dk,
            ..FlowEntry::default()
        };
        w.install(u32::from(2 * n), FlowKey::port(cport), &to_core, None)
            .unwrap();
        let to_client = FlowEntry {
            generation: 1,
            action: Action::Relay as u8,
            out_local_port: cport,
            peer: FlowKey::port(cport),
            ..FlowEntry::default()
        };
        w.install(u32::from(2 * n + 1), dk, &to_client, None)
            .unwrap();
        let mut buf = rtp(n.into(), 0);
        let len = buf.len();
        assert!(matches!(
            w.handle(0, cport, client(n), &mut buf, len),
            Verdict::Send { .. }
        ));
    }
    let mut g = c.benchmark_group("handle");
    g.throughput(Throughput::Elements(1));
    let pkt = rtp(1, 1);
    let mut buf = [0u8; 1500];
    let mut i = 0u16;
    g.bench_function("relay client->demux (172 B)", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let n = (i % ACTIVE) * (FLOWS / 2 / ACTIVE);
            buf[..pkt.len()].copy_from_slice(&pkt);
            w.handle(1, 36_012 + 2 * n, client(n), &mut buf, pkt.len())
        })
    });
    g.bench_function("relay demux->client (172 B)", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let n = (i % ACTIVE) * (FLOWS / 2 / ACTIVE);
            buf[..pkt.len()].copy_from_slice(&pkt);
            w.handle(1, demux(n), core(n), &mut buf, pkt.len())
        })
    });
    g.finish();
}

fn rekey(c: &mut Criterion, profile: SrtpProfile, name: &str) {
    let mut w = MediaWorker::new(MediaConfig {
        role: Role::Core,
        ..MediaConfig::default()
    });
    let phone = SocketAddrV4::new(Ipv4Addr::new(10, 1, 1, 9), 20_000);
    let edge = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 2776);
    for n in 0..FLOWS / 2 {
        let (e_port, p_port) = (36_000 + 2 * n, 42_000 + 2 * n);
        let from_edge = FlowEntry {
            generation: 1,
            action: Action::Rekey as u8,
            out_local_port: p_port,
            peer: FlowKey::port(p_port),
            srtp_in: params(profile, 1),
            srtp_out: params(profile, 2),
            ..FlowEntry::default()
        };
        let from_phone = FlowEntry {
            generation: 1,
            action: Action::Rekey as u8,
            flags: flags::LATCH,
            permit_ip: phone.ip().octets(),
            out_local_port: e_port,
            out_remote: Endpoint::new(edge.ip().octets(), edge.port()),
            peer: FlowKey::port(e_port),
            srtp_in: SrtpParams::PLAIN,
            srtp_out: params(profile, 3),
            ..FlowEntry::default()
        };
        w.install(u32::from(2 * n), FlowKey::port(e_port), &from_edge, None)
            .unwrap();
        w.install(
            u32::from(2 * n + 1),
            FlowKey::port(p_port),
            &from_phone,
            None,
        )
        .unwrap();
        // The phone latches (plain RTP inside keeps setup cheap).
        let mut buf = rtp(9, 0);
        buf.resize(1500, 0);
        assert!(matches!(
            w.handle(0, p_port, phone, &mut buf, 12 + PAYLOAD),
            Verdict::Send { .. }
        ));
    }
    let config = SrtpConfig::new(profile, master(profile, 1));
    let mut clients: Vec<SrtpContext> = (0..ACTIVE)
        .map(|_| SrtpContext::new(&config).unwrap())
        .collect();
    let mut i = 0u32;
    let mut g = c.benchmark_group("handle");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("rekey {name} client->phone (172 B RTP)"), |b| {
        b.iter_batched_ref(
            || {
                i += 1;
                let k = (i % u32::from(ACTIVE)) as u16;
                let seq = (i / u32::from(ACTIVE)) as u16;
                let mut buf = [0u8; 1500];
                let p = rtp(0xc11e, seq);
                buf[..p.len()].copy_from_slice(&p);
                let len = clients[usize::from(k)]
                    .protect_rtp(&mut buf, p.len())
                    .unwrap();
                (36_000 + 2 * k * (FLOWS / 2 / ACTIVE), buf, len)
            },
            |(port, buf, len)| {
                let v = w.handle(1, *port, edge, buf, *len);
                debug_assert!(matches!(v, Verdict::Send { .. }), "{v:?}");
                v
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn rekey_aes(c: &mut Criterion) {
    rekey(
        c,
        SrtpProfile::AesCm128HmacSha1_80,
        "AES_CM_128_HMAC_SHA1_80",
    );
}

fn rekey_gcm(c: &mut Criterion) {
    rekey(c, SrtpProfile::AeadAes128Gcm, "AEAD_AES_128_GCM");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = relay, rekey_aes, rekey_gcm
}
criterion_main!(benches);
