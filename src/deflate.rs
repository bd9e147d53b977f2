//! permessage-deflate (RFC 7692): which offers the service accepts, compressing a
//! message once for every client that negotiated it, and inflating what clients send.
//!
//! Both directions are without context takeover: every message is compressed on its
//! own, so the same compressed bytes can go to every client, and one inflater, owned by
//! the reactor and reset for each message, serves every connection. Nothing about
//! compression is kept per connection but a flag.

use std::fmt;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's answer, sent in the `101` when an offer is accepted.
pub const ACCEPTED: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The window the compressor uses: 2^15 bytes, the largest; an offer asking for a
/// smaller server window is declined, since the compressor cannot narrow its own.
const SERVER_WINDOW_BITS: u8 = 15;

/// What RFC 7692 §7.2.1 strips from the end of a compressed message and §7.2.2 puts
/// back before inflating: an empty stored block.
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// Whether the `Sec-WebSocket-Extensions` offers in `header` include a
/// permessage-deflate offer this service can honour: the first acceptable one wins;
/// an offer with an unknown or repeated parameter or a bad value is declined, and so
/// is one asking for a server window under 2^15. Declining never fails the handshake.
pub fn accepts(header: &str) -> bool {
    let Some(offers) = parse_offers(header) else {
        return false;
    };
    offers
        .iter()
        .any(|offer| offer.name.eq_ignore_ascii_case("permessage-deflate") && acceptable(offer))
}

/// One extension in an offer: its name and parameters (a value, unquoted, if given).
#[derive(Debug, PartialEq, Eq)]
struct Offer<'a> {
    name: &'a str,
    params: Vec<(&'a str, Option<&'a str>)>,
}

/// Whether a permessage-deflate offer's parameters can be honoured (RFC 7692 §7.1).
fn acceptable(offer: &Offer<'_>) -> bool {
    let mut seen: Vec<&str> = Vec::new();
    for &(name, value) in &offer.params {
        let name_lower = name.to_ascii_lowercase();
        if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            return false;
        }
        seen.push(name);
        let ok = match (name_lower.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => true,
            // The client may limit its own window, with or without saying to what.
            ("client_max_window_bits", None) => true,
            ("client_max_window_bits", Some(bits)) => window_bits(bits).is_some(),
            ("server_max_window_bits", Some(bits)) => window_bits(bits) == Some(SERVER_WINDOW_BITS),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A window size parameter: 8 to 15, in decimal without a sign or leading zero.
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// Parses `Sec-WebSocket-Extensions` (RFC 6455 §9.1): comma-separated extensions, each
/// a token with `;`-separated parameters, a parameter a token with an optional `=` and a
/// token or quoted string. `None` if it is malformed.
fn parse_offers(header: &str) -> Option<Vec<Offer<'_>>> {
    let mut offers = Vec::new();
    let mut rest = header;
    loop {
        rest = skip_space(rest);
        if rest.is_empty() {
            // An empty element of the list (", ,") is allowed and means nothing.
            return Some(offers);
        }
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
            continue;
        }
        let (name, after) = token(rest)?;
        rest = skip_space(after);
        let mut params = Vec::new();
        while let Some(after) = rest.strip_prefix(';') {
            let (param, after) = token(skip_space(after))?;
            rest = skip_space(after);
            let value = match rest.strip_prefix('=') {
                Some(after) => {
                    let after = skip_space(after);
                    let (value, after) = if after.starts_with('"') {
                        quoted(after)?
                    } else {
                        token(after)?
                    };
                    rest = skip_space(after);
                    Some(value)
                }
                None => None,
            };
            params.push((param, value));
        }
        match rest.chars().next() {
            None | Some(',') => offers.push(Offer { name, params }),
            Some(_) => return None,
        }
    }
}

fn skip_space(text: &str) -> &str {
    text.trim_start_matches([' ', '\t'])
}

