//! The secrets one probe holds, and every form in which a server could send them back.
//!
//! Part of the probe walk (`probe::mod`): the walk registers the module's SMTP and IMAP
//! passwords when it starts, the AUTH step adds what it derives or reads at probe time (a
//! token from its file, a CRAM-MD5 response), and everything the report carries out of the
//! probe in words (the failure's detail, each transcript line, the queue id) passes through
//! [`Secrets::redact`] first. [`bound`] then makes a failure's detail short and printable.
//!
//! A server may echo what it was sent in another encoding than the one it got: the
//! password alone, inside the base64 of AUTH PLAIN or XOAUTH2, with or without padding,
//! URL-safe, or as IMAP quoted it. Any base64 text that contains the password's bytes
//! contains the encoding of the password's whole 3-byte groups at one of three alignments,
//! so those three strings (per alphabet) catch the password inside any base64 payload,
//! whatever surrounds it.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;

/// What stands where a secret was.
pub const REDACTED: &str = "<redacted>";

/// The longest failure detail kept, in characters (control characters escaped first).
pub const MAX_DETAIL_CHARS: usize = 400;

/// The strings a probe must never show, shared by the walk, its sessions and its
/// transcript, longest first; each with whether it is a base64 core, whose neighbours are
/// hidden too. A clone is the same set.
#[derive(Clone, Default)]
pub struct Secrets(Arc<Mutex<Vec<(String, bool)>>>);

/// How far a base64 core's hiding reaches on each side: the group that holds a secret's
/// first or last bytes mixed with its neighbours' (and padding).
const REACH: usize = 4;

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} forms)", self.forms().len())
    }
}

impl Secrets {
    /// Registers `secret` and the forms a server could echo it in (empty ones are not
    /// secrets).
    pub fn add(&self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let exact = [
            secret.to_owned(),
            imap_quoted(secret),
            form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        ];
        let forms = exact
            .into_iter()
            .map(|f| (f, false))
            .chain(base64_cores(secret.as_bytes()).into_iter().map(|f| (f, true)));
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for form in forms {
            if !form.0.is_empty() && !held.iter().any(|(f, _)| *f == form.0) {
                held.push(form);
            }
        }
        // Longest first, so that a form inside a longer one does not break the longer one.
        held.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    }

    fn forms(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(f, _)| f.clone()).collect()
    }

    /// `text` with every registered form replaced by [`REDACTED`]; around a base64 core,
    /// the base64 characters next to it too (up to [`REACH`] on each side), since they
    /// carry the secret's first and last bits mixed with what surrounds it.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Cow::Borrowed(text);
        for (form, core) in held.iter() {
            if !out.contains(form.as_str()) {
                continue;
            }
            out =
                Cow::Owned(if *core { hide_core(&out, form) } else { out.replace(form.as_str(), REDACTED) });
        }
        out
    }
}

