//! Test support shared by edgeway's integration tests (a dev-dependency only).
//!
//! [`LibsrtpOracle`] drives `tests/oracle/libsrtp_oracle.py`: libsrtp2 through pylibsrtp, an
//! implementation independent of `edgeway-srtp`, over JSON lines. It needs the project's venv
//! (`scripts/setup` makes it); without it [`LibsrtpOracle::start`] fails the test under CI
//! (`CI=true`) and otherwise returns `None` after printing what was not tested.
//!
//! [`peers`] starts real peers (ucm-sim, sipp, kamailio, baresip) and talks to them.
//!
//! [`pki::TestPki`] is a throwaway CA that issues PEM certificates with chosen SANs and EKUs.
//!
//! [`control::Cluster`] is a running control plane (edge, core, ucm-sim) for end-to-end tests.

pub mod control;
pub mod peers;
pub mod pki;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

/// The repository root (this crate lives in `tests/support`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds `bin` of `package` (`cargo build -p`, `--release` for a release test) into this
/// test's target directory and returns its path: other crates' tests run the workspace's
/// binaries from the same target directory and profile, never a stale one.
///
/// # Panics
/// When the build fails.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    // A test runs as target/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-q", "-p", package, "--bin", bin]);
    if profile_dir.file_name() == Some("release".as_ref()) {
        build.arg("--release");
    }
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("run cargo build for {package}: {e}"));
    assert!(status.success(), "building {package} failed");
    profile_dir.join(bin)
}

/// A running libsrtp oracle process; killed on drop.
#[derive(Debug)]
pub struct LibsrtpOracle {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl LibsrtpOracle {
    /// Starts the oracle, or says what `what` could not test and returns `None` (outside CI).
    ///
    /// # Panics
    /// Under `CI=true` when the venv or the script is missing, or when the process cannot start.
    pub fn start(what: &str) -> Option<LibsrtpOracle> {
        let repo = repo_root();
        let venv = std::env::var_os("EDGEWAY_VENV")
            .map(PathBuf::from)
            .unwrap_or(repo.join(".venv"));
        let python = venv.join("bin/python");
        let script = repo.join("tests/oracle/libsrtp_oracle.py");
        if !python.exists() || !script.exists() {
            let msg = format!(
                "{what} NOT TESTED against libsrtp: {} or {} missing (run scripts/setup)",
                python.display(),
                script.display()
            );
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
            eprintln!("{msg}");
            return None;
        }
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the libsrtp oracle");
        let stdin = child.stdin.take().expect("oracle stdin");
        let stdout = BufReader::new(child.stdout.take().expect("oracle stdout"));
        Some(LibsrtpOracle {
            child,
            stdin,
            stdout,
            next_id: 1,
        })
    }

    fn call(&mut self, req: Value) -> Value {
        writeln!(self.stdin, "{req}").expect("write to the oracle");
        self.stdin.flush().expect("flush the oracle");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read the oracle");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("oracle said {line:?}: {e}"))
    }

    /// A new libsrtp session for the SDES suite `profile` (e.g. `AES_CM_128_HMAC_SHA1_80`)
    /// keyed with `key_salt` (master key then master salt) and a replay window. (Plain names
    /// and bytes, not `edgeway-srtp` types: the SRTP crate's own tests use this too.)
    ///
    /// # Panics
    /// When libsrtp refuses the session.
    pub fn session(&mut self, profile: &str, key_salt: &[u8], window: u32) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let r = self.call(json!({
            "op": "new", "id": id, "profile": profile, "key": to_hex(key_salt),
            "window": window, "allow_repeat_tx": false
        }));
        assert_eq!(r["ok"], true, "oracle cannot make a {profile} session: {r}");
        id
    }

    /// `op` (`protect`, `unprotect`, `protect_rtcp`, `unprotect_rtcp`) on `packet` in session
    /// `id`: the resulting packet, or libsrtp's words for its refusal.
    pub fn op(&mut self, id: u64, op: &str, packet: &[u8]) -> Result<Vec<u8>, String> {
        let r = self.call(json!({"op": op, "id": id, "packet": to_hex(packet)}));
        if r["ok"] == true {
            Ok(from_hex(r["packet"].as_str().expect("oracle packet")))
        } else {
            Err(r["error"].as_str().unwrap_or("?").to_owned())
        }
    }
}

impl Drop for LibsrtpOracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a hex string (panics on bad hex: the oracle's output is trusted test data).
pub fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex from the oracle"))
        .collect()
}

/// Whether the test runs as root, which suites loading BPF or making namespaces need. Not
/// root: under CI (`CI=true`, which runs as root) the test fails rather than skip; elsewhere
/// it prints what was not tested and returns false.
pub fn root_or_skip(what: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if euid == "0" {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} needs root, and CI runs as root: refusing to skip"
    );
    eprintln!("SKIPPED {what}: not root (run the suite as root to test it)");
    false
}

/// `ip ARGS...`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sysctl -qw SETTING` inside network namespace `netns`, which must succeed.
pub fn netns_sysctl(netns: &str, setting: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "sysctl", "-qw", setting])
        .output()
        .expect("running sysctl");
    assert!(
        out.status.success(),
        "sysctl {setting} in {netns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
