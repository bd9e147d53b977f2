//! The store's jobs: write-behind batches and retention passes, run on the workers,
//! and what their results mean for the queue and for `/health`. A write still in flight
//! past [`WRITE_OVERDUE`] counts as the store being down, before its result comes back
//! (the write itself is abandoned at the store's own deadline, `WRITE_TIMEOUT`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::asset::Point;
use crate::clock::epoch_second;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, StoreKind, WRITE_TIMEOUT};
use crate::throttle::Throttle;
use crate::workers::Workers;
use crate::writebehind::WriteBehind;

use super::jobs::{Done, Write};

/// Points deleted per retention statement at most.
const RETENTION_BATCH: u32 = 10_000;
/// Pause between retention passes once caught up.
const RETENTION_EVERY: Duration = Duration::from_secs(600);
/// Delay of the first retention pass after start.
const RETENTION_FIRST: Duration = Duration::from_secs(3);
/// How long a write may be in flight before the store counts as down: shorter than the
/// write's own deadline (`WRITE_TIMEOUT`, 5 s), so a database that hangs is reported as
/// not answering before the abandoned write's error comes back.
const WRITE_OVERDUE: Duration = Duration::from_secs(3);
const _: () = assert!(WRITE_OVERDUE.as_secs() < WRITE_TIMEOUT.as_secs());

/// Rate of repeated store warnings.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The store and the work queued for it.
pub struct StoreJobs {
    store: Arc<dyn Store>,
    writes: WriteBehind,
    /// Points older than this are deleted; `None` keeps everything.
    retention: Option<Duration>,
    /// The last write succeeded (or none has failed yet), and none has overrun its deadline since.
    up: bool,
    /// When the write in flight was started.
    write_started: Option<Instant>,
    /// When a write that overran its deadline (and so marked the store down) started;
    /// cleared once a write succeeds.
    overdue_since: Option<Instant>,
    retention_running: bool,
    next_retention: Instant,
    log: Throttle,
    /// A store failure was logged and no write has succeeded since.
    failure_logged: bool,
    drop_log: Throttle,
}

impl StoreJobs {
    /// Jobs for `store`, queueing at most `bound` points while it is unreachable.
    pub fn new(store: Arc<dyn Store>, bound: usize, retention: Option<Duration>) -> StoreJobs {
        StoreJobs {
            store,
            writes: WriteBehind::new(bound),
            retention,
            up: true,
            write_started: None,
            overdue_since: None,
            retention_running: false,
            next_retention: Instant::now() + RETENTION_FIRST,
            log: Throttle::new(LOG_EVERY),
            failure_logged: false,
            drop_log: Throttle::new(LOG_EVERY),
        }
    }

    /// Queues points for writing; the oldest are dropped (and counted) beyond the bound.
    pub fn queue(&mut self, points: &[Point], now: Instant, metrics: &mut Metrics) {
        let dropped = self.writes.push(points);
        self.count_dropped(dropped, now, metrics);
    }

    /// Notices a write in flight past its deadline, then starts the next batch write, and
    /// a retention pass when one is due (never while `stopping`).
    pub fn start(&mut self, now: Instant, stopping: bool, workers: &Workers<Done>) {
        self.watch_write(now);
        if let Some(batch) = self.writes.next_batch(now) {
            self.write_started = Some(now);
            let store = Arc::clone(&self.store);
            let if_panicked = batch.clone();
            workers.submit(
                move || {
                    let started = Instant::now();
                    let result = store.write_points(&batch);
                    Done::Write(Write {
                        batch,
                        took: started.elapsed(),
                        result,
                    })
                },
                Done::Write(Write {
                    batch: if_panicked,
                    took: Duration::ZERO,
                    result: Err(StoreError::Query("the write panicked".into())),
                }),
            );
        }
        let Some(keep) = self.retention else {
            return;
        };
        if self.retention_running || now < self.next_retention || stopping {
            return;
        }
        self.retention_running = true;
        let before = epoch_second() - keep.as_secs() as i64;
        let store = Arc::clone(&self.store);
        workers.submit(
            move || Done::Retention(store.delete_points_before(before, RETENTION_BATCH)),
            Done::Retention(Err(StoreError::Query("retention panicked".into()))),
        );
    }

