//! The SMTP responder: testkit's fake SMTP server ([`testkit::smtp`]) run as a child
//! process, `smtp-bench --responder CONFIG.json`, so that its CPU is never counted for a
//! subject.
//!
//! It listens on many loopback addresses and ports, in groups of listeners that behave
//! alike (greeting delay, delay before every later reply, STARTTLS then AUTH, or AUTH in
//! the clear), and counts and times its sessions through a [`Watcher`]: accepts per
//! CLOCK_MONOTONIC second, and the accept-to-greeting time of every connection. In precise
//! mode (the accuracy section) a blocking thread per listener writes each greeting itself,
//! ending the delay with a busy-wait, then hands the session to the fake server on a
//! thread of its own.
//!
//! The bench drives it through its standard input and output with [`Responder`]: one JSON
//! line listing the listeners at the start, then the commands `stats`, `reset` and `quit`.
//! It exits when that pipe closes, when the bench dies (PR_SET_PDEATHSIG), or after its
//! lifetime.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use testkit::smtp::{serve_listener, serve_session, Behaviour, Observed, Start, Watcher};
use tokio_rustls::TlsAcceptor;

use crate::child::{log_tail, Proc};
use crate::setup::Ctx;
use crate::subjects::{PASSWORD, USERNAME};
use crate::{sys, Context, Res};

/// Listeners that behave alike.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Group {
    /// Loopback addresses to listen on; each gets `per_addr` listeners on free ports, or
    /// one listener on `port` when it is not 0.
    pub addrs: Vec<String>,
    pub per_addr: usize,
    /// A fixed port on every address (the domain fleet: every MX of a domain answers on
    /// the domain's one port); 0 for free ports.
    #[serde(default)]
    pub port: u16,
    /// Delay between accepting and sending the greeting.
    pub banner_delay_us: u64,
    /// Delay before every later reply.
    pub reply_delay_us: u64,
    /// Offer STARTTLS (and AUTH only inside TLS); otherwise AUTH in the clear.
    pub tls: bool,
}

/// The responder's configuration file, written by the bench.
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
const GREETING: &[u8] = b"220 localhost ESMTP smtp-bench responder\r\n";
const MAX_RECORDED: usize = 500_000;

// --- the child process ------------------------------------------------------------------

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
    let acceptor = testkit::pki::acceptor_from_pem_files(&config.cert, &config.key)?;
    let listeners = bind_listeners(&config.groups)?;
    announce(&listeners, nofile)?;
    let stats = Arc::new(Stats::default());
    {
        let stats = stats.clone();
        thread::spawn(move || control(&stats));
    }
    let behaviours: Vec<Arc<Behaviour>> = config.groups.iter().map(|g| Arc::new(behaviour(g))).collect();
    let lifetime = Duration::from_secs(config.lifetime_s.max(1));
    if config.precise {
        for (listener, group) in listeners {
            let (behaviour, acceptor, stats) = (behaviours[group].clone(), acceptor.clone(), stats.clone());
            thread::spawn(move || serve_precisely(listener, behaviour, acceptor, stats));
        }
        thread::sleep(lifetime);
        return Ok(());
    }
    serve(listeners, &behaviours, acceptor, stats, lifetime)?;
    eprintln!("responder: lifetime of {}s reached, exiting", config.lifetime_s);
    Ok(())
}

/// The fake server's behaviour for a group: the bench's greeting and credentials, the
/// group's delays and TLS, and the responder's bounds on every session.
fn behaviour(group: &Group) -> Behaviour {
    Behaviour {
        greeting: GREETING.to_vec(),
        greeting_delay: Duration::from_micros(group.banner_delay_us),
        reply_delay: Duration::from_micros(group.reply_delay_us),
        starttls: group.tls,
        auth_before_tls: !group.tls,
        auth_mechanisms: vec!["PLAIN", "LOGIN"],
        username: USERNAME.into(),
        password: PASSWORD.into(),
        extra_ehlo_keywords: vec!["ENHANCEDSTATUSCODES".into()],
        max_line_bytes: MAX_LINE,
        max_commands: MAX_COMMANDS,
        session_time_limit: Some(SESSION_LIMIT),
        ..Behaviour::default()
    }
}

/// Binds `per_addr` listeners on free ports of each address of each group; every address
/// must be a loopback one. Returns each listener with its group's index.
fn bind_listeners(groups: &[Group]) -> Res<Vec<(TcpListener, usize)>> {
    let mut listeners = Vec::new();
    for (group_index, group) in groups.iter().enumerate() {
        for addr in &group.addrs {
            let ip: IpAddr = addr.parse().ctx(addr)?;
            if !ip.is_loopback() {
                return Err(format!("{addr} is not a loopback address"));
            }
            let count = if group.port == 0 { group.per_addr } else { 1 };
            for _ in 0..count {
                let listener = TcpListener::bind((ip, group.port)).ctx(&format!("bind {addr}"))?;
                listeners.push((listener, group_index));
            }
        }
    }
    Ok(listeners)
}

