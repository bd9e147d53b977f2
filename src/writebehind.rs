//! The store's write-behind queue: points wait here until a worker has written them.
//!
//! Live delivery never waits for the store. Points are written in order, in batches,
//! one batch at a time; a failed batch goes back to the front and is retried with
//! back-off. The queue is bounded: past the bound the oldest points are dropped.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::asset::Point;

/// Points per write job at most.
pub const BATCH_POINTS: usize = 5000;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Points waiting for the store, oldest first.
#[derive(Debug)]
pub struct WriteBehind {
    queue: VecDeque<Point>,
    in_flight: usize,
    bound: usize,
    retry_at: Option<Instant>,
    backoff: Duration,
    failing_since: Option<Instant>,
}

impl WriteBehind {
    /// A queue holding at most `bound` points besides the batch being written.
    pub fn new(bound: usize) -> WriteBehind {
        WriteBehind {
            queue: VecDeque::new(),
            in_flight: 0,
            bound: bound.max(1),
            retry_at: None,
            backoff: FIRST_BACKOFF,
            failing_since: None,
        }
    }

    /// Queues points after those waiting; returns how many old ones were dropped to fit.
    pub fn push(&mut self, points: &[Point]) -> usize {
        self.queue.extend(points);
        self.enforce_bound()
    }

    /// The next batch to write, if one may start at `now` (none in flight, not backing off).
    pub fn next_batch(&mut self, now: Instant) -> Option<Vec<Point>> {
        if self.in_flight > 0 || self.queue.is_empty() {
            return None;
        }
        if self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        let n = self.queue.len().min(BATCH_POINTS);
        let batch: Vec<Point> = self.queue.drain(..n).collect();
        self.in_flight = batch.len();
        Some(batch)
    }

    /// The batch was written.
    pub fn written(&mut self) {
        self.in_flight = 0;
        self.retry_at = None;
        self.backoff = FIRST_BACKOFF;
        self.failing_since = None;
    }

    /// The batch failed: it goes back to the front and the next try waits.
    /// Returns how many old points were dropped to respect the bound.
    pub fn failed(&mut self, batch: Vec<Point>, now: Instant) -> usize {
        self.in_flight = 0;
        for point in batch.into_iter().rev() {
            self.queue.push_front(point);
        }
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.failing_since.get_or_insert(now);
        self.enforce_bound()
    }

    /// Points waiting, including a batch being written.
    pub fn len(&self) -> usize {
        self.queue.len() + self.in_flight
    }

    /// Whether nothing waits and nothing is being written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the current run of failures began, if the store is failing.
    pub fn failing_since(&self) -> Option<Instant> {
        self.failing_since
    }

    fn enforce_bound(&mut self) -> usize {
        let excess = self.queue.len().saturating_sub(self.bound);
        self.queue.drain(..excess);
        excess
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(times: std::ops::Range<i64>) -> Vec<Point> {
        times
            .map(|time| Point {
                asset_id: 1,
                time,
                value: 1.0,
            })
            .collect()
    }

    fn times(batch: &[Point]) -> Vec<i64> {
        batch.iter().map(|p| p.time).collect()
    }

    #[test]
    fn one_batch_at_a_time_in_order() {
        let now = Instant::now();
        let mut wb = WriteBehind::new(100);
        wb.push(&points(0..3));
        let batch = wb.next_batch(now).unwrap();
        assert_eq!(times(&batch), [0, 1, 2]);
        wb.push(&points(3..5));
        assert!(wb.next_batch(now).is_none(), "one in flight");
        assert_eq!(wb.len(), 5);
        wb.written();
        assert_eq!(times(&wb.next_batch(now).unwrap()), [3, 4]);
    }

    #[test]
    fn failures_retry_the_same_points_first_with_backoff() {
        let now = Instant::now();
        let mut wb = WriteBehind::new(100);
        wb.push(&points(0..3));
        let batch = wb.next_batch(now).unwrap();
        wb.push(&points(3..4));
        assert_eq!(wb.failed(batch, now), 0);
        assert!(wb.failing_since().is_some());
        assert!(wb.next_batch(now).is_none(), "backing off");
        let later = now + Duration::from_secs(1);
        let again = wb.next_batch(later).unwrap();
        assert_eq!(times(&again), [0, 1, 2, 3]);
        assert_eq!(wb.failed(again, later), 0);
        assert!(
            wb.next_batch(later + FIRST_BACKOFF).is_none(),
            "back-off doubled"
        );
        let batch = wb.next_batch(later + Duration::from_secs(1)).unwrap();
        assert_eq!(batch.len(), 4);
        wb.written();
        assert!(wb.is_empty());
        assert!(wb.failing_since().is_none());
    }

    #[test]
    fn the_bound_drops_the_oldest() {
        let now = Instant::now();
        let mut wb = WriteBehind::new(5);
        assert_eq!(wb.push(&points(0..4)), 0);
        let batch = wb.next_batch(now).unwrap();
        assert_eq!(
            wb.push(&points(4..8)),
            0,
            "the batch in flight is not counted"
        );
        assert_eq!(wb.len(), 8);
        assert_eq!(wb.failed(batch, now), 3, "back in the queue, it is");
        let rest = wb.next_batch(now + Duration::from_secs(1)).unwrap();
        assert_eq!(times(&rest), [3, 4, 5, 6, 7], "oldest dropped, order kept");
    }

    #[test]
    fn big_queues_go_in_batches() {
        let mut wb = WriteBehind::new(1_000_000);
        wb.push(&points(0..(BATCH_POINTS as i64 + 10)));
        assert_eq!(wb.next_batch(Instant::now()).unwrap().len(), BATCH_POINTS);
    }
}
