//! Plain HTTP/1.1 on the service's port, written by hand so a test says every byte.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One answer to a raw request.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code; 0 if no status line came.
    pub status: u16,
    /// The status line and headers, without the blank line.
    pub head: String,
    /// Everything after the head.
    pub body: Vec<u8>,
    /// Whether the server closed the connection (EOF or reset) rather than leaving it
    /// open until the wait passed.
    pub closed: bool,
}

impl HttpResponse {
    /// The value of the first header called `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Connects to `addr`, writes `request` as is and reads until the server closes the
/// connection or sends nothing for `wait`; [`HttpResponse::closed`] says which.
pub fn try_http_exchange(
    addr: SocketAddr,
    request: &[u8],
    wait: Duration,
) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(wait))?;
    exchange(&mut stream, request)
}

/// Writes `request` on `stream` (whose read timeout is the wait) and reads the answer
/// until the server closes the connection or the read times out.
pub fn exchange<S: Read + Write>(stream: &mut S, request: &[u8]) -> io::Result<HttpResponse> {
    stream.write_all(request)?;
    stream.flush()?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let closed = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break false;
            }
            // A reset ends the connection too.
            Err(_) => break true,
        }
    };
    let (head, body) = match answer.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => (
            String::from_utf8_lossy(&answer[..end]).into_owned(),
            answer[end + 4..].to_vec(),
        ),
        None => (String::from_utf8_lossy(&answer).into_owned(), Vec::new()),
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(HttpResponse {
        status,
        head,
        body,
        closed,
    })
}

/// [`try_http_exchange`], failing the test when the server cannot be reached.
pub fn http_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> HttpResponse {
    try_http_exchange(addr, request, wait).unwrap_or_else(|e| panic!("HTTP request to {addr}: {e}"))
}

/// Sends raw bytes and reads the whole answer (the server closes after one response);
/// returns (status, body).
pub fn http_request(addr: SocketAddr, request: &str) -> (u16, String) {
    let response = http_exchange(addr, request.as_bytes(), Duration::from_secs(10));
    (response.status, response.text())
}
