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
use crate::cpu::{self, CpuSample};
use crate::driver::{Bench, Setup, connect_limit, subscribe_limit};
use crate::error::BenchError;
use crate::fleet::{self, Snapshot};
use crate::frame;
use crate::instances::Servers;
use crate::options::{Options, Soak};
use crate::probe::{self, ProbeError};
use crate::procfs;
use crate::report::{TickFigures, tick_rows, total_memory};
use crate::soak_report::{SAMPLE_HEADER, SoakReport, SoakSample, sample_row};
use crate::stats::Summary;
use crate::tally::{self, Stamp};
use std::time::{Duration, Instant};

/// Bytes a slow client reads each second.
const SLOW_READ_BYTES: usize = 16 * 1024;
/// Pings a flooding client sends each tenth of a second.
const FLOOD_PINGS: usize = 100;
/// The loop's housekeeping period.
const TURN: Duration = Duration::from_millis(100);

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
    let mut run = SoakRun::start(opts, soak)?;
    run.set_up_load()?;
    run.sample_until_the_end()?;
    run.check_steady_streams()?;
    run.watch_the_clients_leave()?;
    Ok(run.stop())
}

/// A soak under way: the servers, the clients and the report being filled.
struct SoakRun<'a> {
    opts: &'a Options,
    soak: Soak,
    servers: Servers,
    bench: Bench,
    assets: Vec<i32>,
    pids: Vec<u32>,
    /// Clients `0..steady` are steady; the flooding and then the slow ones follow.
    steady: usize,
    report: SoakReport,
}

/// What the sampling loop carries from one interval to the next.
struct Interval {
    churn: Churn,
    /// Housekeeping turns so far (one in ten is a second's).
    turns: u64,
    next_turn: Instant,
    cpu_before: CpuSample,
    ends_before: u64,
    churn_before: (u64, u64),
    /// The first tick second of the interval.
    first_sec: i64,
    /// Lowest and highest RSS read in the interval.
    rss_range: (u64, u64),
}

