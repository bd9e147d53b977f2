//! Assets, the per-asset history ring of points, and who is subscribed to what.
//!
//! The reactor owns one [`Market`]. A subscription is registered and its history frame
//! taken in one step, and a tick's point is recorded and its frame built in one step,
//! so no tick can fall between a history and the live points after it. Connections are
//! known here by their key in the reactor's connection table; which asset each one is
//! subscribed to is kept here too, so a connection ends its subscription by its key alone.

use std::borrow::Cow;
use std::collections::VecDeque;

use bytes::Bytes;

use crate::asset::{Asset, Point};
use crate::frame::text_frame;
use crate::protocol;

/// An asset's recent points in strictly increasing time.
#[derive(Debug, Default)]
pub struct Ring {
    points: VecDeque<Point>,
}

impl Ring {
    /// Appends a point newer than every point held; returns false (and keeps nothing)
    /// for a point that is not newer, so time never repeats or goes back.
    pub fn push(&mut self, point: Point) -> bool {
        if self
            .points
            .back()
            .is_some_and(|last| last.time >= point.time)
        {
            return false;
        }
        self.points.push_back(point);
        true
    }

    /// Puts a point that is not newer than the last into its place, replacing the
    /// value of a point of the same second; returns false (and keeps nothing) for a
    /// point newer than every point held, which belongs to [`Ring::push`].
    pub fn upsert(&mut self, point: Point) -> bool {
        if self.last_time().is_none_or(|last| point.time > last) {
            return false;
        }
        let at = self.points.partition_point(|p| p.time < point.time);
        match self.points.get_mut(at) {
            Some(held) if held.time == point.time => held.value = point.value,
            _ => self.points.insert(at, point),
        }
        true
    }

    /// Whether this very point (second and value) is held.
    pub fn holds(&self, point: &Point) -> bool {
        let at = self.points.partition_point(|p| p.time < point.time);
        self.points
            .get(at)
            .is_some_and(|held| held.time == point.time && held.value == point.value)
    }

    /// Drops points older than `oldest`; returns whether any were dropped.
    pub fn trim(&mut self, oldest: i64) -> bool {
        let before = self.points.len();
        while self.points.front().is_some_and(|p| p.time < oldest) {
            self.points.pop_front();
        }
        self.points.len() != before
    }

    /// Time of the newest point.
    pub fn last_time(&self) -> Option<i64> {
        self.points.back().map(|p| p.time)
    }

    /// Number of points held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no point is held.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Points, oldest first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Point> {
        self.points.iter()
    }

    /// Points newer than `time`, oldest first.
    pub fn since(&self, time: i64) -> impl ExactSizeIterator<Item = &Point> {
        let first = self.points.partition_point(|p| p.time <= time);
        self.points.range(first..)
    }
}

/// The connections subscribed to one asset, as slab keys; removal is O(1).
///
/// A connection remembers the slot it was given; removing a slot moves the last
/// key into it, and the caller updates that key's remembered slot.
#[derive(Debug, Default)]
pub struct Subscribers {
    keys: Vec<usize>,
}

impl Subscribers {
    /// Adds `key`; returns its slot.
    pub fn add(&mut self, key: usize) -> usize {
        self.keys.push(key);
        self.keys.len() - 1
    }

    /// Removes the key at `slot`; returns the key moved into `slot`, if any.
    pub fn remove(&mut self, slot: usize) -> Option<usize> {
        if slot >= self.keys.len() {
            return None;
        }
        self.keys.swap_remove(slot);
        self.keys.get(slot).copied()
    }

    /// Subscribed keys, in no particular order.
    pub fn keys(&self) -> &[usize] {
        &self.keys
    }

    /// Frees the room left by subscribers who have gone.
    pub fn shrink_to_fit(&mut self) {
        self.keys.shrink_to_fit();
    }

