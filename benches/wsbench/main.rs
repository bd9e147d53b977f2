//! `wsbench`: a load and correctness benchmark for the ws_assets server.
//!
//! It starts the real server (or attaches to a running one), opens N WebSocket clients
//! from one thread with non-blocking sockets, subscribes them across the assets, and
//! prints what a capacity question needs: connection outcomes, subscribe-to-history
//! latency, the per-tick fan-out spread and arrival after the tick's second, every
//! client's stream checked for lost or repeated points, the server's memory per
//! connection from `/proc/PID/status`, its reactor thread's CPU per delivered point from
//! `/proc/PID/task/PID/{stat,schedstat}`, a subscribe storm, start-up time and binary size.
//!
//! # Usage
//!
//! The tool is the package's `wsbench` bench target (without a test harness), so it is
//! built with the service but not installed with it. `cargo bench` builds both with the
//! release settings and starts the tool; flags go after `--`:
//!
//! ```text
//! cargo bench --bench wsbench                     # 1000 clients, 10 ticks, full mode
//! cargo bench --bench wsbench -- --clients 10000 --ticks 10
//! cargo bench --bench wsbench -- --clients 50 --ticks 3 --mode quick
//! cargo bench --bench wsbench -- --addr 127.0.0.1:8080 --pid 1234 --clients 2000
//! ```
//!
//! Flags: `--clients N` (1000), `--ticks T` measured ticks (10), `--src-ips K` source
//! addresses 127.0.0.2..=127.0.0.(1+K) bound with `IP_BIND_ADDRESS_NO_PORT` (4),
//! `--mode full|quick` (quick skips the storm and the settle pauses), `--server PATH`
//! (default: the `ws_assets` binary cargo built with the tool, e.g.
//! `target/release/ws_assets`), `--addr HOST:PORT --pid PID` (benchmark a running
//! server), `--sub-window W` subscriptions in flight in the paced phase (64),
//! `--connect-window C` connects in flight (256), `--path P` (`/api/v1/websocket`). The
//! `--bench` flag `cargo bench` adds is accepted and ignored.
//!
//! A started server gets `WS_ASSETS_PORT=0`, `WS_ASSETS_HOST=127.0.0.1`,
//! `WS_ASSETS_LOG_LEVEL=info`, `WS_ASSETS_SIMULATED_BACKFILL=true` (a full 30-minute
//! history at once); any other `WS_ASSETS_*` variable in the environment is passed
//! through (the server sizes its connection limit to its open-file limit, which it
//! inherits raised from the tool).
//!
//! Phases: start-up probe (spawn -> first connect + `assets` reply) and idle memory;
//! connect all clients (memory, idle); paced subscribe (latency, memory, subscribed);
//! T measured ticks (spread, arrival, CPU per point); in full mode a subscribe storm
//! started 200 ms before a wall-clock second (every client re-subscribes to the next
//! asset at once: time to all histories, the ticks whose second began during it, CPU,
//! memory after); finally every client's stream is checked to the newest
//! tick. The process may hold at most as many sockets as `RLIMIT_NOFILE`'s hard limit,
//! which the tool raises its soft limit to (the server it starts inherits it).
//!
//! Output: the report, then one line `RESULT key=value ...` (keys: connected, failed,
//! dropped, lost, duplicated, setup_s, sub_p50_ms, spread_p99_ms, reactor_us_per_point,
//! idle_per_conn_b, storm_s, ...). Exit status 0 when the run completed (findings such
//! as lost points are reported, not fatal), 1 on a usage error, 2 when it could not run.
//!
//! The tool shares the machine with the server: on loopback its own reads add to the
//! measured spread, and its CPU is printed so that can be judged.
//!
//! # Tests
//!
//! A bench target without a harness is compiled with `cfg(test)` but its `#[test]`
//! functions dropped, so each module's `tests` allows what only they use. They run in
//! tests/wsbench.rs, which compiles these modules in as a module of its own (hence the
//! `super::` paths between them, not `crate::`), next to a quick run of the tool.

mod check;
mod client;
mod driver;
mod net;
mod options;
mod probe;
mod procfs;
mod report;
mod scan;
mod server;
mod stats;
mod tally;
mod ws;

