//! `/metrics` renders: at most [`MAX_RENDERS`] at a time, and a client that stops reading
//! gives its render up to one that reads.
//!
//! Part of `http`, between a `/metrics` request and the exposition writer (`metrics`). A
//! render holds a copy of the store's rows and a few chunks while it runs, so renders are
//! few; and a render whose client has read nothing for [`STALL_GIVE_UP`] while another
//! waits is cancelled: its response is aborted (the client sees a broken response, never a
//! short one that looks whole). Requests waiting for a render are served newest first: when
//! a crowd of clients that never read holds the queue, a scraper that arrives after them
//! is the next one served instead of the last, and a request left waiting behind newer ones
//! has most likely been given up by its client already. Clients that pipeline requests and
//! never read therefore hold neither memory nor a render for long, and a scrape gets a
//! render within a fraction of a second.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::io::Write as _;

use flate2::write::GzEncoder;
use flate2::Compression;
use hyper::body::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::body::Body;
use crate::metrics::Exporter;

/// Renders at once.
pub const MAX_RENDERS: usize = 4;
/// How long a render may wait on a client that reads nothing before one that waits for a
/// render takes its place.
pub const STALL_GIVE_UP: Duration = Duration::from_millis(200);
/// The exposition leaves in chunks of this size, and at most this many wait to be sent.
const CHUNK: usize = 64 << 10;
const CHUNKS_QUEUED: usize = 2;

/// The render slots.
pub struct Renders {
    base: Instant,
    slots: Mutex<Slots>,
    /// A slot was freed or the newest waiter changed.
    freed: Notify,
    next_id: AtomicU64,
}

struct Slots {
    running: Vec<Option<Running>>,
    /// The requests waiting for a slot, by arrival; the last one is served next.
    waiting: BTreeSet<u64>,
}

/// A render in a slot.
struct Running {
    id: u64,
    /// Since when its client has read nothing, in ms after `base` (0: reading).
    stalled_since: Arc<AtomicU64>,
    cancel: CancellationToken,
}

impl Default for Renders {
    fn default() -> Renders {
        Renders {
            base: Instant::now(),
            slots: Mutex::new(Slots {
                running: (0..MAX_RENDERS).map(|_| None).collect(),
                waiting: BTreeSet::new(),
            }),
            freed: Notify::new(),
            next_id: AtomicU64::new(0),
        }
    }
}

/// A taken render slot; freed when dropped.
struct Taken {
    renders: Arc<Renders>,
    index: usize,
    id: u64,
    stalled_since: Arc<AtomicU64>,
    cancel: CancellationToken,
}

impl Drop for Taken {
    fn drop(&mut self) {
        let mut slots = self.renders.slots.lock().expect("render slots lock");
        if slots.running[self.index].as_ref().is_some_and(|r| r.id == self.id) {
            slots.running[self.index] = None;
        }
        drop(slots);
        self.renders.freed.notify_waiters();
    }
}

