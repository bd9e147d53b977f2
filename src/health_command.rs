//! `ws_assets health`: asks a running service for `GET /health` and says whether it is
//! healthy, for container `HEALTHCHECK`s and scripts on hosts without curl.
//!
//! It reads the same configuration as the service (`WS_ASSETS_HOST`, `WS_ASSETS_PORT`),
//! so it finds the service started with that environment. A service listening on every
//! address (`0.0.0.0` or `::`) is asked on the matching loopback address. The whole
//! exchange (connect, request, answer) must finish within [`TIMEOUT`]. The client is the
//! feed's HTTP client (ureq), set up for one local question: no proxy from the
//! environment, no redirects followed, any status taken as an answer; only the status
//! decides.
//!
//! With TLS configured (`WS_ASSETS_TLS_CERT_FILE`, `WS_ASSETS_TLS_KEY_FILE`) the port
//! speaks only TLS, so the question is asked over `https`, without checking the
//! certificate: it names the service's public host, not the loopback address asked, and
//! the probe sends nothing secret and is asked nothing but whether the service on this
//! host answers. (Whether the certificate is right for the clients is a question for a
//! client that connects by that name, e.g. `curl https://HOST:PORT/health`.)

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Config;

/// Longest time one check may take, from connect to the end of the answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Largest body read; `/health` bodies are a few hundred bytes.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// Longest part of the answer's body quoted in a report line.
const QUOTED_BODY_CHARS: usize = 300;

/// How the service's port is spoken to: what the configuration makes it speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (no TLS configured).
    Http,
    /// HTTP over TLS (`WS_ASSETS_TLS_CERT_FILE` and `WS_ASSETS_TLS_KEY_FILE` set).
    Https,
}

impl Scheme {
    /// The scheme a service configured with `config` speaks, chosen here and nowhere else.
    pub fn of(config: &Config) -> Scheme {
        if config.tls.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The address asked.
    pub addr: SocketAddr,
    /// How it was asked.
    pub scheme: Scheme,
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
    /// One line: `healthy` or `unhealthy`, the URL, and the status and body or error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.healthy() {
            "healthy"
        } else {
            "unhealthy"
        };
        let url = url(self.scheme, self.addr);
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
                write!(f, "{verdict}: {url} answered {} {body}", answer.status)
            }
            Err(error) => write!(f, "{verdict}: {url}: {error}"),
        }
    }
}

/// The URL of the service's `/health` at `addr`, spoken to with `scheme`.
pub fn url(scheme: Scheme, addr: SocketAddr) -> String {
    format!("{}://{addr}/health", scheme.as_str())
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

/// Checks the service configured with `config` (see [`target`]).
pub fn check_config(config: &Config) -> Report {
    let addr = target(config);
    let scheme = Scheme::of(config);
    if addr.port() == 0 {
        return Report {
            addr,
            scheme,
            outcome: Err(
                "WS_ASSETS_PORT is 0 (a free port picked at start-up); set the port the service listens on"
                    .to_string(),
            ),
        };
    }
    check(scheme, addr, TIMEOUT)
}

/// Sends `GET /health` to `addr` with `scheme` and reads the answer, all within
/// `timeout`.
pub fn check(scheme: Scheme, addr: SocketAddr, timeout: Duration) -> Report {
    Report {
        addr,
        scheme,
        outcome: fetch(scheme, addr, timeout),
    }
}

/// One `GET` of [`url`]`(scheme, addr)` on an agent of its own, its status and body read
/// within `timeout`.
fn fetch(scheme: Scheme, addr: SocketAddr, timeout: Duration) -> Result<Answer, String> {
    // The certificate is not checked (see the module's documentation); the handshake is
    // still a full one, so a service that cannot complete it is unhealthy.
    let tls = ureq::tls::TlsConfig::builder()
        .disable_verification(true)
        .build();
    let agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(timeout))
        // A 503 is an answer to report, not a failure to fetch one.
        .http_status_as_error(false)
        // The service is asked where it listens: an `HTTP_PROXY` of the environment
        // (which ureq would otherwise follow) cannot reach its loopback address.
        .proxy(None)
        // The answer of the address asked decides, not the one of a redirect's target.
        .max_redirects(0)
        .user_agent("ws_assets-health")
        .build()
        .new_agent();
    let mut response = agent
        .get(url(scheme, addr))
        .call()
        .map_err(|e| describe(e, timeout))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_vec()
        .map_err(|e| describe(e, timeout))?;
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Why there is no answer, in the report's words: the step that failed, then the cause.
fn describe(error: ureq::Error, timeout: Duration) -> String {
    match error {
        ureq::Error::Timeout(_) => format!("timed out: no complete answer within {timeout:?}"),
        ureq::Error::Io(e) if is_connect_failure(&e) => format!("connect: {e}"),
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            "connection closed without a complete answer".to_string()
        }
        ureq::Error::Io(e) => format!("receive: {e}"),
        ureq::Error::Protocol(e) => format!("not an HTTP answer: {e}"),
        ureq::Error::BodyExceedsLimit(_) | ureq::Error::LargeResponseHeader(..) => {
            format!("answer larger than {MAX_ANSWER_BYTES} bytes")
        }
        other => other.to_string(),
    }
}

