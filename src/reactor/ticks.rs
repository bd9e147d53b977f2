//! The clock: one feed fetch per wall-clock second, the per-second sweep (pings,
//! deadlines), and the fan-out of each tick's points to their subscribers.

use super::clients::SLOW_CONSUMER;
use super::*;

/// A subscribed client due a ping gets it with its next point; only when no tick has
/// come for this long past the ping interval is it sent on its own.
const PING_WITH_TICK_GRACE: Duration = Duration::from_secs(2);

impl Reactor {
    /// Runs once per loop pass; does the per-second work when a new second has begun.
    pub(super) fn on_clock(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|at| now >= at) {
            self.accept_paused_until = None;
            self.accept(now);
        }
        self.start_store_jobs(now);
        let second = epoch_now().as_secs() as i64;
        if second <= self.last_second {
            return;
        }
        if second > self.last_second + 1 {
            debug!(
                "clock jumped {} s; ticks in between are skipped",
                second - self.last_second - 1
            );
        }
        self.last_second = second;
        self.market.trim(second);
        if self.shutdown_deadline.is_none() {
            self.start_fetch(second);
        }
        self.sweep(now);
    }

    pub(super) fn start_fetch(&mut self, second: i64) {
        if self.feeds_in_flight >= self.config.rates_max_in_flight {
            self.metrics.tick(TickOutcome::Skipped);
            debug!(
                "tick {second} skipped: {} fetches in flight",
                self.feeds_in_flight
            );
            return;
        }
        self.feeds_in_flight += 1;
        let feed = Arc::clone(&self.feed);
        let assets = Arc::clone(&self.assets);
        self.workers.submit(
            move || {
                let started = Instant::now();
                let result = feed.fetch(second, &assets);
                Done::Feed {
                    time: second,
                    took: started.elapsed(),
                    result,
                }
            },
            Done::Feed {
                time: second,
                took: Duration::ZERO,
                result: Err(FeedError::Connect("the fetch panicked".into())),
            },
        );
    }

    /// Pings quiet clients and drops those past a deadline.
    pub(super) fn sweep(&mut self, now: Instant) {
        for (key, conn) in self.conns.iter_mut() {
            match &conn.phase {
                Phase::Http { deadline, .. } if now >= *deadline => {
                    self.doomed
                        .push((key, Doom::Drop(Some(DropReason::HandshakeTimeout))));
                }
                Phase::Closing { deadline, .. } if now >= *deadline => {
                    self.doomed.push((key, Doom::Drop(None)));
                }
                Phase::WebSocket(_) => match conn.ping_sent {
                    Some(sent) if now.duration_since(sent) >= self.config.pong_timeout => {
                        self.doomed
                            .push((key, Doom::Drop(Some(DropReason::PongTimeout))));
                    }
                    // Subscribers get their ping with the next point (see fan_out), which
                    // saves a write; this catches them when the feed is quiet.
                    None if now.duration_since(conn.last_heard)
                        >= self.config.ping_interval
                            + if conn.sub.is_some() {
                                PING_WITH_TICK_GRACE
                            } else {
                                Duration::ZERO
                            } =>
                    {
                        conn.ping(now);
                        match conn.flush() {
                            Ok(n) => self.metrics.bytes_sent_total += n as u64,
                            Err(_) => self.doomed.push((key, Doom::Drop(None))),
                        }
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }

    // ---- worker results ----------------------------------------------------------

    pub(super) fn take_results(&mut self, now: Instant) {
        while let Some(done) = self.workers.try_recv() {
            match done {
                Done::Feed { time, took, result } => self.on_fetched(time, took, result, now),
                Done::Write {
                    batch,
                    took,
                    result,
                } => self.on_written(batch, took, result, now),
                Done::Retention(result) => self.on_retention(result, now),
            }
        }
    }

    pub(super) fn on_fetched(
        &mut self,
        time: i64,
        took: Duration,
        result: Result<Fetched, FeedError>,
        now: Instant,
    ) {
        self.feeds_in_flight = self.feeds_in_flight.saturating_sub(1);
        self.metrics.feed_fetch_seconds.observe(took);
        let fetched = match result {
            Ok(fetched) => fetched,
            Err(e) => {
                self.metrics.tick(TickOutcome::Failed);
                self.metrics.feed_error(feed_error_kind(&e));
                if let Some(suppressed) = self.feed_log.allow(now) {
                    // Only a reported failure gets its recovery reported.
                    self.feed_failing = true;
                    warn!(
                        "tick {time}: no points: {e} ({suppressed} similar failures since the last report)"
                    );
                }
                return;
            }
        };
        // The throttle is not reset here: a feed failing every few seconds would
        // otherwise log a warning and a recovery line for each failure.
        if self.feed_failing {
            self.feed_failing = false;
            info!("tick {time}: feed answering again");
        }
        self.metrics.feed_entries_rejected_total += u64::from(fetched.rejected);
        if time <= self.last_point_time {
            self.metrics.tick(TickOutcome::Late);
            debug!("tick {time}: result arrived after a newer tick; dropped");
            return;
        }
        let delay = epoch_now().saturating_sub(Duration::from_secs(time.max(0) as u64));
        self.metrics.tick_delay_seconds.observe(delay);
        let fanout_started = Instant::now();
        let mut points = Vec::with_capacity(fetched.quotes.len());
        for quote in fetched.quotes {
            let point = Point {
                asset_id: quote.asset_id,
                time,
                value: quote.value,
            };
            if let Some((index, frame)) = self.market.record(point) {
                points.push(point);
                self.fan_out(index, &frame);
            }
        }
        if points.is_empty() {
            self.metrics.tick(TickOutcome::Empty);
            return;
        }
        self.metrics
            .fanout_seconds
            .observe(fanout_started.elapsed());
        self.metrics.tick(TickOutcome::Ok);
        self.metrics.points_total += points.len() as u64;
        self.last_point_time = time;
        let dropped = self.writes.push(&points);
        self.count_dropped(dropped, now);
        self.start_store_jobs(now);
    }

    /// Queues one point frame to every subscriber of an asset and writes it out.
    ///
    /// This is the hot loop: one `write` per client, straight from the shared frame when
    /// nothing else is queued. A client due a ping gets it in the same write.
    pub(super) fn fan_out(&mut self, index: usize, frame: &Bytes) {
        let limit = self.config.client_queue_bytes;
        let ping_interval = self.config.ping_interval;
        let now = Instant::now();
        for &key in self.market.subscribers(index) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.ping_sent.is_none() && now.duration_since(conn.last_heard) >= ping_interval {
                conn.ping(now);
            }
            match conn.socket.outbox.send(frame, &mut conn.socket.tcp) {
                Ok(written) => self.metrics.bytes_sent_total += written as u64,
                Err(_) => {
                    self.doomed.push((key, Doom::Drop(None)));
                    continue;
                }
            }
            if conn.socket.outbox.backlog_bytes() > limit {
                self.doomed.push((key, SLOW_CONSUMER));
            }
        }
        self.metrics.messages_sent_total += self.market.subscribers(index).len() as u64;
    }
}

fn feed_error_kind(e: &FeedError) -> &'static str {
    match e {
        FeedError::Timeout => "timeout",
        FeedError::Status(_) => "status",
        FeedError::Connect(_) => "connect",
        FeedError::TooLarge(_) => "too_large",
        FeedError::Parse(_) => "parse",
    }
}
