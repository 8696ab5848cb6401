//! `sys::in_netns`, which `sip-call --phone-netns` makes the phones' sockets with: a socket
//! made inside lives in that namespace for good (it binds an address only the namespace has,
//! and talks to another socket there), and the thread is back in its own namespace after.
//!
//! Needs root; the namespace is the test's own and removed at the end.
#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use edgeway_loadgen::sys::in_netns;
use edgeway_testkit::{ip, root_or_skip};

/// An address no host here has: only the test's namespace gets it, on its loopback.
const INSIDE: &str = "10.254.77.1";

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn own_netns() -> String {
    std::fs::read_link("/proc/thread-self/ns/net")
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn sockets_made_in_a_namespace_stay_there_and_the_thread_comes_back() {
    if !root_or_skip("sockets made in another network namespace (setns)") {
        return;
    }
    let ns = Netns(format!("ewlg-{}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
    ip(&[
        "-n",
        &ns.0,
        "addr",
        "add",
        &format!("{INSIDE}/32"),
        "dev",
        "lo",
    ]);
    let path = PathBuf::from(format!("/run/netns/{}", ns.0));
    let home = own_netns();

    assert!(
        UdpSocket::bind(format!("{INSIDE}:0")).is_err(),
        "{INSIDE} must exist only inside the test's namespace"
    );
    let (a, b) = in_netns(&path, || {
        Ok((
            UdpSocket::bind(format!("{INSIDE}:0"))?,
            UdpSocket::bind(format!("{INSIDE}:0"))?,
        ))
    })
    .unwrap();
    assert_eq!(
        own_netns(),
        home,
        "the thread went back to its own namespace"
    );
    // Made inside, used from outside: they still reach each other over the namespace's lo.
    b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    a.send_to(b"ping", b.local_addr().unwrap()).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = b.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"ping"[..], a.local_addr().unwrap()));
    // And a socket made now, outside, is the host's again.
    assert!(UdpSocket::bind(format!("{INSIDE}:0")).is_err());

    let missing = PathBuf::from("/run/netns/ewlg-no-such-namespace");
    let err = in_netns(&missing, || Ok(())).unwrap_err();
    assert!(
        err.to_string().contains("ewlg-no-such-namespace"),
        "the error names the namespace: {err}"
    );
    assert_eq!(own_netns(), home);
}
