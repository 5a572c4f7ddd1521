//! The envelope phase: MAIL FROM, one RCPT TO per configured recipient, then RSET, never
//! DATA. Each reply is judged against what the module expects of it: the MX must take
//! `postmaster@<domain>` (RFC 5321 §4.5.1), and must not take a foreign domain without
//! AUTH (an open relay); submission must not relay before AUTH.
//!
//! A step of the probe walk (`probe::mod`), after EHLO and AUTH and before QUIT. It fills
//! [`EnvelopeOutcome`] in the report, which `metrics` writes per recipient.

use tokio::io::{AsyncRead, AsyncWrite};

use super::reply::Reply;
use super::session::Session;
use crate::config::{Envelope, EnvelopeExpect};
use crate::outcome::{truncate, Reason, StepError};

/// What each command of the envelope phase was answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvelopeOutcome {
    /// MAIL FROM's reply code, once it was answered.
    pub mail_from: Option<u16>,
    /// Each recipient, as sent (`{domain}` filled in), in order, with its reply code once
    /// answered.
    pub recipients: Vec<RecipientReply>,
}

/// One RCPT TO and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientReply {
    pub address: String,
    pub expect: EnvelopeExpect,
    pub code: Option<u16>,
}

/// Runs the envelope commands on `session`, recording every answer in `out`. `domain`
/// fills `{domain}` (the validation keeps specs without one away from such envelopes).
/// Every recipient is tried even after one fails its expectation, so that each has a code;
/// the failure returned is the gravest: an open relay, then a refusal, then a deferral.
pub(super) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<S>,
    envelope: &Envelope,
    domain: Option<&str>,
    out: &mut EnvelopeOutcome,
) -> Result<(), StepError> {
    let fill = |address: &str| match domain {
        Some(domain) => address.replace(Envelope::DOMAIN, domain),
        None => address.to_owned(),
    };
    out.recipients = envelope
        .recipients
        .iter()
        .map(|r| RecipientReply { address: fill(&r.address), expect: r.expect, code: None })
        .collect();
    let sender = fill(&envelope.mail_from);
    let reply = session.command(&format!("MAIL FROM:<{sender}>")).await?;
    out.mail_from = Some(reply.code);
    if let Some(err) = judge(&format!("MAIL FROM:<{sender}>"), EnvelopeExpect::Accept, &reply) {
        return Err(err);
    }
    let mut worst: Option<StepError> = None;
    for recipient in &mut out.recipients {
        let command = format!("RCPT TO:<{}>", recipient.address);
        let reply = session.command(&command).await?;
        recipient.code = Some(reply.code);
        if let Some(err) = judge(&command, recipient.expect, &reply) {
            // 421: the server is closing the channel; nothing more can be asked.
            if reply.code == 421 {
                return Err(err);
            }
            if worst.as_ref().is_none_or(|w| gravity(err.reason) > gravity(w.reason)) {
                worst = Some(err);
            }
        }
    }
    session.expect("RSET", "RSET", 250).await?;
    worst.map_or(Ok(()), Err)
}

/// The error a reply makes under `expect`, if it does not meet it.
fn judge(command: &str, expect: EnvelopeExpect, reply: &Reply) -> Option<StepError> {
    let reason = match (expect, reply.class()) {
        (EnvelopeExpect::Accept, 2) | (EnvelopeExpect::Reject, 4 | 5) => return None,
        (EnvelopeExpect::Accept, 4) => Reason::EnvelopeDeferred,
        (EnvelopeExpect::Accept, 5) => Reason::EnvelopeRejected,
        (EnvelopeExpect::Reject, 2) => Reason::OpenRelay,
        _ => Reason::Protocol,
    };
    let text = reply.lines.first().map(String::as_str).unwrap_or("");
    let wanted = match expect {
        EnvelopeExpect::Accept => "expected acceptance",
        EnvelopeExpect::Reject => "expected refusal",
    };
    Some(StepError::new(reason, format!("{command}: {} {} ({wanted})", reply.code, truncate(text))))
}

/// How grave a mismatch is, to pick the one a probe reports.
fn gravity(reason: Reason) -> u8 {
    match reason {
        Reason::OpenRelay => 3,
        Reason::EnvelopeRejected => 2,
        Reason::EnvelopeDeferred => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16) -> Reply {
        Reply { code, lines: vec!["text".into()], bare_lf_lines: 0 }
    }

    #[test]
    fn each_class_meets_or_misses_each_expectation() {
        let reason = |expect, code| judge("RCPT TO:<a@b>", expect, &reply(code)).map(|e| e.reason);
        assert_eq!(reason(EnvelopeExpect::Accept, 250), None);
        assert_eq!(reason(EnvelopeExpect::Accept, 251), None);
        assert_eq!(reason(EnvelopeExpect::Accept, 450), Some(Reason::EnvelopeDeferred));
        assert_eq!(reason(EnvelopeExpect::Accept, 550), Some(Reason::EnvelopeRejected));
        assert_eq!(reason(EnvelopeExpect::Accept, 354), Some(Reason::Protocol));
        assert_eq!(reason(EnvelopeExpect::Reject, 554), None);
        assert_eq!(reason(EnvelopeExpect::Reject, 451), None);
        assert_eq!(reason(EnvelopeExpect::Reject, 250), Some(Reason::OpenRelay));
        assert_eq!(reason(EnvelopeExpect::Reject, 354), Some(Reason::Protocol));
        let detail = judge("RCPT TO:<a@b>", EnvelopeExpect::Reject, &reply(250)).unwrap().detail;
        assert_eq!(detail, "RCPT TO:<a@b>: 250 text (expected refusal)");
    }

    #[test]
    fn an_open_relay_outranks_a_refusal_which_outranks_a_deferral() {
        assert!(gravity(Reason::OpenRelay) > gravity(Reason::EnvelopeRejected));
        assert!(gravity(Reason::EnvelopeRejected) > gravity(Reason::EnvelopeDeferred));
        assert!(gravity(Reason::EnvelopeDeferred) > gravity(Reason::Protocol));
    }
}
