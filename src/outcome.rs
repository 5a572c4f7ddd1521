//! The vocabulary of a probe's outcome: which `Phase` ran, and the bounded `Reason` it failed.
//!
//! A leaf at the bottom of the crate: it imports nothing of it, and everything that can fail
//! a probe (the walk in `probe`, `tls`, `dns`, `sys`, the IMAP side of `probe::delivery`)
//! classifies its failures with these names. Every failure maps onto one reason from a
//! fixed set, so that metrics labels stay bounded and alerts can match exact values. The
//! free text `detail` of a [`Failure`] is for logs only and never becomes a label.

use std::fmt;

/// One timed step of an SMTP session, in the order they can occur. `Phase::VARIANTS`
/// lists them in that order; the label value is the snake_case name.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, strum::VariantArray, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum Phase {
    /// Name resolution of the target host.
    Resolve,
    /// TCP connect, SYN to established.
    Connect,
    /// Reading the whole 220 greeting, continuation lines included.
    Banner,
    /// EHLO (or the HELO fallback) up to its complete 250 reply.
    Ehlo,
    /// The STARTTLS command up to its 220 reply.
    Starttls,
    /// The TLS handshake (after STARTTLS, or right after connect with implicit TLS).
    TlsHandshake,
    /// EHLO again inside TLS, as RFC 3207 requires.
    EhloTls,
    /// The whole AUTH exchange.
    Auth,
    /// MAIL FROM, each RCPT TO and RSET of the envelope check.
    Envelope,
    /// Delivery probe: to the mailbox's IMAP server, through TLS and its greeting.
    ImapConnect,
    /// Delivery probe: LOGIN, the folder list and SELECT INBOX.
    ImapLogin,
    /// Delivery probe: MAIL FROM, RCPT TO, DATA and the message, up to the final 250.
    Submit,
    /// QUIT up to its 221 reply.
    Quit,
    /// Delivery probe: from the 250 after DATA until the message is in the mailbox.
    Deliver,
    /// Delivery probe: reading the message's header.
    Fetch,
    /// Delivery probe: deleting the message, and leftovers of earlier probes.
    Cleanup,
}

impl Phase {
    /// The label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a phase failed. The set is fixed and documented in the README; add to it with care,
/// because alert rules match these values. `Reason::VARIANTS` lists them in documentation
/// order; the label value is the snake_case name.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, strum::VariantArray, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum Reason {
    /// The phase's deadline (or the probe's overall deadline) passed.
    Timeout,
    /// Connection refused: nothing listening, or a firewall REJECT with a TCP reset.
    Refused,
    /// Host or network unreachable (ICMP), or administratively prohibited.
    Unreachable,
    /// This machine has no route to the address (e.g. IPv6 on an IPv4-only host): nothing
    /// was sent.
    NoRoute,
    /// The peer reset the connection.
    Reset,
    /// The peer closed the connection before a complete reply.
    Closed,
    /// The host name does not exist (NXDOMAIN).
    DnsNxdomain,
    /// The host has no address of the wanted family (NODATA).
    DnsNoRecords,
    /// The name server failed (SERVFAIL).
    DnsServfail,
    /// The name server refused the query (REFUSED).
    DnsRefused,
    /// No answer from the name server, after every attempt.
    DnsTimeout,
    /// The answer was truncated and could not be had over TCP.
    DnsTruncated,
    /// DNSSEC validation failed.
    DnsBogus,
    /// The name resolves only to addresses the exporter refuses to connect to
    /// (`dns.refuse_addresses`: link-local, unspecified, multicast, broadcast by default).
    DnsAddressRefused,
    /// Any other resolver failure (a malformed answer, no name server configured).
    Dns,
    /// Any other socket error.
    Io,
    /// The TLS handshake failed for a reason other than the certificate.
    TlsHandshake,
    /// The server's certificate did not verify (issuer, name, dates) and the module fails
    /// on invalid certificates.
    TlsCertInvalid,
    /// The server only offers TLS versions or ciphers this exporter does not speak
    /// (e.g. TLS 1.0/1.1 only, or legacy ciphers).
    TlsUnsupported,
    /// STARTTLS is required by the module but the server did not advertise it.
    StarttlsUnavailable,
    /// The server sent bytes after its 220 to STARTTLS, before the handshake (RFC 3207 §5,
    /// the "STARTTLS command injection" class): the probe refuses to go on.
    StarttlsInjection,
    /// A 4xx reply where a success was expected.
    #[strum(serialize = "reply_4xx")]
    Reply4xx,
    /// A 5xx reply where a success was expected.
    #[strum(serialize = "reply_5xx")]
    Reply5xx,
    /// AUTH was rejected as bad credentials (535, or another 5xx to AUTH).
    AuthFailed,
    /// The server wants TLS before AUTH (538).
    AuthRequiredTls,
    /// No configured or advertised mechanism could be used (or 504 to AUTH).
    AuthMechanismUnavailable,
    /// AUTH failed temporarily (454 or another 4xx).
    AuthTemporary,
    /// The credentials could not be read at probe time (an unreadable `token_file`).
    AuthCredentials,
    /// The module has credentials but the session is not encrypted, and the module does not
    /// allow plaintext AUTH: the password was not sent.
    AuthPlaintextRefused,
    /// The module has credentials but the server's certificate did not verify, and the
    /// module does not allow AUTH over such a session: the password was not sent (to whoever
    /// presented that certificate).
    AuthTlsUnverified,
    /// The envelope check: MAIL FROM or a recipient that should be accepted got a 5xx.
    EnvelopeRejected,
    /// The envelope check: MAIL FROM or a recipient that should be accepted got a 4xx
    /// (greylisting, a full queue).
    EnvelopeDeferred,
    /// The envelope check: a recipient that should be refused was accepted (a foreign
    /// domain without AUTH: the server relays for anyone).
    OpenRelay,
    /// Delivery probe: the submission's MAIL FROM, RCPT TO or DATA got a 5xx.
    SubmitRejected,
    /// Delivery probe: the message did not show in the mailbox before the deadline.
    NotDelivered,
    /// Delivery probe: the message landed in the junk folder, and the module requires the
    /// inbox.
    DeliveredToJunk,
    /// Delivery probe: the IMAP server refused the mailbox's LOGIN (bad credentials; a
    /// refusal with `[LIMIT]` or `[UNAVAILABLE]` is `imap_protocol`).
    ImapAuthFailed,
    /// Delivery probe: the IMAP TLS handshake failed, or its certificate did not verify.
    ImapTls,
    /// Delivery probe: the IMAP server answered NO or BAD, or something unreadable.
    ImapProtocol,
    /// The server's bytes were not valid SMTP (garbage, too long, wrong code).
    Protocol,
    /// The exporter itself could not open a socket or look a name up: out of file
    /// descriptors or memory. Not the target's fault: a scheduled probe that ends so is not
    /// recorded (the previous result stays), and `/probe` answers 503.
    LocalResources,
}

