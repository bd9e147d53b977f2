//! Durable storage of assets and points. Two exist: in-memory and PostgreSQL.
//!
//! Every call may block and runs on a worker thread (or at start-up, before the
//! reactor runs); the reactor never calls a store directly. Every call of the PostgreSQL
//! store has a client-side deadline ([`deadline`]), so a hung database makes calls fail
//! rather than wait.

pub mod deadline;
pub mod dsn;
pub mod memory;
pub mod migrate;
pub mod pgerror;
pub mod postgres;
pub mod publish;
pub mod tls;

use std::fmt;
use std::time::Duration;

use crate::asset::{Asset, Point};

/// The longest a batch write may take, waiting for a connection included: a store gives
/// up on the write after this long (answering [`StoreError::Unavailable`]), and the
/// reactor reports the store down as soon as a write has been in flight longer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The database could not be reached or the connection broke; worth retrying.
    Unavailable(String),
    /// The schema is missing or behind and migrations are not applied automatically.
    SchemaBehind(String),
    /// A migration file differs from the one recorded as applied, or failed to apply.
    Migration(String),
    /// The database answered with an error that retrying will not fix.
    Query(String),
    /// The connection settings cannot be used (e.g. an unreadable `sslrootcert` file).
    Settings(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(e) => write!(f, "database unavailable: {e}"),
            StoreError::SchemaBehind(e) => write!(f, "{e}; run `ws_assets migrate`"),
            StoreError::Migration(e) => write!(f, "migration failed: {e}"),
            StoreError::Query(e) => write!(f, "database error: {e}"),
            StoreError::Settings(e) => write!(f, "unusable database settings: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Which store is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Points live in memory only ([`memory::MemoryStore`]).
    Memory,
    /// Points are kept in PostgreSQL ([`postgres::PostgresStore`]).
    Postgres,
}

impl StoreKind {
    /// `memory` or `postgresql`, for logs and `/health`.
    pub fn label(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Postgres => "postgresql",
        }
    }
}

/// Where points are kept beyond the in-memory history ring.
pub trait Store: Send + Sync {
    /// Which store this is.
    fn kind(&self) -> StoreKind;

    /// All assets, ordered by id.
    fn load_assets(&self) -> Result<Vec<Asset>, StoreError>;

    /// Points with `time >= since`, ordered by asset id then time; warms the rings at start-up.
    fn load_points_since(&self, since: i64) -> Result<Vec<Point>, StoreError>;

    /// Writes a batch of points; a point already stored (same asset and time) is ignored.
    /// A database shared by several instances also publishes them to the followers,
    /// in the same transaction.
    fn write_points(&self, points: &[Point]) -> Result<(), StoreError>;

    /// Writes points that are history, not news (a start-up backfill): like
    /// [`Store::write_points`], but never published to followers.
    fn import_points(&self, points: &[Point]) -> Result<(), StoreError> {
        self.write_points(points)
    }

    /// Deletes up to `limit` points with `time < before`; returns how many were deleted.
    fn delete_points_before(&self, before: i64, limit: u32) -> Result<u64, StoreError>;
}
