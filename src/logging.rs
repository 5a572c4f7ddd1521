//! Logging set-up: `--log.level` and `--log.format` (`logfmt` or `json`) through tracing.
//!
//! Beside the data flow: every stage logs through `tracing`, and `main` calls [`init`] once.
//! logfmt is what the official Prometheus exporters print (`ts=… level=… msg=… key=value`),
//! so existing log pipelines parse ours the same way.
//!
//! Kept by hand, on purpose: the line formatter (one visitor gives logfmt and JSON the
//! same keys, which no logfmt crate for tracing does), and the date arithmetic below
//! (`humantime` would format the timestamps in fewer lines, but it panics on dates before
//! 1970, and certificate dates, which `format_date` also prints, come from servers).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The output format of log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Logfmt,
    Json,
}

/// The minimum level of log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    fn to_tracing(self) -> Level {
        match self {
            LogLevel::Debug => Level::DEBUG,
            LogLevel::Info => Level::INFO,
            LogLevel::Warn => Level::WARN,
            LogLevel::Error => Level::ERROR,
        }
    }
}

/// Installs the global subscriber, writing to standard error. A line that cannot be
/// written (standard error closed, its pipe's reader gone) is dropped: tracing-subscriber
/// would otherwise report it with `eprintln!`, which panics when standard error is gone,
/// killing whichever task logged (the HTTP server, a spec's probes).
///
/// Only the exporter's own events are written: its libraries (hickory's resolver, rustls,
/// hyper) log in their own terms, some with `Debug` dumps of their structs, at levels that
/// are not an operator's. What of theirs matters reaches the log through our own lines,
/// once per cause and in words (a name server without DNSSEC, a failed handshake).
pub fn init(level: LogLevel, format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .event_format(Lines(format))
        .with_filter(own_events(level));
    tracing_subscriber::registry().with(layer).init();
}

/// The filter of [`init`]: the exporter's events at `level` and above, nothing else.
fn own_events(level: LogLevel) -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new()
        .with_target(env!("CARGO_CRATE_NAME"), level.to_tracing())
        .with_default(tracing_subscriber::filter::LevelFilter::OFF)
}

/// Formats each event as one line, in logfmt (`ts=<RFC 3339> level=<level> msg=<message>
/// <field>=<value>…`) or as a JSON object with the same keys. The keys are ours alone:
/// tracing's module path (which it calls `target`) is left out, so that a probe's `target`
/// field is the only `target`, and a field that would repeat `ts`, `level` or `msg` is
/// written as `field_<name>`.
pub struct Lines(pub LogFormat);

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        let line = match self.0 {
            LogFormat::Logfmt => fields.logfmt(&rfc3339_now(), &level),
            LogFormat::Json => fields.json(&rfc3339_now(), &level),
        };
        writeln!(writer, "{line}")
    }
}

/// An event's message and fields, in the order they were given.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    fields: Vec<(String, FieldValue)>,
}

/// A field's value: numbers and booleans stay numbers and booleans in JSON.
enum FieldValue {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, FieldValue::Text(value.to_owned()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, FieldValue::Text(format!("{value:?}")));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field, FieldValue::Number(value.into()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field, FieldValue::Number(value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field, FieldValue::Bool(value));
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: FieldValue) {
        let name = field.name();
        if name == "message" {
            self.message = Some(match value {
                FieldValue::Text(t) => t,
                FieldValue::Number(n) => n.to_string(),
                FieldValue::Bool(b) => b.to_string(),
            });
            return;
        }
        let key =
            if matches!(name, "ts" | "level" | "msg") { format!("field_{name}") } else { name.to_owned() };
        self.fields.push((key, value));
    }

    fn logfmt(&self, ts: &str, level: &str) -> String {
        let mut line = String::with_capacity(160);
        let _ = write!(line, "ts={ts} level={level}");
        if let Some(msg) = &self.message {
            line.push_str(" msg=");
            push_value(&mut line, msg);
        }
        for (key, value) in &self.fields {
            let _ = write!(line, " {key}=");
            match value {
                FieldValue::Text(t) => push_value(&mut line, t),
                FieldValue::Number(n) => line.push_str(&n.to_string()),
                FieldValue::Bool(b) => line.push_str(if *b { "true" } else { "false" }),
            }
        }
        line
    }

    fn json(&self, ts: &str, level: &str) -> String {
        let quote = |text: &str| serde_json::Value::from(text).to_string();
        let mut line = format!("{{\"ts\":{},\"level\":{}", quote(ts), quote(level));
        if let Some(msg) = &self.message {
            let _ = write!(line, ",\"msg\":{}", quote(msg));
        }
        let mut seen: Vec<&str> = Vec::with_capacity(self.fields.len());
        for (key, value) in &self.fields {
            // A key given twice in one event keeps its first value: one key, one value.
            if seen.contains(&key.as_str()) {
                continue;
            }
            seen.push(key);
            let value = match value {
                FieldValue::Text(t) => quote(t),
                FieldValue::Number(n) => n.to_string(),
                FieldValue::Bool(b) => b.to_string(),
            };
            let _ = write!(line, ",{}:{value}", quote(key));
        }
        line.push('}');
        line
    }
}