impl Reason {
    /// The label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// True when the SMTP conversation is still intact after this failure, so a polite QUIT
    /// can be sent.
    pub fn session_still_usable(self) -> bool {
        matches!(
            self,
            Reason::StarttlsUnavailable
                | Reason::TlsCertInvalid
                | Reason::AuthCredentials
                | Reason::Reply4xx
                | Reason::Reply5xx
                | Reason::AuthFailed
                | Reason::AuthRequiredTls
                | Reason::AuthMechanismUnavailable
                | Reason::AuthTemporary
                | Reason::AuthPlaintextRefused
                | Reason::AuthTlsUnverified
                | Reason::EnvelopeRejected
                | Reason::EnvelopeDeferred
                | Reason::OpenRelay
                | Reason::SubmitRejected
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified failure inside one phase, before the phase is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepError {
    pub reason: Reason,
    /// Human-readable context for logs. Never contains credentials.
    pub detail: String,
}

impl StepError {
    pub fn new(reason: Reason, detail: impl Into<String>) -> StepError {
        StepError { reason, detail: detail.into() }
    }

    /// Places the error in the phase where it happened.
    pub fn at(self, phase: Phase) -> Failure {
        Failure { phase, reason: self.reason, detail: self.detail }
    }
}

/// The failure that ended a probe: the phase it happened in and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub phase: Phase,
    pub reason: Reason,
    /// Human-readable context for logs. Never contains credentials.
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "phase {} failed ({}): {}", self.phase, self.reason, self.detail)
    }
}

/// Keeps server-supplied text short and printable before it goes into a log line.
pub fn truncate(text: &str) -> String {
    const MAX: usize = 120;
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(MAX).collect();
    if text.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;

    #[test]
    fn truncation_marks_only_what_it_cut() {
        let exactly = "x".repeat(120);
        assert_eq!(truncate(&exactly), exactly);
        assert_eq!(truncate(&"x".repeat(121)), format!("{exactly}…"));
        assert_eq!(truncate("a\r\nb"), "ab");
    }

    #[test]
    fn a_failure_reads_as_phase_reason_and_detail() {
        let failure =
            Failure { phase: Phase::Connect, reason: Reason::Refused, detail: "Connection refused".into() };
        assert_eq!(failure.to_string(), "phase connect failed (refused): Connection refused");
    }

    /// Issue 17: the reasons the code can give are exactly those the README documents, in
    /// its order (an independent list: a reason added or renamed on one side only fails).
    #[test]
    fn the_readme_documents_every_reason_and_no_other() {
        let readme = include_str!("../README.md");
        let table =
            readme.split("\n### Failure reasons\n").nth(1).expect("the section").split("\n#").next().unwrap();
        // The first cell of each row: one reason, or two as `a` / `b`.
        let documented: Vec<&str> = table
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .flat_map(|l| l.split(" | ").next().unwrap_or("").split("` / `"))
            .map(|cell| cell.trim_end_matches('`'))
            .collect();
        let code: Vec<&str> = Reason::VARIANTS.iter().map(|r| r.as_str()).collect();
        assert_eq!(documented, code);
    }

    #[test]
    fn label_values_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for &r in Reason::VARIANTS {
            assert!(r.as_str().chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
            assert!(seen.insert(r.as_str()), "duplicate {r}");
        }
    }
}
