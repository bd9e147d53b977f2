//! No client, log sink or stall may hold up the loop or grow its memory: each test
//! reproduces an abuse against the real binary with a well-behaved subscriber alongside,
//! which must miss no second.

use crate::common;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    Client, Server, masked_frame, masked_text, raw_websocket, read_until_closed, server_frames,
    time_of, wait_until,
};

/// Reads `watcher`'s live points for `seconds` seconds and fails the test on any gap.
fn misses_no_second(watcher: &mut Client, seconds: usize) {
    let mut last = time_of(&watcher.recv_point());
    for _ in 0..seconds {
        let time = time_of(&watcher.recv_point());
        assert_eq!(time, last + 1, "the subscriber missed a second");
        last = time;
    }
}

/// Waits up to `within` for the server's RSS to come back within 10 % of `baseline`.
fn rss_comes_back(server: &Server, baseline: u64, within: Duration) {
    wait_until(within, "RSS back within 10 % of its baseline", || {
        let rss = server.rss_bytes();
        if rss <= baseline + baseline / 10 {
            Ok(())
        } else {
            Err(format!("{rss} B against a baseline of {baseline} B"))
        }
    });
}

/// Writes `chunk` to `stream` over and over until `stop` is set or the server closes.
fn flood(mut stream: TcpStream, chunk: Vec<u8>, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        stream
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        while !stop.load(Ordering::Relaxed) {
            match stream.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
    })
}

