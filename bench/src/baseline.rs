//! The baseline client: a child process, `smtp-bench --baseline-client JOB.json`, that
//! runs the exporter's walk by hand (connect, greeting, EHLO, STARTTLS, handshake, EHLO,
//! AUTH PLAIN, QUIT) with one shared rustls `ClientConfig`, no metrics and no scheduling,
//! on a current-thread tokio runtime. It is the CPU baseline of the first section.
//!
//! It reads replies with the exporter's own parser
//! ([`smtp_exporter::probe::reply::parse_reply`]) and nothing more of the exporter, so that
//! it stays a minimal client. Its CPU comes from `getrusage(RUSAGE_SELF)` around the timed
//! batch and is printed as one JSON line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use smtp_exporter::probe::reply::{parse_reply, Reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use crate::{sys, Context, Res};

/// What to run, written by the bench as the job file.
#[derive(Serialize, Deserialize)]
pub struct Job {
    pub target: SocketAddr,
    pub ca_file: PathBuf,
    pub server_name: String,
    pub username: String,
    pub password: String,
    pub warmup: usize,
    pub probes: usize,
    pub concurrency: usize,
    /// Probes started per second, whatever the previous ones are doing (0: back to
    /// back, `concurrency` at a time), like a schedule spreads them.
    pub rate: f64,
}

/// Everything one probe needs, built once and shared by every probe of the job.
pub(crate) struct Probe {
    addr: SocketAddr,
    connector: TlsConnector,
    name: ServerName<'static>,
    /// The whole AUTH PLAIN command line.
    auth: String,
}

impl Probe {
    pub(crate) fn new(job: &Job) -> Res<Probe> {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", job.username, job.password));
        Ok(Probe {
            addr: job.target,
            connector: TlsConnector::from(client_config(&job.ca_file)?),
            name: ServerName::try_from(job.server_name.clone()).ctx("server name")?,
            auth: format!("AUTH PLAIN {token}\r\n"),
        })
    }
}

pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("baseline: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Res<Value> {
    let path = args.first().ok_or("usage: smtp-bench --baseline-client JOB.json")?;
    let job: Job = serde_json::from_str(&std::fs::read_to_string(path).ctx(path)?).ctx("job")?;
    let probe = Arc::new(Probe::new(&job)?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ctx("runtime")?;
    rt.block_on(async {
        batch(&probe, job.warmup, job.concurrency).await;
        let cpu0 = sys::self_cpu();
        let t0 = Instant::now();
        let (ok, first_error) = if job.rate > 0.0 {
            paced(&probe, job.probes, job.rate).await
        } else {
            batch(&probe, job.probes, job.concurrency).await
        };
        let cpu = sys::self_cpu() - cpu0;
        let wall = t0.elapsed();
        Ok(json!({
            "probes": job.probes, "ok": ok, "cpu_s": cpu.as_secs_f64(),
            "wall_s": wall.as_secs_f64(), "first_error": first_error,
        }))
    })
}

/// One client configuration for every probe: the CA file's roots, no resumption.
fn client_config(ca: &Path) -> Res<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).ctx("CA file")? {
        roots.add(cert.ctx("CA file")?).ctx("CA file")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ctx("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Like the exporter: every probe does a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Runs `n` probes, `concurrency` at a time; returns the successes and the first error.
async fn batch(probe: &Arc<Probe>, n: usize, concurrency: usize) -> (usize, Option<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (probe, next) = (probe.clone(), next.clone());
        tasks.spawn(async move {
            let (mut ok, mut first_error) = (0usize, None);
            while next.fetch_add(1, Ordering::Relaxed) < n {
                match tokio::time::timeout(Duration::from_secs(10), once(&probe)).await {
                    Ok(Ok(())) => ok += 1,
                    Ok(Err(e)) => {
                        first_error.get_or_insert(e);
                    }
                    Err(_) => {
                        first_error.get_or_insert_with(|| "probe timeout".to_owned());
                    }
                }
            }
            (ok, first_error)
        });
    }
    let (mut ok, mut first_error) = (0, None);
    while let Some(done) = tasks.join_next().await {
        if let Ok((k, e)) = done {
            ok += k;
            if first_error.is_none() {
                first_error = e;
            }
        }
    }
    (ok, first_error)
}

/// Starts `n` probes at `rate` per second (at most 64 open at once).
async fn paced(probe: &Arc<Probe>, n: usize, rate: f64) -> (usize, Option<String>) {
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let (mut ok, mut first_error) = (0usize, None::<String>);
    let mut tally =
        |done: Result<Result<Res<()>, tokio::time::error::Elapsed>, tokio::task::JoinError>| match done {
            Ok(Ok(Ok(()))) => ok += 1,
            Ok(Ok(Err(e))) => {
                first_error.get_or_insert(e);
            }
            _ => {
                first_error.get_or_insert_with(|| "probe timeout".to_owned());
            }
        };
    for i in 0..n {
        tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
        while tasks.len() >= 64 {
            if let Some(done) = tasks.join_next().await {
                tally(done);
            }
        }
        let probe = probe.clone();
        tasks.spawn(async move { tokio::time::timeout(Duration::from_secs(10), once(&probe)).await });
        while let Some(done) = tasks.try_join_next() {
            tally(done);
        }
    }
    while let Some(done) = tasks.join_next().await {
        tally(done);
    }
    (ok, first_error)
}

/// One probe: connect, greeting, EHLO, STARTTLS, handshake, EHLO, AUTH PLAIN, QUIT.
pub(crate) async fn once(p: &Probe) -> Res<()> {
    let mut tcp = tokio::net::TcpStream::connect(p.addr).await.ctx("connect")?;
    let _ = tcp.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    expect(&mut tcp, &mut buf, 220, "greeting").await?;
    let ehlo = command(&mut tcp, &mut buf, b"EHLO bench.invalid\r\n", 250, "EHLO").await?;
    if !advertises(&ehlo, "STARTTLS") {
        return Err("STARTTLS not advertised".into());
    }
    command(&mut tcp, &mut buf, b"STARTTLS\r\n", 220, "STARTTLS").await?;
    let mut tls = p.connector.connect(p.name.clone(), tcp).await.ctx("TLS handshake")?;
    buf.clear();
    command(&mut tls, &mut buf, b"EHLO bench.invalid\r\n", 250, "EHLO in TLS").await?;
    command(&mut tls, &mut buf, p.auth.as_bytes(), 235, "AUTH").await?;
    command(&mut tls, &mut buf, b"QUIT\r\n", 221, "QUIT").await?;
    let _ = tls.shutdown().await;
    Ok(())
}

/// Sends one command line and reads its reply, which must have `code`.
async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    line: &[u8],
    code: u16,
    what: &str,
) -> Res<Reply> {
    s.write_all(line).await.ctx(what)?;
    s.flush().await.ctx(what)?;
    expect(s, buf, code, what).await
}

