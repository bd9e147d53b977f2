//! The PostgreSQL store: a small r2d2 pool of blocking `postgres` clients.
//!
//! Every call blocks for a bounded time and fails fast while the database is away or
//! hung: each has a client-side deadline ([`Session`]), and past it answers
//! [`StoreError::Unavailable`]; queuing and retrying is the caller's job. Start-up waits
//! for the database with back-off for a bounded time, then applies or checks the
//! migrations in `sql/`.
//!
//! A pooled connection is checked with a trivial query when it is taken from the pool;
//! that check, the wait for a connection and any retry with the next idle connection
//! share one deadline ([`CHECKOUT_TIMEOUT`]), so a hung server with many idle
//! connections is noticed as fast as with one.

use std::error::Error;
use std::fmt;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use r2d2::{HandleError, ManageConnection, Pool, PooledConnection};

use super::deadline;
pub use super::deadline::{Session, discard};
use super::dsn::{
    DEFAULT_CONNECT_TIMEOUT, PgSettings, redacted, with_service_defaults, with_statement_timeout,
};
use super::migrate::{self, Applied};
use super::pgerror::{classify, error_text};
use super::publish::{self, CHANNEL};
use super::tls::{self, Connector};
use super::{Store, StoreError, StoreKind, WRITE_TIMEOUT};
use crate::asset::{Asset, Point};
use crate::throttle::Throttle;

/// How long a store call may wait for a usable pooled connection: the wait for one and
/// the check of each idle one tried share this deadline.
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(2);
/// Client-side deadline of a read of assets or history (start-up, a follower's catch-up).
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Client-side deadline of one retention pass; longer than [`STATEMENT_TIMEOUT`], which
/// normally ends a slow pass first.
pub const RETENTION_TIMEOUT: Duration = Duration::from_secs(35);
/// Client-side deadline of applying the migrations (waiting for another instance's
/// migration lock included): a migration may legitimately take minutes.
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Server-side limit on one statement of a pooled connection (lock waits included), unless
/// the DSN's `options` set `statement_timeout`; given in the connection's options
/// ([`with_statement_timeout`]). Migrations run unpooled, without it.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept open even when nothing is written.
pub const MIN_IDLE: u32 = 1;
/// An idle connection above `MIN_IDLE` is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Every connection is replaced after this long (picks up server-side changes, frees memory).
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// First pause between start-up connection attempts; doubles up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
/// Longest pause between start-up connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Time the first start-up attempt always gets, even with a start-up timeout of zero.
const FIRST_ATTEMPT_MIN: Duration = Duration::from_secs(1);
/// Time any later attempt gets, so the last one near the deadline can still report why.
const ATTEMPT_MIN: Duration = Duration::from_millis(250);

/// Batch order is kept (`ORDINALITY`) so that of two equal keys in one batch the first wins,
/// as it does across batches.
const WRITE_POINTS: &str = "\
INSERT INTO points (asset_id, time, value)
SELECT u.asset_id, to_timestamp(u.time), u.value
FROM unnest($1::int4[], $2::int8[], $3::float8[]) WITH ORDINALITY AS u (asset_id, time, value, n)
WHERE EXISTS (SELECT 1 FROM assets a WHERE a.id = u.asset_id)
ORDER BY u.n
ON CONFLICT DO NOTHING";

/// [`WRITE_POINTS`], publishing on [`CHANNEL`], in the same statement, the points it
/// stored: a notification is delivered on commit, so no follower hears of a point the
/// table lacks, nor of a value other than the stored one. `$5` holds each point's
/// [`publish::entry`]; a second's entries go out in payloads of at most `$6`.
const WRITE_AND_PUBLISH_POINTS: &str = "\
WITH input AS (
    SELECT u.asset_id, u.time, u.value, u.entry, u.n
    FROM unnest($1::int4[], $2::int8[], $3::float8[], $5::text[])
        WITH ORDINALITY AS u (asset_id, time, value, entry, n)
), written AS (
    INSERT INTO points (asset_id, time, value)
    SELECT i.asset_id, to_timestamp(i.time), i.value
    FROM input i
    WHERE EXISTS (SELECT 1 FROM assets a WHERE a.id = i.asset_id)
    ORDER BY i.n
    ON CONFLICT DO NOTHING
    RETURNING asset_id, time
), stored AS (
    SELECT i.time, i.asset_id, i.entry,
        (row_number() OVER (PARTITION BY i.time ORDER BY i.asset_id) - 1) / $6::int8 AS part
    FROM written w
    JOIN input i ON i.asset_id = w.asset_id AND to_timestamp(i.time) = w.time
)
SELECT count(pg_notify($4, p.payload))
FROM (
    SELECT s.time, s.part, s.time::text || ' ' || string_agg(s.entry, ' ' ORDER BY s.asset_id) AS payload
    FROM stored s
    GROUP BY s.time, s.part
    ORDER BY s.time, s.part
) p";

