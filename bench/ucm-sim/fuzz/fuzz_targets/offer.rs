//! Arbitrary bytes as an SDP offer to a simulated phone (both security profiles) and as the
//! answer to a phone's own offer, and as received media: refusals, never panics; what is
//! accepted must make a working media stream.
#![no_main]

use std::net::SocketAddr;

use edgeway_ucm_sim::media::{MediaStream, PACKET_BUF};
use edgeway_ucm_sim::offer::{answer, make_offer, read_answer};
use edgeway_ucm_sim::SecurityProfile;
use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let mut rng = StdRng::from_seed([7; 32]);
    let local = SocketAddr::from(([127, 0, 0, 1], 41000));
    for profile in [SecurityProfile::Secure, SecurityProfile::NonSecure] {
        if let Ok((body, plan)) = answer(data, profile, local, 2, None, &mut rng) {
            // The phone's own answer must be acceptable SDP for the same profile.
            let own = make_offer(profile, local, &mut rng);
            assert!(answer(&body, profile, local, 1, None, &mut rng).is_ok());
            let _ = read_answer(&body, profile, &own);
            let mut stream = MediaStream::new(&plan, 1, 1).expect("accepted keys make contexts");
            let mut buf = [0u8; PACKET_BUF];
            if let Some(n) = stream.next_packet(&mut buf) {
                assert!(n <= PACKET_BUF);
            }
            let mut rx = data.to_vec();
            rx.resize(data.len() + 64, 0);
            stream.receive(&mut rx, data.len());
        }
        let offer = make_offer(profile, local, &mut rng);
        let _ = read_answer(data, profile, &offer);
    }
});
