//! The probe: one SMTP session against one (host, port), timed phase by phase.
//!
//! Middle of the data flow: the scheduler (or a test) calls [`run`] with a `ProbeSpec` from
//! `config`, and gets back a plain [`ProbeReport`], which `metrics` records. A probe never
//! touches the registry. The walk is: resolve → connect → [tls_handshake if implicit] →
//! banner → ehlo → [starttls → tls_handshake → ehlo_tls] → [auth] → [envelope] → quit. Each phase has
//! its own deadline under the probe's overall deadline; the first phase that fails ends the
//! walk with a (phase, reason) pair, after a polite QUIT when the conversation allows it.
//!
//! The folder: `walk` runs the phases in order and `report` is what they learned; the
//! phases' own steps are `session` (lines and replies on the wire, through `reply`),
//! `ehlo`, `auth`, `envelope`, `submit`, and `delivery` (the IMAP side of an end-to-end
//! delivery probe); `expect` evaluates a target's expectations, `state` names the port's
//! state, `transcript` and `secrets` record what was said with every secret hidden, and
//! `quickack` sends ACKs at once.

mod auth;
pub mod delivery;
mod ehlo;
mod envelope;
pub mod expect;
mod quickack;
pub mod reply;
mod report;
pub mod secrets;
mod session;
mod state;
mod submit;
pub mod transcript;
mod walk;

use tokio::io::{AsyncRead, AsyncWrite};

pub use crate::outcome::{truncate, Failure, Phase, Reason, StepError};
pub use crate::tls::TlsInfo;
pub use ehlo::Capabilities;
pub use envelope::{EnvelopeOutcome, RecipientReply};
pub use report::ProbeReport;
pub use state::PortState;
pub use walk::{run, run_on_stream, run_recorded};

/// A byte stream the session can run on: plain TCP, TLS over TCP, or a test's in-memory pipe.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
