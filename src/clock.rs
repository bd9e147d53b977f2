//! The wall clock, read one way everywhere: ticks, history windows and retention are
//! all in whole UTC epoch seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch; a clock before 1970 reads as 0.
pub fn epoch_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// The current UTC epoch second.
pub fn epoch_second() -> i64 {
    i64::try_from(epoch_now().as_secs()).unwrap_or(i64::MAX)
}
