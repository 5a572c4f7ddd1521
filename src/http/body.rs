//! Response bodies: a whole one for small answers, and one that streams the exposition
//! in chunks as the renderer writes them.
//!
//! Part of `http`, the last stop of the data flow. `/metrics` renders on tokio's blocking
//! pool and hands each chunk over a small channel; the connection sends it while the next
//! is written, so a scrape holds a few chunks in memory whatever the fleet's size, and a
//! client that goes away stops the rendering at the next chunk. A render given up (see
//! `render`) ends its body with an error, so that hyper breaks the response off rather
//! than end it as if it were whole. When a body is dropped (sent, or its connection gone),
//! its connection's slot learns that the answer is out.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::Full;
use hyper::body::{Bytes, Frame};
use tokio::sync::mpsc;

use super::conn::Slot;

/// A response body: whole, or streamed from the renderer.
pub struct Body {
    kind: Kind,
    slot: Option<Arc<Slot>>,
}

enum Kind {
    Whole(Full<Bytes>),
    Chunks { chunks: mpsc::Receiver<Bytes>, aborted: Arc<AtomicBool> },
}

impl Body {
    pub fn whole(bytes: impl Into<Bytes>) -> Body {
        Body { kind: Kind::Whole(Full::new(bytes.into())), slot: None }
    }

    /// A body of the chunks that arrive on `chunks`; once they stop, it ends, or fails if
    /// `aborted` is set by then.
    pub fn chunks(chunks: mpsc::Receiver<Bytes>, aborted: Arc<AtomicBool>) -> Body {
        Body { kind: Kind::Chunks { chunks, aborted }, slot: None }
    }

    /// Tells `slot` when this body is done with.
    pub fn for_slot(mut self, slot: Arc<Slot>) -> Body {
        self.slot = Some(slot);
        self
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(slot) = &self.slot {
            slot.waiting();
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Whole(full) => Pin::new(full).poll_frame(cx).map_err(|never| match never {}),
            Kind::Chunks { chunks, aborted } => chunks.poll_recv(cx).map(|chunk| match chunk {
                Some(bytes) => Some(Ok(Frame::data(bytes))),
                None if aborted.load(Ordering::Relaxed) => Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client read nothing; render given up",
                ))),
                None => None,
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Whole(full) => full.is_end_stream(),
            Kind::Chunks { .. } => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match &self.kind {
            Kind::Whole(full) => full.size_hint(),
            Kind::Chunks { .. } => hyper::body::SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// Issue 17: a whole body says when it has nothing to send; a chunked one ends after
    /// its chunks, with an error when the render was given up (so hyper breaks the
    /// response off instead of ending it as if whole).
    #[tokio::test]
    async fn bodies_end_cleanly_or_with_an_error_when_the_render_was_given_up() {
        use hyper::body::Body as _;
        assert!(Body::whole("").is_end_stream());
        assert!(!Body::whole("x").is_end_stream());
        for aborted in [false, true] {
            let (tx, rx) = mpsc::channel(2);
            tx.send(Bytes::from_static(b"chunk")).await.unwrap();
            drop(tx);
            let mut body = Body::chunks(rx, Arc::new(AtomicBool::new(aborted)));
            assert!(!body.is_end_stream());
            let first = body.frame().await.unwrap().unwrap();
            assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"chunk"));
            match body.frame().await {
                None => assert!(!aborted, "a given-up render ended as if whole"),
                Some(Err(e)) => assert!(aborted && e.kind() == io::ErrorKind::TimedOut, "{e}"),
                Some(Ok(_)) => panic!("a frame after the last chunk"),
            }
        }
    }
}