use driver::{Bench, Setup};
use options::{Mode, Options, OptionsError, Target};
use procfs::{Cpu, Memory};
use report::{CpuWindow, Report, Storm, TickRow};
use server::{Server, ServerError};
use stats::Summary;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Why a run could not be completed.
#[derive(Debug)]
enum BenchError {
    Server(ServerError),
    Probe(probe::ProbeError),
    Proc(procfs::ProcError),
    Io(std::io::Error),
    ServerGone(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Server(e) => write!(f, "{e}"),
            BenchError::Probe(e) => write!(f, "start-up probe: {e}"),
            BenchError::Proc(e) => write!(f, "{e}"),
            BenchError::Io(e) => write!(f, "event loop: {e}"),
            BenchError::ServerGone(why) => write!(f, "the server went away during the run: {why}"),
        }
    }
}

impl From<procfs::ProcError> for BenchError {
    fn from(e: procfs::ProcError) -> Self {
        BenchError::Proc(e)
    }
}

impl From<std::io::Error> for BenchError {
    fn from(e: std::io::Error) -> Self {
        BenchError::Io(e)
    }
}

fn main() -> ExitCode {
    // Cargo builds the package's binaries for a bench target and names their paths; the
    // tool's own executable lives elsewhere (target/release/deps/wsbench-HASH).
    let default_server = PathBuf::from(env!("CARGO_BIN_EXE_ws_assets"));
    let opts = match Options::parse(std::env::args().skip(1), default_server) {
        Ok(o) => o,
        Err(OptionsError::Help) => {
            println!("{}", options::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("wsbench: {e}");
            return ExitCode::from(1);
        }
    };
    match run(&opts) {
        Ok(report) => {
            print!("{}", report.human());
            println!("{}", report.result_line());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wsbench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Server CPU and the tool's own, sampled together.
struct CpuSample {
    reactor: Cpu,
    process: Cpu,
    tool_s: f64,
    machine_ticks: u64,
    at: Instant,
}

fn sample(pid: u32) -> Result<CpuSample, BenchError> {
    Ok(CpuSample {
        reactor: procfs::cpu(pid, Some(pid))?,
        process: procfs::cpu(pid, None)?,
        tool_s: procfs::own_thread_cpu_seconds(),
        machine_ticks: procfs::machine_busy_ticks()?,
        at: Instant::now(),
    })
}

fn window(a: &CpuSample, b: &CpuSample) -> CpuWindow {
    CpuWindow {
        reactor_s: procfs::cpu_seconds(a.reactor, b.reactor),
        reactor_ticks_s: procfs::tick_seconds(a.reactor, b.reactor),
        process_s: procfs::tick_seconds(a.process, b.process),
        tool_s: b.tool_s - a.tool_s,
        wall_s: b.at.duration_since(a.at).as_secs_f64(),
        machine_s: b.machine_ticks.saturating_sub(a.machine_ticks) as f64
            / procfs::clock_ticks_per_second() as f64,
    }
}

fn ms(us: &[u32]) -> Option<Summary> {
    Summary::of(
        &us.iter()
            .map(|&v| f64::from(v) / 1000.0)
            .collect::<Vec<_>>(),
    )
}

fn rows(bench: &Bench, first: i64, last: i64) -> Vec<TickRow> {
    bench
        .st
        .tally
        .ticks_between(first, last)
        .map(|(t, a)| TickRow {
            time: t,
            clients: a.n,
            spread_ms: a.spread_ms(),
            first_after_ms: a.first_after_ms(t),
            last_after_ms: a.last_after_ms(t),
        })
        .collect()
}

/// Settles (full mode) and reads memory, failing if the server is gone.
fn memory_after_settle(
    bench: &mut Bench,
    server: &mut Server,
    mode: Mode,
) -> Result<Memory, BenchError> {
    if mode == Mode::Full {
        bench.run_for(Duration::from_millis(500))?;
    }
    alive(server)?;
    Ok(procfs::memory(server.pid)?)
}

fn alive(server: &mut Server) -> Result<(), BenchError> {
    if server.alive() {
        Ok(())
    } else {
        let status = server
            .try_exit_status()
            .map_or("gone".to_string(), |s| s.to_string());
        Err(BenchError::ServerGone(format!(
            "exit {status}; log: {:?}",
            server.log().tail
        )))
    }
}

fn run(opts: &Options) -> Result<Report, BenchError> {
    let nofile = ws_assets::limits::raise_open_files()?;
    if opts.clients as u64 + 32 > nofile {
        eprintln!(
            "wsbench: warning: {} clients but only {nofile} open files allowed",
            opts.clients
        );
    }
    let mut server = match &opts.target {
        Target::Spawn(path) => Server::spawn(path).map_err(BenchError::Server)?,
        Target::Attach { addr, pid } => Server::attach(*addr, *pid),
    };
    let mut report = Report {
        mode: if opts.mode == Mode::Full {
            "full"
        } else {
            "quick"
        }
        .to_string(),
        clients: opts.clients,
        src_ips: opts.src_ips,
        sub_window: opts.sub_window,
        server: format!("{} (pid {})", server.addr, server.pid),
        binary_bytes: server.binary_bytes,
        server_env: server
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        ..Report::default()
    };

    // Start-up: first connect plus an `assets` reply.
    let assets = match probe::probe(server.addr, &opts.path, Duration::from_secs(30)) {
        Ok(p) => {
            report.assets = format!("{:?} (from the assets reply)", p.asset_ids);
            p.asset_ids
        }
        Err(probe::ProbeError::Assets(why)) => {
            report.assets = format!("[1, 2, 3, 4, 5] (assets reply unusable: {why})");
            vec![1, 2, 3, 4, 5]
        }
        Err(e) => return Err(BenchError::Probe(e)),
    };
    report.startup_ms = server
        .spawned_at
        .map(|t| t.elapsed().as_secs_f64() * 1000.0);

    let base = Instant::now();
    let setup = Setup {
        addr: server.addr,
        path: opts.path.clone(),
        src_ips: opts.src_ips,
    };
    let mut bench = Bench::new(setup, base)?;
    if opts.mode == Mode::Full {
        bench.run_for(Duration::from_secs(1))?;
    }
    alive(&mut server)?;
    report.mem_base = procfs::memory(server.pid)?;

    // Connect every client, idle.
    let n = opts.clients;
    let t = Instant::now();
    bench.connect_all(
        n,
        opts.connect_window,
        Duration::from_secs(60) + Duration::from_millis(n as u64),
    )?;
    report.connect_s = t.elapsed().as_secs_f64();
    report.connect_latency = ms(&bench.st.tally.connect_lat_us);
    report.mem_idle = memory_after_settle(&mut bench, &mut server, opts.mode)?;

    // Subscribe at a steady pace.
    let t = Instant::now();
    report.subscribe_complete = bench.subscribe_paced(
        &assets,
        opts.sub_window,
        Duration::from_secs(60) + Duration::from_millis(5 * n as u64),
    )?;
    report.subscribe_s = t.elapsed().as_secs_f64();
    report.sub_latency = ms(&std::mem::take(&mut bench.st.tally.history_lat_us));
    report.mem_sub = memory_after_settle(&mut bench, &mut server, opts.mode)?;

    // Measured ticks: start at a tick every client has, then take the next T.
    let start = bench
        .wait_complete_tick(i64::MIN, Duration::from_secs(5))?
        .ok_or_else(|| {
            BenchError::ServerGone("no tick reached every subscribed client within 5 s".into())
        })?;
    let before = sample(server.pid)?;
    let last = start + i64::from(opts.ticks);
    for t in start + 1..=last {
        bench.wait_tick(t, Duration::from_secs(3), Duration::from_secs(5))?;
    }
    let after = sample(server.pid)?;
    report.tick_cpu = window(&before, &after);
    report.ticks = rows(&bench, start + 1, last);
    report.tick_points = report.ticks.iter().map(|r| u64::from(r.clients)).sum();

    if opts.mode == Mode::Full {
        report.storm = Some(storm(&mut bench, &mut server, &assets)?);
    }

    // Final check: everyone should have the newest tick.
    let newest = bench
        .st
        .tally
        .ticks
        .keys()
        .next_back()
        .copied()
        .unwrap_or(last);
    bench.wait_tick(newest, Duration::from_secs(3), Duration::from_secs(5))?;
    finish_checks(&mut bench, newest, &mut report);

    if let Ok(text) = probe::scrape_metrics(server.addr) {
        for (what, name) in [
            ("second -> fan-out start", "ws_assets_tick_delay_seconds"),
            ("fan-out of a tick", "ws_assets_fanout_duration_seconds"),
        ] {
            if let Some(summary) = probe::histogram_summary(&text, name) {
                report.server_ticks.push((what.to_string(), summary));
            }
        }
    }
    bench.close_all();
    report.server_exit = match server.stop() {
        Some(status) => status.to_string(),
        None => "left running (attached)".to_string(),
    };
    let log = server.log();
    report.log = format!(
        "{} lines, {} warnings, {} errors",
        log.lines, log.warnings, log.errors
    );
    for line in &log.notable {
        report.log.push_str("\n  ");
        report.log.push_str(line);
    }
    Ok(report)
}

/// How long before a wall-clock second the storm starts.
const STORM_LEAD_NS: i64 = 200_000_000;

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

fn storm(bench: &mut Bench, server: &mut Server, assets: &[i32]) -> Result<Storm, BenchError> {
    let n = bench.st.tally.connected.max(1) as u64;
    bench.st.tally.history_lat_us.clear();
    // Start 200 ms before a wall-clock second so that a tick always falls inside the storm.
    let now_wall = tally::Stamp::now(bench.st.base).wall_ns;
    bench.run_for(Duration::from_nanos(until_before_second(
        now_wall,
        STORM_LEAD_NS,
    )))?;
    let before = sample(server.pid)?;
    let start_ns = bench.now_ns();
    let start_wall = tally::Stamp::now(bench.st.base).wall_ns;
    let complete = bench.subscribe_storm(
        assets,
        1,
        Duration::from_secs(60) + Duration::from_millis(10 * n),
    )?;
    let after = sample(server.pid)?;
    let memory = procfs::memory(server.pid)?;
    let end = bench
        .st
        .tally
        .last_history
        .unwrap_or(tally::Stamp::now(bench.st.base));
    // Let the tick after the storm arrive, so the ticks inside it are complete.
    let end_sec = end.wall_ns.div_euclid(1_000_000_000);
    bench.wait_complete_tick(end_sec, Duration::from_secs(5))?;
    alive(server)?;
    Ok(Storm {
        complete,
        all_s: end.mono_ns.saturating_sub(start_ns) as f64 / 1e9,
        latency: ms(&bench.st.tally.history_lat_us),
        // Ticks whose second began after the first subscribe and before the last history.
        ticks: rows(bench, start_wall.div_euclid(1_000_000_000) + 1, end_sec),
        cpu: window(&before, &after),
        memory,
    })
}

fn finish_checks(bench: &mut Bench, newest: i64, report: &mut Report) {
    let t = &bench.st.tally;
    report.connected = t.connected;
    report.failed = t.failed();
    report.failures = tally::reasons(&t.failures);
    report.dropped = t.dropped();
    report.drops = tally::reasons(&t.drops);
    report.history_len = t.history_len;
    report.history_gaps = t.history_gaps;
    report.history_wrong_asset = t.history_wrong_asset;
    report.error_replies = t.error_replies;
    report.malformed = t.malformed;
    report.points_total = t.points;
    for c in &bench.st.clients {
        let k = &c.check;
        let tail = if c.phase == client::Phase::Open {
            k.tail_missing(newest).max(0) as u64
        } else {
            0
        };
        let lost = u64::from(k.lost) + tail;
        report.lost += lost;
        report.dup += u64::from(k.dup);
        report.stale += u64::from(k.stale);
        report.seam_bad += u64::from(k.seam_bad);
        report.unexpected_history += u64::from(k.unexpected_history);
        if lost + u64::from(k.dup + k.stale + k.seam_bad) > 0 {
            report.clients_with_findings += 1;
        }
    }
}

#[cfg(test)]
#[allow(dead_code, unused_imports)] // the bench target builds it without the tests: main.rs
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
