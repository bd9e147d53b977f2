//! What a soak found, and how it is printed: a report for people (the samples as a
//! table, then verdicts) and one `RESULT key=value ...` line for scripts.

use crate::check::Findings;
use crate::options::Soak;
use std::fmt::Write;

/// One sample of a soak.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SoakSample {
    /// Seconds since the load was set up.
    pub at_s: f64,
    /// Server RSS (all instances) at the sample, KiB.
    pub rss_kib: u64,
    /// Lowest RSS read in the interval (once a second), KiB.
    pub rss_min_kib: u64,
    /// Highest RSS read in the interval, KiB.
    pub rss_max_kib: u64,
    /// Server open files (all instances).
    pub fds: usize,
    /// The tool's open WebSocket connections.
    pub open: usize,
    /// Reconnects by churn in the interval.
    pub reconnects: u64,
    /// Resubscribes by churn in the interval.
    pub resubscribes: u64,
    /// Slow and flooding clients the server ended in the interval.
    pub ended: u64,
    /// Steady clients the server dropped, so far.
    pub steady_drops: usize,
    /// Seconds lost by steady clients, so far.
    pub lost: u64,
    /// Points repeated, stale or at a bad seam for steady clients, so far.
    pub other_findings: u64,
    /// Steady subscribed clients more than 2 s behind the newest tick.
    pub behind: usize,
    /// Fan-out spread of the interval's ticks, p99, ms.
    pub spread_p99_ms: Option<f64>,
    /// Last client after the second, p99, ms.
    pub last_after_p99_ms: Option<f64>,
    /// Subscribe-to-history latency in the interval, p99, ms.
    pub sub_p99_ms: Option<f64>,
    /// Reactor CPU over the interval, % of one core (all instances).
    pub reactor_pct: f64,
    /// Machine CPU not used by the server or the tool, % of one core.
    pub other_pct: f64,
    /// The machine's 1-minute load average.
    pub load1: Option<f64>,
}

/// What a soak found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SoakReport {
    /// Clients asked for.
    pub clients: usize,
    /// The soak's settings.
    pub soak: Option<Soak>,
    /// Churn operations per second in force.
    pub churn_per_s: usize,
    /// The server's address and pid(s).
    pub server: String,
    /// Connect plus subscribe of all clients, s.
    pub setup_s: f64,
    /// Every initial subscribe got its history.
    pub setup_complete: bool,
    /// Server RSS before any client, KiB.
    pub rss_base_kib: u64,
    /// Server open files before any client.
    pub fds_base: usize,
    /// The samples.
    pub samples: Vec<SoakSample>,
    /// Steady clients' findings over the whole run, with the final tail.
    pub findings: Findings,
    /// Steady clients the server dropped, by reason.
    pub steady_drops: String,
    /// Steady drops in all.
    pub steady_drop_count: usize,
    /// Slow and flooding clients the server ended, by reason.
    pub misbehaving_ends: String,
    /// Churn totals: reconnects, resubscribes.
    pub reconnects: u64,
    /// Resubscribes in all.
    pub resubscribes: u64,
    /// Connections that failed to open, by reason.
    pub failures: String,
    /// Server open files once every client left.
    pub fds_after: usize,
    /// How long the open files took to come back to the baseline (None: they did not
    /// within 30 s).
    pub fds_back_after_s: Option<f64>,
    /// Server RSS right after the clients left, KiB.
    pub rss_left_kib: u64,
    /// Server RSS one sample interval after they left, KiB.
    pub rss_later_kib: u64,
    /// Server private memory (`RssAnon`) before any client, KiB.
    pub anon_base_kib: u64,
    /// Server private memory one sample interval after the clients left, KiB.
    pub anon_later_kib: u64,
    /// How the server(s) exited.
    pub server_exit: String,
    /// Server log counts.
    pub log: String,
}

/// Index of the reference sample (a third into the run, minute 10 of 30) and the first
/// of the compared tail (the last third, minutes 21..30).
pub fn flat_window(samples: usize) -> Option<(usize, usize)> {
    if samples < 3 {
        return None;
    }
    let third = samples.div_ceil(3);
    Some((third - 1, samples - third))
}

impl SoakReport {
    /// Smallest and largest deviation (%) of the tail's RSS from the reference sample's,
    /// reading each sample's RSS with `rss`.
    pub fn deviation(&self, rss: fn(&SoakSample) -> u64) -> Option<(f64, f64)> {
        let (r, tail) = flat_window(self.samples.len())?;
        let reference = rss(&self.samples[r]) as f64;
        if reference == 0.0 {
            return None;
        }
        let devs = self.samples[tail..]
            .iter()
            .map(|s| (rss(s) as f64 - reference) * 100.0 / reference);
        Some(devs.fold((f64::MAX, f64::MIN), |(lo, hi), d| (lo.min(d), hi.max(d))))
    }