impl Renders {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// For the request `ticket` if no newer one waits: a free slot, or the slot of the
    /// render stalled longest beyond `STALL_GIVE_UP` (cancelled); else `None` for now.
    fn try_take(self: &Arc<Self>, ticket: u64) -> Option<Taken> {
        let now = self.now_ms();
        let give_up_ms = u64::try_from(STALL_GIVE_UP.as_millis()).unwrap_or(u64::MAX);
        let mut slots = self.slots.lock().expect("render slots lock");
        if slots.waiting.last().is_some_and(|newest| *newest > ticket) {
            return None;
        }
        let index = match slots.running.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                let (index, since) = slots
                    .running
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| r.as_ref().map(|r| (i, r.stalled_since.load(Ordering::Relaxed))))
                    .filter(|(_, since)| *since != 0)
                    .min_by_key(|(_, since)| *since)?;
                if now.saturating_sub(since) < give_up_ms {
                    return None;
                }
                if let Some(victim) = slots.running[index].take() {
                    victim.cancel.cancel();
                }
                index
            }
        };
        let (stalled_since, cancel) = (Arc::new(AtomicU64::new(0)), CancellationToken::new());
        slots.running[index] =
            Some(Running { id: ticket, stalled_since: stalled_since.clone(), cancel: cancel.clone() });
        Some(Taken { renders: self.clone(), index, id: ticket, stalled_since, cancel })
    }

    /// Waits for a slot: woken when one is freed or the queue changes, and, while this
    /// request is the newest waiting, every tenth of a second too (a render may have
    /// stalled long enough to be given up).
    async fn take(self: &Arc<Self>) -> Taken {
        let ticket = self.next_id.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting { renders: self, ticket };
        loop {
            let freed = self.freed.notified();
            if let Some(taken) = self.try_take(ticket) {
                drop(waiting);
                return taken;
            }
            let newest = {
                let mut slots = self.slots.lock().expect("render slots lock");
                slots.waiting.insert(ticket);
                slots.waiting.last() == Some(&ticket)
            };
            if newest {
                let _ = tokio::time::timeout(Duration::from_millis(100), freed).await;
            } else {
                freed.await;
            }
        }
    }

    /// The `/metrics` body: rendered on the blocking pool once a slot is free, in chunks
    /// handed over as the client reads them; with `gzip`, each chunk is compressed as it
    /// is written (one gzip stream for the whole body).
    pub fn metrics_body(self: &Arc<Self>, exporter: Arc<Exporter>, gzip: bool) -> Body {
        let (chunks, body) = mpsc::channel::<Bytes>(CHUNKS_QUEUED);
        let aborted = Arc::new(AtomicBool::new(false));
        let renders = self.clone();
        let aborting = aborted.clone();
        tokio::spawn(async move {
            let taken = tokio::select! {
                taken = renders.take() => taken,
                // The client went away while waiting.
                _ = chunks.closed() => return,
            };
            let handle = tokio::runtime::Handle::current();
            let _ = tokio::task::spawn_blocking(move || {
                let hand_over = |chunk: Bytes| match send(&handle, &chunks, chunk, &taken) {
                    Sent::Yes => true,
                    Sent::ClientGone => false,
                    Sent::Cancelled => {
                        aborting.store(true, Ordering::Relaxed);
                        false
                    }
                };
                if !gzip {
                    exporter.render_chunks(CHUNK, &mut |out| {
                        hand_over(Bytes::from(std::mem::replace(out, Vec::with_capacity(CHUNK + CHUNK / 4))))
                    });
                    return;
                }
                let mut encoder = GzEncoder::new(Vec::with_capacity(CHUNK), Compression::fast());
                let mut going = true;
                exporter.render_chunks(CHUNK, &mut |out| {
                    // Writing to a Vec cannot fail.
                    let _ = encoder.write_all(out);
                    out.clear();
                    // The compressed bytes leave once they fill a chunk of their own.
                    if encoder.get_ref().len() >= CHUNK {
                        going = hand_over(Bytes::from(std::mem::take(encoder.get_mut())));
                    }
                    going
                });
                if going {
                    if let Ok(rest) = encoder.finish() {
                        hand_over(Bytes::from(rest));
                    }
                }
            })
            .await;
        });
        Body::chunks(body, aborted)
    }
}

/// A request in the queue; leaves it when dropped (served, or its client gone).
struct Waiting<'a> {
    renders: &'a Renders,
    ticket: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut slots = self.renders.slots.lock().expect("render slots lock");
        let was_newest = slots.waiting.last() == Some(&self.ticket);
        slots.waiting.remove(&self.ticket);
        drop(slots);
        if was_newest {
            self.renders.freed.notify_waiters();
        }
    }
}

enum Sent {
    Yes,
    ClientGone,
    Cancelled,
}

