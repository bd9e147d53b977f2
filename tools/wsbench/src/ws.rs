//! The client half of WebSocket (RFC 6455) that the load tool needs, kept tiny so that the
//! tool, not the server, is never the bottleneck: the upgrade request and the check of its
//! answer, masked frames out, unmasked frame headers in.

use std::fmt;

/// Frame opcodes the tool distinguishes.
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
    /// Pong frame.
    pub const PONG: u8 = 0xA;
}

/// The 16-byte nonce of one client's upgrade request, base64-encoded.
///
/// It is derived from a per-run seed and the client's index, so it can be recomputed to check
/// the answer instead of being stored for every client.
pub fn client_key(seed: u64, index: usize) -> String {
    let mut rng =
        fastrand::Rng::with_seed(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut nonce = [0u8; 16];
    rng.fill(&mut nonce);
    base64(&nonce)
}

/// Standard base64 with padding (the alphabet RFC 6455 uses for the key).
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The HTTP/1.1 upgrade request for `path` on `host` with the given key.
pub fn upgrade_request(host: &str, path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
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

/// Parses the server's answer head from `buf`.
///
/// Returns `Ok(None)` while the head is incomplete, or `Ok(Some(n))` with the head's length
/// once it is complete and is a valid 101 answer for `key`; bytes after `n` are frames.
pub fn parse_upgrade_answer(buf: &[u8], key: &str) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 24];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > 8192 => return Err(HandshakeError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(HandshakeError::Status(code));
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accept = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value);
    if accept.map(|v| v.trim_ascii()) != Some(expected.as_bytes()) {
        return Err(HandshakeError::BadAccept);
    }
    Ok(Some(len))
}

/// A parsed server frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Last frame of its message.
    pub fin: bool,
    /// One of [`opcode`].
    pub opcode: u8,
    /// Payload length in bytes.
    pub len: u64,
    /// Header length in bytes.
    pub header_len: usize,
}

/// A frame header that breaks the protocol for a server-to-client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Servers must not mask frames.
    Masked,
    /// RSV bits set without an extension.
    Reserved,
    /// An opcode RFC 6455 does not define.
    UnknownOpcode(u8),
    /// A control frame over 125 bytes or fragmented.
    BadControl,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Masked => write!(f, "server sent a masked frame"),
            FrameError::Reserved => write!(f, "server set RSV bits"),
            FrameError::UnknownOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            FrameError::BadControl => write!(f, "control frame too long or fragmented"),
        }
    }
}

/// Parses a frame header at the start of `buf`; `Ok(None)` if more bytes are needed.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let fin = b0 & 0x80 != 0;
    let op = b0 & 0x0F;
    let (len, header_len) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    match op {
        opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => {}
        opcode::CLOSE | opcode::PING | opcode::PONG => {
            if len > 125 || !fin {
                return Err(FrameError::BadControl);
            }
        }
        other => return Err(FrameError::UnknownOpcode(other)),
    }
    Ok(Some(Header {
        fin,
        opcode: op,
        len,
        header_len,
    }))
}

/// Appends one masked client frame (FIN set) with `payload` to `out`.
pub fn encode_masked(out: &mut Vec<u8>, op: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | op);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(len16) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&len16.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// The status code carried by a close frame's payload (1005 when it has none).
pub fn close_code(payload: &[u8]) -> u16 {
    match payload {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 1005,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn client_key_is_24_chars_recomputable_and_differs_per_client() {
        let a = client_key(7, 1);
        assert_eq!(a.len(), 24);
        assert_eq!(a, client_key(7, 1));
        assert_ne!(a, client_key(7, 2));
    }

    #[test]
    fn accepts_the_rfc_example_answer() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let head =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x00";
        let n = parse_upgrade_answer(head, key).unwrap().unwrap();
        assert_eq!(&head[n..], b"\x81\x00");
        assert_eq!(parse_upgrade_answer(&head[..20], key), Ok(None));
    }

    #[test]
    fn refuses_wrong_status_and_wrong_accept() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let r = parse_upgrade_answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", key);
        assert_eq!(r, Err(HandshakeError::Status(404)));
        let r = parse_upgrade_answer(b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: xyz\r\n\r\n", key);
        assert_eq!(r, Err(HandshakeError::BadAccept));
    }

    #[test]
    fn parses_the_three_length_forms() {
        let h = parse_header(&[0x81, 5]).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.len, h.header_len),
            (true, opcode::TEXT, 5, 2)
        );
        let h = parse_header(&[0x01, 126, 1, 0]).unwrap().unwrap();
        assert_eq!((h.fin, h.len, h.header_len), (false, 256, 4));
        let h = parse_header(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.len, h.header_len), (65536, 10));
        assert_eq!(parse_header(&[0x81, 126, 1]), Ok(None));
        assert_eq!(parse_header(&[0x81]), Ok(None));
    }

    #[test]
    fn refuses_masked_reserved_and_bad_control_frames() {
        assert_eq!(parse_header(&[0x81, 0x85]), Err(FrameError::Masked));
        assert_eq!(parse_header(&[0xC1, 0x01]), Err(FrameError::Reserved));
        assert_eq!(
            parse_header(&[0x83, 0x00]),
            Err(FrameError::UnknownOpcode(3))
        );
        assert_eq!(parse_header(&[0x09, 0x00]), Err(FrameError::BadControl));
        assert_eq!(
            parse_header(&[0x89, 126, 0, 200]),
            Err(FrameError::BadControl)
        );
    }

    #[test]
    fn masked_frame_unmasks_back_to_the_payload() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            encode_masked(&mut out, opcode::TEXT, &payload, [1, 2, 3, 4]);
            assert_eq!(out[0], 0x81);
            assert_eq!(out[1] & 0x80, 0x80);
            // Clear the mask bit and reuse the server-side header parser for the length.
            let mut head = out[..10.min(out.len())].to_vec();
            head[1] &= 0x7F;
            let h = parse_header(&head).unwrap().unwrap();
            assert_eq!(h.len as usize, len);
            let mask = &out[h.header_len..h.header_len + 4];
            let body: Vec<u8> = out[h.header_len + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn close_code_defaults_to_1005() {
        assert_eq!(close_code(&[0x03, 0xF0, b'x']), 1008);
        assert_eq!(close_code(&[]), 1005);
    }
}
