//! `ws_assets health` against the real binary: exit 0 with a running service, 1 with
//! nothing listening, and `--help` naming the command.
//!
//! The server is started by a small launcher of this file's own (port 0, the address
//! read from the start-up log), not by the shared test helpers.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ws_assets");

/// The real server on 127.0.0.1 and a free port; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(BIN)
            .env_clear()
            .env("WS_ASSETS_HOST", "127.0.0.1")
            .env("WS_ASSETS_PORT", "0")
            .env("WS_ASSETS_SIMULATED_BACKFILL", "FALSE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ws_assets");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr.parse().expect("an address after 'listening on'"),
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not log 'listening on' within 30 s");
            }
        };
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `ws_assets health` with only `host` and `port` set.
fn health(host: &str, port: u16) -> Output {
    Command::new(BIN)
        .arg("health")
        .env_clear()
        .env("WS_ASSETS_HOST", host)
        .env("WS_ASSETS_PORT", port.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run ws_assets health")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_running_service_is_healthy() {
    let server = Server::start();
    let out = health("127.0.0.1", server.addr.port());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    assert!(
        text.starts_with(&format!(
            "healthy: http://{}/health answered 200 ",
            server.addr
        )),
        "{text}"
    );
    assert!(text.contains("\"status\":\"ok\""), "{text}");

    // Configured to listen on every address: asked on loopback, so it finds the server.
    let out = health("0.0.0.0", server.addr.port());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains(&format!("http://127.0.0.1:{}/", server.addr.port())));
}

#[test]
fn nothing_listening_is_unhealthy() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let started = Instant::now();
    let out = health("127.0.0.1", port);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with(&format!(
            "unhealthy: http://127.0.0.1:{port}/health: connect"
        )),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_bad_configuration_is_unhealthy_not_an_error_code() {
    let out = health("127.0.0.1", 0);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let out = Command::new(BIN)
        .arg("health")
        .env_clear()
        .env("WS_ASSETS_PORT", "eighty")
        .output()
        .expect("run ws_assets health");
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("unhealthy: invalid WS_ASSETS_PORT"));
}

#[test]
fn help_names_the_health_command() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run ws_assets --help");
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("ws_assets health"),
        "{}",
        stdout(&out)
    );
}
