//! The real server binary with `WS_ASSETS_RATES_URL` pointing at a fake FXCM feed run
//! inside the test: the quote feed and the points clients get from it, end to end.
//!
//! Every request the fake feed answers normally carries prices unique to that request
//! (see [`quote`]), so each point a client receives names the request it came from.
//! The assertions are about that correspondence — which request produced which point,
//! which did not — never about when the wall clock says a tick should have happened:
//! on a loaded machine the only timing fact relied on is that a tick's fetch starts
//! after its second has begun, so a point's time is never later than the second its
//! request arrived in.
//!
//! Each tick makes exactly one request, so two points from requests `a < b` are
//! `b - a` seconds apart, plus any ticks the server counts as made without a request
//! (`ws_assets_ticks_total` `missed`, which only a held-up event loop causes, and
//! `skipped`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::common::{Client, Server};
use crate::fakefeed::{FakeFeed, Reply, rates_body};
use serde_json::Value;

/// The fetch timeout the tests run with: well under a tick, well over a loopback answer.
const TIMEOUT_MS: u64 = 700;
/// How long a "slow" answer takes: far beyond the timeout.
const SLOW: Duration = Duration::from_millis(1500);
/// Upper bound for any single wait in a test (failures, not the expected path).
const PATIENCE: Duration = Duration::from_secs(25);

/// `(id, symbol, price of request 0 in units of the last decimal, decimals)`.
const ASSETS: [(i64, &str, u64, u32); 5] = [
    (1, "EURUSD", 108_000, 5),
    (2, "USDJPY", 151_000, 3),
    (3, "GBPUSD", 126_000, 5),
    (4, "AUDUSD", 65_000, 5),
    (5, "USDCAD", 136_000, 5),
];
const ALL: &[i64] = &[1, 2, 3, 4, 5];
const NONE: &[i64] = &[];

/// How a test's fake feed treats request `n`: the reply, and the assets that reply
/// gives a point to (valued from [`quote`]`(n, id)`).
type Plan = fn(usize) -> (Reply, &'static [i64]);

fn price(units: u64, decimals: u32) -> String {
    let scale = 10u64.pow(decimals);
    let width = decimals as usize;
    format!("{}.{:0width$}", units / scale, units % scale)
}

/// Bid and ask of asset `id` in the answer to request `n`: different for every request,
/// as text the way FXCM writes it.
fn quote(n: usize, id: i64) -> (String, String) {
    let (_, _, base, decimals) = ASSETS[(id - 1) as usize];
    let bid = base + 3 * n as u64;
    (price(bid, decimals), price(bid + 20, decimals))
}

fn symbol(id: i64) -> &'static str {
    ASSETS[(id - 1) as usize].1
}

/// `(bid + ask) / 2` computed as the server does.
fn mid(bid: &str, ask: &str) -> f64 {
    let b: f64 = bid.parse().expect("test price");
    let a: f64 = ask.parse().expect("test price");
    (b + a) / 2.0
}

/// The value request `n` gives asset `id`.
fn value_of(n: usize, id: i64) -> f64 {
    let (bid, ask) = quote(n, id);
    mid(&bid, &ask)
}

fn same_value(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12
}

/// `(symbol, bid, ask)` rows of request `n` for `ids`.
fn rows(n: usize, ids: &[i64]) -> Vec<(String, String, String)> {
    ids.iter()
        .map(|&id| {
            let (bid, ask) = quote(n, id);
            (symbol(id).to_string(), bid, ask)
        })
        .collect()
}

/// The real feed's format (JSONP, strings, trailing commas) with request `n`'s prices.
fn jsonp(n: usize, ids: &[i64]) -> Vec<u8> {
    rates_body(&rows(n, ids))
}

/// The usual answer to request `n`: every asset.
fn normal(n: usize) -> Reply {
    Reply::Ok(jsonp(n, ALL))
}

