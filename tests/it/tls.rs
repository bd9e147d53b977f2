//! Native TLS: the port speaking only `https://` and `wss://` with a certificate the
//! test's own authority issued (see `testca`), its renewal on SIGHUP, and the start-up
//! refusals of a configuration that cannot work.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, ClientConnection, HandshakeKind};
use tungstenite::protocol::frame::coding::CloseCode;

use crate::common::{
    Client, Server, TlsSocket, http_exchange, https_exchange, https_get, masked_text, run_to_exit,
    time_of, tls_connect, try_tls_connect, upgrade_by_hand, wait_until,
};
use crate::testca::{Issued, KeyKind, TestCa};

/// Here rather than in `testca`, which the service's unit tests include too: they start
/// no binary.
impl Issued {
    /// The environment that turns TLS on with this pair.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("WS_ASSETS_TLS_CERT_FILE", self.chain.display().to_string()),
            ("WS_ASSETS_TLS_KEY_FILE", self.key.display().to_string()),
        ]
    }
}

/// Starts the server with TLS on `issued` plus `env`.
fn start_tls(issued: &Issued, env: &[(&str, &str)]) -> Server {
    let files = issued.env();
    let mut all: Vec<(&str, &str)> = files.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(env);
    Server::start(&all)
}

/// A WebSocket client over TLS on `/api/v1/websocket`.
fn wss(server: &Server, config: &Arc<ClientConfig>) -> Client<TlsSocket> {
    Client::connect_tls(server.addr, "/api/v1/websocket", config)
}

/// Reads `seconds` more points and fails if one second is missing.
fn misses_no_second(client: &mut Client<TlsSocket>, seconds: usize) {
    let mut last = time_of(&client.recv_point());
    for _ in 0..seconds {
        let time = time_of(&client.recv_point());
        assert_eq!(time, last + 1, "the subscriber missed a second");
        last = time;
    }
}

