//! SMTP AUTH (RFC 4954): choosing a mechanism and running the exchange (PLAIN, LOGIN,
//! CRAM-MD5, XOAUTH2).
//!
//! Called by the probe walk (`probe::mod`) in the `auth` phase, on a session that is already
//! encrypted unless the module allows plaintext AUTH. Nothing here logs or returns what was
//! sent: error details carry reply codes only, because some servers echo the client's
//! (base64) line back in their error text.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::io::{AsyncRead, AsyncWrite};

use super::reply::Reply;
use super::session::Session;
use crate::config::{AuthMechanism, CredentialSource, Credentials};
use crate::outcome::{Reason, StepError};

/// The largest token file read: OAuth 2.0 access tokens are a few KiB.
const MAX_TOKEN_BYTES: u64 = 64 << 10;

/// Reads the token file (bounded, regular files only) off the runtime's workers.
async fn read_token(path: &std::path::Path) -> Result<String, StepError> {
    let owned = path.to_owned();
    let read = tokio::task::spawn_blocking(move || crate::files::read_bounded(&owned, MAX_TOKEN_BYTES)).await;
    let bytes = match read {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
    .map_err(|e| StepError::new(Reason::AuthCredentials, format!("token_file {}: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|_| {
        StepError::new(Reason::AuthCredentials, format!("token_file {}: not UTF-8", path.display()))
    })
}

/// Password mechanisms in order of preference when the module does not force one.
const PREFERENCE: [AuthMechanism; 3] = [AuthMechanism::Plain, AuthMechanism::Login, AuthMechanism::CramMd5];

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

/// Runs AUTH with `mechanism`. `last_code` receives the code of every reply as it comes,
/// so after the exchange it holds the last one, success or not.
pub async fn authenticate<S>(
    session: &mut Session<S>,
    mechanism: AuthMechanism,
    creds: &Credentials,
    last_code: &mut Option<u16>,
) -> Result<(), StepError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut step = |reply: Reply| {
        *last_code = Some(reply.code);
        reply
    };
    let user = creds.username.as_str();
    let last = match (&creds.secret, mechanism) {
        (CredentialSource::Password(password), AuthMechanism::Plain) => {
            let token = B64.encode(format!("\0{user}\0{}", password.expose()));
            session.secrets(&[password.expose(), &token]);
            step(session.secret_command(&format!("AUTH PLAIN {token}"), "AUTH PLAIN <redacted>").await?)
        }
        (CredentialSource::Password(password), AuthMechanism::Login) => {
            let (user_b64, password_b64) = (B64.encode(user), B64.encode(password.expose()));
            session.secrets(&[password.expose(), &password_b64, &user_b64]);
            for (line, shown) in [("AUTH LOGIN", "AUTH LOGIN"), (user_b64.as_str(), "<redacted username>")] {
                let reply = step(session.secret_command(line, shown).await?);
                if reply.code != 334 {
                    return Err(classify(&reply));
                }
            }
            step(session.secret_command(&password_b64, "<redacted password>").await?)
        }
        (CredentialSource::Password(password), AuthMechanism::CramMd5) => {
            let challenge = step(session.command("AUTH CRAM-MD5").await?);
            if challenge.code != 334 {
                return Err(classify(&challenge));
            }
            let text = challenge.lines.first().map(String::as_str).unwrap_or("");
            let challenge = B64
                .decode(text.trim())
                .map_err(|_| StepError::new(Reason::Protocol, "CRAM-MD5 challenge is not base64"))?;
            let digest = cram_md5(password.expose().as_bytes(), &challenge);
            let response = B64.encode(format!("{user} {digest}"));
            session.secrets(&[password.expose(), &response, &digest]);
            step(session.secret_command(&response, "<redacted response>").await?)
        }
        (CredentialSource::TokenFile(path), AuthMechanism::Xoauth2) => {
            // Read on every probe: another process rotates the token.
            let token = read_token(path).await?;
            let payload = xoauth2_payload(user, token.trim());
            session.secrets(&[token.trim(), &payload]);
            let reply = step(
                session.secret_command(&format!("AUTH XOAUTH2 {payload}"), "AUTH XOAUTH2 <redacted>").await?,
            );
            if reply.code == 334 {
                // The server explains the failure in a base64 JSON challenge; an empty line
                // ends the exchange and brings the final error reply (RFC 7628 style).
                step(session.command("").await?)
            } else {
                reply
            }
        }
        (source, mechanism) => {
            let kind = match source {
                CredentialSource::Password(_) => "a password",
                CredentialSource::TokenFile(_) => "a token",
            };
            return Err(StepError::new(
                Reason::AuthMechanismUnavailable,
                format!("mechanism {} cannot be used with {kind}", mechanism.as_str()),
            ));
        }
    };
    if last.code == 235 {
        Ok(())
    } else {
        Err(classify(&last))
    }
}

/// The XOAUTH2 initial response: `user=U ^A auth=Bearer T ^A ^A`, base64.
fn xoauth2_payload(user: &str, token: &str) -> String {
    B64.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// The CRAM-MD5 response digest (RFC 2195): HMAC-MD5 of the challenge keyed with the
/// password, in lower-case hex.
fn cram_md5(password: &[u8], challenge: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<md5::Md5>::new_from_slice(password).expect("HMAC takes keys of any length");
    mac.update(challenge);
    hex::encode(mac.finalize().into_bytes())
}

/// Maps a reply that ends AUTH unsuccessfully to a reason (RFC 4954 §6).
pub fn classify(reply: &Reply) -> StepError {
    let reason = match reply.code {
        538 => Reason::AuthRequiredTls,
        504 => Reason::AuthMechanismUnavailable,
        // 421 means the server is closing the channel, whatever the command was.
        421 => Reason::Reply4xx,
        400..=499 => Reason::AuthTemporary,
        // 535 (bad credentials), and any other refusal.
        500..=599 => Reason::AuthFailed,
        _ => Reason::Protocol,
    };
    // Only the code: reply text may echo what the client sent.
    StepError::new(reason, format!("AUTH answered {}", reply.code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::strings;

    /// Issue 17: the XOAUTH2 payload is the one Google's XOAUTH2 documentation gives for its
    /// example user and token (an independent vector, not the client's own format).
    #[test]
    fn xoauth2_payload_matches_the_documented_example() {
        assert_eq!(
            xoauth2_payload("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
    }

    /// Issue 17: the error says what the server offered, or that it offered nothing.
    #[test]
    fn an_unavailable_mechanism_names_what_was_offered() {
        let offered = strings(&["PLAIN", "CRAM-MD5"]);
        let err = choose(Some(AuthMechanism::Login), &offered).unwrap_err();
        assert_eq!(
            (err.reason, err.detail.as_str()),
            (Reason::AuthMechanismUnavailable, "mechanism LOGIN is not advertised (offered: PLAIN CRAM-MD5)")
        );
        let err = choose(None, &[]).unwrap_err();
        assert_eq!(err.detail, "no supported mechanism advertised (offered: none)");
        assert_eq!(choose(None, &offered).unwrap(), AuthMechanism::Plain);
    }

    #[test]
    fn cram_md5_matches_the_rfc_2195_example() {
        let challenge = b"<1896.697170952@postoffice.reston.mci.net>";
        assert_eq!(cram_md5(b"tanstaaftanstaaf", challenge), "b913a602c7eda7a495b4e6e7334d3890");
    }

    #[test]
    fn prefers_plain_then_login() {
        assert_eq!(choose(None, &strings(&["LOGIN", "PLAIN"])).unwrap(), AuthMechanism::Plain);
        assert_eq!(choose(None, &strings(&["CRAM-MD5", "LOGIN"])).unwrap(), AuthMechanism::Login);
        assert_eq!(choose(None, &strings(&["CRAM-MD5"])).unwrap(), AuthMechanism::CramMd5);
        let err = choose(None, &strings(&["GSSAPI"])).unwrap_err();
        assert_eq!(err.reason, Reason::AuthMechanismUnavailable);
    }

    #[test]
    fn forced_mechanism_must_be_advertised() {
        let forced = Some(AuthMechanism::Login);
        assert_eq!(choose(forced, &strings(&["PLAIN", "LOGIN"])).unwrap(), AuthMechanism::Login);
        let err = choose(forced, &strings(&["PLAIN"])).unwrap_err();
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
