//! WebSocket frames the server sends, encoded once and shared by reference.
//!
//! A server frame is unmasked (RFC 6455 §5.1), so the same bytes can go to every
//! client: a tick's point is encoded once and queued to all its subscribers.

use bytes::Bytes;

/// Encodes `payload` as one final text frame (opcode 1, unmasked).
pub fn text_frame(payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut out = Vec::with_capacity(len + 10);
    out.push(0x81);
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
}
