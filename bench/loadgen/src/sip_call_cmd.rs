//! `edgeway-loadgen sip-call`: the command line of [`edgeway_loadgen::sip_call_load`] and
//! its report (a markdown table, the failures, and a `RESULT` JSON line).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use edgeway_loadgen::sip_call_load::{self, CallLoadParams, CallLoadReport, MediaParams};
use edgeway_loadgen::sip_load::{self, TlsVersion};
use edgeway_loadgen::sys;
use edgeway_srtp::SrtpProfile;

/// Calls through edge and core: callers over TLS at the edge, phones over TCP at the
/// registrar, SRTP media both ways.
#[derive(Args, Debug)]
pub(crate) struct SipCallArgs {
    /// The edge's SIP/TLS listener (callers register and call through it).
    #[arg(long)]
    edge: SocketAddr,
    /// Name for SNI and the edge certificate's check.
    #[arg(long)]
    server_name: String,
    /// PEM file of the CA certificate(s) to trust.
    #[arg(long)]
    ca: PathBuf,
    /// The registrar's SIP/TCP listener (ucm-sim), where the phones register.
    #[arg(long)]
    registrar: SocketAddr,
    /// Callers, and as many phones (caller i calls phone i): the most calls at once.
    #[arg(long, alias = "concurrency")]
    callers: usize,
    /// Index of the first caller user (ucm-sim's generated users start at 1).
    #[arg(long, default_value_t = 1)]
    first_caller: usize,
    /// Index of the first phone user (default: right after the callers).
    #[arg(long)]
    first_callee: Option<usize>,
    /// Minimum digits of user numbers, zero-padded (ucm-sim: user0001).
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
    /// New calls per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Seconds each call is held before BYE (default: until the run ends).
    #[arg(long)]
    hold: Option<f64>,
    /// Without --media: seconds calls are placed for.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// One call per caller, then G.711 20 ms media both ways on all of them for this many
    /// seconds, then BYE.
    #[arg(long)]
    media: Option<f64>,
    /// Unmeasured seconds of media first (latching).
    #[arg(long, default_value_t = 2.0)]
    media_warmup: f64,
    /// Seconds to wait for stragglers after the media.
    #[arg(long, default_value_t = 1.0)]
    media_drain: f64,
    /// CPU the media thread is pinned to (default: --cpu).
    #[arg(long)]
    media_cpu: Option<usize>,
    /// SO_RCVBUF/SO_SNDBUF of each media socket.
    #[arg(long, default_value_t = 256 << 10)]
    sock_buf: usize,
    /// SRTP suite of the callers' offers, or `none` for plain RTP (which the core refuses).
    #[arg(long, default_value = "AES_CM_128_HMAC_SHA1_80")]
    suite: String,
    /// Address the media sockets bind to.
    #[arg(long, default_value = "127.0.0.1")]
    media_ip: IpAddr,
    /// The phones' network namespace (`/run/netns/NAME`): the phones' registrar connections
    /// and media sockets are made there, the callers' stay in the generator's own.
    #[arg(long)]
    phone_netns: Option<std::path::PathBuf>,
    /// Address the phones' media sockets bind to (default: --media-ip).
    #[arg(long)]
    phone_ip: Option<IpAddr>,
    /// Registrations per second while signing callers and phones in.
    #[arg(long, default_value_t = 200.0)]
    register_rate: f64,
    /// Expires asked for.
    #[arg(long, default_value_t = 3600)]
    expires: u32,
    /// Seconds allowed for a registration, an INVITE's or a BYE's final response.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// TLS version offered: 1.2 or 1.3.
    #[arg(long, default_value = "1.3")]
    tls: String,
    /// CPU to pin the generator to.
    #[arg(long)]
    cpu: Option<usize>,
    /// A process whose CPU is reported, as ROLE=PID (repeatable).
    #[arg(long = "pid", value_parser = parse_role)]
    roles: Vec<(String, u32)>,
    /// Progress line on stderr every second.
    #[arg(long)]
    progress: bool,
    /// Print the report as JSON only (the RESULT line is printed in any case).
    #[arg(long)]
    json: bool,
}

fn parse_role(s: &str) -> Result<(String, u32), String> {
    let (role, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("{s}: expected ROLE=PID"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("{s}: {pid} is not a process id"))?;
    Ok((role.to_owned(), pid))
}

fn secs(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("{what} {s}: not a duration"))
}