    /// Takes a batch write's result: done, or back in the queue to retry.
    pub fn on_written(&mut self, write: Write, now: Instant, metrics: &mut Metrics) {
        let Write {
            batch,
            took,
            result,
        } = write;
        metrics.store_write_seconds.observe(took);
        self.write_started = None;
        match result {
            Ok(()) => {
                metrics.points_stored_total += batch.len() as u64;
                let down_since = [self.writes.failing_since(), self.overdue_since.take()]
                    .into_iter()
                    .flatten()
                    .min();
                if let Some(since) = down_since
                    && self.failure_logged
                {
                    // The throttle keeps running: a store failing on and off must not
                    // log a pair of lines per failure.
                    self.failure_logged = false;
                    info!(
                        "store reachable again after {:.0} s; writing {} queued points",
                        now.duration_since(since).as_secs_f64(),
                        self.writes.len().saturating_sub(batch.len())
                    );
                }
                self.writes.written();
                self.up = true;
            }
            Err(e) => {
                metrics.store_write_errors_total += 1;
                self.up = false;
                let dropped = self.writes.failed(batch, now);
                if let Some(suppressed) = self.log.allow(now) {
                    self.failure_logged = true;
                    warn!(
                        "store write failed: {e}; {} points queued, retrying \
                         ({suppressed} similar failures since the last report)",
                        self.writes.len()
                    );
                }
                self.count_dropped(dropped, now, metrics);
            }
        }
    }

    /// A write in flight longer than its deadline: the store is down from now on (until a
    /// write succeeds), and the log says so once, whatever the write's result later is.
    fn watch_write(&mut self, now: Instant) {
        let Some(started) = self.write_started else {
            return;
        };
        let waited = now.saturating_duration_since(started);
        if waited <= WRITE_OVERDUE || !self.up {
            return;
        }
        self.up = false;
        self.overdue_since = Some(started);
        if let Some(suppressed) = self.log.allow(now) {
            self.failure_logged = true;
            warn!(
                "store write has not finished after {} s: the database is not answering; \
                 {} points queued ({suppressed} similar failures since the last report)",
                WRITE_OVERDUE.as_secs(),
                self.writes.len()
            );
        }
    }

    /// Takes a retention pass's result and schedules the next.
    pub fn on_retention(
        &mut self,
        result: Result<u64, StoreError>,
        now: Instant,
        metrics: &mut Metrics,
    ) {
        self.retention_running = false;
        match result {
            Ok(deleted) => {
                metrics.points_expired_total += deleted;
                // A full batch means more may be waiting: continue soon, in small steps.
                self.next_retention = if deleted >= u64::from(RETENTION_BATCH) {
                    now + Duration::from_millis(200)
                } else {
                    now + RETENTION_EVERY
                };
                if deleted > 0 {
                    debug!("retention deleted {deleted} points");
                }
            }
            Err(e) => {
                warn!("retention failed: {e}");
                self.next_retention = now + RETENTION_EVERY;
            }
        }
    }

    fn count_dropped(&mut self, dropped: usize, now: Instant, metrics: &mut Metrics) {
        if dropped == 0 {
            return;
        }
        metrics.points_dropped_total += dropped as u64;
        if self.drop_log.allow(now).is_some() {
            warn!(
                "store write queue full: dropped the {dropped} oldest points \
                 ({} dropped since start)",
                metrics.points_dropped_total
            );
        }
    }

    /// Points waiting to be written.
    pub fn queued(&self) -> usize {
        self.writes.len()
    }

    /// Whether nothing is waiting or running (shutdown may finish).
    pub fn is_idle(&self) -> bool {
        self.writes.is_empty() && !self.retention_running
    }

    /// Whether the last write succeeded and the one in flight (if any) is within its deadline.
    pub fn is_up(&self) -> bool {
        self.up
            && self
                .write_started
                .is_none_or(|started| started.elapsed() <= WRITE_OVERDUE)
    }

    /// The store's kind, for `/health`.
    pub fn kind(&self) -> StoreKind {
        self.store.kind()
    }
}