const LOAD_ASSETS: &str = "SELECT id, name FROM assets ORDER BY id";

const LOAD_POINTS_SINCE: &str = "\
SELECT asset_id, floor(extract(epoch FROM time))::int8, value
FROM points
WHERE time >= to_timestamp($1::int8)
ORDER BY asset_id, time";

const DELETE_POINTS_BEFORE: &str = "\
DELETE FROM points p
USING (
    SELECT asset_id, time FROM points
    WHERE time < to_timestamp($1::int8)
    ORDER BY time
    LIMIT $2::int8
) old
WHERE p.asset_id = old.asset_id AND p.time = old.time";

/// Points and assets kept in PostgreSQL.
pub struct PostgresStore {
    pool: Pool<Manager>,
    target: String,
}

impl PostgresStore {
    /// Waits up to `startup_timeout` for the database, applies (`auto_apply`) or checks the
    /// migrations, and opens a pool of at most `pool_size` connections.
    ///
    /// Every connection uses the TLS settings of `settings`. Errors never contain the
    /// password; an unreachable database gives `Unavailable` naming `host:port` and the
    /// last error.
    pub fn connect(
        settings: &PgSettings,
        pool_size: u32,
        startup_timeout: Duration,
        auto_apply: bool,
    ) -> Result<Self, StoreError> {
        if pool_size == 0 {
            return Err(StoreError::Query(
                "the PostgreSQL pool size must be at least 1".to_string(),
            ));
        }
        let tls = tls_connector(settings)?;
        let config = with_service_defaults(settings.postgres());
        let target = redacted(&config);
        let mut session = open_session(&config, &tls, startup_timeout)?;
        if auto_apply {
            let applied = session.run(MIGRATION_TIMEOUT, "the migrations", migrate::apply)?;
            if applied.is_empty() {
                log::info!("database schema at {target} is up to date");
            }
        } else {
            session.run(READ_TIMEOUT, "the migration check", migrate::check)?;
        }
        drop(session);

        let manager = Manager::new(config, tls, target.clone());
        let pool = Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(MIN_IDLE.min(pool_size)))
            .connection_timeout(CHECKOUT_TIMEOUT)
            .idle_timeout(Some(IDLE_TIMEOUT))
            .max_lifetime(Some(MAX_LIFETIME))
            // r2d2 would check every idle connection it tries with a timeout each, one
            // after another; `checkout` checks them under one deadline instead.
            .test_on_check_out(false)
            .error_handler(Box::new(DebugLogErrors {
                target: target.clone(),
            }))
            // `build` would block until MIN_IDLE connections exist; the database just
            // answered, and calls fail fast with `Unavailable` if it has gone again.
            .build_unchecked(manager);
        log::info!("using PostgreSQL at {target} (pool of up to {pool_size} connections)");
        Ok(PostgresStore { pool, target })
    }

    /// Idle connections in the pool now.
    pub fn idle_connections(&self) -> u32 {
        self.pool.state().idle_connections
    }

    /// A pooled connection that has just answered a check, within [`CHECKOUT_TIMEOUT`]
    /// (and before `deadline`): idle connections that fail their check are dropped and the
    /// next is tried, all under that one deadline.
    fn checkout(&self, deadline: Instant) -> Result<PooledConnection<Manager>, StoreError> {
        let started = Instant::now();
        let until = deadline.min(started + CHECKOUT_TIMEOUT);
        let mut last_failure = None;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let why = last_failure.map_or_else(String::new, |e: StoreError| {
                    format!("; last check: {}", detail(e))
                });
                return Err(StoreError::Unavailable(format!(
                    "no connection to {} answered within {:.1} s{why}",
                    self.target,
                    started.elapsed().as_secs_f64()
                )));
            }
            let mut conn = self.pool.get_timeout(left).map_err(|e| {
                StoreError::Unavailable(format!("no connection to {}: {e}", self.target))
            })?;
            let left = until.saturating_duration_since(Instant::now());
            match conn.check(left.max(MIN_CHECK)) {
                Ok(()) => return Ok(conn),
                // The failed connection goes back to the pool, which drops it.
                Err(e) => last_failure = Some(e),
            }
        }
    }

    /// Runs `call` on a pooled connection; the checkout and the call share one deadline,
    /// `limit` from now.
    fn run<T, F>(&self, limit: Duration, what: &str, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut postgres::Client) -> Result<T, StoreError> + Send + 'static,
    {
        let deadline = Instant::now() + limit;
        let mut conn = self.checkout(deadline)?;
        let left = deadline.saturating_duration_since(Instant::now());
        conn.run(left.max(MIN_CHECK), what, call)
    }
}