/// Runs the command.
pub(crate) fn sip_call(a: SipCallArgs) -> anyhow::Result<()> {
    if let Some(cpu) = a.cpu {
        sys::pin_to_cpu(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
    }
    let tls_version = match a.tls.as_str() {
        "1.2" => TlsVersion::Tls12,
        "1.3" => TlsVersion::Tls13,
        other => bail!("TLS version {other}: expected 1.2 or 1.3"),
    };
    let suite = match a.suite.as_str() {
        "none" => None,
        name => match SrtpProfile::from_sdes_name(name) {
            Some(p) => Some(p),
            None => bail!("unknown SRTP suite {name}"),
        },
    };
    let pem = std::fs::read(&a.ca).with_context(|| format!("reading {}", a.ca.display()))?;
    let tls = sip_load::client_config(&pem, tls_version, false)?;
    let server_name = rustls_pki_types::ServerName::try_from(a.server_name.clone())
        .with_context(|| format!("server name {}", a.server_name))?;
    let media = a
        .media
        .map(|m| -> anyhow::Result<MediaParams> {
            Ok(MediaParams {
                seconds: secs(m, "--media")?,
                warmup: secs(a.media_warmup, "--media-warmup")?,
                drain: secs(a.media_drain, "--media-drain")?,
                cpu: a.media_cpu.or(a.cpu),
                sock_buf: a.sock_buf,
            })
        })
        .transpose()?;
    let params = CallLoadParams {
        edge: a.edge,
        server_name,
        tls,
        registrar: a.registrar,
        callers: a.callers,
        first_caller: a.first_caller,
        first_callee: a.first_callee.unwrap_or(a.first_caller + a.callers),
        user_digits: a.user_digits,
        user_prefix: a.user_prefix,
        password_prefix: a.password_prefix,
        domain: a.domain,
        rate: a.rate,
        hold: a.hold.map(|h| secs(h, "--hold")).transpose()?,
        duration: secs(a.duration, "--duration")?,
        media,
        suite,
        media_ip: a.media_ip,
        phone_netns: a.phone_netns,
        phone_ip: a.phone_ip,
        register_rate: a.register_rate,
        expires: a.expires,
        timeout: secs(a.timeout, "--timeout")?,
        roles: a.roles,
        progress: a.progress,
    };
    let r = sip_call_load::run(params)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_report(&r);
    }
    println!("RESULT {}", serde_json::to_string(&r)?);
    Ok(())
}

fn print_report(r: &CallLoadReport) {
    let l = &r.setup_latency_us;
    let failures: u64 = r.failures.values().sum();
    println!("| mode | offered calls/s | attempted | established | setups/s | setup p50 ms | p99 ms | concurrent peak | ended (BYE 200) | failures |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:.0} | {} | {} | {:.1} | {:.2} | {:.2} | {} | {} | {} |",
        r.mode,
        r.offered_rate,
        r.attempted,
        r.established,
        r.setups_per_s,
        l.p50 / 1000.0,
        l.p99 / 1000.0,
        r.concurrent_peak,
        r.ended_ok,
        failures
    );
    for (cause, n) in &r.failures {
        println!(
            "failure {cause}: {n} (e.g. {})",
            r.failure_examples.get(cause).map_or("", String::as_str)
        );
    }
    if let Some(m) = &r.media {
        println!();
        println!("| media calls | streams | sent pps | recv pps | loss % | auth/corrupt | dup | p50 us | p99 us | p99.9 us | max us |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.3} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.media_calls,
            m.streams,
            m.sent_pps,
            m.received_pps,
            m.loss_pct,
            m.corrupt,
            m.duplicates,
            m.latency_us.p50,
            m.latency_us.p99,
            m.latency_us.p999,
            m.latency_us.max
        );
    }
    println!();
    println!("| role | pid | CPU s (run) | CPU s (calls) | CPU % (media) |");
    println!("|---|---:|---:|---:|---:|");
    let f = |v: Option<f64>, p: usize| v.map_or("-".into(), |v| format!("{v:.p$}"));
    for c in &r.cpu {
        println!(
            "| {} | {} | {} | {} | {} |",
            c.role,
            c.pid,
            f(c.cpu_s, 2),
            f(c.calls_cpu_s, 2),
            f(c.media_cpu_pct, 0)
        );
    }
}
