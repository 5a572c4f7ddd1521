//! The DNS rebinding guard: which `Host` a request that changes state or shows what sits
//! next to secrets may name.
//!
//! Part of `http`, in front of the routes that need it: `POST /-/reload`, `/config`,
//! `/transcript` and `/probe?debug=true`. A web page on an attacker's domain can make a
//! browser on the operator's network send requests to the exporter once the attacker's
//! name resolves to the exporter's address; those requests carry the attacker's name in
//! `Host`, which a page cannot change. (`POST /-/reload` also refuses an `Origin` of
//! another site, in `http`.) An address, `localhost`, the host of `--web.external-url` and the
//! names given with `--web.allowed-host` are what a legitimate client uses; anything else
//! is refused on those routes (the others, `/metrics` first, answer any name).

use hyper::header::HeaderValue;

/// Whether a request whose `Host` header is this may reach a guarded route, given the
/// names allowed besides addresses and `localhost`.
pub fn allowed(host: Option<&HeaderValue>, names: &[String]) -> bool {
    match host {
        // HTTP/1.0 without Host: no browser sends that.
        None => true,
        Some(value) => value.to_str().ok().and_then(host_of_authority).is_some_and(|h| known(h, names)),
    }
}

/// The host part of `host[:port]` (brackets kept around IPv6).
fn host_of_authority(authority: &str) -> Option<&str> {
    if authority.starts_with('[') {
        return authority.find(']').map(|end| &authority[..=end]);
    }
    let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
    (!host.is_empty()).then_some(host)
}

/// An address, `localhost`, or one of `names`.
fn known(host: &str, names: &[String]) -> bool {
    let host = host.trim_end_matches('.');
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>().is_ok()
        || host.eq_ignore_ascii_case("localhost")
        || names.iter().any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    #[test]
    fn addresses_localhost_and_the_named_hosts_pass_and_others_do_not() {
        let names = vec!["smtp-exporter.example.com".to_owned()];
        for host in [
            "127.0.0.1:10027",
            "192.0.2.7",
            "[::1]:10027",
            "[2001:db8::1]",
            "localhost:10027",
            "LOCALHOST",
            "smtp-exporter.example.com:443",
            "SMTP-Exporter.example.com.",
        ] {
            assert!(allowed(Some(&header(host)), &names), "{host}");
        }
        for host in
            ["evil.example:10027", "127.0.0.1.evil.example", "localhost.evil.example", ":10027", "exporter"]
        {
            assert!(!allowed(Some(&header(host)), &names), "{host}");
        }
        assert!(allowed(None, &names), "no Host: not a browser");
    }
}
