//! Real peers for integration tests: ucm-sim (edgeway's Unified CM stand-in), sipp, kamailio
//! and baresip, each started by the test and stopped when its handle drops.
//!
//! Every peer is looked up with [`require_peer`] first: under `CI=true` a missing peer fails
//! the test; elsewhere the test skips, printing what was not tested. The usual shape:
//!
//! ```no_run
//! use edgeway_testkit::peers::{require_peer, Sipp, SippTransport, UcmSim, UcmSimOptions};
//! let Some(sipp) = require_peer("sipp", "REGISTER over TLS") else { return };
//! let ucm = UcmSim::spawn("target/debug/ucm-sim".as_ref(), &UcmSimOptions::tcp_with_users(
//!     "[[user]]\nname=\"alice\"\npassword=\"pw\"\nnumber=\"1001\"\nsecurity_profile=\"secure\"\n",
//! ));
//! let run = Sipp::new(&sipp, "tests/peers/sipp/register.xml".as_ref())
//!     .remote(ucm.sip_tcp.expect("tcp listener"))
//!     .transport(SippTransport::Tcp)
//!     .users_csv("SEQUENTIAL\nalice;[authentication username=alice password=pw];example.com\n")
//!     .calls(1)
//!     .run();
//! assert!(run.all_succeeded(), "{run}");
//! ```
//!
//! All peers listen on 127.0.0.1 with port 0 (or a port picked free by the OS just before
//! start, for peers that cannot report theirs), so tests run in parallel.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The path of peer program `name` on PATH (or in /usr/sbin, where kamailio lives), or
/// `None` after printing that `what` was not tested.
///
/// # Panics
/// Under `CI=true` when the program is missing: CI must run every real-peer test.
pub fn require_peer(name: &str, what: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        let msg = format!(
            "{what} NOT TESTED: peer {name:?} is not installed (scripts/setup installs it)"
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("{msg}");
    }
    found
}

/// A scratch directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// A new empty directory whose name starts with `label`.
    pub fn new(label: &str) -> ScratchDir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "edgeway-{label}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        ScratchDir { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` inside it and returns the file's path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).expect("write a scratch file");
        p
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A loopback port that was free a moment ago (for peers that cannot bind port 0 and
/// report it). Another process may take it before the peer binds: callers retry on failure.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// Collects a child's output on a thread so it never blocks on a full pipe.
#[derive(Debug, Clone, Default)]
pub struct OutputLog(Arc<Mutex<String>>);

impl OutputLog {
    fn follow(&self, pipe: impl Read + Send + 'static) {
        let log = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
    }

    /// Everything read so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until `pred` holds for the text read so far, up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if pred(&self.text()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        pred(&self.text())
    }
}

/// A started peer process and its collected output; stopped on drop (SIGTERM, so forking
/// peers such as kamailio stop their children too, then SIGKILL after 5 s).
#[derive(Debug)]
pub(crate) struct PeerProcess {
    pub(crate) child: Child,
    pub(crate) log: OutputLog,
}

impl PeerProcess {
    pub(crate) fn spawn(cmd: &mut Command) -> PeerProcess {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        let log = OutputLog::default();
        if let Some(out) = child.stdout.take() {
            log.follow(out);
        }
        if let Some(err) = child.stderr.take() {
            log.follow(err);
        }
        PeerProcess { child, log }
    }

    /// Its exit status, once it has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn output(&self) -> String {
        self.log.text()
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// ucm-sim

/// How to start ucm-sim; [`UcmSimOptions::tcp_with_users`] is the common case.
#[derive(Debug, Clone, Default)]
pub struct UcmSimOptions {
    /// Listen for SIP over TCP (on 127.0.0.1:0).
    pub tcp: bool,
    /// Listen for SIP over TLS (on 127.0.0.1:0) with this certificate chain and key (PEM).
    pub tls: Option<(String, String)>,
    /// Users file contents (TOML `[[user]]` tables).
    pub users_toml: Option<String>,
    /// Generate this many users `user0001`.. with this password prefix.
    pub generate_users: Option<(usize, String)>,
    /// Registration domains served (`--domain`); empty serves any.
    pub domains: Vec<String>,
    /// Further command-line arguments.
    pub extra_args: Vec<String>,
}

impl UcmSimOptions {
    /// TCP only, the given users file, domain `example.com`.
    pub fn tcp_with_users(users_toml: &str) -> UcmSimOptions {
        UcmSimOptions {
            tcp: true,
            users_toml: Some(users_toml.to_owned()),
            domains: vec!["example.com".to_owned()],
            ..UcmSimOptions::default()
        }
    }

