//! Connections: how many are served, which one gives way when all slots are taken, and how
//! long a response may wait for a client that does not read.
//!
//! Part of `http`, the last stop of the data flow, below the routes. Clients can hold slots
//! while doing nothing useful: sending a request a byte at a time, sending requests and
//! never reading the answers, queueing wrong passwords for the bcrypt check, or asking
//! `/probe` for a server that never answers. So:
//! - one source address holds at most [`MAX_PER_SOURCE`] of the [`MAX_CONNECTIONS`] slots:
//!   an attacker elsewhere than the scraper competes only with itself, and among one
//!   address's own connections the graces below do not hold;
//! - when the slots (of all, or of the source) are taken, a new connection takes the slot
//!   of one that does least for anybody: waiting for a request (oldest first; one that has
//!   not sent its first byte yet only after [`GRACE`], so that a client a round trip away
//!   is not pushed out by a flood of new connections), then one whose writes are stalled,
//!   then one waiting for its password check, then one running an on-demand probe. A
//!   connection answering a page (`/metrics`, health, status) is never the one to go;
//! - on its own, a write that makes no progress for [`WRITE_STALL_TIMEOUT`] ends its
//!   connection.
//!
//! A scrape therefore gets a slot at once whatever holds the others, unless the others come
//! from the scraper's own address and none of them can give way (a flood of silent new
//! connections from it).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
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
/// Open connections one source address may hold.
pub const MAX_PER_SOURCE: usize = MAX_CONNECTIONS / 4;
/// How long a new connection that has sent nothing yet, or a request still arriving, is
/// kept from giving way.
pub const GRACE: Duration = Duration::from_millis(500);
/// How long a write may have made no progress before its connection may give way (a
/// scrape read at the network's pace is stalled for moments at a time).
pub const STALL_GRACE: Duration = Duration::from_secs(2);
/// How long a write may make no progress before its connection is closed.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection is doing, as far as admission is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Waiting for a request, or reading one that is still arriving.
    Waiting,
    /// Its request waits for the password check.
    Authenticating,
    /// Its request runs an on-demand probe.
    Probing,
    /// Answering a page at its client's pace: never made to give way.
    Answering,
}

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
    peer: IpAddr,
    /// When it was admitted, in ms after `base`.
    admitted: u64,
    activity: Activity,
    /// Since when it does what it does, in ms after `base`.
    since: u64,
    /// It has answered a request: waiting now, it is an idle keep-alive connection.
    answered: bool,
    /// When the first byte of the request it is reading came, in ms after `base` (0: none
    /// since its last answer).
    arriving_since: Arc<AtomicU64>,
    /// Writes stalled since then, in ms after `base` (0: not stalled).
    stalled_since: Arc<AtomicU64>,
    cancel: CancellationToken,
}

impl Entry {
    /// Its rank among those that may give way (lower goes first), and the time that
    /// orders its rank; `None` when it may not. An idle keep-alive connection may go at
    /// once; a request still arriving, and a new connection that has sent nothing yet,
    /// after [`GRACE`] (a slowloris request is past it, a client a round trip away is
    /// not); a writer whose client has read nothing for [`STALL_GRACE`]; then one waiting
    /// for its password check; then one running an on-demand probe.
    ///
    /// Among one address's own connections (`strict` false) the graces do not hold: a
    /// client that opens more than its share at once competes with itself.
    fn yields(&self, now: u64, strict: bool) -> Option<(u8, u64)> {
        let past = |since: u64, grace: Duration| !strict || now.saturating_sub(since) >= ms(grace);
        let arriving = self.arriving_since.load(Ordering::Relaxed);
        let stalled = self.stalled_since.load(Ordering::Relaxed);
        let waiting_may_go = match (arriving, self.answered) {
            (0, true) => true,
            (0, false) => past(self.admitted, GRACE),
            (first_byte, _) => past(first_byte, GRACE),
        };
        match self.activity {
            Activity::Waiting if waiting_may_go => Some((0, self.since)),
            _ if stalled != 0 && past(stalled, STALL_GRACE) => Some((1, stalled)),
            Activity::Authenticating => Some((2, self.since)),
            Activity::Probing => Some((3, self.since)),
            Activity::Waiting | Activity::Answering => None,
        }
    }

