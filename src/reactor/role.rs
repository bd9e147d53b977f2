//! The instance's role among several on one database, and the leader's points as a
//! follower hears them: the notifications source of the loop.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::cluster::election::Stop;
use crate::cluster::{Event, Role, Threads};

/// The role, the events of the cluster threads, and a follower's fallback polling.
pub struct RoleState {
    role: Role,
    events: Option<Receiver<Event>>,
    /// Ends the election at shutdown.
    stop: Option<Stop>,
    /// Whether the listen connection is up.
    listening: bool,
    /// When a point was last delivered (or the role last changed).
    last_heard: Instant,
    /// Silence after which a follower polls the feed itself.
    fallback_after: Duration,
    /// Since when a follower has been polling the feed itself.
    fallback_since: Option<Instant>,
}

impl RoleState {
    /// A single instance without a database.
    pub fn standalone() -> RoleState {
        RoleState {
            role: Role::Standalone,
            events: None,
            stop: None,
            listening: false,
            last_heard: Instant::now(),
            fallback_after: Duration::MAX,
            fallback_since: None,
        }
    }

    /// One of several instances, starting as `role`, told of changes by the cluster
    /// `threads`.
    pub fn member(role: Role, threads: Threads, fallback_after: Duration) -> RoleState {
        RoleState {
            role,
            events: Some(threads.events),
            stop: Some(threads.stop),
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
    ///
    /// A leader that steps down goes on polling, as a follower on its own, until it hears
    /// the next leader's points: whether another instance has taken the lock or the
    /// database is unreachable, no second of its clients waits for the answer.
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
            self.start_fallback(now, "stepped down");
        }
        true
    }

    /// Notes whether the listen connection is up.
    pub fn set_listening(&mut self, up: bool) {
        self.listening = up;
    }

    /// Ends the election (at shutdown): a leader gives up the lock at once, so another
    /// instance takes over while this one finishes, and a follower stops waiting for it.
    pub fn stop_competing(&self) {
        if let Some(stop) = &self.stop {
            stop.stop();
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

    fn member(role: Role) -> RoleState {
        let (_tx, events) = mpsc::channel();
        let threads = Threads {
            events,
            stop: Stop::default(),
        };
        RoleState::member(role, threads, F)
    }

    fn follower(now: Instant) -> RoleState {
        let mut cluster = member(Role::Follower);
        cluster.set_listening(true);
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
        cluster.set_listening(false);
        assert!(!cluster.polls_feed(start + Duration::from_secs(2)));
        assert!(cluster.polls_feed(start + Duration::from_secs(3)));
    }

    #[test]
    fn a_leader_that_steps_down_polls_on_until_it_hears_the_next_leader() {
        let start = Instant::now();
        let mut cluster = member(Role::Leader);
        cluster.set_listening(true);
        assert!(cluster.polls_feed(start));
        // Its listen connection is still up: it does not know yet why it lost the lock.
        assert!(cluster.set_role(Role::Follower, start + Duration::from_secs(1)));
        assert!(cluster.polls_feed(start + Duration::from_secs(1)), "no gap");
        assert!(cluster.polls_feed(start + Duration::from_secs(2)), "no gap");
        assert!(cluster.in_fallback());
        // The next leader's points end it.
        cluster.heard(start + Duration::from_secs(3), true);
        assert!(!cluster.polls_feed(start + Duration::from_secs(3)));
    }

    #[test]
    fn a_leader_cut_off_from_the_database_polls_until_it_leads_again() {
        let start = Instant::now();
        let mut cluster = member(Role::Leader);
        cluster.set_listening(true);
        // The lock connection fails first, then the listen connection.
        assert!(cluster.set_role(Role::Follower, start + Duration::from_secs(1)));
        cluster.set_listening(false);
        for s in 1..9 {
            assert!(cluster.polls_feed(start + Duration::from_secs(s)), "{s}");
        }
        // Leading again ends it.
        assert!(cluster.set_role(Role::Leader, start + Duration::from_secs(9)));
        assert!(!cluster.in_fallback());
        assert!(!cluster.set_role(Role::Leader, start + Duration::from_secs(9)));
    }

    #[test]
    fn a_leader_always_polls_and_standalone_too() {
        let now = Instant::now();
        assert!(member(Role::Leader).polls_feed(now));
        assert!(RoleState::standalone().polls_feed(now + Duration::from_secs(3600)));
    }

    #[test]
    fn stopping_ends_the_election() {
        let cluster = member(Role::Follower);
        let stop = cluster.stop.clone().unwrap();
        cluster.stop_competing();
        assert!(stop.is_stopped());
        RoleState::standalone().stop_competing();
    }
}