    /// Also listen on TLS with this certificate chain and key (PEM text).
    pub fn with_tls(mut self, cert_pem: &str, key_pem: &str) -> UcmSimOptions {
        self.tls = Some((cert_pem.to_owned(), key_pem.to_owned()));
        self
    }
}

/// The `ucm-sim` binary for another crate's integration test, built on demand into the
/// test's own target directory and profile ([`crate::workspace_binary`]). ucm-sim's own
/// tests use `env!("CARGO_BIN_EXE_ucm-sim")`.
pub fn ucm_sim_binary() -> PathBuf {
    crate::workspace_binary("edgeway-ucm-sim", "ucm-sim")
}

/// A running ucm-sim, killed on drop, with its bound addresses and an admin client.
#[derive(Debug)]
pub struct UcmSim {
    process: PeerProcess,
    _dir: ScratchDir,
    /// SIP over TCP, when enabled.
    pub sip_tcp: Option<SocketAddr>,
    /// SIP over TLS, when enabled.
    pub sip_tls: Option<SocketAddr>,
    /// The admin API (JSON lines over TCP).
    pub admin: SocketAddr,
}

impl UcmSim {
    /// Starts `binary` (in its own tests: `env!("CARGO_BIN_EXE_ucm-sim")`; elsewhere the
    /// workspace's `target/<profile>/ucm-sim`) and waits for its ready file.
    ///
    /// # Panics
    /// When it does not start or does not become ready within 10 s (its output is shown).
    pub fn spawn(binary: &Path, opts: &UcmSimOptions) -> UcmSim {
        let dir = ScratchDir::new("ucm-sim");
        let ready = dir.path().join("ready.json");
        let mut cmd = Command::new(binary);
        cmd.arg("--ready-file").arg(&ready);
        if opts.tcp {
            cmd.args(["--sip-tcp", "127.0.0.1:0"]);
        }
        if let Some((cert, key)) = &opts.tls {
            let cert = dir.write("cert.pem", cert);
            let key = dir.write("key.pem", key);
            cmd.args(["--sip-tls", "127.0.0.1:0", "--cert"])
                .arg(cert)
                .arg("--key")
                .arg(key);
        }
        if let Some(users) = &opts.users_toml {
            cmd.arg("--users").arg(dir.write("users.toml", users));
        }
        if let Some((n, prefix)) = &opts.generate_users {
            cmd.args([
                "--generate-users",
                &n.to_string(),
                "--password-prefix",
                prefix,
            ]);
        }
        for d in &opts.domains {
            cmd.args(["--domain", d]);
        }
        cmd.args(&opts.extra_args);
        let mut process = PeerProcess::spawn(&mut cmd);
        let end = Instant::now() + Duration::from_secs(10);
        let line = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                break text;
            }
            if let Some(status) = process.exited() {
                panic!(
                    "ucm-sim exited ({status}) before ready:\n{}",
                    process.output()
                );
            }
            if Instant::now() > end {
                panic!("ucm-sim not ready within 10 s:\n{}", process.output());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let v: Value = serde_json::from_str(&line).expect("ready file is JSON");
        let addr = |k: &str| {
            v[k].as_str()
                .map(|s| s.parse().expect("ready file address"))
        };
        UcmSim {
            sip_tcp: addr("sip_tcp"),
            sip_tls: addr("sip_tls"),
            admin: addr("admin").expect("admin address in the ready file"),
            process,
            _dir: dir,
        }
    }

    /// Sends one admin command and returns the reply object.
    pub fn admin(&self, cmd: &Value) -> Value {
        let mut s = TcpStream::connect(self.admin).expect("connect to ucm-sim's admin API");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        writeln!(s, "{cmd}").expect("write an admin command");
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .expect("read an admin reply");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("admin reply {line:?}: {e}"))
    }

