//! Linux calls of the bench: CLOCK_MONOTONIC, clock ticks, open-file limits, CPU and memory
//! of processes from `/proc`, and a sleep precise to a few microseconds.
//!
//! Used by every part of the bench: the sections read the subjects' CPU and memory, the
//! responder stamps accepts with the monotonic clock and times precise greetings. Linux
//! only (`/proc/<pid>/stat`, `/proc/<pid>/status`, `/proc/stat`).

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
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
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

/// Sleeps until CLOCK_MONOTONIC reaches `target_ns`, in steps of at most 200 ms.
pub fn sleep_until_mono(target_ns: u64) {
    // Bounded: the target is at most a few thousand seconds away.
    loop {
        let now = mono_ns();
        if now >= target_ns {
            return;
        }
        std::thread::sleep(Duration::from_nanos((target_ns - now).min(200_000_000)));
    }
}
