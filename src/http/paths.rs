//! Where the pages are served and how links to them are written: `--web.route-prefix`,
//! `--web.telemetry-path` and `--web.external-url`, as Prometheus and its exporters read
//! them.
//!
//! Part of `http`: the router asks [`Paths::page`] which page a request path names, and the
//! status page writes its links with [`Paths::link`]. Behind a reverse proxy that serves
//! the exporter under `https://proxy.example/smtp/`, `--web.external-url` says so; the
//! routes then live under its path too (as with Prometheus, unless `--web.route-prefix`
//! says otherwise, e.g. `/` for a proxy that strips the prefix).

/// A page of the exporter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    Metrics,
    Probe,
    Status,
    Config,
    /// The transcript of a scheduled spec's last failing probe.
    Transcript,
    /// Every spec's recent results, as JSON.
    History,
    Healthy,
    Ready,
    Reload,
}

/// The paths of one running exporter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// Where the routes live: empty, or `/prefix` without a final slash.
    prefix: String,
    /// The metrics page below the prefix (`/metrics` by default).
    telemetry: String,
    /// What links start with: the external URL's path, or the prefix; no final slash.
    link_base: String,
    /// The names besides addresses and `localhost` that the guarded routes answer to: the
    /// external URL's host, and `--web.allowed-host` (see `hosts`).
    pub allowed_hosts: Vec<String>,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            prefix: String::new(),
            telemetry: "/metrics".into(),
            link_base: String::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

/// The pages whose paths are fixed; the telemetry path may not take one of them.
const FIXED: [(&str, Page); 8] = [
    ("/probe", Page::Probe),
    ("/config", Page::Config),
    ("/transcript", Page::Transcript),
    ("/history", Page::History),
    ("/-/healthy", Page::Healthy),
    ("/-/ready", Page::Ready),
    ("/-/reload", Page::Reload),
    ("/", Page::Status),
];

impl Paths {
    /// From the three flags; an error names the flag and what is wrong.
    pub fn new(
        route_prefix: Option<&str>,
        telemetry: &str,
        external_url: Option<&str>,
    ) -> Result<Paths, String> {
        let external_path = match external_url {
            None => None,
            Some(url) => Some(external_path(url).map_err(|e| format!("--web.external-url {url:?}: {e}"))?),
        };
        let prefix = match route_prefix {
            Some(prefix) => normalize(prefix).map_err(|e| format!("--web.route-prefix {prefix:?}: {e}"))?,
            None => external_path.clone().unwrap_or_default(),
        };
        if !telemetry.starts_with('/') || telemetry.len() < 2 || telemetry.ends_with('/') {
            return Err(format!(
                "--web.telemetry-path {telemetry:?}: must start with / and name a page (like /metrics)"
            ));
        }
        if telemetry.contains(['?', '#']) || telemetry.contains(char::is_whitespace) {
            return Err(format!("--web.telemetry-path {telemetry:?}: must be a plain path"));
        }
        if let Some((taken, _)) = FIXED.iter().find(|(path, _)| *path == telemetry) {
            return Err(format!(
                "--web.telemetry-path {telemetry:?}: {taken} is another page of the exporter"
            ));
        }
        let link_base = external_path.unwrap_or_else(|| prefix.clone());
        let allowed_hosts = external_url
            .and_then(|url| url.parse::<hyper::Uri>().ok())
            .and_then(|uri| uri.host().map(str::to_owned))
            .into_iter()
            .collect();
        Ok(Paths { prefix, telemetry: telemetry.to_owned(), link_base, allowed_hosts })
    }

    /// The page that a request path names, or `None` (not found).
    pub fn page(&self, path: &str) -> Option<Page> {
        let local = if self.prefix.is_empty() {
            path
        } else {
            // What follows the prefix; `/smtpx/...` leaves `x/...`, which names no page, as
            // every page's path starts with `/`.
            match path.strip_prefix(self.prefix.as_str())? {
                "" => "/",
                rest => rest,
            }
        };
        if local == self.telemetry {
            return Some(Page::Metrics);
        }
        FIXED.iter().find(|(fixed, _)| *fixed == local).map(|(_, page)| *page)
    }

    /// The link to `page`, as a browser that reached the exporter through the external URL
    /// follows it.
    pub fn link(&self, page: Page) -> String {
        let local = match page {
            Page::Metrics => self.telemetry.as_str(),
            other => FIXED.iter().find(|(_, p)| *p == other).map_or("/", |(path, _)| path),
        };
        match (self.link_base.as_str(), local) {
            ("", local) => local.to_owned(),
            (base, "/") => format!("{base}/"),
            (base, local) => format!("{base}{local}"),
        }
    }
}