    /// The live bindings (`{"user","number","security_profile","aor","contact","path",
    /// "expires","connection","transport","peer"}` objects).
    pub fn bindings(&self) -> Vec<Value> {
        let r = self.admin(&json!({"cmd": "bindings"}));
        r["bindings"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until at least `count` bindings are live and returns them.
    ///
    /// # Panics
    /// After `timeout`, with the bindings and ucm-sim's output.
    pub fn wait_for_bindings(&self, count: usize, timeout: Duration) -> Vec<Value> {
        let end = Instant::now() + timeout;
        loop {
            let b = self.bindings();
            if b.len() >= count {
                return b;
            }
            assert!(
                Instant::now() < end,
                "{} of {count} bindings after {timeout:?}: {b:?}\n{}",
                b.len(),
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// All counters.
    pub fn counters(&self) -> Value {
        self.admin(&json!({"cmd": "counters"}))["counters"].clone()
    }

    /// One counter (0 when absent).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters()[name].as_u64().unwrap_or(0)
    }

    /// Sends `method` (OPTIONS or MESSAGE) to `user`'s registered contact; the final
    /// status, or the error ucm-sim reported.
    pub fn send(&self, method: &str, user: &str) -> Result<u16, String> {
        let r = self.admin(&json!({"cmd": "send", "method": method, "to": user}));
        match r["ok"].as_bool() {
            Some(true) => r["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| format!("reply without status: {r}")),
            _ => Err(r["error"].as_str().unwrap_or("no error text").to_owned()),
        }
    }

    /// A simulated phone (`phone = "sim"`) calls `to` (a registered user or another
    /// simulated phone); the call's number, or the error ucm-sim reported.
    pub fn call(&self, from: &str, to: &str) -> Result<u64, String> {
        let r = self.admin(&json!({"cmd": "call", "from": from, "to": to}));
        match r["ok"].as_bool() {
            Some(true) => r["call"]
                .as_u64()
                .ok_or_else(|| format!("reply without call: {r}")),
            _ => Err(r["error"].as_str().unwrap_or("no error text").to_owned()),
        }
    }

    /// Hangs up call `call` at its simulated phone (BYE, CANCEL or 603).
    pub fn hangup(&self, call: u64) -> Result<(), String> {
        let r = self.admin(&json!({"cmd": "hangup", "call": call}));
        match r["ok"].as_bool() {
            Some(true) => Ok(()),
            _ => Err(r["error"].as_str().unwrap_or("no error text").to_owned()),
        }
    }

    /// The current calls (`{"call","call_id","kind","state","from","to","age","legs"}`;
    /// a simulated phone's leg has `"media": {"tx","rx","decrypt_failures","bad","lost"}`).
    pub fn calls(&self) -> Vec<Value> {
        let r = self.admin(&json!({"cmd": "calls"}));
        r["calls"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until call `call` satisfies `pred` and returns it.
    ///
    /// # Panics
    /// After `timeout`, with the calls and ucm-sim's output.
    pub fn wait_for_call(
        &self,
        call: u64,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let end = Instant::now() + timeout;
        loop {
            let all = self.calls();
            if let Some(c) = all.iter().find(|c| c["call"] == call).filter(|c| pred(c)) {
                return c.clone();
            }
            assert!(
                Instant::now() < end,
                "call {call} not as expected after {timeout:?}: {all:?}\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sets how `user` answers: `auto`, `busy` (486, also for a registered user) or `ring`.
    ///
    /// # Panics
    /// When ucm-sim refuses (unknown user or mode).
    pub fn answer_mode(&self, user: &str, mode: &str) {
        let r = self.admin(&json!({"cmd": "answer_mode", "user": user, "mode": mode}));
        assert_eq!(r["ok"], true, "answer_mode {user} {mode}: {r}");
    }

    /// Its output so far.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// Its process id (for memory measurements).
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }
}

// ---------------------------------------------------------------------------------------
// kamailio

/// How to start kamailio from `tests/peers/kamailio/registrar.cfg`.
#[derive(Debug, Clone)]
pub struct KamailioOptions {
    /// The registration domain served (also the digest realm).
    pub domain: String,
    /// Every user's digest password (the template has no user database).
    pub password: String,
    /// Also listen on TLS with this certificate chain and key (PEM text).
    pub tls: Option<(String, String)>,
}

/// A running kamailio registrar (foreground, `-DD -E`), stopped on drop.
#[derive(Debug)]
pub struct Kamailio {
    process: PeerProcess,
    _dir: ScratchDir,
    /// SIP over TCP.
    pub tcp: SocketAddr,
    /// SIP over TLS, when enabled.
    pub tls: Option<SocketAddr>,
}

impl Kamailio {
    /// Starts kamailio (from [`require_peer`]) with the registrar template; ports are
    /// picked free just before start and retried if another process took one meanwhile.
    ///
    /// # Panics
    /// When it does not listen within 10 s after five tries (its output is shown).
    pub fn spawn(binary: &Path, opts: &KamailioOptions) -> Kamailio {
        let template =
            std::fs::read_to_string(crate::repo_root().join("tests/peers/kamailio/registrar.cfg"))
                .expect("read tests/peers/kamailio/registrar.cfg");
        let modules = [
            "/usr/lib/x86_64-linux-gnu/kamailio/modules",
            "/usr/lib/aarch64-linux-gnu/kamailio/modules",
            "/usr/lib/kamailio/modules",
            "/usr/lib64/kamailio/modules",
        ]
        .into_iter()
        .find(|d| Path::new(d).join("registrar.so").exists())
        .expect("kamailio's module directory (registrar.so) not found");
        let mut last = String::new();
        for _ in 0..5 {
            let dir = ScratchDir::new("kamailio");
            let (tcp_port, tls_port) = (free_port(), free_port());
            let mut cfg = template
                .replace("%TCP_PORT%", &tcp_port.to_string())
                .replace("%TLS_PORT%", &tls_port.to_string())
                .replace("%DOMAIN%", &opts.domain)
                .replace("%PASSWORD%", &opts.password)
                .replace("%MODULES%", modules);
            let mut cmd = Command::new(binary);
            if let Some((cert, key)) = &opts.tls {
                let cert = dir.write("cert.pem", cert);
                let key = dir.write("key.pem", key);
                let tls_cfg = dir.write(
                    "tls.cfg",
                    format!(
                        "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n\
                         require_certificate = no\nprivate_key = {}\ncertificate = {}\n\n\
                         [client:default]\nverify_certificate = no\nrequire_certificate = no\n",
                        key.display(),
                        cert.display()
                    ),
                );
                cfg = cfg.replace("%TLS_CFG%", &tls_cfg.display().to_string());
                cmd.args(["-A", "WITH_TLS"]);
            }
            let cfg_path = dir.write("kamailio.cfg", cfg);
            cmd.args(["-DD", "-E", "-m", "32", "-M", "8", "-f"])
                .arg(&cfg_path)
                .arg("-Y")
                .arg(dir.path())
                .arg("-w")
                .arg(dir.path());
            let mut process = PeerProcess::spawn(&mut cmd);
            let end = Instant::now() + Duration::from_secs(10);
            loop {
                let up = tcp_listening(tcp_port) && (opts.tls.is_none() || tcp_listening(tls_port));
                if up {
                    return Kamailio {
                        process,
                        _dir: dir,
                        tcp: SocketAddr::from(([127, 0, 0, 1], tcp_port)),
                        tls: opts
                            .tls
                            .as_ref()
                            .map(|_| SocketAddr::from(([127, 0, 0, 1], tls_port))),
                    };
                }
                if process.exited().is_some() || Instant::now() > end {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last = process.output();
        }
        panic!("kamailio did not start:\n{last}");
    }

    /// Its log (stderr) so far.
    pub fn output(&self) -> String {
        self.process.output()
    }
}

// ---------------------------------------------------------------------------------------
// baresip

/// How to start baresip (1.0, headless) with one account.
#[derive(Debug, Clone)]
pub struct BaresipOptions {
    /// The account's user (AOR `sip:<user>@<domain>`), also the digest username.
    pub user: String,
    /// The AOR's domain.
    pub domain: String,
    /// The digest password.
    pub password: String,
    /// Where every request goes (the account's `outbound` proxy: registrar, edge, ...).
    pub outbound: SocketAddr,
    /// `tls` or `tcp`.
    pub transport: String,
    /// The CA (PEM) handed to baresip as `sip_cafile`. baresip 1.0 does not enforce it:
    /// it registers even when the server's certificate chains to another CA.
    pub ca_pem: Option<String>,
    /// Registration interval in seconds (`regint`).
    pub regint: u32,
}

/// A running baresip, stopped on drop. Headless: no UI module, no audio device (aufile on
/// /dev/null), bound to 127.0.0.1 only (`-4 -n 127.0.0.1`).
#[derive(Debug)]
pub struct Baresip {
    process: PeerProcess,
    _dir: ScratchDir,
    aor: String,
    /// The `ctrl_tcp` command port of a [`Baresip::spawn_caller`].
    control: Option<SocketAddr>,
    _dns: Option<LoopbackDns>,
}

/// A DNS server on 127.0.0.1 that answers every A query with 127.0.0.1 (and any other query
/// with no record), for peers that resolve the names in the edge's Record-Route
/// (`edge.example.com`): this machine has no DNS for them. Stops on drop.
#[derive(Debug)]
struct LoopbackDns {
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl LoopbackDns {
    fn start() -> LoopbackDns {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the DNS stub");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let addr = socket.local_addr().expect("DNS stub address");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stopping.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    if let Some(answer) = dns_answer(&buf[..n]) {
                        let _ = socket.send_to(&answer, from);
                    }
                }
            }
        });
        LoopbackDns { addr, stop }
    }
}

impl Drop for LoopbackDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The answer to one DNS query (RFC 1035 section 4): A (type 1) gets 127.0.0.1, anything
/// else no record; `None` for what is not a one-question query.
fn dns_answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question_end = end + 5;
    let qtype = query.get(end + 1..end + 3)?;
    let is_a = qtype == [0, 1];
    let mut out = query[..2].to_vec();
    out.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
    out.extend_from_slice(query.get(12..question_end)?);
    if is_a {
        // A name pointer to the question, A, IN, TTL 60, 4 bytes: 127.0.0.1.
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some(out)
}

/// The RTP ports of a [`Baresip::spawn_caller`]: a range no test's or `scripts/demo`'s data
/// plane uses (they take 9000-14999 and 16000-31999), so baresip never holds a port a data
/// plane is about to bind (baresip's default, 10000-20000, overlaps them).
pub const BARESIP_RTP_PORTS: &str = "15000-15999";

/// What [`Baresip::spawn_caller`] adds to an account: media encryption, a real audio source
/// and a command port, so a test can place calls and read their statistics.
#[derive(Debug, Clone)]
pub struct BaresipCaller {
    /// The account's `mediaenc` (`srtp-mand`: SDES-SRTP required, RTP/SAVP offered).
    pub mediaenc: String,
    /// The sine tone baresip sends (the `ausine` source), in Hz.
    pub tone_hz: u32,
}

impl Baresip {
    /// Writes `config` and `accounts` into a scratch directory and starts `baresip -f` on it.
    pub fn spawn(binary: &Path, opts: &BaresipOptions) -> Baresip {
        Self::start(binary, opts, None)
    }

    /// Like [`Baresip::spawn`], able to call: the `srtp` module with `caller.mediaenc`, a sine
    /// tone as its microphone (`ausine` is 48 kHz stereo only, so the source is opened so and
    /// resampled for the codec), and `ctrl_tcp` on a loopback port for
    /// [`Baresip::command`]. The names in the dialog's route set (the edge's Record-Route
    /// names `edge.example.com`) resolve to 127.0.0.1 through a DNS stub of its own. The
    /// port is picked free just before start and retried if another process took it
    /// meanwhile.
    ///
    /// # Panics
    /// When the command port does not listen within 5 s after five tries.
    pub fn spawn_caller(binary: &Path, opts: &BaresipOptions, caller: &BaresipCaller) -> Baresip {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut b = Self::start(binary, opts, Some((caller, port)));
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end && b.process.exited().is_none() {
                if tcp_listening(port) {
                    return b;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last = b.output();
        }
        panic!("baresip's ctrl_tcp did not listen:\n{last}");
    }

    fn start(
        binary: &Path,
        opts: &BaresipOptions,
        caller: Option<(&BaresipCaller, u16)>,
    ) -> Baresip {
        let dir = ScratchDir::new("baresip");
        let modules = ["/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules"]
            .into_iter()
            .find(|d| Path::new(d).join("account.so").exists())
            .expect("baresip's module directory (account.so) not found");
        let source = match caller {
            Some((c, _)) => format!(
                "ausine,{}\nausrc_srate 48000\nausrc_channels 2\nmodule ausine.so",
                c.tone_hz
            ),
            None => "aufile,/dev/null".to_owned(),
        };
        let mut config = format!(
            "poll_method epoll\nsip_listen 127.0.0.1:0\n\
             audio_player aufile,/dev/null\naudio_source {source}\n\
             module_path {modules}\nmodule g711.so\nmodule_tmp account.so\n"
        );
        let mut account_extra = String::new();
        let mut control = None;
        let mut dns = None;
        if let Some((c, port)) = caller {
            let stub = LoopbackDns::start();
            config.push_str(&format!("dns_server {}\n", stub.addr));
            dns = Some(stub);
            config.push_str(&format!(
                "module srtp.so\nmodule menu.so\nmodule ctrl_tcp.so\n\
                 ctrl_tcp_listen 127.0.0.1:{port}\nrtp_ports {BARESIP_RTP_PORTS}\n"
            ));
            account_extra = format!(";mediaenc={}", c.mediaenc);
            control = Some(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        if let Some(ca) = &opts.ca_pem {
            let ca = dir.write("ca.pem", ca);
            config.push_str(&format!("sip_cafile {}\n", ca.display()));
        }
        dir.write("config", config);
        let t = &opts.transport;
        dir.write(
            "accounts",
            format!(
                "<sip:{}@{};transport={t}>;auth_pass={};outbound=\"sip:{};transport={t}\";regint={}{account_extra}\n",
                opts.user, opts.domain, opts.password, opts.outbound, opts.regint
            ),
        );
        let process = PeerProcess::spawn(
            Command::new(binary)
                .args(["-4", "-n", "127.0.0.1", "-f"])
                .arg(dir.path()),
        );
        Baresip {
            process,
            _dir: dir,
            aor: format!("{}@{}", opts.user, opts.domain),
            control,
            _dns: dns,
        }
    }

    /// Runs one baresip command (`dial`, `hangup`, `callstat`, ...) through `ctrl_tcp`
    /// (netstring-framed JSON) and returns its response's `data` text, or the failure
    /// baresip reported. Events that arrive meanwhile are skipped.
    ///
    /// # Panics
    /// When this baresip was not started with [`Baresip::spawn_caller`], or the command port
    /// does not answer within 5 s.
    pub fn command(&self, command: &str, params: &str) -> Result<String, String> {
        let addr = self
            .control
            .expect("Baresip::command needs Baresip::spawn_caller");
        let mut s = TcpStream::connect(addr).expect("connect to baresip's ctrl_tcp");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let req = json!({"command": command, "params": params, "token": "t"}).to_string();
        write!(s, "{}:{req},", req.len()).expect("write a baresip command");
        let mut reader = BufReader::new(s);
        loop {
            let msg = read_netstring(&mut reader)?;
            let v: Value =
                serde_json::from_str(&msg).map_err(|e| format!("ctrl_tcp sent {msg:?}: {e}"))?;
            if v["response"] != true {
                continue;
            }
            let data = v["data"].as_str().unwrap_or_default().to_owned();
            return if v["ok"] == true { Ok(data) } else { Err(data) };
        }
    }

    /// Waits for baresip's "`<aor>: {0/TLS/v4} 200 OK () [1 binding]`" line; `false` after
    /// `timeout` (or if it exited).
    pub fn wait_registered(&mut self, timeout: Duration) -> bool {
        let prefix = format!("{}: ", self.aor);
        let end = Instant::now() + timeout;
        loop {
            let registered =
                self.process.output().lines().any(|l| {
                    l.contains(&prefix) && l.contains(" 200 OK") && l.contains("binding]")
                });
            if registered {
                return true;
            }
            if self.process.exited().is_some() || Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until its output contains `text`; `false` after `timeout`.
    pub fn wait_for_output(&self, text: &str, timeout: Duration) -> bool {
        self.process.log.wait_for(timeout, |out| out.contains(text))
    }

    /// Its output so far.
    pub fn output(&self) -> String {
        self.process.output()
    }
}

/// One netstring (`<len>:<bytes>,`) from `r`.
fn read_netstring(r: &mut impl BufRead) -> Result<String, String> {
    let mut len = Vec::new();
    r.read_until(b':', &mut len)
        .map_err(|e| format!("read a netstring length: {e}"))?;
    let n: usize = std::str::from_utf8(len.strip_suffix(b":").unwrap_or(&len))
        .ok()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("bad netstring length {:?}", String::from_utf8_lossy(&len)))?;
    let mut body = vec![0; n + 1];
    r.read_exact(&mut body)
        .map_err(|e| format!("read a netstring of {n} bytes: {e}"))?;
    body.pop(); // the trailing comma
    String::from_utf8(body).map_err(|e| format!("netstring is not UTF-8: {e}"))
}

// ---------------------------------------------------------------------------------------
// sipp

/// sipp's transport modes.
///
/// Debian's sipp is built without OpenSSL (`-t l1` fails: "you must compile SIPp with
/// OpenSSL"), so the TLS modes run sipp over TCP into a `socat` bridge whose OpenSSL client
/// carries each sipp connection over its own TLS connection to the remote. The remote sees
/// real TLS clients (OpenSSL); the Via in sipp's messages still says TCP. The bridge does
/// not verify the server's certificate unless [`Sipp::tls_ca`] is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SippTransport {
    /// `-t t1`: TCP, one socket for all calls.
    Tcp,
    /// `-t tn`: TCP, one socket per call.
    TcpPerCall,
    /// TLS, one connection for all calls (sipp `-t t1` through the bridge).
    Tls,
    /// TLS, one connection per call (sipp `-t tn` through the bridge).
    TlsPerCall,
}

impl SippTransport {
    fn flag(self) -> &'static str {
        match self {
            SippTransport::Tcp | SippTransport::Tls => "t1",
            SippTransport::TcpPerCall | SippTransport::TlsPerCall => "tn",
        }
    }

    fn is_tls(self) -> bool {
        matches!(self, SippTransport::Tls | SippTransport::TlsPerCall)
    }
}

/// A TCP-to-TLS bridge (socat, OpenSSL): one TLS connection to `remote` per accepted TCP
/// connection; killed on drop.
#[derive(Debug)]
pub struct TlsBridge {
    process: PeerProcess,
    /// Where to connect (plain TCP).
    pub addr: SocketAddr,
}

impl TlsBridge {
    /// Starts socat (from [`require_peer`]) bridging 127.0.0.1:<free port> to `remote`,
    /// verifying the server against `ca` (PEM) when given.
    ///
    /// # Panics
    /// When socat does not listen within 5 s.
    pub fn start(socat: &Path, remote: SocketAddr, ca: Option<&Path>) -> TlsBridge {
        for _ in 0..5 {
            let port = free_port();
            let tls = match ca {
                Some(ca) => format!("OPENSSL:{remote},cafile={},verify=1", ca.display()),
                None => format!("OPENSSL:{remote},verify=0"),
            };
            let mut process = PeerProcess::spawn(
                Command::new(socat)
                    .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
                    .arg(tls),
            );
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end {
                if process.exited().is_some() {
                    break; // the port was taken meanwhile: try another
                }
                if tcp_listening(port) {
                    return TlsBridge {
                        process,
                        addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("socat TLS bridge to {remote} did not start");
    }

    /// socat's output (OpenSSL errors show here).
    pub fn output(&self) -> String {
        self.process.output()
    }
}

/// Whether something listens on 127.0.0.1:`port` (TCP), read from /proc/net/tcp without
/// connecting (a probe connection would reach the peer behind a bridge).
fn tcp_listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let mut f = l.split_whitespace();
            f.nth(1) == Some(want.as_str()) && f.nth(1) == Some("0A")
        })
    })
}

/// A sipp run being prepared; [`Sipp::run`] starts it and waits for it to exit.
#[derive(Debug)]
pub struct Sipp {
    binary: PathBuf,
    scenario: PathBuf,
    remote: Option<SocketAddr>,
    transport: SippTransport,
    csv: Option<String>,
    calls: u32,
    rate: Option<u32>,
    limit: Option<u32>,
    timeout: Duration,
    tls_ca: Option<PathBuf>,
    args: Vec<String>,
}

/// How a sipp run ended.
#[derive(Debug)]
pub struct SippOutcome {
    /// sipp's exit status: 0 when every call succeeded, 1 when some failed.
    pub status: ExitStatus,
    /// Successful calls (the statistics file's `SuccessfulCall(C)`).
    pub successful: u64,
    /// Failed calls (`FailedCall(C)`).
    pub failed: u64,
    /// stdout and stderr.
    pub output: String,
    /// The error log (`-trace_err`): unexpected messages.
    pub errors: String,
    /// The message log (`-trace_msg`): everything sent and received.
    pub messages: String,
}

impl SippOutcome {
    /// Exit status 0 and at least one successful call.
    pub fn all_succeeded(&self) -> bool {
        self.status.success() && self.successful > 0 && self.failed == 0
    }
}

impl fmt::Display for SippOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = |s: &str, n: usize| s[s.len().saturating_sub(n)..].to_owned();
        write!(
            f,
            "sipp {}: {} successful, {} failed\n--- output ---\n{}\n--- errors ---\n{}\n--- messages (tail) ---\n{}",
            self.status,
            self.successful,
            self.failed,
            tail(&self.output, 4000),
            tail(&self.errors, 4000),
            tail(&self.messages, 6000)
        )
    }
}

impl Sipp {
    /// A run of `scenario` (an XML file) with sipp at `binary` (from [`require_peer`]).
    pub fn new(binary: &Path, scenario: &Path) -> Sipp {
        Sipp {
            binary: binary.to_owned(),
            scenario: scenario.to_owned(),
            remote: None,
            transport: SippTransport::Tcp,
            csv: None,
            calls: 1,
            rate: None,
            limit: None,
            timeout: Duration::from_secs(30),
            tls_ca: None,
            args: Vec::new(),
        }
    }

    /// With a TLS transport, verify the server's certificate against this CA (PEM).
    pub fn tls_ca(mut self, ca: &Path) -> Sipp {
        self.tls_ca = Some(ca.to_owned());
        self
    }

    /// The remote host (the registrar under test).
    pub fn remote(mut self, addr: SocketAddr) -> Sipp {
        self.remote = Some(addr);
        self
    }

    /// The transport (default TCP); see [`SippTransport`] for how TLS is carried.
    pub fn transport(mut self, t: SippTransport) -> Sipp {
        self.transport = t;
        self
    }

    /// `-inf` contents: a `SEQUENTIAL`/`RANDOM` line, then `field0;field1;..` per call.
    pub fn users_csv(mut self, csv: &str) -> Sipp {
        self.csv = Some(csv.to_owned());
        self
    }

    /// Total calls (`-m`, default 1).
    pub fn calls(mut self, n: u32) -> Sipp {
        self.calls = n;
        self
    }

    /// Calls per second (`-r`).
    pub fn rate(mut self, r: u32) -> Sipp {
        self.rate = Some(r);
        self
    }

    /// Simultaneous calls (`-l`).
    pub fn limit(mut self, l: u32) -> Sipp {
        self.limit = Some(l);
        self
    }

    /// Global timeout (default 30 s); reaching it fails the run.
    pub fn timeout(mut self, t: Duration) -> Sipp {
        self.timeout = t;
        self
    }

    /// A further argument.
    pub fn arg(mut self, a: impl Into<String>) -> Sipp {
        self.args.push(a.into());
        self
    }

    /// Runs sipp to completion.
    ///
    /// # Panics
    /// When no remote was set, sipp cannot start, or (TLS) socat is missing under CI.
    pub fn run(self) -> SippOutcome {
        let dir = ScratchDir::new("sipp");
        let mut remote = self.remote.expect("Sipp::remote not set");
        let mut bridge = None;
        if self.transport.is_tls() {
            let socat = require_peer("socat", "sipp over TLS (the OpenSSL bridge)")
                .expect("socat is needed to carry sipp over TLS (scripts/setup installs it)");
            let b = TlsBridge::start(&socat, remote, self.tls_ca.as_deref());
            remote = b.addr;
            bridge = Some(b);
        }
        let stats = dir.path().join("stats.csv");
        let errors = dir.path().join("errors.log");
        let messages = dir.path().join("messages.log");
        let mut cmd = Command::new(&self.binary);
        cmd.current_dir(dir.path())
            .arg(remote.to_string())
            .arg("-sf")
            .arg(&self.scenario)
            .args(["-t", self.transport.flag(), "-i", "127.0.0.1", "-p"])
            // Not 0: sipp reads it as "5060 or the next free port", which parallel tests
            // race for (EADDRINUSE).
            .arg(free_port().to_string())
            .args(["-m", &self.calls.to_string()])
            // The open-file limit here is 20,000; sipp's default socket cap (50,000) refuses to start.
            .args(["-nostdin", "-timeout_error", "-max_socket", "16000"])
            .arg("-timeout")
            .arg(format!("{}s", self.timeout.as_secs().max(1)))
            .args(["-trace_stat", "-stf"])
            .arg(&stats)
            .args(["-trace_err", "-error_file"])
            .arg(&errors)
            .args(["-trace_msg", "-message_file"])
            .arg(&messages);
        if let Some(csv) = &self.csv {
            cmd.arg("-inf").arg(dir.write("users.csv", csv));
        }
        if let Some(r) = self.rate {
            cmd.args(["-r", &r.to_string()]);
        }
        if let Some(l) = self.limit {
            cmd.args(["-l", &l.to_string()]);
        }
        cmd.args(&self.args);
        let mut process = PeerProcess::spawn(&mut cmd);
        let end = Instant::now() + self.timeout + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = process.exited() {
                break s;
            }
            if Instant::now() > end {
                panic!("sipp did not exit:\n{}", process.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader threads may still be draining the pipes.
        std::thread::sleep(Duration::from_millis(50));
        let (successful, failed) =
            sipp_call_counts(&std::fs::read_to_string(&stats).unwrap_or_default());
        let mut output = process.output();
        if let Some(b) = bridge {
            output.push_str("--- socat TLS bridge ---\n");
            output.push_str(&b.output());
        }
        SippOutcome {
            status,
            successful,
            failed,
            output,
            errors: std::fs::read_to_string(&errors).unwrap_or_default(),
            messages: std::fs::read_to_string(&messages).unwrap_or_default(),
        }
    }
}

/// A scenario shipped in `tests/peers/sipp/` (`register.xml`, `register_hold.xml`,
/// `register_wrong_password.xml`, `register_refused.xml`).
pub fn sipp_scenario(name: &str) -> PathBuf {
    crate::repo_root().join("tests/peers/sipp").join(name)
}

/// The `-inf` CSV those scenarios read: `SEQUENTIAL`, then per call
/// `user;[authentication username=user password=pw];domain`.
pub fn sipp_users_csv<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) -> String {
    let mut s = String::from("SEQUENTIAL\n");
    for (user, password, domain) in rows {
        s.push_str(&format!(
            "{user};[authentication username={user} password={password}];{domain}\n"
        ));
    }
    s
}

/// `SuccessfulCall(C)` and `FailedCall(C)` from the last row of a `-trace_stat` file.
fn sipp_call_counts(csv: &str) -> (u64, u64) {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return (0, 0);
    };
    let Some(last) = lines.next_back() else {
        return (0, 0);
    };
    let cols: Vec<&str> = header.split(';').collect();
    let vals: Vec<&str> = last.split(';').collect();
    let get = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .and_then(|i| vals.get(i))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (get("SuccessfulCall(C)"), get("FailedCall(C)"))
}
