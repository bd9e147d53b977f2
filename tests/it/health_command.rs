//! `ws_assets health` against the real binary: exit 0 with a running service, 1 with
//! nothing listening or a bad configuration, and `--help` naming the command.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::common::{Exited, Server, run_to_exit};

/// Runs `ws_assets health` with `host` and `port` (and whatever else `env` sets).
fn health(host: &str, port: &str, env: &[(&str, &str)]) -> Exited {
    let mut all = vec![("WS_ASSETS_HOST", host), ("WS_ASSETS_PORT", port)];
    all.extend_from_slice(env);
    run_to_exit(&["health"], &all, Duration::from_secs(10))
}

#[test]
fn a_running_service_is_healthy() {
    let server = Server::start(&[("WS_ASSETS_SIMULATED_BACKFILL", "FALSE")]);
    let port = server.addr.port().to_string();
    let out = health("127.0.0.1", &port, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 1, "one line: {:?}", out.stdout);
    assert!(
        out.stdout.starts_with(&format!(
            "healthy: http://{}/health answered 200 ",
            server.addr
        )),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("\"status\":\"ok\""), "{}", out.stdout);

    // Configured to listen on every address: asked on loopback, so it finds the server.
    let out = health("0.0.0.0", &port, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("http://127.0.0.1:{port}/")));

    // A proxy in the environment (a container's, for its outbound traffic) is not asked:
    // it would answer for the service, or, as this one, not at all.
    let proxy = format!("http://127.0.0.1:{}", closed_port());
    let out = health(
        "127.0.0.1",
        &port,
        &[
            ("HTTP_PROXY", &proxy),
            ("http_proxy", &proxy),
            ("ALL_PROXY", &proxy),
            ("NO_PROXY", "example.invalid"),
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.stdout);
}

/// A loopback port with nothing listening.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn nothing_listening_is_unhealthy() {
    let port = closed_port();
    let started = Instant::now();
    let out = health("127.0.0.1", &port.to_string(), &[]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stdout.starts_with(&format!(
            "unhealthy: http://127.0.0.1:{port}/health: connect"
        )),
        "{}",
        out.stdout
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_bad_configuration_is_unhealthy_not_an_error_code() {
    let out = health("127.0.0.1", "0", &[]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let out = health("127.0.0.1", "eighty", &[]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stdout.starts_with("unhealthy: invalid WS_ASSETS_PORT"),
        "{}",
        out.stdout
    );
}

#[test]
fn help_names_the_health_command() {
    let out = run_to_exit(&["--help"], &[], Duration::from_secs(10));
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.contains("ws_assets health"), "{}", out.stdout);
}
