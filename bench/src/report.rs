//! What the bench prints and writes: result lines on standard output, progress on standard
//! error, a verdict per target gathered by the sections, the closing summary, the JSON
//! document, and the small statistics the sections share.

use std::io::Write;
use std::time::Instant;

use serde_json::{json, Value};

/// A line of results on standard output, flushed at once so that a long run shows its
/// progress.
pub fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// A progress line on standard error, stamped with the wall-clock time (UTC).
pub fn progress(msg: &str) {
    eprintln!("[{}] {msg}", clock());
}

fn clock() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{:02}:{:02}:{:02}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Miss,
    Skip,
    /// Measured for context; no target.
    Info,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Miss => "MISS",
            Status::Skip => "SKIP",
            Status::Info => "info",
        }
    }
}

/// One line of the summary: a target, what was measured, the goal and the outcome.
struct Verdict {
    target: String,
    measured: String,
    goal: String,
    status: Status,
}

/// The run's results: the JSON document and the verdicts, filled in by the sections.
#[derive(Default)]
pub struct Report {
    pub json: serde_json::Map<String, Value>,
    verdicts: Vec<Verdict>,
}

impl Report {
    /// A figure shown in the summary for context, without a goal.
    pub fn info(&mut self, target: &str, measured: String) {
        self.verdicts.push(Verdict {
            target: target.to_owned(),
            measured,
            goal: "-".into(),
            status: Status::Info,
        });
    }

    /// A target's outcome; `pass` is `None` when it could not be measured.
    pub fn verdict(&mut self, target: &str, measured: String, goal: &str, pass: Option<bool>) {
        let status = match pass {
            Some(true) => Status::Pass,
            Some(false) => Status::Miss,
            None => Status::Skip,
        };
        self.verdicts.push(Verdict { target: target.to_owned(), measured, goal: goal.to_owned(), status });
    }

    /// Prints the summary table, the load average and the run time, and adds them to the
    /// JSON document.
    pub fn print_summary(&mut self, started: Instant) {
        out("");
        out("== Summary: targets");
        out(&format!("  {:<66} {:>26}  {:<10} result", "target", "measured", "goal"));
        for v in &self.verdicts {
            out(&format!("  {:<66} {:>26}  {:<10} {}", v.target, v.measured, v.goal, v.status.label()));
        }
        let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        out(&format!("  load average at the end: {}", loadavg.trim()));
        out(&format!("  total bench time: {:.0} s", started.elapsed().as_secs_f64()));
        let verdicts: Vec<Value> = self
            .verdicts
            .iter()
            .map(|v| {
                json!({
                    "target": v.target, "measured": v.measured, "goal": v.goal, "result": v.status.label(),
                })
            })
            .collect();
        self.json.insert("targets".into(), json!(verdicts));
        self.json.insert("loadavg_end".into(), json!(loadavg.trim()));
        self.json.insert("total_seconds".into(), json!(started.elapsed().as_secs_f64()));
    }
}

/// The `p`th percentile (nearest rank) of sorted values; NaN when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}
