//! `smtp-bench`: performance and scale benchmark of smtp_exporter.
//!
//! ```sh
//! cargo run --release -p smtp-bench -- --quick            # about 1.5 minutes
//! cargo run --release -p smtp-bench -- --json bench.json  # full run, about 5 minutes
//! ```
//!
//! In one run it measures, each against a baseline measured in the same run:
//!
//! 1. CPU per probe (STARTTLS + AUTH PLAIN, full certificate verification): the real
//!    exporter binary through `/probe` and on its own schedule, a minimal hand-written
//!    tokio + tokio-rustls client, and blackbox_exporter (when installed, without AUTH);
//! 2. scale: a simulated fleet (many loopback listeners with configurable delays and TLS)
//!    probed on a schedule: CPU, RSS, the spread of probe starts, `/metrics` latency by size;
//! 3. accuracy: the reported `banner` phase against delays injected by the responder.
//!
//! The SMTP responder and the baseline client are this same binary re-executed with
//! `--responder` / `--baseline-client`, so that each subject's CPU is read from its own
//! process and never includes the responder's. Every child dies with the bench
//! (PR_SET_PDEATHSIG, and an explicit stop on every exit path). Only loopback addresses
//! are used; every loop is bounded in count or in time. See BENCHMARKS.md.

// serde_json's json! macro recurses once per key; the scale results are one big object.
#![recursion_limit = "256"]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

type Res<T> = Result<T, String>;

/// Adds what was being done to an error.
trait Context<T> {
    fn ctx(self, what: &str) -> Res<T>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--responder") => responder::main(&args[2..]),
        Some("--baseline-client") => baseline::main(&args[2..]),
        _ => bench::main(),
    }
}

// ---------------------------------------------------------------------------------------
// Operating-system helpers.

mod sys {
    use std::time::Duration;

