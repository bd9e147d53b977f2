//! The WebSocket upgrade as the tool's clients do it: one request out, the server's
//! answer head checked. Every client of the tool upgrades here (the load's clients in
//! `client.rs`, the blocking probe in `probe.rs`); a mode that negotiates something in
//! the upgrade (an extension, say) adds its request header and reads its answer header
//! here, once.
//!
//! permessage-deflate (RFC 7692) is offered as browsers offer it,
//! `permessage-deflate; client_max_window_bits`. The tool inflates each message on its
//! own with one inflater per process, so it accepts the server's answer only with
//! `server_no_context_takeover`; the tool sends nothing compressed, so the client
//! parameters need nothing of it. Anything else in the answer fails the upgrade (RFC
//! 6455 §9.1: a client fails on an extension it did not ask for).
//!
//! The key comes from tungstenite (`generate_key`) and the expected answer from its
//! `derive_accept_key`; the answer head is read with `httparse` straight from the bytes
//! received, so bytes after the head (the first frames) stay with the caller.

use std::fmt;
use tungstenite::handshake::{client::generate_key, derive_accept_key};

/// Largest answer head accepted: no sane server sends more.
pub const MAX_ANSWER_HEAD: usize = 8192;

/// The `Sec-WebSocket-Extensions` offer a client that asks for compression sends.
pub const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// One client's upgrade in flight: the key it sent and whether it offered
/// permessage-deflate, so the answer can be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    key: String,
    deflate: bool,
}

/// A complete answer head that accepted the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The head's length: the bytes after it are frames.
    pub head_len: usize,
    /// The server accepted the permessage-deflate offer: its messages may come compressed.
    pub deflate: bool,
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
    /// `Sec-WebSocket-Extensions` names something the client did not offer or cannot
    /// honour; the text says what.
    Extension(String),
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
            HandshakeError::Extension(why) => write!(f, "Sec-WebSocket-Extensions: {why}"),
        }
    }
}

impl Upgrade {
    /// A new upgrade with a fresh random key, offering permessage-deflate if `deflate`.
    pub fn new(deflate: bool) -> Upgrade {
        Upgrade::with_key(generate_key(), deflate)
    }

    fn with_key(key: String, deflate: bool) -> Upgrade {
        Upgrade { key, deflate }
    }

    /// The `Sec-WebSocket-Accept` a server must answer with (for tests of the callers).
    #[cfg(test)]
    pub fn expected_accept(&self) -> String {
        derive_accept_key(self.key.as_bytes())
    }

