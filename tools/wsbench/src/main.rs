//! `wsbench`: a load and correctness benchmark for the ws_assets server.
//!
//! It starts the real server (or attaches to a running one, or K instances on one port),
//! opens N WebSocket clients from one thread with non-blocking sockets (one thread in
//! each of several processes beyond one process's open-file limit), subscribes them across the assets, and
//! prints what a capacity question needs: connection outcomes, subscribe-to-history
//! latency, the per-tick fan-out spread and arrival after the tick's second, every
//! client's stream checked for lost or repeated points, the server's memory per
//! connection from `/proc/PID/status`, its reactor thread's CPU per delivered point from
//! `/proc/PID/task/PID/{stat,schedstat}`, a subscribe storm, start-up time and binary size.
//!
//! # Usage
//!
//! The tool is a workspace member of its own (tools/wsbench): the service's build and
//! tests never compile it. `cargo wsbench` (an alias in .cargo/config.toml for `cargo
//! run --release -p wsbench --`) builds it with the release settings and starts it; it
//! starts the service binary found beside its own executable, so build that first:
//!
//! ```text
//! cargo build --release
//! cargo wsbench                                   # 1000 clients, 10 ticks, full mode
//! cargo wsbench --clients 10000 --ticks 10
//! cargo wsbench --clients 50 --ticks 3 --mode quick
//! cargo wsbench --addr 127.0.0.1:8080 --pid 1234 --clients 2000
//! cargo wsbench --instances 2 --clients 38000     # two processes of clients
//! cargo wsbench --soak 30m --clients 10000
//! ```
//!
//! Flags: `--clients N` (1000), `--ticks T` measured ticks (10), `--src-ips K` source
//! addresses 127.0.0.2..=127.0.0.(1+K) bound with `IP_BIND_ADDRESS_NO_PORT` (4),
//! `--mode full|quick` (quick skips the storm and the settle pauses), `--server PATH`
//! (default: the `ws_assets` binary beside the tool's executable, e.g.
//! `target/release/ws_assets`), `--addr HOST:PORT --pid PID` (benchmark a running
//! server), `--sub-window W` subscriptions in flight in the paced phase (64),
//! `--connect-window C` connects in flight (256), `--path P` (`/api/v1/websocket`),
//! `--instances K` (below), `--dsn ADMIN_DSN`, `--client-procs P` (below), `--soak
//! DURATION` with `--sample-every D`, `--churn N`, `--slow N`, `--ping-flood N` (see
//! `soak.rs`).
//!
//! With `--instances K` the tool creates a throwaway database through the admin DSN
//! (default `postgresql://postgres@127.0.0.1:5432/postgres`), starts the first instance
//! on it with `WS_ASSETS_REUSE_PORT=TRUE` (it leads and fills the history), probes it,
//! starts the other K - 1 on the same port, and after the run stops them all and drops
//! the database. The kernel spreads the clients over the instances; the report adds a
//! row per instance (its logged role, its clients, read from the peers of its sockets,
//! its reactor and process CPU over the measured ticks, its memory, the spread among its
//! own clients), see `instances.rs`. `/metrics` is read from whichever instance answers.
//!
//! A process may hold at most `RLIMIT_NOFILE` sockets, so beyond that the clients are
//! driven by several processes of this tool (`--client-procs`, by default as few as the
//! limit allows), steered phase by phase and their findings merged; see `fleet.rs`.
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
//! tick. Each process may hold at most as many sockets as `RLIMIT_NOFILE`'s hard limit,
//! which the tool raises its soft limit to (the servers it starts inherit it).
//!
//! Output: the report, then one line `RESULT key=value ...` (keys: connected, failed,
//! dropped, lost, duplicated, setup_s, sub_p50_ms, spread_p99_ms, reactor_us_per_point,
//! idle_per_conn_b, storm_s, load1, client_procs, with `--instances` also instances and
//! per instance i0_role, i0_clients, i0_reactor_us_per_point, i0_spread_p99_ms, ...;
//! a soak has its own keys). Exit status 0 when the run completed (findings such
//! as lost points are reported, not fatal), 1 on a usage error, 2 when it could not run.
//!
//! The tool shares the machine with the server: on loopback its own reads add to the
//! measured spread, and its CPU is printed so that can be judged.
//!
//! # Tests
//!
//! Each module's unit tests sit beside it (`cargo test -p wsbench`);
//! tests/against_server.rs runs the built tool against the real server.

