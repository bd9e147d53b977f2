//! The instance's role among several on one database, and the leader's points as a
//! follower hears them: the notifications source of the loop.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::cluster::{Event, Role};

/// The role, the events of the cluster threads, and a follower's fallback polling.
pub struct Cluster {
    role: Role,
    events: Option<Receiver<Event>>,
    /// Whether the listen connection is up.
    listening: bool,
    /// When a point was last delivered (or the role last changed).
    last_heard: Instant,
    /// Silence after which a follower polls the feed itself.
    fallback_after: Duration,
    /// Since when a follower has been polling the feed itself.
    fallback_since: Option<Instant>,
}

impl Cluster {
    /// A single instance without a database.
    pub fn standalone() -> Cluster {
        Cluster {
            role: Role::Standalone,
            events: None,
            listening: false,
            last_heard: Instant::now(),
            fallback_after: Duration::MAX,
            fallback_since: None,
        }
    }

    /// One of several instances, starting as `role`, told of changes by `events`.
    pub fn member(role: Role, events: Receiver<Event>, fallback_after: Duration) -> Cluster {
        Cluster {
            role,
            events: Some(events),
            listening: false,
            last_heard: Instant::now(),
            fallback_after,
            fallback_since: None,
        }
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The next event of the cluster threads, if any is waiting.
    pub fn next_event(&self) -> Option<Event> {
        self.events.as_ref()?.try_recv().ok()
    }

    /// Takes a new role; returns whether it changed.
    pub fn set_role(&mut self, role: Role, now: Instant) -> bool {
        if role == self.role {
            return false;
        }
        match role {
            Role::Leader => info!("role: leader (polling the feed and publishing its points)"),
            Role::Follower => warn!("role: follower (the leadership lock was lost)"),
            Role::Standalone => {}
        }
        let was_leader = self.role == Role::Leader;
        self.role = role;
        self.end_fallback(now);
        if was_leader && !self.listening {
            // Cut off from the database: nobody can be heard, and waiting would only
            // leave this instance's clients without points.
            self.start_fallback(now, "the database is unreachable");
        }
        true
    }

    /// Notes whether the listen connection is up.
    pub fn set_listening(&mut self, up: bool, now: Instant) {
        self.listening = up;
        let just_stepped_down = now.duration_since(self.last_heard) < self.fallback_after;
        if !up && self.role == Role::Follower && just_stepped_down && self.fallback_since.is_none()
        {
            self.start_fallback(now, "the database is unreachable");
        }
    }

    /// Whether the listen connection is up.
    pub fn listening(&self) -> bool {
        self.listening
    }

    /// A second's points were delivered; `from_leader` if they were the leader's, which
    /// ends a follower's polling on its own.
    pub fn heard(&mut self, now: Instant, from_leader: bool) {
        self.last_heard = now;
        if from_leader {
            self.end_fallback(now);
        }
    }

    /// Whether this instance polls the feed this second: always, unless it is a
    /// follower that has heard from the leader within the fallback time.
    pub fn polls_feed(&mut self, now: Instant) -> bool {
        if self.role != Role::Follower {
            return true;
        }
        if self.fallback_since.is_some() {
            return true;
        }
        if now.duration_since(self.last_heard) < self.fallback_after {
            return false;
        }
        let why = format!(
            "no point from the leader for {} s, listen connection {}",
            self.fallback_after.as_secs(),
            if self.listening { "up" } else { "down" }
        );
        self.start_fallback(now, &why);
        true
    }

    fn start_fallback(&mut self, now: Instant, why: &str) {
        warn!("polling the feed on this instance until the leader's points come again ({why})");
        self.fallback_since = Some(now);
    }

    /// Whether a follower is polling the feed on its own.
    pub fn in_fallback(&self) -> bool {
        self.fallback_since.is_some()
    }

    fn end_fallback(&mut self, now: Instant) {
        if let Some(since) = self.fallback_since.take() {
            info!(
                "points from the leader again after {:.0} s of polling the feed alone",
                now.duration_since(since).as_secs_f64()
            );
        }
    }
}
