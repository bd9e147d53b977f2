//! A streaming scanner for the few JSON fields the tool checks, so a 130 KB history is
//! never buffered: bytes are fed as they arrive and only `"action"`, every `"time"` and
//! every `"assetId"` are picked out with a substring search.
//!
//! A token (key plus value) is at most [`TAIL`] bytes long, so keeping the last `TAIL`
//! unscanned bytes of each piece is enough for a token split across reads or frames.

use memchr::memmem;
use std::sync::OnceLock;

/// Longest token the scanner reads (key plus value), and so the carry between pieces.
pub const TAIL: usize = 40;
/// Pieces shorter than this are only accumulated, not scanned.
const CARRY_CAP: usize = 2 * TAIL;

/// The `action` of a message, as far as the tool cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// No `"action"` key seen (yet).
    #[default]
    Missing,
    /// `assets` reply.
    Assets,
    /// `asset_history` reply.
    AssetHistory,
    /// A live `point`.
    Point,
    /// An `error` reply.
    Error,
    /// `unsubscribed` reply.
    Unsubscribed,
    /// Anything else.
    Other,
}

impl Action {
    fn from_name(name: &[u8]) -> Action {
        match name {
            b"assets" => Action::Assets,
            b"asset_history" => Action::AssetHistory,
            b"point" => Action::Point,
            b"error" => Action::Error,
            b"unsubscribed" => Action::Unsubscribed,
            _ => Action::Other,
        }
    }
}

/// What one message said, as far as the checks need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// The message's action.
    pub action: Action,
    /// How many `"time":` values it held (1 for a point, the history length for a history).
    pub times: u32,
    /// The first time value.
    pub first_time: i64,
    /// The last time value.
    pub last_time: i64,
    /// Times that did not follow the previous one by exactly 1 (gaps or disorder in a history).
    pub time_steps_bad: u32,
    /// The first `"assetId"` value (0 if none).
    pub asset_id: i32,
    /// `"assetId"` values different from the first.
    pub asset_mismatches: u32,
    /// Keys found with a value that is not an integer / a string.
    pub malformed: u32,
}

struct Finders {
    time: memmem::Finder<'static>,
    asset: memmem::Finder<'static>,
    action: memmem::Finder<'static>,
}

fn finders() -> &'static Finders {
    static F: OnceLock<Finders> = OnceLock::new();
    F.get_or_init(|| Finders {
        time: memmem::Finder::new(TIME_KEY),
        asset: memmem::Finder::new(ASSET_KEY),
        action: memmem::Finder::new(ACTION_KEY),
    })
}

const TIME_KEY: &[u8] = b"\"time\":";
const ASSET_KEY: &[u8] = b"\"assetId\":";
const ACTION_KEY: &[u8] = b"\"action\":";

/// Incremental scanner state for one message; feed it the payload in pieces.
pub struct Scanner {
    summary: Summary,
    carry: [u8; CARRY_CAP],
    carry_len: usize,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            summary: Summary::default(),
            carry: [0; CARRY_CAP],
            carry_len: 0,
        }
    }
}

impl Scanner {
    /// Scans a whole message at once (the common case of a point arriving in one read).
    pub fn scan_complete(payload: &[u8]) -> Summary {
        let mut s = Summary::default();
        scan_region(&mut s, payload, payload.len());
        s
    }

    /// Feeds the next piece of the message; `last` marks the end of the message.
    pub fn feed(&mut self, data: &[u8], last: bool) {
        let total = self.carry_len + data.len();
        if !last && total <= CARRY_CAP {
            self.carry[self.carry_len..total].copy_from_slice(data);
            self.carry_len = total;
            return;
        }
        // Positions below `cut` (in carry ++ data) are scanned now; the rest is carried.
        let cut = if last { total } else { total - TAIL };
        if self.carry_len > 0 {
            // Tokens starting in the carry end within TAIL bytes, so a short join suffices.
            let mut join = [0u8; CARRY_CAP + CARRY_CAP];
            let extra = data.len().min(CARRY_CAP);
            join[..self.carry_len].copy_from_slice(&self.carry[..self.carry_len]);
            join[self.carry_len..self.carry_len + extra].copy_from_slice(&data[..extra]);
            scan_region(
                &mut self.summary,
                &join[..self.carry_len + extra],
                self.carry_len.min(cut),
            );
        }
        if cut > self.carry_len {
            scan_region(&mut self.summary, data, cut - self.carry_len);
        }
        // New carry = (carry ++ data)[cut..].
        let keep = total - cut;
        let mut next = [0u8; CARRY_CAP];
        if cut >= self.carry_len {
            next[..keep].copy_from_slice(&data[cut - self.carry_len..]);
        } else {
            let from_carry = self.carry_len - cut;
            next[..from_carry].copy_from_slice(&self.carry[cut..self.carry_len]);
            next[from_carry..keep].copy_from_slice(data);
        }
        self.carry = next;
        self.carry_len = keep;
    }

    /// The summary once the last piece has been fed.
    pub fn summary(&self) -> Summary {
        self.summary
    }
}

/// Scans `region` for tokens whose key starts before `limit`.
fn scan_region(s: &mut Summary, region: &[u8], limit: usize) {
    let f = finders();
    if s.action == Action::Missing
        && let Some(at) = f.action.find(region).filter(|&at| at < limit)
    {
        match string_value(&region[at + ACTION_KEY.len()..]) {
            Some(name) => s.action = Action::from_name(name),
            None => s.malformed += 1,
        }
    }
    for at in f.time.find_iter(region) {
        if at >= limit {
            break;
        }
        match int_value(&region[at + TIME_KEY.len()..]) {
            Some(t) => {
                if s.times == 0 {
                    s.first_time = t;
                } else if t != s.last_time + 1 {
                    s.time_steps_bad += 1;
                }
                s.last_time = t;
                s.times += 1;
            }
            None => s.malformed += 1,
        }
    }
    for at in f.asset.find_iter(region) {
        if at >= limit {
            break;
        }
        match int_value(&region[at + ASSET_KEY.len()..]).and_then(|v| i32::try_from(v).ok()) {
            Some(id) if s.asset_id == 0 => s.asset_id = id,
            Some(id) if id != s.asset_id => s.asset_mismatches += 1,
            Some(_) => {}
            None => s.malformed += 1,
        }
    }
}

