//! Follows the frame headers in the bytes a WebSocket client sends, to count the
//! fragments of the message in progress.
//!
//! tungstenite bounds a message's size but not its number of fragments: empty
//! continuation frames add nothing to the size, so a client could send them forever and
//! one `read` would never return. The connection feeds every byte it reads through
//! [`FrameScan`] and closes the client once a message has too many fragments.

/// Fragments one message may have before the client is closed.
pub const MAX_FRAGMENTS: u32 = 256;

/// Where the scan is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Reading a frame header: the bytes so far.
    Header { bytes: [u8; 14], have: usize },
    /// Skipping a frame's payload: bytes left.
    Payload { left: u64 },
}

/// The frame-header follower of one connection.
#[derive(Debug, Clone)]
pub struct FrameScan {
    state: State,
    /// Data frames without FIN since the last FIN.
    fragments: u32,
}

impl Default for FrameScan {
    fn default() -> FrameScan {
        FrameScan {
            state: State::Header {
                bytes: [0; 14],
                have: 0,
            },
            fragments: 0,
        }
    }
}

/// A message arrived in more than [`MAX_FRAGMENTS`] fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyFragments;

impl FrameScan {
    /// Follows `input`, the next bytes read from the client.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), TooManyFragments> {
        while !input.is_empty() {
            match &mut self.state {
                State::Payload { left } => {
                    let skip = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                    *left -= skip as u64;
                    input = &input[skip..];
                    if *left == 0 {
                        self.state = State::Header {
                            bytes: [0; 14],
                            have: 0,
                        };
                    }
                }
                State::Header { bytes, have } => {
                    bytes[*have] = input[0];
                    *have += 1;
                    input = &input[1..];
                    if let Some(header) = parse_header(&bytes[..*have]) {
                        if header.opcode < 8 {
                            if header.fin {
                                self.fragments = 0;
                            } else {
                                self.fragments += 1;
                                if self.fragments > MAX_FRAGMENTS {
                                    return Err(TooManyFragments);
                                }
                            }
                        }
                        self.state = if header.payload == 0 {
                            State::Header {
                                bytes: [0; 14],
                                have: 0,
                            }
                        } else {
                            State::Payload {
                                left: header.payload,
                            }
                        };
                    }
                }
            }
        }
        Ok(())
    }
}

struct Header {
    fin: bool,
    opcode: u8,
    payload: u64,
}

/// The header in `bytes`, once they hold all of it.
fn parse_header(bytes: &[u8]) -> Option<Header> {
    let [first, second, rest @ ..] = bytes else {
        return None;
    };
    let masked = second & 0x80 != 0;
    let mask_len = if masked { 4 } else { 0 };
    let (payload, len_len) = match second & 0x7F {
        126 => (None, 2),
        127 => (None, 8),
        n => (Some(u64::from(n)), 0),
    };
    if rest.len() < len_len + mask_len {
        return None;
    }
    let payload = payload.unwrap_or_else(|| {
        rest[..len_len]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    });
    Some(Header {
        fin: first & 0x80 != 0,
        opcode: first & 0x0F,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn whole_messages_never_count() {
        let mut scan = FrameScan::default();
        for _ in 0..10_000 {
            scan.feed(&frame(true, 1, b"{}")).unwrap();
        }
    }

    #[test]
    fn endless_empty_continuations_are_refused() {
        let mut scan = FrameScan::default();
        scan.feed(&frame(false, 1, b"{")).unwrap();
        let empty = frame(false, 0, b"");
        for _ in 1..MAX_FRAGMENTS {
            scan.feed(&empty).unwrap();
        }
        assert_eq!(scan.feed(&empty), Err(TooManyFragments));
    }

    #[test]
    fn control_frames_between_fragments_do_not_reset_the_count() {
        let mut scan = FrameScan::default();
        let mut bytes = frame(false, 1, b"{");
        for _ in 0..MAX_FRAGMENTS {
            bytes.extend(frame(true, 9, b"ping"));
            bytes.extend(frame(false, 0, b""));
        }
        assert_eq!(scan.feed(&bytes), Err(TooManyFragments));
    }

    #[test]
    fn a_final_fragment_starts_the_count_again() {
        let mut scan = FrameScan::default();
        for _ in 0..3 {
            let mut message = frame(false, 1, b"{");
            for _ in 1..MAX_FRAGMENTS {
                message.extend(frame(false, 0, b" "));
            }
            message.extend(frame(true, 0, b"}"));
            scan.feed(&message).unwrap();
        }
    }

    #[test]
    fn headers_and_payloads_split_anywhere_are_followed() {
        let mut stream = frame(false, 1, &[b'x'; 300]);
        stream.extend(frame(false, 0, &[b'y'; 70_000]));
        stream.extend(frame(true, 0, b""));
        for _ in 0..=MAX_FRAGMENTS {
            stream.extend(frame(false, 0, b""));
        }
        let mut scan = FrameScan::default();
        let mut result = Ok(());
        for byte in &stream {
            result = scan.feed(std::slice::from_ref(byte));
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(TooManyFragments));
        assert_eq!(scan.fragments, MAX_FRAGMENTS + 1);
    }
}
