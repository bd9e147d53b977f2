//! `--soak DURATION`: N subscribed clients for a long time, with churn, and the server
//! sampled as it goes.
//!
//! After connecting and subscribing every client, the last `--slow` clients become slow
//! (each second they ask for the next asset's history but read only 16 KiB, until the
//! server closes them as slow consumers) and the `--ping-flood` before them flood (they
//! unsubscribe, then send 1,000 pings a second and never read). The rest are steady and
//! their streams are checked. Each second `--churn` steady clients, in turn, leave with
//! a close frame and reconnect, drop their socket without one and reconnect, or
//! subscribe to the next asset. Every client the server ends is reconnected within a
//! second (for a steady client that is a finding, for the others their purpose).
//!
//! Every `--sample-every` the server's RSS and open files, the tool's open connections,
//! the interval's churn, the steady clients' findings so far and the interval's tick
//! figures are recorded (and printed to stderr as they come, for a long run). At the end
//! every client leaves; the server's open files must return to their baseline and its
//! RSS is read at once and again one sample interval later. The baseline is read after
//! one client has subscribed to every asset and left, so that the one-time allocations
//! and pages of a subscriber's code path are in it; the private part of the memory
//! (`RssAnon`, without the executable's pages) is reported beside it.

use crate::client::{Behaviour, Phase};
use crate::driver::{Bench, Setup};
use crate::fleet::{self, Snapshot};
use crate::options::{Options, Soak};
use crate::procfs;
use crate::report::{TickFigures, total_memory};
use crate::stats::Summary;
use crate::{BenchError, alive, ms, rows, sample, start_servers, window};
use std::fmt::Write;
use std::time::{Duration, Instant};

/// Bytes a slow client reads each second.
const SLOW_READ_BYTES: usize = 16 * 1024;
/// Pings a flooding client sends each tenth of a second.
const FLOOD_PINGS: usize = 100;
/// The loop's housekeeping period.
const TURN: Duration = Duration::from_millis(100);

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
    pub findings: crate::check::Findings,
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
        let _ = writeln!(o, "samples:");
        let _ = writeln!(o, "  {}", SAMPLE_HEADER);
        for s in &self.samples {
            let _ = writeln!(o, "  {}", sample_row(s));
        }
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
        let _ = writeln!(o, "server exit: {}", self.server_exit);
        let _ = writeln!(o, "server log: {}", self.log);
        o
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

const SAMPLE_HEADER: &str = "     at s  RSS KiB  min KiB  max KiB   fds   open reconn resub ended drops  lost other behind spread99 last+99  sub99 reactor% other% load1";

