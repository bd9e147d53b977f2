//! Operations: `/health`, the gauges behind `/metrics`, signals and shutdown.

use super::*;

/// How long shutdown waits for clients to close and queued points to be written.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

impl Reactor {
    pub(super) fn gauges(&self, now: Instant) -> Gauges {
        Gauges {
            uptime_seconds: now.duration_since(self.started).as_secs_f64(),
            connections: self.conns.len(),
            subscriptions: self
                .market
                .assets()
                .iter()
                .map(|a| (a.asset.name.clone(), a.subscribers.len()))
                .collect(),
            write_queue_points: self.writes.len(),
            feed_in_flight: self.feeds_in_flight,
            last_tick_time: self.last_point_time,
            store_up: self.store_up,
        }
    }

    /// `/health`: 200 while serving normally, 503 while the database is required but
    /// failing or no tick has recorded a point for too long.
    pub(super) fn health_body(&self, now: Instant) -> (u16, String) {
        let uptime = now.duration_since(self.started).as_secs();
        let tick_age = if self.last_point_time > 0 {
            (epoch_now().as_secs() as i64 - self.last_point_time).max(0) as u64
        } else {
            uptime
        };
        let database = self.store.kind() == crate::store::StoreKind::Postgres;
        let mut problems = Vec::new();
        if database && !self.store_up {
            problems.push("database unreachable: points are queued in memory".to_string());
        }
        if tick_age > self.config.health_max_tick_age.as_secs() {
            problems.push(format!("no quote recorded for {tick_age} s"));
        }
        if self.shutdown_deadline.is_some() {
            problems.push("shutting down".to_string());
        }
        let subscribed: usize = self
            .market
            .assets()
            .iter()
            .map(|a| a.subscribers.len())
            .sum();
        let body = serde_json::json!({
            "status": if problems.is_empty() { "ok" } else { "unavailable" },
            "uptime_seconds": uptime,
            "clients": self.conns.len(),
            "subscribed_clients": subscribed,
            "store": {
                "kind": self.store.kind().label(),
                "up": self.store_up,
                "queued_points": self.writes.len(),
            },
            "feed": {
                "source": self.feed.describe(),
                "last_tick": (self.last_point_time > 0).then_some(self.last_point_time),
                "last_tick_age_seconds": tick_age,
            },
            "problems": problems,
        });
        let status = if problems.is_empty() { 200 } else { 503 };
        (status, body.to_string())
    }

    pub(super) fn on_signal(&mut self, now: Instant) {
        let mut got = false;
        for signal in self.signals.pending() {
            got = true;
            debug!("signal {signal}");
        }
        if !got {
            return;
        }
        if self.shutdown_deadline.is_some() {
            warn!("second signal: exiting at once");
            std::process::exit(1);
        }
        info!(
            "shutting down: closing {} connections, writing {} queued points",
            self.conns.len(),
            self.writes.len()
        );
        self.shutdown_deadline = Some(now + SHUTDOWN_WAIT);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let websocket = self.conns.get(key).is_some_and(Conn::is_websocket);
            let doom = if websocket {
                Doom::Close(CloseCode::Away, "server shutting down", false, None)
            } else {
                Doom::Drop(None)
            };
            self.doomed.push((key, doom));
        }
    }

    pub(super) fn shutdown_finished(&mut self, now: Instant) -> bool {
        let Some(deadline) = self.shutdown_deadline else {
            return false;
        };
        let done = self.conns.is_empty() && self.writes.is_empty() && !self.retention_running;
        done || now >= deadline
    }
}
