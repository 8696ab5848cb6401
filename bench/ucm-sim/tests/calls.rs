//! Calls through ucm-sim with real peers: sipp as a registered caller reaching a simulated
//! inside phone (INVITE/200/ACK, hold by re-INVITE answered a=recvonly, UPDATE, INFO, BYE)
//! with the phone's SRTP checked at the test's media socket; CANCEL answered 487; bad SDP,
//! unknown numbers, busy and unregistered users refused with precise errors; two simulated
//! phones exchanging SRTP both ways (keys through SDP a=crypto), counted by the phones; a
//! phone's SRTP checked with libsrtp (pylibsrtp); INVITEs challenged (407) for a profile with
//! digest authentication; a phone and sipp calling a registered, auto-answering baresip.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_srtp::{SrtpContext, SrtpProfile};
use edgeway_testkit::peers::{
    require_peer, sipp_scenario as scenario, Sipp, SippOutcome, SippTransport, UcmSim,
    UcmSimOptions,
};
use edgeway_testkit::LibsrtpOracle;

/// carol registers with sipp; desk and lobby are simulated phones (secure), fax is a
/// non-secure simulated phone, dave a registered user who never registers, eve is busy,
/// frank's phone security profile enables digest authentication (INVITEs challenged).
const USERS: &str = r#"
[[user]]
name = "carol"
password = "carol-pw"
number = "2001"
security_profile = "secure"

[[user]]
name = "desk"
password = "unused"
number = "1001"
security_profile = "secure"
phone = "sim"

[[user]]
name = "lobby"
password = "unused"
number = "1002"
security_profile = "secure"
phone = "sim"

[[user]]
name = "fax"
password = "unused"
number = "1003"
security_profile = "non-secure"
phone = "sim"

[[user]]
name = "dave"
password = "dave-pw"
number = "2002"
security_profile = "secure"

[[user]]
name = "eve"
password = "eve-pw"
number = "2003"
security_profile = "secure"
busy = true

[[user]]
name = "frank"
password = "frank-pw"
number = "2004"
security_profile = "non-secure"
digest_authentication = true
"#;

fn ucm() -> UcmSim {
    UcmSim::spawn(
        env!("CARGO_BIN_EXE_ucm-sim").as_ref(),
        &UcmSimOptions::tcp_with_users(USERS),
    )
}

/// One sipp call as carol to `callee`, offering `proto` with SDP line `crypto` at `port`.
fn carol_calls(
    sipp: &std::path::Path,
    ucm: &UcmSim,
    scenario_file: &str,
    callee: &str,
    port: u16,
    proto: &str,
    crypto: &str,
) -> SippOutcome {
    let csv = format!(
        "SEQUENTIAL\ncarol;[authentication username=carol password=carol-pw];example.com;\
         {callee};{port};{proto};{crypto}\n"
    );
    sipp_run(sipp, ucm, scenario_file, &csv)
}

/// One sipp call of `scenario_file` over TCP with `csv` as its `-inf` file.
fn sipp_run(sipp: &std::path::Path, ucm: &UcmSim, scenario_file: &str, csv: &str) -> SippOutcome {
    Sipp::new(sipp, &scenario(scenario_file))
        .remote(ucm.sip_tcp.expect("tcp"))
        .transport(SippTransport::Tcp)
        .users_csv(csv)
        .calls(1)
        .run()
}

/// The a=crypto lines in `text` other than `ours`.
fn other_crypto(text: &str, ours: &str) -> Vec<CryptoAttribute> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("a=crypto:") && *l != ours)
        .filter_map(|l| l.parse().ok())
        .collect()
}

