//! The per-client stream check: after a history, live points must continue at exactly
//! history-last + 1, one second at a time, and no point of a replaced subscription may
//! follow the new history.

use serde::{Deserialize, Serialize};

/// What a client's stream looked like so far; a few dozen bytes per client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCheck {
    /// Asset whose history was received last (0: none yet).
    pub asset: i32,
    /// Asset asked for whose history has not arrived (0: none).
    pub want: i32,
    /// Last point time seen for `asset` (None after an empty history or before any).
    pub last: Option<i64>,
    /// A history arrived and no live point has followed it yet.
    seam_open: bool,
    /// Seconds skipped (including at the seam).
    pub lost: u32,
    /// Points at or before the last time seen (including at the seam).
    pub dup: u32,
    /// Points of another asset than the current subscription.
    pub stale: u32,
    /// First live point after a history was not history-last + 1.
    pub seam_bad: u32,
    /// Histories that arrived without a subscribe waiting for one.
    pub unexpected_history: u32,
}

/// How a point fitted the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointFit {
    /// Exactly the next second (or the first point after an empty history).
    Next,
    /// After a gap of this many seconds.
    Gap(i64),
    /// Repeated or out of order.
    Duplicate,
    /// Not the subscribed asset.
    Stale,
}

impl StreamCheck {
    /// A subscribe for `asset` was sent.
    pub fn subscribed(&mut self, asset: i32) {
        self.want = asset;
    }

    /// A history arrived; `last_time` is its newest point (None when empty). Returns whether
    /// a subscribe was waiting for it.
    pub fn history(&mut self, last_time: Option<i64>) -> bool {
        if self.want == 0 {
            self.unexpected_history += 1;
            return false;
        }
        self.asset = self.want;
        self.want = 0;
        self.last = last_time;
        self.seam_open = last_time.is_some();
        true
    }

    /// A live point of `asset` at `time` arrived.
    pub fn point(&mut self, asset: i32, time: i64) -> PointFit {
        if asset != self.asset || self.asset == 0 {
            self.stale += 1;
            return PointFit::Stale;
        }
        let seam = std::mem::take(&mut self.seam_open);
        let fit = match self.last {
            None => PointFit::Next,
            Some(l) if time == l + 1 => PointFit::Next,
            Some(l) if time > l + 1 => PointFit::Gap(time - l - 1),
            Some(_) => PointFit::Duplicate,
        };
        if seam && fit != PointFit::Next {
            self.seam_bad += 1;
        }
        match fit {
            PointFit::Gap(n) => {
                self.lost = self
                    .lost
                    .saturating_add(u32::try_from(n).unwrap_or(u32::MAX))
            }
            PointFit::Duplicate => self.dup += 1,
            _ => {}
        }
        if fit != PointFit::Duplicate {
            self.last = Some(time);
        }
        fit
    }

    /// Points missing at the end: the newest tick everyone should have is `newest`.
    pub fn tail_missing(&self, newest: i64) -> i64 {
        match self.last {
            Some(l) if self.asset != 0 && l < newest => newest - l,
            _ => 0,
        }
    }
}

/// Stream findings added up over clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Findings {
    /// Seconds skipped, including those missing at the end.
    pub lost: u64,
    /// Points repeated.
    pub dup: u64,
    /// Points of a replaced subscription after its new history.
    pub stale: u64,
    /// Seams where the first live point was not history-last + 1.
    pub seam_bad: u64,
    /// Histories nobody asked for.
    pub unexpected_history: u64,
    /// Clients with any lost, repeated, stale point or bad seam.
    pub clients: usize,
}

impl Findings {
    /// Adds one client's check, with `tail` seconds missing at its end.
    pub fn add(&mut self, k: &StreamCheck, tail: u64) {
        let lost = u64::from(k.lost) + tail;
        self.lost += lost;
        self.dup += u64::from(k.dup);
        self.stale += u64::from(k.stale);
        self.seam_bad += u64::from(k.seam_bad);
        self.unexpected_history += u64::from(k.unexpected_history);
        if lost + u64::from(k.dup + k.stale + k.seam_bad) > 0 {
            self.clients += 1;
        }
    }

    /// Adds another set of findings.
    pub fn merge(&mut self, o: &Findings) {
        self.lost += o.lost;
        self.dup += o.dup;
        self.stale += o.stale;
        self.seam_bad += o.seam_bad;
        self.unexpected_history += o.unexpected_history;
        self.clients += o.clients;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_stream_has_no_findings() {
        let mut s = StreamCheck::default();
        s.subscribed(1);
        assert!(s.history(Some(100)));
        for t in 101..110 {
            assert_eq!(s.point(1, t), PointFit::Next);
        }
        assert_eq!((s.lost, s.dup, s.stale, s.seam_bad), (0, 0, 0, 0));
        assert_eq!(s.tail_missing(109), 0);
        assert_eq!(s.tail_missing(111), 2);
    }

    #[test]
    fn gaps_duplicates_and_bad_seams_are_counted() {
        let mut s = StreamCheck::default();
        s.subscribed(2);
        s.history(Some(100));
        assert_eq!(s.point(2, 100), PointFit::Duplicate); // repeats the history's last
        assert_eq!(s.point(2, 101), PointFit::Next);
        assert_eq!(s.point(2, 104), PointFit::Gap(2));
        assert_eq!(s.point(2, 103), PointFit::Duplicate);
        assert_eq!((s.lost, s.dup, s.seam_bad), (2, 2, 1));
        s.subscribed(2);
        s.history(Some(110));
        assert_eq!(s.point(2, 112), PointFit::Gap(1));
        assert_eq!(s.seam_bad, 2);
    }

    #[test]
    fn old_asset_points_are_fine_until_the_new_history_then_stale() {
        let mut s = StreamCheck::default();
        s.subscribed(1);
        s.history(Some(10));
        s.subscribed(3);
        assert_eq!(s.point(1, 11), PointFit::Next);
        s.history(Some(11));
        assert_eq!(s.point(1, 12), PointFit::Stale);
        assert_eq!(s.point(3, 12), PointFit::Next);
        assert_eq!((s.stale, s.lost, s.dup), (1, 0, 0));
    }

    #[test]
    fn findings_add_up_clients_with_any_problem() {
        let mut clean = StreamCheck::default();
        clean.subscribed(1);
        clean.history(Some(10));
        clean.point(1, 11);
        let mut gappy = clean;
        gappy.point(1, 14);
        let mut f = Findings::default();
        f.add(&clean, 0);
        f.add(&gappy, 0);
        f.add(&clean, 3);
        assert_eq!((f.lost, f.dup, f.clients), (5, 0, 2));
        let mut g = f;
        g.merge(&f);
        assert_eq!((g.lost, g.clients), (10, 4));
    }

    #[test]
    fn empty_history_accepts_any_first_point_and_unasked_history_is_flagged() {
        let mut s = StreamCheck::default();
        assert_eq!(s.point(1, 5), PointFit::Stale);
        assert!(!s.history(Some(3)));
        assert_eq!(s.unexpected_history, 1);
        s.subscribed(4);
        s.history(None);
        assert_eq!(s.point(4, 50), PointFit::Next);
        assert_eq!(s.point(4, 51), PointFit::Next);
        assert_eq!(s.seam_bad, 0);
    }
}
