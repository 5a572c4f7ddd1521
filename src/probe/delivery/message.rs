//! The message a delivery probe submits: a unique token in a header and the subject, a
//! Date, a Message-ID, and a fixed text that says what it is. Nothing private.
//!
//! Built by the probe walk before `submit`; the token is what `delivery::imap` searches
//! for, and its leading Unix time lets a later probe tell how old a leftover is.

use std::time::{SystemTime, UNIX_EPOCH};

use mail_builder::headers::raw::Raw;
use mail_builder::MessageBuilder;
use ring::rand::{SecureRandom, SystemRandom};

use super::headers::TOKEN_HEADER;
use crate::config::Delivery;

/// A new token: the Unix time, then 16 random hex digits (`1796036400-0123456789abcdef`).
/// Only ASCII digits, letters and `-`, so it can be quoted in an IMAP SEARCH as it is.
pub fn token(now: SystemTime) -> String {
    let mut random = [0u8; 8];
    // The system's random source does not fail on Linux; the time alone would still be
    // unique per spec, which never runs twice at once.
    let _ = SystemRandom::new().fill(&mut random);
    format!("{}-{}", unix(now), hex::encode(random))
}

/// When the token was made, in Unix seconds; `None` for a token this exporter did not make.
pub fn made_at(token: &str) -> Option<u64> {
    let (time, random) = token.split_once('-')?;
    if random.len() != 16 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    time.parse().ok()
}

/// The message, with CRLF line ends, ready for DATA. `host` names the sender in the
/// Message-ID (the module's EHLO name).
pub fn build(delivery: &Delivery, token: &str, host: &str, now: SystemTime) -> Vec<u8> {
    MessageBuilder::new()
        .from(delivery.mail_from.as_str())
        .to(delivery.rcpt_to.as_str())
        .subject(format!("smtp_exporter delivery probe {token}"))
        .date(unix(now))
        .message_id(format!("{token}@{host}"))
        .header(TOKEN_HEADER, Raw::new(token))
        .text_body(
            "This message was sent by smtp_exporter to check that mail reaches this mailbox.\r\n\
             It is deleted as soon as it has arrived.\r\n",
        )
        .write_to_vec()
        .unwrap_or_default()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::delivery::headers::{fields, token_of};
    use std::time::Duration;

    #[test]
    fn tokens_are_unique_and_carry_their_time() {
        let now = UNIX_EPOCH + Duration::from_secs(1_796_036_400);
        let (a, b) = (token(now), token(now));
        assert_ne!(a, b);
        assert_eq!(made_at(&a), Some(1_796_036_400));
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'), "{a}");
        assert_eq!(made_at("1796036400-xyz"), None);
        assert_eq!(made_at("1796036400-zzzzzzzzzzzzzzzz"), None, "sixteen, but not hex");
        assert_eq!(made_at("1796036400-abc"), None, "hex, but not sixteen");
        assert_eq!(made_at("someone else's"), None);
    }

    #[test]
    fn the_message_carries_the_token_where_it_is_searched() {
        let yaml = "modules:\n  d:\n    tls: implicit\n    delivery:\n      mail_from: monitor@example.test\n      rcpt_to: inbox@example.test\n      imap: { tls: implicit, username: inbox, password: p }\ntargets: [{ host: mx.example.test, ports: [{ port: 465, module: d }] }]\n";
        let config = crate::config::parse(yaml, "t").unwrap();
        let delivery = config.modules["d"].delivery.clone().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_796_036_400);
        let token = token(now);
        let bytes = build(&delivery, &token, "probe.example.test", now);
        let text = String::from_utf8(bytes.clone()).unwrap();
        let header = &bytes[..text.find("\r\n\r\n").unwrap() + 4];
        assert_eq!(token_of(header), Some(token.clone()));
        let names: Vec<String> = fields(header).into_iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
        for wanted in ["from", "to", "subject", "date", "message-id"] {
            assert!(names.iter().any(|n| n == wanted), "{wanted} missing: {text}");
        }
        assert!(text.contains(&format!("Subject: smtp_exporter delivery probe {token}")), "{text}");
        assert!(text.contains(&format!("Message-ID: <{token}@probe.example.test>")), "{text}");
        assert!(!text.split("\r\n").any(|l| l.starts_with('.')), "no line needs dot-stuffing");
    }
}