/// The first line on standard output: every listener's address and group, and the
/// open-file limit in force.
fn announce(listeners: &[(TcpListener, usize)], nofile: u64) -> Res<()> {
    let list: Vec<Value> = listeners
        .iter()
        .map(|(l, group)| {
            json!({"addr": l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "group": group})
        })
        .collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", json!({"listeners": list, "nofile": nofile})).ctx("stdout")?;
    out.flush().ctx("stdout")
}

/// Commands on standard input: `stats`, `reset`, `quit`. End of input ends the process,
/// so the responder never outlives the bench.
fn control(stats: &Stats) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let answer = match line.trim() {
            "stats" => stats.snapshot(),
            "reset" => {
                stats.reset();
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

/// Serves every listener with testkit's server on a multi-thread runtime, for `lifetime`.
fn serve(
    listeners: Vec<(TcpListener, usize)>,
    behaviours: &[Arc<Behaviour>],
    acceptor: TlsAcceptor,
    stats: Arc<Stats>,
    lifetime: Duration,
) -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().ctx("runtime")?;
    rt.block_on(async move {
        for (listener, group) in listeners {
            listener.set_nonblocking(true).ctx("nonblocking")?;
            let listener = tokio::net::TcpListener::from_std(listener).ctx("listener")?;
            let behaviour = Behaviour::clone(&behaviours[group]);
            tokio::spawn(serve_listener(listener, behaviour, acceptor.clone(), stats.clone()));
        }
        tokio::time::sleep(lifetime).await;
        Ok(())
    })
}

/// Precise mode: the greeting is delayed and written from the accept thread itself
/// (blocking, busy-wait precise), then a thread of its own serves the rest of the session
/// with testkit's server. At most [`MAX_PRECISE_THREADS`] sessions go on at once; the
/// connections beyond get the greeting only.
fn serve_precisely(
    listener: TcpListener,
    behaviour: Arc<Behaviour>,
    acceptor: TlsAcceptor,
    stats: Arc<Stats>,
) {
    static THREADS: AtomicUsize = AtomicUsize::new(0);
    for conn in listener.incoming() {
        let Ok(mut tcp) = conn else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let accepted = Instant::now();
        stats.accepted();
        let _ = tcp.set_nodelay(true);
        sys::precise_sleep_until(accepted + behaviour.greeting_delay);
        if tcp.write_all(&behaviour.greeting).is_err() {
            continue;
        }
        stats.greeted(accepted.elapsed());
        if THREADS.load(Ordering::Relaxed) >= MAX_PRECISE_THREADS {
            continue;
        }
        THREADS.fetch_add(1, Ordering::Relaxed);
        let (behaviour, acceptor, stats) = (behaviour.clone(), acceptor.clone(), stats.clone());
        thread::spawn(move || {
            serve_greeted(tcp, &behaviour, &acceptor, &stats);
            THREADS.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// The rest of a session whose greeting was written, on a current-thread runtime.
fn serve_greeted(tcp: std::net::TcpStream, behaviour: &Behaviour, acceptor: &TlsAcceptor, stats: &Stats) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    rt.block_on(async {
        if tcp.set_nonblocking(true).is_err() {
            return;
        }
        if let Ok(tcp) = tokio::net::TcpStream::from_std(tcp) {
            serve_session(tcp, behaviour, acceptor, Start::Greeted, stats).await;
        }
    });
}

/// What the responder counted and timed since the start or the last `reset`.
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

impl Watcher for Stats {
    fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let sec = sys::mono_ns() / 1_000_000_000;
        *self.per_sec.lock().expect("stats lock").entry(sec).or_default() += 1;
    }

    fn greeted(&self, after: Duration) {
        let mut delays = self.banner_delays_ns.lock().expect("stats lock");
        if delays.len() < MAX_RECORDED {
            delays.push(after.as_nanos() as u64);
        }
    }

    fn finished(&self, seen: &Observed) {
        if seen.tls_established {
            self.tls.fetch_add(1, Ordering::Relaxed);
        }
        if seen.authenticated {
            self.auth.fetch_add(1, Ordering::Relaxed);
        }
        match &seen.failure {
            None => self.completed.fetch_add(1, Ordering::Relaxed),
            Some(failure) => {
                self.first_error.lock().expect("stats lock").get_or_insert_with(|| failure.clone());
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

impl Stats {
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

// --- the bench's handle -----------------------------------------------------------------

/// A running responder, controlled through its standard input and output.
pub struct Responder {
    proc: Proc,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Every listener's address, in the order of the groups.
    pub listeners: Vec<SocketAddr>,
}

impl Responder {
    /// Writes the configuration, starts `smtp-bench --responder` and reads its listeners.
    pub fn start(ctx: &Ctx, name: &str, groups: Vec<Group>, precise: bool) -> Res<Responder> {
        let config = Config {
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
        let child = proc.child_mut().ok_or("responder: not running")?;
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

    pub fn pid(&self) -> u32 {
        self.proc.pid()
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

    /// Counts and times since the start or the last reset (see `Stats::snapshot`).
    pub fn stats(&mut self) -> Res<Value> {
        self.call("stats")
    }

    pub fn reset(&mut self) -> Res<()> {
        self.call("reset").map(|_| ())
    }
}

/// The counts of a `stats` answer, without the per-connection records.
pub fn stats_summary(stats: &Value) -> Value {
    json!({
        "accepted": stats["accepted"], "completed": stats["completed"], "failed": stats["failed"],
        "tls": stats["tls"], "auth": stats["auth"], "first_error": stats["first_error"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline;
    use testkit::pki::TestPki;

    fn group(tls: bool, banner_delay_us: u64, reply_delay_us: u64) -> Group {
        Group { addrs: vec!["127.0.0.1".into()], per_addr: 1, port: 0, banner_delay_us, reply_delay_us, tls }
    }

    /// Waits (bounded) until the responder has counted `n` finished sessions.
    async fn wait_finished(stats: &Stats, n: u64) {
        for _ in 0..400 {
            if stats.completed.load(Ordering::Relaxed) + stats.failed.load(Ordering::Relaxed) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The baseline's whole walk (STARTTLS, AUTH PLAIN with the bench's credentials,
    /// QUIT) against the responder's behaviour, in one process: the responder counts one
    /// complete, TLS, authenticated session, and times its greeting.
    #[tokio::test]
    async fn the_baseline_walk_completes_against_the_responder() {
        let pki = TestPki::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let behaviour = behaviour(&group(true, 5_000, 1_000));
        let server = tokio::spawn(serve_listener(listener, behaviour, pki.acceptor(), stats.clone()));
        let job = baseline::Job {
            target,
            ca_file: pki.ca_file.clone(),
            server_name: "localhost".into(),
            username: USERNAME.into(),
            password: PASSWORD.into(),
            warmup: 0,
            probes: 1,
            concurrency: 1,
            rate: 0.0,
        };
        baseline::once(&baseline::Probe::new(&job).unwrap()).await.unwrap();
        wait_finished(&stats, 1).await;
        server.abort();
        let s = stats.snapshot();
        let counts: Vec<&Value> =
            ["accepted", "completed", "failed", "tls", "auth"].iter().map(|k| &s[k]).collect();
        assert_eq!(counts, [1, 1, 0, 1, 1], "{s}");
        let delays = s["banner_delays_ns"].as_array().unwrap();
        assert!(delays.len() == 1 && delays[0].as_u64().unwrap() >= 5_000_000, "{delays:?}");
    }

    /// Precise mode: the accept thread writes the greeting after the delay, and testkit's
    /// server serves the rest of the session on a thread of its own.
    #[test]
    fn the_precise_path_times_the_greeting_and_serves_the_rest() {
        let pki = TestPki::new();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let behaviour = Arc::new(behaviour(&group(false, 3_000, 0)));
        {
            let (acceptor, stats) = (pki.acceptor(), stats.clone());
            thread::spawn(move || serve_precisely(listener, behaviour, acceptor, stats));
        }
        let mut client = BufReader::new(std::net::TcpStream::connect(target).unwrap());
        let mut greeting = String::new();
        client.read_line(&mut greeting).unwrap();
        assert_eq!(greeting.as_bytes(), GREETING);
        client.get_mut().write_all(b"EHLO client.test\r\nQUIT\r\n").unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut client, &mut rest).unwrap();
        assert!(rest.contains("250-AUTH PLAIN LOGIN\r\n") && rest.ends_with("221 2.0.0 Bye\r\n"), "{rest}");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(wait_finished(&stats, 1));
        let s = stats.snapshot();
        assert_eq!((&s["completed"], &s["failed"]), (&json!(1), &json!(0)), "{s}");
        assert!(s["banner_delays_ns"][0].as_u64().unwrap() >= 3_000_000, "{s}");
    }

    #[test]
    fn an_address_off_loopback_is_refused_before_binding() {
        let err =
            bind_listeners(&[Group { addrs: vec!["192.0.2.1".into()], ..group(true, 0, 0) }]).unwrap_err();
        assert_eq!(err, "192.0.2.1 is not a loopback address");
    }
}
