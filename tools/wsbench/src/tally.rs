//! Everything the clients observe, added up as it happens: connection outcomes, latencies,
//! per-tick arrival times and message counts.

use crate::stats::Summary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// When bytes were read: monotonic (for spreads and latencies) and wall clock (for arrival
/// after the tick's second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Nanoseconds since the run's monotonic base.
    pub mono_ns: u64,
    /// Nanoseconds since the Unix epoch (CLOCK_REALTIME).
    pub wall_ns: i64,
}

impl Stamp {
    /// Now.
    pub fn now(base: Instant) -> Stamp {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        Stamp {
            mono_ns: base.elapsed().as_nanos() as u64,
            wall_ns: wall,
        }
    }
}

/// Arrivals of one tick (one point time) over all clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickAgg {
    /// Clients that received a point with this time.
    pub n: u32,
    /// First client's arrival.
    pub first: Stamp,
    /// Last client's arrival.
    pub last: Stamp,
}

impl TickAgg {
    /// Adds another set of clients' arrivals of the same tick (another client process's,
    /// or another instance's).
    pub fn merge(&mut self, other: &TickAgg) {
        self.n += other.n;
        if other.first.mono_ns < self.first.mono_ns {
            self.first = other.first;
        }
        if other.last.mono_ns > self.last.mono_ns {
            self.last = other.last;
        }
    }

    /// Last minus first arrival, in ms (monotonic).
    pub fn spread_ms(&self) -> f64 {
        self.last.mono_ns.saturating_sub(self.first.mono_ns) as f64 / 1e6
    }

    /// First arrival after the tick's wall-clock second, in ms.
    pub fn first_after_ms(&self, time: i64) -> f64 {
        (self.first.wall_ns - time * 1_000_000_000) as f64 / 1e6
    }

    /// Last arrival after the tick's wall-clock second, in ms.
    pub fn last_after_ms(&self, time: i64) -> f64 {
        (self.last.wall_ns - time * 1_000_000_000) as f64 / 1e6
    }
}

/// Every client's arrival of one tick, as a histogram of its lateness behind the tick's
/// wall-clock second in steps of [`Lateness::STEP_NS`] (sparse: a tick's arrivals fall
/// within a few hundred milliseconds). Adds up across client processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lateness(BTreeMap<u32, u32>);

impl Lateness {
    /// Width of one step: 0.1 ms.
    pub const STEP_NS: i64 = 100_000;

    /// Counts one arrival `late_ns` after the second (an arrival before it counts as 0).
    pub fn add(&mut self, late_ns: i64) {
        let step = u32::try_from(late_ns.max(0) / Lateness::STEP_NS).unwrap_or(u32::MAX);
        *self.0.entry(step).or_default() += 1;
    }

    /// Adds another set of arrivals.
    pub fn merge(&mut self, other: &Lateness) {
        for (&step, &n) in &other.0 {
            *self.0.entry(step).or_default() += n;
        }
    }

    /// p50 / p99 / max, in ms, of every arrival of `ticks` (nearest rank, each the upper
    /// edge of its 0.1 ms step); `None` without arrivals.
    pub fn summary<'a>(ticks: impl IntoIterator<Item = &'a Lateness>) -> Option<Summary> {
        let mut all = Lateness::default();
        for t in ticks {
            all.merge(t);
        }
        let n: u64 = all.0.values().map(|&c| u64::from(c)).sum();
        if n == 0 {
            return None;
        }
        let ms = |step: u32| f64::from(step + 1) * Lateness::STEP_NS as f64 / 1e6;
        let rank = |p: f64| {
            let want = ((p / 100.0 * n as f64).ceil() as u64).clamp(1, n);
            let mut seen = 0;
            for (&step, &c) in &all.0 {
                seen += u64::from(c);
                if seen >= want {
                    return ms(step);
                }
            }
            0.0
        };
        Some(Summary {
            n: usize::try_from(n).unwrap_or(usize::MAX),
            p50: rank(50.0),
            p99: rank(99.0),
            max: all.0.keys().next_back().map_or(0.0, |&s| ms(s)),
        })
    }
}

