//! Payloads already verified, remembered by their exact bytes, so a repeat is not read
//! again: the server sends every subscriber of an asset in the same second the same
//! history frame (one shared frame, and for compressing clients one shared compressed
//! frame), and scanning 124 KB of JSON (inflating it first when compressed) for each of
//! ten thousand clients is what made the tool, not the server, set the pace of a
//! subscribe phase.
//!
//! What a payload says ([`Verdict`]: the scanner's summary and the JSON's length) is a
//! pure function of its bytes: the scanner keeps no state between messages, and every
//! compressed message is inflated on its own (`server_no_context_takeover`) under the
//! same size limit. So a payload byte-identical to one verified before has that one's
//! verdict, and only that is reused: each client's own stream check (`check.rs`: the
//! history's asset, last time and the seam after it, lost and repeated points) still
//! runs on it, per client, as before. A payload that differs in one byte is not a repeat
//! and is verified afresh; one that failed (did not inflate) is never remembered.
//!
//! The key is the exact bytes, compressed or not as they came, and whether they came
//! compressed: never a hash alone. A payload that arrived whole is compared with the
//! remembered payloads of its length ([`Repeats::find`]). One that arrives a piece at a
//! time (a plain history spread over reads) is compared piece by piece as it arrives
//! ([`Follower`]), so no client holds its 124 KB: the client holds only references to
//! the remembered payloads it still equals and how far it got. When the last of them
//! differs, the bytes matched so far are that payload's own prefix, so the scanner reads
//! the prefix from it and goes on with the arriving pieces, as if it had scanned all
//! along. A streamed payload that matches nothing remembered when it starts is scanned
//! as today and, if one of [`MAX_COPIES`] slots is free, copied meanwhile to be
//! remembered once verified: at most that many 124 KB copies exist at once, whatever
//! the number of clients.
//!
//! Bounded: only payloads of [`MIN_BYTES`] or more (histories, not points), at most
//! [`PER_ASSET`] per asset (the last few seconds' histories), [`MAX_ENTRIES`] and
//! [`MAX_BYTES`] in all, oldest first out. A client comparing against a payload that is
//! let go meanwhile keeps it alive until its message ends.

use crate::scan::Summary;
use std::collections::VecDeque;
use std::rc::Rc;

/// Payloads shorter than this are not remembered (a point is about 100 bytes: reading it
/// costs less than looking it up).
pub const MIN_BYTES: usize = 4096;
/// Payloads remembered per asset (the histories of the last few seconds).
pub const PER_ASSET: usize = 4;
/// Payloads remembered in all.
pub const MAX_ENTRIES: usize = 256;
/// Bytes remembered in all.
pub const MAX_BYTES: usize = 32 * 1024 * 1024;
/// Streamed payloads copied at once to be remembered.
pub const MAX_COPIES: usize = 4;

/// What a payload said, as the checks need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The scanner's summary of the (inflated) JSON.
    pub summary: Summary,
    /// The JSON's length: the payload's, or what it inflated to.
    pub json: u64,
}

/// One remembered payload.
struct Entry {
    compressed: bool,
    bytes: Box<[u8]>,
    verdict: Verdict,
}

/// The remembered payloads, oldest first.
#[derive(Default)]
pub struct Repeats {
    entries: VecDeque<Rc<Entry>>,
    bytes: usize,
    /// One reference per copy in progress (see [`Repeats::gather`]).
    copies: Rc<()>,
}

impl Repeats {
    /// The verdict on a payload byte-identical to `payload` (with the same compression),
    /// if one was remembered.
    pub fn find(&self, compressed: bool, payload: &[u8]) -> Option<Verdict> {
        if payload.len() < MIN_BYTES {
            return None;
        }
        self.entries
            .iter()
            .rev()
            .find(|e| e.compressed == compressed && *e.bytes == *payload)
            .map(|e| e.verdict)
    }

