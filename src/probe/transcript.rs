//! The transcript of one probe: every line sent and received, and what happened between
//! them (connect, TLS), with times from the start of the probe.
//!
//! Part of the probe: the walk (`probe::mod`) and its sessions write into one
//! [`Recorder`]; the finished transcript rides on the report. `/probe?debug=true` prints it,
//! and the store keeps the last failing one of every scheduled spec for the status page's
//! link. It is bounded in lines and bytes (a hostile server cannot grow it), control bytes
//! are shown escaped, and credentials never enter it: AUTH lines are written as the
//! session's `shown` form, and every secret of the probe's [`Secrets`] (the passwords, a
//! token, in every encoding a server could echo) is replaced wherever it appears.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::secrets::Secrets;

/// The most lines a transcript keeps; later ones are counted, not kept.
pub const MAX_LINES: usize = 120;
/// The most bytes of text a transcript keeps.
pub const MAX_BYTES: usize = 12 * 1024;
/// The longest line kept, in characters; longer ones are cut with a mark.
const MAX_LINE_CHARS: usize = 300;

/// Who a line is from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// A command the probe sent.
    Sent,
    /// A reply line from the server.
    Received,
    /// What the probe did or saw besides: connect, TLS, the result.
    Note,
}

impl Dir {
    fn mark(self) -> &'static str {
        match self {
            Dir::Sent => "C:",
            Dir::Received => "S:",
            Dir::Note => "* ",
        }
    }
}

/// One line of a transcript.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Since the start of the probe.
    pub at: Duration,
    pub dir: Dir,
    pub text: String,
}

/// A probe's transcript.
#[derive(Clone, Debug)]
pub struct Transcript {
    start: Instant,
    lines: Vec<Line>,
    bytes: usize,
    /// Lines not kept because a bound was reached.
    dropped: usize,
    /// Strings never to show: the probe's, shared with its walk.
    secrets: Secrets,
}

/// A transcript shared by the walk and its sessions.
pub type Recorder = Arc<Mutex<Transcript>>;

impl Transcript {
    /// A transcript that never shows what `secrets` holds, now or once added.
    pub fn new(start: Instant, secrets: Secrets) -> Transcript {
        Transcript { start, lines: Vec::new(), bytes: 0, dropped: 0, secrets }
    }

    /// A recorder for a probe that starts at `start`.
    pub fn recorder(start: Instant, secrets: Secrets) -> Recorder {
        Arc::new(Mutex::new(Transcript::new(start, secrets)))
    }

    /// Adds a line, now: redacted, escaped and cut to length, unless a bound is reached.
    pub fn push(&mut self, dir: Dir, text: &str) {
        if self.lines.len() >= MAX_LINES || self.bytes >= MAX_BYTES {
            self.dropped += 1;
            return;
        }
        let clean = self.secrets.redact(text);
        let mut shown = String::with_capacity(clean.len().min(MAX_LINE_CHARS + 8));
        for (i, c) in clean.chars().enumerate() {
            if i == MAX_LINE_CHARS {
                let _ = write!(shown, "… ({} characters)", clean.chars().count());
                break;
            }
            if c.is_control() {
                let _ = write!(shown, "\\x{:02x}", u32::from(c));
            } else {
                shown.push(c);
            }
        }
        if self.bytes + shown.len() > MAX_BYTES {
            self.dropped += 1;
            self.bytes = MAX_BYTES;
            return;
        }
        self.bytes += shown.len();
        self.lines.push(Line { at: self.start.elapsed(), dir, text: shown });
    }

    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// How many lines were not kept.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The transcript as text: one line each, `   12.345 ms C: EHLO ...`.
    pub fn render(&self, out: &mut String) {
        for line in &self.lines {
            let _ =
                writeln!(out, "{:>10.3} ms {} {}", line.at.as_secs_f64() * 1e3, line.dir.mark(), line.text);
        }
        if self.dropped > 0 {
            let _ = writeln!(
                out,
                "           ({} more lines not kept: a transcript keeps {MAX_LINES} lines and {MAX_BYTES} bytes)",
                self.dropped
            );
        }
    }
}

