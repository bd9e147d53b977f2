//! The real server binary on the real PostgreSQL, one throwaway database per test:
//! migrations at start-up and by `ws_assets migrate`, points persisted every second,
//! history across a restart, assets from the database; an outage mid-run, `/health`
//! during it, and the write queue's bound; an unreachable database at start-up;
//! retention (and 0 keeping everything); the final flush on SIGTERM and its 5 s cap.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::{Server, assert_seconds_follow, epoch_now, run_to_exit, time_of, wait_until};
use crate::pgdb::{Proxy, TestDb};
use serde_json::Value;
use ws_assets::store::migrate::MIGRATIONS;

/// Bound on a run expected to end by itself (a refused start-up, `migrate`).
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// Bound on a clean exit after SIGTERM (the server itself waits at most 5 s).
const EXIT_LIMIT: Duration = Duration::from_secs(15);
/// Bound on anything the server should do within a few seconds.
const SOON: Duration = Duration::from_secs(20);
const ASSET_IDS: [i32; 5] = [1, 2, 3, 4, 5];

fn dsn_var(dsn: &str) -> (&'static str, &str) {
    ("WS_ASSETS_POSTGRESQL_DSN", dsn)
}

const NO_BACKFILL: (&str, &str) = ("WS_ASSETS_SIMULATED_BACKFILL", "false");