    /// RSS one sample interval after the clients left, against the baseline, in %.
    pub fn rss_back_pct(&self) -> f64 {
        let base = self.rss_base_kib.max(1) as f64;
        (self.rss_later_kib as f64 - base) * 100.0 / base
    }

    /// [`SoakReport::deviation`] of the RSS at each sample.
    pub fn rss_deviation(&self) -> Option<(f64, f64)> {
        self.deviation(|s| s.rss_kib)
    }

    /// [`SoakReport::deviation`] of each interval's lowest RSS: the floor a leak would
    /// raise, without the slow clients' queues that come and go (each may hold up to
    /// `WS_ASSETS_CLIENT_QUEUE_BYTES` until the server closes it).
    pub fn floor_deviation(&self) -> Option<(f64, f64)> {
        self.deviation(|s| s.rss_min_kib)
    }

    /// The human-readable report.
    pub fn human(&self) -> String {
        let mut o = String::new();
        let Some(soak) = self.soak else {
            return o;
        };
        self.write_setup(&mut o, soak);
        self.write_samples(&mut o);
        self.write_aftermath(&mut o, soak);
        self.write_verdicts(&mut o, soak);
        let _ = writeln!(o, "server exit: {}", self.server_exit);
        let _ = writeln!(o, "server log: {}", self.log);
        o
    }

    /// What ran: clients, behaviours, churn, the setup and the baseline.
    fn write_setup(&self, o: &mut String, soak: Soak) {
        let steady = self.clients - soak.slow - soak.flood;
        let _ = writeln!(
            o,
            "wsbench soak: {} clients ({steady} steady, {} slow, {} ping-flooding) for {:?}, \
             churn {}/s, sample every {:?}, server {}",
            self.clients,
            soak.slow,
            soak.flood,
            soak.duration,
            self.churn_per_s,
            soak.sample_every,
            self.server
        );
        let _ = writeln!(
            o,
            "setup: all connected and subscribed in {:.2} s{}; server baseline RSS {} KiB, {} open files",
            self.setup_s,
            if self.setup_complete {
                ""
            } else {
                " (INCOMPLETE)"
            },
            self.rss_base_kib,
            self.fds_base
        );
    }

    /// One row per sample.
    fn write_samples(&self, o: &mut String) {
        let _ = writeln!(o, "samples:");
        let _ = writeln!(o, "  {}", SAMPLE_HEADER);
        for s in &self.samples {
            let _ = writeln!(o, "  {}", sample_row(s));
        }
    }

    /// Churn in all, failures, and the server once every client left.
    fn write_aftermath(&self, o: &mut String, soak: Soak) {
        let _ = writeln!(
            o,
            "churn in all: {} reconnects, {} resubscribes; slow/flooding clients ended by the server: {}",
            self.reconnects, self.resubscribes, self.misbehaving_ends
        );
        let _ = writeln!(o, "connections that failed to open: {}", self.failures);
        let _ = writeln!(
            o,
            "after every client left: {} open files (baseline {}){}; RSS {} KiB at once, {} KiB {:?} later (baseline {} KiB; private {} KiB, baseline {} KiB)",
            self.fds_after,
            self.fds_base,
            self.fds_back_after_s
                .map_or(" NOT back within 30 s".to_string(), |s| format!(
                    ", back after {s:.1} s"
                )),
            self.rss_left_kib,
            self.rss_later_kib,
            soak.sample_every,
            self.rss_base_kib,
            self.anon_later_kib,
            self.anon_base_kib
        );
    }

    /// Whether memory stayed flat, came back, and the steady clients' streams were whole.
    fn write_verdicts(&self, o: &mut String, soak: Soak) {
        let _ = writeln!(o, "verdicts:");
        for (what, dev) in [
            ("RSS at each sample", self.rss_deviation()),
            (
                "RSS floor (lowest of each interval)",
                self.floor_deviation(),
            ),
        ] {
            match (dev, flat_window(self.samples.len())) {
                (Some((lo, hi)), Some((r, tail))) => {
                    let _ = writeln!(
                        o,
                        "  {what}: samples {}..{} within {lo:+.1} % .. {hi:+.1} % of sample {} (target ±5 %): {}",
                        tail + 1,
                        self.samples.len(),
                        r + 1,
                        yes(lo >= -5.0 && hi <= 5.0)
                    );
                }
                _ => {
                    let _ = writeln!(o, "  {what}: too few samples to judge");
                }
            }
        }
        let _ = writeln!(
            o,
            "  open files back to baseline after the clients left: {}",
            yes(self.fds_back_after_s.is_some())
        );
        let _ = writeln!(
            o,
            "  RSS {:?} after the clients left within 10 % of the baseline: {:+.1} %: {}",
            soak.sample_every,
            self.rss_back_pct(),
            yes(self.rss_back_pct() <= 10.0)
        );
        let f = self.findings;
        let _ = writeln!(
            o,
            "  steady clients lost {} / duplicated {} / stale {} / bad seams {}, dropped by the server {} ({}): {}",
            f.lost,
            f.dup,
            f.stale,
            f.seam_bad,
            self.steady_drop_count,
            self.steady_drops,
            yes(f.lost + f.dup + f.stale + f.seam_bad == 0 && self.steady_drop_count == 0)
        );
    }