#[test]
fn sipp_calls_a_sim_phone_holds_updates_and_gets_srtp() {
    let Some(sipp) = require_peer("sipp", "sipp calling a ucm-sim phone") else {
        return;
    };
    let ucm = ucm();
    // The test's socket stands in for sipp's media port: it collects the phone's SRTP.
    let media = UdpSocket::bind("127.0.0.1:0").expect("media socket");
    media
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let port = media.local_addr().expect("addr").port();
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = media.recv(&mut buf) {
                    got.push((Instant::now(), buf[..n].to_vec()));
                }
            }
            got
        })
    };
    let ours =
        CryptoAttribute::generate(1, SrtpProfile::AesCm128HmacSha1_80, &mut rand::thread_rng());
    let ours_line = format!("a=crypto:{ours}");
    let run = carol_calls(
        &sipp,
        &ucm,
        "call_hold_update.xml",
        "1001",
        port,
        "RTP/SAVP",
        &ours_line,
    );
    stop.store(true, Ordering::Relaxed);
    let arrivals = collector.join().expect("collector");
    // On hold (0.8 s) the phone is recvonly and sends nothing; after UPDATE it sends again.
    let longest_gap = arrivals
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    assert!(
        longest_gap >= Duration::from_millis(500),
        "no pause in the phone's media while held: longest gap {longest_gap:?}"
    );
    let (first, last) = (arrivals[0].0, arrivals[arrivals.len() - 1].0);
    assert!(
        last - first >= Duration::from_millis(1800),
        "media resumed after the UPDATE: {:?}",
        last - first
    );
    let packets: Vec<Vec<u8>> = arrivals.into_iter().map(|(_, p)| p).collect();
    assert!(run.all_succeeded(), "{run:?}\nucm-sim:\n{}", ucm.output());
    // The 200 came from the phone with a fresh key of the offered suite.
    let answers = other_crypto(&run.messages, &ours_line);
    assert!(
        !answers.is_empty(),
        "no a=crypto in the answers: {}",
        run.messages
    );
    assert!(answers
        .iter()
        .all(|a| a.profile == SrtpProfile::AesCm128HmacSha1_80));
    assert!(
        run.messages.contains("a=recvonly"),
        "hold answered a=recvonly"
    );
    // About 1 s of media before hold; every packet decrypts with the phone's key.
    let mut rx = SrtpContext::new(&answers[0].to_config()).expect("context");
    let mut good = 0;
    for p in &packets {
        let mut p = p.clone();
        let n = p.len();
        p.resize(n + 64, 0);
        if let Ok(len) = rx.unprotect_rtp(&mut p, n) {
            assert_eq!(len, 172, "G.711 20 ms packets");
            good += 1;
        } else {
            panic!("a packet from the phone failed SRTP authentication");
        }
    }
    assert!(good >= 60, "only {good} SRTP packets from the phone");
    // The same packets through libsrtp (pylibsrtp), an implementation independent of the
    // phone's edgeway-srtp.
    if let Some(mut oracle) = LibsrtpOracle::start("the sim phone's SRTP") {
        let key = &answers[0].keys[0].key;
        let session = oracle.session(
            answers[0].profile.sdes_name(),
            &[key.key(), key.salt()].concat(),
            1024,
        );
        for p in &packets {
            let clear = oracle
                .op(session, "unprotect", p)
                .unwrap_or_else(|e| panic!("libsrtp refused the phone's packet: {e}"));
            assert_eq!(clear.len(), 172);
        }
    }
    let c = ucm.counters();
    assert_eq!(c["calls_answered"], 1, "{c}");
    assert_eq!(c["calls_ended"], 1, "{c}");
    assert_eq!(c["sdp_refused"], 0, "{c}");
    assert!(ucm.calls().is_empty(), "BYE ended the call");
}

#[test]
fn digest_authentication_profile_challenges_invites_with_407() {
    let Some(sipp) = require_peer("sipp", "sipp answering ucm-sim's INVITE challenge") else {
        return;
    };
    let ucm = ucm();
    let csv = "SEQUENTIAL\nfrank;[authentication username=frank password=frank-pw];\
               example.com;1003;40000;RTP/AVP;a=x-no-crypto\n";
    let run = sipp_run(&sipp, &ucm, "call_digest.xml", csv);
    assert!(run.all_succeeded(), "{run:?}\nucm-sim:\n{}", ucm.output());
    assert!(run
        .messages
        .contains("Proxy-Authenticate: Digest realm=\"ccmsipline\""));
    assert!(run.messages.contains("Proxy-Authorization: Digest"));
    let c = ucm.counters();
    assert_eq!(c["invite_challenges"], 1, "{c}");
    assert_eq!(c["calls_answered"], 1, "{c}");
    // carol's profile does not enable digest: her INVITEs are never challenged (the
    // other tests' calls go through without a 407).
}

#[test]
fn sipp_cancels_a_ringing_sim_phone_and_gets_487() {
    let Some(sipp) = require_peer("sipp", "sipp cancelling a call to a ucm-sim phone") else {
        return;
    };
    let ucm = ucm();
    ucm.answer_mode("1003", "ring");
    let run = carol_calls(
        &sipp,
        &ucm,
        "call_cancel.xml",
        "1003",
        40000,
        "RTP/AVP",
        "a=x-no-crypto",
    );
    assert!(run.all_succeeded(), "{run:?}\nucm-sim:\n{}", ucm.output());
    assert!(run.messages.contains("SIP/2.0 487 Request Terminated"));
    assert_eq!(ucm.counter("calls_cancelled"), 1);
    assert!(ucm.calls().is_empty(), "CANCEL ended the call");
}

