//! The MTA-STS and TLS-RPT texts read by their RFCs: the `_mta-sts` TXT record, the
//! policy file, the `_smtp._tls` TXT record, and the MX patterns of a policy. Pure
//! functions; `check` (in the folder's index) fetches the texts and calls them.

use super::{Mode, StsPolicy, MAX_MAX_AGE};

/// The `key=value` fields of a TXT record (`;`-separated, spaces around them allowed).
fn fields(text: &str) -> Vec<(&str, &str)> {
    text.split(';')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (f, ""),
        })
        .collect()
}

/// The `id` of an MTA-STS TXT record (`v=STSv1; id=20260101T000000;`).
pub fn parse_sts_txt(text: &str) -> Result<String, String> {
    let fields = fields(text);
    if fields.first() != Some(&("v", "STSv1")) {
        return Err(format!("{text:?}: the record must start with v=STSv1"));
    }
    let id =
        fields.iter().find(|(k, _)| *k == "id").map(|(_, v)| *v).ok_or(format!("{text:?}: no id field"))?;
    if id.is_empty() || id.len() > 32 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("{text:?}: the id must be 1 to 32 letters and digits"));
    }
    Ok(id.to_owned())
}

/// An MTA-STS policy text (RFC 8461 §3.2): `version: STSv1`, `mode`, `max_age`, and `mx`
/// lines (at least one unless the mode is `none`).
pub fn parse_sts_policy(text: &str) -> Result<StsPolicy, String> {
    let (mut version, mut mode, mut max_age, mut mx) = (None, None, None, Vec::new());
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')).filter(|l| !l.trim().is_empty()) {
        let (key, value) =
            line.split_once(':').ok_or_else(|| format!("line {line:?} is not \"key: value\""))?;
        let value = value.trim();
        match key.trim() {
            "version" => version = Some(value.to_owned()),
            "mode" => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(format!("mode {other:?} is not enforce, testing or none")),
                })
            }
            "max_age" => {
                let seconds: u64 = value.parse().ok().filter(|s| *s <= MAX_MAX_AGE).ok_or_else(|| {
                    format!("max_age {value:?} is not a number of seconds up to {MAX_MAX_AGE}")
                })?;
                max_age = Some(seconds);
            }
            "mx" => {
                let pattern = value.to_ascii_lowercase();
                let name = pattern.strip_prefix("*.").unwrap_or(&pattern);
                if name.is_empty() || name.contains('*') || !name.contains('.') {
                    return Err(format!("mx pattern {value:?} is not a host name or *.name"));
                }
                mx.push(pattern);
            }
            // RFC 8461: unknown fields are ignored.
            _ => {}
        }
    }
    if version.as_deref() != Some("STSv1") {
        return Err("the policy does not say version: STSv1".into());
    }
    let mode = mode.ok_or("the policy has no mode")?;
    let max_age = max_age.ok_or("the policy has no max_age")?;
    if mode != Mode::None && mx.is_empty() {
        return Err("the policy lists no mx".into());
    }
    Ok(StsPolicy { mode, mx, max_age })
}

/// Whether an `mx` pattern covers `host` (RFC 8461 §4.1): the same name, or `*.` and the
/// name of its parent (a wildcard stands for exactly one label).
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(parent) => host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == host,
    }
}

/// The reporting addresses of a TLS-RPT record (`v=TLSRPTv1; rua=mailto:a@example.com`).
pub fn parse_tlsrpt(text: &str) -> Result<Vec<String>, String> {
    let fields = fields(text);
    if fields.first() != Some(&("v", "TLSRPTv1")) {
        return Err(format!("{text:?}: the record must start with v=TLSRPTv1"));
    }
    let rua =
        fields.iter().find(|(k, _)| *k == "rua").map(|(_, v)| *v).ok_or(format!("{text:?}: no rua field"))?;
    let uris: Vec<String> = rua.split(',').map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect();
    if uris.is_empty() {
        return Err(format!("{text:?}: rua is empty"));
    }
    if let Some(bad) = uris.iter().find(|u| {
        let lower = u.to_ascii_lowercase();
        let address = lower.strip_prefix("mailto:").and_then(|a| a.split_once('@'));
        !(address.is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
            || lower.starts_with("https://"))
    }) {
        return Err(format!("{text:?}: rua {bad:?} is neither mailto: an address nor an https: URL"));
    }
    Ok(uris)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_txt_records() {
        assert_eq!(parse_sts_txt("v=STSv1; id=20260101T000000;").unwrap(), "20260101T000000");
        assert_eq!(parse_sts_txt("v=STSv1;id=abc").unwrap(), "abc");
        for bad in [
            "id=abc; v=STSv1",
            "v=STSv1;",
            "v=STSv1; id=",
            "v=STSv1; id=a-b",
            &format!("v=STSv1; id={}", "a".repeat(33)),
        ] {
            assert!(parse_sts_txt(bad).is_err(), "{bad}");
        }
        let longest = "a".repeat(32);
        assert_eq!(parse_sts_txt(&format!("v=STSv1; id={longest}")).unwrap(), longest);
    }

    #[test]
    fn policies() {
        let p = parse_sts_policy("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n").unwrap();
        assert_eq!(
            p,
            StsPolicy {
                mode: Mode::Enforce,
                mx: vec!["mail.example.com".into(), "*.example.net".into()],
                max_age: 604800
            }
        );
        let none = parse_sts_policy("version: STSv1\nmode: none\nmax_age: 86400\n").unwrap();
        assert_eq!(none.mode, Mode::None);
        let cases = [
            ("mode: enforce\nmx: a.example\nmax_age: 1\n", "version"),
            ("version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n", "mode \"strict\""),
            ("version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx"),
            ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n", "max_age"),
            ("version: STSv1\nmode: enforce\nmx: a.example\n", "no max_age"),
            ("version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n", "mx pattern"),
            ("<html>404</html>", "key: value"),
        ];
        for (text, want) in cases {
            let err = parse_sts_policy(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn mx_patterns_follow_the_wildcard_rule() {
        assert!(mx_matches("mail.example.com", "MAIL.example.com."));
        assert!(mx_matches("*.example.com", "mx1.example.com"));
        assert!(!mx_matches("*.example.com", "a.b.example.com"), "one label only");
        assert!(!mx_matches("*.example.com", "example.com"));
        assert!(!mx_matches("*.example.com", "mx1.evilexample.com"));
        assert!(!mx_matches("mail.example.com", "mail.example.com.evil"));
    }

    #[test]
    fn tlsrpt_records() {
        assert_eq!(
            parse_tlsrpt("v=TLSRPTv1; rua=mailto:tls@example.com,https://r.example/report").unwrap(),
            vec!["mailto:tls@example.com".to_owned(), "https://r.example/report".to_owned()]
        );
        for bad in [
            "v=TLSRPTv1;",
            "v=TLSRPTv1; rua=",
            "v=TLSRPTv1; rua=http://x.example",
            "rua=mailto:a@b; v=TLSRPTv1",
            "v=TLSRPTv1; rua=mailto:",
            "v=TLSRPTv1; rua=mailto:tls.example.com",
            "v=TLSRPTv1; rua=mailto:@example.com",
            "v=TLSRPTv1; rua=mailto:tls@",
            "v=TLSRPTv1; rua=mailto:tls@example.com,mailto:x",
        ] {
            assert!(parse_tlsrpt(bad).is_err(), "{bad}");
        }
    }
}
