//! `FxcmFeed::fetch` against a small HTTP/1.1 server run inside the test, which
//! answers each request with the next canned reply the test queued.

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::fakefeed::{FakeFeed as Server, Reply, rates_body};
use ws_assets::asset::Asset;
use ws_assets::feed::fxcm::FxcmFeed;
use ws_assets::feed::{Feed, FeedError, Fetched};

/// The service's defaults (`WS_ASSETS_RATES_TIMEOUT_MS`, `WS_ASSETS_RATES_MAX_BODY_BYTES`).
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(800);
const DEFAULT_MAX_BODY_BYTES: u64 = 256 * 1024;

fn assets() -> Vec<Asset> {
    ["EURUSD", "USDJPY", "GBPUSD", "AUDUSD", "USDCAD"]
        .iter()
        .zip(1..)
        .map(|(name, id)| Asset {
            id,
            name: (*name).to_string(),
        })
        .collect()
}

const ROWS: &[(&str, &str, &str)] = &[
    ("EURUSD", "1.09107", "1.0913"),
    ("USDJPY", "151.842", "151.861"),
    ("GBPUSD", "1.26331", "1.26358"),
    ("AUDUSD", "0.65471", "0.65489"),
    ("USDCAD", "1.36312", "1.36336"),
];

fn mid(bid: &str, ask: &str) -> f64 {
    let b: f64 = bid.parse().expect("test price");
    let a: f64 = ask.parse().expect("test price");
    (b + a) / 2.0
}

/// The quotes `rows` should produce for [`assets`], in asset order.
fn expected(rows: &[(&str, &str, &str)]) -> Vec<(i32, f64)> {
    assets()
        .iter()
        .filter_map(|a| {
            let (_, bid, ask) = rows.iter().find(|(s, _, _)| *s == a.name)?;
            Some((a.id, mid(bid, ask)))
        })
        .collect()
}

fn pairs(f: &Fetched) -> Vec<(i32, f64)> {
    f.quotes.iter().map(|q| (q.asset_id, q.value)).collect()
}

fn feed_for(server: &Server) -> FxcmFeed {
    FxcmFeed::new(
        server.url().parse().expect("valid test URL"),
        DEFAULT_TIMEOUT,
        DEFAULT_MAX_BODY_BYTES,
    )
}

fn fetch(feed: &FxcmFeed) -> Result<Fetched, FeedError> {
    feed.fetch(1_700_000_000, &assets())
}

fn fetch_ok(feed: &FxcmFeed) -> Fetched {
    match fetch(feed) {
        Ok(f) => f,
        Err(e) => panic!("fetch failed: {e:?}"),
    }
}

#[test]
fn normal_answer_gives_mid_prices() {
    let server = Server::start();
    let feed = feed_for(&server);
    server.push(Reply::Ok(rates_body(ROWS)));
    let f = fetch_ok(&feed);
    assert_eq!(pairs(&f), expected(ROWS));
    assert_eq!(f.quotes.len(), 5);
    assert_eq!(f.rejected, 0);

    let head = &server.requests()[0];
    assert!(head.starts_with("GET /rates HTTP/1.1\r\n"), "{head}");
}

#[test]
fn plain_json_and_chunked_answers() {
    let server = Server::start();
    let feed = feed_for(&server);
    let plain = br#"{"Rates":[{"Symbol":"USDJPY","Bid":150.5,"Ask":"151.5"},{"Symbol":"EURUSD","Bid":"1.1","Ask":"1.3"}]}"#;
    server.push(Reply::Ok(plain.to_vec()));
    server.push(Reply::Chunked(rates_body(ROWS)));
    let f = fetch_ok(&feed);
    assert_eq!(pairs(&f), vec![(1, (1.1 + 1.3) / 2.0), (2, 151.0)]);
    assert_eq!(pairs(&fetch_ok(&feed)), expected(ROWS));
}

