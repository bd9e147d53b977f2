//! The instance's role among several on one database, and the leader's points as a
//! follower hears them: the notifications source of the loop.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::cluster::{Event, Role};

/// The role, the events of the cluster threads, and a follower's fallback polling.
pub struct RoleState {
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
    /// When this instance last stopped being the leader.
    stepped_down_at: Option<Instant>,
}

impl RoleState {
    /// A single instance without a database.
    pub fn standalone() -> RoleState {
        RoleState {
            role: Role::Standalone,
            events: None,
            listening: false,
            last_heard: Instant::now(),
            fallback_after: Duration::MAX,
            fallback_since: None,
            stepped_down_at: None,
        }
    }

    /// One of several instances, starting as `role`, told of changes by `events`.
    pub fn member(role: Role, events: Receiver<Event>, fallback_after: Duration) -> RoleState {
        RoleState {
            role,
            events: Some(events),
            listening: false,
            last_heard: Instant::now(),
            fallback_after,
            fallback_since: None,
            stepped_down_at: None,
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
        if was_leader {
            self.stepped_down_at = Some(now);
        }
        if was_leader && !self.listening {
            // Cut off from the database: nobody can be heard, and waiting would only
            // leave this instance's clients without points.
            self.start_fallback(now, "the database is unreachable");
        }
        true
    }

    /// Notes whether the listen connection is up. A leader that has just stepped down
    /// and now cannot listen either is cut off from the database: it polls at once.
    pub fn set_listening(&mut self, up: bool, now: Instant) {
        self.listening = up;
        let just_stepped_down = self
            .stepped_down_at
            .is_some_and(|at| now.duration_since(at) < self.fallback_after);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    const F: Duration = Duration::from_secs(3);

    fn follower(now: Instant) -> RoleState {
        let (_tx, rx) = mpsc::channel();
        let mut cluster = RoleState::member(Role::Follower, rx, F);
        cluster.set_listening(true, now);
        cluster.heard(now, true);
        cluster
    }

    #[test]
    fn a_follower_polls_only_after_the_fallback_time_of_silence() {
        let start = Instant::now();
        let mut cluster = follower(start);
        assert!(!cluster.polls_feed(start + Duration::from_secs(2)));
        cluster.heard(start + Duration::from_secs(2), true);
        assert!(!cluster.polls_feed(start + Duration::from_secs(4)));
        assert!(cluster.polls_feed(start + Duration::from_secs(5)));
        assert!(cluster.in_fallback());
        // Its own points do not end the fallback; the leader's do.
        cluster.heard(start + Duration::from_secs(6), false);
        assert!(cluster.polls_feed(start + Duration::from_secs(6)));
        cluster.heard(start + Duration::from_secs(7), true);
        assert!(!cluster.in_fallback());
        assert!(!cluster.polls_feed(start + Duration::from_secs(7)));
    }

    #[test]
    fn a_follower_that_loses_its_listen_connection_still_waits() {
        let start = Instant::now();
        let mut cluster = follower(start);
        cluster.set_listening(false, start + Duration::from_secs(1));
        assert!(!cluster.polls_feed(start + Duration::from_secs(2)));
        assert!(cluster.polls_feed(start + Duration::from_secs(3)));
    }

    #[test]
    fn a_leader_cut_off_from_the_database_keeps_polling_as_a_follower() {
        let start = Instant::now();
        let (_tx, rx) = mpsc::channel();
        let mut cluster = RoleState::member(Role::Leader, rx, F);
        cluster.set_listening(true, start);
        assert!(cluster.polls_feed(start));
        // The lock connection fails first, then the listen connection.
        assert!(cluster.set_role(Role::Follower, start + Duration::from_secs(1)));
        cluster.set_listening(false, start + Duration::from_secs(1));
        assert!(cluster.polls_feed(start + Duration::from_secs(1)), "no gap");
        // Leading again ends it.
        assert!(cluster.set_role(Role::Leader, start + Duration::from_secs(9)));
        assert!(!cluster.in_fallback());
        assert!(!cluster.set_role(Role::Leader, start + Duration::from_secs(9)));
    }

    #[test]
    fn a_leader_always_polls_and_standalone_too() {
        let now = Instant::now();
        let (_tx, rx) = mpsc::channel();
        assert!(RoleState::member(Role::Leader, rx, F).polls_feed(now));
        assert!(RoleState::standalone().polls_feed(now + Duration::from_secs(3600)));
    }
}
