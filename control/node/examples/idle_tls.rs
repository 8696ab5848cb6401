//! Memory per idle client TLS connection on a running edge: opens `N` TLS connections (from
//! loopback sources 127.0.2.1.. so the per-source limit is not what is measured), each
//! completing its handshake and one CRLF keep-alive round, holds them, and prints the
//! edge's RSS before and after (from /proc/<pid>/status).
//!
//! `cargo run --release --example idle_tls -- <edge-sip-addr> <edge-pid> <ca.pem> <N>`
//! (the perf-lab note beside the result gives the exact setup and pinning).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, pid, ca, n] = &args[..] else {
        bail!("usage: idle_tls <edge-sip-addr> <edge-pid> <ca.pem> <N>");
    };
    let addr: SocketAddr = addr.parse()?;
    let pid: u32 = pid.parse()?;
    let n: usize = n.parse()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca)?)?;
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let before = rss_kib(pid)?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = ServerName::try_from("edge.example.com")?;
        let started = Instant::now();
        let mut held = Vec::with_capacity(n);
        for i in 0..n {
            let src = IpAddr::V4(Ipv4Addr::new(127, 0, 2 + (i / 200) as u8, 1 + (i % 200) as u8));
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(src, 0))?;
            let tcp = socket.connect(addr).await?;
            let mut tls = connector.connect(name.clone(), tcp).await?;
            tls.write_all(b"\r\n\r\n").await?;
            let mut pong = [0u8; 2];
            tls.read_exact(&mut pong).await?;
            held.push(tls);
        }
        let opened = started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib(pid)?;
        println!(
            "connections={n} open_s={:.1} edge_rss_before_kib={before} edge_rss_after_kib={after} per_connection_bytes={}",
            opened.as_secs_f64(),
            (after.saturating_sub(before)) * 1024 / n as u64
        );
        drop(held);
        Ok(())
    })
}
