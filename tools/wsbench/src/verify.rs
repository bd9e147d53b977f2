//! What a whole message's payload says: inflated (when it came compressed) and scanned,
//! or, when byte-identical to a payload verified before, that payload's verdict
//! (`repeats.rs` says why that is the same thing). One verifier per process, beside its
//! one inflater.

use crate::inflate::{InflateError, Inflater};
use crate::repeats::{Repeats, Verdict};
use crate::scan::Scanner;

/// The process's inflater and its memory of verified payloads.
#[derive(Default)]
pub struct Verifier {
    /// Inflates every compressed message.
    pub inflater: Inflater,
    /// Payloads verified before.
    pub repeats: Repeats,
}

/// A verdict and whether it was reused rather than read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// What the payload said.
    pub verdict: Verdict,
    /// It repeated a payload verified before, whose verdict it took.
    pub reused: bool,
}

impl Verifier {
    /// The verdict on a whole payload that arrived `compressed` or not.
    pub fn whole(&mut self, compressed: bool, payload: &[u8]) -> Result<Verified, InflateError> {
        if let Some(verdict) = self.repeats.find(compressed, payload) {
            return Ok(Verified {
                verdict,
                reused: true,
            });
        }
        let verdict = if compressed {
            self.inflate_and_scan(payload)?
        } else {
            Verdict {
                summary: Scanner::scan_complete(payload),
                json: payload.len() as u64,
            }
        };
        self.repeats.remember(compressed, payload, verdict);
        Ok(Verified {
            verdict,
            reused: false,
        })
    }

    fn inflate_and_scan(&mut self, payload: &[u8]) -> Result<Verdict, InflateError> {
        let mut scan = Scanner::default();
        let json = self
            .inflater
            .inflate(payload, |piece| scan.feed(piece, false))?;
        scan.feed(&[], true);
        Ok(Verdict {
            summary: scan.summary(),
            json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inflate::compress_message;
    use crate::scan::Action;

    /// A history whose values vary as real ones do (so it compresses no better).
    fn history(asset: i32, first: i64, n: i64) -> String {
        let p: Vec<String> = (first..first + n)
            .map(|t| {
                let v = (t * 7_919 % 100_003) as f64 / 997.0;
                format!(r#"{{"assetName":"X","time":{t},"assetId":{asset},"value":{v}}}"#)
            })
            .collect();
        format!(
            r#"{{"action":"asset_history","message":{{"points":[{}]}}}}"#,
            p.join(",")
        )
    }

    #[test]
    fn a_repeat_takes_the_verdict_a_one_byte_change_is_read_afresh() {
        for compressed in [false, true] {
            let mut v = Verifier::default();
            let h = history(3, 1_000, 1_800);
            let bytes = |json: &str| {
                if compressed {
                    compress_message(json.as_bytes())
                } else {
                    json.as_bytes().to_vec()
                }
            };
            assert!(bytes(&h).len() >= crate::repeats::MIN_BYTES);
            let first = v.whole(compressed, &bytes(&h)).unwrap();
            assert!(!first.reused);
            assert_eq!(first.verdict.summary.action, Action::AssetHistory);
            assert_eq!(first.verdict.summary.last_time, 2_799);
            assert_eq!(first.verdict.json, h.len() as u64);
            let again = v.whole(compressed, &bytes(&h)).unwrap();
            assert_eq!(again.verdict, first.verdict);
            assert!(again.reused, "compressed {compressed}");
            // Another second's history, the same length: one byte apart in its JSON.
            let next = history(3, 1_001, 1_800);
            let other = v.whole(compressed, &bytes(&next)).unwrap();
            assert!(!other.reused);
            assert_eq!(other.verdict.summary.last_time, 2_800);
            // One byte apart (a value's first digit), the same summary, but read afresh.
            let mut value = h.clone().into_bytes();
            let at = h.find("\"value\":").unwrap() + 8;
            value[at] = if value[at] == b'1' { b'2' } else { b'1' };
            let value = String::from_utf8(value).unwrap();
            let w = v.whole(compressed, &bytes(&value)).unwrap();
            assert_eq!((w.reused, w.verdict), (false, first.verdict));
            // A gap in it is found, and found again when it repeats.
            let gap = h.replacen("\"time\":1100,", "\"time\":1300,", 1);
            for _ in 0..2 {
                let g = v.whole(compressed, &bytes(&gap)).unwrap();
                assert_eq!(g.verdict.summary.time_steps_bad, 2);
            }
        }
    }

    #[test]
    fn a_payload_that_does_not_inflate_fails_every_time() {
        let mut v = Verifier::default();
        let mut z = compress_message(history(3, 1_000, 1_800).as_bytes());
        assert!(!v.whole(true, &z).unwrap().reused);
        // The same length, one byte apart: a first block of type 3, which does not exist.
        z[0] |= 0b110;
        for _ in 0..2 {
            assert!(v.whole(true, &z).is_err());
        }
    }
}
