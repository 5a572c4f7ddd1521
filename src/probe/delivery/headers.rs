//! What a delivered message's header says: the probe's token, the Authentication-Results
//! verdicts (RFC 8601) and the number of Received hops.
//!
//! Pure functions over the header bytes that `delivery::imap` fetched; the probe walk puts
//! their result in the report's `DeliveryOutcome`.

/// The header that carries a probe message's token. The sweep matches messages by this
/// header only, never by anything else.
pub const TOKEN_HEADER: &str = "X-Smtp-Exporter-Probe";

/// What the header says about the message's path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathInfo {
    /// The newest Authentication-Results header that names the method says `pass`.
    pub dkim_pass: bool,
    pub spf_pass: bool,
    pub dmarc_pass: bool,
    /// Received header fields: one per MTA that handled the message.
    pub received_hops: u32,
}

impl PathInfo {
    /// The verdicts by method name, in a fixed order: the label values.
    pub fn verdicts(&self) -> [(&'static str, bool); 3] {
        [("dkim", self.dkim_pass), ("spf", self.spf_pass), ("dmarc", self.dmarc_pass)]
    }
}

/// The header's fields as (name, unfolded value), in order. Lines that are neither a
/// field nor a continuation are skipped.
pub fn fields(header: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(header);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            if !name.is_empty() && !name.contains(' ') {
                out.push((name.to_owned(), value.trim().to_owned()));
            }
        }
    }
    out
}

/// The token of a probe message, from its [`TOKEN_HEADER`].
pub fn token_of(header: &[u8]) -> Option<String> {
    fields(header).into_iter().find(|(name, _)| name.eq_ignore_ascii_case(TOKEN_HEADER)).map(|(_, v)| v)
}

/// The path information of a message's header.
pub fn path_info(header: &[u8]) -> PathInfo {
    let fields = fields(header);
    let received_hops = fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case("Received")).count();
    // Newest first, as MTAs prepend: the first header naming a method decides it.
    let results: Vec<Vec<(String, String)>> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Authentication-Results"))
        .map(|(_, v)| method_results(v))
        .collect();
    let passes = |method: &str| {
        results
            .iter()
            .find_map(|r| r.iter().find(|(m, _)| m == method).map(|(_, result)| result == "pass"))
            .unwrap_or(false)
    };
    PathInfo {
        dkim_pass: passes("dkim"),
        spf_pass: passes("spf"),
        dmarc_pass: passes("dmarc"),
        received_hops: u32::try_from(received_hops).unwrap_or(u32::MAX),
    }
}

/// The (method, result) pairs of one Authentication-Results value, lowercased:
/// `authserv-id; method=result props; ...`, comments removed, the version of a method
/// (`dkim/1`) dropped.
fn method_results(value: &str) -> Vec<(String, String)> {
    let mut plain = String::with_capacity(value.len());
    let mut depth = 0u32;
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    plain
        .split(';')
        .skip(1)
        .filter_map(|resinfo| {
            let first = resinfo.split_whitespace().next()?;
            let (method, result) = first.split_once('=')?;
            let method = method.split('/').next().unwrap_or(method);
            Some((method.to_ascii_lowercase(), result.to_ascii_lowercase()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &[u8] = b"Return-Path: <monitor@example.test>\r\n\
Authentication-Results: mx.example.test;\r\n\
\tdkim=pass (2048-bit key; unprotected) header.d=example.test header.s=s1;\r\n\
\tspf=softfail (domain of transitioning monitor@example.test) smtp.mailfrom=example.test;\r\n\
\tdmarc=pass (p=none dis=none) header.from=example.test\r\n\
Received: from relay.example.test by mx.example.test; Mon, 30 Nov 2026 11:00:00 +0000\r\n\
Authentication-Results: relay.example.test; spf=pass smtp.mailfrom=example.test\r\n\
received: from client by relay.example.test; Mon, 30 Nov 2026 10:59:59 +0000\r\n\
X-Smtp-Exporter-Probe: 1796036400-0123456789abcdef\r\n\
Subject: probe\r\n\r\n";

    #[test]
    fn the_newest_verdict_of_each_method_counts_and_received_lines_are_hops() {
        let info = path_info(HEADER);
        assert_eq!(
            info,
            PathInfo { dkim_pass: true, spf_pass: false, dmarc_pass: true, received_hops: 2 },
            "the newest AR says spf=softfail; the older pass does not count"
        );
        assert_eq!(info.verdicts(), [("dkim", true), ("spf", false), ("dmarc", true)]);
        assert_eq!(token_of(HEADER).as_deref(), Some("1796036400-0123456789abcdef"));
    }

    #[test]
    fn methods_are_read_past_comments_versions_and_case() {
        let results = method_results("mx.test 1; DKIM/1=PASS (good (nested)) header.d=x; none");
        assert_eq!(results, vec![("dkim".to_owned(), "pass".to_owned())]);
        assert!(method_results("mx.test; none").is_empty());
        // What a comment says is not a result, even when it looks like one.
        let results = method_results("mx.test; (was: spf=pass; dkim=pass) dkim=fail");
        assert_eq!(results, vec![("dkim".to_owned(), "fail".to_owned())]);
        let nothing = path_info(b"Subject: x\r\n\r\n");
        assert_eq!(nothing, PathInfo::default());
    }

    #[test]
    fn folded_fields_are_unfolded_and_junk_lines_skipped() {
        let got =
            fields(b"A: one\r\n two\r\nnot a field\r\n\tstray\r\nnot a name: x\r\n: nameless\r\nB:x\r\n");
        assert_eq!(got, vec![("A".into(), "one two stray".into()), ("B".into(), "x".into())]);
    }
}