    /// How many are subscribed.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether nobody is subscribed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// One asset's live state.
#[derive(Debug)]
pub struct AssetState {
    /// The asset.
    pub asset: Asset,
    /// Its history window.
    pub ring: Ring,
    /// Who receives its points.
    pub subscribers: Subscribers,
    /// Resumed subscribers that already hold seconds this instance has not recorded yet
    /// (they came from an instance further ahead, e.g. the leader, to a follower that has
    /// not heard its last notification): `(key, since)`. They get no live point of a
    /// second up to `since`, which they have; pruned as newer points are recorded.
    ahead: Vec<(usize, i64)>,
    /// The encoded `asset_history` frame of the current ring, built on first demand.
    history: Option<Bytes>,
    /// The same, compressed for clients that negotiated permessage-deflate.
    history_compressed: Option<Bytes>,
}

impl AssetState {
    /// Forgets the history frames once the ring has changed.
    fn ring_changed(&mut self) {
        self.history = None;
        self.history_compressed = None;
    }
}

/// Makes a compressed frame of a message, for clients that negotiated permessage-deflate.
pub type Compress<'a> = dyn FnMut(&[u8]) -> Bytes + 'a;

/// Where a connection's subscription sits: which asset, which slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Subscription {
    /// Index into [`Market::assets`].
    asset: u32,
    /// Slot in that asset's [`Subscribers`].
    slot: u32,
}

/// How far a resuming client's `since` may be ahead of this instance's newest point and
/// still be honoured for live points: another instance may be a second or two ahead;
/// a `since` further out is not a second that exists yet, and is ignored as before.
const AHEAD_AT_MOST: i64 = 5;

/// Whether a client holding every second up to `since` is ahead of `last` by a second
/// that may exist ([`AHEAD_AT_MOST`]).
fn is_ahead(since: i64, last: i64) -> bool {
    since > last && since.checked_sub(last).is_some_and(|d| d <= AHEAD_AT_MOST)
}

/// How long after its second has begun a point may still come and be the newest the
/// instance holds: a fetch answered late in its second, or a follower hearing the
/// leader's point through the database. Until then the history window waits for it
/// instead of following the clock.
pub const LATE_POINT_SECONDS: i64 = 2;

/// All assets with their rings and subscribers.
#[derive(Debug)]
pub struct Market {
    assets: Vec<AssetState>,
    window: i64,
    assets_frame: Bytes,
    /// Each connection key's subscription, if it has one.
    subscriptions: Vec<Option<Subscription>>,
}

impl Market {
    /// A market of `assets` (ordered by id) keeping `window` seconds of history.
    pub fn new(mut assets: Vec<Asset>, window: u32) -> Market {
        assets.sort_by_key(|a| a.id);
        let assets_frame = text_frame(&protocol::assets_message(&assets));
        Market {
            assets: assets
                .into_iter()
                .map(|asset| AssetState {
                    asset,
                    ring: Ring::default(),
                    subscribers: Subscribers::default(),
                    ahead: Vec::new(),
                    history: None,
                    history_compressed: None,
                })
                .collect(),
            window: i64::from(window),
            assets_frame,
            subscriptions: Vec::new(),
        }
    }

    /// Every asset's state, ordered by id.
    pub fn assets(&self) -> &[AssetState] {
        &self.assets
    }

    /// The encoded reply to `assets`, shared by every client.
    pub fn assets_frame(&self) -> Bytes {
        self.assets_frame.clone()
    }

    /// Index of the asset with this id.
    pub fn index_of(&self, asset_id: i32) -> Option<usize> {
        self.assets
            .binary_search_by_key(&asset_id, |a| a.asset.id)
            .ok()
    }

    /// Records a tick's point; returns its encoded `point` frame, or `None` when the
    /// asset is unknown or the point is not newer than the asset's last one.
    pub fn record(&mut self, point: Point) -> Option<(usize, Bytes)> {
        let index = self.index_of(point.asset_id)?;
        let state = &mut self.assets[index];
        if !state.ring.push(point) {
            return None;
        }
        state.ring.trim(point.time - self.window + 1);
        state.ring_changed();
        // Those who had only up to an older second get this one.
        state
            .ahead
            .retain(|&(_, since)| since == point.time || is_ahead(since, point.time));
        let frame = text_frame(&protocol::point_message(&state.asset.name, &point));
        Some((index, frame))
    }

    /// Puts a stored point that is not newer than its asset's last into the history
    /// (the stored value wins over one held for the same second); returns false for a
    /// point that is newer, to be recorded live instead, or outside the window.
    pub fn merge(&mut self, point: Point) -> bool {
        let Some(index) = self.index_of(point.asset_id) else {
            return true;
        };
        let state = &mut self.assets[index];
        let oldest = state
            .ring
            .last_time()
            .map_or(i64::MIN, |last| last - self.window + 1);
        if point.time < oldest || state.ring.holds(&point) {
            // A leader hears its own points back: nothing changes, the history stays built.
            return true;
        }
        if state.ring.upsert(point) {
            state.ring_changed();
            return true;
        }
        false
    }