    /// Whether it may give way to a newcomer from a source that holds fewer connections:
    /// anything but answering a page, whatever its grace.
    fn yields_to_fairness(&self) -> bool {
        self.activity != Activity::Answering || self.stalled_since.load(Ordering::Relaxed) != 0
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for Connections {
    fn default() -> Connections {
        Connections { base: Instant::now(), open: Mutex::default() }
    }
}

impl Connections {
    fn now_ms(&self) -> u64 {
        // At least 1, so that 0 can mean "not stalled".
        ms(self.base.elapsed()).max(1)
    }

    /// Gives a new connection from `peer` a slot. When the source holds its share, one of
    /// its own connections gives way; when all slots are taken, one of anybody's does (see
    /// the module's doc for which); `None` when none can.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Arc<Slot>> {
        let peer = peer.to_canonical();
        let now = self.now_ms();
        let mut slots = self.open.lock().expect("connections lock");
        let victim = |slots: &Slots, same_source: bool| {
            slots
                .by_id
                .iter()
                .filter(|(_, e)| !same_source || e.peer == peer)
                .filter_map(|(id, e)| e.yields(now, !same_source).map(|rank| (rank, *id)))
                .min()
                .map(|(_, id)| id)
        };
        let mine = slots.by_id.values().filter(|e| e.peer == peer).count();
        if mine >= MAX_PER_SOURCE {
            let id = victim(&slots, true)?;
            slots.evict(id);
        } else if slots.by_id.len() >= MAX_CONNECTIONS {
            let id = victim(&slots, false).or_else(|| slots.fair_share(mine))?;
            slots.evict(id);
        }
        let id = slots.next_id;
        slots.next_id += 1;
        let (stalled_since, arriving_since, cancel) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), CancellationToken::new());
        slots.by_id.insert(
            id,
            Entry {
                peer,
                admitted: now,
                activity: Activity::Waiting,
                since: now,
                answered: false,
                arriving_since: arriving_since.clone(),
                stalled_since: stalled_since.clone(),
                cancel: cancel.clone(),
            },
        );
        let base = self.base;
        Some(Arc::new(Slot {
            id,
            peer,
            connections: self.clone(),
            stalled_since,
            arriving_since,
            base,
            cancel,
        }))
    }

    fn set_activity(&self, id: u64, activity: Activity) {
        let now = self.now_ms();
        if let Some(entry) = self.open.lock().expect("connections lock").by_id.get_mut(&id) {
            if entry.activity != activity {
                if activity == Activity::Waiting {
                    // Its answer is out: the next request starts from nothing.
                    entry.answered = true;
                    entry.arriving_since.store(0, Ordering::Relaxed);
                }
                entry.activity = activity;
                entry.since = now;
            }
        }
    }

    /// How many connections are open.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().expect("connections lock").by_id.len()
    }
}

impl Slots {
    /// When nothing may give way by its rank: a connection of the source that holds the
    /// most, if that is more than the newcomer's source holds (`mine`) plus one, so that
    /// a few addresses cannot hold every slot with connections still in their grace.
    fn fair_share(&self, mine: usize) -> Option<u64> {
        let mut held: HashMap<IpAddr, usize> = HashMap::new();
        for entry in self.by_id.values() {
            *held.entry(entry.peer).or_default() += 1;
        }
        let (&greedy, &most) = held.iter().max_by_key(|(_, &n)| n)?;
        if most <= mine + 1 {
            return None;
        }
        self.by_id
            .iter()
            .filter(|(_, e)| e.peer == greedy && e.yields_to_fairness())
            .min_by_key(|(_, e)| e.since)
            .map(|(id, _)| *id)
    }

    fn evict(&mut self, id: u64) {
        if let Some(entry) = self.by_id.remove(&id) {
            entry.cancel.cancel();
        }
    }
}

/// One connection's slot: it tells what the connection is doing, and is given up when
/// dropped.
pub struct Slot {
    id: u64,
    /// The client's address (an IPv4-mapped IPv6 address as its IPv4).
    pub peer: IpAddr,
    connections: Arc<Connections>,
    stalled_since: Arc<AtomicU64>,
    arriving_since: Arc<AtomicU64>,
    base: Instant,
    /// Cancelled when another connection takes this slot.
    pub cancel: CancellationToken,
}

impl Slot {
    /// The connection now does `activity`.
    pub fn doing(&self, activity: Activity) {
        self.connections.set_activity(self.id, activity);
    }

    /// A request has come and is being answered.
    pub fn busy(&self) {
        self.doing(Activity::Answering);
    }

    /// The answer is out: the connection waits for its next request.
    pub fn waiting(&self) {
        self.doing(Activity::Waiting);
    }