#[test]
fn missing_symbol_and_malformed_entry() {
    let server = Server::start();
    let feed = feed_for(&server);
    let rows = &[
        ("EURUSD", "1.09107", "1.0913"),
        ("USDJPY", "n/a", "151.861"),
        ("AUDUSD", "0.65471", "0.65489"),
        ("USDCAD", "-1", "1.36336"),
    ];
    server.push(Reply::Ok(rates_body(rows)));
    let f = fetch_ok(&feed);
    // GBPUSD is missing: no quote, not an error. USDJPY and USDCAD are rejected.
    assert_eq!(
        pairs(&f),
        vec![
            (1, mid("1.09107", "1.0913")),
            (4, mid("0.65471", "0.65489"))
        ]
    );
    assert_eq!(f.rejected, 2);
}

#[test]
fn keep_alive_reuses_one_connection() {
    let server = Server::start();
    let feed = feed_for(&server);
    server.push(Reply::Ok(rates_body(ROWS)));
    server.push(Reply::Ok(rates_body(&ROWS[..2])));
    server.push(Reply::Ok(rates_body(&ROWS[2..])));
    assert_eq!(pairs(&fetch_ok(&feed)), expected(ROWS));
    assert_eq!(pairs(&fetch_ok(&feed)), expected(&ROWS[..2]));
    assert_eq!(pairs(&fetch_ok(&feed)), expected(&ROWS[2..]));
    assert_eq!(server.accepts(), 1, "three fetches over one connection");
}

#[test]
fn connection_close_answers_mean_one_connection_each() {
    let server = Server::start();
    let feed = feed_for(&server);
    server.push(Reply::OkClose(rates_body(ROWS)));
    server.push(Reply::OkClose(rates_body(ROWS)));
    assert_eq!(pairs(&fetch_ok(&feed)), expected(ROWS));
    assert_eq!(pairs(&fetch_ok(&feed)), expected(ROWS));
    assert_eq!(server.accepts(), 2);
}

#[test]
fn http_500_is_a_status_error_and_the_connection_survives() {
    let server = Server::start();
    let feed = feed_for(&server);
    server.push(Reply::Status(500, b"Internal Server Error".to_vec()));
    server.push(Reply::Status(404, Vec::new()));
    server.push(Reply::Ok(rates_body(ROWS)));
    assert_eq!(fetch(&feed), Err(FeedError::Status(500)));
    assert_eq!(fetch(&feed), Err(FeedError::Status(404)));
    assert_eq!(pairs(&fetch_ok(&feed)), expected(ROWS));
    assert_eq!(
        server.accepts(),
        1,
        "error bodies are drained, not the connection dropped"
    );
}

#[test]
fn garbage_bodies_are_parse_errors() {
    let server = Server::start();
    let feed = feed_for(&server);
    server.push(Reply::Ok(
        b"<html><body>Service Unavailable</body></html>".to_vec(),
    ));
    server.push(Reply::Ok(vec![0xff, 0xfe, 0x00, 0x80, b'{']));
    server.push(Reply::Ok(Vec::new()));
    server.push(Reply::Ok(rates_body(ROWS)[..100].to_vec()));
    server.push(Reply::Ok(rates_body(ROWS)));
    for what in ["html", "binary", "empty", "truncated"] {
        match fetch(&feed) {
            Err(FeedError::Parse(msg)) => assert!(!msg.is_empty()),
            other => panic!("{what} body gave {other:?}"),
        }
    }
    assert_eq!(pairs(&fetch_ok(&feed)), expected(ROWS));
}