    /// Loads stored points (any order of assets, increasing time per asset) into the rings,
    /// keeping those within the window ending at `now`; returns how many were kept.
    pub fn warm(&mut self, points: &[Point], now: i64) -> usize {
        let oldest = now - self.window + 1;
        let mut kept = 0;
        for point in points.iter().filter(|p| p.time >= oldest && p.time <= now) {
            if let Some(index) = self.index_of(point.asset_id) {
                let state = &mut self.assets[index];
                if state.ring.push(*point) {
                    state.ring_changed();
                    kept += 1;
                }
            }
        }
        kept
    }

    /// Drops points that left the window, called every second with the second that has
    /// just begun. The window ends at the newest second any asset holds, so a client
    /// that subscribes after a second has begun but before its point has come still
    /// gets a whole window, the same as every other instance serves. A silent feed
    /// holds no newer second: the window then ends [`LATE_POINT_SECONDS`] behind the
    /// clock, and history still ages out.
    pub fn trim(&mut self, now: i64) {
        let newest = self.assets.iter().filter_map(|s| s.ring.last_time()).max();
        let end = newest.map_or(now - LATE_POINT_SECONDS, |newest| {
            newest.max(now - LATE_POINT_SECONDS)
        });
        let oldest = end - self.window + 1;
        for state in &mut self.assets {
            if state.ring.trim(oldest) {
                state.ring_changed();
            }
        }
    }

