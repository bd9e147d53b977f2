//! The clock and the feed: one fetch per wall-clock second, a bound on fetches in
//! flight, and the judgement of each result (failed, late, or quotes to deliver).

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::asset::Asset;
use crate::clock::epoch_second;
use crate::feed::{Feed, FeedError, Quote};
use crate::metrics::{FeedFailure, Metrics, TickOutcome};
use crate::throttle::Throttle;
use crate::workers::Workers;

use super::jobs::{Done, Fetch};

/// Rate of the feed-failure warning.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The tick clock and the feed it polls.
pub struct Ticks {
    feed: Arc<dyn Feed>,
    assets: Arc<[Asset]>,
    max_in_flight: usize,
    /// The last second a tick was started for.
    last_second: i64,
    /// The newest second that recorded a point.
    last_point_time: i64,
    in_flight: usize,
    /// A feed failure was logged and no answer has come since.
    failing: bool,
    log: Throttle,
    missed_log: Throttle,
}

impl Ticks {
    /// A clock polling `feed` for `assets`, with at most `max_in_flight` fetches at once,
    /// whose first tick is for the second after `done` (the last second the history
    /// holds): a start-up that ran past a second boundary ticks at once for the second
    /// under way, and any whole seconds it took are counted as missed.
    pub fn new(
        feed: Arc<dyn Feed>,
        assets: Arc<[Asset]>,
        max_in_flight: usize,
        done: i64,
    ) -> Ticks {
        Ticks {
            feed,
            assets,
            max_in_flight,
            last_second: done.min(epoch_second()),
            last_point_time: 0,
            in_flight: 0,
            failing: false,
            log: Throttle::new(LOG_EVERY),
            missed_log: Throttle::new(LOG_EVERY),
        }
    }

    /// The second that has begun since the last call, if one has. Seconds passed over
    /// (the loop was held up, or the clock jumped) are counted as missed ticks.
    pub fn new_second(&mut self, now: Instant, metrics: &mut Metrics) -> Option<i64> {
        let second = epoch_second();
        if second <= self.last_second {
            return None;
        }
        let missed = second - self.last_second - 1;
        if missed > 0 {
            metrics
                .ticks_total
                .add_many(TickOutcome::Missed, missed.unsigned_abs());
            if let Some(suppressed) = self.missed_log.allow(now) {
                warn!(
                    "{missed} ticks missed before {second} (the loop was held up or the \
                     clock jumped; {suppressed} similar reports suppressed)"
                );
            }
        }
        self.last_second = second;
        Some(second)
    }

    /// Starts the fetch for `second` on a worker, unless too many are in flight.
    pub fn start_fetch(&mut self, second: i64, workers: &Workers<Done>, metrics: &mut Metrics) {
        if self.in_flight >= self.max_in_flight {
            metrics.ticks_total.add(TickOutcome::Skipped);
            debug!(
                "tick {second} skipped: {} fetches in flight",
                self.in_flight
            );
            return;
        }
        self.in_flight += 1;
        let feed = Arc::clone(&self.feed);
        let assets = Arc::clone(&self.assets);
        workers.submit(
            move || {
                let started = Instant::now();
                let result = feed.fetch(second, &assets);
                Done::Feed(Fetch {
                    time: second,
                    took: started.elapsed(),
                    result,
                })
            },
            Done::Feed(Fetch {
                time: second,
                took: Duration::ZERO,
                result: Err(FeedError::Connect("the fetch panicked".into())),
            }),
        );
    }