fn schema_migrations(db: &TestDb) -> Vec<(i32, String, String, String)> {
    let sql = "SELECT version, name, checksum, applied_at::text FROM schema_migrations \
               ORDER BY version";
    db.client()
        .query(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect()
}

fn migrate_with_the_binary(db: &TestDb) {
    let dsn = db.dsn();
    let run = run_to_exit(&["migrate"], &[dsn_var(&dsn)], RUN_LIMIT);
    assert_eq!(run.code, Some(0), "migrate failed:\n{}", run.stderr);
}

/// `(time, value)` of a point message.
fn time_value(point: &Value) -> (i64, f64) {
    (
        time_of(point),
        point["value"].as_f64().expect("numeric value"),
    )
}

/// Waits until every asset has a stored point at each of `seconds` (the seconds a
/// client got points for); returns the stored times per asset.
fn wait_stored(db: &TestDb, seconds: &[i64]) -> BTreeMap<i32, Vec<i64>> {
    wait_until(SOON, &format!("points of {seconds:?} stored"), || {
        let times = db.stored_times();
        for id in ASSET_IDS {
            let have = times.get(&id).map(Vec::as_slice).unwrap_or_default();
            if let Some(missing) = seconds.iter().find(|s| !have.contains(s)) {
                return Err(format!("asset {id}: no point at {missing}"));
            }
        }
        Ok(times)
    })
}

/// Fails unless every asset's stored times from the first of `seconds` to its last are
/// exactly `seconds`: each point a client got is stored for every asset, and nothing else.
fn assert_stored_exactly(stored: &BTreeMap<i32, Vec<i64>>, seconds: &[i64]) {
    let (Some(first), Some(last)) = (seconds.first(), seconds.last()) else {
        return;
    };
    for id in ASSET_IDS {
        let run: Vec<i64> = stored
            .get(&id)
            .map(|t| {
                t.iter()
                    .copied()
                    .filter(|t| t >= first && t <= last)
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(run, seconds, "stored times of asset {id}");
    }
}

fn stop(server: &mut Server) {
    server.terminate();
    let code = server.wait_exit(EXIT_LIMIT);
    assert_eq!(code, Some(0), "exit after SIGTERM; log:\n{}", server.log());
}

#[test]
fn migrations_are_applied_at_start_up_once_and_a_restart_changes_nothing() {
    let db = TestDb::create();
    let dsn = db.dsn();
    let env = [dsn_var(&dsn), NO_BACKFILL];

    let mut first = Server::start(&env);
    for m in MIGRATIONS {
        assert!(
            first
                .log()
                .contains(&format!("applied migration {}", m.file())),
            "{}",
            first.log()
        );
    }
    let recorded = schema_migrations(&db);
    let expected: Vec<(i32, String, String)> = MIGRATIONS
        .iter()
        .map(|m| (m.version, m.name.to_string(), m.checksum()))
        .collect();
    let got: Vec<(i32, String, String)> = recorded
        .iter()
        .map(|(v, n, c, _)| (*v, n.clone(), c.clone()))
        .collect();
    assert_eq!(got, expected);
    stop(&mut first);

    let mut second = Server::start(&env);
    assert!(
        second.log().contains("is up to date"),
        "second start: {}",
        second.log()
    );
    assert!(
        !second.log().contains("applied migration"),
        "{}",
        second.log()
    );
    assert_eq!(
        schema_migrations(&db),
        recorded,
        "a restart must not touch the record"
    );
    let mut client = second.client();
    client.send_text(r#"{"action":"assets","message":{}}"#);
    let reply = client.recv_action("assets");
    assert_eq!(reply["message"]["assets"].as_array().map(Vec::len), Some(5));
    drop(client);
    stop(&mut second);
}

#[test]
fn a_tampered_migration_checksum_stops_start_up_naming_the_file() {
    let db = TestDb::create();
    migrate_with_the_binary(&db);
    db.execute("UPDATE schema_migrations SET checksum = 'feedfacefeedface' WHERE version = 1");
    let dsn = db.dsn();

    for auto_apply in ["true", "false"] {
        let run = run_to_exit(
            &[],
            &[
                dsn_var(&dsn),
                ("WS_ASSETS_AUTO_APPLY_MIGRATIONS", auto_apply),
            ],
            RUN_LIMIT,
        );
        assert_ne!(run.code, Some(0), "auto-apply {auto_apply}: started");
        assert!(
            run.code.is_some(),
            "auto-apply {auto_apply}: killed by a signal"
        );
        assert!(run.stderr.contains("sql/0001_init.sql"), "{}", run.stderr);
        assert!(run.stderr.contains("feedfacefeedface"), "{}", run.stderr);
        assert!(!run.stderr.contains("listening on"), "{}", run.stderr);
    }

    let run = run_to_exit(&["migrate"], &[dsn_var(&dsn)], RUN_LIMIT);
    assert_ne!(run.code, Some(0), "migrate accepted a changed migration");
    assert!(run.stderr.contains("sql/0001_init.sql"), "{}", run.stderr);
    assert_eq!(
        db.scalar("SELECT count(*) FROM schema_migrations WHERE checksum = 'feedfacefeedface'"),
        1,
        "the record is left as it was"
    );
}

#[test]
fn the_migrate_command_applies_then_reports_up_to_date() {
    let db = TestDb::create();
    let dsn = db.dsn();

    let first = run_to_exit(&["migrate"], &[dsn_var(&dsn)], RUN_LIMIT);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    for m in MIGRATIONS {
        assert!(first.stdout.contains(m.name), "stdout: {}", first.stdout);
    }
    assert!(!first.stdout.contains("up to date"), "{}", first.stdout);
    assert_eq!(
        db.scalar("SELECT count(*) FROM schema_migrations"),
        MIGRATIONS.len() as i64
    );
    assert_eq!(db.scalar("SELECT count(*) FROM assets"), 5);

    let second = run_to_exit(&["migrate"], &[dsn_var(&dsn)], RUN_LIMIT);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert!(second.stdout.contains("up to date"), "{}", second.stdout);
    assert_eq!(
        db.scalar("SELECT count(*) FROM schema_migrations"),
        MIGRATIONS.len() as i64
    );
}

#[test]
fn without_auto_apply_an_unmigrated_database_stops_start_up_until_migrate_is_run() {
    let db = TestDb::create();
    let dsn = db.dsn();
    let env = [
        dsn_var(&dsn),
        ("WS_ASSETS_AUTO_APPLY_MIGRATIONS", "false"),
        NO_BACKFILL,
    ];

    let refused = run_to_exit(&[], &env, RUN_LIMIT);
    assert_ne!(refused.code, Some(0), "started on an unmigrated database");
    assert!(refused.code.is_some(), "killed by a signal");
    assert!(
        refused.stderr.contains("run `ws_assets migrate`"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("sql/0001_init.sql"),
        "{}",
        refused.stderr
    );
    assert!(!db.table_exists("schema_migrations"), "nothing applied");
    assert!(!db.table_exists("points"), "nothing applied");

    migrate_with_the_binary(&db);
    let mut server = Server::start(&env);
    assert!(
        !server.log().contains("applied migration"),
        "{}",
        server.log()
    );
    stop(&mut server);
}

#[test]
fn every_second_one_point_per_asset_is_stored() {
    let db = TestDb::create();
    let dsn = db.dsn();
    let mut server = Server::start(&[dsn_var(&dsn), NO_BACKFILL]);
    let mut client = server.client();
    let mut seen: Vec<Value> = client.subscribe_history(1);
    let mut counts = Vec::new();
    for _ in 0..5 {
        let point = client.recv_point();
        let time = time_of(&point);
        seen.push(point);
        // Once point `time` is stored, asset 1 has one row per second since the first tick.
        let rows = wait_until(SOON, &format!("point {time} stored"), || {
            let rows = db.stored(1);
            match rows.last() {
                Some(&(last, _)) if last >= time => Ok(rows),
                other => Err(format!("last stored {other:?}")),
            }
        });
        counts.push(rows.iter().filter(|(t, _)| *t <= time).count());
    }
    let times: Vec<i64> = seen.iter().map(time_of).collect();
    assert_seconds_follow(
        &times,
        server.ticks_without_point(),
        "points the client got",
    );
    for pair in counts.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "rows per point: {counts:?}");
    }

    let first = times[0];
    let last = *times.last().expect("points");
    let all = wait_stored(&db, &times);
    for id in ASSET_IDS {
        assert_eq!(
            all[&id].first(),
            Some(&first),
            "asset {id} starts with the first tick"
        );
    }
    assert_stored_exactly(&all, &times);
    let rows: Vec<(i64, f64)> = db
        .stored(1)
        .into_iter()
        .filter(|(t, _)| *t <= last)
        .collect();
    let sent: Vec<(i64, f64)> = seen.iter().map(time_value).collect();
    assert_eq!(rows, sent, "stored rows are the points clients got");
    drop(client);
    stop(&mut server);
}

#[test]
fn a_restart_serves_the_stored_history_with_an_exact_seam_and_no_backfill() {
    let db = TestDb::create();
    let dsn = db.dsn();
    let env = [dsn_var(&dsn)];

    let mut first = Server::start(&env);
    assert!(
        first.log().contains("history backfilled"),
        "an empty store is backfilled: {}",
        first.log()
    );
    let mut client = first.client();
    let mut seen = client.subscribe_history(1);
    assert!(!seen.is_empty(), "backfilled history");
    for _ in 0..3 {
        seen.push(client.recv_point());
    }
    drop(client);
    let last_seen = time_of(seen.last().expect("points"));
    wait_until(SOON, "the last point seen stored", || {
        match db.stored(1).last() {
            Some(&(t, _)) if t >= last_seen => Ok(()),
            other => Err(format!("last stored {other:?}")),
        }
    });
    stop(&mut first);

    let before = db.stored(1);
    for point in &seen {
        let (time, value) = time_value(point);
        assert!(
            before.contains(&(time, value)),
            "point {time} = {value} the client got is not stored as sent"
        );
    }
    let last_before = before.last().expect("stored points").0;
    // Start again only once at least one second had no server: a backfill would fill it.
    wait_until(SOON, "two seconds past the last stored point", || {
        if epoch_now() >= last_before + 3 {
            Ok(())
        } else {
            Err(format!("now {}", epoch_now()))
        }
    });
    let launched = epoch_now();

    let mut second = Server::start(&env);
    assert!(
        second.log().contains("points of history loaded"),
        "{}",
        second.log()
    );
    assert!(!second.log().contains("backfilled"), "{}", second.log());

    // A first client sees a tick of the new process; the second one subscribes after it.
    let mut a = second.client();
    let _ = a.subscribe_history(1);
    let new_tick = time_of(&a.recv_point());
    assert!(
        new_tick > launched,
        "tick {new_tick} before the launch at {launched}"
    );
    let mut b = second.client();
    let history = b.subscribe_history(1);
    let first_live = b.recv_point();
    let history_tv: Vec<(i64, f64)> = history.iter().map(time_value).collect();
    let history_last = history_tv.last().expect("history").0;
    assert!(history_last >= new_tick);
    assert_seconds_follow(
        &[history_last, time_of(&first_live)],
        second.ticks_without_point(),
        "the first live point follows the history's last",
    );
    let history_times: Vec<i64> = history_tv.iter().map(|(t, _)| *t).collect();
    assert!(
        history_times.windows(2).all(|w| w[0] < w[1]),
        "history in strictly increasing time"
    );

    // The history is exactly what is stored over its span, the pre-restart points included.
    wait_until(SOON, "the history's last point stored", || {
        match db.stored(1).last() {
            Some(&(t, _)) if t >= history_last => Ok(()),
            other => Err(format!("last stored {other:?}")),
        }
    });
    let after = db.stored(1);
    let span: Vec<(i64, f64)> = after
        .iter()
        .copied()
        .filter(|(t, _)| *t >= history_tv[0].0 && *t <= history_last)
        .collect();
    assert_eq!(history_tv, span, "history differs from the stored points");
    let kept: Vec<&(i64, f64)> = before
        .iter()
        .filter(|(t, _)| *t >= history_tv[0].0)
        .collect();
    assert!(
        kept.len() > 1000,
        "most of the pre-restart window is served"
    );
    for point in kept {
        assert!(history_tv.contains(point), "pre-restart {point:?} missing");
    }
    assert!(history_times.contains(&last_before));

    // Nothing was invented for the seconds the server was away.
    let invented: Vec<i64> = after
        .iter()
        .map(|(t, _)| *t)
        .filter(|&t| t > last_before && t <= launched)
        .collect();
    assert!(
        invented.is_empty(),
        "backfilled after a restart: {invented:?}"
    );
    drop(a);
    drop(b);
    stop(&mut second);
}

#[test]
fn an_asset_added_in_the_database_is_served_and_walked_after_a_restart() {
    let db = TestDb::create();
    let dsn = db.dsn();
    let env = [dsn_var(&dsn), NO_BACKFILL];
    let assets_request = r#"{"action":"assets","message":{}}"#;

    let mut first = Server::start(&env);
    let mut client = first.client();
    client.send_text(assets_request);
    let before = client.recv_action("assets")["message"]["assets"].clone();
    assert_eq!(before.as_array().map(Vec::len), Some(5));
    drop(client);
    stop(&mut first);

    db.execute("INSERT INTO assets (id, name) VALUES (6, 'EURGBP')");
    let mut second = Server::start(&env);
    let mut client = second.client();
    client.send_text(assets_request);
    let after = client.recv_action("assets")["message"]["assets"].clone();
    let listed: Vec<(i64, String)> = after
        .as_array()
        .expect("assets array")
        .iter()
        .map(|a| {
            (
                a["id"].as_i64().expect("id"),
                a["name"].as_str().expect("name").to_string(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 6, "{after}");
    assert_eq!(listed[5], (6, "EURGBP".to_string()), "{after}");
    assert!(listed.windows(2).all(|w| w[0].0 < w[1].0), "ordered by id");

    let _ = client.subscribe_history(6);
    let mut times = Vec::new();
    for _ in 0..2 {
        let point = client.recv_point();
        assert_eq!(point["assetId"], 6, "{point}");
        assert_eq!(point["assetName"], "EURGBP", "{point}");
        assert!(point["value"].as_f64().is_some_and(|v| v > 0.0), "{point}");
        times.push(time_of(&point));
    }
    let last = times[1];
    wait_until(SOON, "the new asset's points stored", || {
        let rows = db.stored(6);
        let have: Vec<i64> = rows.iter().map(|(t, _)| *t).collect();
        if times.iter().all(|t| have.contains(t)) {
            Ok(())
        } else {
            Err(format!("stored {have:?}, want {times:?} (through {last})"))
        }
    });
    drop(client);
    stop(&mut second);
}

#[test]
fn a_database_outage_mid_run_loses_no_point_and_is_logged_once() {
    let db = TestDb::create();
    let proxy = Proxy::start(db.server_addr());
    let dsn = db.dsn_via(&proxy);
    let mut server = Server::start(&[dsn_var(&dsn), NO_BACKFILL]);
    let mut client = server.client();
    let mut seen = client.subscribe_history(1);
    seen.push(client.recv_point());
    let first = time_of(&seen[0]);
    wait_stored(&db, &seen.iter().map(time_of).collect::<Vec<_>>());

    // Cut for at least 5 s and until the store has failed; live points keep coming.
    proxy.cut();
    let cut_at = Instant::now();
    let mut during = Vec::new();
    while cut_at.elapsed() < Duration::from_secs(5) || !server.log().contains("store write failed")
    {
        assert!(
            cut_at.elapsed() < SOON,
            "no store failure logged during the outage:\n{}",
            server.log()
        );
        during.push(client.recv_point());
    }
    assert_eq!(
        server.metric("ws_assets_store_up"),
        Some(0.0),
        "the store is down during the outage"
    );
    proxy.restore();
    assert!(
        during.len() >= 3,
        "only {} live points during a {:?} outage",
        during.len(),
        cut_at.elapsed()
    );
    seen.extend(during);
    for _ in 0..2 {
        seen.push(client.recv_point());
    }
    let times: Vec<i64> = seen.iter().map(time_of).collect();
    assert_seconds_follow(
        &times,
        server.ticks_without_point(),
        "live points across the outage",
    );

    let last = *times.last().expect("points");
    let stored_all = wait_stored(&db, &times);
    for id in ASSET_IDS {
        assert_eq!(stored_all[&id].first(), Some(&first), "asset {id}");
    }
    assert_stored_exactly(&stored_all, &times);
    let rows: Vec<(i64, f64)> = db
        .stored(1)
        .into_iter()
        .filter(|(t, _)| *t <= last)
        .collect();
    let sent: Vec<(i64, f64)> = seen.iter().map(time_value).collect();
    assert_eq!(rows, sent, "stored rows are the points clients got");

    assert!(
        server.wait_for_log("store reachable again", SOON),
        "{}",
        server.log()
    );
    let failures = server.log_count("store write failed");
    assert!(
        (1..=2).contains(&failures),
        "{failures} failure lines for one outage:\n{}",
        server.log()
    );
    assert_eq!(server.log_count("store reachable again"), 1);
    assert_eq!(server.metric("ws_assets_points_dropped_total"), Some(0.0));
    assert!(server.metric("ws_assets_store_write_errors_total") >= Some(1.0));
    wait_until(SOON, "store_up again", || {
        match server.metric("ws_assets_store_up") {
            Some(1.0) => Ok(()),
            other => Err(format!("store_up {other:?}")),
        }
    });
    drop(client);
    stop(&mut server);
}

#[test]
fn health_is_503_while_the_database_is_failing_and_200_once_it_is_back() {
    let db = TestDb::create();
    let proxy = Proxy::start(db.server_addr());
    let dsn = db.dsn_via(&proxy);
    let mut server = Server::start(&[dsn_var(&dsn), NO_BACKFILL]);
    let mut client = server.client();
    client.subscribe_history(1);
    let first = time_of(&client.recv_point());
    wait_stored(&db, &[first]);
    let (status, health) = server.health();
    assert_eq!(status, 200, "{health}");

    proxy.cut();
    let health = wait_until(SOON, "/health 503 during the outage", || {
        match server.health() {
            (503, health) => Ok(health),
            (status, health) => Err(format!("{status} {health}")),
        }
    });
    assert_eq!(health["status"], "unavailable", "{health}");
    assert_eq!(health["store"]["up"], false, "{health}");
    assert!(
        health["problems"]
            .to_string()
            .contains("database unreachable"),
        "{health}"
    );
    // Live points keep coming all the while.
    client.recv_point();

    proxy.restore();
    let health = wait_until(SOON, "/health 200 after the outage", || {
        match server.health() {
            (200, health) => Ok(health),
            (status, health) => Err(format!("{status} {health}")),
        }
    });
    assert_eq!(health["store"]["up"], true, "{health}");
    drop(client);
    stop(&mut server);
}

/// Adds assets `6..=last` to a migrated database, so each tick has `last` points.
fn add_assets_through(db: &TestDb, last: i32) {
    db.execute(&format!(
        "INSERT INTO assets (id, name) SELECT n, 'SIM' || n FROM generate_series(6, {last}) n"
    ));
}

#[test]
fn past_the_write_queue_bound_the_oldest_points_are_dropped_logged_and_counted() {
    // The smallest bound (1000 points) takes 200 ticks to fill with 5 assets; with 500
    // it takes 2. The database is cut at the first INSERT of points, before it has seen
    // any: every tick from the first on waits in the queue, the earliest go first.
    const ASSETS: i32 = 500;
    let db = TestDb::create();
    migrate_with_the_binary(&db);
    add_assets_through(&db, ASSETS);
    let proxy = Proxy::start(db.server_addr());
    proxy.cut_when_sent("INSERT INTO points");
    // dsn_via asks for no TLS, so that the proxy sees the statement go by.
    let dsn = db.dsn_via(&proxy);
    let mut server = Server::start(&[
        dsn_var(&dsn),
        NO_BACKFILL,
        ("WS_ASSETS_WRITE_QUEUE_POINTS", "1000"),
        ("WS_ASSETS_HISTORY_SECONDS", "600"),
    ]);
    // Every tick, as the service recorded it: this client's history starts with the first.
    let mut client = server.client();
    let mut ticks: Vec<i64> = client.subscribe_history(1).iter().map(time_of).collect();

    let dropped = wait_until(SOON, "points dropped from the write queue", || match server
        .metric("ws_assets_points_dropped_total")
    {
        Some(n) if n > 0.0 => Ok(n),
        other => Err(format!("points_dropped_total {other:?}")),
    });
    assert!(
        server.wait_for_log("store write queue full: dropped the", SOON),
        "{}",
        server.log()
    );
    assert_eq!(db.scalar("SELECT count(*) FROM points"), 0, "the cut held");
    proxy.restore();

    // Once the queue has drained, a tick recorded after that is stored, and with it
    // everything before it that was kept: the count is final.
    wait_until(SOON, "the write queue drained", || {
        match server.metric("ws_assets_store_write_queue_points") {
            Some(n) if n < f64::from(ASSETS) => Ok(()),
            other => Err(format!("store_write_queue_points {other:?}")),
        }
    });
    let drained_at = epoch_now();
    let after = loop {
        let time = time_of(&client.recv_point());
        ticks.push(time);
        if time > drained_at {
            break time;
        }
    };
    let stored_at_after = format!("SELECT count(*) FROM points WHERE time = to_timestamp({after})");
    wait_until(SOON, &format!("tick {after} stored"), || {
        match db.scalar(&stored_at_after) {
            n if n == i64::from(ASSETS) => Ok(()),
            n => Err(format!("{n} points")),
        }
    });
    let dropped_total = server.metric_value("ws_assets_points_dropped_total");
    assert!(dropped_total >= dropped);

    // Every tick is stored whole or not at all, and the ones missing are the first ones.
    let stored = db.stored_times();
    let kept: Vec<i64> = stored[&1].iter().copied().filter(|&t| t <= after).collect();
    for id in 2..=ASSETS {
        let times: Vec<i64> = stored
            .get(&id)
            .map(|t| t.iter().copied().filter(|&t| t <= after).collect())
            .unwrap_or_default();
        assert_eq!(times, kept, "asset {id} has other seconds than asset 1");
    }
    let lost = ticks.len() - kept.len();
    assert!(lost > 0);
    assert_eq!(
        kept,
        ticks[lost..],
        "the oldest ticks are the ones missing: ticks {ticks:?}, stored {kept:?}"
    );
    assert_eq!(
        dropped_total,
        (lost * ASSETS as usize) as f64,
        "every missing point is counted as dropped, and only those"
    );
    drop(client);
    stop(&mut server);
}

#[test]
fn a_backfill_larger_than_the_write_queue_is_stored_or_counted_as_dropped() {
    let db = TestDb::create();
    let dsn = db.dsn();
    // 300 s of 5 assets: 1500 points for a queue of 1000, with the database up.
    let server = Server::start(&[
        dsn_var(&dsn),
        ("WS_ASSETS_HISTORY_SECONDS", "300"),
        ("WS_ASSETS_WRITE_QUEUE_POINTS", "1000"),
    ]);
    assert!(
        server
            .log()
            .contains("history backfilled with 1500 simulated points"),
        "{}",
        server.log()
    );
    let mut client = server.client();
    let history = client.subscribe_history(1);
    let live = time_of(&client.recv_point());
    wait_stored(&db, &[live]);

    let stored = db.stored(1);
    let missing: Vec<i64> = history
        .iter()
        .map(time_value)
        .filter(|point| !stored.contains(point))
        .map(|(time, _)| time)
        .collect();
    let dropped = server.metric_value("ws_assets_points_dropped_total");
    assert!(
        missing.is_empty()
            || (dropped >= (5 * missing.len()) as f64
                && server.log().contains("store write queue full")),
        "{} points of asset 1's history are neither stored nor counted as dropped \
         ({dropped} dropped): {missing:?}",
        missing.len()
    );
}

#[test]
fn an_unreachable_database_at_start_up_fails_in_time_naming_it_without_the_password() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = closed.local_addr().expect("local address").port();
    drop(closed);
    let password = "Pa55-w0rd-s3cret";
    let dsn = format!("postgresql+asyncpg://quotes:{password}@127.0.0.1:{port}/quotes");

    let run = run_to_exit(
        &[],
        &[
            dsn_var(&dsn),
            ("WS_ASSETS_POSTGRESQL_STARTUP_TIMEOUT_SECONDS", "2"),
        ],
        RUN_LIMIT,
    );
    assert_ne!(run.code, Some(0), "started without a database");
    assert!(run.code.is_some(), "killed by a signal");
    assert!(
        run.took < Duration::from_secs(15),
        "gave up only after {:?}",
        run.took
    );
    let message = run
        .stderr
        .lines()
        .find(|line| line.contains("cannot start"))
        .unwrap_or_else(|| panic!("no start-up error in:\n{}", run.stderr));
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("last error"), "{message}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(!run.stderr.contains(password), "{}", run.stderr);
    assert!(!run.stdout.contains(password), "{}", run.stdout);
    assert!(!run.stderr.contains("listening on"), "{}", run.stderr);
}

const DAY: i64 = 86_400;
/// Points older than 30 days: (asset, age in seconds, rows).
const OLD_POINTS: [(i32, i64, u8); 3] = [(1, 40 * DAY, 4), (1, 31 * DAY, 2), (2, 35 * DAY, 3)];
/// Points younger than 30 days: (asset, age in seconds, rows).
const RECENT_POINTS: [(i32, i64, u8); 3] = [(1, 29 * DAY, 2), (1, DAY, 4), (3, DAY, 1)];
const COUNT_OLDER_THAN_30_DAYS: &str =
    "SELECT count(*) FROM points WHERE time < now() - interval '30 days'";

/// Inserts, for each `(asset, age, rows)`, `rows` points one second apart, the newest
/// `age` seconds before `now`; returns how many.
fn insert_aged_points(db: &TestDb, now: i64, points: &[(i32, i64, u8)]) -> i64 {
    let mut client = db.client();
    for (asset, age, rows) in points {
        for i in 0..*rows {
            let time = now - age - i64::from(i);
            client
                .execute(
                    "INSERT INTO points (asset_id, time, value) VALUES ($1, to_timestamp($2::int8), 1.25)",
                    &[asset, &time],
                )
                .unwrap_or_else(|e| panic!("insert: {e}"));
        }
    }
    points.iter().map(|(_, _, n)| i64::from(*n)).sum()
}

#[test]
fn retention_deletes_old_rows_only() {
    let db = TestDb::create();
    migrate_with_the_binary(&db);
    let now = epoch_now();
    let old_rows = insert_aged_points(&db, now, &OLD_POINTS);
    let recent_rows = insert_aged_points(&db, now, &RECENT_POINTS);
    assert_eq!(db.scalar(COUNT_OLDER_THAN_30_DAYS), old_rows);

    let dsn = db.dsn();
    let mut server = Server::start(&[
        dsn_var(&dsn),
        NO_BACKFILL,
        ("WS_ASSETS_RETENTION_DAYS", "30"),
    ]);
    wait_until(SOON, "old rows deleted", || {
        match db.scalar(COUNT_OLDER_THAN_30_DAYS) {
            0 => Ok(()),
            n => Err(format!("{n} old rows left")),
        }
    });
    let recent_left = db.scalar(&format!(
        "SELECT count(*) FROM points WHERE time < to_timestamp({})",
        now - 60
    ));
    assert_eq!(recent_left, recent_rows, "recent rows are kept");
    wait_until(SOON, "deleted rows counted", || {
        match server.metric("ws_assets_points_expired_total") {
            Some(n) if n == old_rows as f64 => Ok(()),
            other => Err(format!("points_expired_total {other:?}")),
        }
    });
    // Live points are still written next to the kept ones.
    let mut ws = server.client();
    let _ = ws.subscribe_history(1);
    let live = time_of(&ws.recv_point());
    wait_stored(&db, &[live]);
    drop(ws);
    stop(&mut server);
}

#[test]
fn retention_0_keeps_the_rows_a_30_day_retention_deletes() {
    let expiring = TestDb::create();
    let keeping = TestDb::create();
    let now = epoch_now();
    let mut rows = 0;
    for db in [&expiring, &keeping] {
        migrate_with_the_binary(db);
        rows =
            insert_aged_points(db, now, &OLD_POINTS) + insert_aged_points(db, now, &RECENT_POINTS);
    }
    let (expiring_dsn, keeping_dsn) = (expiring.dsn(), keeping.dsn());
    let mut thirty = Server::start(&[
        dsn_var(&expiring_dsn),
        NO_BACKFILL,
        ("WS_ASSETS_RETENTION_DAYS", "30"),
    ]);
    let mut zero = Server::start(&[
        dsn_var(&keeping_dsn),
        NO_BACKFILL,
        ("WS_ASSETS_RETENTION_DAYS", "0"),
    ]);
    wait_until(
        SOON,
        "the 30-day retention deleting old rows",
        || match expiring.scalar(COUNT_OLDER_THAN_30_DAYS) {
            0 => Ok(()),
            n => Err(format!("{n} old rows left")),
        },
    );
    // Started after the other, the server keeping everything has run as long as the
    // other needed to delete, and a second more.
    let uptime = |server: &Server| server.health().1["uptime_seconds"].as_u64().unwrap_or(0);
    let needed = uptime(&thirty);
    wait_until(
        SOON,
        "the server keeping everything up as long",
        || match uptime(&zero) {
            up if up > needed => Ok(()),
            up => Err(format!("up {up} s, the other needed {needed} s")),
        },
    );
    // It does store, and it keeps every old row.
    let mut ws = zero.client();
    ws.subscribe_history(1);
    let live = time_of(&ws.recv_point());
    wait_stored(&keeping, &[live]);
    assert_eq!(
        keeping.scalar(COUNT_OLDER_THAN_30_DAYS),
        OLD_POINTS.iter().map(|p| i64::from(p.2)).sum::<i64>()
    );
    assert_eq!(
        keeping.scalar(&format!(
            "SELECT count(*) FROM points WHERE time < to_timestamp({})",
            now - 60
        )),
        rows
    );
    assert_eq!(zero.metric("ws_assets_points_expired_total"), Some(0.0));
    drop(ws);
    stop(&mut zero);
    stop(&mut thirty);
}

#[test]
fn sigterm_writes_the_queued_points_before_exiting() {
    let db = TestDb::create();
    let proxy = Proxy::start(db.server_addr());
    let dsn = db.dsn_via(&proxy);
    let mut server = Server::start(&[dsn_var(&dsn), NO_BACKFILL]);
    let mut client = server.client();
    let mut seen = client.subscribe_history(1);
    seen.push(client.recv_point());
    let first = time_of(&seen[0]);
    wait_stored(&db, &seen.iter().map(time_of).collect::<Vec<_>>());

    // Let points pile up behind a failing store, then stop with them still queued.
    proxy.cut();
    let cut_at = Instant::now();
    while !server.log().contains("store write failed") {
        assert!(
            cut_at.elapsed() < SOON,
            "no store failure logged:\n{}",
            server.log()
        );
        seen.push(client.recv_point());
    }
    seen.push(client.recv_point());
    let queued = server
        .metric("ws_assets_store_write_queue_points")
        .unwrap_or(0.0);
    assert!(queued >= 5.0, "{queued} points queued");
    proxy.restore();
    // Read while the server still answers; no tick starts once it is stopping.
    let allowed = server.ticks_without_point();
    server.terminate();
    seen.extend(client.points_until_close());
    drop(client);
    let code = server.wait_exit(EXIT_LIMIT);
    assert_eq!(code, Some(0), "exit after SIGTERM; log:\n{}", server.log());
    assert!(
        !server.log().contains("not written to the store"),
        "{}",
        server.log()
    );

    let times: Vec<i64> = seen.iter().map(time_of).collect();
    assert_seconds_follow(&times, allowed, "live points");
    let last = *times.last().expect("points");
    let stored_all = db.stored_times();
    for id in ASSET_IDS {
        let run: Vec<i64> = stored_all.get(&id).cloned().unwrap_or_default();
        assert_eq!(run.first(), Some(&first), "asset {id}");
        assert!(
            run.last().is_some_and(|&t| t >= last),
            "asset {id}: the last point before the signal ({last}) is not stored: {run:?}"
        );
    }
    assert_stored_exactly(&stored_all, &times);
    let rows: Vec<(i64, f64)> = db
        .stored(1)
        .into_iter()
        .filter(|(t, _)| *t <= last)
        .collect();
    let sent: Vec<(i64, f64)> = seen.iter().map(time_value).collect();
    assert_eq!(rows, sent, "stored rows are the points clients got");
}

#[test]
fn the_final_flush_waits_at_most_5_seconds_for_a_database_that_hangs() {
    let db = TestDb::create();
    let proxy = Proxy::start(db.server_addr());
    let dsn = db.dsn_via(&proxy);
    let mut server = Server::start(&[dsn_var(&dsn), NO_BACKFILL]);
    let mut client = server.client();
    client.subscribe_history(1);
    let first = time_of(&client.recv_point());
    wait_stored(&db, &[first]);

    // Points pile up behind writes that get no answer.
    proxy.blackhole();
    wait_until(
        SOON,
        "points queued behind the hung database",
        || match server.metric("ws_assets_store_write_queue_points") {
            Some(n) if n >= 10.0 => Ok(()),
            other => Err(format!("store_write_queue_points {other:?}")),
        },
    );
    drop(client);
    let signalled = Instant::now();
    server.terminate();
    let code = server.wait_exit(EXIT_LIMIT);
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "exit after SIGTERM; log:\n{}", server.log());
    assert!(
        server.wait_for_log("points not written to the store", Duration::from_secs(5)),
        "the points left behind are reported:\n{}",
        server.log()
    );
    // It waited for the database up to the cap, and not (much) longer: 1.5 s is for the
    // process to end on a busy machine.
    assert!(
        took >= Duration::from_millis(4900),
        "gave up on the queued points after {took:?}"
    );
    assert!(
        took < Duration::from_millis(6500),
        "exited {took:?} after SIGTERM with the database hung"
    );
}
