//! The PostgreSQL store: a small r2d2 pool of blocking `postgres` clients.
//!
//! Every call blocks and fails fast while the database is away (a short checkout timeout
//! gives [`StoreError::Unavailable`]); queuing and retrying is the caller's job. Start-up
//! waits for the database with back-off for a bounded time, then applies or checks the
//! migrations in `sql/`.

use std::error::Error;
use std::fmt;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use r2d2::{HandleError, ManageConnection, Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;

use super::dsn::{PgSettings, redacted, with_service_defaults};
use super::migrate::{self, Applied};
use super::pgerror::{classify, error_text};
use super::publish::{self, CHANNEL};
use super::tls::{self, Connector};
use super::{Store, StoreError, StoreKind};
use crate::asset::{Asset, Point};

/// How long a store call waits for a pooled connection before answering `Unavailable`.
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on the health check run on every checkout (r2d2_postgres's own has none).
pub const VALIDATION_TIMEOUT: Duration = Duration::from_secs(2);
/// Server-side limit on one statement of a pooled connection (lock waits included), unless
/// the DSN's `options` set `statement_timeout`. Migrations run unpooled, without it.
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
        let mut client = open_client(&config, &tls, startup_timeout)?;
        if auto_apply {
            let applied = migrate::apply(&mut client)?;
            if applied.is_empty() {
                log::info!("database schema at {target} is up to date");
            }
        } else {
            migrate::check(&mut client)?;
        }
        drop(client);

        let manager = Manager::new(config, tls);
        let pool = Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(MIN_IDLE.min(pool_size)))
            .connection_timeout(CHECKOUT_TIMEOUT)
            .idle_timeout(Some(IDLE_TIMEOUT))
            .max_lifetime(Some(MAX_LIFETIME))
            .test_on_check_out(true)
            .error_handler(Box::new(DebugLogErrors {
                target: target.clone(),
            }))
            // `build` would block until MIN_IDLE connections exist; the database just
            // answered, and calls fail fast with `Unavailable` if it has gone again.
            .build_unchecked(manager);
        log::info!("using PostgreSQL at {target} (pool of up to {pool_size} connections)");
        Ok(PostgresStore { pool, target })
    }

    fn conn(&self) -> Result<PooledConnection<Manager>, StoreError> {
        self.pool
            .get()
            .map_err(|e| StoreError::Unavailable(format!("no connection to {}: {e}", self.target)))
    }
}

