//! `edgeway-loadgen`: media load against a relay under test, and SIP-over-TLS
//! registration load (`sip-register`). See the crate docs, `perf-lab/relay/README.md` and
//! `perf-lab/sip/README.md`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use edgeway_loadgen::bencode::Value;
use edgeway_loadgen::engine::{FindMaxParams, Generator, Options, TrialParams, TrialReport};
use edgeway_loadgen::ng::{self, CallSetup, NgClient};
use edgeway_loadgen::scenario::{Scenario, ScenarioFile, StreamSpec};
use edgeway_loadgen::{reflect, sys};
use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_srtp::SrtpProfile;

mod sip_call_cmd;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Media (RTP/SRTP) load generator for relay benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Offer a fixed total rate for a fixed time and report.
    Run {
        #[command(flatten)]
        common: Common,
        /// Offered packets per second, all streams together (default: 50 per stream).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Search the highest offered rate whose loss stays within --loss percent.
    FindMax {
        #[command(flatten)]
        common: Common,
        /// Loss threshold, percent.
        #[arg(long, default_value_t = 0.1)]
        loss: f64,
        /// First rate tried (default: 50 per stream).
        #[arg(long)]
        start_rate: Option<f64>,
        /// Highest rate tried.
        #[arg(long, default_value_t = 2_000_000.0)]
        max_rate: f64,
        /// Factor between successive rates (the search only goes up; see find_max).
        #[arg(long, default_value_t = 1.15)]
        step: f64,
        /// Also fail a trial whose p99 latency exceeds this many microseconds.
        #[arg(long)]
        p99_limit_us: Option<f64>,
        /// Seconds between trials.
        #[arg(long, default_value_t = 1.0)]
        pause: f64,
    },
    /// Set up calls on rtpengine over ng and write their streams as a scenario.
    RtpengineSetup {
        /// rtpengine's ng listener.
        #[arg(long, default_value = "127.0.0.1:2223")]
        ng: SocketAddr,
        /// Calls (two streams each); 0 only pings rtpengine.
        #[arg(long)]
        calls: usize,
        /// Local IP of the simulated endpoints.
        #[arg(long, default_value = "127.0.0.1")]
        local_ip: IpAddr,
        /// First local port of the simulated endpoints.
        #[arg(long)]
        port_base: u16,
        /// Distinct local ports per call side (0: one per call side). Shared ports let the
        /// generator batch its receives; rtpengine still has its own ports per call.
        #[arg(long, default_value_t = 0)]
        ports_per_side: usize,
        /// Suite side B answers with (must differ from A's AES_CM_128_HMAC_SHA1_80).
        #[arg(long, default_value = "AES_CM_128_HMAC_SHA1_32")]
        b_suite: String,
        /// Scenario file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Program calls into a running edgeway data plane's flow table (core re-key, both
    /// legs), wait until its workers installed them, and write their streams as a scenario.
    EdgewaySetup {
        /// The node's table directory (as given to edgeway-dataplane --shm-dir).
        #[arg(long)]
        shm_dir: PathBuf,
        /// Calls (two streams each).
        #[arg(long)]
        calls: usize,
        /// IPv4 address of the simulated endpoints.
        #[arg(long, default_value = "127.0.0.1")]
        local_ip: std::net::Ipv4Addr,
        /// First local port of the simulated endpoints.
        #[arg(long)]
        port_base: u16,
        /// Distinct local ports per call side (0: one per call side).
        #[arg(long, default_value_t = 0)]
        ports_per_side: usize,
        /// Address the data plane's media sockets are bound to.
        #[arg(long, default_value = "127.0.0.1")]
        sut_ip: std::net::Ipv4Addr,
        /// Suite of side B (side A is AES_CM_128_HMAC_SHA1_80).
        #[arg(long, default_value = "AES_CM_128_HMAC_SHA1_32")]
        b_suite: String,
        /// Seconds to wait for the workers to install the calls.
        #[arg(long, default_value_t = 30.0)]
        wait: f64,
        /// Scenario file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a scenario for the built-in reflector (generator calibration).
    MakeScenario {
        /// Streams.
        #[arg(long)]
        streams: usize,
        /// IP of everything.
        #[arg(long, default_value = "127.0.0.1")]
        ip: IpAddr,
        /// First generator port.
        #[arg(long)]
        port_base: u16,
        /// Generator ports per side (tx, rx).
        #[arg(long, default_value_t = 8)]
        ports_per_side: usize,
        /// First reflector port.
        #[arg(long)]
        target_port_base: u16,
        /// Reflector ports.
        #[arg(long, default_value_t = 8)]
        target_ports: usize,
        /// Plain RTP instead of SRTP re-keyed between two fresh keys.
        #[arg(long)]
        plain: bool,
        /// Scenario file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// SIP-over-TLS clients, each on its own connection: register (digest), optionally
    /// hold with refreshes and keep-alives; reports registrations/s, setup latency,
    /// failures by cause, connections held and CPU.
    SipRegister(SipRegisterArgs),
    /// Calls through edge and core: callers register over TLS at the edge and call phones
    /// registered at the registrar, SRTP media both ways; reports setups/s, setup latency,
    /// failures by cause, concurrent calls, media loss and latency, CPU per role.
    SipCall(sip_call_cmd::SipCallArgs),
    /// Closed-loop HTTPS GETs (kept-alive connections, or a new TLS connection per
    /// request): requests/s, latency percentiles, failures by cause, CPU.
    Https(edgeway_loadgen::https_load::HttpsLoadArgs),
    /// Relay a scenario's streams (bind every tx_to, re-key, send to rx_local) until killed.
    Reflect {
        /// Scenario file.
        #[arg(long)]
        scenario: PathBuf,
        /// CPU to pin to.
        #[arg(long)]
        cpu: Option<usize>,
        /// Stop after this many seconds (default: run until killed).
        #[arg(long)]
        seconds: Option<f64>,
    },
}

#[derive(Args, Debug)]
struct SipRegisterArgs {
    /// SIP/TLS listener under test.
    #[arg(long)]
    target: SocketAddr,
    /// Name for SNI and certificate verification.
    #[arg(long)]
    server_name: String,
    /// PEM file of the CA certificate(s) to trust.
    #[arg(long)]
    ca: PathBuf,
    /// TLS version offered: 1.2 or 1.3.
    #[arg(long, default_value = "1.3", value_parser = parse_tls_version)]
    tls: edgeway_loadgen::sip_load::TlsVersion,
    /// Allow TLS session resumption between clients (off: a full handshake each).
    #[arg(long)]
    resume: bool,
    /// Users in the pool (<user-prefix><i>, password <password-prefix><i>, i from
    /// --first-user, padded to --user-digits).
    #[arg(long)]
    users: usize,
    /// Index of the first user (ucm-sim's generated users start at 1).
    #[arg(long, default_value_t = 1)]
    first_user: usize,
    /// Minimum digits of the user number, zero-padded (ucm-sim: user0001).
    #[arg(long, default_value_t = 4)]
    user_digits: usize,
    /// User name prefix.
    #[arg(long, default_value = "user")]
    user_prefix: String,
    /// Password prefix.
    #[arg(long, default_value = "pass")]
    password_prefix: String,
    /// Domain of the addresses of record.
    #[arg(long)]
    domain: String,
    /// New registrations per second (0: as fast as --concurrency allows).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Most registrations in flight at once.
    #[arg(long, default_value_t = 1000)]
    concurrency: usize,
    /// Keep every registered connection open until the end (each user registers once).
    #[arg(long)]
    hold: bool,
    /// Expires asked for, seconds.
    #[arg(long, default_value_t = 3600)]
    expires: u32,
    /// Re-REGISTER held bindings before they expire.
    #[arg(long)]
    refresh: bool,
    /// Fraction of the granted expiry after which a held binding is refreshed.
    #[arg(long, default_value_t = 0.5)]
    refresh_at: f64,
    /// Send a CRLF keep-alive ping every this many seconds on held connections.
    #[arg(long)]
    keepalive: Option<f64>,
    /// Seconds the run lasts.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds allowed for one registration (connect to 200 OK).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Local address to bind clients to, round-robin (repeatable; default: any).
    #[arg(long = "source")]
    sources: Vec<IpAddr>,
    /// Remove every held binding (Expires: 0) at the end.
    #[arg(long)]
    unregister: bool,
    /// CPU to pin the generator to.
    #[arg(long)]
    cpu: Option<usize>,
    /// PID of a system-under-test process whose CPU use is reported (repeatable).
    #[arg(long = "sut-pid")]
    sut_pids: Vec<u32>,
    /// Progress line on stderr every second.
    #[arg(long)]
    progress: bool,
    /// Print the report as JSON only (the RESULT line is printed in any case).
    #[arg(long)]
    json: bool,
}

fn parse_tls_version(s: &str) -> Result<edgeway_loadgen::sip_load::TlsVersion, String> {
    use edgeway_loadgen::sip_load::TlsVersion;
    match s {
        "1.2" => Ok(TlsVersion::Tls12),
        "1.3" => Ok(TlsVersion::Tls13),
        _ => Err(format!("TLS version {s}: expected 1.2 or 1.3")),
    }
}

fn https(a: &edgeway_loadgen::https_load::HttpsLoadArgs) -> anyhow::Result<()> {
    if let Some(cpu) = a.cpu {
        sys::pin_to_cpu(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
    }
    sys::raise_nofile_limit();
    let r = edgeway_loadgen::https_load::run(a)?;
    let failures: u64 = r.failures.values().sum();
    eprintln!(
        "{} x{}: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, {failures} failures",
        r.mode,
        r.connections,
        r.requests_per_s,
        r.latency_us.p50 / 1000.0,
        r.latency_us.p99 / 1000.0
    );
    println!("RESULT {}", serde_json::to_string(&r)?);
    Ok(())
}

fn sip_register(a: SipRegisterArgs) -> anyhow::Result<()> {
    use edgeway_loadgen::sip_load::{self, LoadParams};
    if let Some(cpu) = a.cpu {
        sys::pin_to_cpu(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
    }
    sys::raise_nofile_limit();
    let pem = std::fs::read(&a.ca).with_context(|| format!("reading {}", a.ca.display()))?;
    let tls = sip_load::client_config(&pem, a.tls, a.resume)?;
    let server_name = rustls_pki_types::ServerName::try_from(a.server_name.clone())
        .with_context(|| format!("server name {}", a.server_name))?;
    let secs = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s).with_context(|| format!("{what} {s}: not a duration"))
    };
    let params = LoadParams {
        target: a.target,
        server_name,
        tls,
        tls_version: a.tls,
        users: a.users,
        first_user: a.first_user,
        user_digits: a.user_digits,
        user_prefix: a.user_prefix,
        password_prefix: a.password_prefix,
        domain: a.domain,
        rate: a.rate,
        concurrency: a.concurrency,
        hold: a.hold,
        expires: a.expires,
        refresh: a.refresh,
        refresh_fraction: a.refresh_at,
        keepalive: a.keepalive.map(|k| secs(k, "--keepalive")).transpose()?,
        duration: secs(a.duration, "--duration")?,
        timeout: secs(a.timeout, "--timeout")?,
        sources: a.sources,
        unregister: a.unregister,
        sut_pids: a.sut_pids,
        progress: a.progress,
    };
    let r = sip_load::run(params)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let l = &r.setup_latency_us;
        println!("| mode | TLS | registered | reg/s | p50 ms | p99 ms | p99.9 ms | refreshes | failures | held | gen CPU % | SUT CPU % |");
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        let failures: u64 = r.failures.values().sum();
        let sut: Vec<String> = r
            .sut_cpu
            .iter()
            .map(|c| {
                format!(
                    "{}: {}",
                    c.pid,
                    c.cpu_pct.map_or("-".into(), |p| format!("{p:.0}"))
                )
            })
            .collect();
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {:.0} | {} |",
            r.mode,
            a.tls.as_str(),
            r.registered,
            r.registrations_per_s,
            l.p50 / 1000.0,
            l.p99 / 1000.0,
            l.p999 / 1000.0,
            r.refreshes,
            failures,
            r.held_at_end,
            r.gen_cpu_pct,
            sut.join(", ")
        );
        for (cause, n) in &r.failures {
            println!(
                "failure {cause}: {n} (e.g. {})",
                r.failure_examples.get(cause).map_or("", String::as_str)
            );
        }
    }
    println!("RESULT {}", serde_json::to_string(&r)?);
    Ok(())
}

#[derive(Args, Debug)]
struct Common {
    /// Scenario file.
    #[arg(long)]
    scenario: PathBuf,
    /// Measured seconds per run (per trial for find-max).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds before each run.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds to wait for stragglers after sending.
    #[arg(long, default_value_t = 1.0)]
    drain: f64,
    /// CPU to pin the generator to.
    #[arg(long)]
    cpu: Option<usize>,
    /// Minimum microseconds between send turns.
    #[arg(long, default_value_t = 200)]
    tick_us: u64,
    /// Socket buffer bytes (SO_RCVBUF/SO_SNDBUF, forced when root).
    #[arg(long, default_value_t = 4 << 20)]
    sock_buf: usize,
    /// PID of the system under test, for its CPU use per run.
    #[arg(long)]
    sut_pid: Option<u32>,
    /// Print the report as JSON only (the RESULT line is printed in any case).
    #[arg(long)]
    json: bool,
}

impl Common {
    fn setup(&self) -> anyhow::Result<(Generator, TrialParams)> {
        if let Some(cpu) = self.cpu {
            sys::pin_to_cpu(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
        }
        let scenario = Scenario::load(&self.scenario)?;
        let gen = Generator::new(
            &scenario,
            Options {
                tick: Duration::from_micros(self.tick_us),
                sock_buf: self.sock_buf,
                ssrc_base: None,
                sut_pid: self.sut_pid,
            },
        )?;
        eprintln!(
            "scenario {}: {} streams on {} local sockets",
            self.scenario.display(),
            gen.stream_count(),
            gen.socket_count()
        );
        let params = TrialParams {
            rate: 50.0 * gen.stream_count() as f64,
            warmup: Duration::from_secs_f64(self.warmup),
            duration: Duration::from_secs_f64(self.duration),
            drain: Duration::from_secs_f64(self.drain),
        };
        Ok((gen, params))
    }
}

fn print_table(reports: &[&TrialReport]) {
    println!(
        "| offered pps | sent pps | recv pps | loss % | corrupt | dup | reord | p50 us | p90 us | p99 us | p99.9 us | max us | gen CPU % | SUT CPU % |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in reports {
        let l = r.latency_us;
        println!(
            "| {:.0} | {:.0}{} | {:.0} | {:.3} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            r.offered_pps,
            r.sent_pps,
            if r.generator_limited { " (gen-limited)" } else { "" },
            r.received_pps,
            r.loss_pct,
            r.corrupt,
            r.duplicates,
            r.reordered,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            r.gen_cpu_pct,
            r.sut_cpu_pct.map_or("-".into(), |c| format!("{c:.0}")),
        );
    }
}

fn write_scenario(path: &Path, file: &ScenarioFile) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(file)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { common, rate } => {
            let (mut gen, mut p) = common.setup()?;
            if let Some(r) = rate {
                p.rate = r;
            }
            let r = gen.trial(&p)?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_table(&[&r]);
                if r.generator_limited {
                    println!("note: the generator could not send at the offered rate");
                }
            }
            println!("RESULT {}", serde_json::to_string(&r)?);
        }
        Cmd::FindMax {
            common,
            loss,
            start_rate,
            max_rate,
            step,
            p99_limit_us,
            pause,
        } => {
            let (mut gen, p) = common.setup()?;
            let fp = FindMaxParams {
                loss_pct: loss,
                start_rate: start_rate.unwrap_or(p.rate),
                max_rate,
                step,
                p99_limit_us,
                trial: p,
                pause: Duration::from_secs_f64(pause),
            };
            let rep = gen.find_max(&fp, |r, pass| {
                eprintln!(
                    "trial {:.0} pps: sent {:.0} recv {:.0} loss {:.3}% corrupt {} p99 {:.0} us gen {:.0}% sut {} -> {}",
                    r.offered_pps,
                    r.sent_pps,
                    r.received_pps,
                    r.loss_pct,
                    r.corrupt,
                    r.latency_us.p99,
                    r.gen_cpu_pct,
                    r.sut_cpu_pct.map_or("-".into(), |c| format!("{c:.0}%")),
                    if pass { "pass" } else { "fail" }
                );
                println!("TRIAL {}", serde_json::to_string(r).unwrap_or_default());
            })?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                print_table(&rep.trials.iter().collect::<Vec<_>>());
                println!(
                    "max rate with loss <= {}%{}: {:.0} pps{}",
                    loss,
                    p99_limit_us.map_or(String::new(), |l| format!(" and p99 <= {l} us")),
                    rep.max_pps,
                    if rep.generator_limited {
                        " (generator-limited: the system under test is at least this fast)"
                    } else {
                        ""
                    }
                );
            }
            println!("RESULT {}", serde_json::to_string(&rep)?);
        }
        Cmd::RtpengineSetup {
            ng,
            calls,
            local_ip,
            port_base,
            ports_per_side,
            b_suite,
            out,
        } => {
            let Some(b_suite) = SrtpProfile::from_sdes_name(&b_suite) else {
                bail!("unknown suite {b_suite}");
            };
            let mut client = NgClient::new(ng)?;
            client.request(&Value::dict([("command", Value::str("ping"))]))?;
            if calls == 0 {
                eprintln!("{ng}: pong");
                return Ok(());
            }
            let setup = CallSetup {
                calls,
                local_ip,
                port_base,
                ports_per_side,
                a_suite: SrtpProfile::AesCm128HmacSha1_80,
                b_suite,
                call_prefix: format!("lg-{}-{}", std::process::id(), rand::random::<u32>()),
            };
            let t = std::time::Instant::now();
            let file = ng::setup_calls(&mut client, &setup, &mut rand::rngs::OsRng)?;
            write_scenario(&out, &file)?;
            eprintln!(
                "{calls} calls set up on {ng} in {:.1} s; {} streams written to {}",
                t.elapsed().as_secs_f64(),
                file.streams.len(),
                out.display()
            );
        }
        Cmd::EdgewaySetup {
            shm_dir,
            calls,
            local_ip,
            port_base,
            ports_per_side,
            sut_ip,
            b_suite,
            wait,
            out,
        } => {
            let Some(b_suite) = SrtpProfile::from_sdes_name(&b_suite) else {
                bail!("unknown suite {b_suite}");
            };
            let table = edgeway_flowtable::FlowTable::open_at(&shm_dir)
                .with_context(|| format!("opening the flow table in {}", shm_dir.display()))?;
            let setup = edgeway_loadgen::edgeway::EdgewaySetup {
                calls,
                local_ip,
                port_base,
                ports_per_side,
                sut_ip,
                a_suite: SrtpProfile::AesCm128HmacSha1_80,
                b_suite,
                workers: table.dataplane().workers.max(1),
                flow_id_base: 1,
            };
            let t = std::time::Instant::now();
            let file =
                edgeway_loadgen::edgeway::setup_calls(&table, &setup, &mut rand::rngs::OsRng)?;
            edgeway_loadgen::edgeway::wait_installed(&table, Duration::from_secs_f64(wait))?;
            write_scenario(&out, &file)?;
            eprintln!(
                "{calls} calls programmed into {} and installed in {:.1} s; {} streams written to {}",
                shm_dir.display(),
                t.elapsed().as_secs_f64(),
                file.streams.len(),
                out.display()
            );
        }
        Cmd::MakeScenario {
            streams,
            ip,
            port_base,
            ports_per_side,
            target_port_base,
            target_ports,
            plain,
            out,
        } => {
            let mut rng = rand::rngs::OsRng;
            let mut file = ScenarioFile::default();
            let pps = ports_per_side.max(1);
            let port = |base: u16, off: usize| -> anyhow::Result<u16> {
                u16::try_from(usize::from(base) + off).context("port past 65535")
            };
            for i in 0..streams {
                let key = |rng: &mut rand::rngs::OsRng| {
                    (!plain).then(|| {
                        CryptoAttribute::generate(1, SrtpProfile::AesCm128HmacSha1_80, rng)
                            .to_string()
                    })
                };
                file.streams.push(StreamSpec {
                    tx_local: SocketAddr::new(ip, port(port_base, i % pps)?).to_string(),
                    tx_to: SocketAddr::new(ip, port(target_port_base, i % target_ports.max(1))?)
                        .to_string(),
                    tx_crypto: key(&mut rng),
                    rx_local: SocketAddr::new(ip, port(port_base, pps + i % pps)?).to_string(),
                    rx_crypto: key(&mut rng),
                });
            }
            write_scenario(&out, &file)?;
        }
        Cmd::SipRegister(args) => sip_register(args)?,
        Cmd::SipCall(args) => sip_call_cmd::sip_call(args)?,
        Cmd::Https(args) => https(&args)?,
        Cmd::Reflect {
            scenario,
            cpu,
            seconds,
        } => {
            if let Some(cpu) = cpu {
                sys::pin_to_cpu(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
            }
            let sc = Scenario::load(&scenario)?;
            let stop = Arc::new(AtomicBool::new(false));
            if let Some(s) = seconds {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs_f64(s));
                    stop.store(true, Ordering::Relaxed);
                });
            }
            let stats = reflect::reflect(&sc, 4 << 20, &stop)?;
            eprintln!(
                "reflector: {} forwarded, {} dropped",
                stats.forwarded, stats.dropped
            );
        }
    }
    Ok(())
}