/// Waits for `done` over a client's points, reading messages as they come; `points`
/// starts with the subscription's history and gains every live point.
fn collect_until(
    client: &mut Client,
    points: &mut Vec<Value>,
    what: &str,
    mut done: impl FnMut(&[Value]) -> bool,
) {
    let deadline = Instant::now() + PATIENCE;
    while !done(points) {
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}; points so far: {points:?}"
        );
        if let Some(msg) = client.recv_within(Duration::from_millis(100)) {
            assert_eq!(msg["action"], "point", "only points expected: {msg}");
            points.push(msg["message"].clone());
        }
    }
}

/// Whether `points` hold the value request `n` gives asset `id`.
fn has_point_of(points: &[Value], n: usize, id: i64) -> bool {
    points.iter().any(|p| {
        p["value"]
            .as_f64()
            .is_some_and(|v| same_value(v, value_of(n, id)))
    })
}

/// One request the fake feed received, as a point source.
struct Served {
    /// The request's number (offset per feed server, see [`served`]).
    n: usize,
    /// Epoch second in which it arrived.
    arrived: i64,
    /// Assets it gave a point to, with their values.
    values: Vec<(i64, f64)>,
}

/// The requests `feed` has received so far under `plan`, numbered from `offset`.
fn served(feed: &FakeFeed, plan: impl Fn(usize) -> &'static [i64], offset: usize) -> Vec<Served> {
    (0..feed.request_count())
        .map(|i| {
            let at = feed.arrival(i).expect("recorded arrival");
            let arrived = at.duration_since(UNIX_EPOCH).expect("after 1970").as_secs() as i64;
            let n = offset + i;
            let values = plan(i).iter().map(|&id| (id, value_of(n, id))).collect();
            Served { n, arrived, values }
        })
        .collect()
}

/// Checks a client's points for asset `id` (history then live) against what the feed
/// served, and returns `(request, time)` per point. Every point must be the mid price
/// of exactly one request that was meant to give this asset a point, its time an
/// integer second no later than the second that request arrived in; times and
/// requests strictly increase (no repeat, never backwards).
fn trace(points: &[Value], id: i64, served: &[Served]) -> Vec<(usize, i64)> {
    let mut out: Vec<(usize, i64)> = Vec::new();
    for p in points {
        assert_eq!(p["assetId"], id, "{p}");
        assert_eq!(p["assetName"], symbol(id), "{p}");
        let time = p["time"]
            .as_i64()
            .unwrap_or_else(|| panic!("time is an integer: {p}"));
        let value = p["value"].as_f64().expect("numeric value");
        let sources: Vec<&Served> = served
            .iter()
            .filter(|s| {
                s.values
                    .iter()
                    .any(|&(a, v)| a == id && same_value(v, value))
            })
            .collect();
        assert_eq!(
            sources.len(),
            1,
            "point {p} is the mid of exactly one served answer"
        );
        let source = sources[0];
        assert!(
            time <= source.arrived,
            "point {p} of request {} is stamped with its tick's second, which began \
             before the request arrived (in second {})",
            source.n,
            source.arrived
        );
        if let Some(&(n, t)) = out.last() {
            assert!(
                time > t,
                "times strictly increase: {t} then {time} ({points:?})"
            );
            assert!(n < source.n, "requests in order: {n} then {}", source.n);
        }
        out.push((source.n, time));
    }
    out
}

/// Ticks for which the server made no request, as it counts them itself: seconds it
/// missed (its loop held up past a whole second, as a loaded machine may do) and ticks
/// it skipped because every fetch slot was busy. Zero on an unloaded run.
fn ticks_without_request(server: &Server) -> i64 {
    (ticks(server, "missed") + ticks(server, "skipped")) as i64
}

/// Checks that consecutive points of requests `a < b` (numbered from the same feed)
/// are `b - a` seconds apart, give or take the ticks the server skipped: so the
/// seconds without a point are exactly those whose request failed.
fn assert_spacing(trace: &[(usize, i64)], skipped: i64) {
    for pair in trace.windows(2) {
        let ((a, ta), (b, tb)) = (pair[0], pair[1]);
        let requests = (b - a) as i64;
        assert!(
            (requests..=requests + skipped).contains(&(tb - ta)),
            "requests {a} and {b} are {requests} ticks apart but their points are \
             {} s apart ({skipped} ticks skipped); trace {trace:?}",
            tb - ta
        );
    }
}

