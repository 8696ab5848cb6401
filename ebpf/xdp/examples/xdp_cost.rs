//! What the XDP program costs per packet on this CPU, path by path, through
//! `BPF_PROG_TEST_RUN` with `repeat` (the kernel times the program alone, no driver, no
//! wire). Root only. `cargo run --release -p edgeway-xdp --example xdp_cost [REPEAT]`
//!
//! The relay path is measured with relay mode off (everything up to the FIB lookup: parse,
//! flow lookup, latch check, counters), since the FIB lookup needs a namespace with routes
//! and neighbours; `dataplane/worker/tests/xdp_netns.rs` covers the full relay.

use std::net::Ipv4Addr;

use edgeway_map_schema::{flags, xdp_mode, Action, Endpoint, FlowEntry, FlowKey};
use edgeway_xdp::{MediaProgram, XdpConfig};

fn frame(src: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, [192, 0, 2, 10], 64)
        .udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("frame");
    v
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let repeat: u32 = std::env::args()
        .nth(1)
        .map_or(Ok(1_000_000), |s| s.parse())?;
    let mut prog = MediaProgram::load(None)?;
    let mut demux = [0u16; 12];
    demux[0] = 2776;
    prog.set_config(&XdpConfig {
        media_port_min: 36000,
        media_port_max: 59999,
        demux_ports: demux,
        mode: xdp_mode::STEER,
        noflow_window_ns: 0,
    })?;
    let client = [192, 0, 2, 50];
    prog.insert_flow(
        FlowKey::port(40000),
        &FlowEntry {
            action: Action::Relay as u8,
            flags: flags::LATCH,
            permit_ip: client,
            out_local_port: 2776,
            out_remote: Endpoint::new([192, 0, 2, 20], 36000),
            generation: 1,
            ..FlowEntry::default()
        },
    )?;
    prog.block(Ipv4Addr::new(203, 0, 113, 7))?;
    let mut rtp = vec![0x80, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 5];
    rtp.extend_from_slice(&[0xd5; 160]);
    let cases = [
        (
            "pass: UDP to a signaling port",
            frame(client, 5060, 5061, b"x"),
        ),
        ("drop: no flow", frame(client, 5004, 41000, &rtp)),
        (
            "drop: blocked source",
            frame([203, 0, 113, 7], 5004, 40000, &rtp),
        ),
        (
            "relay leg up to the FIB lookup",
            frame(client, 5004, 40000, &rtp),
        ),
    ];
    println!("| path | ns/packet | Mpps (one core, program only) |");
    println!("|---|---:|---:|");
    for (name, f) in &cases {
        let ns = prog.time_run(f, repeat)?;
        println!("| {name} | {ns:.1} | {:.1} |", 1000.0 / ns);
    }
    Ok(())
}