/// Whether an I/O error means the connection was never made (nothing listening, no
/// route), as opposed to one that broke.
fn is_connect_failure(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::NetworkDown
            | io::ErrorKind::AddrNotAvailable
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::thread;
    use std::time::Instant;

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
        assert_eq!(
            url(Scheme::Http, "[::1]:81".parse().unwrap()),
            "http://[::1]:81/health"
        );
        assert_eq!(
            url(Scheme::Https, "127.0.0.1:8443".parse().unwrap()),
            "https://127.0.0.1:8443/health"
        );
    }

    #[test]
    fn tls_in_the_configuration_means_https() {
        assert_eq!(Scheme::of(&config("127.0.0.1", "8080")), Scheme::Http);
        let tls = Config::from_lookup(|name| match name {
            "WS_ASSETS_TLS_CERT_FILE" => Some("/c.pem".into()),
            "WS_ASSETS_TLS_KEY_FILE" => Some("/k.pem".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(Scheme::of(&tls), Scheme::Https);
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

    /// Serves one connection with `answer` after reading the request head, then closes it.
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
            // A client that stops reading early (an answer over its limit) may close first.
            let _ = stream.write_all(answer);
        });
        addr
    }

    #[test]
    fn two_hundred_is_healthy_anything_else_is_not() {
        let ok = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}");
        let report = check(Scheme::Http, ok, TIMEOUT);
        assert!(report.healthy(), "{report}");
        assert_eq!(
            report.to_string(),
            format!("healthy: http://{ok}/health answered 200 {{\"status\":\"ok\"}}")
        );

        let bad = serve_once(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}");
        let report = check(Scheme::Http, bad, TIMEOUT);
        assert!(!report.healthy());
        assert_eq!(
            report.to_string(),
            format!("unhealthy: http://{bad}/health answered 503 {{}}")
        );
    }

    #[test]
    fn the_body_ends_where_its_length_says() {
        let addr = serve_once(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 25\r\n\r\n{\"status\":\"unavailable\"}\nextra",
        );
        let answer = check(Scheme::Http, addr, TIMEOUT).outcome.unwrap();
        assert_eq!(answer.status, 503);
        assert_eq!(answer.body, "{\"status\":\"unavailable\"}\n");

        // Without a length, the body runs to the end of the connection.
        let addr = serve_once(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"status\":\"ok\"}");
        let report = check(Scheme::Http, addr, TIMEOUT);
        assert!(report.healthy(), "{report}");
        assert_eq!(report.outcome.unwrap().body, "{\"status\":\"ok\"}");
    }

    #[test]
    fn a_redirect_is_reported_not_followed() {
        let addr = serve_once(
            b"HTTP/1.1 301 Moved Permanently\r\nLocation: http://127.0.0.1:1/health\r\nContent-Length: 0\r\n\r\n",
        );
        let report = check(Scheme::Http, addr, TIMEOUT);
        assert!(!report.healthy());
        assert!(report.to_string().contains("answered 301"), "{report}");
    }

    #[test]
    fn what_is_not_an_answer_is_unhealthy_and_says_why() {
        for (answer, why) in [
            (&b""[..], "closed without a complete answer"),
            (
                b"HTTP/1.1 200 OK\r\nX: y",
                "closed without a complete answer",
            ),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"sta",
                "closed without a complete answer",
            ),
        ] {
            let report = check(Scheme::Http, serve_once(answer), TIMEOUT);
            assert!(!report.healthy(), "{report}");
            assert!(report.to_string().contains(why), "{report}");
        }
    }

    #[test]
    fn an_answer_over_the_limit_is_refused() {
        static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let big = BIG.get_or_init(|| {
            let body = "x".repeat(MAX_ANSWER_BYTES as usize + 1);
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        });
        let report = check(Scheme::Http, serve_once(big), TIMEOUT);
        assert!(!report.healthy());
        assert!(
            report.to_string().contains("answer larger than"),
            "{report}"
        );
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let started = Instant::now();
        let report = check(Scheme::Http, addr, Duration::from_millis(300));
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
        let report = check(Scheme::Http, addr, TIMEOUT);
        assert!(!report.healthy());
        assert!(
            report
                .to_string()
                .starts_with(&format!("unhealthy: http://{addr}/health: connect: ")),
            "{report}"
        );
    }
}