    /// Judges a finished fetch: its second and the quotes to deliver, or `None` when
    /// it failed or came after a newer second's points.
    pub fn on_fetched(
        &mut self,
        fetch: Fetch,
        now: Instant,
        metrics: &mut Metrics,
    ) -> Option<(i64, Vec<Quote>)> {
        let Fetch { time, took, result } = fetch;
        self.in_flight = self.in_flight.saturating_sub(1);
        metrics.feed_fetch_seconds.observe(took);
        let fetched = match result {
            Ok(fetched) => fetched,
            Err(e) => {
                metrics.ticks_total.add(TickOutcome::Failed);
                metrics.feed_errors_total.add(failure_of(&e));
                if let Some(suppressed) = self.log.allow(now) {
                    // Only a reported failure gets its recovery reported.
                    self.failing = true;
                    warn!(
                        "tick {time}: no points: {e} ({suppressed} similar failures since the last report)"
                    );
                }
                return None;
            }
        };
        // The throttle is not reset here: a feed failing every few seconds would
        // otherwise log a warning and a recovery line for each failure.
        if self.failing {
            self.failing = false;
            info!("tick {time}: feed answering again");
        }
        metrics.feed_entries_rejected_total += u64::from(fetched.rejected);
        if time <= self.last_point_time {
            metrics.ticks_total.add(TickOutcome::Late);
            debug!("tick {time}: result arrived after a newer tick; dropped");
            return None;
        }
        Some((time, fetched.quotes))
    }

    /// Notes that `time` recorded points.
    pub fn recorded(&mut self, time: i64) {
        self.last_point_time = self.last_point_time.max(time);
    }

    /// Epoch second of the newest recorded point, 0 if none yet.
    pub fn last_point_time(&self) -> i64 {
        self.last_point_time
    }

    /// Fetches running.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The feed, for `/health`.
    pub fn describe_feed(&self) -> String {
        self.feed.describe()
    }
}

fn failure_of(e: &FeedError) -> FeedFailure {
    match e {
        FeedError::Timeout => FeedFailure::Timeout,
        FeedError::Status(_) => FeedFailure::Status,
        FeedError::Connect(_) => FeedFailure::Connect,
        FeedError::TooLarge(_) => FeedFailure::TooLarge,
        FeedError::Parse(_) => FeedFailure::Parse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asset::default_assets;
    use crate::feed::simulated::SimulatedFeed;

    fn ticks_after(done: i64) -> Ticks {
        Ticks::new(
            Arc::new(SimulatedFeed::new(1)),
            default_assets().into(),
            2,
            done,
        )
    }

    #[test]
    fn a_second_that_began_during_start_up_gets_its_tick_at_once() {
        let mut metrics = Metrics::default();
        let before = epoch_second();
        let mut ticks = ticks_after(before - 1);
        let second = ticks.new_second(Instant::now(), &mut metrics);
        let after = epoch_second();
        assert!(
            second.is_some_and(|s| (before..=after).contains(&s)),
            "{second:?} in {before}..={after}"
        );
        // Within the same second there is no second tick (a boundary may pass meanwhile).
        let again = ticks.new_second(Instant::now(), &mut metrics);
        if second == Some(epoch_second()) {
            assert_eq!(again, None);
        }
    }

    #[test]
    fn whole_seconds_a_start_up_took_are_counted_as_missed() {
        let mut metrics = Metrics::default();
        let before = epoch_second();
        let mut ticks = ticks_after(before - 4);
        let second = ticks
            .new_second(Instant::now(), &mut metrics)
            .expect("a tick");
        assert_eq!(
            metrics.ticks_total.get(TickOutcome::Missed),
            (second - (before - 4) - 1) as u64
        );
        assert!(metrics.ticks_total.get(TickOutcome::Missed) >= 3);
    }

    #[test]
    fn a_start_up_within_its_second_ticks_at_the_next_one() {
        let mut metrics = Metrics::default();
        let mut ticks = ticks_after(epoch_second());
        // Unless the second ended meanwhile, nothing is due yet.
        let now = epoch_second();
        let second = ticks.new_second(Instant::now(), &mut metrics);
        if epoch_second() == now {
            assert_eq!(second, None);
        }
        assert_eq!(metrics.ticks_total.get(TickOutcome::Missed), 0);
    }
}
