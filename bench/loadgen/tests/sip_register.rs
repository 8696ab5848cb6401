//! `edgeway-loadgen sip-register` against a real ucm-sim over TLS: what the generator
//! reports must match what the registrar saw (bindings, counters), wrong passwords must be
//! reported as failures, held clients must refresh within the run and answer requests the
//! registrar sends down their connection.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use edgeway_testkit::peers::{ScratchDir, UcmSim, UcmSimOptions};
use edgeway_testkit::pki::{Eku, TestPki};
use serde_json::Value;

const DOMAIN: &str = "example.com";
const SERVER_NAME: &str = "ucm.example.com";

struct Lab {
    ucm: UcmSim,
    ca: PathBuf,
    _pki_dir: ScratchDir,
}

/// A ucm-sim listening on TLS with `users` generated users (`user0001`.., password
/// `pw0001`..) and the given extra arguments.
fn lab(users: usize, extra: &[&str]) -> Lab {
    let dir = ScratchDir::new("sipload-pki");
    let pki = TestPki::new(dir.path()).expect("test CA");
    let cert = pki
        .issue("ucm", &[SERVER_NAME], Eku::ServerAuth)
        .expect("server certificate");
    let opts = UcmSimOptions {
        generate_users: Some((users, "pw".into())),
        domains: vec![DOMAIN.into()],
        extra_args: extra.iter().map(|s| (*s).to_owned()).collect(),
        ..UcmSimOptions::default()
    }
    .with_tls(&cert.cert_pem, &cert.key_pem);
    let ucm = UcmSim::spawn(&edgeway_testkit::peers::ucm_sim_binary(), &opts);
    Lab {
        ca: pki.ca_path(),
        ucm,
        _pki_dir: dir,
    }
}

/// `sip-register` against the lab's ucm-sim as users with passwords `<password>NNNN`.
fn loadgen_command(lab: &Lab, users: usize, password: &str, extra: &[&str]) -> Command {
    let target = lab.ucm.sip_tls.expect("ucm-sim TLS listener").to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeway-loadgen"));
    cmd.args([
        "sip-register",
        "--target",
        &target,
        "--server-name",
        SERVER_NAME,
    ])
    .arg("--ca")
    .arg(&lab.ca)
    .args(["--users", &users.to_string(), "--domain", DOMAIN])
    .args(["--password-prefix", password, "--timeout", "5"])
    .args(extra)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// The RESULT line's report.
fn report(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadgen failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{stdout}"));
    serde_json::from_str(line).expect("RESULT is JSON")
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn failures_total(r: &Value) -> u64 {
    r["failures"]
        .as_object()
        .map_or(0, |m| m.values().map(u).sum())
}

#[test]
fn every_registration_reported_is_a_binding_in_ucm_sim() {
    const N: usize = 40;
    let lab = lab(2 * N, &[]);
    // Users 1..=N over TLS 1.3, N+1..=2N over TLS 1.2.
    for (tls, first) in [("1.3", 1), ("1.2", N + 1)] {
        let out = loadgen_command(
            &lab,
            N,
            "pw",
            &["--hold", "--rate", "200", "--duration", "1.5"],
        )
        .args(["--tls", tls, "--first-user", &first.to_string()])
        .output()
        .expect("run loadgen");
        let r = report(&out);
        assert_eq!(u(&r["registered"]), N as u64, "TLS {tls}: {r}");
        assert_eq!(u(&r["held_at_end"]), N as u64, "TLS {tls}: {r}");
        assert_eq!(failures_total(&r), 0, "TLS {tls}: {r}");
        assert_eq!(r["tls_version"], tls);
        assert!(r["setup_latency_us"]["p50"].as_f64() > Some(0.0), "{r}");
    }
    // One binding per user, each answered 200 after exactly one challenge.
    let bindings = lab.ucm.bindings();
    let users: std::collections::BTreeSet<&str> =
        bindings.iter().filter_map(|b| b["user"].as_str()).collect();
    assert_eq!(bindings.len(), 2 * N, "{bindings:?}");
    assert_eq!(users.len(), 2 * N, "{bindings:?}");
    assert!(users.contains("user0001") && users.contains("user0080"));
    assert_eq!(lab.ucm.counter("registers_ok"), 2 * N as u64);
    assert_eq!(lab.ucm.counter("challenges"), 2 * N as u64);
    assert_eq!(lab.ucm.counter("auth_failures"), 0);
}

#[test]
fn wrong_passwords_are_counted_as_failures_not_registrations() {
    const N: usize = 10;
    let lab = lab(N, &[]);
    let out = loadgen_command(&lab, N, "wrong", &["--rate", "100", "--duration", "1"])
        .output()
        .expect("run loadgen");
    let r = report(&out);
    assert_eq!(u(&r["registered"]), 0, "{r}");
    let attempted = u(&r["attempted"]);
    assert!(attempted >= N as u64, "{r}");
    // ucm-sim answers a wrong digest response with 403.
    assert_eq!(u(&r["failures"]["status-403"]), attempted, "{r}");
    assert_eq!(lab.ucm.counter("auth_failures"), attempted);
    assert!(lab.ucm.bindings().is_empty());
}

#[test]
fn held_clients_refresh_and_answer_requests_from_the_registrar() {
    const N: usize = 20;
    let lab = lab(N, &["--min-expires", "2"]);
    let child = loadgen_command(
        &lab,
        N,
        "pw",
        &[
            "--hold",
            "--refresh",
            "--expires",
            "2",
            "--refresh-at",
            "0.5",
            "--keepalive",
            "0.5",
            "--rate",
            "200",
            "--duration",
            "4",
            "--unregister",
        ],
    )
    .spawn()
    .expect("start loadgen");
    // While the clients are held, ucm-sim sends OPTIONS down a client's connection.
    let end = Instant::now() + Duration::from_secs(3);
    while lab.ucm.bindings().len() < N && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lab.ucm.bindings().len(), N, "{}", lab.ucm.output());
    assert_eq!(lab.ucm.send("OPTIONS", "user0001"), Ok(200));
    let r = report(&child.wait_with_output().expect("loadgen ends"));
    assert_eq!(u(&r["registered"]), N as u64, "{r}");
    assert_eq!(failures_total(&r), 0, "{r}");
    // Expires 2 refreshed every second over a 4 s run: at least two cycles per client.
    let refreshes = u(&r["refreshes"]);
    assert!(refreshes >= 2 * N as u64, "{r}");
    assert_eq!(u(&r["requests_answered"]), 1, "{r}");
    assert!(u(&r["pongs_received"]) >= N as u64, "{r}");
    assert_eq!(
        lab.ucm.counter("bindings_refreshed"),
        refreshes,
        "{}",
        lab.ucm.counters()
    );
    // --unregister removed every binding at the end.
    assert_eq!(lab.ucm.counter("bindings_removed"), N as u64);
    assert!(lab.ucm.bindings().is_empty());
}