/// Appends a logfmt value, quoted and escaped when it holds spaces, quotes or `=`.
fn push_value(out: &mut String, value: &str) {
    let needs_quotes =
        value.is_empty() || value.chars().any(|c| c == ' ' || c == '"' || c == '=' || c.is_control());
    if !needs_quotes {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The current UTC time as RFC 3339 with milliseconds, without a date crate.
fn rfc3339_now() -> String {
    format_time(std::time::SystemTime::now())
}

/// A time as UTC RFC 3339 with milliseconds (`2026-11-30T08:00:00.123Z`).
pub fn format_time(at: std::time::SystemTime) -> String {
    let now = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// A Unix time as a UTC date, `YYYY-MM-DD`.
pub fn format_date(unix_secs: i64) -> String {
    let (y, m, d) = civil_from_days(unix_secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {

    /// One event formatted by [`Lines`] in `format`.
    fn line(format: LogFormat) -> String {
        let captured = crate::test_support::Captured::default();
        let subscriber =
            tracing_subscriber::fmt().with_writer(captured.writer()).event_format(Lines(format)).finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(ok = true, count = 3u64, delta = -2i64, ts = "x", msg = "y", "probe {} done", 7);
        });
        captured.text()
    }

    /// Issue 25: a library's events (hickory's Debug dumps among them) never reach the log,
    /// at any level; the exporter's own do, from the level asked.
    #[test]
    fn only_the_exporters_own_events_are_written() {
        use tracing::Level;
        let filter = own_events(LogLevel::Debug);
        for library in ["hickory_net::dnssec", "hickory_resolver", "rustls::conn", "hyper::proto", "log"] {
            assert!(!filter.would_enable(library, &Level::ERROR), "{library}");
        }
        assert!(filter.would_enable("smtp_exporter::dns", &Level::DEBUG));
        let warn = own_events(LogLevel::Warn);
        assert!(warn.would_enable("smtp_exporter", &Level::WARN));
        assert!(!warn.would_enable("smtp_exporter::scheduler", &Level::INFO));
    }

    /// Issue 17: the message, booleans, numbers and fields that would repeat `ts` or `msg`
    /// come out the same in both formats, typed in JSON.
    #[test]
    fn events_keep_their_message_and_typed_fields() {
        let logfmt = line(LogFormat::Logfmt);
        // ts=2026-11-30T14:01:21.123Z, now.
        let ts = logfmt.strip_prefix("ts=").and_then(|l| l.split(' ').next()).unwrap_or_default();
        let year = format_time(std::time::SystemTime::now())[..4].to_owned();
        assert!(ts.len() == 24 && ts.starts_with(&year) && ts.ends_with('Z'), "{logfmt}");
        assert!(
            logfmt.ends_with(
                " level=info msg=\"probe 7 done\" ok=true count=3 delta=-2 field_ts=x field_msg=y\n"
            ),
            "{logfmt}"
        );
        let json: serde_json::Value = serde_json::from_str(&line(LogFormat::Json)).unwrap();
        assert_eq!(json["msg"], "probe 7 done");
        assert_eq!(
            (&json["ok"], &json["count"], &json["delta"]),
            (&serde_json::json!(true), &serde_json::json!(3), &serde_json::json!(-2))
        );
        assert_eq!(
            (&json["field_ts"], &json["field_msg"]),
            (&serde_json::json!("x"), &serde_json::json!("y"))
        );
    }
    use super::*;

    #[test]
    fn values_are_quoted_when_needed() {
        let mut s = String::new();
        push_value(&mut s, "plain");
        s.push(' ');
        push_value(&mut s, "has space \"and\" quote");
        assert_eq!(s, r#"plain "has space \"and\" quote""#);
        for (value, written) in [
            ("a=b", r#""a=b""#),
            ("a\u{1}b", r#""a\u{1}b""#),
            ("", r#""""#),
            ("line\nbreak", r#""line\nbreak""#),
        ] {
            let mut s = String::new();
            push_value(&mut s, value);
            assert_eq!(s, written, "{value:?}");
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_420), (2025, 11, 28));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        // Before 1970 (certificates may say so), a century that is not a leap year, far on.
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(-25_567), (1900, 1, 1));
        assert_eq!(civil_from_days(-25_508), (1900, 3, 1));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
        assert_eq!(format_date(-86_400), "1969-12-31");
    }
}
