//! End-to-end delivery: the message a delivery probe submits ([`message`]), the IMAP side
//! that reads it back ([`imap`]), and what its header says about its path ([`headers`]).
//!
//! Part of the probe walk (`probe::mod`). For a module with `delivery:`, after AUTH the
//! walk opens the mailbox (`imap_connect`, `imap_login`), submits the message (`submit`),
//! says QUIT, then waits for it (`deliver`), reads its header (`fetch`), and deletes it and
//! the leftovers of earlier probes (`cleanup`). The outcome goes into the report as
//! [`DeliveryOutcome`], which `metrics` writes.

pub mod headers;
pub mod imap;
pub mod message;
pub mod wire;

/// Where the message was found: the label value of `smtp_delivery_folder_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::VariantArray, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Folder {
    Inbox,
    /// The configured junk folder, or the one marked `\Junk` (RFC 6154).
    Junk,
    /// Any other folder (a Sieve rule filed it there).
    Other,
}

impl Folder {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What a delivery probe learned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryOutcome {
    /// The token the message carried.
    pub token: String,
    /// What the server's 250 after DATA named the queued message (for logs, never a
    /// label): Postfix's `queued as ID`, or the reply's text.
    pub queue_id: Option<String>,
    pub folder: Option<Folder>,
    /// Read from the header, once fetched.
    pub path: Option<headers::PathInfo>,
    /// Leftovers of earlier probes that this probe deleted.
    pub swept: Option<u32>,
    /// Listed folders that could not be searched (refused by the server, or a name that
    /// cannot be sent back), each as `"name" (why)`, bounded; `None` until the wait ended.
    pub skipped_folders: Option<Vec<String>>,
}

/// The queue id in the 250 to the end of DATA: the word after `queued as` (Postfix,
/// Exim's `id=`), else the reply's text after the enhanced status code.
pub fn queue_id(reply_text: &str) -> String {
    let text = reply_text.trim();
    if let Some((_, rest)) = text.split_once("queued as ") {
        return rest.split_whitespace().next().unwrap_or("").trim_end_matches(['.', ',', ')']).to_owned();
    }
    if let Some((_, rest)) = text.split_once("id=") {
        return rest.split_whitespace().next().unwrap_or("").to_owned();
    }
    let text = match text.split_once(' ') {
        Some((status, rest)) if status.bytes().all(|b| b.is_ascii_digit() || b == b'.') => rest,
        _ => text,
    };
    crate::probe::truncate(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_of_common_servers() {
        assert_eq!(queue_id("2.0.0 Ok: queued as 4ZxY1b2C3dz9"), "4ZxY1b2C3dz9");
        assert_eq!(queue_id("OK id=1tGh5Q-0001Ab-2x"), "1tGh5Q-0001Ab-2x");
        assert_eq!(
            queue_id("2.6.0 <x@y> [InternalId=123] Queued mail for delivery"),
            "<x@y> [InternalId=123] Queued mail for delivery"
        );
        assert_eq!(queue_id("Ok"), "Ok");
        assert_eq!(queue_id("Message accepted for delivery"), "Message accepted for delivery");
    }
}