    /// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the machine, so
    /// the responder's accept times and the bench's windows can be compared.
    pub fn mono_ns() -> u64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// Clock ticks per second of /proc/<pid>/stat and /proc/stat.
    pub fn clk_tck() -> f64 {
        // SAFETY: sysconf has no memory-safety preconditions.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            t as f64
        } else {
            100.0
        }
    }

    /// Raises the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) in force.
    pub fn raise_nofile() -> (u64, u64) {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `lim` is a valid rlimit for both calls.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                    lim = want;
                }
            }
        }
        // rlim_t is not u64 on every target.
        #[allow(clippy::unnecessary_cast)]
        (lim.rlim_cur as u64, lim.rlim_max as u64)
    }

    /// User + system CPU time of this process (microsecond resolution).
    pub fn self_cpu() -> Duration {
        // SAFETY: an all-zero rusage is valid, and getrusage writes into it.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }

    /// utime + stime of a whole process (every thread, live or exited), in clock ticks.
    pub fn proc_ticks(pid: u32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is field 3 (state), so utime (14) is [11] and stime (15) is [12].
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    }

    /// A `kB` line of /proc/<pid>/status (VmRSS, VmHWM, ...), in KiB.
    pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status.lines().find_map(|l| {
            l.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok()
        })
    }

    /// A plain number line of /proc/<pid>/status (Threads, ...).
    pub fn proc_status_value(pid: u32, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().parse().ok())
    }

    /// (busy, total) jiffies of the whole machine, from /proc/stat.
    pub fn system_jiffies() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let values: Vec<u64> =
            stat.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        if values.len() < 5 {
            return None;
        }
        let total: u64 = values.iter().take(8).sum();
        let idle = values[3] + values[4];
        Some((total - idle, total))
    }

    /// Sleeps until `deadline` to within a few microseconds: a plain sleep for all but the
    /// last 200 µs, then a spin. Used only by the accuracy responder, one connection at a
    /// time.
    pub fn precise_sleep_until(deadline: std::time::Instant) {
        loop {
            let now = std::time::Instant::now();
            if now >= deadline {
                return;
            }
            let left = deadline - now;
            if left > Duration::from_micros(300) {
                std::thread::sleep(left - Duration::from_micros(200));
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Child processes: stopped on drop, and killed by the kernel if the bench dies.

struct Proc {
    name: String,
    child: Option<Child>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Res<Proc> {
        // SAFETY: prctl is async-signal-safe and the closure does not allocate.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Proc { name: name.to_owned(), child: Some(child) })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// SIGTERM, up to 5 s to exit, then SIGKILL; always reaps.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(None) = child.try_wait() {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if !matches!(child.try_wait(), Ok(None)) {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            eprintln!("  ({} did not stop on SIGTERM; killing it)", self.name);
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// HTTP: testkit's client (keep-alive, Content-Length and chunked bodies).

use testkit::http::Client as Http;

// ---------------------------------------------------------------------------------------
// The SMTP responder (child process): EHLO, STARTTLS, AUTH PLAIN/LOGIN, QUIT.

mod responder {
    use super::*;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// Listeners that behave alike.
    #[derive(Serialize, Deserialize, Clone, Debug)]
    pub struct Group {
        /// Loopback addresses to listen on; each gets `per_addr` listeners on free ports.
        pub addrs: Vec<String>,
        pub per_addr: usize,
        /// Delay between accepting and sending the greeting.
        pub banner_delay_us: u64,
        /// Delay before every later reply.
        pub reply_delay_us: u64,
        /// Offer STARTTLS (and AUTH only inside TLS); otherwise AUTH in the clear.
        pub tls: bool,
    }

    #[derive(Serialize, Deserialize, Clone, Debug)]
    pub struct Config {
        pub cert: PathBuf,
        pub key: PathBuf,
        pub groups: Vec<Group>,
        /// Thread per connection with a busy-wait-precise banner delay, and a record of the
        /// actual delay of every greeting (for the accuracy test, one probe at a time).
        pub precise: bool,
        /// The responder exits by itself after this long.
        pub lifetime_s: u64,
    }

    const MAX_COMMANDS: usize = 64;
    const MAX_LINE: usize = 4096;
    const SESSION_LIMIT: Duration = Duration::from_secs(30);
    const MAX_PRECISE_THREADS: usize = 64;
    const BANNER: &[u8] = b"220 localhost ESMTP smtp-bench responder\r\n";
    const MAX_RECORDED: usize = 500_000;

    #[derive(Default)]
    struct Stats {
        accepted: AtomicU64,
        completed: AtomicU64,
        failed: AtomicU64,
        tls: AtomicU64,
        auth: AtomicU64,
        /// Accepts per CLOCK_MONOTONIC second.
        per_sec: Mutex<BTreeMap<u64, u64>>,
        /// Accept-to-greeting-written time of each connection, in order (capped).
        banner_delays_ns: Mutex<Vec<u64>>,
        first_error: Mutex<Option<String>>,
    }

    impl Stats {
        fn note_accept(&self) {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            let sec = sys::mono_ns() / 1_000_000_000;
            *self.per_sec.lock().expect("stats lock").entry(sec).or_default() += 1;
        }

        fn note_banner(&self, took: Duration) {
            let mut v = self.banner_delays_ns.lock().expect("stats lock");
            if v.len() < MAX_RECORDED {
                v.push(took.as_nanos() as u64);
            }
        }

        fn snapshot(&self) -> Value {
            let per_sec: Vec<[u64; 2]> =
                self.per_sec.lock().expect("stats lock").iter().map(|(s, c)| [*s, *c]).collect();
            json!({
                "accepted": self.accepted.load(Ordering::Relaxed),
                "completed": self.completed.load(Ordering::Relaxed),
                "failed": self.failed.load(Ordering::Relaxed),
                "tls": self.tls.load(Ordering::Relaxed),
                "auth": self.auth.load(Ordering::Relaxed),
                "per_sec": per_sec,
                "banner_delays_ns": *self.banner_delays_ns.lock().expect("stats lock"),
                "first_error": *self.first_error.lock().expect("stats lock"),
            })
        }

        fn reset(&self) {
            for c in [&self.accepted, &self.completed, &self.failed, &self.tls, &self.auth] {
                c.store(0, Ordering::Relaxed);
            }
            self.per_sec.lock().expect("stats lock").clear();
            self.banner_delays_ns.lock().expect("stats lock").clear();
            *self.first_error.lock().expect("stats lock") = None;
        }
    }

    struct Shared {
        acceptor: tokio_rustls::TlsAcceptor,
        stats: Stats,
        threads: AtomicUsize,
    }

    #[derive(Clone, Copy)]
    struct Behaviour {
        banner_delay: Duration,
        reply_delay: Duration,
        tls: bool,
    }

    impl Behaviour {
        fn of(g: &Group) -> Behaviour {
            Behaviour {
                banner_delay: Duration::from_micros(g.banner_delay_us),
                reply_delay: Duration::from_micros(g.reply_delay_us),
                tls: g.tls,
            }
        }
    }

    pub fn main(args: &[String]) -> ExitCode {
        match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("responder: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn run(args: &[String]) -> Res<()> {
        let path = args.first().ok_or("usage: smtp-bench --responder CONFIG.json")?;
        let text = std::fs::read_to_string(path).ctx(path)?;
        let config: Config = serde_json::from_str(&text).ctx("responder config")?;
        let (nofile, _) = sys::raise_nofile();
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&config.cert, &config.key)?);
        let mut listeners = Vec::new();
        for (gi, g) in config.groups.iter().enumerate() {
            for addr in &g.addrs {
                let ip: std::net::IpAddr = addr.parse().ctx(addr)?;
                if !ip.is_loopback() {
                    return Err(format!("{addr} is not a loopback address"));
                }
                for _ in 0..g.per_addr {
                    let l = std::net::TcpListener::bind((ip, 0)).ctx(&format!("bind {addr}"))?;
                    listeners.push((l, gi));
                }
            }
        }
        let list: Vec<Value> = listeners
            .iter()
            .map(|(l, gi)| json!({"addr": l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "group": gi}))
            .collect();
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", json!({"listeners": list, "nofile": nofile})).ctx("stdout")?;
            out.flush().ctx("stdout")?;
        }
        let shared = Arc::new(Shared { acceptor, stats: Stats::default(), threads: AtomicUsize::new(0) });
        {
            let shared = shared.clone();
            thread::spawn(move || control(&shared));
        }
        let lifetime = Duration::from_secs(config.lifetime_s.max(1));
        if config.precise {
            for (l, gi) in listeners {
                let (b, shared) = (Behaviour::of(&config.groups[gi]), shared.clone());
                thread::spawn(move || precise_accept_loop(l, b, shared));
            }
            thread::sleep(lifetime);
            return Ok(());
        }
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().ctx("runtime")?;
        rt.block_on(async move {
            for (l, gi) in listeners {
                l.set_nonblocking(true).ctx("nonblocking")?;
                let l = tokio::net::TcpListener::from_std(l).ctx("listener")?;
                tokio::spawn(accept_loop(l, Behaviour::of(&config.groups[gi]), shared.clone()));
            }
            tokio::time::sleep(lifetime).await;
            Ok::<(), String>(())
        })?;
        eprintln!("responder: lifetime of {}s reached, exiting", config.lifetime_s);
        Ok(())
    }

    /// Commands on standard input: `stats`, `reset`, `quit`. End of input ends the process,
    /// so the responder never outlives the bench.
    fn control(shared: &Shared) {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            let answer = match line.trim() {
                "stats" => shared.stats.snapshot(),
                "reset" => {
                    shared.stats.reset();
                    json!({"ok": true})
                }
                "quit" => break,
                other => json!({"error": format!("unknown command {other:?}")}),
            };
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{answer}");
            let _ = out.flush();
        }
        std::process::exit(0);
    }

    fn server_config(cert: &Path, key: &Path) -> Res<Arc<rustls::ServerConfig>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .ctx("certificate")?
            .collect::<Result<_, _>>()
            .ctx("certificate")?;
        let key = PrivateKeyDer::from_pem_file(key).ctx("private key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ctx("TLS versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .ctx("server certificate")?;
        Ok(Arc::new(config))
    }

    async fn accept_loop(listener: tokio::net::TcpListener, b: Behaviour, shared: Arc<Shared>) {
        // Ends with the process (its lifetime, or the end of standard input).
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    let accepted = Instant::now();
                    shared.stats.note_accept();
                    let shared = shared.clone();
                    tokio::spawn(
                        async move { finish(&shared, session(tcp, accepted, b, &shared, false)).await },
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Precise mode: the greeting is delayed and written from the accept thread itself
    /// (blocking, busy-wait precise), then a thread of its own serves the rest.
    fn precise_accept_loop(listener: std::net::TcpListener, b: Behaviour, shared: Arc<Shared>) {
        for conn in listener.incoming() {
            let Ok(mut tcp) = conn else {
                thread::sleep(Duration::from_millis(10));
                continue;
            };
            let accepted = Instant::now();
            shared.stats.note_accept();
            let _ = tcp.set_nodelay(true);
            sys::precise_sleep_until(accepted + b.banner_delay);
            if tcp.write_all(BANNER).is_err() {
                continue;
            }
            shared.stats.note_banner(accepted.elapsed());
            if shared.threads.load(Ordering::Relaxed) >= MAX_PRECISE_THREADS {
                continue;
            }
            shared.threads.fetch_add(1, Ordering::Relaxed);
            let shared = shared.clone();
            thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(async {
                        if tcp.set_nonblocking(true).is_ok() {
                            if let Ok(tcp) = tokio::net::TcpStream::from_std(tcp) {
                                finish(&shared, session(tcp, accepted, b, &shared, true)).await;
                            }
                        }
                    });
                }
                shared.threads.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }

    async fn finish(shared: &Shared, session: impl std::future::Future<Output = Res<()>>) {
        let outcome = match tokio::time::timeout(SESSION_LIMIT, session).await {
            Ok(r) => r,
            Err(_) => Err("session time limit".into()),
        };
        match outcome {
            Ok(()) => {
                shared.stats.completed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                shared.stats.failed.fetch_add(1, Ordering::Relaxed);
                shared.stats.first_error.lock().expect("stats lock").get_or_insert(e);
            }
        }
    }

    enum End {
        Quit,
        Closed,
        Upgrade,
    }

    async fn session(
        mut tcp: tokio::net::TcpStream,
        accepted: Instant,
        b: Behaviour,
        shared: &Shared,
        banner_sent: bool,
    ) -> Res<()> {
        let _ = tcp.set_nodelay(true);
        if !banner_sent {
            pause_until(accepted + b.banner_delay).await;
            tcp.write_all(BANNER).await.ctx("greeting")?;
            shared.stats.note_banner(accepted.elapsed());
        }
        let mut buf = Vec::with_capacity(512);
        match commands(&mut tcp, &mut buf, b, shared, false).await? {
            End::Upgrade => {
                let mut tls = shared.acceptor.accept(tcp).await.ctx("TLS handshake")?;
                shared.stats.tls.fetch_add(1, Ordering::Relaxed);
                let mut buf = Vec::with_capacity(512);
                if let End::Upgrade = commands(&mut tls, &mut buf, b, shared, true).await? {
                    return Err("STARTTLS inside TLS".into());
                }
                let _ = tls.shutdown().await;
            }
            End::Quit => {
                let _ = tcp.shutdown().await;
            }
            End::Closed => {}
        }
        Ok(())
    }

    async fn pause_until(deadline: Instant) {
        if deadline > Instant::now() {
            tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
        }
    }

    async fn pause(d: Duration) {
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    fn ehlo_reply(offer_tls: bool, offer_auth: bool) -> String {
        let mut r = String::from("250-localhost greets you\r\n250-PIPELINING\r\n250-SIZE 36700160\r\n");
        if offer_tls {
            r.push_str("250-STARTTLS\r\n");
        }
        if offer_auth {
            r.push_str("250-AUTH PLAIN LOGIN\r\n");
        }
        r.push_str("250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n");
        r
    }

    async fn send<S: AsyncWrite + Unpin>(s: &mut S, delay: Duration, reply: &[u8]) -> Res<()> {
        pause(delay).await;
        s.write_all(reply).await.ctx("write")?;
        s.flush().await.ctx("flush")
    }

    async fn commands<S: AsyncRead + AsyncWrite + Unpin>(
        s: &mut S,
        buf: &mut Vec<u8>,
        b: Behaviour,
        shared: &Shared,
        in_tls: bool,
    ) -> Res<End> {
        let offer_tls = b.tls && !in_tls;
        let offer_auth = in_tls || !b.tls;
        for _ in 0..MAX_COMMANDS {
            let Some(line) = read_line(s, buf).await? else { return Ok(End::Closed) };
            let mut words = line.split_whitespace();
            let verb = words.next().unwrap_or("").to_ascii_uppercase();
            let (reply, end): (String, Option<End>) = match verb.as_str() {
                "EHLO" => (ehlo_reply(offer_tls, offer_auth), None),
                "HELO" => ("250 localhost\r\n".into(), None),
                "STARTTLS" if offer_tls => ("220 2.0.0 Ready to start TLS\r\n".into(), Some(End::Upgrade)),
                "AUTH" if offer_auth => {
                    let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
                    let initial = words.next().is_some();
                    let prompts: &[&[u8]] = match (mechanism.as_str(), initial) {
                        ("PLAIN", true) => &[],
                        ("PLAIN", false) => &[b"334 \r\n"],
                        ("LOGIN", _) => &[b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n"],
                        _ => &[],
                    };
                    if mechanism != "PLAIN" && mechanism != "LOGIN" {
                        ("504 5.5.4 Unrecognized authentication type\r\n".into(), None)
                    } else {
                        for prompt in prompts {
                            send(s, b.reply_delay, prompt).await?;
                            if read_line(s, buf).await?.is_none() {
                                return Ok(End::Closed);
                            }
                        }
                        shared.stats.auth.fetch_add(1, Ordering::Relaxed);
                        ("235 2.7.0 Authentication successful\r\n".into(), None)
                    }
                }
                "QUIT" => ("221 2.0.0 Bye\r\n".into(), Some(End::Quit)),
                "NOOP" | "RSET" => ("250 2.0.0 OK\r\n".into(), None),
                _ => ("502 5.5.2 Command not recognized\r\n".into(), None),
            };
            send(s, b.reply_delay, reply.as_bytes()).await?;
            if let Some(end) = end {
                if matches!(end, End::Upgrade) && !buf.is_empty() {
                    return Err("bytes pipelined after STARTTLS".into());
                }
                return Ok(end);
            }
        }
        Err("too many commands".into())
    }

    async fn read_line<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Res<Option<String>> {
        loop {
            if let Some(pos) = buf.iter().position(|&c| c == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line);
                return Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()));
            }
            if buf.len() > MAX_LINE {
                return Err("command line too long".into());
            }
            let mut chunk = [0u8; 2048];
            let n = s.read(&mut chunk).await.ctx("read")?;
            if n == 0 {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The baseline (child process): the same SMTP walk, hand-written, no metrics, no scheduling.

mod baseline {
    use super::*;
    use base64::Engine;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio_rustls::TlsConnector;

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

    struct Probe {
        addr: SocketAddr,
        connector: TlsConnector,
        name: ServerName<'static>,
        auth: String,
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
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", job.username, job.password));
        let probe = Arc::new(Probe {
            addr: job.target,
            connector: TlsConnector::from(client_config(&job.ca_file)?),
            name: ServerName::try_from(job.server_name.clone()).ctx("server name")?,
            auth: format!("AUTH PLAIN {token}\r\n"),
        });
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

    async fn once(p: &Probe) -> Res<()> {
        let mut tcp = tokio::net::TcpStream::connect(p.addr).await.ctx("connect")?;
        let _ = tcp.set_nodelay(true);
        let mut buf = Vec::with_capacity(1024);
        expect(&mut tcp, &mut buf, 220, "greeting").await?;
        let ehlo = command(&mut tcp, &mut buf, b"EHLO bench.invalid\r\n", 250, "EHLO").await?;
        if !ehlo.contains("STARTTLS") {
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

    async fn command<S: AsyncRead + AsyncWrite + Unpin>(
        s: &mut S,
        buf: &mut Vec<u8>,
        line: &[u8],
        code: u16,
        what: &str,
    ) -> Res<String> {
        s.write_all(line).await.ctx(what)?;
        s.flush().await.ctx(what)?;
        expect(s, buf, code, what).await
    }

    /// Reads one whole reply and checks its code; returns its text.
    async fn expect<S: AsyncRead + Unpin>(
        s: &mut S,
        buf: &mut Vec<u8>,
        code: u16,
        what: &str,
    ) -> Res<String> {
        loop {
            if let Some((got, end)) = complete_reply(buf) {
                let text = String::from_utf8_lossy(&buf[..end]).into_owned();
                buf.drain(..end);
                return if got == code { Ok(text) } else { Err(format!("{what}: {}", text.trim_end())) };
            }
            if buf.len() > 16 * 1024 {
                return Err(format!("{what}: reply too long"));
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.ctx(what)?;
            if n == 0 {
                return Err(format!("{what}: connection closed"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The code and length of the first complete reply in `buf` (its last line has a space
    /// after the code).
    fn complete_reply(buf: &[u8]) -> Option<(u16, usize)> {
        let mut start = 0;
        while let Some(off) = buf[start..].iter().position(|&c| c == b'\n') {
            let line = &buf[start..start + off];
            let end = start + off + 1;
            if line.len() >= 3 && (line.len() == 3 || line[3] != b'-') {
                let code = std::str::from_utf8(&line[..3]).ok()?.parse().ok()?;
                return Some((code, end));
            }
            start = end;
        }
        None
    }
}

// ---------------------------------------------------------------------------------------
// The benchmark itself.

mod bench {
    use super::*;
    use clap::{Parser, ValueEnum};

    /// Benchmarks smtp_exporter against baselines measured in the same run: CPU per probe,
    /// a simulated fleet, and timing accuracy. Loopback traffic only.
    #[derive(Parser, Debug)]
    #[command(name = "smtp-bench", version)]
    pub struct Opts {
        /// Short run (about 1.5 minutes): fewer probes and samples, 2,500 specs at 15 s
        /// instead of 10,000 at 60 s (the same probe rate); /metrics at 10,000 specs is then
        /// extrapolated.
        #[arg(long)]
        quick: bool,
        /// Also write machine-readable results to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// The exporter binary [default: smtp_exporter next to this binary, built first].
        #[arg(long, value_name = "PATH")]
        exporter: Option<PathBuf>,
        /// Do not run `cargo build -p smtp_exporter` before starting.
        #[arg(long)]
        no_build: bool,
        /// blackbox_exporter binary [default: prometheus-blackbox-exporter or blackbox_exporter on PATH].
        #[arg(long, value_name = "PATH")]
        blackbox: Option<PathBuf>,
        /// Leave blackbox_exporter out.
        #[arg(long)]
        skip_blackbox: bool,
        /// Parts to run.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "cpu,scale,accuracy")]
        sections: Vec<Section>,
        /// Key type of the test CA and the responder's certificate.
        #[arg(long, value_enum, default_value = "rsa")]
        key: KeyType,
        /// Probes per subject in the CPU comparison [full: 2000, quick: 300].
        #[arg(long)]
        probes: Option<usize>,
        /// Probes in flight at once in the CPU comparison.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// Specs of the scheduled-path CPU measurement.
        #[arg(long, default_value_t = 500)]
        sched_specs: usize,
        /// Interval of the scheduled-path specs, seconds.
        #[arg(long, default_value_t = 10)]
        sched_interval: u64,
        /// Window of the scheduled-path measurement, seconds [full: 30, quick: 10].
        #[arg(long)]
        sched_window: Option<u64>,
        /// Specs in the simulated fleet [full: 10000, quick: 2500].
        #[arg(long)]
        fleet_specs: Option<usize>,
        /// Probe interval of the fleet, seconds [full: 60, quick: 15].
        #[arg(long)]
        fleet_interval: Option<u64>,
        /// Steady-state window measured, seconds [default: one interval].
        #[arg(long)]
        fleet_window: Option<u64>,
        /// Loopback addresses the fleet listens on (127.0.1.1, 127.0.1.2, ...).
        #[arg(long, default_value_t = 100)]
        fleet_addrs: usize,
        /// Listening ports per fleet address.
        #[arg(long, default_value_t = 10)]
        fleet_ports: usize,
        /// Delay before the fleet's greeting, milliseconds.
        #[arg(long, default_value_t = 20)]
        fleet_banner_delay_ms: u64,
        /// Delay before each later reply of the fleet, milliseconds.
        #[arg(long, default_value_t = 2)]
        fleet_reply_delay_ms: u64,
        /// Plain-SMTP fleet (no STARTTLS, no AUTH) instead of STARTTLS + AUTH.
        #[arg(long)]
        fleet_plain: bool,
        /// Smaller exporters for the /metrics latency curve; the fleet is the largest point.
        #[arg(long, value_delimiter = ',', default_value = "100,1000")]
        scrape_sizes: Vec<usize>,
        /// Scrapes per size; the median is reported [full: 7, quick: 5].
        #[arg(long)]
        scrapes: Option<usize>,
        /// Injected greeting delays, milliseconds.
        #[arg(long, value_delimiter = ',', default_value = "0,10,100")]
        accuracy_delays: Vec<u64>,
        /// Probes per injected delay [full: 300, quick: 100].
        #[arg(long)]
        accuracy_samples: Option<usize>,
        /// Keep the temporary directory (configurations, certificates, logs).
        #[arg(long)]
        keep_temp: bool,
    }

    #[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Section {
        Cpu,
        Scale,
        Accuracy,
    }

    #[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
    pub enum KeyType {
        /// RSA 2048 (what most mail servers present).
        Rsa,
        /// ECDSA P-256.
        Ec,
    }

    /// The settings in force, defaults filled and bounds applied.
    struct Plan {
        quick: bool,
        probes: usize,
        warmup: usize,
        concurrency: usize,
        sched_specs: usize,
        sched_interval: u64,
        sched_window: u64,
        fleet_specs: usize,
        fleet_interval: u64,
        fleet_window: u64,
        fleet_addrs: usize,
        fleet_ports: usize,
        fleet_banner_ms: u64,
        fleet_reply_ms: u64,
        fleet_tls: bool,
        scrape_sizes: Vec<usize>,
        scrapes: usize,
        acc_delays: Vec<u64>,
        acc_samples: usize,
    }

    impl Plan {
        fn new(o: &Opts, nofile: u64) -> Res<Plan> {
            let q = o.quick;
            let fleet_interval = o.fleet_interval.unwrap_or(if q { 15 } else { 60 }).clamp(1, 3600);
            let plan = Plan {
                quick: q,
                probes: o.probes.unwrap_or(if q { 300 } else { 2000 }).clamp(10, 1_000_000),
                warmup: if q { 20 } else { 50 },
                concurrency: o.concurrency.clamp(1, 32),
                sched_specs: o.sched_specs.clamp(1, 100_000),
                sched_interval: o.sched_interval.clamp(1, 3600),
                sched_window: o.sched_window.unwrap_or(if q { 10 } else { 30 }).clamp(1, 3600),
                fleet_specs: o.fleet_specs.unwrap_or(if q { 2500 } else { 10_000 }).clamp(1, 100_000),
                fleet_interval,
                fleet_window: o.fleet_window.unwrap_or(fleet_interval).clamp(1, 3600),
                fleet_addrs: o.fleet_addrs.clamp(1, 250 * 250),
                fleet_ports: o.fleet_ports.clamp(1, 1000),
                fleet_banner_ms: o.fleet_banner_delay_ms.min(60_000),
                fleet_reply_ms: o.fleet_reply_delay_ms.min(60_000),
                fleet_tls: !o.fleet_plain,
                scrape_sizes: o.scrape_sizes.iter().copied().filter(|&s| s > 0).collect(),
                scrapes: o.scrapes.unwrap_or(if q { 5 } else { 7 }).clamp(1, 100),
                acc_delays: o.accuracy_delays.iter().map(|&d| d.min(10_000)).collect(),
                acc_samples: o.accuracy_samples.unwrap_or(if q { 100 } else { 300 }).clamp(5, 100_000),
            };
            let listeners = (plan.fleet_addrs * plan.fleet_ports) as u64;
            if listeners + 1024 > nofile {
                return Err(format!(
                    "{listeners} fleet listeners do not fit the open-file limit {nofile}; lower --fleet-addrs or --fleet-ports"
                ));
            }
            Ok(plan)
        }
    }

    /// What every section needs.
    struct Ctx {
        exe: PathBuf,
        exporter_bin: PathBuf,
        blackbox_bin: Option<PathBuf>,
        tmp: PathBuf,
        certs: Certs,
        plan: Plan,
        tck: f64,
    }

    struct Certs {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
        describe: &'static str,
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Status {
        Pass,
        Miss,
        Skip,
        /// Measured for context; no target.
        Info,
    }

    struct Verdict {
        target: String,
        measured: String,
        goal: String,
        status: Status,
    }

    #[derive(Default)]
    struct Report {
        json: serde_json::Map<String, Value>,
        verdicts: Vec<Verdict>,
    }

    impl Report {
        fn info(&mut self, target: &str, measured: String) {
            self.verdicts.push(Verdict {
                target: target.to_owned(),
                measured,
                goal: "-".into(),
                status: Status::Info,
            });
        }

        fn verdict(&mut self, target: &str, measured: String, goal: &str, pass: Option<bool>) {
            let status = match pass {
                Some(true) => Status::Pass,
                Some(false) => Status::Miss,
                None => Status::Skip,
            };
            self.verdicts.push(Verdict {
                target: target.to_owned(),
                measured,
                goal: goal.to_owned(),
                status,
            });
        }
    }

    /// The temporary directory, removed at the end unless --keep-temp.
    struct TempDir {
        path: PathBuf,
        keep: bool,
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            if self.keep {
                eprintln!("kept {}", self.path.display());
            } else {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    pub fn main() -> ExitCode {
        let opts = Opts::parse();
        match run(&opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("smtp-bench: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn progress(msg: &str) {
        eprintln!("[{}] {msg}", clock());
    }

    fn clock() -> String {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        format!("{:02}:{:02}:{:02}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60)
    }

    fn out(line: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    fn run(opts: &Opts) -> Res<()> {
        let (nofile, nofile_hard) = sys::raise_nofile();
        let plan = Plan::new(opts, nofile)?;
        let started = Instant::now();
        let tmp_path = std::env::temp_dir().join(format!("smtp-bench-{}", std::process::id()));
        std::fs::create_dir_all(&tmp_path).ctx("temporary directory")?;
        let tmp = TempDir { path: tmp_path, keep: opts.keep_temp };
        let exe = std::env::current_exe().ctx("current_exe")?;
        let exporter_bin = locate_exporter(opts, &exe)?;
        let blackbox_bin = if opts.skip_blackbox { None } else { find_blackbox(opts) };
        let certs = make_certs(&tmp.path, opts.key)?;
        let ctx =
            Ctx { exe, exporter_bin, blackbox_bin, tmp: tmp.path.clone(), certs, plan, tck: sys::clk_tck() };
        let mut report = Report::default();

        let machine = machine_info(&ctx, nofile, nofile_hard);
        out("smtp-bench: smtp_exporter performance and scale");
        out(&format!("  command: {}", std::env::args().collect::<Vec<_>>().join(" ")));
        out(&format!(
            "  mode: {}",
            if ctx.plan.quick { "QUICK (reduced sizes; see the notes in each section)" } else { "full" }
        ));
        for key in
            ["cpu_model", "nproc", "kernel", "rustc", "exporter_version", "blackbox_version", "loadavg_start"]
        {
            out(&format!(
                "  {key}: {}",
                machine[key].as_str().map(str::to_owned).unwrap_or(machine[key].to_string())
            ));
        }
        out(&format!(
            "  open files: soft {nofile}, hard {nofile_hard}; certificates: {}",
            ctx.certs.describe
        ));
        let busy = machine_busy(Duration::from_secs(2));
        out(&format!(
            "  machine busy before start: {:.0}% of {} cores{}",
            busy * 100.0,
            thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            if busy > 0.1 { "  WARNING: other work is running; results will be noisy" } else { "" }
        ));
        report.json.insert("machine".into(), machine);
        report.json.insert("machine_busy_before_start".into(), json!(busy));
        report.json.insert("quick".into(), json!(ctx.plan.quick));

        let sections = &opts.sections;
        if sections.contains(&Section::Cpu) {
            if let Err(e) = cpu_section(&ctx, &mut report) {
                out(&format!("  CPU section failed: {e}"));
                report.json.insert("cpu_error".into(), json!(e));
            }
        }
        if sections.contains(&Section::Scale) {
            if let Err(e) = scale_section(&ctx, &mut report) {
                out(&format!("  scale section failed: {e}"));
                report.json.insert("scale_error".into(), json!(e));
            }
        }
        if sections.contains(&Section::Accuracy) {
            if let Err(e) = accuracy_section(&ctx, &mut report) {
                out(&format!("  accuracy section failed: {e}"));
                report.json.insert("accuracy_error".into(), json!(e));
            }
        }

        out("");
        out("== Summary: targets");
        out(&format!("  {:<66} {:>26}  {:<10} result", "target", "measured", "goal"));
        for v in &report.verdicts {
            let status = match v.status {
                Status::Pass => "PASS",
                Status::Miss => "MISS",
                Status::Skip => "SKIP",
                Status::Info => "info",
            };
            out(&format!("  {:<66} {:>26}  {:<10} {status}", v.target, v.measured, v.goal));
        }
        let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        out(&format!("  load average at the end: {}", loadavg.trim()));
        out(&format!("  total bench time: {:.0} s", started.elapsed().as_secs_f64()));
        let verdicts: Vec<Value> = report
            .verdicts
            .iter()
            .map(|v| {
                json!({
                    "target": v.target, "measured": v.measured, "goal": v.goal,
                    "result": match v.status { Status::Pass => "PASS", Status::Miss => "MISS", Status::Skip => "SKIP", Status::Info => "info" },
                })
            })
            .collect();
        report.json.insert("targets".into(), json!(verdicts));
        report.json.insert("loadavg_end".into(), json!(loadavg.trim()));
        report.json.insert("total_seconds".into(), json!(started.elapsed().as_secs_f64()));
        if let Some(path) = &opts.json {
            let text = serde_json::to_string_pretty(&Value::Object(report.json)).ctx("json")?;
            std::fs::write(path, text + "\n").ctx(&path.display().to_string())?;
            progress(&format!("wrote {}", path.display()));
        }
        drop(tmp);
        Ok(())
    }

    // --- set-up ---------------------------------------------------------------------

    fn locate_exporter(opts: &Opts, exe: &Path) -> Res<PathBuf> {
        if let Some(p) = &opts.exporter {
            return if p.exists() { Ok(p.clone()) } else { Err(format!("{} does not exist", p.display())) };
        }
        let dir = exe.parent().ok_or("the bench binary has no directory")?;
        let bin = dir.join("smtp_exporter");
        let release = dir.file_name().is_some_and(|n| n == "release");
        if !release {
            progress("warning: smtp-bench is not a release build; use cargo run --release");
        }
        if !opts.no_build {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            // The exporter is the workspace's root package, one directory above the bench.
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
            progress("building the exporter (cargo build -p smtp_exporter) so it matches the source");
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "--quiet",
                "-p",
                "smtp_exporter",
                "--bin",
                "smtp_exporter",
                "--manifest-path",
            ])
            .arg(&manifest);
            if release {
                cmd.arg("--release");
            }
            if let Some(target_dir) = dir.parent() {
                cmd.env("CARGO_TARGET_DIR", target_dir);
            }
            let status = cmd.stdin(Stdio::null()).status().ctx("cargo build")?;
            if !status.success() {
                return Err(format!("cargo build --bin smtp_exporter failed ({status})"));
            }
        }
        if !bin.exists() {
            return Err(format!(
                "{} not found: build it (cargo build --release) or pass --exporter PATH",
                bin.display()
            ));
        }
        Ok(bin)
    }

    fn find_blackbox(opts: &Opts) -> Option<PathBuf> {
        if let Some(p) = &opts.blackbox {
            return p.exists().then(|| p.clone());
        }
        let path = std::env::var_os("PATH")?;
        for dir in std::env::split_paths(&path) {
            for name in ["prometheus-blackbox-exporter", "blackbox_exporter"] {
                let candidate = dir.join(name);
                if candidate.is_file() {
                    return Some(candidate);
                }
            }
        }
        None
    }

    fn command_output(program: &Path, args: &[&str]) -> Option<String> {
        let out = Command::new(program).args(args).stdin(Stdio::null()).output().ok()?;
        let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
        String::from_utf8(text).ok().map(|t| t.lines().next().unwrap_or("").trim().to_owned())
    }

    fn machine_info(ctx: &Ctx, nofile: u64, nofile_hard: u64) -> Value {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim()))
            .unwrap_or("unknown")
            .to_owned();
        let nproc = thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let kernel =
            std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
        let rustc = std::env::var_os("RUSTC").map(PathBuf::from).unwrap_or_else(|| "rustc".into());
        let mem = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .nth(1)
            .and_then(|k| k.parse::<u64>().ok())
            .unwrap_or(0);
        json!({
            "cpu_model": model,
            "nproc": nproc.to_string(),
            "kernel": kernel,
            "memory_mib": mem / 1024,
            "rustc": command_output(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into()),
            "exporter": ctx.exporter_bin.display().to_string(),
            "exporter_version": command_output(&ctx.exporter_bin, &["--version"]).unwrap_or_default(),
            "blackbox_version": ctx
                .blackbox_bin
                .as_ref()
                .and_then(|b| command_output(b, &["--version"]))
                .unwrap_or_else(|| "not installed".into()),
            "loadavg_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
            "nofile_soft": nofile,
            "nofile_hard": nofile_hard,
        })
    }

    /// Fraction of all CPUs busy over `span`.
    fn machine_busy(span: Duration) -> f64 {
        let a = sys::system_jiffies().unwrap_or((0, 0));
        thread::sleep(span);
        let b = sys::system_jiffies().unwrap_or((0, 0));
        (b.0.saturating_sub(a.0)) as f64 / (b.1.saturating_sub(a.1)).max(1) as f64
    }

    fn openssl(dir: &Path, args: &[&str]) -> Res<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .ctx("running openssl (is it installed?)")?;
        if !out.status.success() {
            return Err(format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// A private CA and a leaf for `localhost` / 127.0.0.1 signed by it, made with openssl.
    fn make_certs(dir: &Path, key: KeyType) -> Res<Certs> {
        let newkey: &[&str] = match key {
            KeyType::Rsa => &["-newkey", "rsa:2048"],
            KeyType::Ec => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
        };
        let with = |base: &[&'static str], tail: &[&'static str]| -> Vec<&'static str> {
            base.iter().chain(newkey).chain(tail).copied().collect()
        };
        openssl(
            dir,
            &with(
                &["req", "-x509"],
                &[
                    "-nodes",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "7",
                    "-subj",
                    "/CN=smtp-bench test CA",
                ],
            ),
        )?;
        openssl(
            dir,
            &with(
                &["req", "-new"],
                &["-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost"],
            ),
        )?;
        std::fs::write(
            dir.join("leaf.ext"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .ctx("leaf.ext")?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "leaf.pem",
                "-days",
                "7",
                "-sha256",
                "-extfile",
                "leaf.ext",
            ],
        )?;
        Ok(Certs {
            ca: dir.join("ca.pem"),
            cert: dir.join("leaf.pem"),
            key: dir.join("leaf.key"),
            describe: match key {
                KeyType::Rsa => "private CA + leaf, RSA 2048 (openssl)",
                KeyType::Ec => "private CA + leaf, ECDSA P-256 (openssl)",
            },
        })
    }

    fn free_port() -> Res<u16> {
        let l = std::net::TcpListener::bind("127.0.0.1:0").ctx("free port")?;
        Ok(l.local_addr().ctx("free port")?.port())
    }

    fn log_tail(path: &Path) -> String {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n    ")
    }

    /// Polls `path` until it answers 200, the process dies, or `limit` passes.
    fn wait_http_ok(proc: &mut Proc, addr: SocketAddr, path: &str, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if !proc.running() {
                return false;
            }
            let mut http = Http::new(addr, Duration::from_secs(2));
            if matches!(http.get(path), Ok(r) if r.status == 200) {
                return true;
            }
            thread::sleep(Duration::from_millis(50));
        }
        false
    }

    // --- the processes under test ----------------------------------------------------

    struct Server {
        proc: Proc,
        addr: SocketAddr,
    }

    impl Server {
        fn pid(&self) -> u32 {
            self.proc.pid()
        }

        fn ticks(&self) -> u64 {
            sys::proc_ticks(self.pid()).unwrap_or(0)
        }

        fn rss_kib(&self) -> u64 {
            sys::proc_status_kib(self.pid(), "VmRSS").unwrap_or(0)
        }
    }

    /// Starts a server (exporter or blackbox) on a free loopback port and waits for /-/healthy.
    fn start_server(ctx: &Ctx, name: &str, bin: &Path, config_text: &str) -> Res<Server> {
        let config = ctx.tmp.join(format!("{name}.yml"));
        std::fs::write(&config, config_text).ctx(&config.display().to_string())?;
        let log = ctx.tmp.join(format!("{name}.log"));
        for attempt in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let logf = std::fs::File::create(&log).ctx("log file")?;
            let mut cmd = Command::new(bin);
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(logf.try_clone().ctx("log file")?)
                .stderr(logf);
            let mut proc = Proc::spawn(name, cmd)?;
            if wait_http_ok(&mut proc, addr, "/-/healthy", Duration::from_secs(30)) {
                return Ok(Server { proc, addr });
            }
            proc.stop();
            if attempt == 2 {
                return Err(format!(
                    "{name} did not become healthy; its log ends with:\n    {}",
                    log_tail(&log)
                ));
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    fn start_exporter(ctx: &Ctx, name: &str, yaml: &str) -> Res<Server> {
        start_server(ctx, name, &ctx.exporter_bin, yaml)
    }

    /// Waits until every spec has been probed once (/-/ready); returns how long that took.
    fn wait_ready(server: &mut Server, limit: Duration) -> Res<Duration> {
        let t0 = Instant::now();
        let until = t0 + limit;
        let mut http = Http::new(server.addr, Duration::from_secs(10));
        while Instant::now() < until {
            if !server.proc.running() {
                return Err("the exporter exited".into());
            }
            if matches!(http.get("/-/ready"), Ok(r) if r.status == 200) {
                return Ok(t0.elapsed());
            }
            thread::sleep(Duration::from_millis(250));
        }
        Err(format!("not ready after {:.0} s", limit.as_secs_f64()))
    }

    struct Responder {
        proc: Proc,
        stdin: ChildStdin,
        stdout: BufReader<ChildStdout>,
        listeners: Vec<SocketAddr>,
    }

    impl Responder {
        fn start(ctx: &Ctx, name: &str, groups: Vec<responder::Group>, precise: bool) -> Res<Responder> {
            let config = responder::Config {
                cert: ctx.certs.cert.clone(),
                key: ctx.certs.key.clone(),
                groups,
                precise,
                lifetime_s: 3600,
            };
            let path = ctx.tmp.join(format!("{name}.json"));
            std::fs::write(&path, serde_json::to_string(&config).ctx("responder config")?)
                .ctx("responder config")?;
            let log = ctx.tmp.join(format!("{name}.log"));
            let mut cmd = Command::new(&ctx.exe);
            cmd.arg("--responder")
                .arg(&path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&log).ctx("log file")?);
            let mut proc = Proc::spawn(name, cmd)?;
            let child = proc.child.as_mut().expect("just spawned");
            let stdin = child.stdin.take().ok_or("responder stdin")?;
            let mut stdout = BufReader::new(child.stdout.take().ok_or("responder stdout")?);
            let mut line = String::new();
            if stdout.read_line(&mut line).ctx("responder")? == 0 {
                return Err(format!("the responder did not start: {}", log_tail(&log)));
            }
            let hello: Value = serde_json::from_str(&line).ctx("responder hello")?;
            let listeners = hello["listeners"]
                .as_array()
                .ok_or("responder hello without listeners")?
                .iter()
                .filter_map(|l| l["addr"].as_str()?.parse().ok())
                .collect();
            Ok(Responder { proc, stdin, stdout, listeners })
        }

        fn call(&mut self, command: &str) -> Res<Value> {
            writeln!(self.stdin, "{command}").ctx("responder control")?;
            self.stdin.flush().ctx("responder control")?;
            let mut line = String::new();
            if self.stdout.read_line(&mut line).ctx("responder control")? == 0 {
                return Err("the responder exited".into());
            }
            serde_json::from_str(&line).ctx("responder answer")
        }

        fn stats(&mut self) -> Res<Value> {
            self.call("stats")
        }

        fn reset(&mut self) -> Res<()> {
            self.call("reset").map(|_| ())
        }
    }

    // --- configurations ------------------------------------------------------------

    fn quoted(p: &Path) -> String {
        serde_json::to_string(&p.display().to_string()).unwrap_or_default()
    }

    /// A module: STARTTLS required + AUTH PLAIN with the test CA, or plain SMTP.
    fn module_yaml(ctx: &Ctx, name: &str, tls: bool, timeout_s: u64) -> String {
        if tls {
            format!(
                "  {name}:\n    tls: starttls_required\n    timeout: {timeout_s}s\n    tls_config:\n      ca_file: {}\n      server_name: localhost\n    auth:\n      username: bench@example.test\n      password: bench-password\n      mechanism: plain\n",
                quoted(&ctx.certs.ca)
            )
        } else {
            format!("  {name}:\n    tls: none\n    timeout: {timeout_s}s\n")
        }
    }

    /// An exporter configuration: `specs` are (target name, address) probed with `module`.
    fn exporter_yaml(modules: &str, module: &str, interval_s: u64, specs: &[(String, SocketAddr)]) -> String {
        let mut y = format!(
            "interval: {interval_s}s\nmodules:\n{modules}probe_endpoint:\n  allow_any_target: true\n"
        );
        if specs.is_empty() {
            y.push_str("targets: []\n");
        } else {
            y.push_str("targets:\n");
            for (name, addr) in specs {
                y.push_str(&format!(
                    "  - {{ name: {name}, host: {}, ports: [{{ port: {}, module: {module} }}] }}\n",
                    addr.ip(),
                    addr.port()
                ));
            }
        }
        y
    }

    // --- statistics ----------------------------------------------------------------

    fn percentile(sorted: &[f64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    fn sorted(mut v: Vec<f64>) -> Vec<f64> {
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }

    fn mean(v: &[f64]) -> f64 {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    }

    // --- driving probes through HTTP -------------------------------------------------

    struct Driven {
        ok: usize,
        failed: usize,
        first_failure: Option<String>,
        wall: Duration,
    }

    fn probe_succeeded(body: &str) -> bool {
        body.lines().any(|l| {
            (l.starts_with("smtp_probe_success") || l.starts_with("probe_success")) && l.ends_with(" 1")
        })
    }

    fn failure_excerpt(body: &str) -> String {
        body.lines()
            .find(|l| l.starts_with("smtp_probe_failure_info{") || l.starts_with("probe_failed_due_to"))
            .unwrap_or_else(|| body.lines().find(|l| !l.starts_with('#')).unwrap_or(""))
            .chars()
            .take(300)
            .collect()
    }

    /// `n` GETs of `path`, `concurrency` at a time, each thread on its own keep-alive
    /// connection; a response counts as a success when the probe it reports succeeded.
    fn drive(addr: SocketAddr, path: &str, n: usize, concurrency: usize) -> Driven {
        let next = AtomicUsize::new(0);
        let ok = AtomicUsize::new(0);
        let failed = AtomicUsize::new(0);
        let first_failure = Mutex::new(None::<String>);
        let t0 = Instant::now();
        thread::scope(|s| {
            for _ in 0..concurrency.max(1) {
                s.spawn(|| {
                    let mut http = Http::new(addr, Duration::from_secs(30));
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        let problem = match http.get(path) {
                            Ok(r) if r.status == 200 && probe_succeeded(r.text()) => None,
                            Ok(r) => Some(format!("HTTP {}: {}", r.status, failure_excerpt(r.text()))),
                            Err(e) => Some(e),
                        };
                        match problem {
                            None => ok.fetch_add(1, Ordering::Relaxed),
                            Some(p) => {
                                first_failure.lock().expect("lock").get_or_insert(p);
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                });
            }
        });
        Driven {
            ok: ok.into_inner(),
            failed: failed.into_inner(),
            first_failure: first_failure.into_inner().expect("lock"),
            wall: t0.elapsed(),
        }
    }

    /// CPU of one subject over a batch of probes.
    struct CpuRun {
        name: String,
        probes: usize,
        ok: usize,
        cpu_s: f64,
        wall_s: f64,
        note: String,
    }

    impl CpuRun {
        fn per_probe_us(&self) -> f64 {
            self.cpu_s / self.probes.max(1) as f64 * 1e6
        }

        fn json(&self) -> Value {
            json!({
                "subject": self.name, "probes": self.probes, "ok": self.ok, "cpu_s": self.cpu_s,
                "wall_s": self.wall_s, "cpu_per_probe_us": self.per_probe_us(), "note": self.note,
            })
        }
    }

    /// Warm-up, then `n` probes through `path` on `server`, its CPU measured from /proc.
    fn measure_http_subject(ctx: &Ctx, name: &str, server: &Server, path: &str, n: usize) -> Res<CpuRun> {
        let warm = drive(server.addr, path, ctx.plan.warmup, ctx.plan.concurrency);
        if warm.ok == 0 {
            return Err(format!(
                "{name}: no successful probe in the warm-up: {}",
                warm.first_failure.unwrap_or_default()
            ));
        }
        let t0 = server.ticks();
        let d = drive(server.addr, path, n, ctx.plan.concurrency);
        let t1 = server.ticks();
        Ok(CpuRun {
            name: name.to_owned(),
            probes: n,
            ok: d.ok,
            cpu_s: (t1.saturating_sub(t0)) as f64 / ctx.tck,
            wall_s: d.wall.as_secs_f64(),
            note: match (d.failed, d.first_failure) {
                (0, _) => String::new(),
                (k, Some(f)) => format!("{k} failed, first: {f}"),
                (k, None) => format!("{k} failed"),
            },
        })
    }

    // --- 1. CPU per probe ----------------------------------------------------------

    fn cpu_section(ctx: &Ctx, report: &mut Report) -> Res<()> {
        let plan = &ctx.plan;
        out("");
        out(&format!(
            "== 1. CPU per probe: STARTTLS + AUTH PLAIN, full certificate verification, no TLS resumption; {} probes per subject, {} at a time, after {} warm-up probes",
            plan.probes, plan.concurrency, plan.warmup
        ));
        progress("CPU: starting the responder");
        let group = responder::Group {
            addrs: vec!["127.0.0.1".into()],
            per_addr: 1,
            banner_delay_us: 0,
            reply_delay_us: 0,
            tls: true,
        };
        let mut resp = Responder::start(ctx, "cpu-responder", vec![group], false)?;
        let target = *resp.listeners.first().ok_or("the responder has no listener")?;

        // The hand-written baseline, back to back, in a process of its own.
        progress("CPU: hand-written baseline, back to back");
        let baseline = run_baseline(ctx, target, plan.probes, 0.0)?;

        // The exporter, one probe per /probe request.
        progress("CPU: exporter through /probe");
        let modules = module_yaml(ctx, "bench", true, 5);
        let mut exporter =
            start_exporter(ctx, "cpu-exporter-probe", &exporter_yaml(&modules, "bench", 60, &[]))?;
        let path = format!("/probe?target={target}&module=bench");
        let via_probe = measure_http_subject(ctx, "exporter /probe", &exporter, &path, plan.probes)?;
        let rss_probe = exporter.rss_kib();
        exporter.proc.stop();

        // The exporter on its own schedule.
        progress("CPU: exporter, scheduled path");
        let rate = plan.sched_specs as f64 / plan.sched_interval as f64;
        let specs: Vec<(String, SocketAddr)> =
            (0..plan.sched_specs).map(|i| (format!("sched-{i:05}"), target)).collect();
        let modules = module_yaml(ctx, "bench", true, plan.sched_interval.min(5));
        let mut exporter = start_exporter(
            ctx,
            "cpu-exporter-sched",
            &exporter_yaml(&modules, "bench", plan.sched_interval, &specs),
        )?;
        wait_ready(&mut exporter, Duration::from_secs(300))?;
        thread::sleep(Duration::from_secs(1));
        let a0 = resp.stats()?;
        let t0 = exporter.ticks();
        let w0 = Instant::now();
        thread::sleep(Duration::from_secs(plan.sched_window));
        let t1 = exporter.ticks();
        let wall = w0.elapsed();
        let a1 = resp.stats()?;
        exporter.proc.stop();
        let count = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
        let probes = count(&a1, "accepted").saturating_sub(count(&a0, "accepted")) as usize;
        let failed = count(&a1, "failed").saturating_sub(count(&a0, "failed")) as usize;
        let scheduled = CpuRun {
            name: format!("exporter scheduled ({} specs @ {} s)", plan.sched_specs, plan.sched_interval),
            probes,
            ok: probes.saturating_sub(failed),
            cpu_s: t1.saturating_sub(t0) as f64 / ctx.tck,
            wall_s: f64::NAN,
            note: format!(
                "{:.0} s window, {:.0} probes/s",
                wall.as_secs_f64(),
                probes as f64 / wall.as_secs_f64()
            ),
        };

        // The baseline again, started at the scheduled path's rate.
        progress("CPU: hand-written baseline, paced");
        let paced_n = ((rate * plan.sched_window as f64) as usize).max(50);
        let mut paced = run_baseline(ctx, target, paced_n, rate)?;
        paced.wall_s = f64::NAN;

        // blackbox_exporter.
        let blackbox = match &ctx.blackbox_bin {
            None => {
                out("  blackbox_exporter: not installed (apt-get install prometheus-blackbox-exporter); skipped");
                None
            }
            Some(bin) => {
                progress("CPU: blackbox_exporter");
                let config = format!(
                    "modules:\n  smtp_starttls:\n    prober: tcp\n    timeout: 5s\n    tcp:\n      preferred_ip_protocol: ip4\n      query_response:\n        - expect: \"^220 \"\n        - send: \"EHLO bench.invalid\\r\"\n        - expect: \"^250-STARTTLS\"\n        - send: \"STARTTLS\\r\"\n        - expect: \"^220 \"\n        - starttls: true\n        - send: \"EHLO bench.invalid\\r\"\n        - expect: \"^250 \"\n        - send: \"QUIT\\r\"\n      tls_config:\n        ca_file: {}\n        server_name: localhost\n",
                    quoted(&ctx.certs.ca)
                );
                let mut server = start_server(ctx, "blackbox", bin, &config)?;
                let path = format!("/probe?module=smtp_starttls&target={target}");
                let mut r =
                    measure_http_subject(ctx, "blackbox_exporter /probe", &server, &path, plan.probes)?;
                r.note = if r.note.is_empty() {
                    "no AUTH: tcp prober".into()
                } else {
                    format!("no AUTH: tcp prober; {}", r.note)
                };
                server.proc.stop();
                Some(r)
            }
        };
        let stats = resp.stats()?;
        drop(resp);

        let mut runs = vec![&baseline, &via_probe, &paced, &scheduled];
        runs.extend(blackbox.as_ref());
        out(&format!(
            "  {:<42} {:>7} {:>7} {:>9} {:>11} {:>11}",
            "subject", "probes", "ok", "CPU s", "CPU/probe", "wall/probe"
        ));
        for r in &runs {
            let wall = if r.wall_s.is_nan() {
                "-".to_owned()
            } else {
                format!("{:.2} ms", r.wall_s / r.probes.max(1) as f64 * 1e3)
            };
            out(&format!(
                "  {:<42} {:>7} {:>7} {:>9.3} {:>8.0} µs {:>11}{}",
                r.name,
                r.probes,
                r.ok,
                r.cpu_s,
                r.per_probe_us(),
                wall,
                if r.note.is_empty() { String::new() } else { format!("  ({})", r.note) }
            ));
        }
        if let Some(e) = stats["first_error"].as_str() {
            out(&format!("  responder: first session error seen: {e}"));
        }
        let probe_ratio = via_probe.per_probe_us() / baseline.per_probe_us();
        let sched_ratio = scheduled.per_probe_us() / paced.per_probe_us();
        let sched_vs_b2b = scheduled.per_probe_us() / baseline.per_probe_us();
        out(&format!("  exporter /probe    / baseline back to back = {probe_ratio:.2}x"));
        out(&format!("  exporter scheduled / baseline paced alike  = {sched_ratio:.2}x"));
        out(&format!("  exporter scheduled / baseline back to back = {sched_vs_b2b:.2}x"));
        if !runs.iter().all(|r| r.ok == r.probes && r.probes > 0) {
            out("  WARNING: not every probe succeeded; see the notes above");
        }
        report.verdict(
            "CPU/probe: exporter /probe vs baseline",
            format!(
                "{probe_ratio:.2}x ({:.0} vs {:.0} µs)",
                via_probe.per_probe_us(),
                baseline.per_probe_us()
            ),
            "<= 1.5x",
            Some(probe_ratio <= 1.5),
        );
        report.verdict(
            "CPU/probe: exporter scheduled vs paced baseline",
            format!("{sched_ratio:.2}x ({:.0} vs {:.0} µs)", scheduled.per_probe_us(), paced.per_probe_us()),
            "<= 1.5x",
            Some(sched_ratio <= 1.5),
        );
        let mut bb_json = Value::Null;
        match &blackbox {
            Some(bb) => {
                let bb_us = bb.per_probe_us();
                let r1 = via_probe.per_probe_us() / bb_us;
                let r2 = scheduled.per_probe_us() / bb_us;
                out(&format!("  exporter /probe    / blackbox_exporter     = {r1:.2}x  (target <= 0.33x)"));
                out(&format!("  exporter scheduled / blackbox_exporter     = {r2:.2}x"));
                report.verdict(
                    "CPU/probe: exporter /probe vs blackbox_exporter",
                    format!("{r1:.2}x ({:.0} vs {bb_us:.0} µs)", via_probe.per_probe_us()),
                    "<= 0.33x",
                    Some(r1 <= 1.0 / 3.0),
                );
                bb_json =
                    json!({"run": bb.json(), "exporter_probe_ratio": r1, "exporter_scheduled_ratio": r2});
            }
            None => report.verdict(
                "CPU/probe: exporter /probe vs blackbox_exporter",
                "not installed".into(),
                "<= 0.33x",
                None,
            ),
        }
        report.json.insert(
            "cpu".into(),
            json!({
                "probes": plan.probes, "concurrency": plan.concurrency, "warmup": plan.warmup,
                "certificate": ctx.certs.describe,
                "baseline": baseline.json(), "exporter_probe": via_probe.json(),
                "baseline_paced": paced.json(), "exporter_scheduled": scheduled.json(),
                "ratio_probe_vs_baseline": probe_ratio,
                "ratio_scheduled_vs_paced_baseline": sched_ratio,
                "ratio_scheduled_vs_baseline": sched_vs_b2b,
                "blackbox": bb_json,
                "exporter_probe_rss_kib": rss_probe,
                "responder": stats_summary(&stats),
            }),
        );
        Ok(())
    }

    fn stats_summary(stats: &Value) -> Value {
        json!({
            "accepted": stats["accepted"], "completed": stats["completed"], "failed": stats["failed"],
            "tls": stats["tls"], "auth": stats["auth"], "first_error": stats["first_error"],
        })
    }

    fn run_baseline(ctx: &Ctx, target: SocketAddr, probes: usize, rate: f64) -> Res<CpuRun> {
        let plan = &ctx.plan;
        let job = baseline::Job {
            target,
            ca_file: ctx.certs.ca.clone(),
            server_name: "localhost".into(),
            username: "bench@example.test".into(),
            password: "bench-password".into(),
            warmup: plan.warmup,
            probes,
            concurrency: plan.concurrency,
            rate,
        };
        let job_path = ctx.tmp.join("baseline-job.json");
        std::fs::write(&job_path, serde_json::to_string(&job).ctx("job")?).ctx("job")?;
        let out_path = ctx.tmp.join("baseline-out.json");
        let log = ctx.tmp.join("baseline.log");
        let mut cmd = Command::new(&ctx.exe);
        cmd.arg("--baseline-client")
            .arg(&job_path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).ctx("baseline output")?)
            .stderr(std::fs::File::create(&log).ctx("baseline log")?);
        let mut proc = Proc::spawn("baseline", cmd)?;
        let until = Instant::now() + Duration::from_secs(600);
        while proc.running() && Instant::now() < until {
            thread::sleep(Duration::from_millis(20));
        }
        proc.stop();
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        let v: Value = serde_json::from_str(text.trim())
            .map_err(|_| format!("the baseline client failed: {}", log_tail(&log)))?;
        Ok(CpuRun {
            name: if rate > 0.0 {
                format!("baseline paced at {rate:.0} probes/s")
            } else {
                "baseline (tokio + rustls, current-thread)".into()
            },
            probes: v["probes"].as_u64().unwrap_or(0) as usize,
            ok: v["ok"].as_u64().unwrap_or(0) as usize,
            cpu_s: v["cpu_s"].as_f64().unwrap_or(f64::NAN),
            wall_s: v["wall_s"].as_f64().unwrap_or(f64::NAN),
            note: v["first_error"].as_str().map(|e| format!("first error: {e}")).unwrap_or_default(),
        })
    }

    // --- 2. Scale --------------------------------------------------------------------

    #[derive(Clone, Copy, Debug)]
    struct Sample {
        t_ns: u64,
        ticks: u64,
        rss_kib: u64,
        responder_ticks: u64,
        sys_busy: u64,
        sys_total: u64,
    }

    fn take_sample(pid: u32, responder_pid: u32) -> Sample {
        let (sys_busy, sys_total) = sys::system_jiffies().unwrap_or((0, 0));
        Sample {
            t_ns: sys::mono_ns(),
            ticks: sys::proc_ticks(pid).unwrap_or(0),
            rss_kib: sys::proc_status_kib(pid, "VmRSS").unwrap_or(0),
            responder_ticks: sys::proc_ticks(responder_pid).unwrap_or(0),
            sys_busy,
            sys_total,
        }
    }

    /// Samples a process every second on a thread of its own, for at most `limit`.
    struct Sampler {
        stop: Arc<AtomicBool>,
        samples: Arc<Mutex<Vec<Sample>>>,
        handle: Option<thread::JoinHandle<()>>,
    }

    impl Sampler {
        fn start(pid: u32, responder_pid: u32, limit: Duration) -> Sampler {
            let stop = Arc::new(AtomicBool::new(false));
            let samples = Arc::new(Mutex::new(Vec::new()));
            let (s, v) = (stop.clone(), samples.clone());
            let handle = thread::spawn(move || {
                let t0 = Instant::now();
                let mut k = 0u32;
                while !s.load(Ordering::Relaxed) && t0.elapsed() < limit {
                    v.lock().expect("samples").push(take_sample(pid, responder_pid));
                    k += 1;
                    let next = t0 + Duration::from_secs(u64::from(k));
                    while Instant::now() < next && !s.load(Ordering::Relaxed) {
                        thread::sleep(
                            Duration::from_millis(20).min(next.saturating_duration_since(Instant::now())),
                        );
                    }
                }
            });
            Sampler { stop, samples, handle: Some(handle) }
        }

        fn finish(mut self) -> Vec<Sample> {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
            self.samples.lock().expect("samples").clone()
        }
    }

    impl Drop for Sampler {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    struct Scrapes {
        specs: usize,
        median_ms: f64,
        min_ms: f64,
        max_ms: f64,
        series: usize,
        bytes: usize,
        cpu_ms_per_scrape: f64,
        rss_before_kib: u64,
        rss_after_kib: u64,
        successes: usize,
        /// Banner phase of each spec's last probe, from the first scrape (probes that ran
        /// before any scrape) and from the last one (probes that ran during the scrapes).
        banner_before_s: Vec<f64>,
        banner_during_s: Vec<f64>,
    }

    /// Series count, `smtp_probe_success 1` count, and banner phase values of an exposition.
    fn parse_exposition(text: &str) -> (usize, usize, Vec<f64>) {
        let mut series = 0;
        let mut successes = 0;
        let mut banner_s = Vec::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            series += 1;
            if line.starts_with("smtp_probe_success{") && line.ends_with(" 1") {
                successes += 1;
            } else if line.starts_with("smtp_probe_phase_duration_seconds{")
                && line.contains("phase=\"banner\"")
            {
                if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                    banner_s.push(v);
                }
            }
        }
        (series, successes, banner_s)
    }

    impl Scrapes {
        fn ms_per_1000_series(&self) -> f64 {
            self.median_ms / (self.series.max(1) as f64 / 1000.0)
        }

        fn json(&self) -> Value {
            json!({
                "specs": self.specs, "median_ms": self.median_ms, "min_ms": self.min_ms, "max_ms": self.max_ms,
                "series": self.series, "bytes": self.bytes, "ms_per_1000_series": self.ms_per_1000_series(),
                "cpu_ms_per_scrape": self.cpu_ms_per_scrape, "rss_before_kib": self.rss_before_kib,
                "rss_after_kib": self.rss_after_kib, "probe_success_series_at_1": self.successes,
            })
        }
    }

    /// `n` timed scrapes of /metrics (after one untimed); `busy_ticks_per_s` is the
    /// exporter's CPU rate without scrapes, subtracted from the scrape CPU.
    fn scrape(ctx: &Ctx, server: &Server, specs: usize, n: usize, busy_ticks_per_s: f64) -> Res<Scrapes> {
        let mut http = Http::new(server.addr, Duration::from_secs(120));
        let rss_before_kib = server.rss_kib();
        let first = http.get("/metrics")?;
        let (_, _, banner_before_s) = parse_exposition(&String::from_utf8_lossy(&first.body));
        drop(first);
        let mut lat = Vec::new();
        let mut last = Vec::new();
        let t0 = server.ticks();
        let w0 = Instant::now();
        for _ in 0..n {
            let s = Instant::now();
            let r = http.get("/metrics")?;
            lat.push(s.elapsed().as_secs_f64() * 1e3);
            if r.status != 200 {
                return Err(format!("/metrics answered {}", r.status));
            }
            last = r.body;
        }
        let cpu_ticks =
            server.ticks().saturating_sub(t0) as f64 - busy_ticks_per_s * w0.elapsed().as_secs_f64();
        let (series, successes, banner_during_s) = parse_exposition(&String::from_utf8_lossy(&last));
        let lat = sorted(lat);
        Ok(Scrapes {
            specs,
            median_ms: percentile(&lat, 50.0),
            min_ms: lat[0],
            max_ms: lat[lat.len() - 1],
            series,
            bytes: last.len(),
            cpu_ms_per_scrape: (cpu_ticks.max(0.0) / ctx.tck) * 1e3 / n as f64,
            rss_before_kib,
            rss_after_kib: server.rss_kib(),
            successes,
            banner_before_s,
            banner_during_s,
        })
    }

    fn fleet_addr(i: usize) -> String {
        format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250)
    }

    fn scale_section(ctx: &Ctx, report: &mut Report) -> Res<()> {
        let plan = &ctx.plan;
        let n = plan.fleet_specs;
        let interval = plan.fleet_interval;
        out("");
        out(&format!(
            "== 2. Scale: {n} specs at a {interval} s interval ({:.1} probes/s), {}, greeting delay {} ms, reply delay {} ms, {} listeners on {} loopback addresses, max_concurrency 64 (default)",
            n as f64 / interval as f64,
            if plan.fleet_tls { "STARTTLS + AUTH PLAIN" } else { "plain SMTP" },
            plan.fleet_banner_ms,
            plan.fleet_reply_ms,
            plan.fleet_addrs * plan.fleet_ports,
            plan.fleet_addrs
        ));
        if plan.quick {
            out(&format!(
                "  QUICK MODE: {n} specs at {interval} s instead of 10,000 at 60 s (same probe rate per second), a {} s window; /metrics at 10,000 specs is extrapolated",
                plan.fleet_window
            ));
        }
        progress(&format!(
            "scale: starting the fleet responder ({} listeners)",
            plan.fleet_addrs * plan.fleet_ports
        ));
        let group = responder::Group {
            addrs: (0..plan.fleet_addrs).map(fleet_addr).collect(),
            per_addr: plan.fleet_ports,
            banner_delay_us: plan.fleet_banner_ms * 1000,
            reply_delay_us: plan.fleet_reply_ms * 1000,
            tls: plan.fleet_tls,
        };
        let mut resp = Responder::start(ctx, "fleet-responder", vec![group], false)?;
        let listeners = resp.listeners.clone();
        if listeners.is_empty() {
            return Err("the fleet responder has no listener".into());
        }
        let specs: Vec<(String, SocketAddr)> =
            (0..n).map(|i| (format!("fleet-{i:05}"), listeners[i % listeners.len()])).collect();
        let modules = module_yaml(ctx, "fleet", plan.fleet_tls, interval.min(10));

        // Smaller exporters for the /metrics curve.
        let mut curve: Vec<Scrapes> = Vec::new();
        for &size in plan.scrape_sizes.iter().filter(|&&s| s < n) {
            progress(&format!("scale: /metrics with {size} specs"));
            let name = format!("scrape-{size}");
            let mut exporter =
                start_exporter(ctx, &name, &exporter_yaml(&modules, "fleet", interval, &specs[..size]))?;
            wait_ready(&mut exporter, Duration::from_secs(300))?;
            thread::sleep(Duration::from_secs(1));
            let idle0 = exporter.ticks();
            thread::sleep(Duration::from_secs(1));
            let idle_rate = exporter.ticks().saturating_sub(idle0) as f64;
            curve.push(scrape(ctx, &exporter, size, plan.scrapes, idle_rate)?);
            exporter.proc.stop();
        }

        // The fleet.
        progress(&format!("scale: starting the exporter with {n} specs"));
        resp.reset()?;
        let yaml = exporter_yaml(&modules, "fleet", interval, &specs);
        let spawn_ns = sys::mono_ns();
        let mut exporter = start_exporter(ctx, "fleet-exporter", &yaml)?;
        let limit = Duration::from_secs(interval * 2 + plan.fleet_window + 600);
        let sampler = Sampler::start(exporter.pid(), resp.proc.pid(), limit);
        let ready = wait_ready(&mut exporter, Duration::from_secs(interval + 600));
        let ready_after = match &ready {
            Ok(_) => (sys::mono_ns() - spawn_ns) as f64 / 1e9,
            Err(_) => f64::NAN,
        };
        match &ready {
            Ok(_) => progress(&format!("scale: first round of {n} probes done after {ready_after:.1} s")),
            Err(e) => progress(&format!("scale: the first round did not complete: {e}")),
        }
        let margin_ns = 2_000_000_000;
        let mut window_start = spawn_ns + interval * 1_000_000_000 + margin_ns;
        if ready.is_ok() {
            window_start = window_start.max(sys::mono_ns() + margin_ns);
        }
        // Whole CLOCK_MONOTONIC seconds, so that the responder's buckets line up.
        let window_start = window_start.div_ceil(1_000_000_000) * 1_000_000_000;
        let window_end = window_start + plan.fleet_window * 1_000_000_000;
        progress(&format!(
            "scale: steady window of {} s starts in {:.0} s",
            plan.fleet_window,
            (window_start.saturating_sub(sys::mono_ns())) as f64 / 1e9
        ));
        sleep_until_mono(window_start - 500_000_000);
        resp.reset()?;
        sleep_until_mono(window_start);
        let s0 = take_sample(exporter.pid(), resp.proc.pid());
        sleep_until_mono(window_end);
        let s1 = take_sample(exporter.pid(), resp.proc.pid());
        let samples = sampler.finish();
        let rss_window_end = exporter.rss_kib();
        let hwm_window_end = sys::proc_status_kib(exporter.pid(), "VmHWM").unwrap_or(0);
        let window_s = (s1.t_ns - s0.t_ns) as f64 / 1e9;
        let cpu_avg = (s1.ticks - s0.ticks) as f64 / ctx.tck / window_s;
        let responder_avg = (s1.responder_ticks - s0.responder_ticks) as f64 / ctx.tck / window_s;
        let machine_busy = (s1.sys_busy - s0.sys_busy) as f64 / (s1.sys_total - s0.sys_total).max(1) as f64;
        let ncpu = thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        let mut per_second = Vec::new();
        let mut rss_max = rss_window_end;
        for pair in samples.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.t_ns >= s0.t_ns.saturating_sub(500_000_000) && b.t_ns <= s1.t_ns + 500_000_000 {
                per_second.push((b.ticks - a.ticks) as f64 / ctx.tck / ((b.t_ns - a.t_ns) as f64 / 1e9));
                rss_max = rss_max.max(b.rss_kib);
            }
        }
        let cpu_peak = per_second.iter().copied().fold(f64::NAN, f64::max);
        let startup_peak = samples
            .windows(2)
            .filter(|p| p[1].t_ns <= s0.t_ns)
            .map(|p| (p[1].ticks - p[0].ticks) as f64 / ctx.tck / ((p[1].t_ns - p[0].t_ns) as f64 / 1e9))
            .fold(f64::NAN, f64::max);

        // Probe starts per second, from the responder's accept times.
        let stats = resp.stats()?;
        let greeting_late_ms: Vec<f64> = sorted(
            stats["banner_delays_ns"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_f64)
                        .map(|ns| ns / 1e6 - plan.fleet_banner_ms as f64)
                        .collect()
                })
                .unwrap_or_default(),
        );
        let (first_sec, last_sec) = (window_start / 1_000_000_000, window_end / 1_000_000_000);
        let mut buckets: BTreeMap<u64, u64> = (first_sec..last_sec).map(|s| (s, 0)).collect();
        for entry in stats["per_sec"].as_array().into_iter().flatten() {
            let (Some(sec), Some(c)) = (entry[0].as_u64(), entry[1].as_u64()) else { continue };
            if let Some(b) = buckets.get_mut(&sec) {
                *b = c;
            }
        }
        let counts: Vec<f64> = buckets.values().map(|&c| c as f64).collect();
        let starts_mean = mean(&counts);
        let starts_max = counts.iter().copied().fold(f64::NAN, f64::max);
        let starts_min = counts.iter().copied().fold(f64::NAN, f64::min);
        let window_probes: f64 = counts.iter().sum();
        let spread = starts_max / starts_mean;
        let expected_rate = n as f64 / interval as f64;
        let sched_cpu_per_probe_us = (s1.ticks - s0.ticks) as f64 / ctx.tck / window_probes.max(1.0) * 1e6;

        // /metrics at full size, while the fleet keeps running.
        progress(&format!("scale: /metrics with {n} specs"));
        let busy_rate = (s1.ticks - s0.ticks) as f64 / window_s;
        let big = scrape(ctx, &exporter, n, plan.scrapes, busy_rate)?;
        thread::sleep(Duration::from_secs(2));
        let rss_after_settle = exporter.rss_kib();
        let hwm_end = sys::proc_status_kib(exporter.pid(), "VmHWM").unwrap_or(0);
        let threads = sys::proc_status_value(exporter.pid(), "Threads");
        let fds = std::fs::read_dir(format!("/proc/{}/fd", exporter.pid())).map(|d| d.count()).unwrap_or(0);
        exporter.proc.stop();
        let resp_stats = stats_summary(&resp.stats()?);
        drop(resp);
        curve.push(big);

        // Report.
        out(&format!(
            "  start-up: first round of {n} probes complete {ready_after:.1} s after spawn (CPU peak then {:.0}% of a core)",
            startup_peak * 100.0
        ));
        out(&format!(
            "  steady window: {window_s:.1} s, starting {:.1} s after spawn",
            (s0.t_ns - spawn_ns) as f64 / 1e9
        ));
        out(&format!(
            "  exporter CPU: average {:.1}% of one core, peak {:.0}% (1-s samples); {sched_cpu_per_probe_us:.0} µs per scheduled probe",
            cpu_avg * 100.0,
            cpu_peak * 100.0
        ));
        out(&format!(
            "  (responder: {:.0}% of a core; whole machine busy {:.0}% of {} cores, so others used {:.0}% of a core)",
            responder_avg * 100.0,
            machine_busy * 100.0,
            ncpu,
            (machine_busy * ncpu - cpu_avg - responder_avg).max(0.0) * 100.0
        ));
        let mib = |k: u64| k as f64 / 1024.0;
        let smallest = curve.first().filter(|c| c.specs < n);
        let marginal =
            smallest.map(|c| (rss_window_end as f64 - c.rss_before_kib as f64) / (n - c.specs) as f64);
        out(&format!(
            "  RSS: {:.1} MiB at the end of the window ({:.2} KiB per spec{}), max {:.1} MiB during it; VmHWM {:.1} MiB (start-up burst included)",
            mib(rss_window_end),
            rss_window_end as f64 / n as f64,
            marginal.map(|m| format!(", {m:.2} KiB per added spec")).unwrap_or_default(),
            mib(rss_max),
            mib(hwm_window_end)
        ));
        let future_bytes = probe_future_bytes(ctx, plan.fleet_tls);
        if let Some(b) = future_bytes {
            out(&format!(
                "  (diagnostic: the probe::run future is {b} bytes; a spec task that awaits it inline reserves at least that much while idle)"
            ));
        }
        let big = curve.last().expect("pushed above");
        out(&format!(
            "  RSS after {} scrapes of /metrics: {:.1} MiB (2 s later: {:.1} MiB; VmHWM {:.1} MiB); {} threads, {fds} open files",
            plan.scrapes + 1,
            mib(big.rss_after_kib),
            mib(rss_after_settle),
            mib(hwm_end),
            threads.map(|t| t.to_string()).unwrap_or_default()
        ));
        out(&format!(
            "  probe starts per second over {} whole seconds: mean {starts_mean:.1} (expected {expected_rate:.1}), min {starts_min:.0}, max {starts_max:.0}, max/mean {spread:.2}",
            counts.len()
        ));
        out(&format!(
            "  last round: {} of {n} specs with smtp_probe_success 1; responder sessions: {} completed, {} failed",
            big.successes, resp_stats["completed"], resp_stats["failed"]
        ));
        let errs = |v: &[f64]| sorted(v.iter().map(|b| b * 1e3 - plan.fleet_banner_ms as f64).collect());
        let (before, during) = (errs(&big.banner_before_s), errs(&big.banner_during_s));
        out(&format!(
            "  banner phase minus the {} ms greeting delay, last probe of each spec: p50 {:.3} / p99 {:.3} / max {:.3} ms before any scrape; p50 {:.3} / p99 {:.3} / max {:.3} ms for probes that overlapped the scrapes",
            plan.fleet_banner_ms,
            percentile(&before, 50.0),
            percentile(&before, 99.0),
            before.last().copied().unwrap_or(f64::NAN),
            percentile(&during, 50.0),
            percentile(&during, 99.0),
            during.last().copied().unwrap_or(f64::NAN),
        ));
        out(&format!(
            "  (the responder's own lateness writing the greeting, {} connections in the window: p50 {:.3} ms, p99 {:.3} ms; it uses tokio's 1-ms timer)",
            greeting_late_ms.len(),
            percentile(&greeting_late_ms, 50.0),
            percentile(&greeting_late_ms, 99.0)
        ));
        out(&format!("  /metrics latency, median of {} scrapes:", plan.scrapes));
        out(&format!(
            "    {:>7} {:>9} {:>12} {:>10} {:>10} {:>16} {:>14}",
            "specs", "series", "bytes", "median ms", "max ms", "ms/1000 series", "CPU ms/scrape"
        ));
        for c in &curve {
            out(&format!(
                "    {:>7} {:>9} {:>12} {:>10.1} {:>10.1} {:>16.3} {:>14.1}",
                c.specs,
                c.series,
                c.bytes,
                c.median_ms,
                c.max_ms,
                c.ms_per_1000_series(),
                c.cpu_ms_per_scrape
            ));
        }
        // Growth exponent between neighbouring sizes: 1.0 is linear in the series count.
        let slopes: Vec<f64> = curve
            .windows(2)
            .map(|w| (w[1].median_ms / w[0].median_ms).ln() / (w[1].series as f64 / w[0].series as f64).ln())
            .collect();
        let last_slope = slopes.last().copied().unwrap_or(f64::NAN);
        let linear = (0.8..=1.25).contains(&last_slope);
        out(&format!(
            "    growth exponent (log time / log series) between neighbouring sizes: {}; at the largest sizes {last_slope:.2}: {}",
            slopes.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(", "),
            if linear {
                "roughly linear in the series count"
            } else {
                "NOT linear in the series count"
            }
        ));
        let series_per_spec = big.series as f64 / n as f64;
        let (metrics_10k, extrapolated) = if n >= 10_000 {
            (big.median_ms * 10_000.0 / n as f64, n != 10_000)
        } else {
            (big.ms_per_1000_series() * series_per_spec * 10.0, true)
        };
        if extrapolated {
            out(&format!(
                "    at 10,000 specs ({:.0} series): {metrics_10k:.0} ms, EXTRAPOLATED from {n} specs at {:.3} ms per 1,000 series",
                series_per_spec * 10_000.0,
                big.ms_per_1000_series()
            ));
        }

        let scale_note = if plan.quick || n != 10_000 || interval != 60 {
            format!(" [{n} specs @ {interval} s]")
        } else {
            String::new()
        };
        report.verdict(
            &format!("fleet CPU average{scale_note}"),
            format!("{:.1}% of a core", cpu_avg * 100.0),
            "< 25%",
            Some(cpu_avg < 0.25),
        );
        let rss_scraped = big.rss_after_kib.max(rss_after_settle);
        report.verdict(
            &format!("RSS, steady, before any scrape{scale_note}"),
            format!("{:.1} MiB", mib(rss_window_end)),
            "< 150 MiB",
            Some(mib(rss_window_end) < 150.0),
        );
        report.verdict(
            &format!("RSS after /metrics scrapes{scale_note}"),
            format!("{:.1} MiB", mib(rss_scraped)),
            "< 150 MiB",
            Some(mib(rss_scraped) < 150.0),
        );
        report.verdict(
            &format!("probe starts: max second / mean{scale_note}"),
            format!("{spread:.2} ({starts_max:.0} / {starts_mean:.1})"),
            "<= 2.0",
            Some(spread <= 2.0),
        );
        report.info(
            &format!("fleet: banner error p99, probes during scrapes{scale_note}"),
            format!("{:.1} ms (before: {:.2} ms)", percentile(&during, 99.0), percentile(&before, 99.0)),
        );
        report.verdict(
            &format!("/metrics at 10,000 specs{}", if extrapolated { " (extrapolated)" } else { "" }),
            format!("{metrics_10k:.0} ms"),
            "< 250 ms",
            Some(metrics_10k < 250.0),
        );
        report.json.insert(
            "scale".into(),
            json!({
                "specs": n, "interval_s": interval, "window_s": window_s, "tls": plan.fleet_tls,
                "banner_delay_ms": plan.fleet_banner_ms, "reply_delay_ms": plan.fleet_reply_ms,
                "listeners": listeners.len(), "addresses": plan.fleet_addrs,
                "ready_after_s": ready_after, "startup_cpu_peak_cores": startup_peak,
                "cpu_avg_cores": cpu_avg, "cpu_peak_cores": cpu_peak, "cpu_per_second": per_second,
                "scheduled_cpu_per_probe_us": sched_cpu_per_probe_us,
                "responder_cpu_avg_cores": responder_avg, "machine_busy_fraction": machine_busy,
                "rss_window_end_kib": rss_window_end, "rss_window_max_kib": rss_max,
                "rss_per_spec_kib": rss_window_end as f64 / n as f64, "rss_marginal_per_spec_kib": marginal,
                "vmhwm_window_end_kib": hwm_window_end, "rss_after_scrapes_kib": big.rss_after_kib,
                "rss_after_scrapes_settled_kib": rss_after_settle, "vmhwm_end_kib": hwm_end,
                "starts_per_second": counts, "starts_mean": starts_mean, "starts_max": starts_max,
                "starts_min": starts_min, "starts_max_over_mean": spread, "expected_rate": expected_rate,
                "successes_last_round": big.successes,
                "banner_error_before_scrapes_ms": {"p50": percentile(&before, 50.0), "p99": percentile(&before, 99.0), "max": before.last()},
                "banner_error_during_scrapes_ms": {"p50": percentile(&during, 50.0), "p99": percentile(&during, 99.0), "max": during.last()},
                "responder_greeting_late_ms": {"p50": percentile(&greeting_late_ms, 50.0), "p99": percentile(&greeting_late_ms, 99.0)},
                "metrics_curve": curve.iter().map(Scrapes::json).collect::<Vec<_>>(),
                "metrics_10k_ms": metrics_10k, "metrics_10k_extrapolated": extrapolated,
                "series_per_spec": series_per_spec, "linear": linear, "growth_exponents": slopes,
                "probe_future_bytes": future_bytes,
                "responder": resp_stats,
            }),
        );
        Ok(())
    }

    /// The size of the future `probe::run` returns for a fleet spec (never polled).
    fn probe_future_bytes(ctx: &Ctx, tls: bool) -> Option<usize> {
        let yaml = format!(
            "modules:\n{}targets:\n  - {{ name: x, host: 127.0.0.1, ports: [{{ port: 25, module: fleet }}] }}\n",
            module_yaml(ctx, "fleet", tls, 10)
        );
        let config = smtp_exporter::config::parse(&yaml, "size check").ok()?;
        let spec = &config.schedule.first()?.spec;
        let future = smtp_exporter::probe::run(spec);
        Some(std::mem::size_of_val(&future))
    }

    fn sleep_until_mono(target_ns: u64) {
        // Bounded: the target is at most a few thousand seconds away.
        loop {
            let now = sys::mono_ns();
            if now >= target_ns {
                return;
            }
            thread::sleep(Duration::from_nanos((target_ns - now).min(200_000_000)));
        }
    }

    // --- 3. Accuracy -----------------------------------------------------------------

    fn banner_of(body: &str) -> Option<f64> {
        body.lines()
            .find(|l| l.starts_with("smtp_probe_phase_duration_seconds{") && l.contains("phase=\"banner\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    fn accuracy_section(ctx: &Ctx, report: &mut Report) -> Res<()> {
        let plan = &ctx.plan;
        out("");
        out(&format!(
            "== 3. Accuracy: reported banner phase minus the injected greeting delay; {} sequential /probe requests per delay (plain SMTP module)",
            plan.acc_samples
        ));
        progress("accuracy: starting the precise responder");
        let groups: Vec<responder::Group> = plan
            .acc_delays
            .iter()
            .map(|&d| responder::Group {
                addrs: vec!["127.0.0.1".into()],
                per_addr: 1,
                banner_delay_us: d * 1000,
                reply_delay_us: 0,
                tls: false,
            })
            .collect();
        let mut resp = Responder::start(ctx, "accuracy-responder", groups, true)?;
        let modules = module_yaml(ctx, "plain", false, 5);
        let exporter = start_exporter(ctx, "accuracy-exporter", &exporter_yaml(&modules, "plain", 60, &[]))?;
        let mut http = Http::new(exporter.addr, Duration::from_secs(30));
        out(&format!(
            "  {:>9} {:>8} {:>12} {:>12} {:>12} {:>22} {:>22}",
            "delay ms",
            "samples",
            "error p50",
            "error p99",
            "error max",
            "responder overshoot p99",
            "error vs actual p99"
        ));
        let mut rows = Vec::new();
        let mut worst_p99 = f64::NEG_INFINITY;
        for (i, &delay) in plan.acc_delays.iter().enumerate() {
            progress(&format!("accuracy: {delay} ms"));
            let target = resp.listeners[i];
            let path = format!("/probe?target={target}&module=plain");
            for _ in 0..5 {
                let _ = http.get(&path);
            }
            resp.reset()?;
            let mut reported = Vec::new();
            let mut failures = 0;
            for _ in 0..plan.acc_samples {
                match http
                    .get(&path)
                    .ok()
                    .filter(|r| probe_succeeded(r.text()))
                    .and_then(|r| banner_of(r.text()))
                {
                    Some(v) => reported.push(v * 1e3),
                    None => failures += 1,
                }
            }
            let stats = resp.stats()?;
            let actual: Vec<f64> = stats["banner_delays_ns"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).map(|ns| ns / 1e6).collect())
                .unwrap_or_default();
            let nominal = delay as f64;
            let err = sorted(reported.iter().map(|r| r - nominal).collect());
            let overshoot = sorted(actual.iter().map(|a| a - nominal).collect());
            // Matched one to one only when nothing failed (probes are sequential).
            let vs_actual = if failures == 0 && actual.len() == reported.len() {
                sorted(reported.iter().zip(&actual).map(|(r, a)| r - a).collect())
            } else {
                Vec::new()
            };
            let p99 = percentile(&err, 99.0);
            worst_p99 = worst_p99.max(p99);
            out(&format!(
                "  {:>9} {:>8} {:>9.3} ms {:>9.3} ms {:>9.3} ms {:>19.3} ms {:>19.3} ms{}",
                delay,
                reported.len(),
                percentile(&err, 50.0),
                p99,
                err.last().copied().unwrap_or(f64::NAN),
                percentile(&overshoot, 99.0),
                percentile(&vs_actual, 99.0),
                if failures > 0 { format!("  ({failures} failed)") } else { String::new() }
            ));
            rows.push(json!({
                "delay_ms": delay, "samples": reported.len(), "failures": failures,
                "error_p50_ms": percentile(&err, 50.0), "error_p99_ms": p99,
                "error_max_ms": err.last().copied(), "error_min_ms": err.first().copied(),
                "responder_overshoot_p50_ms": percentile(&overshoot, 50.0),
                "responder_overshoot_p99_ms": percentile(&overshoot, 99.0),
                "error_vs_actual_p50_ms": percentile(&vs_actual, 50.0),
                "error_vs_actual_p99_ms": percentile(&vs_actual, 99.0),
            }));
        }
        drop(exporter);
        drop(resp);
        out("  error = reported banner - injected delay; it includes loopback and wake-up latency on both sides.");
        out("  responder overshoot = accept-to-greeting-written time in the responder - injected delay.");
        report.verdict(
            "timing error p99, worst injected delay",
            format!("{worst_p99:.3} ms"),
            "< 1 ms",
            Some(worst_p99.abs() < 1.0),
        );
        report.json.insert("accuracy".into(), json!({"samples": plan.acc_samples, "rows": rows}));
        Ok(())
    }
}
