//! EHLO capabilities: the lines of a 250 EHLO reply turned into a typed set.
//!
//! Used by the probe walk (`probe::mod`) to decide on STARTTLS and to pick an AUTH mechanism,
//! and carried in the `ProbeReport` so that metrics can show what the server advertised.

/// What a server advertised in its EHLO reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The first word of the first line: the name the server gives itself.
    pub hostname: String,
    /// Upper-cased extension keywords (STARTTLS, PIPELINING, SIZE, ...), in order, deduplicated.
    pub extensions: Vec<String>,
    /// Upper-cased SASL mechanisms from `AUTH` (and the obsolete `AUTH=` form).
    pub auth_mechanisms: Vec<String>,
    /// The `SIZE` parameter, when the server gives one (0 means "no fixed limit").
    pub size_limit: Option<u64>,
}

impl Capabilities {
    /// Builds the set from the lines of an EHLO reply (as `Reply::lines` holds them).
    pub fn parse(lines: &[String]) -> Capabilities {
        let mut caps = Capabilities::default();
        let mut iter = lines.iter();
        if let Some(first) = iter.next() {
            caps.hostname = first.split_whitespace().next().unwrap_or("").to_owned();
        }
        for line in iter {
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else { continue };
            let keyword = keyword.to_ascii_uppercase();
            // Some old servers advertise "AUTH=LOGIN PLAIN"; treat it as AUTH.
            let (keyword, first_param) = match keyword.split_once('=') {
                Some(("AUTH", rest)) => ("AUTH".to_owned(), Some(rest.to_owned())),
                _ => (keyword, None),
            };
            match keyword.as_str() {
                "AUTH" => {
                    for mech in first_param.into_iter().chain(words.map(str::to_owned)) {
                        let mech = mech.to_ascii_uppercase();
                        if !mech.is_empty() && !caps.auth_mechanisms.contains(&mech) {
                            caps.auth_mechanisms.push(mech);
                        }
                    }
                }
                "SIZE" => {
                    if let Some(n) = words.next().and_then(|w| w.parse().ok()) {
                        caps.size_limit = Some(n);
                    }
                }
                _ => {}
            }
            if !caps.extensions.contains(&keyword) {
                caps.extensions.push(keyword);
            }
        }
        caps
    }

    /// True when `keyword` (upper case) was advertised.
    pub fn has(&self, keyword: &str) -> bool {
        self.extensions.iter().any(|k| k == keyword)
    }

    /// True when STARTTLS was advertised.
    pub fn starttls(&self) -> bool {
        self.has("STARTTLS")
    }
}

#[cfg(test)]
mod tests {
    /// Issue 17: the old `AUTH=LOGIN PLAIN` form counts as AUTH, with its first mechanism.
    #[test]
    fn the_old_auth_equals_form_is_read() {
        let caps = super::Capabilities::parse(&crate::test_support::strings(&[
            "mx",
            "AUTH=LOGIN PLAIN",
            "AUTH LOGIN CRAM-MD5",
        ]));
        assert_eq!(caps.auth_mechanisms, vec!["LOGIN", "PLAIN", "CRAM-MD5"]);
    }

    use super::*;
    use crate::test_support::strings;

    #[test]
    fn postfix_submission_after_tls() {
        let caps = Capabilities::parse(&strings(&[
            "mx.example.test",
            "PIPELINING",
            "SIZE 10240000",
            "ETRN",
            "AUTH PLAIN LOGIN CRAM-MD5",
            "AUTH=PLAIN LOGIN CRAM-MD5",
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            "DSN",
            "SMTPUTF8",
            "CHUNKING",
        ]));
        assert_eq!(caps.hostname, "mx.example.test");
        assert_eq!(caps.auth_mechanisms, vec!["PLAIN", "LOGIN", "CRAM-MD5"]);
        assert_eq!(caps.size_limit, Some(10_240_000));
        assert!(caps.has("CHUNKING"));
        assert!(!caps.starttls());
        assert_eq!(caps.extensions.iter().filter(|e| *e == "AUTH").count(), 1);
    }

    #[test]
    fn lower_case_keywords_and_empty_lines() {
        let caps = Capabilities::parse(&strings(&["mx greets you", "starttls", "", "auth login"]));
        assert!(caps.starttls());
        assert_eq!(caps.auth_mechanisms, vec!["LOGIN"]);
        assert_eq!(caps.size_limit, None);
    }

    #[test]
    fn empty_reply() {
        assert_eq!(Capabilities::parse(&[]), Capabilities::default());
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any lines parse without panicking; every mechanism and extension reported
            /// was in the input, upper-cased, without duplicates.
            #[test]
            fn parse_is_total_and_faithful(lines in proptest::collection::vec("[ -~]{0,40}", 0..12)) {
                let caps = Capabilities::parse(&lines);
                let upper: String = lines.join(" ").to_ascii_uppercase();
                for m in &caps.auth_mechanisms {
                    prop_assert!(upper.contains(m.as_str()));
                }
                let mut seen = std::collections::HashSet::new();
                for e in &caps.extensions {
                    prop_assert!(seen.insert(e.clone()), "duplicate {}", e);
                    prop_assert_eq!(e, &e.to_ascii_uppercase());
                }
            }

            /// A generated capability list round-trips: keywords, mechanisms and SIZE.
            #[test]
            fn generated_lists_round_trip(
                mechs in proptest::collection::btree_set("[A-Z][A-Z0-9-]{1,12}", 0..5),
                size in proptest::option::of(0u64..100_000_000),
                starttls in any::<bool>(),
            ) {
                let mut lines = vec!["mx.example.test hello".to_owned()];
                if starttls { lines.push("STARTTLS".into()); }
                if !mechs.is_empty() { lines.push(format!("AUTH {}", mechs.iter().cloned().collect::<Vec<_>>().join(" "))); }
                if let Some(n) = size { lines.push(format!("SIZE {n}")); }
                let caps = Capabilities::parse(&lines);
                prop_assert_eq!(caps.starttls(), starttls);
                prop_assert_eq!(caps.auth_mechanisms, mechs.into_iter().collect::<Vec<_>>());
                prop_assert_eq!(caps.size_limit, size);
                prop_assert_eq!(caps.hostname, "mx.example.test");
            }
        }
    }
}
