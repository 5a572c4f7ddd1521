//! Connections: how many are served, which one gives way when all slots are taken, and how
//! long a response may wait for a client that does not read.
//!
//! Part of `http`, the last stop of the data flow, below the routes. Two kinds of client
//! can hold every slot while doing nothing useful: one that sends its request a byte at a
//! time (or nothing after connecting), and one that sends requests and never reads the
//! answers. So when all [`MAX_CONNECTIONS`] slots are taken, a new connection takes the
//! slot of the connection that has waited longest for a request, or else of the one whose
//! writes have been stalled longest; a connection in the middle of a request that is being
//! answered at the pace it is read is never the one to go. On its own, a write that makes
//! no progress for [`WRITE_STALL_TIMEOUT`] ends its connection. A scrape therefore gets a
//! slot at once whatever holds the others.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// Open connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a write may make no progress before its connection is closed.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Every open connection, by id.
pub struct Connections {
    base: Instant,
    open: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    next_id: u64,
    by_id: HashMap<u64, Entry>,
}

/// What admission needs to know of a connection.
struct Entry {
    /// Waiting for a request since then, in ms after `base`; `None` while one is answered.
    waiting_since: Option<u64>,
    /// Writes stalled since then, in ms after `base` (0: not stalled).
    stalled_since: Arc<AtomicU64>,
    cancel: CancellationToken,
}

impl Default for Connections {
    fn default() -> Connections {
        Connections { base: Instant::now(), open: Mutex::default() }
    }
}

impl Connections {
    fn now_ms(&self) -> u64 {
        // At least 1, so that 0 can mean "not stalled".
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Gives a new connection a slot. When all are taken, the connection that has waited
    /// longest for a request gives way, else the one stalled longest on a write; `None`
    /// when every slot is answering a request at its client's pace.
    pub fn admit(self: &Arc<Self>) -> Option<Arc<Slot>> {
        let now = self.now_ms();
        let mut slots = self.open.lock().expect("connections lock");
        if slots.by_id.len() >= MAX_CONNECTIONS {
            let waiting = slots.by_id.iter().filter_map(|(id, e)| e.waiting_since.map(|t| (t, *id))).min();
            let stalled = || {
                slots
                    .by_id
                    .iter()
                    .map(|(id, e)| (e.stalled_since.load(Ordering::Relaxed), *id))
                    .filter(|(t, _)| *t != 0)
                    .min()
            };
            let (_, victim) = waiting.or_else(stalled)?;
            if let Some(entry) = slots.by_id.remove(&victim) {
                entry.cancel.cancel();
            }
        }
        let id = slots.next_id;
        slots.next_id += 1;
        let stalled_since = Arc::new(AtomicU64::new(0));
        let cancel = CancellationToken::new();
        slots.by_id.insert(
            id,
            Entry { waiting_since: Some(now), stalled_since: stalled_since.clone(), cancel: cancel.clone() },
        );
        Some(Arc::new(Slot { id, connections: self.clone(), stalled_since, cancel }))
    }

    fn set_waiting(&self, id: u64, waiting: bool) {
        let now = self.now_ms();
        if let Some(entry) = self.open.lock().expect("connections lock").by_id.get_mut(&id) {
            entry.waiting_since = waiting.then_some(now);
        }
    }

    /// How many connections are open.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().expect("connections lock").by_id.len()
    }
}

/// One connection's slot: it tells whether a request is being answered, and is given up
/// when dropped.
pub struct Slot {
    id: u64,
    connections: Arc<Connections>,
    stalled_since: Arc<AtomicU64>,
    /// Cancelled when another connection takes this slot.
    pub cancel: CancellationToken,
}

impl Slot {
    /// A request has come: this connection is not to give way now.
    pub fn busy(&self) {
        self.connections.set_waiting(self.id, false);
    }

    /// The answer is out: the connection waits for its next request.
    pub fn waiting(&self) {
        self.connections.set_waiting(self.id, true);
    }

