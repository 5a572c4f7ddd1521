//! What every section needs, prepared once before the first: the plan, a temporary
//! directory, a private CA and a `localhost` certificate (openssl), the exporter binary
//! (built first so that it matches the source), blackbox_exporter when installed, and a
//! description of the machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::{KeyType, Opts, Plan};
use crate::report::progress;
use crate::{sys, Context, Res};

/// What every section needs.
pub struct Ctx {
    /// This binary, re-executed as the responder and the baseline client.
    pub exe: PathBuf,
    pub exporter_bin: PathBuf,
    pub blackbox_bin: Option<PathBuf>,
    pub tmp: PathBuf,
    pub certs: Certs,
    pub plan: Plan,
    /// Clock ticks per second of `/proc`.
    pub tck: f64,
    /// RLIMIT_NOFILE (soft, hard) in force, inherited by every child.
    pub nofile: (u64, u64),
}

/// The files of the private PKI.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub describe: &'static str,
}

/// The temporary directory, removed at the end unless --keep-temp.
pub struct TempDir {
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

/// Raises the open-file limit, makes the plan, the temporary directory and the
/// certificates, and finds (or builds) the binaries. The directory lives as long as the
/// returned guard.
pub fn prepare(opts: &Opts) -> Res<(Ctx, TempDir)> {
    let nofile = sys::raise_nofile();
    let plan = Plan::new(opts, nofile.0)?;
    let tmp_path = std::env::temp_dir().join(format!("smtp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp_path).ctx("temporary directory")?;
    let tmp = TempDir { path: tmp_path, keep: opts.keep_temp };
    let exe = std::env::current_exe().ctx("current_exe")?;
    let exporter_bin = locate_exporter(opts, &exe)?;
    let blackbox_bin = if opts.skip_blackbox { None } else { find_blackbox(opts) };
    let certs = make_certs(&tmp.path, opts.key)?;
    let ctx = Ctx {
        exe,
        exporter_bin,
        blackbox_bin,
        tmp: tmp.path.clone(),
        certs,
        plan,
        tck: sys::clk_tck(),
        nofile,
    };
    Ok((ctx, tmp))
}

/// The exporter binary: `--exporter`, or `smtp_exporter` next to the bench, built first
/// unless `--no-build`.
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
        build_exporter(dir, release)?;
    }
    if !bin.exists() {
        return Err(format!(
            "{} not found: build it (cargo build --release) or pass --exporter PATH",
            bin.display()
        ));
    }
    Ok(bin)
}

/// `cargo build -p smtp_exporter` into the bench's own target directory and profile.
fn build_exporter(bin_dir: &Path, release: bool) -> Res<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The exporter is the workspace's root package, one directory above the bench.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    progress("building the exporter (cargo build -p smtp_exporter) so it matches the source");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "smtp_exporter", "--bin", "smtp_exporter", "--manifest-path"])
        .arg(&manifest);
    if release {
        cmd.arg("--release");
    }
    if let Some(target_dir) = bin_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target_dir);
    }
    // `cargo run` gives the bench the variables of its own package. Passed on, they reach
    // build scripts that watch them (ring's watches CARGO_MANIFEST_DIR), which then rebuild
    // ring and all above it here, and again at the next `cargo run`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || ["CARGO_CRATE_NAME", "CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE"].contains(&name.as_ref())
        {
            cmd.env_remove(name.as_ref());
        }
    }
    let status = cmd.stdin(Stdio::null()).status().ctx("cargo build")?;
    if !status.success() {
        return Err(format!("cargo build --bin smtp_exporter failed ({status})"));
    }
    Ok(())
}

/// blackbox_exporter: `--blackbox`, or the Debian or upstream name on PATH.
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

pub fn machine_info(ctx: &Ctx) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim()))
        .unwrap_or("unknown")
        .to_owned();
    let nproc = thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
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
        "nofile_soft": ctx.nofile.0,
        "nofile_hard": ctx.nofile.1,
    })
}

/// Fraction of all CPUs busy over `span`.
pub fn machine_busy(span: Duration) -> f64 {
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
        return Err(format!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
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
