//! Reading a compressed message (permessage-deflate, RFC 7692 §7.2.2): one inflater per
//! process, reset for every message, since the server compresses each message on its
//! own (`server_no_context_takeover`). The inflated bytes are handed out a piece at a
//! time to whoever reads them (the scanner), so an inflated history is never held whole
//! and the process's memory does not grow with the message.

use flate2::{Decompress, FlushDecompress, Status};
use std::fmt;

/// What RFC 7692 §7.2.1 strips from the end of a compressed message and §7.2.2 puts back
/// before inflating: an empty stored block.
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];
/// Inflated bytes handed out at a time.
const PIECE: usize = 32 * 1024;
/// Most a message may inflate to: hundreds of times a 30-minute history (about
/// 130 KB); a message past it ends its client rather than keeping the process busy.
pub const MAX_INFLATED: u64 = 64 * 1024 * 1024;

/// Why a compressed message could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InflateError {
    /// The payload is not raw DEFLATE data.
    Invalid(String),
    /// It inflates to more than the limit.
    TooLarge(u64),
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InflateError::Invalid(why) => write!(f, "compressed message does not inflate: {why}"),
            InflateError::TooLarge(limit) => {
                write!(f, "compressed message inflates to over {limit} bytes")
            }
        }
    }
}

/// The process's inflater and the piece it inflates into.
pub struct Inflater {
    raw: Decompress,
    piece: Box<[u8]>,
    limit: u64,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::with_limit(MAX_INFLATED)
    }
}

impl Inflater {
    /// An inflater that refuses messages inflating to more than `limit` bytes.
    pub fn with_limit(limit: u64) -> Inflater {
        Inflater {
            raw: Decompress::new(false),
            piece: vec![0; PIECE].into_boxed_slice(),
            limit,
        }
    }

    /// Inflates one message's whole payload, handing the inflated bytes to `each` in
    /// order, a piece at a time; returns how many there were.
    pub fn inflate(
        &mut self,
        compressed: &[u8],
        mut each: impl FnMut(&[u8]),
    ) -> Result<u64, InflateError> {
        self.raw.reset(false);
        let mut total = 0u64;
        for input in [compressed, &TAIL[..]] {
            let mut pos = 0;
            loop {
                let (in_before, out_before) = (self.raw.total_in(), self.raw.total_out());
                let status = self
                    .raw
                    .decompress(&input[pos..], &mut self.piece, FlushDecompress::Sync)
                    .map_err(|e| InflateError::Invalid(e.to_string()))?;
                let used = (self.raw.total_in() - in_before) as usize;
                let made = (self.raw.total_out() - out_before) as usize;
                pos += used;
                total += made as u64;
                if total > self.limit {
                    return Err(InflateError::TooLarge(self.limit));
                }
                if made > 0 {
                    each(&self.piece[..made]);
                }
                if status == Status::StreamEnd {
                    // The sender ended the stream (a final block): nothing follows.
                    return Ok(total);
                }
                if pos == input.len() && made < self.piece.len() {
                    // All input taken and the piece not filled: nothing more is pending.
                    break;
                }
                if used == 0 && made == 0 {
                    return Err(InflateError::Invalid("no progress".into()));
                }
            }
        }
        Ok(total)
    }
}

/// `payload` compressed as a server without context takeover sends it: raw DEFLATE,
/// sync-flushed, the trailing empty block removed (for tests of the readers).
#[cfg(test)]
pub fn compress_message(payload: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new(Compression::new(1), false);
    let mut out = Vec::with_capacity(payload.len() + 64);
    while c.total_in() < payload.len() as u64 || !out.ends_with(&TAIL) {
        out.reserve(payload.len() + 64);
        let from = c.total_in() as usize;
        c.compress_vec(&payload[from..], &mut out, FlushCompress::Sync)
            .expect("compression in memory");
    }
    out.truncate(out.len() - TAIL.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflated(inf: &mut Inflater, compressed: &[u8]) -> Result<(Vec<u8>, usize), InflateError> {
        let mut out = Vec::new();
        let mut pieces = 0;
        let n = inf.inflate(compressed, |p| {
            out.extend_from_slice(p);
            pieces += 1;
        })?;
        assert_eq!(n, out.len() as u64);
        Ok((out, pieces))
    }

    #[test]
    fn messages_inflate_back_one_after_another_with_one_inflater() {
        let mut inf = Inflater::default();
        let big: Vec<u8> = (0..30_000u32)
            .flat_map(|i| format!("{{\"time\":{i}}},").into_bytes())
            .collect();
        for msg in [&b"{\"action\":\"point\"}"[..], &big, b"", &big[..100]] {
            let (out, pieces) = inflated(&mut inf, &compress_message(msg)).unwrap();
            assert_eq!(out, msg);
            // Handed out in pieces, never all at once.
            assert!(pieces >= msg.len().div_ceil(PIECE), "len {}", msg.len());
        }
    }

    #[test]
    fn a_stream_ended_by_a_final_block_is_read_too() {
        use flate2::{Compress, Compression, FlushCompress};
        let mut c = Compress::new(Compression::new(6), false);
        let mut out = Vec::with_capacity(256);
        c.compress_vec(b"hello hello hello", &mut out, FlushCompress::Finish)
            .unwrap();
        let (back, _) = inflated(&mut Inflater::default(), &out).unwrap();
        assert_eq!(back, b"hello hello hello");
    }

    #[test]
    fn garbage_and_bombs_are_refused() {
        let mut inf = Inflater::with_limit(10_000);
        // Block type 3 does not exist.
        assert!(matches!(
            inflated(&mut inf, &[0xFF, 0xFF, 0xFF]),
            Err(InflateError::Invalid(_))
        ));
        let zeros = compress_message(&[0u8; 10_001]);
        assert!(zeros.len() < 100);
        assert_eq!(
            inflated(&mut inf, &zeros),
            Err(InflateError::TooLarge(10_000))
        );
        // The inflater is as good as new afterwards.
        let (out, _) = inflated(&mut inf, &compress_message(b"ok")).unwrap();
        assert_eq!(out, b"ok");
    }
}
