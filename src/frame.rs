//! WebSocket frames the server sends, encoded once and shared by reference.
//!
//! A server frame is unmasked (RFC 6455 §5.1), so the same bytes can go to every
//! client: a tick's point is encoded once and queued to all its subscribers.

use bytes::Bytes;

/// The ping the server sends: no payload.
pub const PING: &[u8] = &[0x89, 0x00];

/// Encodes `payload` as one final text frame (opcode 1, unmasked).
pub fn text_frame(payload: &[u8]) -> Bytes {
    frame(0x81, payload)
}

/// Encodes an already compressed `payload` as one final text frame with RSV1 set, the
/// permessage-deflate mark (RFC 7692 §6).
pub fn compressed_text_frame(payload: &[u8]) -> Bytes {
    frame(0xC1, payload)
}

/// A pong echoing a ping's payload (at most 125 bytes, as the reader ensures).
pub fn pong_frame(payload: &[u8]) -> Bytes {
    frame(0x8A, payload)
}

/// A close frame with `code` and `reason` (RFC 6455 §5.5.1); `None` sends none.
pub fn close_frame(code_and_reason: Option<(u16, &str)>) -> Bytes {
    let mut payload = Vec::new();
    if let Some((code, reason)) = code_and_reason {
        payload.extend_from_slice(&code.to_be_bytes());
        // A control frame's payload is at most 125 bytes: a longer reason is cut at a
        // character boundary.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        payload.extend_from_slice(&reason.as_bytes()[..end]);
    }
    frame(0x88, &payload)
}

/// One final, unmasked frame: `first` is the FIN and RSV1 bits with the opcode.
fn frame(first: u8, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut out = Vec::with_capacity(len + 10);
    out.push(first);
    if len < 126 {
        out.push(len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::FrameHeader;

    fn decode(frame: &[u8]) -> (FrameHeader, usize) {
        let mut cursor = std::io::Cursor::new(frame);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        (header, cursor.position() as usize + len as usize)
    }

    #[test]
    fn every_length_class_round_trips_through_tungstenites_parser() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 200_000] {
            let payload = vec![b'x'; len];
            let frame = text_frame(&payload);
            let (header, total) = decode(&frame);
            assert!(header.is_final);
            assert!(header.mask.is_none());
            assert_eq!(total, frame.len(), "length {len}");
            assert_eq!(&frame[frame.len() - len..], &payload[..]);
        }
    }

    #[test]
    fn control_frames_are_well_formed() {
        let (header, total) = decode(PING);
        assert_eq!(total, 2);
        assert!(header.is_final && header.mask.is_none());
        assert_eq!(&pong_frame(b"hi")[..], [0x8A, 2, b'h', b'i']);
        assert_eq!(&close_frame(None)[..], [0x88, 0]);
        assert_eq!(
            &close_frame(Some((1000, "bye")))[..],
            [0x88, 5, 0x03, 0xE8, b'b', b'y', b'e']
        );
        let long = "é".repeat(100);
        let frame = close_frame(Some((1001, &long)));
        assert!(frame.len() <= 2 + 125);
        assert!(
            std::str::from_utf8(&frame[4..]).is_ok(),
            "cut at a boundary"
        );
    }
}