#[test]
fn bad_sdp_and_unroutable_calls_get_precise_refusals() {
    let Some(sipp) = require_peer("sipp", "sipp calls refused by ucm-sim") else {
        return;
    };
    let ucm = ucm();
    let suite = "a=crypto:1 AES_CM_256_NULL inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    let key =
        CryptoAttribute::generate(1, SrtpProfile::AesCm128HmacSha1_80, &mut rand::thread_rng());
    let good_key = format!("a=crypto:{key}");
    let huge = format!("a=x-pad:{}", "x".repeat(9000));
    let cases = [
        (
            "1001",
            40000,
            "RTP/SAVP",
            "a=x-no-crypto",
            "488 Not Acceptable Here",
            "306 ucm-sim \"no a=crypto line",
        ),
        (
            "1001",
            40000,
            "RTP/SAVP",
            suite,
            "488 Not Acceptable Here",
            "unsupported crypto-suite",
        ),
        (
            "1001",
            40000,
            "RTP/AVP",
            "a=x-no-crypto",
            "488 Not Acceptable Here",
            "302 ucm-sim \"RTP/AVP refused",
        ),
        (
            "1001",
            80,
            "RTP/SAVP",
            good_key.as_str(),
            "488 Not Acceptable Here",
            "media port 80 is reserved",
        ),
        (
            "1001",
            40000,
            "RTP/SAVP",
            huge.as_str(),
            "488 Not Acceptable Here",
            "over the 8192-byte limit",
        ),
        (
            "9999",
            40000,
            "RTP/SAVP",
            good_key.as_str(),
            "404 Not Found",
            "no such directory number",
        ),
        (
            "2003",
            40000,
            "RTP/SAVP",
            good_key.as_str(),
            "486 Busy Here",
            "",
        ),
        (
            "2002",
            40000,
            "RTP/SAVP",
            good_key.as_str(),
            "480 Temporarily Unavailable",
            "",
        ),
    ];
    for (callee, port, proto, line, status, warning) in cases {
        let run = carol_calls(&sipp, &ucm, "call_refused.xml", callee, port, proto, line);
        assert!(run.all_succeeded(), "{callee} {line:.60}: {run:?}");
        assert!(
            run.messages.contains(&format!("SIP/2.0 {status}")),
            "{callee} {line:.60}: expected {status}\n{}",
            run.messages
        );
        assert!(
            run.messages.contains(warning),
            "{warning:?} missing:\n{}",
            run.messages
        );
    }
    let c = ucm.counters();
    assert_eq!(c["sdp_refused"], 5, "{c}");
    assert_eq!(c["not_found"], 1, "{c}");
    assert_eq!(c["busy"], 1, "{c}");
    assert_eq!(c["unavailable"], 1, "{c}");
    assert!(ucm.calls().is_empty());
}

#[test]
fn two_sim_phones_exchange_srtp_both_ways() {
    let ucm = ucm();
    let n = ucm.call("desk", "1002").expect("sim-to-sim call");
    // 50 packets a second each way: after about a second both phones have received.
    let call = ucm.wait_for_call(n, Duration::from_secs(10), |c| {
        c["legs"]
            .as_array()
            .is_some_and(|l| l.iter().all(|leg| leg["media"]["rx"].as_u64() >= Some(50)))
    });
    assert_eq!(call["kind"], "sim-to-sim");
    assert_eq!(call["state"], "established");
    for leg in call["legs"].as_array().expect("legs") {
        assert_eq!(leg["srtp"], true, "{leg}");
        assert_eq!(leg["media"]["decrypt_failures"], 0, "{leg}");
        assert_eq!(leg["media"]["bad"], 0, "{leg}");
        assert_eq!(leg["media"]["lost"], 0, "{leg}");
        assert!(leg["media"]["tx"].as_u64() >= Some(50), "{leg}");
    }
    ucm.hangup(n).expect("hangup");
    assert!(ucm.calls().is_empty());
    // A non-secure phone cannot take the secure phone's SRTP offer: refused, nothing left.
    let refused = ucm.call("desk", "fax").expect_err("profiles differ");
    assert!(refused.contains("RTP/SAVP refused"), "{refused}");
    let refused = ucm
        .call("carol", "desk")
        .expect_err("carol is no sim phone");
    assert!(refused.contains("not a simulated phone"), "{refused}");
    assert!(ucm.calls().is_empty());
}

/// baresip registered as `user` over TCP, auto-answering with mandatory SDES-SRTP and a
/// sine-wave source (so it sends real audio). The shared `Baresip` helper has no answer
/// mode, so this one is local; killed on drop.
struct AnsweringBaresip {
    child: std::process::Child,
    dir: edgeway_testkit::peers::ScratchDir,
}