/// Writes `text` as `dir` into `recorder`, when there is one.
pub fn note(recorder: &Option<Recorder>, dir: Dir, text: &str) {
    if let Some(recorder) = recorder {
        recorder.lock().unwrap_or_else(|e| e.into_inner()).push(dir, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_wherever_they_appear_and_bounds_hold() {
        let secrets = Secrets::default();
        let mut t = Transcript::new(Instant::now(), secrets.clone());
        secrets.add("passw");
        t.push(Dir::Sent, "AUTH PLAIN AHVzZXIAcGFzc3c=");
        t.push(Dir::Received, "535 5.7.8 no: AHVzZXIAcGFzc3c passw\r");
        let text: Vec<&str> = t.lines().iter().map(|l| l.text.as_str()).collect();
        assert_eq!(text, ["AUTH PLAIN AHVz<redacted>", "535 5.7.8 no: AHVz<redacted> <redacted>\\x0d"]);

        let long = "x".repeat(1000);
        t.push(Dir::Received, &long);
        assert_eq!(t.lines()[2].text, format!("{}… (1000 characters)", "x".repeat(MAX_LINE_CHARS)));
        for _ in 0..1000 {
            t.push(Dir::Received, "250-a hostile server says a lot");
        }
        assert_eq!(t.lines().len(), MAX_LINES);
        assert!(t.bytes <= MAX_BYTES);
        assert_eq!(t.dropped(), 1003 - MAX_LINES);
        let mut out = String::new();
        t.render(&mut out);
        assert!(out.ends_with(&format!(
            "({} more lines not kept: a transcript keeps 120 lines and 12288 bytes)\n",
            1003 - MAX_LINES
        )));
        assert!(out.contains("C: AUTH PLAIN AHVz<redacted>"), "{out}");
    }

    #[test]
    fn the_byte_bound_holds_with_long_lines() {
        let mut t = Transcript::new(Instant::now(), Secrets::default());
        for _ in 0..100 {
            t.push(Dir::Received, &"y".repeat(400));
        }
        // Each line is cut to 300 characters and marked: 320 bytes; 38 fit in 12,288.
        assert_eq!(t.lines()[0].text.len(), 320);
        assert_eq!((t.lines().len(), t.dropped()), (38, 62));
        assert!(t.lines().iter().map(|l| l.text.len()).sum::<usize>() <= MAX_BYTES);
    }

    /// A line that fills the transcript to exactly its byte bound is kept; the next is not.
    #[test]
    fn the_byte_bound_is_inclusive() {
        let mut t = Transcript::new(Instant::now(), Secrets::default());
        for _ in 0..40 {
            t.push(Dir::Received, &"a".repeat(300));
        }
        t.push(Dir::Received, &"b".repeat(MAX_BYTES - 40 * 300));
        assert_eq!((t.lines().len(), t.dropped()), (41, 0));
        t.push(Dir::Received, "c");
        assert_eq!((t.lines().len(), t.dropped()), (41, 1));
    }

    /// A secret added after the transcript began is hidden in the lines that follow.
    #[test]
    fn a_secret_added_later_is_hidden_from_then_on() {
        let secrets = Secrets::default();
        let mut t = Transcript::new(Instant::now(), secrets.clone());
        secrets.add("");
        t.push(Dir::Sent, "EHLO pw");
        secrets.add("pw");
        t.push(Dir::Sent, "EHLO pw");
        assert_eq!(t.lines()[0].text, "EHLO pw");
        assert_eq!(t.lines()[1].text, "EHLO <redacted>");
        // Nothing was dropped: the rendering says nothing of it.
        let mut out = String::new();
        t.render(&mut out);
        assert_eq!(out.lines().count(), 2, "{out}");
    }
}