/// The least time a check or call is given, however little of its deadline is left: a
/// healthy server always gets the chance to answer.
const MIN_CHECK: Duration = Duration::from_millis(100);

impl Store for PostgresStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Postgres
    }

    fn load_assets(&self) -> Result<Vec<Asset>, StoreError> {
        self.run(READ_TIMEOUT, "the asset list", |client| {
            let rows = client.query(LOAD_ASSETS, &[]).map_err(|e| classify(&e))?;
            rows.iter()
                .map(|row| {
                    Ok(Asset {
                        id: row.try_get(0)?,
                        name: row.try_get(1)?,
                    })
                })
                .collect::<Result<_, postgres::Error>>()
                .map_err(|e| classify(&e))
        })
    }

    fn load_points_since(&self, since: i64) -> Result<Vec<Point>, StoreError> {
        self.run(READ_TIMEOUT, "the history read", move |client| {
            points_since(client, since)
        })
    }

    /// One statement per batch, publishing the points to followers. Points of assets
    /// missing from `assets` are skipped rather than failing the whole batch.
    fn write_points(&self, points: &[Point]) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let (ids, times, values) = columns(points);
        let entries: Vec<String> = points.iter().map(publish::entry).collect();
        self.run(WRITE_TIMEOUT, "the batch write", move |client| {
            client
                .execute(
                    WRITE_AND_PUBLISH_POINTS,
                    &[
                        &ids,
                        &times,
                        &values,
                        &CHANNEL,
                        &entries,
                        &publish::ENTRIES_PER_PAYLOAD,
                    ],
                )
                .map(drop)
                .map_err(|e| classify(&e))
        })
    }

    fn import_points(&self, points: &[Point]) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let (ids, times, values) = columns(points);
        self.run(WRITE_TIMEOUT, "the history import", move |client| {
            client
                .execute(WRITE_POINTS, &[&ids, &times, &values])
                .map(drop)
                .map_err(|e| classify(&e))
        })
    }

    fn delete_points_before(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        self.run(RETENTION_TIMEOUT, "the retention pass", move |client| {
            client
                .execute(DELETE_POINTS_BEFORE, &[&before, &i64::from(limit)])
                .map_err(|e| classify(&e))
        })
    }
}

/// Points as the three column arrays the write statements take.
fn columns(points: &[Point]) -> (Vec<i32>, Vec<i64>, Vec<f64>) {
    (
        points.iter().map(|p| p.asset_id).collect(),
        points.iter().map(|p| p.time).collect(),
        points.iter().map(|p| p.value).collect(),
    )
}

/// Points with `time >= since`, ordered by asset then time, read over `client` (run it
/// through [`Session::run`] for a deadline).
pub fn points_since(client: &mut postgres::Client, since: i64) -> Result<Vec<Point>, StoreError> {
    let rows = client
        .query(LOAD_POINTS_SINCE, &[&since])
        .map_err(|e| classify(&e))?;
    rows.iter()
        .map(|row| {
            Ok(Point {
                asset_id: row.try_get(0)?,
                time: row.try_get(1)?,
                value: row.try_get(2)?,
            })
        })
        .collect::<Result<_, postgres::Error>>()
        .map_err(|e| classify(&e))
}

/// `ws_assets migrate`: waits up to `timeout` for the database, then applies pending
/// migrations (within [`MIGRATION_TIMEOUT`]).
pub fn migrate(settings: &PgSettings, timeout: Duration) -> Result<Vec<Applied>, StoreError> {
    connect_session(settings, timeout)?.run(MIGRATION_TIMEOUT, "the migrations", migrate::apply)
}

/// Opens one unpooled connection, with the TLS settings of `settings`, retrying with
/// back-off while the database is unreachable; every call on it has a deadline.
///
/// The service's timeouts and keepalives are added to the settings. Gives up after
/// `timeout` (the first attempt always gets at least a second, later ones at least a
/// quarter) with `Unavailable` naming `host:port` and the last error; an answer that
/// retrying cannot change (wrong password, unknown database, a certificate that fails
/// the check) is returned at once as `Query`; unusable TLS settings (an unreadable
/// `sslrootcert`) give `Settings` before any attempt.
pub fn connect_session(settings: &PgSettings, timeout: Duration) -> Result<Session, StoreError> {
    let tls = tls_connector(settings)?;
    open_session(&with_service_defaults(settings.postgres()), &tls, timeout)
}

fn tls_connector(settings: &PgSettings) -> Result<Connector, StoreError> {
    tls::connector(&settings.verify())
        .map_err(|e| StoreError::Settings(format!("{}: {e}", settings.redacted())))
}