impl Store for PostgresStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Postgres
    }

    fn load_assets(&self) -> Result<Vec<Asset>, StoreError> {
        let rows = self
            .conn()?
            .client()?
            .query(LOAD_ASSETS, &[])
            .map_err(|e| classify(&e))?;
        rows.iter()
            .map(|row| {
                Ok(Asset {
                    id: row.try_get(0)?,
                    name: row.try_get(1)?,
                })
            })
            .collect::<Result<_, postgres::Error>>()
            .map_err(|e| classify(&e))
    }

    fn load_points_since(&self, since: i64) -> Result<Vec<Point>, StoreError> {
        points_since(self.conn()?.client()?, since)
    }

    /// One statement per batch, publishing the points to followers. Points of assets
    /// missing from `assets` are skipped rather than failing the whole batch.
    fn write_points(&self, points: &[Point]) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let (ids, times, values) = columns(points);
        let entries: Vec<String> = points.iter().map(publish::entry).collect();
        self.conn()?
            .client()?
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
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    fn import_points(&self, points: &[Point]) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let (ids, times, values) = columns(points);
        self.conn()?
            .client()?
            .execute(WRITE_POINTS, &[&ids, &times, &values])
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    fn delete_points_before(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        self.conn()?
            .client()?
            .execute(DELETE_POINTS_BEFORE, &[&before, &i64::from(limit)])
            .map_err(|e| classify(&e))
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

/// Points with `time >= since`, ordered by asset then time, read over `client`.
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

/// `ws_assets migrate`: waits up to `timeout` for the database, then applies pending migrations.
pub fn migrate(settings: &PgSettings, timeout: Duration) -> Result<Vec<Applied>, StoreError> {
    let mut client = connect_client(settings, timeout)?;
    migrate::apply(&mut client)
}

/// Opens one unpooled client, with the TLS settings of `settings`, retrying with back-off
/// while the database is unreachable.
///
/// The service's timeouts and keepalives are added to the settings. Gives up after
/// `timeout` (the first attempt always gets at least a second, later ones at least a
/// quarter) with `Unavailable` naming `host:port` and the last error; an answer that
/// retrying cannot change (wrong password, unknown database, a certificate that fails
/// the check) is returned at once as `Query`; unusable TLS settings (an unreadable
/// `sslrootcert`) give `Settings` before any attempt.
pub fn connect_client(
    settings: &PgSettings,
    timeout: Duration,
) -> Result<postgres::Client, StoreError> {
    let tls = tls_connector(settings)?;
    open_client(&with_service_defaults(settings.postgres()), &tls, timeout)
}

fn tls_connector(settings: &PgSettings) -> Result<Connector, StoreError> {
    tls::connector(&settings.verify())
        .map_err(|e| StoreError::Settings(format!("{}: {e}", settings.redacted())))
}

/// [`connect_client`] for a config that already has the service's defaults.
fn open_client(
    config: &postgres::Config,
    tls: &Connector,
    timeout: Duration,
) -> Result<postgres::Client, StoreError> {
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
        let why = match connect_once(config, tls, limit) {
            Ok(client) => {
                log::info!("connected to PostgreSQL at {target}");
                return Ok(client);
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
        log::warn!(
            "PostgreSQL at {target} is not answering ({why}); retrying in {:.2} s",
            pause.as_secs_f64()
        );
        thread::sleep(pause);
    }
}

/// One connection attempt bounded by `limit`, handshake included: the library bounds only
/// the TCP connect, and a server that accepts but never answers would hang start-up.
fn connect_once(
    config: &postgres::Config,
    tls: &Connector,
    limit: Duration,
) -> Result<postgres::Client, StoreError> {
    let mut config = config.clone();
    let tls = tls.clone();
    if config.get_connect_timeout().is_none_or(|t| *t > limit) && !limit.is_zero() {
        config.connect_timeout(limit);
    }
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("pg-connect".to_string())
        .spawn(move || {
            // The receiver is gone when the attempt timed out; the client is then dropped.
            let _ = tx.send(config.connect(tls));
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start a connect thread: {e}")))?;
    match rx.recv_timeout(limit) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(classify(&e)),
        Err(RecvTimeoutError::Timeout) => Err(StoreError::Unavailable(format!(
            "the server did not complete the connection within {:.2} s",
            limit.as_secs_f64()
        ))),
        Err(RecvTimeoutError::Disconnected) => Err(StoreError::Unavailable(
            "the connection attempt ended without a result".to_string(),
        )),
    }
}

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

/// r2d2_postgres's manager with a bounded health check (its own `simple_query("")` can
/// wait forever on a server that stopped answering) and a per-session statement timeout.
struct Manager {
    inner: PostgresConnectionManager<Connector>,
    /// SQL run once on each new connection.
    session_setup: Option<String>,
}

impl Manager {
    fn new(config: postgres::Config, tls: Connector) -> Self {
        let user_sets_timeout = config
            .get_options()
            .is_some_and(|options| options.contains("statement_timeout"));
        let session_setup = (!user_sets_timeout)
            .then(|| format!("SET statement_timeout = {}", STATEMENT_TIMEOUT.as_millis()));
        Manager {
            inner: PostgresConnectionManager::new(config, tls),
            session_setup,
        }
    }
}

impl ManageConnection for Manager {
    type Connection = PooledClient;
    type Error = PoolError;

    fn connect(&self) -> Result<PooledClient, PoolError> {
        let mut client = self.inner.connect()?;
        if let Some(setup) = &self.session_setup {
            client.batch_execute(setup)?;
        }
        Ok(PooledClient {
            client: Some(client),
            stuck: false,
        })
    }

    fn is_valid(&self, conn: &mut PooledClient) -> Result<(), PoolError> {
        let Some(client) = conn.client.as_mut() else {
            return Err(PoolError("the connection was already released".to_string()));
        };
        match client.is_valid(VALIDATION_TIMEOUT) {
            Ok(()) => Ok(()),
            Err(e) => {
                // A timed-out check leaves its query in flight; see `PooledClient`.
                conn.stuck = true;
                Err(PoolError::from(e))
            }
        }
    }

    fn has_broken(&self, conn: &mut PooledClient) -> bool {
        conn.stuck || conn.client.as_mut().is_none_or(|c| c.is_closed())
    }
}

/// A pooled client. Dropping a `postgres::Client` waits until every request it sent is
/// answered, so one whose health check failed (possibly with its query still in flight to
/// a hung server) is dropped on a helper thread instead of blocking the caller.
struct PooledClient {
    client: Option<postgres::Client>,
    stuck: bool,
}

impl PooledClient {
    fn client(&mut self) -> Result<&mut postgres::Client, StoreError> {
        self.client.as_mut().ok_or_else(|| {
            StoreError::Query("the pooled connection was already released".to_string())
        })
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        if self.stuck
            && let Some(client) = self.client.take()
        {
            discard(client);
        }
    }
}

/// Drops a client without waiting for it: `postgres::Client`'s own drop blocks until every
/// request in flight is answered, which is forever on a hung server. Use it for a client
/// whose `is_valid(timeout)` or other call timed out.
pub fn discard(client: postgres::Client) {
    let slot = Arc::new(Mutex::new(Some(client)));
    let for_thread = Arc::clone(&slot);
    let spawned = thread::Builder::new()
        .name("pg-discard".to_string())
        .spawn(move || {
            let client = for_thread.lock().ok().and_then(|mut c| c.take());
            drop(client);
        });
    if spawned.is_err() {
        // No thread to wait on: leak this one client rather than block the caller.
        if let Some(client) = slot.lock().ok().and_then(|mut c| c.take()) {
            std::mem::forget(client);
        }
    }
}

/// A pool-side driver error with its cause kept in the text (r2d2 keeps only the text).
#[derive(Debug)]
struct PoolError(String);

impl From<postgres::Error> for PoolError {
    fn from(e: postgres::Error) -> Self {
        PoolError(error_text(&e))
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
