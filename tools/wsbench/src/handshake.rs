//! The WebSocket upgrade as the tool's clients do it: one request out, the server's
//! answer head checked. Every client of the tool upgrades here (the load's clients in
//! `client.rs`, the blocking probe in `probe.rs`); a mode that negotiates something in
//! the upgrade (an extension, say) adds its request header and reads its answer header
//! here, once.
//!
//! The key comes from tungstenite (`generate_key`) and the expected answer from its
//! `derive_accept_key`; the answer head is read with `httparse` straight from the bytes
//! received, so bytes after the head (the first frames) stay with the caller.

use std::fmt;
use tungstenite::handshake::{client::generate_key, derive_accept_key};

/// Largest answer head accepted: no sane server sends more.
pub const MAX_ANSWER_HEAD: usize = 8192;

/// One client's upgrade in flight: the key it sent, so the answer can be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    key: String,
}

/// Why a server's answer to the upgrade request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The answer head is not valid HTTP.
    Malformed(String),
    /// The server answered with a status other than 101.
    Status(u16),
    /// `Sec-WebSocket-Accept` is missing or does not match the key.
    BadAccept,
    /// The answer head is larger than any sane server sends.
    TooLarge,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Malformed(e) => write!(f, "malformed upgrade answer: {e}"),
            HandshakeError::Status(code) => {
                write!(f, "upgrade answered with HTTP {code}, expected 101")
            }
            HandshakeError::BadAccept => write!(f, "Sec-WebSocket-Accept missing or wrong"),
            HandshakeError::TooLarge => write!(f, "upgrade answer head over 8 KiB"),
        }
    }
}

impl Upgrade {
    /// A new upgrade with a fresh random key.
    pub fn new() -> Upgrade {
        Upgrade::with_key(generate_key())
    }

    fn with_key(key: String) -> Upgrade {
        Upgrade { key }
    }

    /// The `Sec-WebSocket-Accept` a server must answer with (for tests of the callers).
    #[cfg(test)]
    pub fn expected_accept(&self) -> String {
        derive_accept_key(self.key.as_bytes())
    }

    /// The HTTP/1.1 upgrade request for `path` on `host`.
    pub fn request(&self, host: &str, path: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            self.key
        )
    }

    /// Reads the server's answer head from the start of `buf`.
    ///
    /// `Ok(None)` while the head is incomplete; `Ok(Some(n))` with the head's length once
    /// it is complete and a valid 101 answer to this key (bytes after `n` are frames).
    pub fn answer(&self, buf: &[u8]) -> Result<Option<usize>, HandshakeError> {
        let mut headers = [httparse::EMPTY_HEADER; 24];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_ANSWER_HEAD => {
                return Err(HandshakeError::TooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
        };
        let code = resp.code.unwrap_or(0);
        if code != 101 {
            return Err(HandshakeError::Status(code));
        }
        let expected = derive_accept_key(self.key.as_bytes());
        let accept = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|h| h.value.trim_ascii());
        if accept != Some(expected.as_bytes()) {
            return Err(HandshakeError::BadAccept);
        }
        Ok(Some(len))
    }
}

impl Default for Upgrade {
    fn default() -> Self {
        Upgrade::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key and answer of RFC 6455 section 1.3.
    const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn keys_are_24_base64_chars_and_fresh_each_time() {
        let a = Upgrade::new();
        let b = Upgrade::new();
        assert_eq!(a.key.len(), 24);
        assert!(a.key.ends_with("=="), "{}", a.key);
        assert_ne!(a, b);
    }

    #[test]
    fn the_request_carries_path_host_and_key() {
        let u = Upgrade::with_key(RFC_KEY.into());
        let r = u.request("127.0.0.1:9", "/api/v1/websocket");
        assert!(r.starts_with("GET /api/v1/websocket HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
        assert!(r.contains(&format!("Sec-WebSocket-Key: {RFC_KEY}\r\n")));
        assert!(r.ends_with("\r\n\r\n"));
    }

    #[test]
    fn accepts_the_rfc_example_answer() {
        let u = Upgrade::with_key(RFC_KEY.into());
        let head =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x00";
        let n = u.answer(head).unwrap().unwrap();
        assert_eq!(&head[n..], b"\x81\x00");
        assert_eq!(u.answer(&head[..20]), Ok(None));
    }

    #[test]
    fn refuses_wrong_status_wrong_accept_and_endless_heads() {
        let u = Upgrade::with_key(RFC_KEY.into());
        let r = u.answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r, Err(HandshakeError::Status(404)));
        let r = u.answer(b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: xyz\r\n\r\n");
        assert_eq!(r, Err(HandshakeError::BadAccept));
        let mut endless = b"HTTP/1.1 101 OK\r\n".to_vec();
        endless.extend(std::iter::repeat_n(b'x', MAX_ANSWER_HEAD));
        assert_eq!(u.answer(&endless), Err(HandshakeError::TooLarge));
        assert!(matches!(
            u.answer(b"NOT HTTP\r\n\r\n"),
            Err(HandshakeError::Malformed(_))
        ));
    }
}