/// Requests `0..=last` that `plan` meant to give asset `id` a point.
fn expected_requests(plan: Plan, id: i64, last: usize) -> Vec<usize> {
    (0..=last).filter(|&n| plan(n).1.contains(&id)).collect()
}

fn requests_of(trace: &[(usize, i64)]) -> Vec<usize> {
    trace.iter().map(|&(n, _)| n).collect()
}

/// Starts the fake feed with `plan` and the server pointed at it.
fn start(plan: Plan, env: &[(&str, &str)]) -> (FakeFeed, Server) {
    start_with_timeout(plan, TIMEOUT_MS, env)
}

fn start_with_timeout(plan: Plan, timeout_ms: u64, env: &[(&str, &str)]) -> (FakeFeed, Server) {
    let feed = FakeFeed::scripted(move |n| plan(n).0);
    let url = feed.url();
    let timeout = timeout_ms.to_string();
    let mut vars = vec![
        ("WS_ASSETS_RATES_URL", url.as_str()),
        ("WS_ASSETS_RATES_TIMEOUT_MS", timeout.as_str()),
    ];
    vars.extend_from_slice(env);
    let server = Server::start(&vars);
    (feed, server)
}

fn series(family: &str, label: &str, value: &str) -> String {
    format!("ws_assets_{family}{{{label}=\"{value}\"}}")
}

fn feed_errors(server: &Server, kind: &str) -> f64 {
    server.metric_value(&series("feed_errors_total", "kind", kind))
}

fn ticks(server: &Server, outcome: &str) -> f64 {
    server.metric_value(&series("ticks_total", "outcome", outcome))
}

fn assert_assets_answer(client: &mut Client) {
    client.send_text(r#"{"action":"assets","message":{}}"#);
    let answer = client.recv_action("assets");
    let names: Vec<&str> = answer["message"]["assets"]
        .as_array()
        .expect("assets array")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["EURUSD", "USDJPY", "GBPUSD", "AUDUSD", "USDCAD"]);
}

// ---- normal answers ----------------------------------------------------------------

fn plan_normal(n: usize) -> (Reply, &'static [i64]) {
    (normal(n), ALL)
}

#[test]
fn live_points_are_the_mid_of_what_the_feed_served() {
    let (feed, mut server) = start(plan_normal, &[]);
    let mut eur = server.client();
    let mut jpy = server.client();
    let mut eur_points = eur.subscribe_history(1);
    let mut jpy_points = jpy.subscribe_history(2);
    collect_until(&mut eur, &mut eur_points, "request 5 on EURUSD", |p| {
        has_point_of(p, 5, 1)
    });
    collect_until(&mut jpy, &mut jpy_points, "request 5 on USDJPY", |p| {
        has_point_of(p, 5, 2)
    });

    let head = &feed.requests()[0];
    assert!(head.starts_with("GET /rates HTTP/1.1\r\n"), "{head}");
    assert_eq!(feed_errors(&server, "timeout"), 0.0);
    assert!(ticks(&server, "ok") >= 6.0);
    // Closed clients let the server stop at once.
    drop((eur, jpy));
    let skipped = ticks_without_request(&server);
    let log = server.stop_and_log();
    assert!(
        log.contains(&format!("feed: {} (timeout {TIMEOUT_MS} ms)", feed.url())),
        "the start-up line names the feed and its timeout:\n{log}"
    );

    let served = served(&feed, |_| ALL, 0);
    let eur_trace = trace(&eur_points, 1, &served);
    let jpy_trace = trace(&jpy_points, 2, &served);
    for (id, trace) in [(1, &eur_trace), (2, &jpy_trace)] {
        let last = trace.last().expect("points").0;
        assert!(last >= 5);
        assert_eq!(requests_of(trace), expected_requests(plan_normal, id, last));
        assert_spacing(trace, skipped);
    }
    // Both assets' points of one request carry the same tick.
    for (n, t) in &eur_trace {
        if let Some((_, u)) = jpy_trace.iter().find(|(m, _)| m == n) {
            assert_eq!(t, u, "request {n}");
        }
    }
}

