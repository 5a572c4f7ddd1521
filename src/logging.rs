//! Logging set-up: `--log.level` and `--log.format` (`logfmt` or `json`) through tracing.
//!
//! Beside the data flow: every stage logs through `tracing`, and `main` calls [`init`] once.
//! logfmt is what the official Prometheus exporters print (`ts=… level=… msg=… key=value`),
//! so existing log pipelines parse ours the same way.

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

/// Installs the global subscriber, writing to standard error.
pub fn init(level: LogLevel, format: LogFormat) {
    let builder = tracing_subscriber::fmt().with_max_level(level.to_tracing()).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Logfmt => builder.event_format(Logfmt).init(),
    }
}

/// Formats events as logfmt: `ts=<RFC 3339> level=<level> msg=<message> <field>=<value>…`.
pub struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
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
        let meta = event.metadata();
        let mut line = String::with_capacity(160);
        write!(line, "ts={} level={}", rfc3339_now(), meta.level().as_str().to_ascii_lowercase())?;
        let mut visitor = LogfmtVisitor { message: None, fields: String::new() };
        event.record(&mut visitor);
        if let Some(msg) = visitor.message {
            line.push_str(" msg=");
            push_value(&mut line, &msg);
        }
        line.push_str(&visitor.fields);
        writeln!(writer, "{line}")
    }
}

struct LogfmtVisitor {
    message: Option<String>,
    fields: String,
}

impl Visit for LogfmtVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl LogfmtVisitor {
    fn record(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = Some(value);
        } else {
            self.fields.push(' ');
            self.fields.push_str(field.name());
            self.fields.push('=');
            push_value(&mut self.fields, &value);
        }
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
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
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
    use super::*;

    #[test]
    fn values_are_quoted_when_needed() {
        let mut s = String::new();
        push_value(&mut s, "plain");
        s.push(' ');
        push_value(&mut s, "has space \"and\" quote");
        assert_eq!(s, r#"plain "has space \"and\" quote""#);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_420), (2025, 11, 28));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
