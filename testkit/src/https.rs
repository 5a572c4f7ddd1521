//! A small HTTPS server for the MTA-STS tests: TLS with testkit's PKI on 127.0.0.1:0, one
//! canned answer per Host, a 404 for any other. It reads one request per connection and
//! closes it after the answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// One canned answer.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// A `Location` header, for redirects.
    pub location: Option<String>,
}

impl Answer {
    /// `200`, `text/plain`, `body`.
    pub fn policy(body: &str) -> Answer {
        Answer {
            status: 200,
            content_type: "text/plain".into(),
            body: body.as_bytes().to_vec(),
            location: None,
        }
    }
}

/// The running server; it stops when dropped.
pub struct HttpsServer {
    pub addr: SocketAddr,
    answers: Arc<Mutex<BTreeMap<String, Answer>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpsServer {
    pub async fn start(acceptor: TlsAcceptor) -> HttpsServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the HTTPS server");
        let addr = listener.local_addr().expect("local address");
        let answers: Arc<Mutex<BTreeMap<String, Answer>>> = Arc::default();
        let table = answers.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, table) = (acceptor.clone(), table.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let host = text
                        .lines()
                        .find_map(|l| l.strip_prefix("host:"))
                        .map(|h| h.trim().to_owned())
                        .unwrap_or_default();
                    let answer = table.lock().unwrap().get(&host).cloned().unwrap_or(Answer {
                        status: 404,
                        content_type: "text/plain".into(),
                        body: b"not found".to_vec(),
                        location: None,
                    });
                    let mut response = format!(
                        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                        answer.status,
                        answer.content_type,
                        answer.body.len()
                    );
                    if let Some(location) = &answer.location {
                        response.push_str(&format!("Location: {location}\r\n"));
                    }
                    response.push_str("\r\n");
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.write_all(&answer.body).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        HttpsServer { addr, answers, task }
    }

    /// Answers requests for `host` with `answer`.
    pub fn set(&self, host: &str, answer: Answer) {
        self.answers.lock().unwrap().insert(host.to_ascii_lowercase(), answer);
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
