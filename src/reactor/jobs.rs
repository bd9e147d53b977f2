//! What the workers hand back to the reactor: one variant per kind of blocking job.

use std::time::Duration;

use crate::asset::Point;
use crate::feed::{FeedError, Fetched};
use crate::store::StoreError;

/// A finished worker job.
pub enum Done {
    /// A feed fetch for one tick.
    Feed(Fetch),
    /// A batch written to the store (or not).
    Write(Write),
    /// One retention pass: points deleted.
    Retention(Result<u64, StoreError>),
}

/// A feed fetch that came back from a worker.
pub struct Fetch {
    /// The tick's epoch second.
    pub time: i64,
    /// How long the fetch took.
    pub took: Duration,
    /// What it produced.
    pub result: Result<Fetched, FeedError>,
}

/// A batch write that came back from a worker.
pub struct Write {
    /// The batch, handed back so a failure can retry it.
    pub batch: Vec<Point>,
    /// How long the write took.
    pub took: Duration,
    /// Whether it worked.
    pub result: Result<(), StoreError>,
}
