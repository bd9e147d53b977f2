//! The store's jobs: write-behind batches and retention passes, and their results.

use super::*;

impl Reactor {
    pub(super) fn start_store_jobs(&mut self, now: Instant) {
        if let Some(batch) = self.writes.next_batch(now) {
            let store = Arc::clone(&self.store);
            let if_panicked = batch.clone();
            self.workers.submit(
                move || {
                    let started = Instant::now();
                    let result = store.write_points(&batch);
                    Done::Write {
                        batch,
                        took: started.elapsed(),
                        result,
                    }
                },
                Done::Write {
                    batch: if_panicked,
                    took: Duration::ZERO,
                    result: Err(StoreError::Query("the write panicked".into())),
                },
            );
        }
        let Some(keep) = self.config.retention() else {
            return;
        };
        if self.retention_running || now < self.next_retention || self.shutdown_deadline.is_some() {
            return;
        }
        self.retention_running = true;
        let before = epoch_now().as_secs() as i64 - keep.as_secs() as i64;
        let store = Arc::clone(&self.store);
        self.workers.submit(
            move || Done::Retention(store.delete_points_before(before, RETENTION_BATCH)),
            Done::Retention(Err(StoreError::Query("retention panicked".into()))),
        );
    }

    pub(super) fn on_written(
        &mut self,
        batch: Vec<Point>,
        took: Duration,
        result: Result<(), StoreError>,
        now: Instant,
    ) {
        self.metrics.store_write_seconds.observe(took);
        match result {
            Ok(()) => {
                self.metrics.points_stored_total += batch.len() as u64;
                if let Some(since) = self.writes.failing_since()
                    && self.store_failure_logged
                {
                    // The throttle keeps running: a store failing on and off must not
                    // log a pair of lines per failure.
                    self.store_failure_logged = false;
                    info!(
                        "store reachable again after {:.0} s; writing {} queued points",
                        now.duration_since(since).as_secs_f64(),
                        self.writes.len().saturating_sub(batch.len())
                    );
                }
                self.writes.written();
                self.store_up = true;
            }
            Err(e) => {
                self.metrics.store_write_errors_total += 1;
                self.store_up = false;
                let dropped = self.writes.failed(batch, now);
                if let Some(suppressed) = self.store_log.allow(now) {
                    self.store_failure_logged = true;
                    warn!(
                        "store write failed: {e}; {} points queued, retrying \
                         ({suppressed} similar failures since the last report)",
                        self.writes.len()
                    );
                }
                self.count_dropped(dropped, now);
            }
        }
        self.start_store_jobs(now);
    }

    pub(super) fn count_dropped(&mut self, dropped: usize, now: Instant) {
        if dropped == 0 {
            return;
        }
        self.metrics.points_dropped_total += dropped as u64;
        if self.drop_log.allow(now).is_some() {
            warn!(
                "store write queue full: dropped the {dropped} oldest points \
                 ({} dropped since start)",
                self.metrics.points_dropped_total
            );
        }
    }

    pub(super) fn on_retention(&mut self, result: Result<u64, StoreError>, now: Instant) {
        self.retention_running = false;
        match result {
            Ok(deleted) => {
                self.metrics.points_expired_total += deleted;
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
}

/// Points deleted per retention statement at most.
const RETENTION_BATCH: u32 = 10_000;
/// Pause between retention passes once caught up.
const RETENTION_EVERY: Duration = Duration::from_secs(600);
