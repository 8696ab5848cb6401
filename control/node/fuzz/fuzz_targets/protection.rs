//! Intrusion protection (`edgeway_control::protect`) under arbitrary sequences of failures,
//! connection attempts, unblocks and time steps over a small address space, with arbitrary
//! settings and exemption text: never a panic; never more than `max_sources` tracked; the
//! events tell the whole story (a `Blocked` only for an unblocked address, a `Lifted` only
//! for a blocked one), and after `handle_timeout(now)` the listed blocks are exactly those
//! the events left open, none ending by `now`; a refused connection's source is listed and
//! an admitted one is not; every block lasts its category's duration.
#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use edgeway_control::protect::{
    Category, Event, Prefix, Protection, ProtectionConfig, Recorded, CATEGORIES,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Record { category: u8, source: u8 },
    Admit { source: u8 },
    Unblock { source: u8 },
    Advance { ms: u16 },
    Timeout,
}

#[derive(Arbitrary, Debug)]
struct Input {
    max_sources: u8,
    trigger: [u8; CATEGORIES],
    window_s: u8,
    block_s: u8,
    exemption: String,
    ops: Vec<Op>,
}

fn address(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, n % 40))
}

fuzz_target!(|input: Input| {
    let mut config = ProtectionConfig {
        max_sources: usize::from(input.max_sources % 32) + 1,
        ..ProtectionConfig::default()
    };
    if let Ok(prefix) = Prefix::parse(&input.exemption) {
        let shown = prefix.to_string();
        assert_eq!(Prefix::parse(&shown), Ok(prefix), "{shown}");
        config.exemptions.push(prefix);
    }
    for (rules, trigger) in config.categories.iter_mut().zip(input.trigger) {
        rules.trigger_level = u32::from(trigger % 6) + 1;
        rules.detection_window = Duration::from_secs(u64::from(input.window_s % 20) + 1);
        rules.block_duration = Duration::from_secs(u64::from(input.block_s % 20) + 1);
    }
    let durations: Vec<Duration> = config.categories.iter().map(|r| r.block_duration).collect();
    let max_sources = config.max_sources;
    let mut p = Protection::new(config);
    let mut now = Instant::now();
    let mut open: HashSet<IpAddr> = HashSet::new();
    for op in input.ops.iter().take(2000) {
        match *op {
            Op::Record { category, source } => {
                let category = Category::ALL[usize::from(category) % CATEGORIES];
                if let Recorded::Blocked(b) = p.record(now, category, address(source)) {
                    assert_eq!(b.until - b.since, durations[category as usize]);
                }
            }
            Op::Admit { source } => {
                let ip = address(source);
                let listed = p.list(now).iter().any(|b| b.block.ip == ip);
                assert_eq!(p.admit(now, ip).is_err(), listed);
            }
            Op::Unblock { source } => {
                p.unblock(address(source));
            }
            Op::Advance { ms } => now += Duration::from_millis(u64::from(ms)),
            Op::Timeout => p.handle_timeout(now),
        }
        while let Some(event) = p.poll_event() {
            match event {
                Event::Blocked(b) => assert!(open.insert(b.ip), "blocked twice: {b:?}"),
                Event::Lifted(ip, why) => assert!(open.remove(&ip), "lifted {ip} ({why:?})"),
            }
        }
        assert!(p.tracked() <= max_sources);
        let listed: HashSet<IpAddr> = p.list(now).iter().map(|b| b.block.ip).collect();
        assert!(listed.is_subset(&open), "listed {listed:?}, open {open:?}");
        if matches!(op, Op::Timeout) {
            assert_eq!(listed, open, "after handle_timeout");
            assert!(p.poll_timeout().is_none_or(|t| t > now));
        }
    }
});