    /// The machine-readable `RESULT key=value ...` line.
    pub fn result_line(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("na".to_string(), |v| format!("{v:.3}"));
        let dev = self.rss_deviation();
        let floor = self.floor_deviation();
        let last = self.samples.last();
        let kv: Vec<(&str, String)> = vec![
            ("mode", "soak".into()),
            ("clients", self.clients.to_string()),
            (
                "soak_s",
                self.soak.map_or(0, |s| s.duration.as_secs()).to_string(),
            ),
            ("samples", self.samples.len().to_string()),
            ("setup_s", format!("{:.3}", self.setup_s)),
            ("rss_base_kib", self.rss_base_kib.to_string()),
            (
                "rss_ref_kib",
                flat_window(self.samples.len())
                    .map_or("na".into(), |(r, _)| self.samples[r].rss_kib.to_string()),
            ),
            (
                "rss_last_kib",
                last.map_or("na".into(), |s| s.rss_kib.to_string()),
            ),
            ("rss_dev_min_pct", opt(dev.map(|d| d.0))),
            ("rss_dev_max_pct", opt(dev.map(|d| d.1))),
            ("rss_floor_dev_min_pct", opt(floor.map(|d| d.0))),
            ("rss_floor_dev_max_pct", opt(floor.map(|d| d.1))),
            ("rss_left_kib", self.rss_left_kib.to_string()),
            ("rss_later_kib", self.rss_later_kib.to_string()),
            ("anon_base_kib", self.anon_base_kib.to_string()),
            ("anon_later_kib", self.anon_later_kib.to_string()),
            ("fds_base", self.fds_base.to_string()),
            ("fds_after", self.fds_after.to_string()),
            ("fds_back_s", opt(self.fds_back_after_s)),
            ("lost", self.findings.lost.to_string()),
            ("duplicated", self.findings.dup.to_string()),
            ("stale", self.findings.stale.to_string()),
            ("bad_seams", self.findings.seam_bad.to_string()),
            ("steady_drops", self.steady_drop_count.to_string()),
            ("reconnects", self.reconnects.to_string()),
            ("resubscribes", self.resubscribes.to_string()),
        ];
        let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("RESULT {}", body.join(" "))
    }
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}

/// The heading of the samples table (also printed to stderr as samples come).
pub const SAMPLE_HEADER: &str = "     at s  RSS KiB  min KiB  max KiB   fds   open reconn resub ended drops  lost other behind spread99 last+99  sub99 reactor% other% load1";

/// One sample as a row of the table under [`SAMPLE_HEADER`].
pub fn sample_row(s: &SoakSample) -> String {
    let o = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1}"));
    format!(
        "{:>9.0} {:>8} {:>8} {:>8} {:>5} {:>6} {:>6} {:>5} {:>5} {:>5} {:>5} {:>5} {:>6} {:>8} {:>7} {:>6} {:>8.1} {:>6.1} {:>5}",
        s.at_s,
        s.rss_kib,
        s.rss_min_kib,
        s.rss_max_kib,
        s.fds,
        s.open,
        s.reconnects,
        s.resubscribes,
        s.ended,
        s.steady_drops,
        s.lost,
        s.other_findings,
        s.behind,
        o(s.spread_p99_ms),
        o(s.last_after_p99_ms),
        o(s.sub_p99_ms),
        s.reactor_pct,
        s.other_pct,
        s.load1.map_or("n/a".into(), |l| format!("{l:.2}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flat_window_is_minute_10_against_the_last_ten_of_30() {
        assert_eq!(flat_window(30), Some((9, 20)));
        assert_eq!(flat_window(3), Some((0, 2)));
        assert_eq!(flat_window(2), None);
        let mut r = SoakReport::default();
        for rss in [100, 200, 300, 400, 500, 600] {
            r.samples.push(SoakSample {
                rss_kib: rss,
                ..SoakSample::default()
            });
        }
        // Reference: sample 2 (200); tail: samples 5 and 6.
        assert_eq!(r.rss_deviation(), Some((150.0, 200.0)));
        for s in &mut r.samples {
            s.rss_min_kib = 100;
        }
        assert_eq!(r.floor_deviation(), Some((0.0, 0.0)));
    }
}
