//! Reads the WebSocket frames a client sends into whole messages, as the bytes arrive:
//! frame headers (tungstenite's [`FrameHeader`]), unmasking, fragments, control frames
//! between them, and every rule and limit RFC 6455 and the service put on them.
//!
//! The bytes come from the reactor's one read buffer, lent for each turn. A frame that
//! arrives whole in it is unmasked and handed on in place; only a frame cut by the end of
//! a read, or a message in several fragments, is gathered on the connection, in a buffer
//! that is let go once the message is complete. So an idle connection holds nothing here
//! but a few bytes of state.

use std::io::Cursor;

use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use crate::deflate::{InflateError, Inflater};

/// Fragments one message may have before the client is closed: empty continuation
/// frames add nothing to a message's size, so without this bound a client could send
/// them forever.
pub const MAX_FRAGMENTS: u32 = 256;

/// Largest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

/// What a connection's messages may be: how large, and whether compressed ones
/// (permessage-deflate, negotiated) are welcome.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message, after inflating.
    pub max_message: usize,
    /// Whether the connection negotiated permessage-deflate.
    pub deflate: bool,
}

impl Limits {
    /// Largest payload on the wire of a message: a compressed one may be a little larger
    /// than what it inflates to (stored blocks: 5 bytes per 16 KiB).
    fn on_the_wire(self, compressed: bool) -> u64 {
        let max = self.max_message as u64;
        if compressed {
            max + max / 1024 + 64
        } else {
            max
        }
    }
}