    /// Remembers `payload`'s verdict (nothing if it is short or already remembered),
    /// letting the oldest go past the bounds.
    pub fn remember(&mut self, compressed: bool, payload: &[u8], verdict: Verdict) {
        if payload.len() < MIN_BYTES
            || payload.len() > MAX_BYTES
            || self.find(compressed, payload).is_some()
        {
            return;
        }
        let asset = verdict.summary.asset_id;
        let same_asset = self
            .entries
            .iter()
            .filter(|e| e.verdict.summary.asset_id == asset)
            .count();
        if same_asset >= PER_ASSET
            && let Some(at) = self
                .entries
                .iter()
                .position(|e| e.verdict.summary.asset_id == asset)
        {
            self.let_go(at);
        }
        self.bytes += payload.len();
        self.entries.push_back(Rc::new(Entry {
            compressed,
            bytes: payload.into(),
            verdict,
        }));
        while self.entries.len() > MAX_ENTRIES || self.bytes > MAX_BYTES {
            self.let_go(0);
        }
    }

    fn let_go(&mut self, at: usize) {
        if let Some(e) = self.entries.remove(at) {
            self.bytes -= e.bytes.len();
        }
    }

    /// Starts comparing a plain payload of `len` bytes that will arrive in pieces with
    /// the remembered ones of that length; `None` when there are none.
    pub fn follow(&self, len: u64) -> Option<Follower> {
        if len < MIN_BYTES as u64 {
            return None;
        }
        let candidates: Vec<Rc<Entry>> = self
            .entries
            .iter()
            .rev()
            .filter(|e| !e.compressed && e.bytes.len() as u64 == len)
            .cloned()
            .collect();
        (!candidates.is_empty()).then_some(Follower {
            candidates,
            matched: 0,
        })
    }

    /// A copy of a streamed payload of `len` bytes, to remember it once it is verified;
    /// `None` if it is too short or long, or [`MAX_COPIES`] are in progress.
    pub fn gather(&self, len: u64) -> Option<Gathering> {
        let busy = Rc::strong_count(&self.copies) - 1;
        if len < MIN_BYTES as u64 || len > MAX_BYTES as u64 || busy >= MAX_COPIES {
            return None;
        }
        Some(Gathering {
            // A history is about 124 KB; a longer payload grows the copy as it comes.
            bytes: Vec::with_capacity(len.min(256 * 1024) as usize),
            _slot: Rc::clone(&self.copies),
        })
    }

    /// How many payloads are remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A streamed payload being copied to be remembered; holds one of the [`MAX_COPIES`]
/// slots until dropped.
pub struct Gathering {
    /// The bytes so far.
    pub bytes: Vec<u8>,
    _slot: Rc<()>,
}

/// A plain payload arriving in pieces, compared as it comes with the remembered payloads
/// of its length that it still equals.
pub struct Follower {
    candidates: Vec<Rc<Entry>>,
    matched: usize,
}

/// The bytes a streamed payload had when it stopped matching anything remembered: a
/// prefix of a remembered payload (kept alive by this).
pub struct Prefix {
    entry: Rc<Entry>,
    len: usize,
}

impl Prefix {
    /// The bytes that arrived before the piece that differed.
    pub fn bytes(&self) -> &[u8] {
        &self.entry.bytes[..self.len]
    }
}

impl Follower {
    /// Compares the next piece. `None` while some remembered payload still equals
    /// everything so far; once none does, the bytes before this piece.
    pub fn feed(&mut self, piece: &[u8]) -> Option<Prefix> {
        let (from, to) = (self.matched, self.matched + piece.len());
        let first = Rc::clone(self.candidates.first()?);
        self.candidates
            .retain(|e| e.bytes.get(from..to).is_some_and(|b| b == piece));
        if self.candidates.is_empty() {
            return Some(Prefix {
                entry: first,
                len: from,
            });
        }
        self.matched = to;
        None
    }

