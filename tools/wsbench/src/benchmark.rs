//! The benchmark, the tool's default mode, phase by phase: start the servers (timing
//! the first's start-up), connect every client, subscribe them at a steady pace, measure
//! T ticks, in full mode storm, check every client's stream to the newest tick, and stop
//! the servers. Each phase fills its part of the [`Report`].

use crate::cpu;
use crate::driver::{Setup, connect_limit, subscribe_limit};
use crate::error::BenchError;
use crate::fleet::{self, Fleet, Snapshot};
use crate::instances::Servers;
use crate::options::{Mode, Options};
use crate::probe;
use crate::procfs::{self, Memory};
use crate::report::{
    CpuWindow, InstanceRow, Report, Storm, TickFigures, TickRow, tick_rows, total_memory,
};
use crate::server::{LogSummary, Server};
use crate::stats::Summary;
use crate::tally::{self, Lateness, Stamp};
use crate::tls::{ClientTls, ServerTls};
use std::time::{Duration, Instant};

/// The assets subscribed to when the `assets` reply cannot be read.
const FALLBACK_ASSETS: [i32; 5] = [1, 2, 3, 4, 5];
/// How long before a wall-clock second the storm starts.
const STORM_LEAD_NS: i64 = 200_000_000;

/// Runs the benchmark `opts` describe; with `tls`, the server speaks TLS and so do the
/// clients.
pub fn run(opts: &Options, tls: Option<&ServerTls>) -> Result<Report, BenchError> {
    let mut bench = Benchmark::start(opts, tls)?;
    bench.connect()?;
    bench.subscribe()?;
    let measured = bench.measured_ticks()?;
    let storm = match opts.mode {
        Mode::Full => Some(bench.storm()?),
        Mode::Quick => None,
    };
    let snap = bench.final_check(measured, storm)?;
    bench.server_tick_timing();
    Ok(bench.finish(&snap, measured))
}

/// `--beside N`: the benchmark with N instances, then with the K of `opts`, one after the
/// other on the same machine; both reports, N's first.
pub fn run_beside(opts: &Options, n: usize) -> Result<(Report, Report), BenchError> {
    let base = Options {
        instances: Some(n),
        beside: None,
        ..opts.clone()
    };
    let first = run(&base, None)?;
    let second = run(
        &Options {
            beside: None,
            ..opts.clone()
        },
        None,
    )?;
    Ok((first, second))
}

/// A span of ticks, first and last included.
type Ticks = (i64, i64);

/// Each instance's figures, gathered phase by phase for its row (with `--instances`).
#[derive(Default)]
struct PerInstance {
    clients: Vec<usize>,
    mem_base: Vec<Memory>,
    mem_sub: Vec<Memory>,
    tick_cpu: Vec<CpuWindow>,
}

/// A benchmark under way: the servers, the clients and the report being filled.
struct Benchmark<'a> {
    opts: &'a Options,
    servers: Servers,
    fleet: Fleet,
    report: Report,
    assets: Vec<i32>,
    pids: Vec<u32>,
    /// The client processes (their CPU is the tool's).
    helpers: Vec<u32>,
    per_instance: PerInstance,
    /// With `--tls`'s TLS run: what the clients trust.
    tls: Option<ClientTls>,
}