/// A complete frame or message, borrowing its payload from the read buffer, from the
/// reader, or from the inflater.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A text message, valid UTF-8; whether it came compressed.
    Text(&'a str, bool),
    /// A binary message (its bytes are of no use to this service); whether it came
    /// compressed.
    Binary(bool),
    /// A ping with its payload, to be echoed in a pong.
    Ping(&'a [u8]),
    /// A pong.
    Pong,
    /// A close frame: its code and reason, if it had a payload.
    Close(Option<(CloseCode, &'a str)>),
}

/// Why the connection has to be failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A frame broke RFC 6455; the text says how.
    Protocol(&'static str),
    /// A frame or message over the size limit.
    TooLarge,
    /// A message in more than [`MAX_FRAGMENTS`] fragments.
    TooManyFragments,
    /// A text message or close reason that is not UTF-8.
    InvalidText,
    /// A compressed message that does not inflate, or inflates past the size limit.
    Inflate(InflateError),
}

impl Violation {
    /// The close code RFC 6455 §7.4.1 gives this failure.
    pub fn close_code(self) -> CloseCode {
        match self {
            Violation::Protocol(_) => CloseCode::Protocol,
            Violation::TooLarge | Violation::TooManyFragments => CloseCode::Size,
            Violation::InvalidText | Violation::Inflate(InflateError::Invalid) => {
                CloseCode::Invalid
            }
            Violation::Inflate(InflateError::TooLarge) => CloseCode::Size,
        }
    }

    /// The close frame's reason text.
    pub fn reason(self) -> &'static str {
        match self {
            Violation::Protocol(_) => "protocol error",
            Violation::TooLarge => "message too large",
            Violation::TooManyFragments => "too many fragments",
            Violation::InvalidText => "text is not UTF-8",
            Violation::Inflate(InflateError::Invalid) => "invalid compressed data",
            Violation::Inflate(InflateError::TooLarge) => "message too large",
        }
    }
}

/// The kind of data message in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    opcode: OpCode,
    fin: bool,
    /// RSV1 on a message's first frame: the message is compressed.
    compressed: bool,
    mask: [u8; 4],
    /// Payload bytes still to come.
    left: u64,
    /// Payload bytes read so far (the mask's phase).
    done: u64,
}

/// What is gathered across reads: the fragments of a data message, or a control frame's
/// payload cut by the end of a read.
#[derive(Debug, Default)]
struct Gathered {
    /// The message's kind, once its first frame has come.
    kind: Option<Kind>,
    /// Its payload so far, unmasked.
    data: Vec<u8>,
    /// Its data frames without FIN so far.
    fragments: u32,
    /// Its first frame had RSV1: it is compressed.
    compressed: bool,
    /// A control frame's payload so far.
    control: Vec<u8>,
    /// A message was handed on from `data`: clear it before reading on.
    delivered: bool,
    /// Bytes read but not parsed when a turn's message budget ran out.
    unread: Vec<u8>,
}

/// One connection's reading state.
#[derive(Debug, Default)]
pub struct Reader {
    /// The header being read, `have` bytes of it so far.
    header: [u8; MAX_HEADER],
    have: u8,
    /// The frame whose payload is being read, once its header is complete.
    frame: Option<Frame>,
    /// What spans reads; `None` between messages once [`Reader::release`] has run.
    gathered: Option<Box<Gathered>>,
}

impl Reader {
    /// Reads frames from the start of `input` (unmasking it in place) until one makes a
    /// complete [`Event`] or the input is used up. Returns the bytes consumed and the
    /// event, if any; call again with the rest of the input.
    pub fn next<'a>(
        &'a mut self,
        input: &'a mut [u8],
        limits: Limits,
        inflater: &'a mut Inflater,
    ) -> Result<(usize, Option<Event<'a>>), Violation> {
        let between_frames = self.frame.is_none();
        if let Some(gathered) = &mut self.gathered {
            if gathered.delivered {
                gathered.delivered = false;
                gathered.kind = None;
                gathered.compressed = false;
                gathered.data.clear();
            }
            if between_frames {
                // A control frame gathered earlier has been handed on.
                gathered.control.clear();
            }
        }
        let mut at = 0;
        loop {
            let frame = match self.frame {
                Some(frame) => frame,
                None => {
                    let Some((frame, used)) = self.read_header(&input[at..], limits)? else {
                        return Ok((input.len(), None));
                    };
                    at += used;
                    self.frame = Some(frame);
                    frame
                }
            };
            let available = (input.len() - at) as u64;
            // A frame whole in the input, that nothing before it is gathered for, is
            // read in place.
            let in_place = frame.done == 0
                && available >= frame.left
                && match frame.opcode {
                    OpCode::Control(_) => true,
                    OpCode::Data(_) => frame.fin && self.message_kind().is_none(),
                };
            if in_place {
                let end = at + frame.left as usize;
                let payload = &mut input[at..end];
                unmask(payload, frame.mask, 0);
                self.frame = None;
                return Ok((
                    end,
                    Some(self.complete(frame, Some(payload), limits, inflater)?),
                ));
            }
            let take = available.min(frame.left) as usize;
            let chunk = &mut input[at..at + take];
            unmask(chunk, frame.mask, frame.done);
            let gathered = self.gathered.get_or_insert_with(Box::default);
            match frame.opcode {
                OpCode::Control(_) => gathered.control.extend_from_slice(chunk),
                OpCode::Data(_) => gathered.data.extend_from_slice(chunk),
            }
            at += take;
            let left = frame.left - take as u64;
            if left > 0 {
                self.frame = Some(Frame {
                    left,
                    done: frame.done + take as u64,
                    ..frame
                });
                return Ok((at, None));
            }
            self.frame = None;
            if matches!(frame.opcode, OpCode::Data(_)) && !frame.fin {
                // A fragment: the message goes on in the next frame.
                continue;
            }
            return Ok((at, Some(self.complete(frame, None, limits, inflater)?)));
        }
    }

    /// Lets go of the buffers gathered for a message that is complete, so an idle
    /// connection holds none; called at the end of every turn.
    pub fn release(&mut self) {
        if let Some(gathered) = &self.gathered
            && self.frame.is_none()
            && (gathered.kind.is_none() || gathered.delivered)
            && gathered.unread.is_empty()
        {
            self.gathered = None;
        }
    }

    /// Keeps `bytes`, read but not parsed when a turn's message budget ran out, to be
    /// parsed first in the next turn.
    pub fn stash(&mut self, bytes: &[u8]) {
        self.gathered
            .get_or_insert_with(Box::default)
            .unread
            .extend_from_slice(bytes);
    }

    /// Moves what [`Reader::stash`] kept to the front of `buf` (as large as a turn's
    /// read, which is what was stashed at most); returns how many bytes that is.
    pub fn unstash(&mut self, buf: &mut [u8]) -> usize {
        let Some(gathered) = &mut self.gathered else {
            return 0;
        };
        let unread = std::mem::take(&mut gathered.unread);
        let n = unread.len().min(buf.len());
        buf[..n].copy_from_slice(&unread[..n]);
        n
    }

    /// The kind of the data message whose fragments are coming, if one is.
    fn message_kind(&self) -> Option<Kind> {
        self.gathered
            .as_ref()
            .filter(|g| !g.delivered)
            .and_then(|g| g.kind)
    }

    /// Reads a frame header from the start of `input`, gathering it across calls;
    /// returns the frame and the bytes of `input` used, or `None` if `input` ended first.
    fn read_header(
        &mut self,
        input: &[u8],
        limits: Limits,
    ) -> Result<Option<(Frame, usize)>, Violation> {
        let mut used = 0;
        let bytes: &[u8] = if self.have == 0 && input.len() >= header_len(input) {
            // The usual case: the whole header is in the input.
            input
        } else {
            loop {
                let have = usize::from(self.have);
                if have >= 2 && have == header_len(&self.header[..have]) {
                    break;
                }
                let Some(&byte) = input.get(used) else {
                    return Ok(None);
                };
                self.header[have] = byte;
                self.have += 1;
                used += 1;
            }
            &self.header[..usize::from(self.have)]
        };
        let mut cursor = Cursor::new(bytes);
        let parsed = FrameHeader::parse(&mut cursor)
            .map_err(|_| Violation::Protocol("a reserved opcode"))?;
        let Some((header, length)) = parsed else {
            return Ok(None);
        };
        if self.have == 0 {
            used = cursor.position() as usize;
        }
        self.have = 0;
        let frame = self.check(&header, length, limits)?;
        Ok(Some((frame, used)))
    }

    /// Checks a header against the rules before any of its payload is taken.
    fn check(
        &mut self,
        header: &FrameHeader,
        length: u64,
        limits: Limits,
    ) -> Result<Frame, Violation> {
        if header.rsv2 || header.rsv3 {
            return Err(Violation::Protocol("a reserved bit is set"));
        }
        let Some(mask) = header.mask else {
            return Err(Violation::Protocol("a client frame is not masked"));
        };
        if header.rsv1 {
            // RFC 7692 §6: RSV1 marks a compressed message, on its first frame only.
            match header.opcode {
                _ if !limits.deflate => {
                    return Err(Violation::Protocol("RSV1 set without permessage-deflate"));
                }
                OpCode::Control(_) => {
                    return Err(Violation::Protocol("RSV1 set on a control frame"));
                }
                OpCode::Data(Data::Continue) => {
                    return Err(Violation::Protocol("RSV1 set on a continuation frame"));
                }
                OpCode::Data(_) => {}
            }
        }
        let mut compressed = header.rsv1;
        match header.opcode {
            OpCode::Control(_) => {
                if !header.is_final {
                    return Err(Violation::Protocol("a fragmented control frame"));
                }
                if length > MAX_CONTROL_PAYLOAD {
                    return Err(Violation::Protocol("a control frame over 125 bytes"));
                }
            }
            OpCode::Data(data) => {
                match (data, self.message_kind()) {
                    (Data::Continue, None) => {
                        return Err(Violation::Protocol(
                            "a continuation frame without a message",
                        ));
                    }
                    (Data::Text | Data::Binary, Some(_)) => {
                        return Err(Violation::Protocol("a new message inside a fragmented one"));
                    }
                    _ => {}
                }
                let gathered = match (data, &self.gathered) {
                    (Data::Continue, Some(g)) => {
                        compressed = g.compressed;
                        g.data.len() as u64
                    }
                    _ => 0,
                };
                if gathered.saturating_add(length) > limits.on_the_wire(compressed) {
                    return Err(Violation::TooLarge);
                }
                if !header.is_final {
                    let gathered = self.gathered.get_or_insert_with(Box::default);
                    gathered.fragments += 1;
                    if gathered.fragments > MAX_FRAGMENTS {
                        return Err(Violation::TooManyFragments);
                    }
                    if let Data::Text | Data::Binary = data {
                        gathered.compressed = compressed;
                        gathered.kind = Some(if data == Data::Text {
                            Kind::Text
                        } else {
                            Kind::Binary
                        });
                    }
                }
            }
        }
        Ok(Frame {
            opcode: header.opcode,
            fin: header.is_final,
            compressed,
            mask,
            left: length,
            done: 0,
        })
    }

    /// The event a frame whose payload is complete makes (a control frame, or the last
    /// frame of a data message): `payload` when it was read in place, otherwise it was
    /// gathered. A compressed message is inflated by `inflater`.
    fn complete<'a>(
        &'a mut self,
        frame: Frame,
        payload: Option<&'a mut [u8]>,
        limits: Limits,
        inflater: &'a mut Inflater,
    ) -> Result<Event<'a>, Violation> {
        match frame.opcode {
            OpCode::Control(control) => {
                let payload: &'a [u8] = match payload {
                    Some(payload) => payload,
                    None => &self.gathered.get_or_insert_with(Box::default).control,
                };
                match control {
                    Control::Ping => Ok(Event::Ping(payload)),
                    Control::Pong => Ok(Event::Pong),
                    Control::Close => Ok(Event::Close(close_payload(payload)?)),
                    Control::Reserved(_) => Err(Violation::Protocol("a reserved opcode")),
                }
            }
            OpCode::Data(data) => {
                let first_kind = if data == Data::Text {
                    Kind::Text
                } else {
                    Kind::Binary
                };
                let (kind, bytes): (Kind, &'a [u8]) = match payload {
                    Some(payload) => (first_kind, payload),
                    None => {
                        let gathered = self.gathered.get_or_insert_with(Box::default);
                        let kind = gathered.kind.unwrap_or(first_kind);
                        gathered.fragments = 0;
                        gathered.delivered = true;
                        gathered.kind = Some(kind);
                        (kind, &gathered.data)
                    }
                };
                let bytes = if frame.compressed {
                    inflater
                        .inflate(bytes, limits.max_message)
                        .map_err(Violation::Inflate)?
                } else {
                    bytes
                };
                match kind {
                    Kind::Binary => Ok(Event::Binary(frame.compressed)),
                    Kind::Text => std::str::from_utf8(bytes)
                        .map(|text| Event::Text(text, frame.compressed))
                        .map_err(|_| Violation::InvalidText),
                }
            }
        }
    }
}

