//! Response bodies: a whole one for small answers, and one that streams the exposition
//! in chunks as the renderer writes them.
//!
//! Part of `http`, the last stop of the data flow. `/metrics` renders on tokio's blocking
//! pool and hands each chunk over a small channel; the connection sends it while the next
//! is written, so a scrape holds a few chunks in memory whatever the fleet's size, and a
//! client that goes away stops the rendering at the next chunk.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::Full;
use hyper::body::{Bytes, Frame};
use tokio::sync::mpsc;

/// A response body: whole, or streamed from the renderer.
pub enum Body {
    Whole(Full<Bytes>),
    Chunks(mpsc::Receiver<Bytes>),
}

impl Body {
    pub fn whole(bytes: impl Into<Bytes>) -> Body {
        Body::Whole(Full::new(bytes.into()))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Whole(full) => Pin::new(full).poll_frame(cx),
            Body::Chunks(chunks) => {
                chunks.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Whole(full) => full.is_end_stream(),
            Body::Chunks(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Whole(full) => full.size_hint(),
            Body::Chunks(_) => hyper::body::SizeHint::default(),
        }
    }
}