/// Reads one whole reply with the exporter's parser, which bounds it, and checks its code.
async fn expect<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>, code: u16, what: &str) -> Res<Reply> {
    loop {
        if let Some((reply, used)) = parse_reply(buf).ctx(what)? {
            buf.drain(..used);
            return if reply.code == code {
                Ok(reply)
            } else {
                Err(format!("{what}: {} {}", reply.code, reply.lines.join(" / ")))
            };
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ctx(what)?;
        if n == 0 {
            return Err(format!("{what}: connection closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// True when an EHLO reply advertises `keyword` (its lines after the first).
fn advertises(ehlo: &Reply, keyword: &str) -> bool {
    ehlo.lines
        .iter()
        .skip(1)
        .any(|l| l.split_whitespace().next().is_some_and(|k| k.eq_ignore_ascii_case(keyword)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reply_split_across_reads_is_read_whole_and_alone() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            server.write_all(b"250-localhost greets you\r\n250-STAR").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            server.write_all(b"TTLS\r\n250 8BITMIME\r\n221 bye\r\n").await.unwrap();
            server
        });
        let mut buf = Vec::new();
        let reply = expect(&mut client, &mut buf, 250, "EHLO").await.unwrap();
        assert_eq!(reply.lines, ["localhost greets you", "STARTTLS", "8BITMIME"]);
        assert!(advertises(&reply, "starttls"));
        assert!(!advertises(&reply, "localhost"), "the first line names the server, it advertises nothing");
        assert_eq!(buf, b"221 bye\r\n");
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn an_unexpected_code_is_an_error_with_the_reply() {
        let mut stream: &[u8] = b"535 5.7.8 authentication failed\r\n";
        let err = expect(&mut stream, &mut Vec::new(), 235, "AUTH").await.unwrap_err();
        assert_eq!(err, "AUTH: 535 5.7.8 authentication failed");
    }

    #[tokio::test]
    async fn bytes_that_are_not_a_reply_are_an_error() {
        let mut stream: &[u8] = b"SSH-2.0-OpenSSH_9.2\r\n";
        let err = expect(&mut stream, &mut Vec::new(), 220, "greeting").await.unwrap_err();
        assert_eq!(err, "greeting: malformed reply line");
    }

    #[tokio::test]
    async fn a_reply_without_end_is_cut_off_by_the_parser_bound() {
        let endless = "250-x\r\n".repeat(4000);
        let mut stream: &[u8] = endless.as_bytes();
        let err = expect(&mut stream, &mut Vec::new(), 250, "EHLO").await.unwrap_err();
        assert!(err.starts_with("EHLO: reply longer than"), "{err}");
    }
}
