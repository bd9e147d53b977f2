//! The PostgreSQL store and its migrations against a real server, one database per test.

use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::pgdb::{Proxy, TestDb};
use ws_assets::asset::{Asset, Point};
use ws_assets::store::migrate::{self, Applied, Migration};
use ws_assets::store::postgres::{self as pg, PostgresStore};
use ws_assets::store::{Store, StoreError, dsn};

const STARTUP: Duration = Duration::from_secs(10);

fn open(config: &postgres::Config, auto_apply: bool) -> Result<PostgresStore, StoreError> {
    PostgresStore::connect(&config.clone().into(), 2, STARTUP, auto_apply)
}

fn store(db: &TestDb) -> PostgresStore {
    open(&db.config(), true).unwrap_or_else(|e| panic!("connect: {e}"))
}

fn point(asset_id: i32, time: i64, value: f64) -> Point {
    Point {
        asset_id,
        time,
        value,
    }
}

/// Runs `f` on a thread and fails the test instead of hanging if it takes longer than `limit`.
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

fn expect_unavailable<T>(result: Result<T, StoreError>, what: &str) -> String {
    match result {
        Err(StoreError::Unavailable(why)) => why,
        Err(other) => panic!("{what}: expected Unavailable, got {other:?}"),
        Ok(_) => panic!("{what}: expected Unavailable, got Ok"),
    }
}

fn assets(pairs: &[(i32, &str)]) -> Vec<Asset> {
    pairs
        .iter()
        .map(|&(id, name)| Asset {
            id,
            name: name.to_string(),
        })
        .collect()
}

#[test]
fn migrations_are_applied_once_and_connecting_again_changes_nothing() {
    let db = TestDb::create();
    let first = store(&db);
    assert_eq!(first.kind().label(), "postgresql");
    drop(first);
    let second = store(&db);

    let mut client = db.client();
    let rows = client
        .query(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let recorded: Vec<(i32, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected: Vec<(i32, String, String)> = migrate::MIGRATIONS
        .iter()
        .map(|m| (m.version, m.name.to_string(), m.checksum()))
        .collect();
    assert_eq!(recorded, expected);

    let loaded = second.load_assets().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded,
        assets(&[
            (1, "EURUSD"),
            (2, "USDJPY"),
            (3, "GBPUSD"),
            (4, "AUDUSD"),
            (5, "USDCAD")
        ])
    );
}

#[test]
fn a_changed_applied_migration_is_refused_naming_the_file() {
    let db = TestDb::create();
    drop(store(&db));
    db.client()
        .execute(
            "UPDATE schema_migrations SET checksum = '0123456789abcdef' WHERE version = 1",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));

    for auto_apply in [true, false] {
        match open(&db.config(), auto_apply) {
            Err(StoreError::Migration(why)) => {
                assert!(why.contains("sql/0001_init.sql"), "{why}");
                assert!(why.contains("0123456789abcdef"), "{why}");
            }
            Err(other) => panic!("auto_apply={auto_apply}: expected Migration, got {other:?}"),
            Ok(_) => panic!("auto_apply={auto_apply}: a changed migration was accepted"),
        }
    }
}

#[test]
fn auto_apply_off_on_an_empty_database_reports_the_pending_migrations() {
    let db = TestDb::create();
    let err = match open(&db.config(), false) {
        Err(e) => e,
        Ok(_) => panic!("an empty database passed the schema check"),
    };
    match &err {
        StoreError::SchemaBehind(why) => assert!(why.contains("sql/0001_init.sql"), "{why}"),
        other => panic!("expected SchemaBehind, got {other:?}"),
    }
    assert!(err.to_string().contains("ws_assets migrate"), "{err}");
    assert!(
        !db.table_exists("assets"),
        "the check must not create tables"
    );
    assert!(!db.table_exists("schema_migrations"));
}

#[test]
fn migrate_entry_point_applies_then_has_nothing_to_do() {
    let db = TestDb::create();
    let applied = pg::migrate(&db.config().into(), STARTUP).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        applied,
        vec![Applied {
            version: 1,
            name: "0001_init"
        }]
    );
    let again = pg::migrate(&db.config().into(), STARTUP).unwrap_or_else(|e| panic!("{e}"));
    assert!(again.is_empty(), "{again:?}");
    let checked = open(&db.config(), false).map(|_| ());
    assert_eq!(checked, Ok(()));
}