/// The running totals of a benchmark.
#[derive(Debug, Default)]
pub struct Tally {
    /// Per point time, arrivals over all clients.
    pub ticks: BTreeMap<i64, TickAgg>,
    /// Per point time, every client's lateness behind its second.
    pub lateness: BTreeMap<i64, Lateness>,
    /// The same per server instance (empty unless the clients were mapped to instances,
    /// see [`Tally::track_instances`]).
    pub instance_ticks: Vec<BTreeMap<i64, TickAgg>>,
    /// Connections upgraded.
    pub connected: usize,
    /// Of those, the ones whose upgrade agreed on permessage-deflate.
    pub compressing: usize,
    /// Connections that never upgraded, by reason.
    pub failures: BTreeMap<String, u32>,
    /// Open connections that the server ended, by reason (close code, EOF, error).
    pub drops: BTreeMap<String, u32>,
    /// Slow and flooding clients (soak) that ended, by reason: expected, not a drop.
    pub misbehaving_ends: BTreeMap<String, u32>,
    /// Connections currently open.
    pub open: usize,
    /// Connects or upgrades in progress.
    pub in_progress: usize,
    /// Open clients with a current subscription.
    pub subscribed_open: usize,
    /// Subscribes whose history has not arrived.
    pub awaiting: usize,
    /// Connect-to-101 latency, µs, per upgraded client.
    pub connect_lat_us: Vec<u32>,
    /// Subscribe-to-history latency, µs (cleared per phase).
    pub history_lat_us: Vec<u32>,
    /// Monotonic time of the last history received.
    pub last_history: Option<Stamp>,
    /// Histories received.
    pub histories: u64,
    /// Their bytes on the wire (frame headers and payloads, as received), summed.
    pub history_wire_bytes: u64,
    /// Their JSON's bytes (the payload, inflated if it came compressed), summed.
    pub history_json_bytes: u64,
    /// Messages that came compressed.
    pub compressed_messages: u64,
    /// Histories whose payload repeated, byte for byte, one verified before and took its
    /// verdict instead of being read again (`repeats.rs`).
    pub reused_verdicts: u64,
    /// Points in each history: smallest and largest.
    pub history_len: Option<(u32, u32)>,
    /// History points not exactly 1 s after the previous one.
    pub history_gaps: u64,
    /// History points of another asset than asked for.
    pub history_wrong_asset: u64,
    /// Live points received.
    pub points: u64,
    /// `error` replies received.
    pub error_replies: u64,
    /// Other messages (assets, unsubscribed, binary, unknown actions).
    pub other_messages: u64,
    /// Values the scanner could not read, or a point without exactly one time.
    pub malformed: u64,
}

impl Tally {
    /// Records a live point's arrival, at a client of server instance `instance`, for
    /// the per-tick figures.
    pub fn arrival(&mut self, time: i64, at: Stamp, instance: usize) {
        add_arrival(&mut self.ticks, time, at);
        self.lateness
            .entry(time)
            .or_default()
            .add(at.wall_ns - time * 1_000_000_000);
        if let Some(map) = self.instance_ticks.get_mut(instance) {
            add_arrival(map, time, at);
        }
    }

    /// Records a connection that has just upgraded, `after_ns` after its connect began,
    /// agreeing on permessage-deflate if `deflate`.
    pub fn upgraded(&mut self, after_ns: u64, deflate: bool) {
        self.in_progress = self.in_progress.saturating_sub(1);
        self.open += 1;
        self.connected += 1;
        self.compressing += usize::from(deflate);
        self.connect_lat_us
            .push(u32::try_from(after_ns / 1000).unwrap_or(u32::MAX));
    }

    /// Keeps per-instance tick figures for `instances` server instances from now on.
    pub fn track_instances(&mut self, instances: usize) {
        self.instance_ticks = vec![BTreeMap::new(); instances];
    }

    /// Records a history's length and whether its points were in order and of one asset.
    pub fn history_shape(&mut self, points: u32, gaps: u32, wrong_asset: u32) {
        self.history_len = Some(match self.history_len {
            Some((lo, hi)) => (lo.min(points), hi.max(points)),
            None => (points, points),
        });
        self.history_gaps += u64::from(gaps);
        self.history_wrong_asset += u64::from(wrong_asset);
    }

    /// Clients the server dropped.
    pub fn dropped(&self) -> usize {
        self.drops.values().map(|&n| n as usize).sum()
    }
}

fn add_arrival(map: &mut BTreeMap<i64, TickAgg>, time: i64, at: Stamp) {
    map.entry(time)
        .and_modify(|t| {
            t.n += 1;
            if at.mono_ns >= t.last.mono_ns {
                t.last = at;
            }
        })
        .or_insert(TickAgg {
            n: 1,
            first: at,
            last: at,
        });
}

/// Adds `from`'s arrivals into `into`, tick by tick.
pub fn merge_ticks(into: &mut BTreeMap<i64, TickAgg>, from: &BTreeMap<i64, TickAgg>) {
    for (&t, agg) in from {
        into.entry(t).and_modify(|a| a.merge(agg)).or_insert(*agg);
    }
}

