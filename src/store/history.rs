//! The recent results of one spec: a bounded ring of small entries, kept by the store.
//!
//! Part of the store: [`History::push`] runs for every recorded probe, and the status page's
//! strip and `/history` read it. The last `results` probes are kept whatever they were;
//! failures older than that are kept too, up to `failures` of them, so that a spec that
//! fails once an hour still shows its last failures after a day of successes. An entry is
//! 12 bytes, so the default bounds cost at most 480 bytes per spec (4.7 MiB at 10,000).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::HistoryBounds;
use crate::probe::{Phase, PortState, ProbeReport, Reason};

/// One probe, as the history keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// When the probe started, in Unix seconds.
    pub at: u32,
    /// How long it took, in microseconds (at most about 71 minutes).
    pub duration_us: u32,
    pub state: PortState,
    /// Where and why it failed; `None` for a success.
    pub phase: Option<Phase>,
    pub reason: Option<Reason>,
}

impl Entry {
    pub fn of(report: &ProbeReport) -> Entry {
        let at = report.started_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Entry {
            at: u32::try_from(at).unwrap_or(u32::MAX),
            duration_us: u32::try_from(report.duration.as_micros()).unwrap_or(u32::MAX),
            state: report.port_state(),
            phase: report.failure.as_ref().map(|f| f.phase),
            reason: report.failure.as_ref().map(|f| f.reason),
        }
    }

    pub fn success(&self) -> bool {
        self.reason.is_none()
    }

    pub fn started(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::from(self.at))
    }

    pub fn duration(&self) -> Duration {
        Duration::from_micros(u64::from(self.duration_us))
    }
}

/// A spec's recent results, oldest first.
#[derive(Clone, Debug, Default)]
pub struct History {
    entries: VecDeque<Entry>,
}

impl History {
    /// Adds the newest result, then forgets what `bounds` no longer keep: the oldest
    /// success beyond the last `results`, else the oldest failure beyond `failures` more.
    pub fn push(&mut self, entry: Entry, bounds: HistoryBounds) {
        self.entries.push_back(entry);
        while self.entries.len() > bounds.results {
            let older = self.entries.len() - bounds.results;
            if let Some(i) = (0..older).find(|&i| self.entries[i].success()) {
                self.entries.remove(i);
            } else if older > bounds.failures {
                self.entries.pop_front();
            } else {
                break;
            }
        }
    }

    /// Oldest first.
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &Entry> + ExactSizeIterator {
        self.entries.iter()
    }

    /// The share of successes among the last `results` probes, or `None` before any.
    pub fn uptime(&self, results: usize) -> Option<f64> {
        let recent: Vec<&Entry> = self.entries.iter().rev().take(results.max(1)).collect();
        if recent.is_empty() {
            return None;
        }
        Some(recent.iter().filter(|e| e.success()).count() as f64 / recent.len() as f64)
    }

    /// The bytes its entries take (what the bench reports per spec).
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: u32, ok: bool) -> Entry {
        Entry {
            at,
            duration_us: 1000,
            state: if ok { PortState::Open } else { PortState::Refused },
            phase: (!ok).then_some(Phase::Connect),
            reason: (!ok).then_some(Reason::Refused),
        }
    }

    #[test]
    fn failures_outlive_successes_within_their_own_bound() {
        assert_eq!(std::mem::size_of::<Entry>(), 12);
        let bounds = HistoryBounds { results: 5, failures: 2 };
        let mut h = History::default();
        // Three early failures among successes, then a long run of successes.
        for at in 0..40 {
            h.push(entry(at, !matches!(at, 3 | 7 | 9)), bounds);
        }
        let kept: Vec<(u32, bool)> = h.entries().map(|e| (e.at, e.success())).collect();
        // The last 5 probes, and the 2 latest failures before them; failure 3 is gone.
        assert_eq!(
            kept,
            vec![(7, false), (9, false), (35, true), (36, true), (37, true), (38, true), (39, true)]
        );
        assert_eq!(h.uptime(5), Some(1.0));
        assert_eq!(h.uptime(7), Some(5.0 / 7.0));
        // A new failure, then five successes push it out of the last 5: the oldest
        // failure makes room for it.
        h.push(entry(40, false), bounds);
        assert_eq!(h.uptime(5), Some(0.8));
        for at in 41..46 {
            h.push(entry(at, true), bounds);
        }
        let kept: Vec<u32> = h.entries().map(|e| e.at).collect();
        assert_eq!(kept, vec![9, 40, 41, 42, 43, 44, 45]);

        let mut none = History::default();
        none.push(entry(1, true), HistoryBounds { results: 0, failures: 0 });
        assert_eq!((none.entries().len(), none.uptime(30)), (0, None));

        // No results kept, but the last two failures.
        let mut failures_only = History::default();
        for (at, ok) in [(1, false), (2, true), (3, false), (4, false), (5, true)] {
            failures_only.push(entry(at, ok), HistoryBounds { results: 0, failures: 2 });
        }
        let kept: Vec<u32> = failures_only.entries().map(|e| e.at).collect();
        assert_eq!(kept, vec![3, 4]);
    }
}
