//! WebSocket frames as the tool's clients see them, on tungstenite's frame types: a
//! server frame's header read with `FrameHeader::parse` and checked against what a
//! server may send a client, and masked client frames written with `FrameHeader::format`.
//!
//! RSV1 is let through only where RFC 7692 puts it: on the first frame of a data message
//! on a connection that negotiated permessage-deflate; it marks the message compressed.
//!
//! Payloads are not copied here: the caller reads them where they lie in its buffer (a
//! 130 KB history is scanned as it arrives, never assembled), which is what keeps one
//! thread able to drive ten thousand clients.

use std::fmt;
use std::io::Cursor;
use tungstenite::error::{Error, ProtocolError};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// A text frame's opcode.
pub const TEXT: OpCode = OpCode::Data(Data::Text);
/// A close frame's opcode.
pub const CLOSE: OpCode = OpCode::Control(Control::Close);
/// A ping's opcode.
pub const PING: OpCode = OpCode::Control(Control::Ping);
/// A pong's opcode.
pub const PONG: OpCode = OpCode::Control(Control::Pong);

/// A server frame's header, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Last frame of its message.
    pub fin: bool,
    /// What the frame carries.
    pub opcode: OpCode,
    /// Payload length in bytes.
    pub len: u64,
    /// Header length in bytes (the payload starts there).
    pub header_len: usize,
    /// RSV1: the message this frame starts is compressed (permessage-deflate).
    pub compressed: bool,
}

/// A frame header that breaks the protocol for a server-to-client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Servers must not mask frames.
    Masked,
    /// RSV2 or RSV3 set: no extension the tool knows uses them.
    Reserved,
    /// RSV1 set on a connection that did not negotiate permessage-deflate.
    UnexpectedCompression,
    /// RSV1 set on a control or continuation frame (RFC 7692 §6.1 allows it only on a
    /// message's first frame).
    MisplacedCompression,
    /// An opcode RFC 6455 does not define.
    UnknownOpcode(u8),
    /// A control frame over 125 bytes or fragmented.
    BadControl,
    /// The header could not be read for another reason tungstenite gives.
    Unreadable(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Masked => write!(f, "server sent a masked frame"),
            FrameError::Reserved => write!(f, "server set RSV2 or RSV3"),
            FrameError::UnexpectedCompression => {
                write!(f, "server set RSV1 without permessage-deflate")
            }
            FrameError::MisplacedCompression => {
                write!(f, "server set RSV1 on a control or continuation frame")
            }
            FrameError::UnknownOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            FrameError::BadControl => write!(f, "control frame too long or fragmented"),
            FrameError::Unreadable(why) => write!(f, "unreadable frame header: {why}"),
        }
    }
}

/// Reads the frame header at the start of `buf`; `Ok(None)` until it is complete.
/// `deflate`: the connection negotiated permessage-deflate, so a message's first frame
/// may carry RSV1.
pub fn parse_header(buf: &[u8], deflate: bool) -> Result<Option<Header>, FrameError> {
    let mut cursor = Cursor::new(buf);
    let (header, len) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(None),
        Err(Error::Protocol(ProtocolError::InvalidOpcode(op))) => {
            return Err(FrameError::UnknownOpcode(op));
        }
        Err(e) => return Err(FrameError::Unreadable(e.to_string())),
    };
    if header.mask.is_some() {
        return Err(FrameError::Masked);
    }
    if header.rsv2 || header.rsv3 {
        return Err(FrameError::Reserved);
    }
    if header.rsv1 {
        if !deflate {
            return Err(FrameError::UnexpectedCompression);
        }
        if !matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary)) {
            return Err(FrameError::MisplacedCompression);
        }
    }
    if matches!(header.opcode, OpCode::Control(_)) && (len > 125 || !header.is_final) {
        return Err(FrameError::BadControl);
    }
    Ok(Some(Header {
        fin: header.is_final,
        opcode: header.opcode,
        len,
        // The cursor stopped where the header ends; it is at most 14 bytes.
        header_len: cursor.position() as usize,
        compressed: header.rsv1,
    }))
}