/// Adds `from`'s lateness histograms into `into`, tick by tick.
pub fn merge_lateness(into: &mut BTreeMap<i64, Lateness>, from: &BTreeMap<i64, Lateness>) {
    for (&t, l) in from {
        into.entry(t).or_default().merge(l);
    }
}

/// Adds reason counts.
pub fn merge_reasons(into: &mut BTreeMap<String, u32>, from: &BTreeMap<String, u32>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// "reason=count, ..." for a reason map, or "none".
pub fn reasons(map: &BTreeMap<String, u32>) -> String {
    if map.is_empty() {
        return "none".to_string();
    }
    map.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(mono_ms: u64, wall_ms: i64) -> Stamp {
        Stamp {
            mono_ns: mono_ms * 1_000_000,
            wall_ns: wall_ms * 1_000_000,
        }
    }

    #[test]
    fn tick_aggregate_keeps_first_and_last_arrival() {
        let mut t = Tally::default();
        t.arrival(100, at(10, 100_002), 0);
        t.arrival(100, at(25, 100_017), 0);
        t.arrival(100, at(12, 100_004), 0);
        let a = t.ticks[&100];
        assert_eq!(a.n, 3);
        assert_eq!(a.spread_ms(), 15.0);
        assert_eq!(a.first_after_ms(100), 2.0);
        assert_eq!(a.last_after_ms(100), 17.0);
    }

    #[test]
    fn per_instance_ticks_and_merges() {
        let mut t = Tally::default();
        t.arrival(7, at(10, 7_001), 1); // not tracked yet: only the total
        t.track_instances(2);
        t.arrival(8, at(20, 8_002), 0);
        t.arrival(8, at(26, 8_005), 1);
        t.arrival(8, at(30, 8_009), 1);
        assert_eq!(t.ticks[&8].n, 3);
        assert_eq!(t.instance_ticks[0][&8].n, 1);
        assert_eq!(t.instance_ticks[1][&8].spread_ms(), 4.0);
        let mut other = BTreeMap::new();
        other.insert(8, t.instance_ticks[0][&8]);
        other.insert(9, t.instance_ticks[0][&8]);
        let mut merged = t.instance_ticks[1].clone();
        merge_ticks(&mut merged, &other);
        assert_eq!(merged[&8].n, 3);
        assert_eq!(merged[&8].spread_ms(), 10.0);
        assert_eq!(merged[&9].n, 1);
        let mut a = BTreeMap::from([("eof".to_string(), 1)]);
        merge_reasons(&mut a, &BTreeMap::from([("eof".to_string(), 2)]));
        assert_eq!(a["eof"], 3);
    }

    #[test]
    fn every_arrival_counts_in_the_lateness_percentiles() {
        let mut t = Tally::default();
        // 100 clients of tick 5, 1..=100 ms late; one of tick 6, 300 ms late.
        for ms in 1..=100 {
            t.arrival(5, at(ms, 5_000 + ms as i64), 0);
        }
        t.arrival(6, at(400, 6_300), 0);
        let s = Lateness::summary(t.lateness.get(&5)).unwrap();
        assert_eq!(s.n, 100);
        assert!((s.p50 - 50.1).abs() < 1e-9, "{s:?}");
        assert!((s.p99 - 99.1).abs() < 1e-9, "{s:?}");
        let both = Lateness::summary(t.lateness.values()).unwrap();
        assert_eq!(both.n, 101);
        assert!((both.max - 300.1).abs() < 1e-9, "{both:?}");
        let mut merged = t.lateness.clone();
        merge_lateness(&mut merged, &t.lateness);
        assert_eq!(Lateness::summary(merged.values()).unwrap().n, 202);
        assert_eq!(Lateness::summary(None), None);
    }

    #[test]
    fn history_shapes_accumulate() {
        let mut t = Tally::default();
        t.history_shape(1800, 0, 0);
        t.history_shape(1799, 1, 2);
        assert_eq!(t.history_len, Some((1799, 1800)));
        assert_eq!((t.history_gaps, t.history_wrong_asset), (1, 2));
    }

    #[test]
    fn reason_maps_render_and_sum() {
        let mut t = Tally::default();
        assert_eq!(reasons(&t.drops), "none");
        t.drops.insert("close 1008".into(), 3);
        t.drops.insert("eof".into(), 1);
        assert_eq!(t.dropped(), 4);
        assert_eq!(reasons(&t.drops), "close 1008: 3, eof: 1");
    }
}