    /// Wraps the connection's stream so that a stalled write ends it and is seen here, and
    /// so that the first byte read is seen too.
    pub fn guard<S>(&self, stream: S) -> StallGuard<S> {
        StallGuard {
            stream,
            deadline: None,
            stalled_since: self.stalled_since.clone(),
            arriving_since: self.arriving_since.clone(),
            base: self.base,
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
    arriving_since: Arc<AtomicU64>,
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
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            // The first byte of a request: its arrival is timed from here.
            let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
            let _ = self.arriving_since.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
        poll
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

    /// The `n`th address of a block of distinct sources.
    fn source(n: usize) -> IpAddr {
        IpAddr::from([10, 0, (n >> 8) as u8, n as u8])
    }

    /// `MAX_CONNECTIONS` slots, each from its own address, that have each answered a
    /// request and wait for the next (idle keep-alive connections).
    fn full_house(connections: &Arc<Connections>) -> Vec<Arc<Slot>> {
        (0..MAX_CONNECTIONS)
            .map(|n| {
                let slot = connections.admit(source(n)).unwrap();
                slot.busy();
                slot.waiting();
                slot
            })
            .collect()
    }

    /// Issue 26: when every slot is taken, the one that gives way is, in turn: a waiting
    /// connection, a writer stalled past its grace, one waiting for its password check, one
    /// running an on-demand probe; never one answering a page, even if its writes wait.
    #[tokio::test(start_paused = true)]
    async fn a_full_house_gives_way_in_order_and_never_an_answering_one() {
        let connections = Arc::new(Connections::default());
        let slots = full_house(&connections);
        for slot in &slots[4..] {
            slot.busy();
        }
        slots[1].doing(Activity::Probing);
        slots[2].doing(Activity::Authenticating);
        slots[3].busy();
        slots[3].stalled_since.store(42, Ordering::Relaxed);
        // A page whose client reads at its pace: stalled for a moment only.
        slots[4].stalled_since.store(STALL_GRACE.as_millis() as u64 + 40, Ordering::Relaxed);
        tokio::time::advance(STALL_GRACE + Duration::from_millis(100)).await;
        let mut newcomers = Vec::new();
        for (n, gives_way) in [0, 3, 2, 1].into_iter().enumerate() {
            let newcomer = connections.admit(source(1000 + n)).expect("a slot gives way");
            newcomer.busy();
            newcomers.push(newcomer);
            assert!(slots[gives_way].cancel.is_cancelled(), "slot {gives_way} should have given way");
            assert_eq!(slots.iter().filter(|s| s.cancel.is_cancelled()).count(), n + 1);
        }
        assert!(connections.admit(source(2000)).is_none(), "every slot answers a page");
        assert!(!slots[4].cancel.is_cancelled());
        assert_eq!(connections.len(), MAX_CONNECTIONS);
    }

    /// Issue 26: a new connection that has not sent its first byte, and a request whose
    /// bytes are still arriving, keep their slot for [`GRACE`], so that a flood of new
    /// connections cannot push out a client a round trip away, nor a request that comes in
    /// two segments; the flood's own newcomers are refused meanwhile. Past the grace, the
    /// oldest gives way first.
    #[tokio::test(start_paused = true)]
    async fn a_silent_new_connection_and_an_arriving_request_have_their_grace() {
        let connections = Arc::new(Connections::default());
        let slots: Vec<Arc<Slot>> =
            (0..MAX_CONNECTIONS).map(|n| connections.admit(source(n)).unwrap()).collect();
        tokio::time::advance(GRACE - Duration::from_millis(1)).await;
        // Its request began to arrive just now: a grace of its own from there.
        slots[0].arriving_since.store(connections.now_ms(), Ordering::Relaxed);
        assert!(connections.admit(source(1000)).is_none(), "all in their grace");
        // One has answered and waits: it may go at once.
        slots[7].busy();
        slots[7].waiting();
        let first = connections.admit(source(1000));
        assert!(first.is_some());
        assert!(slots[7].cancel.is_cancelled());
        // (Times are counted from 1 ms after the start.)
        tokio::time::advance(Duration::from_millis(2)).await;
        let second = connections.admit(source(1001));
        assert!(second.is_some());
        assert!(slots[1].cancel.is_cancelled(), "the oldest silent one goes first past the grace");
        assert!(!slots[0].cancel.is_cancelled(), "the arriving request keeps its grace");
        tokio::time::advance(GRACE).await;
        let third = connections.admit(source(1002));
        assert!(third.is_some());
        assert!(slots[0].cancel.is_cancelled(), "a request arriving for longer than the grace goes");
    }

    /// Issue 26: one address holds at most [`MAX_PER_SOURCE`] slots: beyond, its own
    /// connections give way (or its newcomer is refused), never another source's.
    #[tokio::test(start_paused = true)]
    async fn one_source_holds_at_most_its_share() {
        let connections = Arc::new(Connections::default());
        let scraper = connections.admit(IpAddr::from([127, 0, 0, 1])).unwrap();
        scraper.busy();
        scraper.waiting();
        let attacker = IpAddr::from([127, 0, 0, 2]);
        let held: Vec<Arc<Slot>> =
            (0..MAX_PER_SOURCE).map(|_| connections.admit(attacker).unwrap()).collect();
        // Among its own, no grace holds: its oldest gives way at once; the scraper's idle
        // slot is not touched.
        let replacement = connections.admit(attacker).expect("its own oldest gives way");
        assert!(held[0].cancel.is_cancelled() && !scraper.cancel.is_cancelled());
        replacement.busy();
        for slot in &held[1..] {
            slot.busy();
        }
        // A writer of its own stalled a moment ago gives way to its newcomer too.
        held[1].stalled_since.store(connections.now_ms(), Ordering::Relaxed);
        let second = connections.admit(attacker).expect("its stalled writer gives way");
        assert!(held[1].cancel.is_cancelled());
        second.busy();
        // Its share is all answering: its newcomer is refused, while others come in.
        let (from_v6_mapped, newcomer) = (
            IpAddr::from(std::net::Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped()),
            connections.admit(IpAddr::from([127, 0, 0, 3])),
        );
        assert!(connections.admit(from_v6_mapped).is_none(), "the same source written as IPv6");
        assert!(newcomer.is_some());
        assert_eq!(connections.len(), MAX_PER_SOURCE + 2);
    }

    /// Issue 26: four addresses filling every slot with connections in their grace cannot
    /// lock a fifth out: its newcomer takes a slot of the source that holds the most. A
    /// source that holds as many as the most gets nothing that way.
    #[tokio::test(start_paused = true)]
    async fn a_few_sources_cannot_hold_every_slot() {
        let connections = Arc::new(Connections::default());
        let attackers: Vec<IpAddr> = (2..6).map(|n| IpAddr::from([127, 0, 0, n])).collect();
        let held: Vec<Arc<Slot>> = attackers
            .iter()
            .flat_map(|&a| (0..MAX_PER_SOURCE).map(move |_| a))
            .map(|a| connections.admit(a).unwrap())
            .collect();
        assert_eq!(connections.len(), MAX_CONNECTIONS);
        let scraper = connections.admit(IpAddr::from([127, 0, 0, 1])).expect("a fair share");
        assert_eq!(held.iter().filter(|s| s.cancel.is_cancelled()).count(), 1);
        scraper.busy();
        // A sixth source of equal weight takes another; the greedy ones get nothing back.
        let other = connections.admit(IpAddr::from([127, 0, 0, 9])).expect("a fair share");
        // An attacker's newcomer takes one of its own slots (no grace among one address's
        // connections) or none: never another source's.
        let held_by =
            |peer: IpAddr| connections.open.lock().unwrap().by_id.values().filter(|e| e.peer == peer).count();
        let before = held_by(attackers[0]);
        let again = connections.admit(attackers[0]);
        assert!(!scraper.cancel.is_cancelled() && !other.cancel.is_cancelled());
        assert_eq!(held_by(attackers[0]), before, "an attacker at its share: {}", again.is_some());
        assert_eq!(connections.len(), MAX_CONNECTIONS);
        // Every slot answering a page: no fairness takes one.
        for slot in held.iter().chain(&again).filter(|s| !s.cancel.is_cancelled()) {
            slot.busy();
        }
        assert!(connections.admit(IpAddr::from([127, 0, 0, 10])).is_none());
    }

    /// Issue 17: among waiting connections, the one that has waited longest gives way,
    /// whatever the order they came in; a body handed to a slot makes it wait for its next
    /// request once the body is done with (dropped).
    #[tokio::test]
    async fn the_longest_waiting_gives_way_and_a_sent_body_makes_its_slot_wait() {
        let connections = Arc::new(Connections::default());
        let slots = full_house(&connections);
        for slot in &slots {
            slot.busy();
        }
        // The second slot's answer goes out first, the first slot's 20 ms later.
        drop(super::super::body::Body::whole("answer").for_slot(slots[1].clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(super::super::body::Body::whole("answer").for_slot(slots[0].clone()));
        assert!(connections.admit(source(1000)).is_some());
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
        let slot = connections.admit(source(0)).unwrap();
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