#[test]
fn two_concurrent_applies_both_succeed_and_record_each_migration_once() {
    let db = Arc::new(TestDb::create());
    let barrier = Arc::new(Barrier::new(2));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let mut client = db.client();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                migrate::apply(&mut client)
            })
        })
        .collect();
    let mut applied = Vec::new();
    for worker in workers {
        match worker.join() {
            Ok(Ok(list)) => applied.extend(list),
            Ok(Err(e)) => panic!("a concurrent apply failed: {e}"),
            Err(_) => panic!("a concurrent apply panicked"),
        }
    }
    assert_eq!(
        applied,
        vec![Applied {
            version: 1,
            name: "0001_init"
        }]
    );
    assert_eq!(db.scalar("SELECT count(*) FROM schema_migrations"), 1);
    assert_eq!(db.scalar("SELECT count(*) FROM assets"), 5);
}

#[test]
fn migrations_apply_in_order_and_a_failing_one_leaves_nothing_behind() {
    const ONE: Migration = Migration {
        version: 1,
        name: "0001_table",
        sql: "CREATE TABLE t (n integer NOT NULL);",
    };
    const TWO: Migration = Migration {
        version: 2,
        name: "0002_rows",
        sql: "INSERT INTO t VALUES (1), (2);",
    };
    const BROKEN: Migration = Migration {
        version: 3,
        name: "0003_broken",
        sql: "CREATE TABLE u (n integer); INSERT INTO t VALUES (1 / 0);",
    };
    const FIXED: Migration = Migration {
        version: 3,
        name: "0003_fixed",
        sql: "CREATE TABLE u (n integer); INSERT INTO t VALUES (3);",
    };
    let db = TestDb::create();
    let mut client = db.client();

    match migrate::apply_set(&mut client, &[ONE, TWO, BROKEN]) {
        Err(StoreError::Migration(why)) => {
            assert!(why.contains("sql/0003_broken.sql"), "{why}");
            assert!(why.contains("division by zero"), "{why}");
        }
        other => panic!("expected a Migration error, got {other:?}"),
    }
    assert_eq!(db.scalar("SELECT count(*) FROM schema_migrations"), 2);
    assert_eq!(db.scalar("SELECT count(*) FROM t"), 2);
    assert!(
        !db.table_exists("u"),
        "the failed migration was not rolled back"
    );

    match migrate::check_set(&mut client, &[ONE, TWO, FIXED]) {
        Err(StoreError::SchemaBehind(why)) => {
            assert!(why.contains("sql/0003_fixed.sql"), "{why}");
            assert!(!why.contains("0002"), "{why}");
        }
        other => panic!("expected SchemaBehind, got {other:?}"),
    }
    let applied =
        migrate::apply_set(&mut client, &[ONE, TWO, FIXED]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        applied,
        vec![Applied {
            version: 3,
            name: "0003_fixed"
        }]
    );
    assert_eq!(db.scalar("SELECT sum(n) FROM t"), 6);
    assert_eq!(migrate::check_set(&mut client, &[ONE, TWO, FIXED]), Ok(()));
}

