//! The one HTTP/1.1 client of the tests and the bench: blocking, keep-alive, bodies by
//! Content-Length, chunked or until close, every read and body bounded.
//!
//! Async tests call it from `tokio::task::spawn_blocking`, so that an exporter running
//! in the same runtime keeps serving while the client waits.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The largest body read (the exposition of 10,000 specs is about 80 MB).
const MAX_BODY: usize = 512 * 1024 * 1024;

/// A connection to one server, reused across requests while the server keeps it open.
pub struct Client {
    addr: SocketAddr,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
    user_agent: &'static str,
}

/// A response: status, headers (names in lower case) and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (empty when it is not UTF-8).
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("")
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// One request's parts, as `Client::request` takes them.
#[derive(Clone, Copy)]
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: &'a [u8],
}

/// An exchange error, and whether it is safe to retry (nothing reached the server's handler).
type ExchangeError = (String, bool);

impl Client {
    /// A client for `addr` whose every connect, read and write is bounded by `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Client {
        Client { addr, timeout, conn: None, user_agent: "smtp-exporter-testkit" }
    }

    /// The same, with its own User-Agent.
    pub fn with_user_agent(mut self, user_agent: &'static str) -> Client {
        self.user_agent = user_agent;
        self
    }

    /// GET `path`.
    pub fn get(&mut self, path: &str) -> Result<Response, String> {
        self.request("GET", path, &[], b"")
    }

    /// Sends one request and reads its response. A request on a kept-alive connection that
    /// the server had closed meanwhile is sent again once on a new connection.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, String> {
        let request = Request { method, path, headers, body };
        let reused = self.conn.is_some();
        match self.exchange(&request) {
            Ok(r) => Ok(r),
            Err((e, retryable)) => {
                self.conn = None;
                if reused && retryable {
                    self.exchange(&request).map_err(|(e, _)| e)
                } else {
                    Err(e)
                }
            }
        }
    }

    fn exchange(&mut self, request: &Request<'_>) -> Result<Response, ExchangeError> {
        let Request { method, path, headers, body } = *request;
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, self.timeout)
                .map_err(|e| (format!("connect {}: {e}", self.addr), false))?;
            let _ = s.set_read_timeout(Some(self.timeout));
            let _ = s.set_write_timeout(Some(self.timeout));
            let _ = s.set_nodelay(true);
            self.conn = Some(BufReader::with_capacity(64 * 1024, s));
        }
        let conn = self.conn.as_mut().expect("connected above");
        // A Host among `headers` stands for the client's own (a browser sent to another name).
        let mut request = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
            request.push_str(&format!("Host: {}\r\n", self.addr));
        }
        request.push_str(&format!("User-Agent: {}\r\n", self.user_agent));
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut wire = request.into_bytes();
        wire.extend_from_slice(body);
        conn.get_mut().write_all(&wire).map_err(|e| (format!("send: {e}"), true))?;
        let mut line = String::new();
        match read_line_bounded(conn, &mut line) {
            Ok(0) => return Err(("connection closed before the response".into(), true)),
            Ok(_) => {}
            Err(e) => return Err((e, line.is_empty())),
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| (format!("bad status line {line:?}"), false))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        let mut response_headers = Vec::new();
        for _ in 0..200 {
            line.clear();
            read_line_bounded(conn, &mut line).map_err(|e| (e, false))?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
                match k.as_str() {
                    "content-length" => length = v.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
                response_headers.push((k, v));
            }
        }
        let mut body = Vec::new();
        let fail = |e: std::io::Error| (format!("reading the body: {e}"), false);
        if method == "HEAD" || status == 204 || status == 304 {
            // No body.
        } else if chunked {
            loop {
                line.clear();
                read_line_bounded(conn, &mut line).map_err(|e| (e, false))?;
                let size_text = line.trim().split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| (format!("bad chunk size {size_text:?}"), false))?;
                if size == 0 {
                    for _ in 0..100 {
                        line.clear();
                        if read_line_bounded(conn, &mut line).map_err(|e| (e, false))? == 0
                            || line.trim().is_empty()
                        {
                            break;
                        }
                    }
                    break;
                }
                if body.len() + size > MAX_BODY {
                    return Err(("body too large".into(), false));
                }
                let start = body.len();
                body.resize(start + size, 0);
                conn.read_exact(&mut body[start..]).map_err(fail)?;
                let mut crlf = [0u8; 2];
                conn.read_exact(&mut crlf).map_err(fail)?;
            }
        } else if let Some(len) = length {
            if len > MAX_BODY {
                return Err(("body too large".into(), false));
            }
            body.resize(len, 0);
            conn.read_exact(&mut body).map_err(fail)?;
        } else {
            conn.by_ref().take(MAX_BODY as u64).read_to_end(&mut body).map_err(fail)?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok(Response { status, headers: response_headers, body })
    }
}

fn read_line_bounded(conn: &mut BufReader<TcpStream>, line: &mut String) -> Result<usize, String> {
    conn.by_ref().take(16 * 1024).read_line(line).map_err(|e| format!("reading the response: {e}"))
}

/// One GET on a connection of its own, with a 10 s bound on every step: (status, body).
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let response = Client::new(addr, Duration::from_secs(10)).get(path)?;
    Ok((response.status, response.text().to_owned()))
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay as they are).
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