impl<'a> SoakRun<'a> {
    /// Starts the servers, learns the assets, warms one subscriber up and reads the
    /// servers' baseline memory and open files.
    fn start(opts: &'a Options, soak: Soak) -> Result<SoakRun<'a>, BenchError> {
        let nofile = ws_assets::limits::raise_open_files()?;
        if fleet::processes_for(opts.clients, nofile) > 1 {
            return Err(BenchError::Usage(format!(
                "a soak drives its clients from one process: at most {} clients at {nofile} open files",
                nofile - fleet::SPARE_FILES
            )));
        }
        let mut servers = Servers::start(opts, &[])?;
        let assets = match probe::probe(servers.addr(), None, &opts.path, Duration::from_secs(30)) {
            Ok(p) => p.asset_ids,
            Err(ProbeError::Assets(_)) => vec![1, 2, 3, 4, 5],
            Err(e) => return Err(BenchError::Probe(e)),
        };
        if let (Some(k), Some(path)) = (opts.instances, opts.server_path()) {
            servers.add_instances(path, k)?;
        }
        let pids = servers.pids();
        let churn_per_s = soak.churn_per_s.unwrap_or((opts.clients / 500).max(1));
        let report = SoakReport {
            clients: opts.clients,
            soak: Some(soak),
            churn_per_s,
            server: format!("{} (pids {:?})", servers.addr(), pids),
            ..SoakReport::default()
        };
        let setup = Setup {
            addr: servers.addr(),
            path: opts.path.clone(),
            src_ips: opts.src_ips,
            index_offset: 0,
            tls: None,
            deflate: false,
        };
        let mut run = SoakRun {
            opts,
            soak,
            bench: Bench::new(setup, Instant::now())?,
            servers,
            assets,
            pids,
            steady: opts.clients - soak.slow - soak.flood,
            report,
        };
        run.read_baseline()?;
        Ok(run)
    }

    /// One subscriber first, so that the baseline already holds the pages of the code a
    /// subscriber runs; then its connection goes, and the baseline is read.
    fn read_baseline(&mut self) -> Result<(), BenchError> {
        probe::warm_up(self.servers.addr(), None, &self.opts.path, &self.assets)?;
        self.bench.run_for(Duration::from_secs(1))?;
        self.servers.alive()?;
        let base_memory = total_memory(&self.servers.memory()?);
        self.report.rss_base_kib = base_memory.rss_kib;
        self.report.anon_base_kib = base_memory.anon_kib;
        self.report.fds_base = self.servers.open_fds()?.iter().sum();
        Ok(())
    }

    /// Connects and subscribes every client, then turns the last ones into flooding
    /// and slow clients.
    fn set_up_load(&mut self) -> Result<(), BenchError> {
        let n = self.opts.clients;
        let t = Instant::now();
        self.bench
            .connect_all(n, self.opts.connect_window, connect_limit(n))?;
        self.report.setup_complete =
            self.bench
                .subscribe_paced(&self.assets, self.opts.sub_window, subscribe_limit(n))?;
        self.report.setup_s = t.elapsed().as_secs_f64();
        self.bench.st.tally.history_lat_us.clear();
        for idx in self.steady..n {
            let c = &mut self.bench.st.clients[idx];
            if idx < self.steady + self.soak.flood {
                c.behaviour = Behaviour::Flood;
                // A flooding client that still fails to unsubscribe only floods harder.
                let _ = c.send_frame(frame::TEXT, br#"{"action":"unsubscribe","message":{}}"#);
            } else {
                c.behaviour = Behaviour::Slow;
            }
        }
        Ok(())
    }

    /// Keeps the load going (churn, misbehaving clients, reconnects) and takes a
    /// sample every `--sample-every` until the soak's duration is over.
    fn sample_until_the_end(&mut self) -> Result<(), BenchError> {
        let start = Instant::now();
        let count =
            (self.soak.duration.as_nanos() / self.soak.sample_every.as_nanos()).max(1) as u32;
        let mut interval = Interval {
            churn: Churn::default(),
            turns: 0,
            next_turn: start + TURN,
            cpu_before: cpu::sample(&self.pids, &[])?,
            ends_before: 0,
            churn_before: (0, 0),
            first_sec: now_sec(&self.bench),
            rss_range: (u64::MAX, 0),
        };
        eprintln!("wsbench soak: {SAMPLE_HEADER}");
        for k in 1..=count {
            self.keep_load_until(start + self.soak.sample_every * k, &mut interval)?;
            let s = self.sample(start, &mut interval)?;
            eprintln!("wsbench soak: {}", sample_row(&s));
            self.report.samples.push(s);
        }
        self.report.reconnects = interval.churn.reconnects;
        self.report.resubscribes = interval.churn.resubscribes;
        Ok(())
    }

    /// Serves the clients until `due`, with a housekeeping turn every [`TURN`] and the
    /// servers' RSS read once a second.
    fn keep_load_until(&mut self, due: Instant, interval: &mut Interval) -> Result<(), BenchError> {
        while Instant::now() < due {
            if Instant::now() >= interval.next_turn {
                interval.turns += 1;
                let second = interval.turns.is_multiple_of(10);
                turn(
                    &mut self.bench,
                    &self.assets,
                    self.steady,
                    self.report.churn_per_s,
                    second,
                    &mut interval.churn,
                );
                if second {
                    let rss = total_memory(&self.servers.memory()?).rss_kib;
                    interval.rss_range =
                        (interval.rss_range.0.min(rss), interval.rss_range.1.max(rss));
                }
                interval.next_turn += TURN;
            }
            let wait = interval
                .next_turn
                .min(due)
                .saturating_duration_since(Instant::now());
            self.bench.pump(wait.min(Duration::from_millis(50)))?;
        }
        Ok(())
    }

    /// The sample at the end of an interval (`start` is the sampling's start), and the
    /// next interval begun.
    fn sample(
        &mut self,
        start: Instant,
        interval: &mut Interval,
    ) -> Result<SoakSample, BenchError> {
        self.servers.alive()?;
        let cpu_after = cpu::sample(&self.pids, &[])?;
        let (cpu, _) = cpu::window(&interval.cpu_before, &cpu_after);
        let now_sec = now_sec(&self.bench);
        let figures = TickFigures::of(&tick_rows(
            &self.bench.st.tally.ticks,
            interval.first_sec,
            now_sec - 1,
        ));
        let snap = Snapshot::of(&self.bench, i64::MIN);
        let behind = steady_behind(&self.bench);
        let tally = &mut self.bench.st.tally;
        let ends: u64 = tally.misbehaving_ends.values().map(|&v| u64::from(v)).sum();
        let rss = total_memory(&self.servers.memory()?).rss_kib;
        let churn = &interval.churn;
        let s = SoakSample {
            at_s: start.elapsed().as_secs_f64(),
            rss_kib: rss,
            rss_min_kib: interval.rss_range.0.min(rss),
            rss_max_kib: interval.rss_range.1.max(rss),
            fds: self.servers.open_fds()?.iter().sum(),
            open: tally.open,
            reconnects: churn.reconnects - interval.churn_before.0,
            resubscribes: churn.resubscribes - interval.churn_before.1,
            ended: ends - interval.ends_before,
            steady_drops: tally.dropped(),
            lost: snap.findings.lost,
            other_findings: snap.findings.dup + snap.findings.stale + snap.findings.seam_bad,
            behind,
            spread_p99_ms: figures.spread.map(|s| s.p99),
            last_after_p99_ms: figures.last_after.map(|s| s.p99),
            sub_p99_ms: Summary::of_micros_as_ms(&std::mem::take(&mut tally.history_lat_us))
                .map(|s| s.p99),
            reactor_pct: 100.0 * cpu.reactor_s / cpu.wall_s.max(1e-9),
            other_pct: 100.0 * cpu.other_s() / cpu.wall_s.max(1e-9),
            load1: procfs::load_average(),
        };
        interval.cpu_before = cpu_after;
        interval.first_sec = now_sec;
        interval.ends_before = ends;
        interval.rss_range = (u64::MAX, 0);
        interval.churn_before = (churn.reconnects, churn.resubscribes);
        Ok(s)
    }

    /// The misbehaving clients leave first; then every steady client must have the
    /// newest tick, and their findings over the whole run are gathered.
    fn check_steady_streams(&mut self) -> Result<(), BenchError> {
        for idx in self.steady..self.opts.clients {
            self.bench.st.leave(idx, true);
        }
        for idx in 0..self.steady {
            if self.bench.st.clients[idx].phase != Phase::Open {
                self.bench.st.leave(idx, false);
            }
        }
        let tally = &self.bench.st.tally;
        let newest = tally.ticks.keys().next_back().copied().unwrap_or(0);
        self.bench
            .wait_tick(newest, Duration::from_secs(3), Duration::from_secs(5))?;
        let snap = Snapshot::of(&self.bench, newest);
        let tally = &self.bench.st.tally;
        self.report.findings = snap.findings;
        self.report.steady_drop_count = tally.dropped();
        self.report.steady_drops = tally::reasons(&tally.drops);
        self.report.misbehaving_ends = tally::reasons(&tally.misbehaving_ends);
        self.report.failures = tally::reasons(&tally.failures);
        Ok(())
    }

    /// Every client leaves: the servers' open files must come back to the baseline
    /// (within 30 s); their memory is read at once and one sample interval later.
    fn watch_the_clients_leave(&mut self) -> Result<(), BenchError> {
        self.bench.close_all();
        let left = Instant::now();
        self.report.fds_back_after_s = loop {
            let fds: usize = self.servers.open_fds()?.iter().sum();
            self.report.fds_after = fds;
            if fds <= self.report.fds_base {
                break Some(left.elapsed().as_secs_f64());
            }
            if left.elapsed() > Duration::from_secs(30) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.report.rss_left_kib = total_memory(&self.servers.memory()?).rss_kib;
        std::thread::sleep(self.soak.sample_every.saturating_sub(left.elapsed()));
        self.servers.alive()?;
        let later = total_memory(&self.servers.memory()?);
        self.report.rss_later_kib = later.rss_kib;
        self.report.anon_later_kib = later.anon_kib;
        Ok(())
    }

    /// Stops the servers and reads their logs.
    fn stop(mut self) -> SoakReport {
        self.report.server_exit = self.servers.stop().join(", ");
        let logs: Vec<String> = self
            .servers
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
        self.report.log = logs.join("; ");
        self.report
    }
}

/// Steady subscribed clients more than 2 s behind the newest tick any client got.
fn steady_behind(bench: &Bench) -> usize {
    let Some(newest) = bench.st.tally.ticks.keys().next_back().copied() else {
        return 0;
    };
    bench
        .st
        .clients
        .iter()
        .filter(|c| {
            c.behaviour == Behaviour::Steady
                && c.phase == Phase::Open
                && c.check.asset != 0
                && c.check.want == 0
                && c.check.last.is_some_and(|l| l < newest - 2)
        })
        .count()
}

/// The current wall-clock second.
fn now_sec(bench: &Bench) -> i64 {
    Stamp::now(bench.st.base).wall_ns.div_euclid(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resubscribes_rotate_over_the_assets() {
        assert_eq!(next_asset(&[1, 2, 3], 1), 2);
        assert_eq!(next_asset(&[1, 2, 3], 3), 1);
        assert_eq!(next_asset(&[1, 2, 3], 0), 2);
    }
}