#[test]
fn points_round_trip_in_asset_then_time_order_and_duplicates_are_ignored() {
    let db = TestDb::create();
    let s = store(&db);
    let t0 = 1_700_000_000;
    s.write_points(&[
        point(2, t0 + 1, 150.25),
        point(1, t0 + 2, 1.0852),
        point(1, t0, 1.085),
        point(2, t0, 150.0),
        point(1, t0 - 100, 1.07), // before `since`: stored, not loaded below
        point(1, t0, 9.9),        // same (asset, time) in the same batch: ignored
        point(99, t0, 1.0),       // no such asset: skipped, the rest is written
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    s.write_points(&[point(1, t0 + 2, 7.7), point(3, t0 + 3, 1.27)])
        .unwrap_or_else(|e| panic!("{e}"));
    s.write_points(&[]).unwrap_or_else(|e| panic!("{e}"));

    let loaded = s.load_points_since(t0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded,
        vec![
            point(1, t0, 1.085),
            point(1, t0 + 2, 1.0852),
            point(2, t0, 150.0),
            point(2, t0 + 1, 150.25),
            point(3, t0 + 3, 1.27),
        ]
    );
    assert_eq!(db.scalar("SELECT count(*) FROM points"), 6);
    assert_eq!(
        s.load_points_since(t0 + 4).map(|p| p.len()),
        Ok(0),
        "nothing after the last point"
    );
}

#[test]
fn an_asset_added_with_sql_is_loaded_in_id_order() {
    let db = TestDb::create();
    let s = store(&db);
    db.client()
        .batch_execute("INSERT INTO assets (id, name) VALUES (7, 'EURGBP'), (6, 'USDCHF')")
        .unwrap_or_else(|e| panic!("{e}"));
    let loaded = s.load_assets().unwrap_or_else(|e| panic!("{e}"));
    let tail: Vec<Asset> = loaded.into_iter().skip(5).collect();
    assert_eq!(tail, assets(&[(6, "USDCHF"), (7, "EURGBP")]));
}

#[test]
fn retention_deletes_only_old_rows_oldest_first_and_at_most_the_limit() {
    let db = TestDb::create();
    let s = store(&db);
    let cutoff: i64 = 1_700_000_000;
    let mut batch: Vec<Point> = (1..=10)
        .map(|i: i32| point(1 + i % 3, cutoff - i64::from(i), 1.0))
        .collect();
    batch.extend((0..3).map(|i| point(4, cutoff + i, 2.0)));
    s.write_points(&batch).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(s.delete_points_before(cutoff, 0), Ok(0));
    assert_eq!(s.delete_points_before(cutoff, 4), Ok(4));
    assert_eq!(
        db.scalar("SELECT count(*) FROM points WHERE time < to_timestamp(1700000000 - 6)"),
        0,
        "the oldest rows go first"
    );
    assert_eq!(s.delete_points_before(cutoff, 4), Ok(4));
    assert_eq!(s.delete_points_before(cutoff, 4), Ok(2));
    assert_eq!(s.delete_points_before(cutoff, 4), Ok(0));
    let left = s.load_points_since(0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        left,
        vec![
            point(4, cutoff, 2.0),
            point(4, cutoff + 1, 2.0),
            point(4, cutoff + 2, 2.0)
        ]
    );
}

#[test]
fn a_query_the_database_rejects_is_a_query_error_not_an_outage() {
    let db = TestDb::create();
    let s = store(&db);
    db.client()
        .batch_execute("DROP TABLE points")
        .unwrap_or_else(|e| panic!("{e}"));
    match s.write_points(&[point(1, 1, 1.0)]) {
        Err(StoreError::Query(why)) => assert!(why.contains("points"), "{why}"),
        other => panic!("expected a Query error, got {other:?}"),
    }
}

#[test]
fn an_unreachable_port_fails_within_the_startup_timeout_without_the_password() {
    let config = dsn::parse("postgresql+asyncpg://ws:s3cr3t-pw@127.0.0.1:1/quotes")
        .unwrap_or_else(|e| panic!("{e}"));
    let timeout = Duration::from_millis(1500);
    let started = Instant::now();
    let result = within(Duration::from_secs(30), "connect", move || {
        PostgresStore::connect(&config.into(), 2, timeout, true).map(|_| ())
    });
    let elapsed = started.elapsed();
    let why = expect_unavailable(result, "connect to 127.0.0.1:1");
    assert!(why.contains("127.0.0.1:1/"), "{why}");
    assert!(!why.contains("s3cr3t-pw"), "{why}");
    assert!(
        why.contains("last error: error connecting to server"),
        "{why}"
    );
    assert!(
        elapsed >= Duration::from_millis(1200),
        "gave up after {elapsed:?}, before the start-up timeout"
    );
    assert!(
        elapsed < timeout + Duration::from_secs(5),
        "took {elapsed:?} for a {timeout:?} start-up timeout"
    );

    let config =
        dsn::parse("postgres://ws:s3cr3t-pw@127.0.0.1:1/quotes").unwrap_or_else(|e| panic!("{e}"));
    let why = expect_unavailable(
        pg::migrate(&config.into(), Duration::from_millis(300)),
        "migrate against 127.0.0.1:1",
    );
    assert!(
        why.contains("127.0.0.1:1/") && !why.contains("s3cr3t-pw"),
        "{why}"
    );
}

#[test]
fn a_database_the_server_does_not_have_fails_at_once_instead_of_retrying() {
    let db = TestDb::create();
    let mut config = db.config();
    config.dbname("ws_assets_no_such_database");
    let started = Instant::now();
    let result = within(Duration::from_secs(60), "connect", move || {
        PostgresStore::connect(&config.into(), 1, Duration::from_secs(30), true).map(|_| ())
    });
    match result {
        Err(StoreError::Query(why)) => {
            assert!(why.contains("ws_assets_no_such_database"), "{why}")
        }
        other => panic!("expected a Query error, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "retried a permanent error for {:?}",
        started.elapsed()
    );
}

#[test]
fn startup_waits_for_a_database_that_comes_back() {
    let db = TestDb::create();
    let proxy = Arc::new(Proxy::start(db.server_addr()));
    proxy.cut();
    let config = db.config_via(&proxy);
    let reopener = {
        let proxy = Arc::clone(&proxy);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(1200));
            proxy.restore();
        })
    };
    let result = within(Duration::from_secs(60), "connect", move || {
        PostgresStore::connect(&config.into(), 1, Duration::from_secs(20), true).map(|_| ())
    });
    let _ = reopener.join();
    assert_eq!(result, Ok(()));
    assert_eq!(db.scalar("SELECT count(*) FROM schema_migrations"), 1);
}