    /// Wraps the connection's stream so that a stalled write ends it and is seen here.
    pub fn guard<S>(&self, stream: S) -> StallGuard<S> {
        StallGuard {
            stream,
            deadline: None,
            stalled_since: self.stalled_since.clone(),
            base: self.connections.base,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.open.lock().expect("connections lock").by_id.remove(&self.id);
    }
}

/// A stream whose writes fail with `TimedOut` after [`WRITE_STALL_TIMEOUT`] without
/// progress, and which records when its writes began to stall.
pub struct StallGuard<S> {
    stream: S,
    deadline: Option<Pin<Box<Sleep>>>,
    stalled_since: Arc<AtomicU64>,
    base: Instant,
}

impl<S> StallGuard<S> {
    /// A write could not go on: arm the deadline (once), and fail when it has passed.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.deadline.is_none() {
            let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
            self.stalled_since.store(ms, Ordering::Relaxed);
            self.deadline = Some(Box::pin(tokio::time::sleep(WRITE_STALL_TIMEOUT)));
        }
        match self.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of the response for too long",
            ))),
            _ => Poll::Pending,
        }
    }

    fn progressed(&mut self) {
        if self.deadline.take().is_some() {
            self.stalled_since.store(0, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Pending => self.stalled(cx).map(|r| r.map(|()| 0)),
            ready => {
                self.progressed();
                ready
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_flush(cx) {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.progressed();
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.stalled(cx).map(|r| r.map(|()| 0)),
            ready => {
                self.progressed();
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_house_gives_way_longest_waiting_first_and_never_a_busy_one() {
        let connections = Arc::new(Connections::default());
        let mut slots: Vec<Arc<Slot>> = (0..MAX_CONNECTIONS).map(|_| connections.admit().unwrap()).collect();
        for slot in &slots[1..] {
            slot.busy();
        }
        // Only the first waits for a request: it gives way.
        let newcomer = connections.admit().unwrap();
        assert!(slots[0].cancel.is_cancelled());
        assert!(slots[1..].iter().all(|s| !s.cancel.is_cancelled()));
        assert_eq!(connections.len(), MAX_CONNECTIONS);
        newcomer.busy();
        // Everyone busy and nobody stalled: no slot for another.
        slots.remove(0);
        assert!(connections.admit().is_none());
        // A stalled writer gives way next.
        slots[5].stalled_since.store(42, Ordering::Relaxed);
        assert!(connections.admit().is_some());
        assert!(slots[5].cancel.is_cancelled());
    }

    /// Issue 17: among waiting connections, the one that has waited longest gives way,
    /// whatever the order they came in; a body handed to a slot makes it wait for its next
    /// request once the body is done with (dropped).
    #[tokio::test]
    async fn the_longest_waiting_gives_way_and_a_sent_body_makes_its_slot_wait() {
        let connections = Arc::new(Connections::default());
        let slots: Vec<Arc<Slot>> = (0..MAX_CONNECTIONS).map(|_| connections.admit().unwrap()).collect();
        for slot in &slots {
            slot.busy();
        }
        // The second slot's answer goes out first, the first slot's 20 ms later.
        drop(super::super::body::Body::whole("answer").for_slot(slots[1].clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(super::super::body::Body::whole("answer").for_slot(slots[0].clone()));
        assert!(connections.admit().is_some());
        assert!(slots[1].cancel.is_cancelled(), "the longest waiting gives way");
        assert!(!slots[0].cancel.is_cancelled());
    }

    /// Issue 17: a write that cannot go on arms the stall deadline and records when it
    /// began; progress clears both; past the deadline the write fails with `TimedOut`.
    /// A dropped slot frees its place.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_fails_after_its_deadline_and_progress_clears_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let connections = Arc::new(Connections::default());
        let slot = connections.admit().unwrap();
        assert_eq!(connections.len(), 1);
        let (client, mut peer) = tokio::io::duplex(8);
        let mut guard = slot.guard(client);
        guard.write_all(b"12345678").await.unwrap();
        tokio::time::advance(Duration::from_millis(5)).await;
        // The pipe is full: the next write waits, and the stall is recorded.
        let mut write = Box::pin(guard.write_all(b"more"));
        assert!(futures_poll(&mut write).is_pending());
        assert!(slot.stalled_since.load(Ordering::Relaxed) > 0);
        // The client reads: the write goes on and the stall is cleared.
        let mut read = [0u8; 8];
        peer.read_exact(&mut read).await.unwrap();
        write.await.unwrap();
        assert_eq!(slot.stalled_since.load(Ordering::Relaxed), 0);
        guard.write_all(b"1234").await.unwrap();
        // Now nobody reads: past the deadline the write fails.
        let stalled = tokio::spawn(async move { guard.write_all(b"and more and more").await });
        tokio::time::sleep(WRITE_STALL_TIMEOUT + Duration::from_millis(10)).await;
        let error = stalled.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop(slot);
        assert_eq!(connections.len(), 0, "a dropped slot frees its place");
    }

    /// Polls a future once, with a waker that does nothing.
    fn futures_poll<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        let waker = std::task::Waker::noop();
        Pin::new(future).poll(&mut Context::from_waker(waker))
    }
}