/// `/smtp/` and `smtp` as `/smtp`; `/` as nothing.
fn normalize(prefix: &str) -> Result<String, String> {
    if prefix.contains(['?', '#']) || prefix.contains(char::is_whitespace) {
        return Err("must be a plain path".into());
    }
    let trimmed = prefix.trim_matches('/');
    if trimmed.split('/').any(|segment| segment == "." || segment == "..") {
        return Err("must not contain . or .. segments".into());
    }
    Ok(if trimmed.is_empty() { String::new() } else { format!("/{trimmed}") })
}

/// The path of an absolute http(s) URL, normalized.
fn external_path(url: &str) -> Result<String, String> {
    let absolute = "must be an absolute http:// or https:// URL";
    let uri: hyper::Uri = url.parse().map_err(|_| absolute.to_owned())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(absolute.into());
    }
    if uri.query().is_some() {
        return Err("must not have a query".into());
    }
    normalize(uri.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_at_the_root() {
        let paths = Paths::new(None, "/metrics", None).unwrap();
        assert_eq!(paths, Paths::default());
        assert_eq!(paths.page("/metrics"), Some(Page::Metrics));
        assert_eq!(paths.page("/"), Some(Page::Status));
        assert_eq!(paths.page("/config"), Some(Page::Config));
        assert_eq!(paths.page("/smtp/metrics"), None);
        assert_eq!(paths.link(Page::Metrics), "/metrics");
        assert_eq!(paths.link(Page::Status), "/");
    }

    #[test]
    fn the_external_url_gives_the_prefix_unless_it_is_set() {
        let paths = Paths::new(None, "/stats", Some("https://proxy.example/smtp/")).unwrap();
        assert_eq!(paths.page("/smtp/stats"), Some(Page::Metrics));
        assert_eq!(paths.page("/smtp/metrics"), None, "the telemetry path moved");
        assert_eq!(paths.page("/smtp"), Some(Page::Status));
        assert_eq!(paths.page("/smtp/"), Some(Page::Status));
        assert_eq!(paths.page("/smtp/-/ready"), Some(Page::Ready));
        assert_eq!(paths.page("/smtpx/stats"), None, "at a segment boundary only");
        assert_eq!(paths.page("/stats"), None);
        assert_eq!(paths.link(Page::Metrics), "/smtp/stats");
        assert_eq!(paths.link(Page::Status), "/smtp/");
        // A proxy that strips the prefix: routes at the root, links under it.
        let stripped = Paths::new(Some("/"), "/metrics", Some("http://proxy.example/smtp")).unwrap();
        assert_eq!(stripped.page("/metrics"), Some(Page::Metrics));
        assert_eq!(stripped.link(Page::Probe), "/smtp/probe");
        let prefixed = Paths::new(Some("smtp/"), "/metrics", None).unwrap();
        assert_eq!(prefixed.page("/smtp/probe"), Some(Page::Probe));
        assert_eq!(prefixed.link(Page::Healthy), "/smtp/-/healthy");
    }

    #[test]
    fn bad_flags_are_named() {
        let cases = [
            (
                None,
                "metrics",
                None,
                "--web.telemetry-path \"metrics\": must start with / and name a page (like /metrics)",
            ),
            (
                None,
                "/",
                None,
                "--web.telemetry-path \"/\": must start with / and name a page (like /metrics)",
            ),
            (None, "/probe", None, "--web.telemetry-path \"/probe\": /probe is another page of the exporter"),
            (None, "/m?x=1", None, "--web.telemetry-path \"/m?x=1\": must be a plain path"),
            (
                Some("/a/../b"),
                "/metrics",
                None,
                "--web.route-prefix \"/a/../b\": must not contain . or .. segments",
            ),
            (Some("/a?b"), "/metrics", None, "--web.route-prefix \"/a?b\": must be a plain path"),
            (Some("/a b"), "/metrics", None, "--web.route-prefix \"/a b\": must be a plain path"),
            (
                None,
                "/metrics",
                Some("proxy.example/smtp"),
                "--web.external-url \"proxy.example/smtp\": must be an absolute http:// or https:// URL",
            ),
            (
                None,
                "/metrics",
                Some("ftp://proxy.example/"),
                "--web.external-url \"ftp://proxy.example/\": must be an absolute http:// or https:// URL",
            ),
        ];
        for (prefix, telemetry, external, want) in cases {
            assert_eq!(Paths::new(prefix, telemetry, external).unwrap_err(), want);
        }
    }
}
