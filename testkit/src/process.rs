//! A child process run to its end, with its own peak resident memory.
//!
//! Used by the exporter's tests that hold a command to a memory bound (`check --deliver`
//! against a server announcing a huge literal). The kernel's `ru_maxrss` of a child is no
//! use here: a child started by `posix_spawn` (what `std::process::Command` uses) shares
//! its parent's memory until it execs, and Linux counts the parent's high-water mark into
//! the child's. The child's own `VmHWM` (the high-water mark of the memory it got at exec)
//! is read from `/proc` while it runs instead; it only grows, so the last value read before
//! the child exits is its peak, unless the peak came in the last poll interval.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How often the child's high-water mark is read.
const POLL: Duration = Duration::from_millis(1);

/// What a measured run gave.
#[derive(Debug)]
pub struct Measured {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// The child's own peak resident memory in KiB (`None` where /proc does not say).
    pub peak_kib: Option<u64>,
    /// Its standard output, then its standard error.
    pub output: String,
}

/// Runs `command` to its end, reading its high-water mark as it runs.
pub fn run_measured(mut command: Command) -> std::io::Result<Measured> {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let (mut out, mut err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = None;
    let status = loop {
        if let Some(kib) = std::fs::read_to_string(&status_file).ok().as_deref().and_then(high_water_kib) {
            peak_kib = Some(peak_kib.map_or(kib, |p: u64| p.max(kib)));
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(POLL);
    };
    let output = stdout.join().unwrap_or_default() + &stderr.join().unwrap_or_default();
    Ok(Measured { code: status.code(), peak_kib, output })
}

/// The `VmHWM` line of a `/proc/PID/status` text, in KiB.
fn high_water_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_high_water_mark_is_read_from_the_status_text() {
        assert_eq!(
            high_water_kib("Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    4321 kB\nVmRSS:\t 4000 kB\n"),
            Some(4321)
        );
        assert_eq!(high_water_kib("Name:\tx\nState:\tZ (zombie)\n"), None);
    }

    /// A child that takes 40 MiB shows at least that, and one that takes little shows
    /// little, whatever this (larger) test process holds.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_child_is_measured_apart_from_its_parent() {
        let _ballast = vec![1u8; 64 << 20];
        let big = run_measured({
            let mut c = Command::new("sh");
            c.args(["-c", "v=$(head -c 41943040 /dev/zero | tr '\\0' x); sleep 0.05"]);
            c
        })
        .unwrap();
        assert_eq!(big.code, Some(0), "{}", big.output);
        let small = run_measured({
            let mut c = Command::new("sleep");
            c.arg("0.05");
            c
        })
        .unwrap();
        assert!(small.peak_kib.unwrap() < 8 << 10, "{small:?}");
        assert!(big.peak_kib.unwrap() >= 40 << 10, "{big:?}");
    }
}
