//! Rate limiting for repeated log lines: an hour-long outage must not write 3600 lines.

use std::time::{Duration, Instant};

/// Allows one event per `every`, counting the ones suppressed in between.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// At most one allowed event per `every`.
    pub const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether an event at `now` may be logged; if so, returns how many were
    /// suppressed since the last one that was.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_period_with_a_count_of_the_rest() {
        let start = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(60));
        assert_eq!(t.allow(start), Some(0));
        for s in 1..60 {
            assert_eq!(t.allow(start + Duration::from_secs(s)), None);
        }
        assert_eq!(t.allow(start + Duration::from_secs(60)), Some(59));
        assert_eq!(t.allow(start + Duration::from_secs(121)), Some(0));
    }
}
