//! The submit phase of a delivery probe: MAIL FROM, RCPT TO, DATA and the message, up to
//! the final 250, whose text names the queued message.
//!
//! A step of the probe walk (`probe::mod`), after AUTH (and the envelope check) on a
//! module with `delivery:`; the message comes from `delivery::message`.

use tokio::io::{AsyncRead, AsyncWrite};

use super::reply::Reply;
use super::session::Session;
use crate::config::Delivery;
use crate::outcome::{truncate, Reason, StepError};

/// Submits `message` from `delivery.mail_from` to `delivery.rcpt_to`. Returns the text of
/// the final 250. A 5xx anywhere is `submit_rejected`, a 4xx `reply_4xx`.
pub(super) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<S>,
    delivery: &Delivery,
    message: &[u8],
) -> Result<String, StepError> {
    let mail = format!("MAIL FROM:<{}>", delivery.mail_from);
    expect(&mail, session.command(&mail).await?, 2)?;
    let rcpt = format!("RCPT TO:<{}>", delivery.rcpt_to);
    expect(&rcpt, session.command(&rcpt).await?, 2)?;
    expect("DATA", session.command("DATA").await?, 3)?;
    let reply = expect("the message", session.data(message).await?, 2)?;
    Ok(reply.lines.first().cloned().unwrap_or_default())
}

/// The reply when its class is `class`, else the error it makes.
fn expect(what: &str, reply: Reply, class: u16) -> Result<Reply, StepError> {
    if reply.class() == class {
        return Ok(reply);
    }
    let reason = match reply.class() {
        5 => Reason::SubmitRejected,
        4 => Reason::Reply4xx,
        _ => Reason::Protocol,
    };
    let text = reply.lines.first().map(String::as_str).unwrap_or("");
    Err(StepError::new(reason, format!("{what}: {} {}", reply.code, truncate(text))))
}
