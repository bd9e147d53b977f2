//! `ws_assets health`: asks a running service for `GET /health` and says whether it is
//! healthy, for container `HEALTHCHECK`s and scripts on hosts without curl.
//!
//! It reads the same configuration as the service (`WS_ASSETS_HOST`, `WS_ASSETS_PORT`),
//! so it finds the service started with that environment. A service listening on every
//! address (`0.0.0.0` or `::`) is asked on the matching loopback address. The whole
//! exchange (connect, request, answer) must finish within [`TIMEOUT`]. Plain HTTP over
//! a `std` socket: no event loop, no TLS, nothing but the status line is interpreted.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::config::Config;

/// Longest time one check may take, from connect to the end of the answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Largest answer read; `/health` bodies are a few hundred bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Longest part of the answer's body quoted in a report line.
const QUOTED_BODY_CHARS: usize = 300;

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The address asked.
    pub addr: SocketAddr,
    /// The HTTP status, or why there was none.
    pub outcome: Result<Answer, String>,
}

/// A parsed answer from `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The body, as text (lossy UTF-8).
    pub body: String,
}

impl Report {
    /// True when the service answered 200.
    pub fn healthy(&self) -> bool {
        matches!(&self.outcome, Ok(answer) if answer.status == 200)
    }
}

impl fmt::Display for Report {
    /// One line: `healthy` or `unhealthy`, the address, and the status and body or error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.healthy() {
            "healthy"
        } else {
            "unhealthy"
        };
        match &self.outcome {
            Ok(answer) => {
                let body: String = answer
                    .body
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .chars()
                    .take(QUOTED_BODY_CHARS)
                    .collect();
                write!(
                    f,
                    "{verdict}: http://{}/health answered {} {body}",
                    self.addr, answer.status
                )
            }
            Err(error) => write!(f, "{verdict}: http://{}/health: {error}", self.addr),
        }
    }
}

/// The address to ask for a service configured with `config`: its host and port, with
/// an unspecified host (`0.0.0.0`, `::`) replaced by the loopback address of its family.
pub fn target(config: &Config) -> SocketAddr {
    let ip = match config.host {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, config.port)
}

/// `ws_assets health`: checks the service configured by the environment, prints the
/// report's line and exits 0 when healthy, 1 otherwise (a configuration error included:
/// a container runtime reads exit code 2 as reserved, not as unhealthy).
pub fn main() -> ExitCode {
    match Config::from_env() {
        Ok(config) => {
            let report = check_config(&config);
            println!("{report}");
            if report.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            println!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Checks the service configured with `config` (see [`target`]).
pub fn check_config(config: &Config) -> Report {
    let addr = target(config);
    if addr.port() == 0 {
        return Report {
            addr,
            outcome: Err(
                "WS_ASSETS_PORT is 0 (a free port picked at start-up); set the port the service listens on"
                    .to_string(),
            ),
        };
    }
    check(addr, TIMEOUT)
}

/// Sends `GET /health` to `addr` and reads the answer, all within `timeout`.
pub fn check(addr: SocketAddr, timeout: Duration) -> Report {
    let outcome = fetch(addr, timeout).and_then(|raw| parse_answer(&raw));
    Report { addr, outcome }
}

/// Connects, sends the request and reads until the server closes (every response of the
/// service closes its connection) or the answer is complete.
fn fetch(addr: SocketAddr, timeout: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| describe_io("connect", &e))?;
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: ws_assets-health\r\n\r\n"
    );
    stream
        .set_write_timeout(Some(remaining(deadline, timeout)?))
        .map_err(|e| describe_io("socket", &e))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| describe_io("send", &e))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        stream
            .set_read_timeout(Some(remaining(deadline, timeout)?))
            .map_err(|e| describe_io("socket", &e))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_ANSWER_BYTES {
                    return Err(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
                }
                if answer_complete(&raw) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(describe_io("receive", &e)),
        }
    }
    Ok(raw)
}