impl<'a> Benchmark<'a> {
    /// Starts the servers (the probe times the first one's start-up), the other
    /// instances and the client processes, and reads the servers' memory at rest.
    fn start(opts: &'a Options, tls: Option<&ServerTls>) -> Result<Benchmark<'a>, BenchError> {
        let nofile = ws_assets::limits::raise_open_files()?;
        let procs = client_processes(opts, nofile)?;
        let env = tls.map(ServerTls::server_env).unwrap_or_default();
        let mut servers = Servers::start(opts, &env)?;
        let mut report = report_header(opts, &servers, procs);
        report.transport = if tls.is_some() { "tls" } else { "plain" }.to_string();
        let clients_tls = tls.map(|t| t.clients.clone());
        let assets = startup_probe(opts, &servers, clients_tls.as_ref(), &mut report)?;
        if let (Some(k), Some(path)) = (opts.instances, opts.server_path()) {
            servers.add_instances(path, k)?;
            report.server = format!("{} (pids {:?}, one port)", servers.addr(), servers.pids());
        }
        let setup = Setup {
            addr: servers.addr(),
            path: opts.path.clone(),
            src_ips: opts.src_ips,
            index_offset: 0,
            tls: clients_tls.clone(),
            deflate: opts.offer_deflate,
        };
        let mut fleet = Fleet::new(setup, Instant::now(), procs)?;
        if opts.mode == Mode::Full {
            fleet.local.run_for(Duration::from_secs(1))?;
        }
        servers.alive()?;
        let mem_base = servers.memory()?;
        report.mem_base = total_memory(&mem_base);
        Ok(Benchmark {
            opts,
            pids: servers.pids(),
            helpers: fleet.remote_pids(),
            servers,
            fleet,
            report,
            assets,
            per_instance: PerInstance {
                mem_base,
                ..PerInstance::default()
            },
            tls: clients_tls,
        })
    }

    /// Connects every client and reads the memory of idle connections and, with
    /// `--instances`, which instance took which client.
    fn connect(&mut self) -> Result<(), BenchError> {
        let n = self.opts.clients;
        let t = Instant::now();
        let before = cpu::sample(&self.pids, &self.helpers)?;
        self.fleet
            .connect_all(n, self.opts.connect_window, connect_limit(n))?;
        self.report.connect_s = t.elapsed().as_secs_f64();
        self.report.connect_cpu = cpu::window(&before, &cpu::sample(&self.pids, &self.helpers)?).0;
        self.report.mem_idle = total_memory(&self.memory_after_settle()?);
        if self.opts.instances.is_some() {
            let counts = self.fleet.map_instances(&self.pids)?;
            self.report.unmapped = counts.get(self.pids.len()).copied().unwrap_or(0);
            self.per_instance.clients = counts.into_iter().take(self.pids.len()).collect();
        }
        Ok(())
    }

    /// Subscribes every client at a steady pace (latency to the history, the CPU it
    /// took), then reads the memory of subscribed connections.
    fn subscribe(&mut self) -> Result<(), BenchError> {
        let n = self.opts.clients;
        let before = cpu::sample(&self.pids, &self.helpers)?;
        let t = Instant::now();
        let (complete, latencies) =
            self.fleet
                .subscribe_paced(&self.assets, self.opts.sub_window, subscribe_limit(n))?;
        self.report.subscribe_complete = complete;
        self.report.subscribe_s = t.elapsed().as_secs_f64();
        let after = cpu::sample(&self.pids, &self.helpers)?;
        self.report.subscribe_cpu = cpu::window(&before, &after).0;
        self.report.sub_latency = Summary::of_micros_as_ms(&latencies);
        let mem_sub = self.memory_after_settle()?;
        self.report.mem_sub = total_memory(&mem_sub);
        self.per_instance.mem_sub = mem_sub;
        Ok(())
    }

    /// Starts at a tick every client has and waits for the next T, reading the CPU over
    /// them; their arrival rows come from the final snapshot. The measured span.
    fn measured_ticks(&mut self) -> Result<Ticks, BenchError> {
        let start = self
            .fleet
            .local
            .wait_complete_tick(i64::MIN, Duration::from_secs(5))?
            .ok_or_else(|| {
                BenchError::ServerGone("no tick reached every subscribed client within 5 s".into())
            })?;
        self.report.load_avg = procfs::load_average();
        let lag_before = self.follower_lag();
        let before = cpu::sample(&self.pids, &self.helpers)?;
        let last = start + i64::from(self.opts.ticks);
        self.fleet.wait_ticks(start + 1, last)?;
        let after = cpu::sample(&self.pids, &self.helpers)?;
        if let (Some(before), Some(after)) = (lag_before, self.follower_lag()) {
            self.report.follower_lag = probe::HistogramBounds::of(&after.since(&before));
        }
        let (total, each) = cpu::window(&before, &after);
        self.report.tick_cpu = total;
        self.per_instance.tick_cpu = each;
        Ok((start + 1, last))
    }

    /// With several instances: a follower's `ws_assets_follower_lag_seconds` so far (each
    /// connection to the shared port reaches one instance, so it asks until a follower
    /// answers; the two readings around the measured ticks are of the same follower
    /// with two instances, the only case that matters here).
    fn follower_lag(&self) -> Option<probe::Buckets> {
        if self.pids.len() != 2 {
            return None;
        }
        let tls = self.tls.as_ref().map(|t| &t.config);
        probe::scrape_metrics_of(self.servers.addr(), tls, "follower", 50)
            .and_then(|text| probe::Buckets::read(&text, "ws_assets_follower_lag_seconds"))
    }

    /// The subscribe storm (full mode): its figures go into the report; the span of
    /// ticks whose second began during it is returned (their rows come from the final
    /// snapshot).
    fn storm(&mut self) -> Result<Ticks, BenchError> {
        let (storm, span) = storm(
            &mut self.fleet,
            &mut self.servers,
            &self.helpers,
            &self.assets,
        )?;
        self.report.storm = Some(storm);
        Ok(span)
    }

    /// Waits until every client has the newest tick, then gathers what every client saw:
    /// the rows of the measured ticks and of the storm's, and the stream checks.
    fn final_check(
        &mut self,
        measured: Ticks,
        storm: Option<Ticks>,
    ) -> Result<Snapshot, BenchError> {
        let newest = self.fleet.newest()?.unwrap_or(measured.1);
        self.fleet.wait_tick(newest)?;
        let snap = self.fleet.snapshot(newest)?;
        self.report.ticks = tick_rows(&snap.ticks, measured.0, measured.1);
        self.report.lateness =
            Lateness::summary(snap.lateness.range(measured.0..=measured.1).map(|(_, l)| l));
        self.report.tick_points = points(&self.report.ticks);
        if let (Some(s), Some((first, last))) = (self.report.storm.as_mut(), storm) {
            s.ticks = tick_rows(&snap.ticks, first, last);
        }
        finish_checks(&snap, &mut self.report);
        Ok(snap)
    }

    /// The server's own tick timing, from its `/metrics` (one instance's with several).
    fn server_tick_timing(&mut self) {
        let tls = self.tls.as_ref().map(|t| &t.config);
        let Ok(text) = probe::scrape_metrics(self.servers.addr(), tls) else {
            return;
        };
        let whose = if self.pids.len() > 1 {
            " (one instance's)"
        } else {
            ""
        };
        for (what, name) in [
            ("second -> fan-out start", "ws_assets_tick_delay_seconds"),
            ("fan-out of a tick", "ws_assets_fanout_duration_seconds"),
        ] {
            if let Some(summary) = probe::histogram_summary(&text, name) {
                self.report
                    .server_ticks
                    .push((format!("{what}{whose}"), summary));
            }
        }
    }

    /// Closes the clients, stops the servers and reads their logs; with `--instances`
    /// each instance's row.
    fn finish(mut self, snap: &Snapshot, measured: Ticks) -> Report {
        self.fleet.close_all();
        // The roles of the run: once the leader stops, a follower takes over (and logs it).
        let roles: Vec<LogSummary> = self.servers.list.iter().map(Server::log).collect();
        let exits = self.servers.stop();
        self.report.server_exit = exits.join(", ");
        for (i, server) in self.servers.list.iter().enumerate() {
            let log = server.log();
            let counts = log_counts(&log);
            if i == 0 {
                self.report.log = counts.clone();
            } else {
                self.report
                    .log
                    .push_str(&format!("; instance {i}: {counts}"));
            }
            for line in &log.notable {
                self.report.log.push_str("\n  ");
                self.report.log.push_str(line);
            }
            if self.opts.instances.is_some() {
                let measured_rows = snap
                    .instance_ticks
                    .get(i)
                    .map(|m| tick_rows(m, measured.0, measured.1))
                    .unwrap_or_default();
                let mut row = self.per_instance.row(i, server, &roles[i], &measured_rows);
                row.log = counts;
                row.exit = exits.get(i).cloned().unwrap_or_default();
                self.report.instances.push(row);
            }
        }
        self.report
    }

    /// Settles (full mode) and reads every instance's memory, failing if a server is gone.
    fn memory_after_settle(&mut self) -> Result<Vec<Memory>, BenchError> {
        if self.opts.mode == Mode::Full {
            self.fleet.local.run_for(Duration::from_millis(500))?;
        }
        self.servers.alive()?;
        Ok(self.servers.memory()?)
    }
}

impl PerInstance {
    /// Instance `i`'s row, with `measured` the rows of its own clients' measured ticks.
    fn row(
        &self,
        i: usize,
        server: &Server,
        log: &LogSummary,
        measured: &[TickRow],
    ) -> InstanceRow {
        InstanceRow {
            pid: server.pid,
            role: log.role.clone().unwrap_or_else(|| "?".into()),
            role_changes: log.role_changes,
            ready_ms: server.ready_after.map(|d| d.as_secs_f64() * 1000.0),
            clients: self.clients.get(i).copied().unwrap_or(0),
            mem_base: self.mem_base.get(i).copied().unwrap_or_default(),
            mem_sub: self.mem_sub.get(i).copied().unwrap_or_default(),
            tick_cpu: self.tick_cpu.get(i).copied().unwrap_or_default(),
            tick_points: points(measured),
            ticks: TickFigures::of(measured),
            log: String::new(),
            exit: String::new(),
        }
    }
}

/// Points delivered over `rows`.
fn points(rows: &[TickRow]) -> u64 {
    rows.iter().map(|r| u64::from(r.clients)).sum()
}

/// "N lines, W warnings, E errors".
fn log_counts(log: &LogSummary) -> String {
    format!(
        "{} lines, {} warnings, {} errors",
        log.lines, log.warnings, log.errors
    )
}

/// The report's description of the run: settings, server, environment.
fn report_header(opts: &Options, servers: &Servers, procs: usize) -> Report {
    let first = &servers.list[0];
    let server_env = first
        .env
        .iter()
        .map(|(k, v)| {
            if k == "WS_ASSETS_POSTGRESQL_DSN" {
                format!("{k}=(the throwaway database)")
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    Report {
        mode: opts.mode_name().to_string(),
        extension: if opts.offer_deflate {
            "permessage-deflate"
        } else {
            "none"
        }
        .to_string(),
        clients: opts.clients,
        src_ips: opts.src_ips,
        sub_window: opts.sub_window,
        server: format!("{} (pid {})", first.addr, first.pid),
        binary_bytes: first.binary_bytes,
        server_env,
        client_procs: procs,
        database: servers.database().map(str::to_string),
        ..Report::default()
    }
}

/// Start-up: the first connect plus an `assets` reply; the asset ids to subscribe to.
fn startup_probe(
    opts: &Options,
    servers: &Servers,
    tls: Option<&ClientTls>,
    report: &mut Report,
) -> Result<Vec<i32>, BenchError> {
    let tls = tls.map(|t| &t.config);
    let assets = match probe::probe(servers.addr(), tls, &opts.path, Duration::from_secs(30)) {
        Ok(p) => {
            report.assets = format!("{:?} (from the assets reply)", p.asset_ids);
            p.asset_ids
        }
        Err(probe::ProbeError::Assets(why)) => {
            report.assets = format!("{FALLBACK_ASSETS:?} (assets reply unusable: {why})");
            FALLBACK_ASSETS.to_vec()
        }
        Err(e) => return Err(BenchError::Probe(e)),
    };
    report.startup_ms = servers.list[0]
        .spawned_at
        .map(|t| t.elapsed().as_secs_f64() * 1000.0);
    Ok(assets)
}

/// How many processes drive `clients` (at most 16); a usage error if the open-file
/// limit cannot hold the given number's shares.
fn client_processes(opts: &Options, nofile: u64) -> Result<usize, BenchError> {
    let needed = fleet::processes_for(opts.clients, nofile);
    let procs = opts.client_procs.unwrap_or(needed);
    if procs > 16 {
        return Err(BenchError::Usage(format!(
            "{} clients need {procs} processes at {nofile} open files each; at most 16",
            opts.clients
        )));
    }
    if procs < needed {
        eprintln!(
            "wsbench: warning: {} clients over {procs} processes but only {nofile} open files \
             per process; connects beyond it will fail",
            opts.clients
        );
    }
    Ok(procs)
}

/// Nanoseconds from `wall_ns` until `lead_ns` before the next second boundary that is
/// at least that far away.
fn until_before_second(wall_ns: i64, lead_ns: i64) -> u64 {
    let into = wall_ns.rem_euclid(1_000_000_000);
    let target = 1_000_000_000 - lead_ns;
    let wait = if into <= target {
        target - into
    } else {
        1_000_000_000 - into + target
    };
    wait as u64
}

/// The subscribe storm in every client process; its figures, and the span of ticks
/// whose second began during it (their rows are filled from the final snapshot).
fn storm(
    fleet: &mut Fleet,
    servers: &mut Servers,
    helpers: &[u32],
    assets: &[i32],
) -> Result<(Storm, Ticks), BenchError> {
    let n = fleet.local.st.tally.connected.max(1) as u64 * fleet.processes() as u64;
    let pids = servers.pids();
    // Start 200 ms before a wall-clock second so that a tick always falls inside the
    // storm, and far enough ahead for the client processes to hear of it.
    let now_wall = Stamp::now(fleet.local.st.base).wall_ns;
    let mut wait = until_before_second(now_wall, STORM_LEAD_NS);
    if fleet.processes() > 1 && wait < 100_000_000 {
        wait += 1_000_000_000;
    }
    let at_wall_ns = now_wall + wait as i64;
    let mut before = None;
    let mut start = (0, 0);
    let (complete, latencies, last) = fleet.storm(
        at_wall_ns,
        assets,
        1,
        Duration::from_secs(60) + Duration::from_millis(10 * n),
        |bench| {
            let now = Stamp::now(bench.st.base).wall_ns;
            bench.run_for(Duration::from_nanos(
                at_wall_ns.saturating_sub(now).max(0) as u64
            ))?;
            before = Some(
                cpu::sample(&pids, helpers).map_err(|e| std::io::Error::other(e.to_string()))?,
            );
            start = (bench.now_ns(), Stamp::now(bench.st.base).wall_ns);
            Ok(())
        },
    )?;
    let after = cpu::sample(&pids, helpers)?;
    let memory = total_memory(&servers.memory()?);
    let end = last.unwrap_or(Stamp::now(fleet.local.st.base));
    // Let the tick after the storm arrive, so the ticks inside it are complete.
    let end_sec = end.wall_ns.div_euclid(1_000_000_000);
    fleet.wait_tick(end_sec + 1)?;
    servers.alive()?;
    let cpu = match &before {
        Some(b) => cpu::window(b, &after).0,
        None => CpuWindow::default(),
    };
    let (start_ns, start_wall) = start;
    Ok((
        Storm {
            complete,
            all_s: end.mono_ns.saturating_sub(start_ns) as f64 / 1e9,
            latency: Summary::of_micros_as_ms(&latencies),
            ticks: Vec::new(),
            cpu,
            memory,
        },
        // Ticks whose second began after the first subscribe and before the last history.
        (start_wall.div_euclid(1_000_000_000) + 1, end_sec),
    ))
}

/// Copies what every client saw (the final snapshot) into the report.
fn finish_checks(snap: &Snapshot, report: &mut Report) {
    report.connected = snap.connected;
    report.compressing = snap.compressing;
    report.failed = snap.failures.values().map(|&n| n as usize).sum();
    report.failures = tally::reasons(&snap.failures);
    report.dropped = snap.drops.values().map(|&n| n as usize).sum();
    report.drops = tally::reasons(&snap.drops);
    report.connect_latency = Summary::of_micros_as_ms(&snap.connect_lat_us);
    report.history_len = snap.history_len;
    report.histories = snap.histories;
    report.history_wire_bytes = snap.history_wire_bytes;
    report.history_json_bytes = snap.history_json_bytes;
    report.compressed_messages = snap.compressed_messages;
    report.reused_verdicts = snap.reused_verdicts;
    report.history_gaps = snap.history_gaps;
    report.history_wrong_asset = snap.history_wrong_asset;
    report.error_replies = snap.error_replies;
    report.malformed = snap.malformed;
    report.points_total = snap.points;
    let f = snap.findings;
    report.lost = f.lost;
    report.dup = f.dup;
    report.stale = f.stale;
    report.seam_bad = f.seam_bad;
    report.unexpected_history = f.unexpected_history;
    report.clients_with_findings = f.clients;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_waits_until_the_lead_before_a_second() {
        let s = 1_795_876_000 * 1_000_000_000i64;
        assert_eq!(until_before_second(s, STORM_LEAD_NS), 800_000_000);
        assert_eq!(
            until_before_second(s + 700_000_000, STORM_LEAD_NS),
            100_000_000
        );
        assert_eq!(until_before_second(s + 800_000_000, STORM_LEAD_NS), 0);
        assert_eq!(
            until_before_second(s + 900_000_000, STORM_LEAD_NS),
            900_000_000
        );
    }
}