#[test]
fn startup_against_a_hung_server_gives_up_in_time() {
    let db = TestDb::create();
    let proxy = Proxy::start(db.server_addr());
    proxy.blackhole();
    let config = db.config_via(&proxy);
    let port = proxy.addr().port();
    let result = within(Duration::from_secs(30), "connect", move || {
        PostgresStore::connect(&config.into(), 1, Duration::from_millis(1500), true).map(|_| ())
    });
    let why = expect_unavailable(result, "connect to a hung server");
    assert!(why.contains(&format!("127.0.0.1:{port}/")), "{why}");
}

#[test]
fn a_write_during_an_outage_is_unavailable_and_works_again_after_it() {
    let db = TestDb::create();
    drop(store(&db));
    let proxy = Proxy::start(db.server_addr());
    let s = Arc::new(open(&db.config_via(&proxy), false).unwrap_or_else(|e| panic!("{e}")));
    s.write_points(&[point(1, 100, 1.5)])
        .unwrap_or_else(|e| panic!("{e}"));

    proxy.cut();
    let during = Arc::clone(&s);
    let result = within(
        Duration::from_secs(30),
        "write during the outage",
        move || during.write_points(&[point(1, 101, 1.6)]),
    );
    let why = expect_unavailable(result, "write during the outage");
    assert!(
        why.contains(&format!("127.0.0.1:{}", proxy.addr().port())),
        "{why}"
    );
    let during = Arc::clone(&s);
    expect_unavailable(
        within(
            Duration::from_secs(30),
            "load during the outage",
            move || during.load_assets(),
        ),
        "load during the outage",
    );

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match s.write_points(&[point(1, 101, 1.6)]) {
            Ok(()) => break,
            Err(StoreError::Unavailable(why)) if Instant::now() < deadline => {
                eprintln!("still unavailable: {why}");
                thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    }
    assert_eq!(
        s.load_points_since(0),
        Ok(vec![point(1, 100, 1.5), point(1, 101, 1.6)])
    );
}

#[test]
fn a_write_to_a_hung_server_is_unavailable_instead_of_blocking() {
    let db = TestDb::create();
    drop(store(&db));
    let proxy = Proxy::start(db.server_addr());
    let s = Arc::new(open(&db.config_via(&proxy), false).unwrap_or_else(|e| panic!("{e}")));
    s.write_points(&[point(2, 100, 150.0)])
        .unwrap_or_else(|e| panic!("{e}"));

    // The pooled connection stays open but nothing comes back: only the bounded
    // checkout health check keeps this from waiting forever.
    proxy.blackhole();
    let during = Arc::clone(&s);
    expect_unavailable(
        within(
            Duration::from_secs(30),
            "write to a hung server",
            move || during.write_points(&[point(2, 101, 150.5)]),
        ),
        "write to a hung server",
    );

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = s.write_points(&[point(2, 101, 150.5)]) {
        assert!(
            Instant::now() < deadline,
            "the store did not recover after the hang: {e}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(db.scalar("SELECT count(*) FROM points"), 2);
}

#[test]
fn a_session_of_a_hung_server_can_be_dropped_without_blocking() {
    let db = TestDb::create();
    let proxy = Proxy::start(db.server_addr());
    let mut session = pg::connect_session(&db.config_via(&proxy).into(), STARTUP)
        .unwrap_or_else(|e| panic!("{e}"));
    proxy.blackhole();
    assert!(
        session.check(Duration::from_millis(300)).is_err(),
        "a hung server must fail the bounded check"
    );
    assert!(session.is_lost());
    // A plain drop of the client would wait for the answer to the check's query, i.e.
    // forever.
    within(Duration::from_secs(10), "drop", move || drop(session));
    proxy.restore();
}

#[test]
fn a_call_that_outlives_its_deadline_is_unavailable_at_once_and_the_session_is_lost() {
    let db = TestDb::create();
    let proxy = Proxy::start(db.server_addr());
    let mut session = pg::connect_session(&db.config_via(&proxy).into(), STARTUP)
        .unwrap_or_else(|e| panic!("{e}"));
    proxy.blackhole();
    let started = Instant::now();
    let result = within(
        Duration::from_secs(10),
        "a call to a hung server",
        move || {
            let result = session.run(Duration::from_millis(500), "the test query", |client| {
                client
                    .simple_query("SELECT 1")
                    .map(drop)
                    .map_err(|e| StoreError::Query(e.to_string()))
            });
            (result, session.is_lost())
        },
    );
    let took = started.elapsed();
    let (result, lost) = result;
    let why = expect_unavailable(result, "a call to a hung server");
    assert!(
        why.contains("did not answer the test query within 0.5 s"),
        "{why}"
    );
    assert!(lost, "the session must be given up after a missed deadline");
    assert!(took < Duration::from_secs(3), "returned after {took:?}");
    proxy.restore();
}

#[test]
fn a_slow_statement_is_cancelled_on_the_server_when_its_deadline_passes() {
    let db = TestDb::create();
    let mut session =
        pg::connect_session(&db.config().into(), STARTUP).unwrap_or_else(|e| panic!("{e}"));
    let result = session.run(Duration::from_millis(500), "the sleep", |client| {
        client
            .batch_execute("SELECT pg_sleep(60)")
            .map_err(|e| StoreError::Query(e.to_string()))
    });
    expect_unavailable(result, "a statement past its deadline");
    // The cancel request reaches the server: the backend stops sleeping.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sleeping = db.scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE query = 'SELECT pg_sleep(60)' AND state = 'active' \
             AND datname = current_database()",
        );
        if sleeping == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the statement was not cancelled");
        thread::sleep(Duration::from_millis(100));
    }
}

/// With many idle connections to a server that hangs, a call gives up after one checkout
/// deadline, not one check timeout per idle connection.
#[test]
fn a_hung_server_is_noticed_within_one_checkout_deadline_however_many_connections_are_idle() {
    let db = TestDb::create();
    drop(store(&db));
    let proxy = Proxy::start(db.server_addr());
    let s = Arc::new(
        PostgresStore::connect(&db.config_via(&proxy).into(), 10, STARTUP, false)
            .unwrap_or_else(|e| panic!("{e}")),
    );
    // Ten writes held up by a table lock each hold a connection; once the lock goes, ten
    // idle connections are left behind.
    let mut locker = db.client();
    let mut lock = locker.transaction().unwrap_or_else(|e| panic!("{e}"));
    lock.batch_execute("LOCK TABLE points IN EXCLUSIVE MODE")
        .unwrap_or_else(|e| panic!("{e}"));
    let writers: Vec<_> = (0..10)
        .map(|i| {
            let s = Arc::clone(&s);
            thread::spawn(move || s.write_points(&[point(1, 1000 + i, 1.0)]))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
         WHERE NOT l.granted AND d.datname = current_database()",
    ) < 10
    {
        assert!(
            Instant::now() < deadline,
            "the writes never queued on the lock"
        );
        thread::sleep(Duration::from_millis(50));
    }
    lock.commit().unwrap_or_else(|e| panic!("{e}"));
    for writer in writers {
        let written = writer
            .join()
            .unwrap_or_else(|_| panic!("a writer panicked"));
        written.unwrap_or_else(|e| panic!("{e}"));
    }
    let idle = s.idle_connections();
    assert_eq!(idle, 10, "idle connections");

    proxy.blackhole();
    let during = Arc::clone(&s);
    let started = Instant::now();
    let result = within(
        Duration::from_secs(60),
        "write to a hung server",
        move || during.write_points(&[point(1, 2000, 1.0)]),
    );
    let took = started.elapsed();
    expect_unavailable(result, "write to a hung server");
    assert!(
        took <= pg::CHECKOUT_TIMEOUT + Duration::from_secs(1),
        "a hung server with {idle} idle connections took {took:?} to notice"
    );
    proxy.restore();
}

/// Pooled connections are opened with the service's `statement_timeout` in their options
/// (no `SET` after connecting), beside whatever the DSN's own `options` say. What a pooled
/// session runs with is read through the store itself: `assets` becomes a view whose
/// names are the session's settings.
#[test]
fn pooled_connections_carry_the_statement_timeout_and_keep_the_dsns_own_options() {
    let db = TestDb::create();
    drop(store(&db));
    db.execute(
        "ALTER TABLE assets RENAME TO asset_rows; \
         CREATE VIEW assets AS SELECT id, \
         current_setting('statement_timeout') || ' ' || current_setting('lock_timeout') AS name \
         FROM asset_rows",
    );
    let session_settings = |options: Option<&str>| {
        let mut config = db.config();
        if let Some(options) = options {
            config.options(options);
        }
        let s = open(&config, false).unwrap_or_else(|e| panic!("{e}"));
        let assets = s.load_assets().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(assets.len(), 5);
        assets[0].name.clone()
    };
    assert_eq!(
        pg::STATEMENT_TIMEOUT,
        Duration::from_secs(30),
        "the figure below"
    );
    assert_eq!(session_settings(None), "30s 0");
    // The DSN's own options are kept ...
    assert_eq!(session_settings(Some("-c lock_timeout=1234")), "30s 1234ms");
    // ... and a statement_timeout among them is the one in force.
    assert_eq!(
        session_settings(Some("-c statement_timeout=4321 -c lock_timeout=5s")),
        "4321ms 5s"
    );
}

/// The timeout in the options is the server's to enforce: a statement over it is cancelled
/// by the server (SQLSTATE 57014), on a plain client without any deadline of its own, and
/// on the store's pooled connections, well before the store's own deadline.
#[test]
fn a_statement_over_the_statement_timeout_is_cancelled_by_the_server() {
    let db = TestDb::create();
    let config = dsn::with_statement_timeout(&db.config(), Duration::from_millis(200));
    let mut client = dsn::with_service_defaults(&config)
        .connect(postgres::NoTls)
        .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let error = match client.batch_execute("SELECT pg_sleep(30)") {
        Err(error) => error,
        Ok(()) => panic!("a 30 s sleep finished under a 200 ms statement_timeout"),
    };
    assert_eq!(
        error.code(),
        Some(&postgres::error::SqlState::QUERY_CANCELED),
        "{error}"
    );
    assert!(
        dsn::error_text(&error).contains("canceling statement due to statement timeout"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    // A pooled write held up by a lock, with a timeout the DSN sets: the server cancels
    // it after 300 ms, long before the store's own 5 s deadline would give up on it.
    drop(store(&db));
    let mut config = db.config();
    config.options("-c statement_timeout=300");
    let s = open(&config, false).unwrap_or_else(|e| panic!("{e}"));
    let mut locker = db.client();
    let mut lock = locker.transaction().unwrap_or_else(|e| panic!("{e}"));
    lock.batch_execute("LOCK TABLE points IN EXCLUSIVE MODE")
        .unwrap_or_else(|e| panic!("{e}"));
    let why = expect_unavailable(s.write_points(&[point(1, 1, 1.0)]), "a write under a lock");
    assert!(
        why.contains("canceling statement due to statement timeout"),
        "{why}"
    );
    drop(lock);
    s.write_points(&[point(1, 1, 1.0)])
        .unwrap_or_else(|e| panic!("{e}"));
}