impl AnsweringBaresip {
    fn spawn(binary: &std::path::Path, user: &str, password: &str, ucm: &UcmSim) -> Self {
        let dir = edgeway_testkit::peers::ScratchDir::new("baresip-answer");
        let modules = ["/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules"]
            .into_iter()
            .find(|d| std::path::Path::new(d).join("srtp.so").exists())
            .expect("baresip's module directory (srtp.so) not found");
        dir.write(
            "config",
            format!(
                "poll_method epoll\nsip_listen 127.0.0.1:0\naudio_player aufile,/dev/null\n\
                 audio_source aufile,{}\nmodule_path {modules}\nmodule g711.so\n\
                 module aufile.so\nmodule srtp.so\nmodule menu.so\nmodule_tmp account.so\n",
                dir.write("tone.wav", tone_wav(20)).display()
            ),
        );
        let tcp = ucm.sip_tcp.expect("tcp");
        dir.write(
            "accounts",
            format!(
                "<sip:{user}@example.com;transport=tcp>;auth_pass={password};\
                 outbound=\"sip:{tcp};transport=tcp\";regint=600;answermode=auto;\
                 mediaenc=srtp-mand\n"
            ),
        );
        let log = std::fs::File::create(dir.path().join("out.log")).expect("log");
        let child = std::process::Command::new(binary)
            .args(["-4", "-n", "127.0.0.1", "-f"])
            .arg(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start baresip");
        AnsweringBaresip { child, dir }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("out.log")).unwrap_or_default()
    }
}

impl Drop for AnsweringBaresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `seconds` of a 440 Hz tone as an 8 kHz mono 16-bit WAV file (baresip's aufile source).
fn tone_wav(seconds: u32) -> Vec<u8> {
    let samples = 8000 * seconds;
    let data_len = samples * 2;
    let mut w = Vec::with_capacity(44 + data_len as usize);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    for v in [16u32, 1 | (1 << 16), 8000, 16000, 2 | (16 << 16)] {
        w.extend_from_slice(&v.to_le_bytes());
    }
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let t = f64::from(i) / 8000.0;
        let v = (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16;
        w.extend_from_slice(&v.to_le_bytes());
    }
    w
}

const BOB: &str = r#"
[[user]]
name = "bob"
password = "bob-pw"
number = "3001"
security_profile = "secure"
"#;

#[test]
fn sim_phone_and_sipp_call_a_registered_baresip_with_srtp() {
    let (Some(baresip), Some(sipp)) = (
        require_peer("baresip", "a ucm-sim phone calling a registered baresip"),
        require_peer("sipp", "sipp calling a registered baresip through ucm-sim"),
    ) else {
        return;
    };
    let ucm = UcmSim::spawn(
        env!("CARGO_BIN_EXE_ucm-sim").as_ref(),
        &UcmSimOptions::tcp_with_users(&format!("{USERS}{BOB}")),
    );
    let bob = AnsweringBaresip::spawn(&baresip, "bob", "bob-pw", &ucm);
    let end = Instant::now() + Duration::from_secs(10);
    while !ucm.bindings().iter().any(|b| b["user"] == "bob") {
        assert!(
            Instant::now() < end,
            "bob did not register:\n{}",
            bob.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A simulated inside phone calls bob: INVITE down bob's connection, SRTP both ways.
    let n = ucm.call("1001", "bob").expect("call bob");
    let call = ucm.wait_for_call(n, Duration::from_secs(10), |c| {
        c["state"] == "established" && c["legs"][0]["media"]["rx"].as_u64() >= Some(25)
    });
    assert!(
        bob.output()
            .contains("SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)"),
        "{}",
        bob.output()
    );
    assert_eq!(call["kind"], "sim-placed");
    let phone = &call["legs"][0];
    assert_eq!(phone["srtp"], true, "{call}");
    assert_eq!(phone["media"]["decrypt_failures"], 0, "{call}");
    ucm.hangup(n).expect("hangup");
    assert!(ucm.calls().is_empty());

    // sipp (carol) calls bob: proxied, record-routed, BYE relayed.
    let key =
        CryptoAttribute::generate(1, SrtpProfile::AesCm128HmacSha1_80, &mut rand::thread_rng());
    let run = carol_calls(
        &sipp,
        &ucm,
        "call_basic.xml",
        "3001",
        40000,
        "RTP/SAVP",
        &format!("a=crypto:{key}"),
    );
    assert!(run.all_succeeded(), "{run:?}\nbaresip:\n{}", bob.output());
    assert!(
        run.messages
            .contains("Record-Route: <sip:ucm-sim-rr@127.0.0.1:"),
        "{}",
        run.messages
    );
    let c = ucm.counters();
    assert_eq!(c["calls_routed"], 1, "{c}");
    assert_eq!(c["calls_placed"], 1, "{c}");
    assert!(c["responses_relayed"].as_u64() >= Some(2), "{c}");
    assert!(
        c["in_dialog_forwarded"].as_u64() >= Some(2),
        "ACK and BYE: {c}"
    );
    assert!(
        ucm.calls().is_empty(),
        "the relayed 200 to BYE ended the call"
    );
}