/// Hands a chunk to the response, marking the render stalled while the client reads
/// nothing, until it is taken, the client goes, or the render is given up.
fn send(handle: &tokio::runtime::Handle, chunks: &mpsc::Sender<Bytes>, chunk: Bytes, taken: &Taken) -> Sent {
    let chunk = match chunks.try_send(chunk) {
        Ok(()) => return Sent::Yes,
        Err(mpsc::error::TrySendError::Closed(_)) => return Sent::ClientGone,
        Err(mpsc::error::TrySendError::Full(chunk)) => chunk,
    };
    taken.stalled_since.store(taken.renders.now_ms(), Ordering::Relaxed);
    let sent = handle.block_on(async {
        tokio::select! {
            sent = chunks.send(chunk) => if sent.is_ok() { Sent::Yes } else { Sent::ClientGone },
            _ = taken.cancel.cancelled() => Sent::Cancelled,
        }
    });
    taken.stalled_since.store(0, Ordering::Relaxed);
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(renders: &Renders) -> usize {
        renders.slots.lock().unwrap().running.iter().filter(|s| s.is_some()).count()
    }

    #[tokio::test]
    async fn a_stalled_render_gives_way_and_a_reading_one_does_not() {
        let renders = Arc::new(Renders::default());
        let taken: Vec<Taken> = (0..MAX_RENDERS as u64).map(|t| renders.try_take(t).unwrap()).collect();
        assert!(renders.try_take(10).is_none(), "all busy, none stalled");
        taken[2].stalled_since.store(renders.now_ms(), Ordering::Relaxed);
        assert!(renders.try_take(10).is_none(), "stalled, but not for long yet");
        tokio::time::sleep(STALL_GIVE_UP + Duration::from_millis(50)).await;
        let newcomer = renders.try_take(10).expect("the stalled one gives way");
        assert!(taken[2].cancel.is_cancelled());
        assert!(!taken[0].cancel.is_cancelled());
        // The cancelled one's drop does not free the newcomer's slot.
        drop(taken);
        assert_eq!(busy(&renders), 1);
        drop(newcomer);
        assert_eq!(busy(&renders), 0);
    }

    #[tokio::test]
    async fn the_newest_waiting_request_is_served_first() {
        let renders = Arc::new(Renders::default());
        let taken = full(&renders);
        let older = waiter(&renders);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let newer = waiter(&renders);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(renders.slots.lock().unwrap().waiting.len(), 2);
        let mut taken = taken.into_iter();
        drop(taken.next());
        let newer = tokio::time::timeout(Duration::from_secs(1), newer).await.unwrap().unwrap();
        assert_eq!(newer.id, 101, "the newer request takes the freed slot");
        assert!(!older.is_finished(), "the older one still waits");
        drop(taken.next());
        let older = tokio::time::timeout(Duration::from_secs(1), older).await.unwrap().unwrap();
        assert_eq!(older.id, 100);
        assert!(renders.slots.lock().unwrap().waiting.is_empty());
    }

    /// The bound on a stall is inclusive: a render stalled for exactly `STALL_GIVE_UP`
    /// gives way, one a millisecond short of it does not (on a paused clock).
    #[tokio::test(start_paused = true)]
    async fn a_stall_of_exactly_the_bound_gives_way() {
        let renders = Arc::new(Renders::default());
        let taken: Vec<Taken> = (0..MAX_RENDERS as u64).map(|t| renders.try_take(t).unwrap()).collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let bound = u64::try_from(STALL_GIVE_UP.as_millis()).unwrap();
        taken[1].stalled_since.store(renders.now_ms() - bound + 1, Ordering::Relaxed);
        assert!(renders.try_take(10).is_none(), "a millisecond short of the bound");
        taken[1].stalled_since.store(renders.now_ms() - bound, Ordering::Relaxed);
        assert_eq!(renders.try_take(10).expect("stalled for the bound").index, 1);
        assert!(taken[1].cancel.is_cancelled());
    }

    /// A request waiting for a render, in a task of its own.
    fn waiter(renders: &Arc<Renders>) -> tokio::task::JoinHandle<Taken> {
        let renders = renders.clone();
        tokio::spawn(async move { renders.take().await })
    }

    /// Fills every slot; the next request's ticket is 100.
    fn full(renders: &Arc<Renders>) -> Vec<Taken> {
        let taken: Vec<Taken> = (0..MAX_RENDERS).map(|_| renders.try_take(u64::MAX).unwrap()).collect();
        renders.next_id.store(100, Ordering::Relaxed);
        taken
    }

    /// Nothing frees a slot or wakes the waiting request here: while it is the newest, it
    /// looks again on its own and takes the stalled render's slot once that is given up.
    #[tokio::test]
    async fn the_newest_request_looks_again_on_its_own() {
        let renders = Arc::new(Renders::default());
        let taken = full(&renders);
        taken[3].stalled_since.store(renders.now_ms(), Ordering::Relaxed);
        let waiting = renders.take();
        let taken = tokio::time::timeout(STALL_GIVE_UP * 5, waiting).await.expect("the stalled slot taken");
        assert_eq!((taken.index, taken.id), (3, 100));
    }

    /// When the newest request leaves the queue (its client went away), the one before it,
    /// which waited to be woken, is woken to look again.
    #[tokio::test]
    async fn when_the_newest_request_leaves_the_one_before_it_takes_over() {
        let renders = Arc::new(Renders::default());
        let taken = full(&renders);
        let older = waiter(&renders);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let newer = waiter(&renders);
        // Long enough for the older one to stop looking on its own and wait to be woken.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(renders.slots.lock().unwrap().waiting.len(), 2);
        // A render stalled long ago: whoever looks next takes its slot.
        taken[3].stalled_since.store(1, Ordering::Relaxed);
        newer.abort();
        let older =
            tokio::time::timeout(Duration::from_secs(2), older).await.expect("the older one woken").unwrap();
        assert_eq!((older.index, older.id), (3, 100));
    }

    /// The exposition leaves in chunks of 64 KiB, and gzipped, the compressed bytes leave
    /// as soon as they fill such a chunk, not all at the end; the chunks make up the whole
    /// exposition.
    #[tokio::test]
    async fn gzipped_bodies_leave_in_whole_chunks() {
        use http_body_util::BodyExt;
        // Probe rows, which the exposition writes a chunk at a time.
        let mut yaml = String::from("modules:\n  m: { tls: none }\ntargets:\n");
        for i in 0..2000 {
            yaml.push_str(&format!(
                "  - {{ name: mx{i}, host: 127.0.0.1, ports: [{{ port: 25, module: m }}] }}\n"
            ));
        }
        let config = crate::config::parse(&yaml, "t").unwrap();
        let store = Arc::new(crate::store::Store::new());
        store.reconcile(&config.schedule);
        for scheduled in &config.schedule {
            store.record(&scheduled.spec.key(), crate::probe::ProbeReport::new());
        }
        let exporter = Arc::new(Exporter::new(store, Default::default()));
        let gauges =
            prometheus::IntGaugeVec::new(prometheus::Opts::new("t_rows", "Rows."), &["row"]).unwrap();
        // Label values that compress poorly, so that the gzip stream spans several chunks.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..40_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            gauges.with_label_values(&[&format!("{state:016x}")]).set(1);
        }
        exporter.register(Box::new(gauges));
        let renders = Arc::new(Renders::default());
        async fn frames(mut body: Body) -> Vec<Bytes> {
            let mut frames = Vec::new();
            while let Some(frame) = body.frame().await {
                frames.push(frame.unwrap().into_data().unwrap());
            }
            assert!(frames.len() >= 2, "{} frames", frames.len());
            for frame in &frames[..frames.len() - 1] {
                assert!(frame.len() >= 64 << 10, "a frame of {} bytes", frame.len());
            }
            frames
        }
        frames(renders.metrics_body(exporter.clone(), false)).await;
        let frames = frames(renders.metrics_body(exporter, true)).await;
        let gzipped: Vec<u8> = frames.concat();
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gzipped.as_slice()), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text.lines().filter(|l| l.starts_with("t_rows{")).count(), 40_000);
    }
}