    /// The verdict once every byte has arrived and matched a remembered payload.
    pub fn verdict(&self) -> Option<Verdict> {
        self.candidates
            .iter()
            .find(|e| e.bytes.len() == self.matched)
            .map(|e| e.verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn verdict(asset: i32, last: i64) -> Verdict {
        Verdict {
            summary: Summary {
                asset_id: asset,
                last_time: last,
                times: 1800,
                ..Summary::default()
            },
            json: 124_000,
        }
    }

    #[test]
    fn the_same_bytes_find_the_verdict_other_bytes_do_not() {
        let mut r = Repeats::default();
        let p = payload(1, 10_000);
        r.remember(false, &p, verdict(3, 100));
        assert_eq!(r.find(false, &p), Some(verdict(3, 100)));
        // Compressed bytes are another key, even when equal.
        assert_eq!(r.find(true, &p), None);
        for at in [0, 4_999, 9_999] {
            let mut q = p.clone();
            q[at] ^= 1;
            assert_eq!(r.find(false, &q), None, "byte {at}");
        }
        assert_eq!(r.find(false, &p[..9_999]), None);
        // Short payloads are never remembered.
        r.remember(false, &p[..100], verdict(3, 1));
        assert_eq!((r.find(false, &p[..100]), r.len()), (None, 1));
        // Remembering the same bytes twice keeps one.
        r.remember(false, &p, verdict(3, 100));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn per_asset_and_in_all_the_oldest_go_first() {
        let mut r = Repeats::default();
        for s in 0..6u8 {
            r.remember(false, &payload(s, 5_000), verdict(7, i64::from(s)));
        }
        r.remember(true, &payload(0, 5_000), verdict(8, 0));
        assert_eq!(r.len(), PER_ASSET + 1);
        assert_eq!(r.find(false, &payload(0, 5_000)), None);
        assert_eq!(r.find(false, &payload(5, 5_000)), Some(verdict(7, 5)));
        assert_eq!(r.find(true, &payload(0, 5_000)), Some(verdict(8, 0)));
        for a in 0..(MAX_ENTRIES as i32 + 10) {
            r.remember(
                false,
                &payload(a as u8, 4_096 + a as usize),
                verdict(a + 100, 0),
            );
        }
        assert_eq!(r.len(), MAX_ENTRIES);
        let big = MAX_BYTES / 4 + 1;
        for a in 0..4 {
            r.remember(false, &payload(a, big), verdict(1_000 + i32::from(a), 0));
        }
        assert!(r.bytes <= MAX_BYTES && r.len() < MAX_ENTRIES);
        assert!(r.find(false, &payload(3, big)).is_some());
        assert!(r.find(false, &payload(0, big)).is_none());
    }

    #[test]
    fn a_follower_matches_in_any_pieces_and_gives_the_prefix_on_a_difference() {
        let mut r = Repeats::default();
        let p = payload(1, 20_000);
        r.remember(false, &p, verdict(3, 100));
        assert!(r.follow(19_999).is_none());
        for step in [1usize, 7, 4_096, 20_000] {
            let mut f = r.follow(20_000).unwrap();
            for piece in p.chunks(step) {
                assert!(f.feed(piece).is_none());
            }
            assert_eq!(f.verdict(), Some(verdict(3, 100)), "step {step}");
        }
        // One byte differs: the follower gives up at the piece holding it, with the
        // bytes before that piece, which are the arriving payload's own.
        let mut q = p.clone();
        q[12_345] ^= 0x40;
        let mut f = r.follow(20_000).unwrap();
        let mut prefix = None;
        for piece in q.chunks(1_000) {
            if let Some(pre) = f.feed(piece) {
                prefix = Some(pre);
                break;
            }
        }
        let prefix = prefix.unwrap();
        assert_eq!(prefix.bytes(), &q[..12_000]);
        // Not complete: no verdict.
        let mut f = r.follow(20_000).unwrap();
        assert!(f.feed(&p[..100]).is_none());
        assert_eq!(f.verdict(), None);
    }

    #[test]
    fn a_follower_keeps_every_candidate_of_its_length_until_one_alone_fits() {
        let mut r = Repeats::default();
        let a = payload(1, 8_000);
        let mut b = a.clone();
        b[7_000] ^= 1;
        r.remember(false, &a, verdict(1, 1));
        r.remember(false, &b, verdict(1, 2));
        for (p, want) in [(&a, 1), (&b, 2)] {
            let mut f = r.follow(8_000).unwrap();
            for piece in p.chunks(500) {
                assert!(f.feed(piece).is_none());
            }
            assert_eq!(f.verdict().map(|v| v.summary.last_time), Some(want));
        }
    }

    #[test]
    fn copies_are_bounded_and_free_their_slot_when_dropped() {
        let r = Repeats::default();
        assert!(r.gather(100).is_none());
        let held: Vec<Gathering> = (0..MAX_COPIES).filter_map(|_| r.gather(5_000)).collect();
        assert_eq!(held.len(), MAX_COPIES);
        assert!(r.gather(5_000).is_none());
        drop(held);
        assert!(r.gather(5_000).is_some());
    }
}