// ---- body variants -------------------------------------------------------------------

/// The same prices without the JSONP wrapper, without trailing commas.
fn plain_json(n: usize) -> Vec<u8> {
    let entries: Vec<String> = rows(n, ALL)
        .into_iter()
        .map(|(s, b, a)| format!(r#"{{"Symbol":"{s}","Bid":"{b}","Ask":"{a}","Spread":"2.0"}}"#))
        .collect();
    format!(r#"{{"Rates":[{}]}}"#, entries.join(",")).into_bytes()
}

/// JSONP with another callback name, prices as JSON numbers, spread over lines.
fn jsonp_numbers(n: usize) -> Vec<u8> {
    let entries: Vec<String> = rows(n, ALL)
        .into_iter()
        .map(|(s, b, a)| format!("  {{ \"Symbol\" : \"{s}\", \"Bid\" : {b}, \"Ask\" : {a} }}"))
        .collect();
    format!(
        "cb_1700000000 ( {{\n \"Rates\" : [\n{}\n ]\n}} )\n",
        entries.join(",\n")
    )
    .into_bytes()
}

fn plan_formats(n: usize) -> (Reply, &'static [i64]) {
    let reply = match n {
        1 => Reply::Ok(plain_json(n)),
        2 => Reply::Ok(jsonp_numbers(n)),
        3 => Reply::Chunked(jsonp(n, ALL)),
        4 => Reply::OkClose(jsonp(n, ALL)),
        _ => normal(n),
    };
    (reply, ALL)
}

#[test]
fn wrapper_less_trailing_comma_chunked_and_closing_answers_all_work() {
    let (feed, mut server) = start(plan_formats, &[]);
    let mut client = server.client();
    let mut points = client.subscribe_history(2);
    collect_until(&mut client, &mut points, "request 6", |p| {
        has_point_of(p, 6, 2)
    });
    assert_eq!(ticks(&server, "failed"), 0.0);
    // Closed clients let the server stop at once.
    drop(client);
    let skipped = ticks_without_request(&server);
    server.stop_and_log();
    let trace = trace(&points, 2, &served(&feed, |_| ALL, 0));
    let last = trace.last().expect("points").0;
    assert!(last >= 6);
    assert_eq!(
        requests_of(&trace),
        expected_requests(plan_formats, 2, last)
    );
    assert_spacing(&trace, skipped);
}

// ---- slow answers --------------------------------------------------------------------

fn plan_slow(n: usize) -> (Reply, &'static [i64]) {
    match n {
        // No headers within the timeout.
        2 => (Reply::Slow(SLOW, jsonp(n, ALL)), NONE),
        // Headers at once, the body trickling past the timeout.
        4 => (Reply::SlowBody(SLOW, jsonp(n, ALL)), NONE),
        // Late but within the timeout: still that tick's point.
        5 => (Reply::Slow(Duration::from_millis(150), jsonp(n, ALL)), ALL),
        _ => (normal(n), ALL),
    }
}

#[test]
fn an_answer_past_the_timeout_leaves_exactly_its_second_empty() {
    let (feed, mut server) = start(plan_slow, &[]);
    let mut client = server.client();
    let mut other = server.client();
    let mut points = client.subscribe_history(1);
    collect_until(&mut client, &mut points, "request 2 to arrive", |_| {
        feed.request_count() >= 3
    });
    // The worker is waiting on the feed; clients are still served.
    assert_assets_answer(&mut other);
    collect_until(&mut client, &mut points, "request 7", |p| {
        has_point_of(p, 7, 1)
    });

    assert_eq!(feed_errors(&server, "timeout"), 2.0);
    assert_eq!(ticks(&server, "failed"), 2.0);
    assert_eq!(ticks(&server, "late"), 0.0);
    // Every finished fetch is timed; the two abandoned ones waited out the timeout.
    let m = server.metrics();
    let fetches = m["ws_assets_feed_fetch_duration_seconds_count"];
    let finished: f64 = ["ok", "empty", "failed", "late"]
        .iter()
        .map(|o| m[&series("ticks_total", "outcome", o)])
        .sum();
    assert_eq!(fetches, finished);
    let within_half_a_second = m["ws_assets_feed_fetch_duration_seconds_bucket{le=\"0.5\"}"];
    assert!(fetches - within_half_a_second >= 2.0, "{m:#?}");
    // Closed clients let the server stop at once.
    drop((client, other));
    let skipped = ticks_without_request(&server);
    server.stop_and_log();
    let trace = trace(&points, 1, &served(&feed, |n| plan_slow(n).1, 0));
    let last = trace.last().expect("points").0;
    assert_eq!(requests_of(&trace), expected_requests(plan_slow, 1, last));
    // Requests 1 and 3 are two ticks apart: the second of request 2 alone is missing.
    assert_spacing(&trace, skipped);
}

// ---- answers slower than a tick -------------------------------------------------------

fn plan_slower_than_a_tick(n: usize) -> (Reply, &'static [i64]) {
    let hold = Duration::from_millis(300);
    match n {
        // Held until the next tick's request has been answered, then a little more:
        // it comes back after a newer tick's points.
        2 => (Reply::AfterAnswer(3, hold, jsonp(n, ALL)), NONE),
        // Answered in the next second, and before the next tick's answer: its
        // point is stamped with its own tick's second, not the second it came back.
        6 => (Reply::Slow(Duration::from_millis(1200), jsonp(n, ALL)), ALL),
        7 => (Reply::AfterAnswer(6, hold, jsonp(n, ALL)), ALL),
        _ => (normal(n), ALL),
    }
}

#[test]
fn answers_slower_than_a_tick_keep_their_second_or_are_dropped_if_overtaken() {
    // A timeout longer than a tick, so slow answers are waited for.
    let (feed, mut server) = start_with_timeout(plan_slower_than_a_tick, 3000, &[]);
    let mut client = server.client();
    let mut points = client.subscribe_history(5);
    collect_until(&mut client, &mut points, "request 8", |p| {
        has_point_of(p, 8, 5)
    });
    drop(client);

    assert_eq!(ticks(&server, "late"), 1.0, "request 2 came back late");
    assert_eq!(ticks(&server, "failed"), 0.0);
    let skipped = ticks_without_request(&server);
    server.stop_and_log();
    let served = served(&feed, |n| plan_slower_than_a_tick(n).1, 0);
    let trace = trace(&points, 5, &served);
    let last = trace.last().expect("points").0;
    assert_eq!(
        requests_of(&trace),
        expected_requests(plan_slower_than_a_tick, 5, last)
    );
    // Requests 5, 6, 7 and 8 have points one second apart: the slow answers did not
    // delay the ticks after them, nor shift their own.
    assert_spacing(&trace, skipped);
}

// ---- every fetch slot busy -------------------------------------------------------------

/// How long every answer takes in the busy-slots test: 2.5 ticks.
const TWO_AND_A_HALF_TICKS: Duration = Duration::from_millis(2500);

fn plan_all_slow(n: usize) -> (Reply, &'static [i64]) {
    (Reply::Slow(TWO_AND_A_HALF_TICKS, jsonp(n, ALL)), ALL)
}

#[test]
fn a_tick_that_finds_every_fetch_slot_busy_is_skipped_and_counted() {
    // Answers take 2.5 s and are waited for. With 2 fetches allowed at once, the ticks
    // of seconds 0 and 1 fetch, second 2 finds both still busy, seconds 3 and 4 fetch
    // again (0 and 1 have answered), second 5 finds both busy, and so on.
    let (feed, mut server) = start_with_timeout(
        plan_all_slow,
        4000,
        &[("WS_ASSETS_RATES_MAX_IN_FLIGHT", "2")],
    );
    let mut client = server.client();
    let mut points = client.subscribe_history(1);
    collect_until(
        &mut client,
        &mut points,
        "request 3, after two skipped ticks",
        |p| {
            has_point_of(p, 3, 1)
                && server
                    .metric(&series("ticks_total", "outcome", "skipped"))
                    .is_some_and(|v| v >= 2.0)
        },
    );
    assert_eq!(
        feed.most_in_flight(),
        2,
        "at most RATES_MAX_IN_FLIGHT requests at once, and that many when answers are slow"
    );
    assert_eq!(ticks(&server, "failed"), 0.0, "nothing timed out");
    drop(client);
    let skipped = ticks_without_request(&server);
    let log = server.stop_and_log();
    assert!(log.contains("skipped: 2 fetches in flight"), "{log}");

    // Every point is its request's; a skipped tick made no request and left its second
    // without a point (the spacing allows exactly the skipped ticks).
    assert!(skipped >= 2, "{log}");
    let trace = trace(&points, 1, &served(&feed, |_| ALL, 0));
    let last = trace.last().expect("points").0;
    assert_eq!(
        requests_of(&trace),
        expected_requests(plan_all_slow, 1, last)
    );
    assert_spacing(&trace, skipped);
    let seconds = trace.last().expect("points").1 - trace[0].1 + 1;
    assert!(
        (trace.len() as i64) < seconds,
        "{} points in {seconds} s: no second was skipped",
        trace.len()
    );
}

// ---- failed answers ------------------------------------------------------------------

/// The cap the error test runs with; a normal answer is well under it.
const SMALL_CAP: usize = 4096;

fn plan_errors(n: usize) -> (Reply, &'static [i64]) {
    match n {
        2 => (Reply::Status(500, b"Internal Server Error".to_vec()), NONE),
        4 => (
            Reply::Ok(b"<html><body>502 Bad Gateway</body></html>".to_vec()),
            NONE,
        ),
        6 => {
            // A valid answer, made too large by trailing whitespace.
            let mut body = jsonp(n, ALL);
            body.resize(SMALL_CAP + 1, b' ');
            (Reply::Ok(body), NONE)
        }
        7 => (Reply::Ok(vec![0xff, 0xfe, 0x00, b'{', 0x80]), NONE),
        _ => (normal(n), ALL),
    }
}

#[test]
fn error_status_garbage_and_oversized_answers_are_skipped_and_counted() {
    let cap = SMALL_CAP.to_string();
    let (feed, mut server) = start(
        plan_errors,
        &[("WS_ASSETS_RATES_MAX_BODY_BYTES", cap.as_str())],
    );
    assert!(jsonp(0, ALL).len() < SMALL_CAP);
    let mut client = server.client();
    let mut other = server.client();
    let mut points = client.subscribe_history(3);
    collect_until(
        &mut client,
        &mut points,
        "the HTTP 500 to be counted",
        |_| server.metric(&series("feed_errors_total", "kind", "status")) == Some(1.0),
    );
    assert_assets_answer(&mut other);
    collect_until(&mut client, &mut points, "request 9", |p| {
        has_point_of(p, 9, 3)
    });

    assert_eq!(feed_errors(&server, "status"), 1.0);
    assert_eq!(feed_errors(&server, "parse"), 2.0);
    assert_eq!(feed_errors(&server, "too_large"), 1.0);
    assert_eq!(feed_errors(&server, "timeout"), 0.0);
    assert_eq!(feed_errors(&server, "connect"), 0.0);
    assert_eq!(ticks(&server, "failed"), 4.0);
    // Closed clients let the server stop at once.
    drop((client, other));
    let skipped = ticks_without_request(&server);
    let log = server.stop_and_log();
    // Failures between good answers (a flapping feed) are rate-limited too: not a
    // warning and a recovery line for each one.
    let reports = log
        .lines()
        .filter(|l| l.contains("no points") || l.contains("feed answering again"))
        .count();
    assert!(reports <= 2, "{reports} lines for 4 failed ticks:\n{log}");
    let trace = trace(&points, 3, &served(&feed, |n| plan_errors(n).1, 0));
    let last = trace.last().expect("points").0;
    assert_eq!(requests_of(&trace), expected_requests(plan_errors, 3, last));
    assert_spacing(&trace, skipped);
}

// ---- missing symbols -----------------------------------------------------------------

fn plan_missing(n: usize) -> (Reply, &'static [i64]) {
    match n {
        // GBPUSD absent.
        2 => (Reply::Ok(jsonp(n, &[1, 2, 4, 5])), &[1, 2, 4, 5]),
        // GBPUSD present but unusable.
        3 => {
            let mut rows = rows(n, ALL);
            rows[2].1 = "n/a".to_string();
            (Reply::Ok(rates_body(&rows)), &[1, 2, 4, 5])
        }
        // No asset we know: an answer, but no point at all.
        4 => (Reply::Ok(rates_body::<&str>(&[])), NONE),
        _ => (normal(n), ALL),
    }
}

#[test]
fn a_missing_symbol_leaves_only_that_asset_without_a_point() {
    let (feed, mut server) = start(plan_missing, &[]);
    let mut eur = server.client();
    let mut gbp = server.client();
    let mut eur_points = eur.subscribe_history(1);
    let mut gbp_points = gbp.subscribe_history(3);
    collect_until(&mut gbp, &mut gbp_points, "request 6 on GBPUSD", |p| {
        has_point_of(p, 6, 3)
    });
    collect_until(&mut eur, &mut eur_points, "request 6 on EURUSD", |p| {
        has_point_of(p, 6, 1)
    });

    assert_eq!(
        server.metric_value("ws_assets_feed_entries_rejected_total"),
        1.0
    );
    assert_eq!(ticks(&server, "empty"), 1.0);
    assert_eq!(ticks(&server, "failed"), 0.0);
    // Closed clients let the server stop at once.
    drop((eur, gbp));
    let skipped = ticks_without_request(&server);
    server.stop_and_log();
    let served = served(&feed, |n| plan_missing(n).1, 0);
    let eur_trace = trace(&eur_points, 1, &served);
    let gbp_trace = trace(&gbp_points, 3, &served);
    let last = gbp_trace.last().expect("points").0;
    assert_eq!(
        requests_of(&gbp_trace),
        expected_requests(plan_missing, 3, last)
    );
    let eur_upto: Vec<(usize, i64)> = eur_trace
        .iter()
        .copied()
        .filter(|&(n, _)| n <= last)
        .collect();
    assert_eq!(
        requests_of(&eur_upto),
        expected_requests(plan_missing, 1, last)
    );
    assert_spacing(&eur_trace, skipped);
    assert_spacing(&gbp_trace, skipped);
    // The seconds of requests 2 and 3 have a EURUSD point and no GBPUSD point.
    let gbp_times: BTreeSet<i64> = gbp_trace.iter().map(|&(_, t)| t).collect();
    for &(n, t) in &eur_upto {
        assert_eq!(
            gbp_times.contains(&t),
            plan_missing(n).1.contains(&3),
            "second {t} (request {n})"
        );
    }
}

// ---- the feed going away -------------------------------------------------------------

/// Request numbers of the second feed server start here, so its prices differ.
const BACK: usize = 1000;

#[test]
fn the_feed_going_away_and_coming_back_on_the_same_port() {
    let mut first = FakeFeed::scripted(normal);
    let addr = first.addr;
    let url = first.url();
    let timeout = TIMEOUT_MS.to_string();
    let mut server = Server::start(&[
        ("WS_ASSETS_RATES_URL", url.as_str()),
        ("WS_ASSETS_RATES_TIMEOUT_MS", timeout.as_str()),
    ]);
    let mut client = server.client();
    let mut points = client.subscribe_history(1);
    collect_until(&mut client, &mut points, "request 2", |p| {
        has_point_of(p, 2, 1)
    });

    // Gone: listener closed, the kept-alive connection cut; connections are refused.
    first.stop();
    collect_until(&mut client, &mut points, "4 refused fetches", |_| {
        server
            .metric(&series("feed_errors_total", "kind", "connect"))
            .is_some_and(|v| v >= 4.0)
    });
    let before_outage = points.len();

    let back = FakeFeed::rebind(addr, |n| normal(BACK + n));
    collect_until(
        &mut client,
        &mut points,
        "request 2 after the return",
        |p| has_point_of(p, BACK + 2, 1),
    );

    let failed = ticks(&server, "failed");
    assert_eq!(
        feed_errors(&server, "connect"),
        failed,
        "all failures are the outage"
    );
    assert_eq!(feed_errors(&server, "timeout"), 0.0);
    // Closed clients let the server stop at once.
    drop(client);
    let skipped = ticks_without_request(&server);
    let log = server.stop_and_log();

    let mut served_all = served(&first, |_| ALL, 0);
    served_all.extend(served(&back, |_| ALL, BACK));
    let trace = trace(&points, 1, &served_all);
    let (before, after): (Vec<_>, Vec<_>) = trace.iter().partition(|&&(n, _)| n < BACK);
    assert_eq!(
        before.len(),
        before_outage,
        "no point while the feed was away"
    );
    // Every answered request before the outage has its point; only one cut by the
    // stop itself may lack it.
    let before_requests = requests_of(&before);
    assert_eq!(before_requests, (0..before.len()).collect::<Vec<_>>());
    assert!(before.len() + 1 >= first.request_count());
    let after_requests = requests_of(&after);
    assert_eq!(
        after_requests,
        (BACK..BACK + after.len()).collect::<Vec<_>>()
    );
    assert_spacing(&before, skipped);
    assert_spacing(&after, skipped);
    // The seconds missing between the two runs are exactly the failed ticks.
    let (Some(&(_, last_before)), Some(&(_, first_after))) = (before.last(), after.first()) else {
        panic!("points on both sides of the outage: {trace:?}");
    };
    let missing = first_after - last_before - 1;
    assert!(
        (failed as i64..=failed as i64 + skipped).contains(&missing),
        "{missing} seconds without a point, {failed} failed ticks, {skipped} skipped"
    );

    // The outage is logged once (rate-limited), not once per second, and the return too.
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("no points"))
        .collect();
    assert!(
        (1..=2).contains(&warnings.len()),
        "{} warnings for {failed} failed ticks:\n{log}",
        warnings.len()
    );
    assert!(log.contains("feed answering again"), "{log}");
}

// ---- no backfill with a real feed ------------------------------------------------------

fn plan_late_start(n: usize) -> (Reply, &'static [i64]) {
    if n < 3 {
        (Reply::Status(503, b"warming up".to_vec()), NONE)
    } else {
        (normal(n), ALL)
    }
}

#[test]
fn a_real_feed_never_backfills_history() {
    // Backfill asked for, but it only applies to the simulated feed.
    let (feed, mut server) = start(plan_late_start, &[("WS_ASSETS_SIMULATED_BACKFILL", "TRUE")]);
    let mut first = server.client();
    let mut points = first.subscribe_history(4);
    if feed.request_count() <= 3 {
        assert_eq!(
            points,
            Vec::<Value>::new(),
            "nothing fetched yet, nothing to show"
        );
    }
    collect_until(&mut first, &mut points, "request 5", |p| {
        has_point_of(p, 5, 4)
    });

    let mut second = server.client();
    let mut history = second.subscribe_history(4);
    assert!(
        history.len() >= points.len() && history[..points.len()] == points[..],
        "a later history holds the same points:\n{history:?}\n{points:?}"
    );
    // The next live point follows the history's last without a gap (checked below).
    let live = second.recv_action("point");
    history.push(live["message"].clone());
    assert_eq!(ticks(&server, "failed"), 3.0);
    // Closed clients let the server stop at once.
    drop((first, second));
    let skipped = ticks_without_request(&server);
    let log = server.stop_and_log();
    assert!(!log.contains("backfilled"), "{log}");
    assert!(log.contains("0 points of history loaded"), "{log}");

    let trace = trace(&history, 4, &served(&feed, |n| plan_late_start(n).1, 0));
    let last = trace.last().expect("points").0;
    assert!(last >= 6);
    assert_eq!(
        requests_of(&trace),
        expected_requests(plan_late_start, 4, last)
    );
    assert_eq!(
        trace[0].0, 3,
        "history starts with the first answered request"
    );
    assert_spacing(&trace, skipped);
}