#[test]
fn endless_empty_continuation_frames_close_the_client_and_hold_up_no_one() {
    let server = Server::start(&[]);
    let mut watcher = server.client();
    watcher.subscribe_history(1);

    let mut flooder = server.raw_websocket();
    // The first fragment of a text message, then empty continuations without end.
    flooder.write_all(&masked_frame(0x01, b"{")).unwrap();
    let empties: Vec<u8> = (0..4096).flat_map(|_| masked_frame(0x00, b"")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = flood(flooder.try_clone().unwrap(), empties, Arc::clone(&stop));

    let started = Instant::now();
    let (status, _) = server.get("/health");
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/health took {:?} during the flood",
        started.elapsed()
    );
    misses_no_second(&mut watcher, 3);

    let ended = read_until_closed(&mut flooder, Instant::now(), Duration::from_secs(5))
        .expect("the flooder is closed");
    let close = server_frames(&ended.bytes)
        .into_iter()
        .find(|f| f.opcode == 0x8)
        .expect("a close frame");
    assert_eq!(
        u16::from_be_bytes([close.payload[0], close.payload[1]]),
        1009,
        "closed as too large: {:?}",
        String::from_utf8_lossy(&close.payload[2..])
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(
        server.metric_value("ws_assets_clients_dropped_total{reason=\"message_too_large\"}"),
        1.0
    );
}

#[test]
fn ping_floods_stay_within_the_queue_limit_and_memory_comes_back() {
    let limit = 65_536u64;
    let server = Server::start(&[("WS_ASSETS_CLIENT_QUEUE_BYTES", &limit.to_string())]);
    let mut watcher = server.client();
    watcher.subscribe_history(1);
    thread::sleep(Duration::from_secs(1));
    let baseline = server.rss_bytes();

    // Ten clients ping as fast as they can and never read a pong.
    let flooders = 10u64;
    let pings: Vec<u8> = (0..2048).flat_map(|_| masked_frame(0x89, b"")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut streams = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..flooders {
        let stream = raw_websocket(server.addr);
        writers.push(flood(
            stream.try_clone().unwrap(),
            pings.clone(),
            Arc::clone(&stop),
        ));
        streams.push(stream);
    }
    let mut peak = 0;
    let flood_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < flood_until {
        peak = peak.max(server.rss_bytes());
        thread::sleep(Duration::from_millis(100));
    }
    // Each flooder may cost its queue limit plus the buffers of a connection.
    let allowed = baseline + flooders * (limit + 64 * 1024) + 4 * 1024 * 1024;
    assert!(
        peak <= allowed,
        "RSS reached {peak} B under {flooders} ping floods (baseline {baseline} B, allowed {allowed} B)"
    );
    misses_no_second(&mut watcher, 2);

    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    drop(streams);
    rss_comes_back(&server, baseline, Duration::from_secs(60));
    misses_no_second(&mut watcher, 1);
}

#[test]
fn memory_comes_back_after_thousands_of_subscribers_leave() {
    let server = Server::start(&[]);
    let mut watcher = server.client();
    watcher.subscribe_history(1);
    thread::sleep(Duration::from_secs(1));
    let baseline = server.rss_bytes();

    // Thousands of clients subscribe (and never read their history), then all leave.
    let clients = 3000;
    let subscribe = masked_text(br#"{"action":"subscribe","message":{"assetId":2}}"#);
    let mut streams = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut stream = raw_websocket(server.addr);
        stream.write_all(&subscribe).unwrap();
        streams.push(stream);
    }
    wait_until(Duration::from_secs(10), "every client subscribed", || {
        let subscribed = server.metric_value("ws_assets_subscriptions{asset=\"USDJPY\"}");
        if subscribed >= clients as f64 {
            Ok(())
        } else {
            Err(format!("{subscribed} subscribed"))
        }
    });
    drop(streams);
    misses_no_second(&mut watcher, 1);

    // The connection table and subscriber lists sized for the crowd shrink with it, and
    // the freed memory goes back to the system.
    rss_comes_back(&server, baseline, Duration::from_secs(30));
    misses_no_second(&mut watcher, 1);
}

#[test]
fn a_log_sink_nobody_reads_never_holds_up_the_loop() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    // Standard error is a pipe that nobody reads until the end.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ws_assets"))
        .env_clear()
        .env("WS_ASSETS_HOST", "127.0.0.1")
        .env("WS_ASSETS_PORT", port.to_string())
        .env("WS_ASSETS_LOG_LEVEL", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let http =
        |path: &str| common::http_request(addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
    wait_until(Duration::from_secs(10), "the server answers", || {
        TcpStream::connect(addr).map_err(|e| e.to_string())
    });
    let mut watcher = Client::connect(addr, "/api/v1/websocket");
    watcher.subscribe_history(1);

    // Thousands of connections log thousands of debug lines: far more than a pipe holds.
    for _ in 0..5000 {
        let (status, _) = http("/health");
        assert_eq!(status, 200);
    }
    misses_no_second(&mut watcher, 3);
    let metrics = common::Metrics::parse(&http("/metrics").1);
    assert!(
        metrics.value("ws_assets_log_lines_dropped_total") > 0.0,
        "lines were dropped, not waited for"
    );

    // Once the sink reads again, a line says what was lost.
    let mut stderr = child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    thread::sleep(Duration::from_secs(2));
    // SAFETY: kill() with the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let log = reader.join().unwrap();
    assert!(log.contains("log lines dropped"), "{log}");
}

#[test]
fn seconds_the_loop_was_held_up_for_are_counted_as_missed_ticks() {
    let server = Server::start(&[]);
    let mut watcher = server.client();
    watcher.subscribe_history(1);
    watcher.recv_point();
    server.signal(libc::SIGSTOP);
    thread::sleep(Duration::from_millis(3500));
    server.signal(libc::SIGCONT);
    let missed = wait_until(Duration::from_secs(5), "missed ticks counted", || {
        let n = server.metric_value("ws_assets_ticks_total{outcome=\"missed\"}");
        if n >= 2.0 {
            Ok(n)
        } else {
            Err(format!("{n} missed"))
        }
    });
    assert!(missed <= 5.0, "{missed} missed for a 3.5 s stop");
    assert!(server.wait_for_log("ticks missed", Duration::from_secs(2)));
    misses_no_second(&mut watcher, 2);
}

#[test]
fn sighup_is_logged_and_the_service_keeps_running() {
    let mut server = Server::start(&[]);
    let mut watcher = server.client();
    watcher.subscribe_history(1);
    server.signal(libc::SIGHUP);
    assert!(server.wait_for_log("SIGHUP", Duration::from_secs(5)));
    misses_no_second(&mut watcher, 2);
    assert_eq!(server.get("/health").0, 200);
    assert_eq!(
        server.wait_exit(Duration::from_millis(100)),
        None,
        "still running"
    );
    server.stop_and_log();
}
