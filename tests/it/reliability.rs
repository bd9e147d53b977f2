//! No client, log sink or stall may hold up the loop or grow its memory: each test
//! reproduces an abuse against the real binary with a well-behaved subscriber alongside,
//! which must miss no second.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    Client, Server, assert_seconds_follow, masked_frame, masked_text, raw_websocket,
    read_until_closed, server_frames, time_of, wait_until,
};

/// Reads `watcher`'s live points for `seconds` seconds and fails the test on any gap
/// the server did not count as a tick without a point (a loaded machine may hold the
/// server up past a second; the server says so).
fn misses_no_second(server: &Server, watcher: &mut Client, seconds: usize) {
    let times: Vec<i64> = (0..=seconds)
        .map(|_| time_of(&watcher.recv_point()))
        .collect();
    assert_seconds_follow(
        &times,
        server.ticks_without_point(),
        "the subscriber's live points",
    );
}

/// Subscribes a client to every asset in turn and leaves, so that every asset's shared
/// history frame exists before a memory baseline is read (as the soak does): a later
/// subscriber must not look like growth.
fn warm_every_history(server: &Server) {
    let mut client = server.client();
    for id in 1..=5 {
        client.subscribe_history(id);
    }
}

/// Warms every history, lets the server settle, and reads its private memory.
fn memory_baseline(server: &Server) -> u64 {
    warm_every_history(server);
    thread::sleep(Duration::from_secs(1));
    server.private_memory_bytes()
}

/// Waits up to `within` for the server to give back what it took above `baseline` (at
/// `peak`): it may keep a tenth of that, or a tenth of its baseline if more, for the
/// allocator's caches of small freed chunks, which pin a few pages (see the README's
/// soak figures). A connection table or subscriber list left at the crowd's size, or
/// freed memory not handed back, keeps far more.
fn memory_comes_back(server: &Server, baseline: u64, peak: u64, within: Duration) {
    let allowed = baseline + (peak.saturating_sub(baseline)).max(baseline) / 10;
    wait_until(within, "private memory back near its baseline", || {
        let now = server.private_memory_bytes();
        if now <= allowed {
            Ok(())
        } else {
            Err(format!(
                "{now} B; baseline {baseline} B, peak {peak} B, allowed {allowed} B"
            ))
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
    misses_no_second(&server, &mut watcher, 3);

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
    let baseline = memory_baseline(&server);
    let mut watcher = server.client();
    watcher.subscribe_history(1);

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
        peak = peak.max(server.private_memory_bytes());
        thread::sleep(Duration::from_millis(100));
    }
    // Each flooder may cost its queue limit plus the buffers of a connection.
    let allowed = baseline + flooders * (limit + 64 * 1024) + 4 * 1024 * 1024;
    assert!(
        peak <= allowed,
        "private memory reached {peak} B under {flooders} ping floods (baseline {baseline} B, allowed {allowed} B)"
    );
    misses_no_second(&server, &mut watcher, 2);

    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    drop(streams);
    memory_comes_back(&server, baseline, peak, Duration::from_secs(60));
    misses_no_second(&server, &mut watcher, 1);
}

#[test]
fn memory_comes_back_after_thousands_of_subscribers_leave() {
    let server = Server::start(&[]);
    let baseline = memory_baseline(&server);
    let mut watcher = server.client();
    watcher.subscribe_history(1);

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
    let peak = server.private_memory_bytes();
    drop(streams);
    misses_no_second(&server, &mut watcher, 1);

    // The connection table and subscriber lists sized for the crowd shrink with it, and
    // the freed memory goes back to the system.
    memory_comes_back(&server, baseline, peak, Duration::from_secs(30));
    misses_no_second(&server, &mut watcher, 1);
}

#[test]
fn a_log_sink_nobody_reads_never_holds_up_the_loop() {
    // Standard error is a pipe that nobody reads once the server is listening.
    let mut server = Server::start_with_log_unread(&[]);
    let mut watcher = server.client();
    watcher.subscribe_history(1);

    // Thousands of connections log thousands of debug lines: far more than a pipe holds.
    for _ in 0..5000 {
        let (status, _) = server.get("/health");
        assert_eq!(status, 200);
    }
    misses_no_second(&server, &mut watcher, 3);
    assert!(
        server.metric_value("ws_assets_log_lines_dropped_total") > 0.0,
        "lines were dropped, not waited for"
    );

    // Once the sink reads again, a line says what was lost.
    server.read_log_again();
    assert!(
        server.wait_for_log("log lines dropped", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    drop(watcher);
    server.stop_and_log();
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
    misses_no_second(&server, &mut watcher, 2);
}

#[test]
fn sighup_is_logged_and_the_service_keeps_running() {
    let mut server = Server::start(&[]);
    let mut watcher = server.client();
    watcher.subscribe_history(1);
    server.signal(libc::SIGHUP);
    assert!(server.wait_for_log("SIGHUP", Duration::from_secs(5)));
    misses_no_second(&server, &mut watcher, 2);
    assert_eq!(server.get("/health").0, 200);
    assert_eq!(
        server.wait_exit(Duration::from_millis(100)),
        None,
        "still running"
    );
    server.stop_and_log();
}
