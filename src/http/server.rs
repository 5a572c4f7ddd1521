//! Accepting connections: each gets a slot (`conn`) or is refused, then hyper serves it
//! under the header read timeout, the web config's TLS and the stall guard.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::conn::{self, Connections, Slot};
use super::routes::handle;
use super::{web, Shared};

/// How long a client may take to send its request headers.
pub(super) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves. Connections in progress are not waited for.
pub async fn serve(listener: TcpListener, state: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let connections = Arc::new(Connections::default());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        // Responses leave as they are written: the last, partial segment of a streamed
        // exposition would otherwise wait for the client's delayed ACK (40 ms on Linux).
        let _ = stream.set_nodelay(true);
        // Every slot answering a request at its client's pace: this one waits its turn
        // by going away (its client retries), rather than queueing unseen.
        let Some(slot) = connections.admit(peer.ip()) else {
            tracing::debug!(peer = %peer.ip(), "no connection can give way; closing a new one");
            continue;
        };
        tokio::spawn(serve_connection(stream, slot, state.clone()));
    }
}

/// Serves one connection until it ends, its slot is taken, or a write stalls: through TLS
/// first when the web configuration says so.
pub(super) async fn serve_connection(stream: tokio::net::TcpStream, slot: Arc<Slot>, state: Arc<Shared>) {
    let config = state.web.current();
    let Some(tls) = config.tls.clone() else {
        return serve_http(slot.guard(stream), slot, state).await;
    };
    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
    let tls_stream = tokio::select! {
        accepted = tokio::time::timeout(HEADER_READ_TIMEOUT, accept) => match accepted {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!("TLS handshake took too long"),
        },
        _ = slot.cancel.cancelled() => return,
    };
    if !config.client_allowed_sans.is_empty()
        && !web::client_san_allowed(tls_stream.get_ref().1.peer_certificates(), &config.client_allowed_sans)
    {
        return tracing::debug!("client certificate names none of client_allowed_sans");
    }
    serve_http(slot.guard(tls_stream), slot, state).await
}

pub(super) async fn serve_http<S>(io: conn::StallGuard<S>, slot: Arc<Slot>, state: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service_slot = slot.clone();
    let service = service_fn(move |req| {
        let (state, slot) = (state.clone(), service_slot.clone());
        async move {
            slot.busy();
            Ok::<_, Infallible>(handle(&state, &slot, req).await.map(|body| body.for_slot(slot)))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(io), service);
    tokio::select! {
        result = conn => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        }
        _ = slot.cancel.cancelled() => tracing::debug!("connection closed to make room for another"),
    }
}