/// A token (RFC 9110 §5.6.2) at the start of `text`, and what follows it.
fn token(text: &str) -> Option<(&str, &str)> {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)))
        .unwrap_or(text.len());
    (end > 0).then(|| text.split_at(end))
}

/// A quoted string at the start of `text` (its content, which for these parameters
/// must be a token, without escapes), and what follows it.
fn quoted(text: &str) -> Option<(&str, &str)> {
    let inner = text.strip_prefix('"')?;
    let end = inner.find('"')?;
    let (value, after) = (&inner[..end], &inner[end + 1..]);
    let (_, leftover) = token(value)?;
    leftover.is_empty().then_some((value, after))
}

/// Why a compressed message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The data is not valid DEFLATE (closes with 1007).
    Invalid,
    /// It inflates to more than the message limit (closes with 1009).
    TooLarge,
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InflateError::Invalid => f.write_str("compressed data that does not inflate"),
            InflateError::TooLarge => f.write_str("a compressed message over the size limit"),
        }
    }
}

/// The reactor's one inflater, reset for every message, and the buffer it inflates into.
pub struct Inflater {
    inflate: Decompress,
    out: Vec<u8>,
}

impl fmt::Debug for Inflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inflater")
            .field("out", &self.out.capacity())
            .finish()
    }
}

impl Default for Inflater {
    fn default() -> Inflater {
        Inflater {
            inflate: Decompress::new(false),
            out: Vec::new(),
        }
    }
}

impl Inflater {
    /// Inflates one message's compressed payload (RFC 7692 §7.2.2); its size is
    /// stopped at `limit`, whatever the input claims: never more than `limit + 1`
    /// bytes are written.
    pub fn inflate(&mut self, compressed: &[u8], limit: usize) -> Result<&[u8], InflateError> {
        self.inflate.reset(false);
        self.out.clear();
        // One byte beyond the limit tells a message over it from one that fills it.
        self.out.resize(limit + 1, 0);
        let mut written = 0;
        for input in [compressed, &TAIL[..]] {
            let mut consumed = 0;
            while consumed < input.len() {
                let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
                let status = self
                    .inflate
                    .decompress(
                        &input[consumed..],
                        &mut self.out[written..],
                        FlushDecompress::Sync,
                    )
                    .map_err(|_| InflateError::Invalid)?;
                consumed += (self.inflate.total_in() - in_before) as usize;
                written += (self.inflate.total_out() - out_before) as usize;
                if written > limit {
                    return Err(InflateError::TooLarge);
                }
                match status {
                    // The sender ended the stream (BFINAL): what follows is ignored.
                    Status::StreamEnd => {
                        self.out.truncate(written);
                        return Ok(&self.out);
                    }
                    Status::Ok | Status::BufError => {
                        if self.inflate.total_in() == in_before
                            && self.inflate.total_out() == out_before
                        {
                            break;
                        }
                    }
                }
            }
        }
        self.out.truncate(written);
        Ok(&self.out)
    }
}

/// The compressor for outgoing messages, owned by the reactor.
pub struct Compressor {
    deflate: Compress,
    level: u32,
}

impl fmt::Debug for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compressor")
            .field("level", &self.level)
            .finish()
    }
}

impl Compressor {
    /// A compressor at `level` (0–9: 1 is fastest, 9 smallest).
    pub fn new(level: u32) -> Compressor {
        Compressor {
            deflate: Compress::new(Compression::new(level), false),
            level,
        }
    }

    /// `payload` as one final, compressed text frame (RSV1 set, RFC 7692 §6): compressed
    /// on its own, so any client that negotiated the extension can read it.
    pub fn text_frame(&mut self, payload: &[u8]) -> Bytes {
        crate::frame::compressed_text_frame(&self.compress(payload))
    }