fn sample_row(s: &SoakSample) -> String {
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

/// Counters the loop keeps between samples.
#[derive(Default)]
struct Churn {
    reconnects: u64,
    resubscribes: u64,
    ops: u64,
    due: f64,
}

fn next_asset(assets: &[i32], current: i32) -> i32 {
    let at = assets.iter().position(|&a| a == current).unwrap_or(0);
    assets[(at + 1) % assets.len()]
}

/// One housekeeping turn: churn, the misbehaving clients' parts, reconnects and
/// subscribes of fresh connections. `second` is true once a second.
fn turn(
    bench: &mut Bench,
    assets: &[i32],
    steady: usize,
    churn_per_s: usize,
    second: bool,
    churn: &mut Churn,
) {
    churn.due += churn_per_s as f64 * TURN.as_secs_f64();
    while churn.due >= 1.0 && steady > 0 {
        churn.due -= 1.0;
        let idx = fastrand::usize(..steady);
        let c = &bench.st.clients[idx];
        if c.phase != Phase::Open || c.check.want != 0 {
            continue;
        }
        let current = c.check.asset;
        // In turn: leave with a close frame, leave without one, change subscription.
        match churn.ops % 3 {
            kind @ (0 | 1) => {
                bench.st.leave(idx, kind == 0);
                bench.reopen(idx);
                churn.reconnects += 1;
            }
            _ => {
                bench.st.subscribe(idx, next_asset(assets, current));
                churn.resubscribes += 1;
            }
        }
        churn.ops += 1;
    }
    for idx in 0..bench.st.clients.len() {
        let c = &bench.st.clients[idx];
        let (behaviour, phase, asset, want) = (c.behaviour, c.phase, c.check.asset, c.check.want);
        match (behaviour, phase) {
            (_, Phase::Closed) if second => bench.reopen(idx),
            (Behaviour::Steady, Phase::Open) if asset == 0 && want == 0 => {
                bench.st.subscribe(idx, assets[idx % assets.len()]);
            }
            (Behaviour::Slow, Phase::Open) if second => {
                bench.st.read_some(idx, SLOW_READ_BYTES);
                bench.st.subscribe(
                    idx,
                    next_asset(assets, if want != 0 { want } else { asset }),
                );
            }
            (Behaviour::Flood, Phase::Open) => bench.st.ping_flood(idx, FLOOD_PINGS),
            _ => {}
        }
    }
}

/// Runs the soak.
pub fn run(opts: &Options, soak: Soak) -> Result<SoakReport, BenchError> {
    let nofile = ws_assets::limits::raise_open_files()?;
    if fleet::processes_for(opts.clients, nofile) > 1 {
        return Err(BenchError::Usage(format!(
            "a soak drives its clients from one process: at most {} clients at {nofile} open files",
            nofile - fleet::SPARE_FILES
        )));
    }
    let mut servers = start_servers(opts)?;
    let assets = match crate::probe::probe(servers.addr(), &opts.path, Duration::from_secs(30)) {
        Ok(p) => p.asset_ids,
        Err(crate::probe::ProbeError::Assets(_)) => vec![1, 2, 3, 4, 5],
        Err(e) => return Err(BenchError::Probe(e)),
    };
    if let (Some(k), crate::options::Target::Spawn(path)) = (opts.instances, &opts.target) {
        servers.add_instances(path, k)?;
    }
    let pids = servers.pids();
    let churn_per_s = soak.churn_per_s.unwrap_or((opts.clients / 500).max(1));
    let mut report = SoakReport {
        clients: opts.clients,
        soak: Some(soak),
        churn_per_s,
        server: format!("{} (pids {:?})", servers.addr(), pids),
        ..SoakReport::default()
    };
    let base = Instant::now();
    let mut bench = Bench::new(
        Setup {
            addr: servers.addr(),
            path: opts.path.clone(),
            src_ips: opts.src_ips,
            index_offset: 0,
        },
        base,
    )?;
    // One subscriber first, so that the baseline already holds the pages of the code a
    // subscriber runs; then let its connection go.
    crate::probe::warm_up(servers.addr(), &opts.path, &assets).map_err(BenchError::Probe)?;
    bench.run_for(Duration::from_secs(1))?;
    alive(&mut servers)?;
    let base_memory = total_memory(&servers.memory()?);
    report.rss_base_kib = base_memory.rss_kib;
    report.anon_base_kib = base_memory.anon_kib;
    report.fds_base = servers.open_fds()?.iter().sum();

    let n = opts.clients;
    let t = Instant::now();
    bench.connect_all(
        n,
        opts.connect_window,
        Duration::from_secs(60) + Duration::from_millis(n as u64),
    )?;
    report.setup_complete = bench.subscribe_paced(
        &assets,
        opts.sub_window,
        Duration::from_secs(60) + Duration::from_millis(5 * n as u64),
    )?;
    report.setup_s = t.elapsed().as_secs_f64();
    bench.st.tally.history_lat_us.clear();
    let steady = n - soak.slow - soak.flood;
    for idx in steady..n {
        let c = &mut bench.st.clients[idx];
        if idx < steady + soak.flood {
            c.behaviour = Behaviour::Flood;
            let mut frame = Vec::new();
            crate::ws::encode_masked(
                &mut frame,
                crate::ws::opcode::TEXT,
                br#"{"action":"unsubscribe","message":{}}"#,
                fastrand::u32(..).to_ne_bytes(),
            );
            let _ = c.send(&frame);
        } else {
            c.behaviour = Behaviour::Slow;
        }
    }

    let start = Instant::now();
    let count = (soak.duration.as_nanos() / soak.sample_every.as_nanos()).max(1) as u32;
    let mut churn = Churn::default();
    let mut turns: u64 = 0;
    let mut next_turn = start + TURN;
    let mut cpu_before = sample(&pids, &[])?;
    let mut ends_before = 0u64;
    let mut churn_before = (0u64, 0u64);
    let mut interval_start = tally_now_sec(&bench);
    let mut rss_range = (u64::MAX, 0u64);
    eprintln!("wsbench soak: {SAMPLE_HEADER}");
    for k in 1..=count {
        let due = start + soak.sample_every * k;
        while Instant::now() < due {
            let now = Instant::now();
            if now >= next_turn {
                turns += 1;
                let second = turns.is_multiple_of(10);
                turn(&mut bench, &assets, steady, churn_per_s, second, &mut churn);
                if second {
                    let rss = total_memory(&servers.memory()?).rss_kib;
                    rss_range = (rss_range.0.min(rss), rss_range.1.max(rss));
                }
                next_turn += TURN;
            }
            let wait = next_turn.min(due).saturating_duration_since(Instant::now());
            bench.pump(wait.min(Duration::from_millis(50)))?;
        }
        alive(&mut servers)?;
        let cpu_after = sample(&pids, &[])?;
        let (cpu, _) = window(&cpu_before, &cpu_after);
        cpu_before = cpu_after;
        let now_sec = tally_now_sec(&bench);
        let ticks = rows(&bench.st.tally.ticks, interval_start, now_sec - 1);
        interval_start = now_sec;
        let figures = TickFigures::of(&ticks);
        let snap = Snapshot::of(&bench, i64::MIN);
        let ends: u64 = bench
            .st
            .tally
            .misbehaving_ends
            .values()
            .map(|&v| u64::from(v))
            .sum();
        let newest = bench.st.tally.ticks.keys().next_back().copied();
        let behind = newest.map_or(0, |t| {
            bench
                .st
                .clients
                .iter()
                .filter(|c| {
                    c.behaviour == Behaviour::Steady
                        && c.phase == Phase::Open
                        && c.check.asset != 0
                        && c.check.want == 0
                        && c.check.last.is_some_and(|l| l < t - 2)
                })
                .count()
        });
        let rss = total_memory(&servers.memory()?).rss_kib;
        let s = SoakSample {
            at_s: start.elapsed().as_secs_f64(),
            rss_kib: rss,
            rss_min_kib: rss_range.0.min(rss),
            rss_max_kib: rss_range.1.max(rss),
            fds: servers.open_fds()?.iter().sum(),
            open: bench.st.tally.open,
            reconnects: churn.reconnects - churn_before.0,
            resubscribes: churn.resubscribes - churn_before.1,
            ended: ends - ends_before,
            steady_drops: bench.st.tally.dropped(),
            lost: snap.findings.lost,
            other_findings: snap.findings.dup + snap.findings.stale + snap.findings.seam_bad,
            behind,
            spread_p99_ms: figures.spread.map(|s| s.p99),
            last_after_p99_ms: figures.last_after.map(|s| s.p99),
            sub_p99_ms: ms(&std::mem::take(&mut bench.st.tally.history_lat_us))
                .map(|s: Summary| s.p99),
            reactor_pct: 100.0 * cpu.reactor_s / cpu.wall_s.max(1e-9),
            other_pct: 100.0 * cpu.other_s() / cpu.wall_s.max(1e-9),
            load1: procfs::load_average(),
        };
        ends_before = ends;
        rss_range = (u64::MAX, 0);
        churn_before = (churn.reconnects, churn.resubscribes);
        eprintln!("wsbench soak: {}", sample_row(&s));
        report.samples.push(s);
    }
    report.reconnects = churn.reconnects;
    report.resubscribes = churn.resubscribes;

    // The misbehaving clients go first; then every steady client must have the newest tick.
    for idx in steady..n {
        bench.st.leave(idx, true);
    }
    for idx in 0..steady {
        if bench.st.clients[idx].phase != Phase::Open {
            bench.st.leave(idx, false);
        }
    }
    let newest = bench
        .st
        .tally
        .ticks
        .keys()
        .next_back()
        .copied()
        .unwrap_or(0);
    bench.wait_tick(newest, Duration::from_secs(3), Duration::from_secs(5))?;
    let snap = Snapshot::of(&bench, newest);
    report.findings = snap.findings;
    report.steady_drop_count = bench.st.tally.dropped();
    report.steady_drops = crate::tally::reasons(&bench.st.tally.drops);
    report.misbehaving_ends = crate::tally::reasons(&bench.st.tally.misbehaving_ends);
    report.failures = crate::tally::reasons(&bench.st.tally.failures);

    bench.close_all();
    let left = Instant::now();
    let back = loop {
        let fds: usize = servers.open_fds()?.iter().sum();
        report.fds_after = fds;
        if fds <= report.fds_base {
            break Some(left.elapsed().as_secs_f64());
        }
        if left.elapsed() > Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    report.fds_back_after_s = back;
    report.rss_left_kib = total_memory(&servers.memory()?).rss_kib;
    std::thread::sleep(soak.sample_every.saturating_sub(left.elapsed()));
    alive(&mut servers)?;
    let later = total_memory(&servers.memory()?);
    report.rss_later_kib = later.rss_kib;
    report.anon_later_kib = later.anon_kib;

    report.server_exit = servers.stop().join(", ");
    let logs: Vec<String> = servers
        .list
        .iter()
        .map(|s| {
            let l = s.log();
            let mut text = format!(
                "{} lines, {} warnings, {} errors",
                l.lines, l.warnings, l.errors
            );
            for line in &l.notable {
                text.push_str("\n  ");
                text.push_str(line);
            }
            text
        })
        .collect();
    report.log = logs.join("; ");
    Ok(report)
}

fn tally_now_sec(bench: &Bench) -> i64 {
    crate::tally::Stamp::now(bench.st.base)
        .wall_ns
        .div_euclid(1_000_000_000)
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

    #[test]
    fn resubscribes_rotate_over_the_assets() {
        assert_eq!(next_asset(&[1, 2, 3], 1), 2);
        assert_eq!(next_asset(&[1, 2, 3], 3), 1);
        assert_eq!(next_asset(&[1, 2, 3], 0), 2);
    }
}