    /// The HTTP/1.1 upgrade request for `path` on `host`.
    pub fn request(&self, host: &str, path: &str) -> String {
        let offer = if self.deflate {
            format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n")
        } else {
            String::new()
        };
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n",
            self.key
        )
    }

    /// Reads the server's answer head from the start of `buf`.
    ///
    /// `Ok(None)` while the head is incomplete; `Ok(Some(_))` once it is complete and a
    /// valid 101 answer to this key, with its length and whether compression was agreed.
    pub fn answer(&self, buf: &[u8]) -> Result<Option<Accepted>, HandshakeError> {
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
        let mut deflate = false;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("sec-websocket-extensions") {
                let value = std::str::from_utf8(h.value)
                    .map_err(|_| HandshakeError::Extension("not ASCII".into()))?;
                for extension in value.split(',').filter(|e| !e.trim().is_empty()) {
                    if deflate {
                        return Err(HandshakeError::Extension(
                            "more than one extension agreed".into(),
                        ));
                    }
                    deflate = self.agreed_deflate(extension)?;
                }
            }
        }
        Ok(Some(Accepted {
            head_len: len,
            deflate,
        }))
    }

    /// Checks one extension of the answer: it must be permessage-deflate, offered, and
    /// each message compressed on its own (`server_no_context_takeover`).
    fn agreed_deflate(&self, extension: &str) -> Result<bool, HandshakeError> {
        let refuse = |why: String| Err(HandshakeError::Extension(why));
        let mut parts = extension.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        if !self.deflate || !name.eq_ignore_ascii_case("permessage-deflate") {
            return refuse(format!("{name:?} was not offered"));
        }
        let mut seen: Vec<String> = Vec::new();
        for param in parts {
            let (key, value) = match param.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
                None => (param, None),
            };
            let key = key.to_ascii_lowercase();
            if seen.contains(&key) {
                return refuse(format!("{key} given twice"));
            }
            let ok = match (key.as_str(), value) {
                ("server_no_context_takeover" | "client_no_context_takeover", None) => true,
                ("server_max_window_bits" | "client_max_window_bits", Some(bits)) => {
                    bits.parse::<u8>().is_ok_and(|b| (8..=15).contains(&b))
                }
                _ => false,
            };
            if !ok {
                return refuse(format!(
                    "permessage-deflate parameter {param:?} not understood"
                ));
            }
            seen.push(key);
        }
        if !seen.iter().any(|k| k == "server_no_context_takeover") {
            return refuse(
                "permessage-deflate without server_no_context_takeover: the tool inflates \
                 each message on its own"
                    .into(),
            );
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key and answer of RFC 6455 section 1.3.
    const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn keys_are_24_base64_chars_and_fresh_each_time() {
        let a = Upgrade::new(false);
        let b = Upgrade::new(false);
        assert_eq!(a.key.len(), 24);
        assert!(a.key.ends_with("=="), "{}", a.key);
        assert_ne!(a, b);
    }

    #[test]
    fn the_request_carries_path_host_and_key() {
        let u = Upgrade::with_key(RFC_KEY.into(), false);
        let r = u.request("127.0.0.1:9", "/api/v1/websocket");
        assert!(r.starts_with("GET /api/v1/websocket HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
        assert!(r.contains(&format!("Sec-WebSocket-Key: {RFC_KEY}\r\n")));
        assert!(r.ends_with("\r\n\r\n"));
        assert!(!r.to_ascii_lowercase().contains("extensions"), "{r}");
    }

    #[test]
    fn a_deflate_client_offers_what_browsers_offer() {
        let r = Upgrade::with_key(RFC_KEY.into(), true).request("h", "/");
        assert!(
            r.contains(
                "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            ),
            "{r}"
        );
        assert!(r.ends_with("\r\n\r\n"));
        // The head is still one valid request: httparse reads the header back.
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(r.as_bytes()).unwrap().is_complete());
        let ext = req
            .headers
            .iter()
            .find(|h| h.name == "Sec-WebSocket-Extensions")
            .unwrap();
        assert_eq!(ext.value, DEFLATE_OFFER.as_bytes());
    }

    /// The RFC example's 101 with `extra` header lines.
    fn answer_with(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n"
        )
    }

    #[test]
    fn an_answer_with_and_without_the_extension() {
        let offered = Upgrade::with_key(RFC_KEY.into(), true);
        let plain = answer_with("");
        let deflate = answer_with(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover\r\n",
        );
        // The server may decline the offer: the connection is plain.
        let a = offered.answer(plain.as_bytes()).unwrap().unwrap();
        assert_eq!((a.head_len, a.deflate), (plain.len(), false));
        let a = offered.answer(deflate.as_bytes()).unwrap().unwrap();
        assert_eq!((a.head_len, a.deflate), (deflate.len(), true));
        // Window sizes, quoted or not, and any case are understood.
        let a = offered.answer(
            answer_with(
                "sec-websocket-extensions: Permessage-Deflate;Server_No_Context_Takeover; \
                 server_max_window_bits=\"10\"; client_max_window_bits=15\r\n",
            )
            .as_bytes(),
        );
        assert!(a.unwrap().unwrap().deflate);
        // Without an offer, the plain answer is plain and an extension is refused.
        let unoffered = Upgrade::with_key(RFC_KEY.into(), false);
        assert!(!unoffered.answer(plain.as_bytes()).unwrap().unwrap().deflate);
        assert!(matches!(
            unoffered.answer(deflate.as_bytes()),
            Err(HandshakeError::Extension(_))
        ));
    }

    #[test]
    fn an_extension_answer_the_tool_cannot_honour_fails_the_upgrade() {
        let offered = Upgrade::with_key(RFC_KEY.into(), true);
        for extension in [
            // Context takeover: each message would need the previous ones.
            "permessage-deflate",
            "permessage-deflate; client_no_context_takeover",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_no_context_takeover; mystery",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover, permessage-deflate; \
             server_no_context_takeover",
        ] {
            let head = answer_with(&format!("Sec-WebSocket-Extensions: {extension}\r\n"));
            let r = offered.answer(head.as_bytes());
            assert!(
                matches!(r, Err(HandshakeError::Extension(_))),
                "{extension}: {r:?}"
            );
        }
    }

    #[test]
    fn accepts_the_rfc_example_answer() {
        let u = Upgrade::with_key(RFC_KEY.into(), false);
        let head =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x00";
        let n = u.answer(head).unwrap().unwrap().head_len;
        assert_eq!(&head[n..], b"\x81\x00");
        assert_eq!(u.answer(&head[..20]), Ok(None));
    }

    #[test]
    fn refuses_wrong_status_wrong_accept_and_endless_heads() {
        let u = Upgrade::with_key(RFC_KEY.into(), false);
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