mod check;
mod client;
mod driver;
mod fleet;
mod instances;
mod net;
mod options;
mod pgdb;
mod probe;
mod procfs;
mod report;
mod scan;
mod server;
mod soak;
mod stats;
mod tally;
mod ws;

use driver::{Bench, Setup};
use fleet::{Fleet, FleetError, Snapshot};
use instances::{Servers, StartError};
use options::{Mode, Options, OptionsError, Target};
use procfs::Cpu;
use report::{CpuWindow, InstanceRow, Report, Storm, TickFigures, TickRow, total_memory};
use stats::Summary;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tally::TickAgg;

/// Why a run could not be completed.
#[derive(Debug)]
enum BenchError {
    Start(StartError),
    Probe(probe::ProbeError),
    Proc(procfs::ProcError),
    Io(std::io::Error),
    Fleet(FleetError),
    ServerGone(String),
    Usage(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Start(e) => write!(f, "{e}"),
            BenchError::Probe(e) => write!(f, "start-up probe: {e}"),
            BenchError::Proc(e) => write!(f, "{e}"),
            BenchError::Io(e) => write!(f, "event loop: {e}"),
            BenchError::Fleet(e) => write!(f, "{e}"),
            BenchError::ServerGone(why) => write!(f, "the server went away during the run: {why}"),
            BenchError::Usage(why) => write!(f, "{why}"),
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

impl From<FleetError> for BenchError {
    fn from(e: FleetError) -> Self {
        BenchError::Fleet(e)
    }
}

impl From<StartError> for BenchError {
    fn from(e: StartError) -> Self {
        BenchError::Start(e)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(fleet::CHILD_FLAG) {
        return fleet::child_main(&args[1..]);
    }
    let default_server = server_beside_this_tool();
    let opts = match Options::parse(args, default_server) {
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
    let outcome = match opts.soak {
        Some(soak) => soak::run(&opts, soak).map(|r| (r.human(), r.result_line())),
        None => run(&opts).map(|r| (r.human(), r.result_line())),
    };
    match outcome {
        Ok((human, result)) => {
            print!("{human}");
            println!("{result}");
            ExitCode::SUCCESS
        }
        Err(BenchError::Usage(why)) => {
            eprintln!("wsbench: {why}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("wsbench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Server CPU (each instance's reactor thread and whole process) and the tool's own
/// (its thread plus its client processes), sampled together.
struct CpuSample {
    reactors: Vec<Cpu>,
    processes: Vec<Cpu>,
    tool_s: f64,
    machine_ticks: u64,
    at: Instant,
}

fn sample(pids: &[u32], helpers: &[u32]) -> Result<CpuSample, BenchError> {
    let mut reactors = Vec::with_capacity(pids.len());
    let mut processes = Vec::with_capacity(pids.len());
    for &pid in pids {
        reactors.push(procfs::cpu(pid, Some(pid))?);
        processes.push(procfs::cpu(pid, None)?);
    }
    Ok(CpuSample {
        reactors,
        processes,
        tool_s: procfs::own_thread_cpu_seconds()
            + helpers
                .iter()
                .map(|&p| procfs::process_cpu_seconds(p))
                .sum::<f64>(),
        machine_ticks: procfs::machine_busy_ticks()?,
        at: Instant::now(),
    })
}

/// The whole window (every instance added up, the tool, the machine) and each
/// instance's part of it.
fn window(a: &CpuSample, b: &CpuSample) -> (CpuWindow, Vec<CpuWindow>) {
    let wall_s = b.at.duration_since(a.at).as_secs_f64();
    let each: Vec<CpuWindow> = (0..a.reactors.len().min(b.reactors.len()))
        .map(|i| CpuWindow {
            reactor_s: procfs::cpu_seconds(a.reactors[i], b.reactors[i]),
            reactor_ticks_s: procfs::tick_seconds(a.reactors[i], b.reactors[i]),
            process_s: procfs::tick_seconds(a.processes[i], b.processes[i]),
            tool_s: 0.0,
            wall_s,
            machine_s: 0.0,
        })
        .collect();
    let total = CpuWindow {
        reactor_s: each.iter().map(|w| w.reactor_s).sum(),
        reactor_ticks_s: each.iter().map(|w| w.reactor_ticks_s).sum(),
        process_s: each.iter().map(|w| w.process_s).sum(),
        tool_s: b.tool_s - a.tool_s,
        wall_s,
        machine_s: b.machine_ticks.saturating_sub(a.machine_ticks) as f64
            / procfs::clock_ticks_per_second() as f64,
    };
    (total, each)
}

fn ms(us: &[u32]) -> Option<Summary> {
    Summary::of(
        &us.iter()
            .map(|&v| f64::from(v) / 1000.0)
            .collect::<Vec<_>>(),
    )
}

fn rows(ticks: &BTreeMap<i64, TickAgg>, first: i64, last: i64) -> Vec<TickRow> {
    if first > last {
        return Vec::new();
    }
    ticks
        .range(first..=last)
        .map(|(&t, a)| TickRow {
            time: t,
            clients: a.n,
            spread_ms: a.spread_ms(),
            first_after_ms: a.first_after_ms(t),
            last_after_ms: a.last_after_ms(t),
        })
        .collect()
}

/// Settles (full mode) and reads every instance's memory, failing if a server is gone.
fn memory_after_settle(
    bench: &mut Bench,
    servers: &mut Servers,
    mode: Mode,
) -> Result<Vec<procfs::Memory>, BenchError> {
    if mode == Mode::Full {
        bench.run_for(Duration::from_millis(500))?;
    }
    alive(servers)?;
    Ok(servers.memory()?)
}

fn alive(servers: &mut Servers) -> Result<(), BenchError> {
    match servers.gone() {
        None => Ok(()),
        Some(why) => Err(BenchError::ServerGone(why)),
    }
}

/// Starts (or attaches to) the servers; with `--instances` only the first, so the
/// start-up probe times one instance alone.
fn start_servers(opts: &Options) -> Result<Servers, BenchError> {
    Ok(match (&opts.target, opts.instances) {
        (Target::Spawn(path), None) => Servers::standalone(path)?,
        (Target::Spawn(path), Some(_)) => Servers::first_instance(path, &opts.dsn)?,
        (Target::Attach { addr, pid }, _) => Servers::attach(*addr, *pid),
    })
}

fn server_path(opts: &Options) -> Option<&Path> {
    match &opts.target {
        Target::Spawn(p) => Some(p),
        Target::Attach { .. } => None,
    }
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

fn run(opts: &Options) -> Result<Report, BenchError> {
    let nofile = ws_assets::limits::raise_open_files()?;
    let procs = client_processes(opts, nofile)?;
    let mut servers = start_servers(opts)?;
    let first = &servers.list[0];
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
        server: format!("{} (pid {})", first.addr, first.pid),
        binary_bytes: first.binary_bytes,
        server_env: first
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
            .join(" "),
        client_procs: procs,
        database: servers.database().map(str::to_string),
        ..Report::default()
    };

    // Start-up: first connect plus an `assets` reply.
    let assets = match probe::probe(servers.addr(), &opts.path, Duration::from_secs(30)) {
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
    report.startup_ms = servers.list[0]
        .spawned_at
        .map(|t| t.elapsed().as_secs_f64() * 1000.0);
    if let (Some(k), Some(path)) = (opts.instances, server_path(opts)) {
        servers.add_instances(path, k)?;
        report.server = format!("{} (pids {:?}, one port)", servers.addr(), servers.pids());
    }
    let pids = servers.pids();

    let base = Instant::now();
    let setup = Setup {
        addr: servers.addr(),
        path: opts.path.clone(),
        src_ips: opts.src_ips,
        index_offset: 0,
    };
    let mut fleet = Fleet::new(setup, base, procs)?;
    let helpers = fleet.remote_pids();
    if opts.mode == Mode::Full {
        fleet.local.run_for(Duration::from_secs(1))?;
    }
    alive(&mut servers)?;
    let base_mem = servers.memory()?;
    report.mem_base = total_memory(&base_mem);

    // Connect every client, idle.
    let n = opts.clients;
    let t = Instant::now();
    fleet.connect_all(
        n,
        opts.connect_window,
        Duration::from_secs(60) + Duration::from_millis(n as u64),
    )?;
    report.connect_s = t.elapsed().as_secs_f64();
    report.mem_idle = total_memory(&memory_after_settle(
        &mut fleet.local,
        &mut servers,
        opts.mode,
    )?);
    let per_instance = if opts.instances.is_some() {
        let counts = fleet.map_instances(&pids)?;
        report.unmapped = counts.last().copied().unwrap_or(0);
        counts[..pids.len()].to_vec()
    } else {
        Vec::new()
    };

    // Subscribe at a steady pace.
    let t = Instant::now();
    let (complete, latencies) = fleet.subscribe_paced(
        &assets,
        opts.sub_window,
        Duration::from_secs(60) + Duration::from_millis(5 * n as u64),
    )?;
    report.subscribe_complete = complete;
    report.subscribe_s = t.elapsed().as_secs_f64();
    report.sub_latency = ms(&latencies);
    let sub_mem = memory_after_settle(&mut fleet.local, &mut servers, opts.mode)?;
    report.mem_sub = total_memory(&sub_mem);

    // Measured ticks: start at a tick every client has, then take the next T.
    let start = fleet
        .local
        .wait_complete_tick(i64::MIN, Duration::from_secs(5))?
        .ok_or_else(|| {
            BenchError::ServerGone("no tick reached every subscribed client within 5 s".into())
        })?;
    report.load_avg = procfs::load_average();
    let before = sample(&pids, &helpers)?;
    let last = start + i64::from(opts.ticks);
    fleet.wait_ticks(start + 1, last)?;
    let after = sample(&pids, &helpers)?;
    let (tick_cpu, instance_cpu) = window(&before, &after);
    report.tick_cpu = tick_cpu;

    let storm_span = if opts.mode == Mode::Full {
        let (s, span) = storm(&mut fleet, &mut servers, &helpers, &assets)?;
        report.storm = Some(s);
        Some(span)
    } else {
        None
    };

    // Final check: everyone should have the newest tick.
    let newest = fleet.newest()?.unwrap_or(last);
    fleet.wait_tick(newest)?;
    let snap = fleet.snapshot(newest)?;
    report.ticks = rows(&snap.ticks, start + 1, last);
    report.tick_points = report.ticks.iter().map(|r| u64::from(r.clients)).sum();
    if let (Some(s), Some((a, b))) = (report.storm.as_mut(), storm_span) {
        s.ticks = rows(&snap.ticks, a, b);
    }
    finish_checks(&snap, &mut report);

    if let Ok(text) = probe::scrape_metrics(servers.addr()) {
        let whose = if pids.len() > 1 {
            " (one instance's)"
        } else {
            ""
        };
        for (what, name) in [
            ("second -> fan-out start", "ws_assets_tick_delay_seconds"),
            ("fan-out of a tick", "ws_assets_fanout_duration_seconds"),
        ] {
            if let Some(summary) = probe::histogram_summary(&text, name) {
                report
                    .server_ticks
                    .push((format!("{what}{whose}"), summary));
            }
        }
    }
    fleet.close_all();
    let exits = servers.stop();
    report.server_exit = exits.join(", ");
    for (i, server) in servers.list.iter().enumerate() {
        let log = server.log();
        let counts = format!(
            "{} lines, {} warnings, {} errors",
            log.lines, log.warnings, log.errors
        );
        if i == 0 {
            report.log = counts.clone();
        } else {
            report.log.push_str(&format!("; instance {i}: {counts}"));
        }
        for line in &log.notable {
            report.log.push_str("\n  ");
            report.log.push_str(line);
        }
        if opts.instances.is_some() {
            let measured = snap
                .instance_ticks
                .get(i)
                .map(|m| rows(m, start + 1, last))
                .unwrap_or_default();
            report.instances.push(InstanceRow {
                pid: server.pid,
                role: log.role.clone().unwrap_or_else(|| "?".into()),
                role_changes: log.role_changes,
                ready_ms: server.ready_after.map(|d| d.as_secs_f64() * 1000.0),
                clients: per_instance.get(i).copied().unwrap_or(0),
                mem_base: base_mem.get(i).copied().unwrap_or_default(),
                mem_sub: sub_mem.get(i).copied().unwrap_or_default(),
                tick_cpu: instance_cpu.get(i).copied().unwrap_or_default(),
                tick_points: measured.iter().map(|r| u64::from(r.clients)).sum(),
                ticks: TickFigures::of(&measured),
                log: counts,
                exit: exits.get(i).cloned().unwrap_or_default(),
            });
        }
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

/// The subscribe storm in every client process; its figures, and the span of ticks
/// whose second began during it (their rows are filled from the final snapshot).
fn storm(
    fleet: &mut Fleet,
    servers: &mut Servers,
    helpers: &[u32],
    assets: &[i32],
) -> Result<(Storm, (i64, i64)), BenchError> {
    let n = fleet.local.st.tally.connected.max(1) as u64 * fleet.processes() as u64;
    let pids = servers.pids();
    // Start 200 ms before a wall-clock second so that a tick always falls inside the
    // storm, and far enough ahead for the client processes to hear of it.
    let now_wall = tally::Stamp::now(fleet.local.st.base).wall_ns;
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
            let now = tally::Stamp::now(bench.st.base).wall_ns;
            bench.run_for(Duration::from_nanos(
                at_wall_ns.saturating_sub(now).max(0) as u64
            ))?;
            before =
                Some(sample(&pids, helpers).map_err(|e| std::io::Error::other(e.to_string()))?);
            start = (bench.now_ns(), tally::Stamp::now(bench.st.base).wall_ns);
            Ok(())
        },
    )?;
    let after = sample(&pids, helpers)?;
    let memory = total_memory(&servers.memory()?);
    let end = last.unwrap_or(tally::Stamp::now(fleet.local.st.base));
    // Let the tick after the storm arrive, so the ticks inside it are complete.
    let end_sec = end.wall_ns.div_euclid(1_000_000_000);
    fleet.wait_tick(end_sec + 1)?;
    alive(servers)?;
    let cpu = match &before {
        Some(b) => window(b, &after).0,
        None => CpuWindow::default(),
    };
    let (start_ns, start_wall) = start;
    Ok((
        Storm {
            complete,
            all_s: end.mono_ns.saturating_sub(start_ns) as f64 / 1e9,
            latency: ms(&latencies),
            ticks: Vec::new(),
            cpu,
            memory,
        },
        // Ticks whose second began after the first subscribe and before the last history.
        (start_wall.div_euclid(1_000_000_000) + 1, end_sec),
    ))
}

fn finish_checks(snap: &Snapshot, report: &mut Report) {
    report.connected = snap.connected;
    report.failed = snap.failures.values().map(|&n| n as usize).sum();
    report.failures = tally::reasons(&snap.failures);
    report.dropped = snap.drops.values().map(|&n| n as usize).sum();
    report.drops = tally::reasons(&snap.drops);
    report.connect_latency = ms(&snap.connect_lat_us);
    report.history_len = snap.history_len;
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

/// The service binary cargo puts beside this tool's executable (`target/release/ws_assets`
/// for `cargo wsbench`), or its bare name when the tool's own path is unknown.
fn server_beside_this_tool() -> PathBuf {
    let name = "ws_assets";
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
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