#[test]
fn slow_answer_times_out_and_the_next_fetch_works() {
    let server = Server::start();
    let timeout = Duration::from_millis(300);
    let feed = FxcmFeed::new(
        server.url().parse().expect("valid URL"),
        timeout,
        DEFAULT_MAX_BODY_BYTES,
    );
    let server_delay = Duration::from_secs(3);
    server.push(Reply::Slow(server_delay, rates_body(ROWS)));
    server.push(Reply::Ok(rates_body(ROWS)));

    let started = Instant::now();
    assert_eq!(fetch(&feed), Err(FeedError::Timeout));
    let took = started.elapsed();
    // The fetch gave up on its own timeout rather than waiting for the server.
    assert!(took >= timeout / 2, "gave up after {took:?}");
    assert!(
        took < server_delay - Duration::from_secs(1),
        "waited {took:?}"
    );

    assert_eq!(pairs(&fetch_ok(&feed)), expected(ROWS));
}

#[test]
fn body_trickling_past_the_timeout_times_out() {
    let server = Server::start();
    let timeout = Duration::from_millis(300);
    let feed = FxcmFeed::new(
        server.url().parse().expect("valid URL"),
        timeout,
        DEFAULT_MAX_BODY_BYTES,
    );
    let server_delay = Duration::from_secs(3);
    server.push(Reply::SlowBody(server_delay, rates_body(ROWS)));
    server.push(Reply::Ok(rates_body(ROWS)));
    let started = Instant::now();
    assert_eq!(fetch(&feed), Err(FeedError::Timeout));
    assert!(started.elapsed() < server_delay - Duration::from_secs(1));
    assert_eq!(pairs(&fetch_ok(&feed)), expected(ROWS));
}

/// A valid body padded with trailing whitespace to exactly `len` bytes.
fn padded_body(len: usize) -> Vec<u8> {
    let mut body = rates_body(ROWS);
    assert!(body.len() <= len);
    body.resize(len, b' ');
    body
}

#[test]
fn body_over_the_cap_is_too_large() {
    let server = Server::start();
    let feed = feed_for(&server);
    let over = (DEFAULT_MAX_BODY_BYTES + 1) as usize;
    server.push(Reply::Ok(padded_body(over)));
    server.push(Reply::Chunked(padded_body(4 * over)));
    server.push(Reply::Ok(padded_body(DEFAULT_MAX_BODY_BYTES as usize)));
    assert_eq!(
        fetch(&feed),
        Err(FeedError::TooLarge(DEFAULT_MAX_BODY_BYTES))
    );
    assert_eq!(
        fetch(&feed),
        Err(FeedError::TooLarge(DEFAULT_MAX_BODY_BYTES))
    );
    // Exactly at the cap is accepted.
    assert_eq!(pairs(&fetch_ok(&feed)), expected(ROWS));
}

#[test]
fn small_cap_is_applied_to_chunked_bodies() {
    let server = Server::start();
    let body = rates_body(ROWS);
    let cap = body.len() as u64 - 1;
    let feed = FxcmFeed::new(
        server.url().parse().expect("valid URL"),
        DEFAULT_TIMEOUT,
        cap,
    );
    server.push(Reply::Chunked(body.clone()));
    server.push(Reply::Ok(body));
    assert_eq!(fetch(&feed), Err(FeedError::TooLarge(cap)));
    assert_eq!(fetch(&feed), Err(FeedError::TooLarge(cap)));
}

#[test]
fn reset_and_cut_connections_are_connect_errors() {
    let server = Server::start();
    let feed = feed_for(&server);
    let body = rates_body(ROWS);
    let mut cut = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    cut.extend_from_slice(&body[..body.len() / 2]);
    server.push(Reply::Reset);
    server.push(Reply::Raw(cut));
    server.push(Reply::Raw(b"not http at all\r\n\r\n".to_vec()));
    server.push(Reply::Ok(body));
    for what in ["reset", "cut body", "not http"] {
        match fetch(&feed) {
            Err(FeedError::Connect(msg)) => assert!(!msg.is_empty()),
            other => panic!("{what}: {other:?}"),
        }
    }
    assert_eq!(pairs(&fetch_ok(&feed)), expected(ROWS));
}