/// `/metrics` over TLS, one series' value.
fn metric(server: &Server, config: &Arc<ClientConfig>, series: &str) -> f64 {
    let (status, body) = https_get(server.addr, config, "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// The certificate a new connection is served: a client of its own, with no session
/// to resume (a resumed session shows the certificate it was first made with).
fn served_certificate(ca: &TestCa, addr: SocketAddr) -> Vec<u8> {
    let tls = tls_connect(addr, &ca.client_config());
    assert_eq!(tls.conn.handshake_kind(), Some(HandshakeKind::Full));
    tls.conn.peer_certificates().expect("a certificate")[0].to_vec()
}

#[test]
fn wss_streams_history_and_points_and_https_serves_the_page_health_and_metrics() {
    let ca = TestCa::new();
    let issued = ca.issue("server", KeyKind::Ecdsa);
    let server = start_tls(&issued, &[]);
    assert!(
        server
            .log()
            .contains("TLS only (https, wss): 2 certificates, ECDSA key"),
        "{}",
        server.log()
    );
    let config = ca.client_config();

    let mut client = wss(&server, &config);
    assert_eq!(
        client.ws.get_ref().conn.alpn_protocol(),
        Some(&b"http/1.1"[..])
    );
    let history = client.subscribe_history(1);
    assert!(
        history.len() > 100,
        "a backfilled history, got {}",
        history.len()
    );
    let last = time_of(history.last().unwrap());
    let first_live = time_of(&client.recv_point());
    assert_eq!(first_live, last + 1, "the seam");
    misses_no_second(&mut client, 2);
    client.send_text(r#"{"action":"assets","message":{}}"#);
    assert_eq!(
        client.recv_action("assets")["message"]["assets"][0]["name"],
        "EURUSD"
    );

    let (status, page) = https_get(server.addr, &config, "/");
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "the test page");
    let (status, health) = https_get(server.addr, &config, "/health");
    assert_eq!(status, 200, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(
        metric(&server, &config, "ws_assets_websocket_upgrades_total"),
        1.0
    );
}

#[test]
fn ws_assets_health_asks_over_https_when_tls_is_configured() {
    let ca = TestCa::new();
    let issued = ca.issue("server", KeyKind::Ecdsa);
    let server = start_tls(&issued, &[]);
    let port = server.addr.port().to_string();
    let files = issued.env();
    let mut env: Vec<(&str, &str)> = files.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([
        ("WS_ASSETS_HOST", "0.0.0.0"),
        ("WS_ASSETS_PORT", port.as_str()),
    ]);
    let out = run_to_exit(&["health"], &env, Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stdout.starts_with(&format!(
            "healthy: https://127.0.0.1:{port}/health answered 200 "
        )),
        "{}",
        out.stdout
    );
    // Asked without the TLS settings, the answer says what is wrong.
    let out = run_to_exit(
        &["health"],
        &[("WS_ASSETS_PORT", port.as_str())],
        Duration::from_secs(10),
    );
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(out.stdout.contains("answered 400"), "{}", out.stdout);
    assert!(out.stdout.contains("TLS only"), "{}", out.stdout);
}

#[test]
fn every_key_kind_serves_tls_1_3_and_1_2_and_sessions_resume() {
    let ca = TestCa::new();
    for kind in [KeyKind::Ecdsa, KeyKind::Rsa, KeyKind::Ed25519] {
        let issued = ca.issue(&format!("{kind:?}"), kind);
        let server = start_tls(&issued, &[]);
        for version in [&TLS13, &TLS12] {
            let config = ca.client_config_for(&[version]);
            let first = tls_connect(server.addr, &config);
            assert_eq!(
                first.conn.protocol_version(),
                Some(version.version),
                "{kind:?}"
            );
            assert_eq!(first.conn.handshake_kind(), Some(HandshakeKind::Full));
            let (status, _) = https_get(server.addr, &config, "/health");
            assert_eq!(status, 200, "{kind:?} {version:?}");
            let again = tls_connect(server.addr, &config);
            assert_eq!(
                again.conn.handshake_kind(),
                Some(HandshakeKind::Resumed),
                "{kind:?} {version:?}: a second connection resumes the session"
            );
        }
    }
}

#[test]
fn plain_http_on_the_tls_port_is_answered_400_and_closed_without_a_log_line() {
    let ca = TestCa::new();
    let issued = ca.issue("server", KeyKind::Ecdsa);
    let server = start_tls(&issued, &[("WS_ASSETS_LOG_LEVEL", "info")]);
    let config = ca.client_config();
    let lines = server.log().lines().count();
    for _ in 0..20 {
        let answer = http_exchange(
            server.addr,
            b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
            Duration::from_secs(10),
        );
        assert_eq!(answer.status, 400, "{}", answer.head);
        assert!(
            answer.text().contains("use https:// or wss://"),
            "{}",
            answer.text()
        );
        assert!(answer.closed, "the connection is closed after the answer");
    }
    assert_eq!(
        metric(
            &server,
            &config,
            r#"ws_assets_clients_dropped_total{reason="plain_http"}"#
        ),
        20.0
    );
    assert_eq!(
        server.log().lines().count(),
        lines,
        "no log line per attempt:\n{}",
        server.log()
    );
    // A handshake that fails (a client that does not trust the certificate) is counted
    // the same quiet way.
    let stranger = TestCa::new().client_config();
    assert!(try_tls_connect(server.addr, &stranger).is_err());
    wait_until(
        Duration::from_secs(5),
        "the failed handshake counted",
        || match metric(
            &server,
            &config,
            r#"ws_assets_clients_dropped_total{reason="tls_handshake"}"#,
        ) {
            1.0 => Ok(()),
            n => Err(format!("{n}")),
        },
    );
    assert_eq!(server.log().lines().count(), lines, "{}", server.log());
}

#[test]
fn sighup_renews_the_certificate_while_an_open_connection_streams_across_it() {
    let ca = TestCa::new();
    let old = ca.issue("old", KeyKind::Ecdsa);
    let new = ca.issue("new", KeyKind::Rsa);
    let live = Issued {
        chain: ca.path("live.pem"),
        key: ca.path("live.key"),
    };
    let install = |from: &Issued| {
        std::fs::copy(&from.chain, &live.chain).unwrap();
        std::fs::copy(&from.key, &live.key).unwrap();
    };
    install(&old);
    let server = start_tls(&live, &[]);
    let config = ca.client_config();
    assert_eq!(served_certificate(&ca, server.addr), old.certificate());
    let mut streaming = wss(&server, &config);
    streaming.subscribe_history(2);
    misses_no_second(&mut streaming, 1);

    install(&new);
    server.signal(libc::SIGHUP);
    assert!(
        server.wait_for_log("TLS certificate reloaded", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    assert_eq!(served_certificate(&ca, server.addr), new.certificate());
    // The open connection goes on, on the session it started with.
    misses_no_second(&mut streaming, 2);

    // A renewal gone wrong (a key that is not the certificate's): the new pair stays.
    std::fs::copy(&old.key, &live.key).unwrap();
    server.signal(libc::SIGHUP);
    assert!(
        server.wait_for_log("TLS certificate not reloaded", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    assert!(
        server.log().contains("does not belong to the certificate"),
        "{}",
        server.log()
    );
    assert_eq!(served_certificate(&ca, server.addr), new.certificate());
    misses_no_second(&mut streaming, 1);
    assert_eq!(
        metric(
            &server,
            &config,
            r#"ws_assets_tls_reloads_total{outcome="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &server,
            &config,
            r#"ws_assets_tls_reloads_total{outcome="failed"}"#
        ),
        1.0
    );
}

#[test]
fn handshakes_are_bounded_by_the_handshake_timeout_and_count_among_the_connections() {
    let ca = TestCa::new();
    let issued = ca.issue("server", KeyKind::Ecdsa);
    let server = start_tls(
        &issued,
        &[
            ("WS_ASSETS_MAX_CONNECTIONS", "3"),
            ("WS_ASSETS_HANDSHAKE_TIMEOUT_SECONDS", "2"),
        ],
    );
    let config = ca.client_config();
    // Three clients that connect and never start their handshake take every slot.
    let started = Instant::now();
    let mut silent: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    wait_until(Duration::from_secs(5), "three connections open", || {
        let (_, health) = https_get(server.addr, &config, "/health");
        let health: serde_json::Value = serde_json::from_str(&health).unwrap();
        match health["clients"].as_u64() {
            Some(n) if n >= 4 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let refused = https_exchange(
        server.addr,
        &config,
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(refused.status, 503, "{}", refused.head);
    assert!(refused.text().contains("connection limit reached"));
    // The deadline ends the handshakes that never came.
    for stream in &mut silent {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 16];
        assert!(matches!(stream.read(&mut buf), Ok(0) | Err(_)));
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "dropped after {waited:?}");
    assert_eq!(
        metric(
            &server,
            &config,
            r#"ws_assets_clients_dropped_total{reason="handshake_timeout"}"#
        ),
        3.0
    );
    let mut client = wss(&server, &config);
    client.subscribe_history(1);
}

#[test]
fn a_tls_client_that_never_reads_is_closed_as_a_slow_consumer() {
    let ca = TestCa::new();
    let issued = ca.issue("server", KeyKind::Ecdsa);
    let server = start_tls(&issued, &[("WS_ASSETS_CLIENT_QUEUE_BYTES", "262144")]);
    let config = ca.client_config();
    let mut bystander = wss(&server, &config);
    bystander.subscribe_history(2);
    let mut hog = tls_connect(server.addr, &config);
    upgrade_by_hand(&mut hog);
    let subscribe = masked_text(br#"{"action":"subscribe","message":{"assetId":1}}"#);
    hog.sock
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    for _ in 0..400 {
        if hog
            .write_all(&subscribe)
            .and_then(|()| hog.flush())
            .is_err()
        {
            break;
        }
    }
    assert!(
        server.wait_for_log("slow consumer", Duration::from_secs(15)),
        "{}",
        server.log()
    );
    // Reading now, the hog finds the close frame (1008) after what was already sent
    // (within the 3 s the server lingers for it).
    let mut hog = Client {
        ws: tungstenite::WebSocket::from_raw_socket(hog, tungstenite::protocol::Role::Client, None),
    };
    assert_eq!(hog.recv_close(), Some(CloseCode::Policy));
    misses_no_second(&mut bystander, 2);
    assert_eq!(
        metric(
            &server,
            &config,
            r#"ws_assets_clients_dropped_total{reason="slow_consumer"}"#
        ),
        1.0
    );
}

#[test]
fn a_thousand_handshakes_at_once_while_a_subscriber_misses_no_second() {
    let ca = TestCa::new();
    let issued = ca.issue("server", KeyKind::Ecdsa);
    let server = start_tls(&issued, &[("WS_ASSETS_LOG_LEVEL", "info")]);
    let config = ca.client_config();
    let mut watcher = wss(&server, &config);
    watcher.subscribe_history(1);
    let first = time_of(&watcher.recv_point());
    let addr = server.addr;
    let crowd_config = Arc::clone(&config);
    let crowd = thread::spawn(move || handshake_crowd(addr, &crowd_config, 1000));
    let mut last = first;
    while !crowd.is_finished() {
        let time = time_of(&watcher.recv_point());
        assert_eq!(
            time,
            last + 1,
            "the subscriber missed a second during the handshakes"
        );
        last = time;
    }
    let answered = crowd.join().unwrap();
    assert_eq!(answered, 1000, "every client got its answer over TLS");
    misses_no_second(&mut watcher, 1);
    assert_eq!(
        metric(
            &server,
            &config,
            r#"ws_assets_ticks_total{outcome="missed"}"#
        ),
        0.0
    );
}

/// Opens `n` TCP connections, then drives all their TLS handshakes at once (one
/// thread, non-blocking sockets), each followed by `GET /health`; returns how many got
/// a `200`.
fn handshake_crowd(addr: SocketAddr, config: &Arc<ClientConfig>, n: usize) -> usize {
    struct Pending {
        tls: ClientConnection,
        tcp: TcpStream,
        asked: bool,
        answer: Vec<u8>,
        done: bool,
    }
    let name = ServerName::try_from("localhost").unwrap();
    let mut crowd: Vec<Pending> = (0..n)
        .map(|_| {
            let tcp = TcpStream::connect(addr).unwrap();
            tcp.set_nonblocking(true).unwrap();
            Pending {
                tls: ClientConnection::new(Arc::clone(config), name.clone()).unwrap(),
                tcp,
                asked: false,
                answer: Vec::new(),
                done: false,
            }
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut left = n;
    while left > 0 && Instant::now() < deadline {
        let mut progress = false;
        for p in crowd.iter_mut().filter(|p| !p.done) {
            while p.tls.wants_write() {
                match p.tls.write_tls(&mut p.tcp) {
                    Ok(_) => progress = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            match p.tls.read_tls(&mut p.tcp) {
                Ok(0) => {
                    p.done = true;
                    left -= 1;
                    continue;
                }
                Ok(_) => {
                    progress = true;
                    p.tls.process_new_packets().expect("a good handshake");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            if !p.tls.is_handshaking() && !p.asked {
                p.asked = true;
                p.tls
                    .writer()
                    .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .unwrap();
            }
            let _ = p.tls.reader().read_to_end(&mut p.answer);
        }
        if !progress {
            thread::sleep(Duration::from_millis(2));
        }
    }
    crowd
        .iter()
        .filter(|p| p.answer.starts_with(b"HTTP/1.1 200"))
        .count()
}

/// The base64 body of a PEM file, in pieces long enough to be recognised anywhere.
fn key_pieces(pem_file: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(pem_file).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    body.as_bytes()
        .chunks(12)
        .filter(|c| c.len() == 12)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect()
}

#[test]
fn start_up_refuses_a_tls_configuration_that_cannot_work_naming_variable_file_and_problem() {
    let ca = TestCa::new();
    let good = ca.issue("good", KeyKind::Ecdsa);
    let other = ca.issue("other", KeyKind::Rsa);
    ca.write("empty.key", "");
    let chain = good.chain.display().to_string();
    let key = good.key.display().to_string();
    let other_key = other.key.display().to_string();
    let missing = ca.path("missing.pem").display().to_string();
    let directory = ca.path("").display().to_string();
    let empty = ca.path("empty.key").display().to_string();
    let cert_var = "WS_ASSETS_TLS_CERT_FILE";
    let key_var = "WS_ASSETS_TLS_KEY_FILE";
    // What is wrong, the environment, what the refusal must say.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<String>);
    let cases: Vec<Case> = vec![
        (
            "the certificate without the key",
            vec![(cert_var, &chain)],
            vec![key_var.into(), format!("required when {cert_var} is set")],
        ),
        (
            "the key without the certificate",
            vec![(key_var, &key)],
            vec![cert_var.into(), format!("required when {key_var} is set")],
        ),
        (
            "a certificate file that does not exist",
            vec![(cert_var, &missing), (key_var, &key)],
            vec![format!("{cert_var}={missing}: cannot read the file")],
        ),
        (
            "a key file that cannot be read",
            vec![(cert_var, &chain), (key_var, &directory)],
            vec![format!("{key_var}={directory}: cannot read the file")],
        ),
        (
            "a key that is not the certificate's",
            vec![(cert_var, &chain), (key_var, &other_key)],
            vec![
                format!("{key_var}={other_key}: this private key does not belong"),
                format!("{cert_var}={chain}"),
            ],
        ),
        (
            "the two files swapped",
            vec![(cert_var, &key), (key_var, &chain)],
            vec![
                format!("{cert_var}={key}: no certificate"),
                "swapped".into(),
            ],
        ),
        (
            "an empty key file",
            vec![(cert_var, &chain), (key_var, &empty)],
            vec![format!("{key_var}={empty}: no private key")],
        ),
    ];
    let secret = [key_pieces(&good.key), key_pieces(&other.key)].concat();
    for (case, env, needles) in cases {
        let run = run_to_exit(&[], &env, Duration::from_secs(30));
        assert_eq!(run.code, Some(2), "{case}: exit code; log:\n{}", run.stderr);
        for needle in needles {
            assert!(
                run.stderr.contains(&needle),
                "{case}: no {needle:?} in:\n{}",
                run.stderr
            );
        }
        assert!(!run.stderr.contains("panicked"), "{case}:\n{}", run.stderr);
        for piece in &secret {
            assert!(
                !run.stderr.contains(piece.as_str()),
                "{case}: key material in:\n{}",
                run.stderr
            );
            assert!(
                !run.stdout.contains(piece.as_str()),
                "{case}: key material in stdout"
            );
        }
    }
}