    /// Shrinks every asset's subscriber list and the table of subscriptions to their
    /// size, after many clients left.
    pub fn shrink_subscribers(&mut self) {
        for state in &mut self.assets {
            state.subscribers.shrink_to_fit();
        }
        let used = self
            .subscriptions
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |last| last + 1);
        self.subscriptions.truncate(used);
        self.subscriptions.shrink_to_fit();
    }

    /// Subscribes connection `key` to the asset at `index`, ending its subscription to
    /// any other; returns the `asset_history` frame to send before any later point. With
    /// `since` (a resuming client) the history holds only the points after that second.
    ///
    /// A client that negotiated permessage-deflate passes `compress`, which makes its
    /// frame from the message; the full history's is kept like the plain one, so it is
    /// built at most once per change of the ring (once a second) and shared by every
    /// such client.
    pub fn subscribe(
        &mut self,
        key: usize,
        index: usize,
        since: Option<i64>,
        compress: Option<&mut Compress<'_>>,
    ) -> Bytes {
        self.unsubscribe(key);
        let state = &mut self.assets[index];
        let (name, ring) = (&state.asset.name, &state.ring);
        let history = match (since, compress) {
            (None, None) => state
                .history
                .get_or_insert_with(|| text_frame(&protocol::history_message(name, ring.iter())))
                .clone(),
            (None, Some(compress)) => state
                .history_compressed
                .get_or_insert_with(|| compress(&protocol::history_message(name, ring.iter())))
                .clone(),
            (Some(since), None) => text_frame(&protocol::history_message(name, ring.since(since))),
            (Some(since), Some(compress)) => {
                compress(&protocol::history_message(name, ring.since(since)))
            }
        };
        // With nothing recorded yet any `since` may be just ahead: the first point
        // recorded settles it (see `record`).
        if let Some(since) = since
            && state
                .ring
                .last_time()
                .is_none_or(|last| is_ahead(since, last))
        {
            state.ahead.push((key, since));
        }
        let slot = state.subscribers.add(key);
        if self.subscriptions.len() <= key {
            self.subscriptions.resize(key + 1, None);
        }
        self.subscriptions[key] = Some(Subscription {
            asset: index as u32,
            slot: slot as u32,
        });
        history
    }

    /// Ends connection `key`'s subscription; returns whether it had one.
    pub fn unsubscribe(&mut self, key: usize) -> bool {
        let Some(sub) = self.subscriptions.get_mut(key).and_then(Option::take) else {
            return false;
        };
        let slot = sub.slot as usize;
        let moved = self.assets.get_mut(sub.asset as usize).and_then(|state| {
            state.ahead.retain(|&(ahead, _)| ahead != key);
            state.subscribers.remove(slot)
        });
        // The last subscriber of that asset took the freed slot.
        if let Some(moved) = moved
            && let Some(Some(other)) = self.subscriptions.get_mut(moved)
        {
            other.slot = sub.slot;
        }
        true
    }

    /// Whether connection `key` is subscribed to an asset.
    pub fn is_subscribed(&self, key: usize) -> bool {
        self.subscriptions.get(key).is_some_and(Option::is_some)
    }

    /// Subscribed keys of the asset at `index`.
    pub fn subscribers(&self, index: usize) -> &[usize] {
        self.assets
            .get(index)
            .map_or(&[], |state| state.subscribers.keys())
    }

    /// Who gets the asset's point of second `time`: its subscribers, less those that
    /// resumed with a later `since` (they have it already). Borrowed, with no copy, unless
    /// such a subscriber is waiting.
    pub fn recipients(&self, index: usize, time: i64) -> Cow<'_, [usize]> {
        let Some(state) = self.assets.get(index) else {
            return Cow::Borrowed(&[]);
        };
        let keys = state.subscribers.keys();
        let has = |key: usize| {
            state
                .ahead
                .iter()
                .any(|&(ahead, since)| ahead == key && since >= time)
        };
        if state.ahead.iter().all(|&(_, since)| since < time) {
            return Cow::Borrowed(keys);
        }
        Cow::Owned(keys.iter().copied().filter(|&key| !has(key)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asset::default_assets;

    fn point(asset_id: i32, time: i64) -> Point {
        Point {
            asset_id,
            time,
            value: 1.0 + time as f64 / 1e6,
        }
    }

    fn history_times(frame: &Bytes) -> Vec<i64> {
        let header = if frame.len() - 2 < 126 {
            2
        } else if frame.len() - 4 <= 65535 {
            4
        } else {
            10
        };
        let json: serde_json::Value = serde_json::from_slice(&frame[header..]).unwrap();
        json["message"]["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["time"].as_i64().unwrap())
            .collect()
    }

    #[test]
    fn ring_refuses_points_that_are_not_newer() {
        let mut ring = Ring::default();
        assert!(ring.push(point(1, 10)));
        assert!(!ring.push(point(1, 10)));
        assert!(!ring.push(point(1, 9)));
        assert!(ring.push(point(1, 12)));
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.last_time(), Some(12));
    }

    #[test]
    fn ring_trims_by_time() {
        let mut ring = Ring::default();
        for t in 1..=10 {
            ring.push(point(1, t));
        }
        assert!(ring.trim(8));
        assert_eq!(ring.iter().map(|p| p.time).collect::<Vec<_>>(), [8, 9, 10]);
        assert!(!ring.trim(8));
        assert!(ring.trim(100));
        assert!(ring.is_empty());
    }

    #[test]
    fn record_keeps_exactly_the_window() {
        let mut market = Market::new(default_assets(), 5);
        for t in 100..=120 {
            assert!(market.record(point(1, t)).is_some());
        }
        let history = market.subscribe(1, 0, None, None);
        assert_eq!(history_times(&history), [116, 117, 118, 119, 120]);
        assert!(market.record(point(99, 121)).is_none(), "unknown asset");
        assert!(market.record(point(1, 120)).is_none(), "not newer");
    }

    #[test]
    fn history_frame_is_shared_until_the_ring_changes() {
        let mut market = Market::new(default_assets(), 60);
        market.record(point(2, 1));
        let a = market.subscribe(1, 1, None, None);
        let b = market.subscribe(2, 1, None, None);
        assert_eq!(a.as_ptr(), b.as_ptr(), "one encoding for both subscribers");
        market.record(point(2, 2));
        let c = market.subscribe(3, 1, None, None);
        assert_eq!(history_times(&c), [1, 2]);
        market.trim(61 + LATE_POINT_SECONDS);
        let d = market.subscribe(4, 1, None, None);
        assert_eq!(history_times(&d), [2]);
    }

    #[test]
    fn the_window_waits_for_the_point_of_the_second_that_has_just_begun() {
        let mut market = Market::new(default_assets(), 5);
        for t in 100..=120 {
            for id in 1..=5 {
                market.record(point(id, t));
            }
        }
        // Second 121 has begun; its points have not come yet. Every asset still holds
        // a whole window, ending at the newest second held.
        market.trim(121);
        for index in 0..5 {
            let history = market.subscribe(index, index, None, None);
            assert_eq!(history_times(&history), [116, 117, 118, 119, 120]);
        }
        market.record(point(1, 121));
        let history = market.subscribe(9, 0, None, None);
        assert_eq!(history_times(&history), [117, 118, 119, 120, 121]);
        // An asset without a point for 121 ends with the others' newest second too.
        market.trim(122);
        let history = market.subscribe(10, 1, None, None);
        assert_eq!(history_times(&history), [117, 118, 119, 120]);
    }

    #[test]
    fn a_silent_feed_still_ages_history_out() {
        let mut market = Market::new(default_assets(), 5);
        for t in 100..=120 {
            market.record(point(1, t));
        }
        market.trim(120 + LATE_POINT_SECONDS);
        let history = market.subscribe(1, 0, None, None);
        assert_eq!(history_times(&history), [116, 117, 118, 119, 120]);
        // Three silent seconds later the window follows the clock, LATE_POINT_SECONDS behind.
        market.trim(123 + LATE_POINT_SECONDS);
        let history = market.subscribe(2, 0, None, None);
        assert_eq!(history_times(&history), [119, 120]);
        market.trim(200);
        let history = market.subscribe(3, 0, None, None);
        assert_eq!(history_times(&history), [] as [i64; 0]);
        // Nothing held at all: the clock alone.
        market.trim(300);
        assert!(market.assets()[0].ring.is_empty());
    }

    #[test]
    fn a_resume_gets_only_the_points_after_its_second() {
        let mut market = Market::new(default_assets(), 60);
        for t in 1..=10 {
            market.record(point(1, t));
        }
        let history = market.subscribe(1, 0, Some(7), None);
        assert_eq!(history_times(&history), [8, 9, 10]);
        let history = market.subscribe(2, 0, Some(10), None);
        assert_eq!(history_times(&history), [] as [i64; 0]);
        let history = market.subscribe(3, 0, Some(0), None);
        assert_eq!(history_times(&history), (1..=10).collect::<Vec<_>>());
        let full = market.subscribe(4, 0, None, None);
        assert_eq!(history_times(&full), (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn merge_fills_holes_and_takes_the_stored_value() {
        let mut market = Market::new(default_assets(), 60);
        for t in [1, 2, 4, 5] {
            market.record(point(1, t));
        }
        let stored = Point {
            asset_id: 1,
            time: 2,
            value: 9.0,
        };
        assert!(market.merge(point(1, 3)), "a hole is filled");
        assert!(market.merge(stored), "a held second takes the stored value");
        assert!(!market.merge(point(1, 6)), "newer: for the live path");
        assert!(market.merge(point(99, 1)), "unknown asset: nothing to do");
        let history = market.subscribe(1, 0, None, None);
        assert_eq!(history_times(&history), [1, 2, 3, 4, 5]);
        assert_eq!(market.assets()[0].ring.iter().nth(1), Some(&stored));
    }

    #[test]
    fn a_client_resuming_ahead_of_this_instance_gets_no_second_twice() {
        let mut market = Market::new(default_assets(), 60);
        market.record(point(1, 10));
        market.subscribe(7, 0, None, None);
        // It had 11 from an instance further ahead; this one has not recorded 11 yet.
        let history = market.subscribe(8, 0, Some(11), None);
        assert_eq!(history_times(&history), [] as [i64; 0]);
        market.record(point(1, 11));
        assert_eq!(market.recipients(0, 11).as_ref(), [7], "8 has 11 already");
        market.record(point(1, 12));
        assert_eq!(market.recipients(0, 12).as_ref(), [7, 8]);
        assert!(
            matches!(market.recipients(0, 12), Cow::Borrowed(_)),
            "no copy"
        );
    }

    #[test]
    fn an_ahead_subscriber_that_leaves_is_forgotten_and_far_futures_are_ignored() {
        let mut market = Market::new(default_assets(), 60);
        market.record(point(1, 10));
        market.subscribe(8, 0, Some(12), None);
        assert!(market.unsubscribe(8));
        // The key is used again by a client with nothing ahead: it gets every point.
        market.subscribe(8, 0, None, None);
        market.record(point(1, 11));
        assert_eq!(market.recipients(0, 11).as_ref(), [8]);
        // A since that is no second yet (far ahead of anything) changes nothing.
        market.subscribe(9, 0, Some(1_000_000), None);
        market.record(point(1, 12));
        assert_eq!(market.recipients(0, 12).as_ref(), [8, 9]);
    }

    #[test]
    fn a_since_taken_before_any_point_is_settled_by_the_first_one() {
        let mut market = Market::new(default_assets(), 60);
        // No newest second yet: the first one recorded tells a far `since` (no second
        // yet, ignored) from a near one (held back until a newer second).
        market.subscribe(3, 0, Some(1_000_000), None);
        market.subscribe(4, 1, Some(11), None);
        market.record(point(1, 10));
        assert_eq!(market.recipients(0, 10).as_ref(), [3]);
        market.record(point(2, 10));
        assert_eq!(market.recipients(1, 10).as_ref(), [] as [usize; 0]);
        market.record(point(2, 11));
        assert_eq!(
            market.recipients(1, 11).as_ref(),
            [] as [usize; 0],
            "4 has 11"
        );
        market.record(point(2, 12));
        assert_eq!(market.recipients(1, 12).as_ref(), [4]);
    }

    #[test]
    fn merging_a_point_already_held_keeps_the_built_history() {
        let mut market = Market::new(default_assets(), 60);
        market.record(point(1, 1));
        market.record(point(1, 2));
        let before = market.subscribe(1, 0, None, None);
        assert!(market.merge(point(1, 2)), "the same second and value");
        let after = market.subscribe(2, 0, None, None);
        assert_eq!(before.as_ptr(), after.as_ptr(), "not rebuilt");
        let changed = Point {
            asset_id: 1,
            time: 2,
            value: 7.5,
        };
        assert!(market.merge(changed));
        let rebuilt = market.subscribe(3, 0, None, None);
        assert_ne!(
            before.as_ptr(),
            rebuilt.as_ptr(),
            "a new value is a new history"
        );
    }

    #[test]
    fn warm_keeps_window_and_order() {
        let mut market = Market::new(default_assets(), 10);
        let stored: Vec<Point> = (1..=30)
            .map(|t| point(3, t))
            .chain([point(42, 25)])
            .collect();
        assert_eq!(market.warm(&stored, 30), 10);
        let history = market.subscribe(7, 2, None, None);
        assert_eq!(history_times(&history), (21..=30).collect::<Vec<_>>());
    }

    #[test]
    fn subscribers_remove_reports_the_moved_key() {
        let mut subs = Subscribers::default();
        let a = subs.add(10);
        let _b = subs.add(11);
        let _c = subs.add(12);
        assert_eq!(subs.remove(a), Some(12));
        assert_eq!(subs.keys(), [12, 11]);
        assert_eq!(subs.remove(1), None, "last slot: nothing moved");
        assert_eq!(subs.keys(), [12]);
        assert_eq!(subs.remove(5), None);
    }

    #[test]
    fn the_compressed_history_is_built_once_per_change_of_the_ring() {
        let mut market = Market::new(default_assets(), 60);
        market.record(point(1, 1));
        let mut built = 0;
        let mut compress = |payload: &[u8]| {
            built += 1;
            Bytes::copy_from_slice(payload)
        };
        let a = market.subscribe(1, 0, None, Some(&mut compress));
        let b = market.subscribe(2, 0, None, Some(&mut compress));
        assert_eq!(
            a.as_ptr(),
            b.as_ptr(),
            "one compression for both subscribers"
        );
        market.subscribe(3, 0, Some(0), Some(&mut compress));
        market.record(point(1, 2));
        market.subscribe(4, 0, None, Some(&mut compress));
        assert_eq!(
            built, 3,
            "the shared one twice (the ring changed), the resume once"
        );
        let plain = market.subscribe(5, 0, None, None);
        assert_eq!(
            history_times(&plain),
            [1, 2],
            "the plain frame is unaffected"
        );
    }

    #[test]
    fn subscriptions_are_kept_by_key_through_moves() {
        let mut market = Market::new(default_assets(), 60);
        for key in [3, 7, 9] {
            market.subscribe(key, 0, None, None);
        }
        assert!(market.unsubscribe(3), "9 moves into 3's slot");
        assert_eq!(market.subscribers(0), [9, 7]);
        assert!(market.unsubscribe(9), "found in its new slot");
        assert_eq!(market.subscribers(0), [7]);
        assert!(!market.unsubscribe(9), "not subscribed any more");
        market.subscribe(7, 2, None, None);
        assert_eq!(
            market.subscribers(0),
            [] as [usize; 0],
            "one subscription per key"
        );
        assert_eq!(market.subscribers(2), [7]);
        assert!(market.is_subscribed(7) && !market.is_subscribed(3));
        market.unsubscribe(7);
        market.shrink_subscribers();
        assert!(market.subscriptions.is_empty());
    }

    #[test]
    fn assets_are_ordered_and_found_by_id() {
        let mut assets = default_assets();
        assets.reverse();
        let market = Market::new(assets, 10);
        let ids: Vec<i32> = market.assets().iter().map(|a| a.asset.id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        assert_eq!(market.index_of(4), Some(3));
        assert_eq!(market.index_of(6), None);
    }
}