#[test]
fn server_going_away_and_coming_back_on_the_same_port() {
    let mut server = Server::start();
    let addr = server.addr;
    let feed = feed_for(&server);
    server.push(Reply::Ok(rates_body(ROWS)));
    assert_eq!(pairs(&fetch_ok(&feed)), expected(ROWS));

    // Down: the pooled connection is closed and nothing listens any more.
    server.stop();
    for _ in 0..3 {
        match fetch(&feed) {
            Err(FeedError::Connect(_)) => {}
            other => panic!("with the server down: {other:?}"),
        }
    }

    // Back, on the same port (std sets SO_REUSEADDR, but allow a moment).
    let mut back = None;
    for _ in 0..50 {
        match Server::start_on(addr) {
            Ok(s) => {
                back = Some(s);
                break;
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
    let back = back.expect("rebind the same port");
    back.push(Reply::Ok(rates_body(&ROWS[1..3])));
    back.push(Reply::Ok(rates_body(ROWS)));
    assert_eq!(pairs(&fetch_ok(&feed)), expected(&ROWS[1..3]));
    assert_eq!(pairs(&fetch_ok(&feed)), expected(ROWS));
    assert_eq!(back.accepts(), 1, "the new connection is kept alive again");
}

#[test]
fn refused_connection_is_a_connect_error() {
    // Take a free port, then free it again: nothing listens there.
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let feed = FxcmFeed::new(
        format!("http://{addr}/rates").parse().expect("valid URL"),
        DEFAULT_TIMEOUT,
        1024,
    );
    match fetch(&feed) {
        Err(FeedError::Connect(msg)) => assert!(!msg.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn userinfo_is_sent_as_basic_auth_but_never_described() {
    let server = Server::start();
    let url = format!("http://feeduser:s3cret@{}/rates?token=t0k", server.addr);
    let feed = FxcmFeed::new(
        url.parse().expect("valid URL"),
        DEFAULT_TIMEOUT,
        DEFAULT_MAX_BODY_BYTES,
    );
    server.push(Reply::Ok(rates_body(ROWS)));
    assert_eq!(pairs(&fetch_ok(&feed)), expected(ROWS));
    let head = server.requests()[0].to_ascii_lowercase();
    // base64("feeduser:s3cret")
    assert!(
        head.contains(
            "authorization: basic ZmVlZHVzZXI6czNjcmV0"
                .to_ascii_lowercase()
                .as_str()
        ),
        "{head}"
    );
    assert!(head.starts_with("get /rates?token=t0k "), "{head}");
    let shown = feed.describe();
    assert_eq!(shown, format!("http://{}/rates?...", server.addr));
}

#[test]
fn https_is_compiled_in() {
    // A TLS handshake against a plain-HTTP answer fails in the TLS layer, which
    // shows the https path exists and speaks TLS first.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    let addr = listener.local_addr().expect("bound address");
    let plain = thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            thread::sleep(Duration::from_millis(200));
        }
    });
    let url = format!("https://{addr}/rates");
    let feed = FxcmFeed::new(
        url.parse().expect("valid URL"),
        DEFAULT_TIMEOUT,
        DEFAULT_MAX_BODY_BYTES,
    );
    match fetch(&feed) {
        Err(FeedError::Connect(msg)) => {
            let msg = msg.to_ascii_lowercase();
            // rustls reports the plain-text record as a corrupt TLS message.
            assert!(
                msg.contains("corrupt message") || msg.contains("tls"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    let _ = plain.join();
}

#[test]
fn one_feed_serves_several_workers_at_once() {
    let server = Server::start();
    let feed = Arc::new(feed_for(&server));
    for _ in 0..8 {
        server.push(Reply::Ok(rates_body(ROWS)));
    }
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let feed = Arc::clone(&feed);
            thread::spawn(move || (0..2).map(|_| fetch(&feed)).collect::<Vec<_>>())
        })
        .collect();
    for w in workers {
        for r in w.join().expect("worker thread") {
            match r {
                Ok(f) => assert_eq!(pairs(&f), expected(ROWS)),
                Err(e) => panic!("{e:?}"),
            }
        }
    }
}
