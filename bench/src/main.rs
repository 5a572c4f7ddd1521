//! `smtp-bench`: performance and scale benchmark of smtp_exporter. Linux only.
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
//! 3. accuracy: the reported `banner` phase against delays injected by the responder;
//! 4. domains: a fleet of mail domains walked through a real name server (knot), against
//!    the same addresses probed as static targets: CPU per probe, RSS, DNS queries.
//!
//! The SMTP responder and the baseline client are this same binary re-executed with
//! `--responder` / `--baseline-client`, so that each subject's CPU is read from its own
//! process and never includes the responder's. Every child dies with the bench
//! (PR_SET_PDEATHSIG, and an explicit stop on every exit path). Only loopback addresses
//! are used; every loop is bounded in count or in time. See BENCHMARKS.md.
//!
//! Linux only: CPU and memory are read from `/proc`, clocks and limits through Linux calls
//! (`clock_gettime`, `getrusage`, `setrlimit`), children are tied to the bench with
//! `prctl(PR_SET_PDEATHSIG)`, and the fleet listens on 127.0.x.y, which Linux routes to
//! loopback with no set-up.
//!
//! Modules, in the order a run uses them:
//! - [`cli`]: the options, and the plan made from them (defaults filled, bounds applied);
//! - [`setup`]: what every section needs: temporary directory, certificates, the exporter
//!   binary (built first), blackbox_exporter, the machine's description;
//! - [`subjects`]: the exporter and blackbox_exporter as processes, their configurations,
//!   and probes driven through their `/probe`;
//! - [`responder`]: the SMTP responder child process (testkit's fake server on many
//!   loopback listeners) and the handle the bench controls it with;
//! - [`baseline`]: the hand-written client child process, the CPU baseline;
//! - [`cpu`], [`scale`], [`accuracy`], [`domains`]: the four sections;
//! - [`report`]: console lines, verdicts, the summary, statistics;
//! - [`sys`], [`child`]: Linux calls, and child processes that die with the bench.

// serde_json's json! macro recurses once per key; the scale results are one big object.
#![recursion_limit = "256"]

mod accuracy;
mod baseline;
mod child;
mod cli;
mod cpu;
mod domains;
mod report;
mod responder;
mod scale;
mod setup;
mod subjects;
mod sys;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};

use crate::cli::{Opts, Section};
use crate::report::{out, progress, Report};
use crate::setup::Ctx;

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
        _ => bench_main(),
    }
}

fn bench_main() -> ExitCode {
    let opts = Opts::parse();
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smtp-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The whole benchmark: set-up, header, the sections asked for, summary, JSON.
fn run(opts: &Opts) -> Res<()> {
    let started = Instant::now();
    let (ctx, tmp) = setup::prepare(opts)?;
    let mut report = Report::default();
    print_header(&ctx, &mut report);
    run_sections(&ctx, &opts.sections, &mut report);
    report.print_summary(started);
    if let Some(path) = &opts.json {
        let text = serde_json::to_string_pretty(&Value::Object(report.json)).ctx("json")?;
        std::fs::write(path, text + "\n").ctx(&path.display().to_string())?;
        progress(&format!("wrote {}", path.display()));
    }
    drop(tmp);
    Ok(())
}

/// What was run, on what, and how busy the machine was before the start.
fn print_header(ctx: &Ctx, report: &mut Report) {
    let machine = setup::machine_info(ctx);
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
        "  open files: soft {}, hard {}; certificates: {}",
        ctx.nofile.0, ctx.nofile.1, ctx.certs.describe
    ));
    let busy = setup::machine_busy(Duration::from_secs(2));
    out(&format!(
        "  machine busy before start: {:.0}% of {} cores{}",
        busy * 100.0,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        if busy > 0.1 { "  WARNING: other work is running; results will be noisy" } else { "" }
    ));
    report.json.insert("machine".into(), machine);
    report.json.insert("machine_busy_before_start".into(), json!(busy));
    report.json.insert("quick".into(), json!(ctx.plan.quick));
}

/// Runs each section asked for; a section that fails is reported, and the others still run.
fn run_sections(ctx: &Ctx, sections: &[Section], report: &mut Report) {
    type SectionFn = fn(&Ctx, &mut Report) -> Res<()>;
    let all: [(Section, &str, &str, SectionFn); 4] = [
        (Section::Cpu, "CPU", "cpu_error", cpu::section),
        (Section::Scale, "scale", "scale_error", scale::section),
        (Section::Accuracy, "accuracy", "accuracy_error", accuracy::section),
        (Section::Domains, "domains", "domains_error", domains::section),
    ];
    for (section, name, json_key, run) in all {
        if !sections.contains(&section) {
            continue;
        }
        if let Err(e) = run(ctx, report) {
            out(&format!("  {name} section failed: {e}"));
            report.json.insert(json_key.into(), json!(e));
        }
    }
}