/// Time left before `deadline`, or the timeout error when none is left.
fn remaining(deadline: Instant, timeout: Duration) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(format!("no complete answer within {timeout:?}"))
    } else {
        Ok(left)
    }
}

fn describe_io(step: &str, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!("{step}: timed out"),
        _ => format!("{step}: {error}"),
    }
}

/// True once the head is complete and, when it has a `Content-Length`, the body too.
fn answer_complete(raw: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = response.parse(raw) else {
        return false;
    };
    content_length(response.headers).is_some_and(|len| raw.len() - head_len >= len)
}

fn content_length(headers: &[httparse::Header<'_>]) -> Option<usize> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The status and body of a raw HTTP answer.
fn parse_answer(raw: &[u8]) -> Result<Answer, String> {
    if raw.is_empty() {
        return Err("connection closed without an answer".to_string());
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(raw) {
        Ok(httparse::Status::Complete(head_len)) => {
            let status = response
                .code
                .ok_or_else(|| "answer without a status code".to_string())?;
            let mut body = &raw[head_len..];
            if let Some(len) = content_length(response.headers) {
                body = &body[..len.min(body.len())];
            }
            Ok(Answer {
                status,
                body: String::from_utf8_lossy(body).into_owned(),
            })
        }
        Ok(httparse::Status::Partial) => Err("answer ended inside its head".to_string()),
        Err(e) => Err(format!("not an HTTP answer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    fn config(host: &str, port: &str) -> Config {
        Config::from_lookup(|name| match name {
            "WS_ASSETS_HOST" => Some(host.to_string()),
            "WS_ASSETS_PORT" => Some(port.to_string()),
            _ => None,
        })
        .unwrap()
    }

    #[test]
    fn an_unspecified_host_is_asked_on_loopback() {
        assert_eq!(
            target(&config("0.0.0.0", "8080")),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(target(&config("::", "81")), "[::1]:81".parse().unwrap());
        assert_eq!(
            target(&config("10.1.2.3", "9000")),
            "10.1.2.3:9000".parse().unwrap()
        );
        assert_eq!(
            target(&config("localhost", "1")),
            "127.0.0.1:1".parse().unwrap()
        );
    }

    #[test]
    fn port_zero_is_refused_without_connecting() {
        let report = check_config(&config("127.0.0.1", "0"));
        assert!(!report.healthy());
        assert!(
            report.to_string().contains("WS_ASSETS_PORT is 0"),
            "{report}"
        );
    }

    #[test]
    fn parses_status_and_body() {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 25\r\n\r\n{\"status\":\"unavailable\"}\nextra";
        let answer = parse_answer(raw).unwrap();
        assert_eq!(answer.status, 503);
        assert_eq!(answer.body, "{\"status\":\"unavailable\"}\n");
        assert!(parse_answer(b"").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nX: y").is_err());
        assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    /// Serves one connection with `answer`, after reading the request head.
    fn serve_once(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            assert!(head.starts_with(b"GET /health HTTP/1.1\r\n"));
            stream.write_all(answer).unwrap();
        });
        addr
    }

    #[test]
    fn two_hundred_is_healthy_anything_else_is_not() {
        let ok = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}");
        let report = check(ok, TIMEOUT);
        assert!(report.healthy(), "{report}");
        assert_eq!(
            report.to_string(),
            format!("healthy: http://{ok}/health answered 200 {{\"status\":\"ok\"}}")
        );

        let bad = serve_once(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}");
        let report = check(bad, TIMEOUT);
        assert!(!report.healthy());
        assert!(report.to_string().starts_with("unhealthy: "), "{report}");
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let started = Instant::now();
        let report = check(addr, Duration::from_millis(300));
        drop(listener);
        assert!(!report.healthy());
        assert!(report.to_string().contains("timed out"), "{report}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_closed_port_is_unhealthy() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let report = check(addr, TIMEOUT);
        assert!(!report.healthy());
        assert!(report.to_string().contains("connect"), "{report}");
    }
}