/// The length of the header that starts with `bytes` (2 until the second byte is known).
fn header_len(bytes: &[u8]) -> usize {
    let Some(&second) = bytes.get(1) else {
        return 2;
    };
    let extended = match second & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// Unmasks `payload`, whose first byte is byte `offset` of the frame's payload.
fn unmask(payload: &mut [u8], mask: [u8; 4], offset: u64) {
    let phase = (offset % 4) as usize;
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[(phase + i) % 4];
    }
}

/// A close frame's code and reason, checked (RFC 6455 §5.5.1, §7.4).
fn close_payload(payload: &[u8]) -> Result<Option<(CloseCode, &str)>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::Protocol("a close frame of one byte")),
        [high, low, reason @ ..] => {
            let code = CloseCode::from(u16::from_be_bytes([*high, *low]));
            if !code.is_allowed() {
                return Err(Violation::Protocol("a close code that may not be sent"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Violation::InvalidText)?;
            Ok(Some((code, reason)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 4096;

    fn limits(max_message: usize) -> Limits {
        Limits {
            max_message,
            deflate: false,
        }
    }

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x37, 0xFA, 0x21, 0x3D];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// What reading `stream` in pieces of `piece` bytes gives, as text.
    fn read_all(stream: &[u8], piece: usize, limit: usize) -> Result<Vec<String>, Violation> {
        read_with(stream, piece, limits(limit))
    }

    fn read_with(stream: &[u8], piece: usize, limits: Limits) -> Result<Vec<String>, Violation> {
        let mut reader = Reader::default();
        let mut inflater = Inflater::default();
        let mut events = Vec::new();
        for chunk in stream.chunks(piece) {
            let mut input = chunk.to_vec();
            let mut at = 0;
            while at < input.len() {
                let (used, event) = reader.next(&mut input[at..], limits, &mut inflater)?;
                at += used;
                if let Some(event) = event {
                    events.push(format!("{event:?}"));
                }
            }
            reader.release();
        }
        Ok(events)
    }

    #[test]
    fn frames_split_anywhere_read_the_same() {
        let mut stream = frame(true, 1, b"{\"action\":\"assets\"}");
        stream.extend(frame(false, 1, b"he"));
        stream.extend(frame(true, 9, b"ping!"));
        stream.extend(frame(false, 0, &[b'l'; 300]));
        stream.extend(frame(true, 0, b"lo"));
        stream.extend(frame(true, 2, b"\x00\x01"));
        stream.extend(frame(true, 10, b""));
        stream.extend(frame(true, 8, b"\x03\xe8bye"));
        let whole = read_all(&stream, stream.len(), LIMIT).unwrap();
        assert_eq!(whole.len(), 6);
        assert_eq!(whole[0], r#"Text("{\"action\":\"assets\"}", false)"#);
        assert_eq!(whole[1], "Ping([112, 105, 110, 103, 33])");
        assert!(whole[2].starts_with("Text(\"hell") && whole[2].ends_with("llo\", false)"));
        assert_eq!(
            whole[3..],
            ["Binary(false)", "Pong", "Close(Some((Normal, \"bye\")))"]
        );
        for piece in [1, 2, 3, 7, 64, 1000] {
            assert_eq!(
                read_all(&stream, piece, LIMIT).unwrap(),
                whole,
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn nothing_is_held_between_messages() {
        let mut reader = Reader::default();
        let mut inflater = Inflater::default();
        let mut message = frame(false, 1, b"ab");
        message.extend(frame(true, 0, b"cd"));
        let (first, rest) = message.split_at(7);
        let mut input = first.to_vec();
        assert_eq!(
            reader
                .next(&mut input, limits(LIMIT), &mut inflater)
                .unwrap(),
            (7, None)
        );
        reader.release();
        assert!(reader.gathered.is_some(), "a message in progress is kept");
        let mut input = rest.to_vec();
        let (_, event) = reader
            .next(&mut input, limits(LIMIT), &mut inflater)
            .unwrap();
        assert_eq!(event, Some(Event::Text("abcd", false)));
        reader.release();
        assert!(reader.gathered.is_none() && reader.frame.is_none() && reader.have == 0);
        let mut whole = frame(true, 1, b"{}");
        reader
            .next(&mut whole, limits(LIMIT), &mut inflater)
            .unwrap();
        reader.release();
        assert!(
            reader.gathered.is_none(),
            "a frame read in place holds nothing"
        );
    }

    #[test]
    fn stashed_bytes_come_back_whole() {
        let mut reader = Reader::default();
        reader.stash(b"abc");
        reader.release();
        let mut buf = [0u8; 8];
        assert_eq!(reader.unstash(&mut buf), 3);
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(reader.unstash(&mut buf), 0);
        reader.release();
        assert!(reader.gathered.is_none());
    }

    #[test]
    fn sizes_are_limited_per_frame_and_per_message() {
        assert_eq!(
            read_all(&frame(true, 1, &[b'a'; 65]), 100, 64),
            Err(Violation::TooLarge)
        );
        let mut two = frame(false, 1, &[b'a'; 40]);
        two.extend(frame(true, 0, &[b'a'; 40]));
        assert_eq!(read_all(&two, 100, 64), Err(Violation::TooLarge));
        // A header announcing more than the limit is refused before any payload.
        let mut huge = vec![0x81, 0x80 | 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(read_all(&huge, 100, LIMIT), Err(Violation::TooLarge));
    }

    #[test]
    fn endless_empty_continuations_are_refused() {
        let mut stream = frame(false, 1, b"{");
        for _ in 1..MAX_FRAGMENTS {
            stream.extend(frame(false, 0, b""));
        }
        assert_eq!(read_all(&stream, 4096, LIMIT), Ok(vec![]));
        stream.extend(frame(false, 0, b""));
        assert_eq!(
            read_all(&stream, 4096, LIMIT),
            Err(Violation::TooManyFragments)
        );
        // Control frames between fragments do not reset the count; a final frame does.
        let mut pinged = frame(false, 1, b"{");
        for _ in 0..MAX_FRAGMENTS {
            pinged.extend(frame(true, 9, b""));
            pinged.extend(frame(false, 0, b""));
        }
        assert_eq!(
            read_all(&pinged, 4096, LIMIT),
            Err(Violation::TooManyFragments)
        );
        let mut messages = Vec::new();
        for _ in 0..3 {
            messages.extend(frame(false, 1, b"{"));
            for _ in 1..MAX_FRAGMENTS {
                messages.extend(frame(false, 0, b" "));
            }
            messages.extend(frame(true, 0, b"}"));
        }
        assert_eq!(read_all(&messages, 4096, LIMIT).unwrap().len(), 3);
    }

    #[test]
    fn protocol_violations_are_named() {
        let unmasked = [0x81, 0x02, b'{', b'}'];
        let cases: [(&[u8], Violation); 9] = [
            (
                &unmasked,
                Violation::Protocol("a client frame is not masked"),
            ),
            (
                &frame(true, 0x41, b"x"),
                Violation::Protocol("RSV1 set without permessage-deflate"),
            ),
            (
                &frame(true, 0x21, b"x"),
                Violation::Protocol("a reserved bit is set"),
            ),
            (
                &frame(true, 3, b"x"),
                Violation::Protocol("a reserved opcode"),
            ),
            (
                &frame(true, 11, b""),
                Violation::Protocol("a reserved opcode"),
            ),
            (
                &frame(false, 9, b""),
                Violation::Protocol("a fragmented control frame"),
            ),
            (
                &frame(true, 9, &[0; 126]),
                Violation::Protocol("a control frame over 125 bytes"),
            ),
            (
                &frame(true, 0, b"x"),
                Violation::Protocol("a continuation frame without a message"),
            ),
            (
                &frame(true, 8, b"\x03"),
                Violation::Protocol("a close frame of one byte"),
            ),
        ];
        for (bytes, violation) in cases {
            assert_eq!(read_all(bytes, 64, LIMIT), Err(violation), "{bytes:?}");
        }
        let mut nested = frame(false, 1, b"a");
        nested.extend(frame(true, 1, b"b"));
        assert_eq!(
            read_all(&nested, 64, LIMIT),
            Err(Violation::Protocol("a new message inside a fragmented one"))
        );
        for code in [999u16, 1005, 1006, 1015, 2999, 5000] {
            let close = frame(true, 8, &code.to_be_bytes());
            assert_eq!(
                read_all(&close, 64, LIMIT),
                Err(Violation::Protocol("a close code that may not be sent")),
                "{code}"
            );
        }
    }

    #[test]
    fn text_must_be_utf8_even_split_inside_a_character() {
        assert_eq!(
            read_all(&frame(true, 1, b"\xff"), 64, LIMIT),
            Err(Violation::InvalidText)
        );
        let mut split = frame(false, 1, "é".as_bytes().split_at(1).0);
        split.extend(frame(true, 0, "é".as_bytes().split_at(1).1));
        assert_eq!(read_all(&split, 3, LIMIT).unwrap(), ["Text(\"é\", false)"]);
        let bad_reason = frame(true, 8, b"\x03\xe8\xff");
        assert_eq!(
            read_all(&bad_reason, 64, LIMIT),
            Err(Violation::InvalidText)
        );
        assert_eq!(Violation::InvalidText.close_code(), CloseCode::Invalid);
        assert_eq!(Violation::TooManyFragments.close_code(), CloseCode::Size);
    }

    /// `payload` compressed as a client would send it, without the trailing empty block.
    fn deflated(payload: &[u8]) -> Vec<u8> {
        crate::deflate::Compressor::new(6).compress(payload)
    }

    #[test]
    fn compressed_messages_are_inflated_whole_or_in_fragments() {
        let on = Limits {
            max_message: LIMIT,
            deflate: true,
        };
        let request = br#"{"action":"subscribe","message":{"assetId":1}}"#;
        let compressed = deflated(request);
        let mut stream = frame(true, 0x41, &compressed);
        let (a, b) = compressed.split_at(compressed.len() / 2);
        stream.extend(frame(false, 0x41, a));
        stream.extend(frame(true, 9, b""));
        stream.extend(frame(true, 0, b));
        stream.extend(frame(true, 1, b"{}"));
        stream.extend(frame(true, 0x42, &deflated(b"\x00\x01")));
        let text = format!("Text({:?}, true)", std::str::from_utf8(request).unwrap());
        let expected = [
            &text[..],
            &text,
            "Ping([])",
            "Text(\"{}\", false)",
            "Binary(true)",
        ];
        for piece in [1, 5, 4096] {
            let mut events = read_with(&stream, piece, on).unwrap();
            events.sort_by_key(|e| e.starts_with("Ping"));
            let mut want = expected.to_vec();
            want.sort_by_key(|e| e.starts_with("Ping"));
            assert_eq!(events, want, "pieces of {piece}");
        }
    }

    #[test]
    fn compression_rules_are_enforced() {
        let on = Limits {
            max_message: 64,
            deflate: true,
        };
        let cases: [(Vec<u8>, Violation); 5] = [
            (
                frame(true, 0x49, b""),
                Violation::Protocol("RSV1 set on a control frame"),
            ),
            (
                [frame(false, 0x41, &deflated(b"{")), frame(true, 0x40, b"")].concat(),
                Violation::Protocol("RSV1 set on a continuation frame"),
            ),
            (
                frame(true, 0x41, &[0xFF; 8]),
                Violation::Inflate(InflateError::Invalid),
            ),
            (
                frame(true, 0x41, &deflated(&[b'a'; 65])),
                Violation::Inflate(InflateError::TooLarge),
            ),
            (frame(true, 0x41, &[0; 200]), Violation::TooLarge),
        ];
        for (bytes, violation) in cases {
            assert_eq!(read_with(&bytes, 7, on), Err(violation));
        }
        assert_eq!(
            Violation::Inflate(InflateError::Invalid).close_code(),
            CloseCode::Invalid
        );
        assert_eq!(
            Violation::Inflate(InflateError::TooLarge).close_code(),
            CloseCode::Size
        );
        let bomb = deflated(&vec![b' '; 1 << 20]);
        assert!(bomb.len() < 2000);
        assert_eq!(
            read_with(
                &frame(true, 0x41, &bomb),
                4096,
                Limits {
                    max_message: LIMIT,
                    deflate: true
                }
            ),
            Err(Violation::Inflate(InflateError::TooLarge))
        );
    }
}