fn skip_spaces(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// A JSON integer at the start of `b` (after optional spaces), ended by a non-digit.
fn int_value(b: &[u8]) -> Option<i64> {
    let b = skip_spaces(b);
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        _ => (false, b),
    };
    let n = digits.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 18 || n == digits.len() {
        // No digits, too long, or the number may continue past the visible bytes.
        return None;
    }
    let mut v: i64 = 0;
    for d in &digits[..n] {
        v = v * 10 + i64::from(d - b'0');
    }
    Some(if neg { -v } else { v })
}

/// A short JSON string without escapes at the start of `b` (after optional spaces).
fn string_value(b: &[u8]) -> Option<&[u8]> {
    let b = skip_spaces(b).strip_prefix(b"\"")?;
    let end = b.iter().take(TAIL).position(|&c| c == b'"')?;
    Some(&b[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(asset: i32, first: i64, n: i64) -> String {
        let points: Vec<String> = (first..first + n)
            .map(|t| {
                format!(r#"{{"assetName":"EURUSD","time":{t},"assetId":{asset},"value":1.0912345000000001}}"#)
            })
            .collect();
        format!(
            r#"{{"action":"asset_history","message":{{"points":[{}]}}}}"#,
            points.join(",")
        )
    }

    #[test]
    fn a_point_gives_action_time_and_asset() {
        let p = br#"{"action":"point","message":{"assetName":"USDJPY","time":1764331200,"assetId":2,"value":155.5}}"#;
        let s = Scanner::scan_complete(p);
        assert_eq!(s.action, Action::Point);
        assert_eq!(
            (s.times, s.first_time, s.last_time),
            (1, 1_764_331_200, 1_764_331_200)
        );
        assert_eq!(s.asset_id, 2);
        assert_eq!(
            (s.malformed, s.asset_mismatches, s.time_steps_bad),
            (0, 0, 0)
        );
    }

    #[test]
    fn key_order_and_spaces_do_not_matter() {
        let p = br#"{"message": {"time": 5, "assetId": 3}, "action": "point"}"#;
        let s = Scanner::scan_complete(p);
        assert_eq!(
            (s.action, s.times, s.last_time, s.asset_id),
            (Action::Point, 1, 5, 3)
        );
    }

    #[test]
    fn a_history_gives_count_first_last() {
        let h = history(4, 1000, 1800);
        let s = Scanner::scan_complete(h.as_bytes());
        assert_eq!(s.action, Action::AssetHistory);
        assert_eq!((s.times, s.first_time, s.last_time), (1800, 1000, 2799));
        assert_eq!(
            (s.asset_id, s.asset_mismatches, s.time_steps_bad),
            (4, 0, 0)
        );
    }

    #[test]
    fn gaps_and_other_assets_in_a_history_are_counted() {
        let h = r#"{"action":"asset_history","message":{"points":[{"time":1,"assetId":1},{"time":3,"assetId":2},{"time":4,"assetId":1}]}}"#;
        let s = Scanner::scan_complete(h.as_bytes());
        assert_eq!((s.times, s.time_steps_bad, s.asset_mismatches), (3, 1, 1));
    }

    #[test]
    fn empty_history_and_error_reply() {
        let s = Scanner::scan_complete(br#"{"action":"asset_history","message":{"points":[]}}"#);
        assert_eq!((s.action, s.times), (Action::AssetHistory, 0));
        let e = br#"{"action":"error","message":{"error_type":"UnknownAsset","error_text":"no \"time\": here"}}"#;
        let s = Scanner::scan_complete(e);
        assert_eq!((s.action, s.times), (Action::Error, 0));
    }

    #[test]
    fn malformed_values_are_counted_not_trusted() {
        let s =
            Scanner::scan_complete(br#"{"action":"point","message":{"time":"x","assetId":1.5e3}}"#);
        assert_eq!(s.times, 0);
        assert_eq!(s.malformed, 1);
        // 1.5e3 parses as 1 followed by '.', which is accepted as the integer part; a
        // server never sends a float id, so only the time check matters here.
        assert_eq!(s.asset_id, 1);
    }

    #[test]
    fn every_split_point_gives_the_same_summary() {
        let h = history(1, 1_764_329_401, 40);
        let bytes = h.as_bytes();
        let whole = Scanner::scan_complete(bytes);
        for cut in 0..=bytes.len() {
            let mut sc = Scanner::default();
            sc.feed(&bytes[..cut], false);
            sc.feed(&bytes[cut..], true);
            assert_eq!(sc.summary(), whole, "split at {cut}");
        }
    }

    #[test]
    fn tiny_pieces_give_the_same_summary() {
        let h = history(5, 7, 60);
        let bytes = h.as_bytes();
        let whole = Scanner::scan_complete(bytes);
        for step in [1usize, 2, 3, 7, 39, 40, 41, 79, 80, 81, 333] {
            let mut sc = Scanner::default();
            let chunks: Vec<&[u8]> = bytes.chunks(step).collect();
            for (i, c) in chunks.iter().enumerate() {
                sc.feed(c, i + 1 == chunks.len());
            }
            assert_eq!(sc.summary(), whole, "pieces of {step}");
        }
    }
}