/// `text` with each `core` hidden with up to [`REACH`] base64 characters before it and
/// after it (padding included).
fn hide_core(text: &str, core: &str) -> String {
    let bytes = text.as_bytes();
    let b64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_');
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(at) = text[from..].find(core).map(|i| i + from) {
        let mut start = at;
        while start > copied && at - start < REACH && b64(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = at + core.len();
        while end < bytes.len() && end - (at + core.len()) < REACH && (b64(bytes[end]) || bytes[end] == b'=')
        {
            end += 1;
        }
        out.push_str(&text[copied..start]);
        out.push_str(REDACTED);
        copied = end;
        from = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// The password as an IMAP quoted string carries it (RFC 3501 §4.3): `\` and `"` escaped.
fn imap_quoted(secret: &str) -> String {
    secret.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The base64 of the secret's whole 3-byte groups starting at byte 0, 1 and 2, in the
/// standard and the URL-safe alphabet: one of them is in any base64 text that encodes the
/// secret somewhere in its input. With each, the encoding of all the bytes from there as
/// the end of the input: AUTH PLAIN and LOGIN end with the password, so its last bytes
/// are hidden too.
fn base64_cores(secret: &[u8]) -> Vec<String> {
    let mut cores = Vec::new();
    for shift in 0..3.min(secret.len()) {
        let rest = &secret[shift..];
        let whole = rest.len() / 3 * 3;
        if whole == 0 {
            continue;
        }
        for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
            cores.push(engine.encode(&rest[..whole]));
            if whole < rest.len() {
                cores.push(engine.encode(rest));
            }
        }
    }
    cores
}

/// A failure's detail as it may leave the probe: secrets redacted, control characters
/// written as `\xNN`, at most [`MAX_DETAIL_CHARS`] characters with a mark when cut.
pub fn bound(secrets: &Secrets, detail: &str) -> String {
    let clean = secrets.redact(detail);
    let mut out = String::with_capacity(clean.len().min(MAX_DETAIL_CHARS + 24));
    for (shown, c) in clean.chars().enumerate() {
        if shown == MAX_DETAIL_CHARS {
            out.push_str(&format!("… ({} characters)", clean.chars().count()));
            break;
        }
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn with(secrets: &[&str]) -> Secrets {
        let held = Secrets::default();
        secrets.iter().for_each(|s| held.add(s));
        held
    }

    /// Every encoding a server was seen to echo, and the payloads of AUTH PLAIN and
    /// XOAUTH2 in which the password sits at each of the three alignments.
    #[test]
    fn the_password_is_caught_in_every_encoding_a_server_could_echo() {
        let password = "c0rrect \"horse\" \\ battery";
        let secrets = with(&[password]);
        let mut echoes = vec![
            password.to_owned(),
            format!("\"{}\"", imap_quoted(password)),
            STANDARD.encode(password),
            STANDARD_NO_PAD.encode(password),
            URL_SAFE_NO_PAD.encode(password),
            form_urlencoded::byte_serialize(password.as_bytes()).collect(),
            STANDARD.encode(format!("user=u\x01auth=Bearer {password}\x01\x01")),
        ];
        for user in ["", "u", "us", "use"] {
            echoes.push(STANDARD.encode(format!("\0{user}\0{password}")));
            echoes.push(STANDARD_NO_PAD.encode(format!("\0{user}\0{password}")));
        }
        for echo in echoes {
            let said = format!("NO you said {echo} and that is wrong");
            let shown = secrets.redact(&said);
            assert!(shown.contains(REDACTED), "{said} -> {shown}");
            assert!(!shown.contains(password), "{shown}");
            // No run of the password's groups survives in any alphabet.
            for core in base64_cores(password.as_bytes()) {
                assert!(!shown.contains(&core), "{said} -> {shown}");
            }
        }
    }

    /// Issue 26: no bit of the password stays in an echoed AUTH PLAIN payload, whatever the
    /// user name's length puts it at: what is left before the hiding decodes to a part of
    /// what came before the password.
    #[test]
    fn no_bit_of_the_password_is_left_at_the_edges_of_a_payload() {
        let password = "Pa55word-xyz";
        let secrets = with(&[password]);
        for user in ["probe@example.test", "a", "ab", "abc", "user"] {
            let plain = format!("\0{user}\0{password}");
            for payload in [STANDARD.encode(&plain), STANDARD_NO_PAD.encode(&plain)] {
                let shown = secrets.redact(&payload).into_owned();
                let (kept, rest) = shown.split_once(REDACTED).expect("hidden");
                assert_eq!(rest, "", "{user}: {shown}");
                // Whole groups of what is left decode to bytes before the password.
                let whole = &kept[..kept.len() / 4 * 4];
                let decoded = STANDARD.decode(whole).unwrap();
                assert!(
                    plain.as_bytes().starts_with(&decoded) && decoded.len() <= plain.len() - password.len(),
                    "{user}: {shown}"
                );
                // A partial group left over would carry bits of the next bytes: none is.
                assert_eq!(kept.len() % 4, 0, "{user}: {shown}");
            }
        }
    }

    #[test]
    fn text_without_a_secret_is_left_as_it_is() {
        let secrets = with(&["hunter2!"]);
        assert!(matches!(secrets.redact("250 OK queued"), Cow::Borrowed("250 OK queued")));
        let nothing = Secrets::default();
        nothing.add("");
        assert_eq!(nothing.forms().len(), 0);
        assert_eq!(format!("{secrets:?}"), format!("Secrets({} forms)", secrets.forms().len()));
        assert!(!format!("{secrets:?}").contains("hunter2"));
    }

    /// A clone shares the set: what the AUTH step adds, the walk's redaction sees.
    #[test]
    fn a_clone_is_the_same_set() {
        let secrets = Secrets::default();
        secrets.clone().add("t0ken-from-file");
        assert_eq!(secrets.redact("x t0ken-from-file y"), "x <redacted> y");
    }

    #[test]
    fn a_detail_is_redacted_escaped_and_cut() {
        let secrets = with(&["pw-123"]);
        assert_eq!(bound(&secrets, "LOGIN refused: pw-123\r\n"), "LOGIN refused: <redacted>\\x0d\\x0a");
        let long = "é".repeat(5_000_000);
        let shown = bound(&secrets, &long);
        assert_eq!(shown, format!("{}… (5000000 characters)", "é".repeat(MAX_DETAIL_CHARS)));
        let exactly = "x".repeat(MAX_DETAIL_CHARS);
        assert_eq!(bound(&secrets, &exactly), exactly);
    }
}