/// Appends one masked client frame (FIN set) carrying `payload` to `out`.
pub fn encode_masked(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    let header = FrameHeader {
        opcode,
        mask: Some(mask),
        ..FrameHeader::default()
    };
    // `FrameHeader::format` fails only when its writer does, and a Vec never does.
    let _ = header.format(payload.len() as u64, out);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// A fresh random masking key.
pub fn random_mask() -> [u8; 4] {
    fastrand::u32(..).to_ne_bytes()
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
    fn parses_the_three_length_forms() {
        let h = parse_header(&[0x81, 5], false).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode, h.len, h.header_len), (true, TEXT, 5, 2));
        let h = parse_header(&[0x01, 126, 1, 0], false).unwrap().unwrap();
        assert_eq!((h.fin, h.len, h.header_len), (false, 256, 4));
        let h = parse_header(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0], false)
            .unwrap()
            .unwrap();
        assert_eq!(h.opcode, OpCode::Data(Data::Binary));
        assert_eq!((h.len, h.header_len), (65536, 10));
        assert_eq!(parse_header(&[0x81, 126, 1], false), Ok(None));
        assert_eq!(
            parse_header(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0], false),
            Ok(None)
        );
        assert_eq!(parse_header(&[0x81], false), Ok(None));
        assert_eq!(parse_header(&[], false), Ok(None));
    }

    #[test]
    fn refuses_masked_reserved_and_bad_control_frames() {
        assert_eq!(
            parse_header(&[0x81, 0x85, 1, 2, 3, 4], false),
            Err(FrameError::Masked)
        );
        assert_eq!(
            parse_header(&[0xA1, 0x01], false),
            Err(FrameError::Reserved)
        );
        assert_eq!(parse_header(&[0x91, 0x01], true), Err(FrameError::Reserved));
        assert_eq!(
            parse_header(&[0x83, 0x00], false),
            Err(FrameError::UnknownOpcode(3))
        );
        assert_eq!(
            parse_header(&[0x8B, 0x00], false),
            Err(FrameError::UnknownOpcode(0xB))
        );
        assert_eq!(
            parse_header(&[0x09, 0x00], false),
            Err(FrameError::BadControl)
        );
        assert_eq!(
            parse_header(&[0x89, 126, 0, 200], false),
            Err(FrameError::BadControl)
        );
    }

    #[test]
    fn rsv1_only_on_a_first_data_frame_and_only_when_negotiated() {
        // Without the extension, RSV1 is a protocol error, on any frame.
        for first in [0xC1, 0xC2, 0x41, 0xC9] {
            assert_eq!(
                parse_header(&[first, 0x00], false),
                Err(FrameError::UnexpectedCompression),
                "{first:#x}"
            );
        }
        // With it, a text or binary frame starting a message may be compressed ...
        let h = parse_header(&[0xC1, 0x03], true).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.compressed, h.len),
            (true, TEXT, true, 3)
        );
        let h = parse_header(&[0x42, 0x00], true).unwrap().unwrap();
        assert!(!h.fin && h.compressed);
        // ... a plain one stays plain ...
        assert!(
            !parse_header(&[0x81, 0x00], true)
                .unwrap()
                .unwrap()
                .compressed
        );
        // ... and a continuation or control frame never is.
        for first in [0xC0, 0x40, 0xC9, 0xCA, 0xC8] {
            assert_eq!(
                parse_header(&[first, 0x00], true),
                Err(FrameError::MisplacedCompression),
                "{first:#x}"
            );
        }
    }

    #[test]
    fn masked_frame_unmasks_back_to_the_payload() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            encode_masked(&mut out, TEXT, &payload, [1, 2, 3, 4]);
            assert_eq!(out[0], 0x81);
            assert_eq!(out[1] & 0x80, 0x80);
            // tungstenite reads the client's side back: header, mask, length.
            let mut cursor = Cursor::new(&out);
            let (h, n) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!((h.is_final, h.opcode, n), (true, TEXT, len as u64));
            let mask = h.mask.unwrap();
            let body: Vec<u8> = out[cursor.position() as usize..]
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
