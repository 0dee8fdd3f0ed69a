//! [`Prefetch`]: runs a pure function of the iteration on worker threads ahead of the
//! consumer, so batches are ready when the training step asks for them.
//!
//! Items come back in iteration order whatever order the workers finish in, and each item
//! depends only on its iteration, so a prefetched run produces exactly what a synchronous one
//! does (and resumes exactly from any iteration).

use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

type Produced<T> = std::thread::Result<T>;

/// The producer of item `i`.
type Producer<T> = dyn Fn(u64) -> T + Send + Sync;

struct State<T> {
    /// Next iteration a worker will take.
    next_claim: u64,
    /// Next iteration the consumer will take.
    next_out: u64,
    ready: BTreeMap<u64, Produced<T>>,
    stop: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
    end: u64,
    depth: u64,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A worker that panicked did so outside the lock (its panic is stored as an item),
        // so a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Items `produce(i)` for `i` in a range, computed up to `depth` ahead on worker threads.
pub struct Prefetch<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    workers: Vec<JoinHandle<()>>,
    /// Without workers, items are produced on the caller's thread.
    inline: Option<Arc<Producer<T>>>,
}

impl<T: Send + 'static> Prefetch<T> {
    /// Produces `range` with `workers` threads keeping at most `depth` items ahead of the
    /// consumer; `depth = 0` or `workers = 0` produces each item when it is asked for.
    pub fn start<F>(range: Range<u64>, depth: usize, workers: usize, produce: F) -> Self
    where
        F: Fn(u64) -> T + Send + Sync + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_claim: range.start,
                next_out: range.start,
                ready: BTreeMap::new(),
                stop: false,
            }),
            changed: Condvar::new(),
            end: range.end,
            depth: depth as u64,
        });
        let produce: Arc<Producer<T>> = Arc::new(produce);
        if depth == 0 || workers == 0 {
            return Self {
                shared,
                workers: Vec::new(),
                inline: Some(produce),
            };
        }
        let workers = (0..workers)
            .map(|w| {
                let (shared, produce) = (Arc::clone(&shared), Arc::clone(&produce));
                std::thread::Builder::new()
                    .name(format!("dacapo-prefetch-{w}"))
                    .spawn(move || work(&shared, &*produce))
            })
            .filter_map(|spawned| match spawned {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!("cannot start a prefetch thread ({e}); fewer run ahead");
                    None
                }
            })
            .collect::<Vec<_>>();
        let inline = workers.is_empty().then_some(produce);
        Self {
            shared,
            workers,
            inline,
        }
    }

    /// The next item in iteration order, or `None` past the end of the range. A panic of
    /// the producer is raised here, in the consumer.
    pub fn next_item(&mut self) -> Option<T> {
        if let Some(produce) = &self.inline {
            let mut state = self.shared.lock();
            if state.next_out >= self.shared.end {
                return None;
            }
            let i = state.next_out;
            state.next_out += 1;
            drop(state);
            return Some(produce(i));
        }
        let mut state = self.shared.lock();
        if state.next_out >= self.shared.end {
            return None;
        }
        let i = state.next_out;
        let item = loop {
            if let Some(item) = state.ready.remove(&i) {
                break item;
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        };
        state.next_out += 1;
        drop(state);
        self.shared.changed.notify_all();
        Some(item.unwrap_or_else(|panic| resume_unwind(panic)))
    }
}

/// A worker: takes the next iteration while it is within `depth` of the consumer.
fn work<T>(shared: &Shared<T>, produce: &Producer<T>) {
    loop {
        let mut state = shared.lock();
        loop {
            if state.stop || state.next_claim >= shared.end {
                return;
            }
            if state.next_claim < state.next_out + shared.depth {
                break;
            }
            state = shared
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        let i = state.next_claim;
        state.next_claim += 1;
        drop(state);
        let item = catch_unwind(AssertUnwindSafe(|| produce(i)));
        shared.lock().ready.insert(i, item);
        shared.changed.notify_all();
    }
}

impl<T: Send + 'static> Drop for Prefetch<T> {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        for worker in self.workers.drain(..) {
            // A worker never panics itself (the producer's panics are caught).
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[test]
    fn items_come_in_order_whatever_the_workers_do() {
        for (depth, workers) in [(0, 0), (1, 1), (3, 2), (8, 4)] {
            let mut p = Prefetch::start(5..40, depth, workers, |i| {
                // Later items finish first.
                std::thread::sleep(Duration::from_micros((40 - i) * 50));
                i * 10
            });
            let got: Vec<u64> = std::iter::from_fn(|| p.next_item()).collect();
            assert_eq!(got, (5..40).map(|i| i * 10).collect::<Vec<_>>());
        }
    }

    #[test]
    fn never_runs_more_than_depth_ahead() {
        let produced = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&produced);
        let mut p = Prefetch::start(0..100, 3, 2, move |i| {
            counter.fetch_add(1, Ordering::SeqCst);
            i
        });
        assert_eq!(p.next_item(), Some(0));
        std::thread::sleep(Duration::from_millis(50));
        // Item 0 was taken: 1..=3 may be ready, no further.
        assert!(produced.load(Ordering::SeqCst) <= 4);
        drop(p);
    }

    #[test]
    fn a_producer_panic_reaches_the_consumer() {
        let mut p = Prefetch::start(0..10, 2, 1, |i| {
            assert!(i != 2, "bad batch");
            i
        });
        assert_eq!(p.next_item(), Some(0));
        assert_eq!(p.next_item(), Some(1));
        let caught = catch_unwind(AssertUnwindSafe(|| p.next_item()));
        assert!(caught.is_err());
    }

    #[test]
    fn dropping_early_stops_the_workers() {
        let mut p = Prefetch::start(0..u64::MAX, 2, 2, |i| i);
        assert_eq!(p.next_item(), Some(0));
        drop(p); // must return: the workers see `stop`
    }
}
