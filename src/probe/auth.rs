//! SMTP AUTH (RFC 4954): choosing a mechanism and running the exchange.
//!
//! Called by the probe walk (`probe::mod`) in the `auth` phase, on a session that is already
//! encrypted unless the module allows plaintext AUTH. Nothing here logs or returns what was
//! sent: error details carry reply codes only, because some servers echo the client's
//! (base64) line back in their error text.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::io::{AsyncRead, AsyncWrite};

use super::error::{Reason, StepError};
use super::reply::Reply;
use super::session::Session;
use crate::config::{AuthMechanism, Credentials};

/// Mechanisms in order of preference when the module does not force one.
const PREFERENCE: [AuthMechanism; 2] = [AuthMechanism::Plain, AuthMechanism::Login];

/// Picks the mechanism: the forced one if it is advertised, else the first of PREFERENCE
/// that the server advertises.
pub fn choose(forced: Option<AuthMechanism>, advertised: &[String]) -> Result<AuthMechanism, StepError> {
    let offered = |m: AuthMechanism| advertised.iter().any(|a| a == m.as_str());
    match forced {
        Some(m) if offered(m) => Ok(m),
        Some(m) => Err(StepError::new(
            Reason::AuthMechanismUnavailable,
            format!("mechanism {} is not advertised (offered: {})", m.as_str(), list(advertised)),
        )),
        None => PREFERENCE.into_iter().find(|&m| offered(m)).ok_or_else(|| {
            StepError::new(
                Reason::AuthMechanismUnavailable,
                format!("no supported mechanism advertised (offered: {})", list(advertised)),
            )
        }),
    }
}

fn list(advertised: &[String]) -> String {
    if advertised.is_empty() {
        "none".to_owned()
    } else {
        advertised.join(" ")
    }
}

/// Runs AUTH with `mechanism` and returns the final 235 reply.
pub async fn authenticate<S>(
    session: &mut Session<S>,
    mechanism: AuthMechanism,
    creds: &Credentials,
) -> Result<Reply, StepError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let password = creds.password.expose();
    let last = match mechanism {
        AuthMechanism::Plain => {
            let token = B64.encode(format!("\0{}\0{}", creds.username, password));
            session.command(&format!("AUTH PLAIN {token}")).await?
        }
        AuthMechanism::Login => {
            let first = session.command("AUTH LOGIN").await?;
            if first.code != 334 {
                return Err(classify(&first));
            }
            let second = session.command(&B64.encode(&creds.username)).await?;
            if second.code != 334 {
                return Err(classify(&second));
            }
            session.command(&B64.encode(password)).await?
        }
    };
    if last.code == 235 {
        Ok(last)
    } else {
        Err(classify(&last))
    }
}

/// Maps a reply that ends AUTH unsuccessfully to a reason (RFC 4954 §6).
pub fn classify(reply: &Reply) -> StepError {
    let reason = match reply.code {
        535 => Reason::AuthFailed,
        538 => Reason::AuthRequiredTls,
        504 => Reason::AuthMechanismUnavailable,
        // 421 means the server is closing the channel, whatever the command was.
        421 => Reason::Reply4xx,
        400..=499 => Reason::AuthTemporary,
        500..=599 => Reason::AuthFailed,
        _ => Reason::Protocol,
    };
    // Only the code: reply text may echo what the client sent.
    StepError::new(reason, format!("AUTH answered {}", reply.code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mechs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prefers_plain_then_login() {
        assert_eq!(choose(None, &mechs(&["LOGIN", "PLAIN"])).unwrap(), AuthMechanism::Plain);
        assert_eq!(choose(None, &mechs(&["CRAM-MD5", "LOGIN"])).unwrap(), AuthMechanism::Login);
        let err = choose(None, &mechs(&["CRAM-MD5"])).unwrap_err();
        assert_eq!(err.reason, Reason::AuthMechanismUnavailable);
    }

    #[test]
    fn forced_mechanism_must_be_advertised() {
        let forced = Some(AuthMechanism::Login);
        assert_eq!(choose(forced, &mechs(&["PLAIN", "LOGIN"])).unwrap(), AuthMechanism::Login);
        let err = choose(forced, &mechs(&["PLAIN"])).unwrap_err();
        assert_eq!(err.reason, Reason::AuthMechanismUnavailable);
    }

    #[test]
    fn reply_classes() {
        let r = |code| Reply { code, lines: vec!["echo of the client line".into()], bare_lf_lines: 0 };
        assert_eq!(classify(&r(535)).reason, Reason::AuthFailed);
        assert_eq!(classify(&r(538)).reason, Reason::AuthRequiredTls);
        assert_eq!(classify(&r(504)).reason, Reason::AuthMechanismUnavailable);
        assert_eq!(classify(&r(454)).reason, Reason::AuthTemporary);
        assert_eq!(classify(&r(421)).reason, Reason::Reply4xx);
        assert_eq!(classify(&r(530)).reason, Reason::AuthFailed);
        assert!(!classify(&r(535)).detail.contains("echo"));
    }
}
