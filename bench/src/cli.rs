//! The command line (`clap`) and the plan made from it: every size, count and delay of the
//! run, with the quick or full defaults filled in and bounds applied, built once before
//! anything starts.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::Res;

/// Benchmarks smtp_exporter against baselines measured in the same run: CPU per probe,
/// a simulated fleet, and timing accuracy. Loopback traffic only.
#[derive(Parser, Debug)]
#[command(name = "smtp-bench", version)]
pub struct Opts {
    /// Short run (about 1.5 minutes): fewer probes and samples, 2,500 specs at 15 s
    /// instead of 10,000 at 60 s (the same probe rate); /metrics at 10,000 specs is then
    /// extrapolated.
    #[arg(long)]
    pub quick: bool,
    /// Also write machine-readable results to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// The exporter binary [default: smtp_exporter next to this binary, built first].
    #[arg(long, value_name = "PATH")]
    pub exporter: Option<PathBuf>,
    /// Do not run `cargo build -p smtp_exporter` before starting.
    #[arg(long)]
    pub no_build: bool,
    /// blackbox_exporter binary [default: prometheus-blackbox-exporter or blackbox_exporter on PATH].
    #[arg(long, value_name = "PATH")]
    pub blackbox: Option<PathBuf>,
    /// Leave blackbox_exporter out.
    #[arg(long)]
    pub skip_blackbox: bool,
    /// Parts to run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "cpu,scale,accuracy,domains")]
    pub sections: Vec<Section>,
    /// Key type of the test CA and the responder's certificate.
    #[arg(long, value_enum, default_value = "rsa")]
    pub key: KeyType,
    /// Probes per subject in the CPU comparison [full: 2000, quick: 300].
    #[arg(long)]
    pub probes: Option<usize>,
    /// Probes in flight at once in the CPU comparison.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Specs of the scheduled-path CPU measurement.
    #[arg(long, default_value_t = 500)]
    pub sched_specs: usize,
    /// Interval of the scheduled-path specs, seconds.
    #[arg(long, default_value_t = 10)]
    pub sched_interval: u64,
    /// Window of the scheduled-path measurement, seconds [full: 30, quick: 10].
    #[arg(long)]
    pub sched_window: Option<u64>,
    /// Specs in the simulated fleet [full: 10000, quick: 2500].
    #[arg(long)]
    pub fleet_specs: Option<usize>,
    /// Probe interval of the fleet, seconds [full: 60, quick: 15].
    #[arg(long)]
    pub fleet_interval: Option<u64>,
    /// Steady-state window measured, seconds [default: one interval].
    #[arg(long)]
    pub fleet_window: Option<u64>,
    /// Loopback addresses the fleet listens on (127.0.1.1, 127.0.1.2, ...).
    #[arg(long, default_value_t = 100)]
    pub fleet_addrs: usize,
    /// Listening ports per fleet address.
    #[arg(long, default_value_t = 10)]
    pub fleet_ports: usize,
    /// Delay before the fleet's greeting, milliseconds.
    #[arg(long, default_value_t = 20)]
    pub fleet_banner_delay_ms: u64,
    /// Delay before each later reply of the fleet, milliseconds.
    #[arg(long, default_value_t = 2)]
    pub fleet_reply_delay_ms: u64,
    /// Plain-SMTP fleet (no STARTTLS, no AUTH) instead of STARTTLS + AUTH.
    #[arg(long)]
    pub fleet_plain: bool,
    /// Smaller exporters for the /metrics latency curve; the fleet is the largest point.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub scrape_sizes: Vec<usize>,
    /// Scrapes per size; the median is reported [full: 7, quick: 5].
    #[arg(long)]
    pub scrapes: Option<usize>,
    /// Injected greeting delays, milliseconds.
    #[arg(long, value_delimiter = ',', default_value = "0,10,100")]
    pub accuracy_delays: Vec<u64>,
    /// Probes per injected delay [full: 300, quick: 100].
    #[arg(long)]
    pub accuracy_samples: Option<usize>,
    /// Mail domains of the domain fleet, each 2 MX x 2 families [full: 2000, quick: 500].
    #[arg(long)]
    pub domains: Option<usize>,
    /// Probe interval of the domain fleet, and the TTL of its zone, seconds [full: 60, quick: 20].
    #[arg(long)]
    pub domain_interval: Option<u64>,
    /// Keep the temporary directory (configurations, certificates, logs).
    #[arg(long)]
    pub keep_temp: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Cpu,
    Scale,
    Accuracy,
    /// Mail domains walked through a real name server (needs knotd).
    Domains,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// RSA 2048 (what most mail servers present).
    Rsa,
    /// ECDSA P-256.
    Ec,
}

/// The settings in force, defaults filled and bounds applied.
pub struct Plan {
    pub quick: bool,
    pub probes: usize,
    pub warmup: usize,
    pub concurrency: usize,
    pub sched_specs: usize,
    pub sched_interval: u64,
    pub sched_window: u64,
    pub fleet_specs: usize,
    pub fleet_interval: u64,
    pub fleet_window: u64,
    pub fleet_addrs: usize,
    pub fleet_ports: usize,
    pub fleet_banner_ms: u64,
    pub fleet_reply_ms: u64,
    pub fleet_tls: bool,
    pub scrape_sizes: Vec<usize>,
    pub scrapes: usize,
    pub acc_delays: Vec<u64>,
    pub acc_samples: usize,
    pub domains: usize,
    pub domain_interval: u64,
}

impl Plan {
    pub fn new(o: &Opts, nofile: u64) -> Res<Plan> {
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
            domains: o.domains.unwrap_or(if q { 500 } else { 2000 }).clamp(1, 20_000),
            domain_interval: o.domain_interval.unwrap_or(if q { 20 } else { 60 }).clamp(5, 3600),
        };
        let listeners = (plan.fleet_addrs * plan.fleet_ports).max(2 * plan.domains + 1) as u64;
        if listeners + 1024 > nofile {
            return Err(format!(
                "{listeners} fleet listeners do not fit the open-file limit {nofile}; lower --fleet-addrs or --fleet-ports"
            ));
        }
        Ok(plan)
    }
}
