//! Arbitrary SDP bodies through both roles' planners, as offers and answers from either
//! leg, with refusals, re-offers and teardown in between: no panic; a refused message
//! leaves the call's ports and entries as they were; whatever the planner writes parses
//! again; teardown gives back every pair and removes every entry it handed out.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use arbitrary::Arbitrary;
use edgeway_b2bua::{
    CoreCall, CoreConfig, EdgeCall, EdgeConfig, FlowUpdate, InsideSecurity, Leg, PlanError,
    PortPool,
};
use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// A pool of 64 pairs that knows what it handed out.
#[derive(Default)]
struct Pool {
    out: BTreeSet<u16>,
    next: u16,
}

impl PortPool for Pool {
    fn allocate_pair(&mut self, _now_ms: u64) -> Result<u16, PlanError> {
        for _ in 0..64 {
            let p = 40000 + 2 * (self.next % 64);
            self.next = self.next.wrapping_add(1);
            if self.out.insert(p) {
                return Ok(p);
            }
        }
        Err(PlanError::Ports("fuzz pool exhausted".into()))
    }

    fn release_pair(&mut self, port: u16, _now_ms: u64) {
        assert!(self.out.remove(&port), "released {port}, which was not allocated");
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Offer { outside: bool, body: Vec<u8> },
    Answer { outside: bool, body: Vec<u8> },
    /// A well-formed body with these pieces, to get past the parser more often.
    Shaped { offer: bool, outside: bool, port: u16, proto: u8, crypto: Vec<String>, extra: String },
    OfferFailed,
}

#[derive(Arbitrary, Debug)]
struct Input {
    core: bool,
    secure: bool,
    seed: u64,
    ops: Vec<Op>,
}

enum Call {
    Core(CoreCall, StdRng),
    Edge(EdgeCall),
}

impl Call {
    fn ports(&self) -> Vec<u16> {
        match self {
            Call::Core(c, _) => c.ports(),
            Call::Edge(c) => c.ports(),
        }
    }

    fn entries(&self) -> usize {
        match self {
            Call::Core(c, _) => c.entries().len(),
            Call::Edge(c) => c.entries().len(),
        }
    }
}

fn shaped(port: u16, proto: u8, crypto: &[String], extra: &str) -> Vec<u8> {
    let proto = ["RTP/SAVP", "RTP/AVP", "RTP/SAVPF", "UDP/BFCP"][usize::from(proto % 4)];
    let mut s = format!(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio {port} {proto} 0\r\n"
    );
    for c in crypto.iter().take(8) {
        s.push_str(&format!("a=crypto:{c}\r\n"));
    }
    s.push_str(extra);
    s.into_bytes()
}

fuzz_target!(|input: Input| {
    let mut pool = Pool::default();
    let mut call = if input.core {
        let sec = if input.secure { InsideSecurity::Secure } else { InsideSecurity::NonSecure };
        let config = CoreConfig::new(Ipv4Addr::new(172, 16, 0, 2), Ipv4Addr::new(10, 0, 0, 2));
        Call::Core(CoreCall::new(&config, 1, sec), StdRng::seed_from_u64(input.seed))
    } else {
        let config = EdgeConfig::new(Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(172, 16, 0, 1));
        Call::Edge(EdgeCall::new(&config, 1, Ipv4Addr::new(198, 51, 100, 7)))
    };
    let mut handed_out = BTreeMap::new();
    for op in input.ops.iter().take(16) {
        let (offer, outside, body) = match op {
            Op::Offer { outside, body } => (true, *outside, body.clone()),
            Op::Answer { outside, body } => (false, *outside, body.clone()),
            Op::Shaped { offer, outside, port, proto, crypto, extra } => {
                (*offer, *outside, shaped(*port, *proto, crypto, extra))
            }
            Op::OfferFailed => {
                let u = match &mut call {
                    Call::Core(c, _) => c.offer_failed(0, &mut pool),
                    Call::Edge(c) => c.offer_failed(0, &mut pool),
                };
                track(&mut handed_out, &u);
                continue;
            }
        };
        let from = if outside { Leg::Outside } else { Leg::Inside };
        let (ports, entries) = (call.ports(), call.entries());
        let res = match (&mut call, offer) {
            (Call::Core(c, r), true) => c.offer(from, 0, &body, &mut pool, r),
            (Call::Core(c, r), false) => c.answer(from, 0, &body, &mut pool, r),
            (Call::Edge(c), true) => c.offer(from, 0, &body, &mut pool),
            (Call::Edge(c), false) => c.answer(from, 0, &body, &mut pool),
        };
        match res {
            Ok(planned) => {
                edgeway_sip_parse(&planned.sdp);
                track(&mut handed_out, &planned.flows);
            }
            Err(e) => {
                let _ = (e.status(), e.warning("fuzz"));
                assert_eq!(call.ports(), ports, "a refused message changed the ports: {e}");
                assert_eq!(call.entries(), entries, "a refused message changed the entries: {e}");
            }
        }
        assert_eq!(pool.out.iter().copied().collect::<Vec<_>>(), call.ports(), "pool and call disagree");
        assert_eq!(handed_out.len(), call.entries());
    }
    let u = match &mut call {
        Call::Core(c, _) => c.teardown(0, &mut pool),
        Call::Edge(c) => c.teardown(0, &mut pool),
    };
    track(&mut handed_out, &u);
    assert!(pool.out.is_empty(), "teardown left pairs allocated: {:?}", pool.out);
    assert!(handed_out.is_empty(), "teardown left entries: {handed_out:?}");
});

/// Mirrors a table: every removal names an entry handed out before.
fn track(
    handed_out: &mut BTreeMap<edgeway_map_schema::FlowKey, edgeway_map_schema::FlowEntry>,
    u: &FlowUpdate,
) {
    for k in &u.remove {
        assert!(handed_out.remove(k).is_some(), "removed {k:?}, never inserted");
    }
    for (k, e) in &u.insert {
        handed_out.insert(*k, *e);
    }
}

/// The planner's output is SDP the sip crate reads back.
fn edgeway_sip_parse(sdp: &[u8]) {
    assert!(
        edgeway_sip::sdp::SessionDescription::parse(sdp).is_ok(),
        "the planner wrote SDP that does not parse: {}",
        String::from_utf8_lossy(sdp)
    );
}