/// [`connect_session`] for a config that already has the service's defaults.
fn open_session(
    config: &postgres::Config,
    tls: &Connector,
    timeout: Duration,
) -> Result<Session, StoreError> {
    let target = redacted(config);
    let started = Instant::now();
    let deadline = started + timeout;
    let mut backoff = Backoff::new();
    let mut attempts = 0u32;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let limit = remaining.max(if attempts == 0 {
            FIRST_ATTEMPT_MIN
        } else {
            ATTEMPT_MIN
        });
        attempts += 1;
        let why = match deadline::connect(config, tls, limit) {
            Ok(client) => {
                log::info!("connected to PostgreSQL at {target}");
                return Ok(Session::new(client, tls.clone(), target));
            }
            Err(StoreError::Unavailable(why)) => why,
            Err(other) => {
                return Err(StoreError::Query(format!(
                    "cannot connect to PostgreSQL at {target}: {}",
                    detail(other)
                )));
            }
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(StoreError::Unavailable(format!(
                "PostgreSQL at {target} did not answer within {:.1} s ({attempts} attempt(s)); last error: {why}",
                now.duration_since(started).as_secs_f64()
            )));
        }
        let pause = backoff.next_pause().min(deadline - now);
        if let Some(suppressed) = allow_not_answering_warning(now) {
            log::warn!(
                "PostgreSQL at {target} is not answering ({why}); retrying in {:.2} s \
                 ({suppressed} similar warnings since the last report)",
                pause.as_secs_f64()
            );
        }
        thread::sleep(pause);
    }
}

/// Whether a warning that the database is not answering may be logged at `now`, with the
/// number suppressed since the last one. Shared by every thread that opens connections
/// (start-up, the election, the listener), so an outage logs like the other repeated
/// warnings, at most once a minute, however many of them retry.
fn allow_not_answering_warning(now: Instant) -> Option<u64> {
    static LOG: Mutex<Throttle> = Mutex::new(Throttle::new(NOT_ANSWERING_LOG_EVERY));
    LOG.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .allow(now)
}

/// Rate of the "is not answering" warning of [`open_session`].
const NOT_ANSWERING_LOG_EVERY: Duration = Duration::from_secs(60);

fn detail(error: StoreError) -> String {
    match error {
        StoreError::Unavailable(s)
        | StoreError::SchemaBehind(s)
        | StoreError::Migration(s)
        | StoreError::Settings(s)
        | StoreError::Query(s) => s,
    }
}

/// Pauses between start-up attempts: 0.25 s doubling to 5 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: INITIAL_BACKOFF,
        }
    }

    fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        pause
    }
}

/// Opens the pool's connections, each a [`Session`] (so every call on it has a deadline)
/// whose server ends any statement past [`STATEMENT_TIMEOUT`].
struct Manager {
    config: postgres::Config,
    tls: Connector,
    target: String,
}

impl Manager {
    fn new(config: postgres::Config, tls: Connector, target: String) -> Self {
        Manager {
            config: with_statement_timeout(&config, STATEMENT_TIMEOUT),
            tls,
            target,
        }
    }
}

impl ManageConnection for Manager {
    type Connection = Session;
    type Error = PoolError;

    /// Runs on r2d2's own threads, bounded like every other call.
    fn connect(&self) -> Result<Session, PoolError> {
        let limit = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let client = deadline::connect(&self.config, &self.tls, limit)?;
        Ok(Session::new(client, self.tls.clone(), self.target.clone()))
    }

    /// Not used by r2d2 (`test_on_check_out` is off); the store checks on checkout itself.
    fn is_valid(&self, conn: &mut Session) -> Result<(), PoolError> {
        Ok(conn.check(CHECKOUT_TIMEOUT)?)
    }

    fn has_broken(&self, conn: &mut Session) -> bool {
        conn.is_lost()
    }
}

/// A pool-side error with its cause kept in the text (r2d2 keeps only the text).
#[derive(Debug)]
struct PoolError(String);

impl From<postgres::Error> for PoolError {
    fn from(e: postgres::Error) -> Self {
        PoolError(error_text(&e))
    }
}

impl From<StoreError> for PoolError {
    fn from(e: StoreError) -> Self {
        PoolError(detail(e))
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for PoolError {}

/// r2d2 retries a failed connect about every second during an outage; its default handler
/// would log each at error level. The caller reports the outage once; details go to debug.
#[derive(Debug)]
struct DebugLogErrors {
    target: String,
}

impl HandleError<PoolError> for DebugLogErrors {
    fn handle_error(&self, error: PoolError) {
        log::debug!("PostgreSQL pool for {}: {error}", self.target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_quarter_second_to_five_seconds() {
        let mut backoff = Backoff::new();
        let pauses: Vec<u128> = (0..8).map(|_| backoff.next_pause().as_millis()).collect();
        assert_eq!(pauses, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
    }
}