    /// `payload` compressed on its own, as a message's payload: without the empty block
    /// that ends a flush (RFC 7692 §7.2.1).
    pub fn compress(&mut self, payload: &[u8]) -> Vec<u8> {
        self.deflate.reset();
        let mut compressed = Vec::with_capacity(payload.len() / 8 + 64);
        loop {
            let before = self.deflate.total_in() as usize;
            // Only an allocation failure can make this fail, and then Vec panics first.
            let _ = self.deflate.compress_vec(
                &payload[before.min(payload.len())..],
                &mut compressed,
                FlushCompress::Sync,
            );
            let done = self.deflate.total_in() as usize >= payload.len();
            if done && compressed.ends_with(&TAIL) && compressed.len() < compressed.capacity() {
                break;
            }
            compressed.reserve(compressed.capacity().max(64));
        }
        compressed.truncate(compressed.len() - TAIL.len());
        compressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_browsers_and_libraries_send_are_accepted() {
        for header in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_max_window_bits=12; server_max_window_bits=15",
            "x-webkit-deflate-frame, permessage-deflate",
            "permessage-deflate; server_max_window_bits=10, permessage-deflate",
            "Permessage-Deflate; Client_Max_Window_Bits=\"15\"",
            " , permessage-deflate ;client_max_window_bits ,",
        ] {
            assert!(accepts(header), "{header}");
        }
    }

    #[test]
    fn offers_that_cannot_be_honoured_are_declined() {
        for header in [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=012",
            "permessage-deflate; client_max_window_bits=+9",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; mystery",
            "permessage-deflate; client_max_window_bits=\"1 5\"",
            "permessage-deflate; =15",
            "permessage-deflate;; client_max_window_bits",
            "permessage-deflate client_max_window_bits",
            "permessage-deflate; client_max_window_bits=\"15",
        ] {
            assert!(!accepts(header), "{header}");
        }
    }

    #[test]
    fn a_compressed_frame_inflates_back_and_is_small() {
        let payload: Vec<u8> = (0..2000)
            .flat_map(|i| {
                format!("{{\"time\":{},\"value\":1.{i:05}}},", 1_700_000_000 + i).into_bytes()
            })
            .collect();
        let frame = Compressor::new(1).text_frame(&payload);
        assert_eq!(frame[0], 0xC1, "FIN, RSV1, text");
        let compressed = &Compressor::new(1).compress(&payload)[..];
        assert!(frame.ends_with(compressed));
        assert!(
            compressed.len() < payload.len() / 5,
            "{} of {}",
            compressed.len(),
            payload.len()
        );
        let mut inflater = Inflater::default();
        assert_eq!(
            inflater.inflate(compressed, payload.len()).unwrap(),
            &payload[..]
        );
        assert_eq!(
            inflater.inflate(compressed, payload.len() - 1),
            Err(InflateError::TooLarge)
        );
        // The inflater is reused, message after message.
        let small = Compressor::new(6).compress(b"{\"action\":\"assets\",\"message\":{}}");
        assert_eq!(
            inflater.inflate(&small, 100).unwrap(),
            b"{\"action\":\"assets\",\"message\":{}}"
        );
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let compressed = &Compressor::new(9).compress(&zeros)[..];
        assert!(compressed.len() < 20_000);
        let mut inflater = Inflater::default();
        assert_eq!(
            inflater.inflate(compressed, 4096),
            Err(InflateError::TooLarge)
        );
        assert!(
            inflater.out.capacity() < 8192,
            "never more than the limit allocated"
        );
    }

    #[test]
    fn garbage_is_invalid() {
        let mut inflater = Inflater::default();
        assert_eq!(
            inflater.inflate(&[0xFF, 0xFF, 0xFF], 100),
            Err(InflateError::Invalid)
        );
        // A final block and bytes after it: what follows the end is ignored (§7.2.3.3).
        let mut ended = flate2::Compress::new(Compression::new(1), false);
        let mut out = Vec::with_capacity(64);
        ended
            .compress_vec(b"{}", &mut out, FlushCompress::Finish)
            .unwrap();
        assert_eq!(inflater.inflate(&out, 100).unwrap(), b"{}");
    }
}
