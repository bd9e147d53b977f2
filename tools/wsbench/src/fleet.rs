//! The clients of a run, in one process or several.
//!
//! A process may hold at most `RLIMIT_NOFILE` sockets (20,000 here), so a load beyond
//! that is split: the tool starts copies of itself (`--client-process`, not for people)
//! that each drive a share of the clients, and steers them through their stdin with one
//! JSON [`Command`] per line; each answers one JSON [`Reply`] line on stdout. Every phase
//! runs in all processes at once: the commands go out first, the tool drives its own
//! share, then waits for the answers while it keeps serving its own clients.
//!
//! Every process stamps arrivals on the same monotonic base (`CLOCK_MONOTONIC` is
//! system-wide; a copy is told the base's value), so per-tick first and last arrivals
//! merge exactly, and the final [`Snapshot`]s add up to the report's figures.

use crate::check::Findings;
use crate::client::{Behaviour, Phase};
use crate::driver::{Bench, Setup};
use crate::procfs;
use crate::tally::{self, Lateness, Stamp, TickAgg};
use crate::tls::ClientTls;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command as Process, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

/// The flag that makes the tool a client process of another.
pub const CHILD_FLAG: &str = "--client-process";

/// Open files a client process keeps for itself besides its clients' sockets.
pub const SPARE_FILES: u64 = 64;

/// Poll wait of the tool's own loop while it waits for the others.
const POLL_WAIT: Duration = Duration::from_millis(5);

/// A phase for a client process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Connect `n` clients, the first being the load's client number `offset`.
    Connect {
        /// Clients.
        n: usize,
        /// Index of the first among all the load's clients.
        offset: usize,
        /// Connects in flight at once.
        window: usize,
        /// Time limit, ms.
        limit_ms: u64,
    },
    /// Find which instance accepted each client.
    Map {
        /// The instances' pids.
        pids: Vec<u32>,
    },
    /// Subscribe every client at a steady pace.
    Subscribe {
        /// Asset ids.
        assets: Vec<i32>,
        /// Subscriptions in flight.
        window: usize,
        /// Time limit, ms.
        limit_ms: u64,
    },
    /// Wait until each tick `first..=last` is complete.
    Ticks {
        /// First tick.
        first: i64,
        /// Last tick.
        last: i64,
    },
    /// Every client subscribes to the next asset at wall-clock time `at_wall_ns`.
    Storm {
        /// When, ns since the epoch.
        at_wall_ns: i64,
        /// Asset ids.
        assets: Vec<i32>,
        /// Asset shift.
        shift: usize,
        /// Time limit, ms.
        limit_ms: u64,
    },
    /// The newest tick any client got.
    Newest,
    /// Wait until tick `time` is complete.
    WaitTick {
        /// The tick.
        time: i64,
    },
    /// Everything seen, with `newest` the tick every client should have.
    Snapshot {
        /// The newest tick.
        newest: i64,
    },
    /// Close every client and exit.
    Close,
}

/// A client process's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The phase is over.
    Done,
    /// Clients per instance (and, last, not found in any).
    Mapped(Vec<usize>),
    /// Subscriptions: all answered, and their latencies.
    Subscribed {
        /// Every history arrived in time.
        complete: bool,
        /// Subscribe-to-history latencies, µs.
        history_lat_us: Vec<u32>,
        /// When the last history arrived.
        last_history: Option<Stamp>,
    },
    /// The newest tick seen.
    Newest(Option<i64>),
    /// Everything seen.
    Snapshot(Box<Snapshot>),
    /// The phase failed.
    Failed(String),
}

/// What a set of clients saw over the run; client processes' snapshots add up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Clients upgraded.
    pub connected: usize,
    /// Of those, the ones that agreed on permessage-deflate.
    pub compressing: usize,
    /// Connections that never upgraded, by reason.
    pub failures: BTreeMap<String, u32>,
    /// Connections the server ended, by reason.
    pub drops: BTreeMap<String, u32>,
    /// Connect-to-101 latencies, µs.
    pub connect_lat_us: Vec<u32>,
    /// Per tick, arrivals.
    pub ticks: BTreeMap<i64, TickAgg>,
    /// Per tick, every client's lateness behind its second.
    pub lateness: BTreeMap<i64, Lateness>,
    /// Per instance and tick, arrivals.
    pub instance_ticks: Vec<BTreeMap<i64, TickAgg>>,
    /// Histories received.
    pub histories: u64,
    /// Their bytes on the wire, summed.
    pub history_wire_bytes: u64,
    /// Their JSON's bytes (inflated), summed.
    pub history_json_bytes: u64,
    /// Messages that came compressed.
    pub compressed_messages: u64,
    /// Histories that took the verdict on a payload verified before.
    pub reused_verdicts: u64,
    /// Smallest and largest history.
    pub history_len: Option<(u32, u32)>,
    /// History points not 1 s after the previous.
    pub history_gaps: u64,
    /// History points of the wrong asset.
    pub history_wrong_asset: u64,
    /// Live points received.
    pub points: u64,
    /// `error` replies.
    pub error_replies: u64,
    /// Unreadable values.
    pub malformed: u64,
    /// Stream findings of every client.
    pub findings: Findings,
}

impl Snapshot {
    /// What `bench`'s clients saw; an open client's stream should reach `newest`. Only
    /// steady clients' streams are judged (a soak's slow clients lose points on purpose).
    pub fn of(bench: &Bench, newest: i64) -> Snapshot {
        let t = &bench.st.tally;
        let mut findings = bench.st.retired;
        for c in &bench.st.clients {
            if c.behaviour != Behaviour::Steady {
                continue;
            }
            let tail = if c.phase == Phase::Open {
                c.check.tail_missing(newest).max(0) as u64
            } else {
                0
            };
            findings.add(&c.check, tail);
        }
        Snapshot {
            connected: t.connected,
            compressing: t.compressing,
            failures: t.failures.clone(),
            drops: t.drops.clone(),
            connect_lat_us: t.connect_lat_us.clone(),
            ticks: t.ticks.clone(),
            lateness: t.lateness.clone(),
            instance_ticks: t.instance_ticks.clone(),
            histories: t.histories,
            history_wire_bytes: t.history_wire_bytes,
            history_json_bytes: t.history_json_bytes,
            compressed_messages: t.compressed_messages,
            reused_verdicts: t.reused_verdicts,
            history_len: t.history_len,
            history_gaps: t.history_gaps,
            history_wrong_asset: t.history_wrong_asset,
            points: t.points,
            error_replies: t.error_replies,
            malformed: t.malformed,
            findings,
        }
    }

    /// Adds another process's snapshot.
    pub fn merge(&mut self, o: &Snapshot) {
        self.connected += o.connected;
        self.compressing += o.compressing;
        tally::merge_reasons(&mut self.failures, &o.failures);
        tally::merge_reasons(&mut self.drops, &o.drops);
        self.connect_lat_us.extend_from_slice(&o.connect_lat_us);
        tally::merge_ticks(&mut self.ticks, &o.ticks);
        tally::merge_lateness(&mut self.lateness, &o.lateness);
        if self.instance_ticks.len() < o.instance_ticks.len() {
            self.instance_ticks
                .resize(o.instance_ticks.len(), BTreeMap::new());
        }
        for (mine, theirs) in self.instance_ticks.iter_mut().zip(&o.instance_ticks) {
            tally::merge_ticks(mine, theirs);
        }
        self.histories += o.histories;
        self.history_wire_bytes += o.history_wire_bytes;
        self.history_json_bytes += o.history_json_bytes;
        self.compressed_messages += o.compressed_messages;
        self.reused_verdicts += o.reused_verdicts;
        self.history_len = match (self.history_len, o.history_len) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (a, b) => a.or(b),
        };
        self.history_gaps += o.history_gaps;
        self.history_wrong_asset += o.history_wrong_asset;
        self.points += o.points;
        self.error_replies += o.error_replies;
        self.malformed += o.malformed;
        self.findings.merge(&o.findings);
    }
}

/// A client process failed.
#[derive(Debug)]
pub enum FleetError {
    /// It could not be started.
    Spawn(io::Error),
    /// It exited or closed its output.
    Gone(u32, String),
    /// It answered something unexpected, or reported a failure.
    Protocol(u32, String),
    /// The tool's own event loop failed.
    Io(io::Error),
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetError::Spawn(e) => write!(f, "cannot start a client process: {e}"),
            FleetError::Gone(pid, why) => write!(f, "client process {pid} went away: {why}"),
            FleetError::Protocol(pid, why) => write!(f, "client process {pid}: {why}"),
            FleetError::Io(e) => write!(f, "event loop: {e}"),
        }
    }
}

impl From<io::Error> for FleetError {
    fn from(e: io::Error) -> Self {
        FleetError::Io(e)
    }
}

struct Remote {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: Receiver<String>,
    pid: u32,
}

impl Remote {
    fn send(&mut self, cmd: &Command) -> Result<(), FleetError> {
        let line = serde_json::to_string(cmd)
            .map_err(|e| FleetError::Protocol(self.pid, format!("encoding a command: {e}")))?;
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(FleetError::Gone(self.pid, "its input is closed".into()));
        };
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| FleetError::Gone(self.pid, format!("writing a command: {e}")))
    }
}

/// The tool's own clients plus those of its client processes.
pub struct Fleet {
    /// The clients this process drives.
    pub local: Bench,
    remotes: Vec<Remote>,
}

/// `total` split into `parts` shares that differ by at most one, larger first.
pub fn shares(total: usize, parts: usize) -> Vec<usize> {
    let parts = parts.max(1);
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

/// Client processes needed for `clients` when each may hold `files` open files.
pub fn processes_for(clients: usize, files: u64) -> usize {
    let per = files.saturating_sub(SPARE_FILES).max(1) as usize;
    clients.div_ceil(per).max(1)
}

impl Fleet {
    /// The tool's own clients on `setup`, plus `procs - 1` client processes.
    pub fn new(setup: Setup, base: Instant, procs: usize) -> Result<Fleet, FleetError> {
        let base_mono = procfs::monotonic_ns().saturating_sub(base.elapsed().as_nanos() as u64);
        let mut remotes = Vec::new();
        let exe = std::env::current_exe().map_err(FleetError::Spawn)?;
        for _ in 1..procs.max(1) {
            let mut child = Process::new(&exe)
                .arg(CHILD_FLAG)
                .arg(base_mono.to_string())
                .arg(setup.addr.to_string())
                .arg(&setup.path)
                .arg(setup.src_ips.to_string())
                .arg(if setup.deflate { "deflate" } else { "none" })
                .args(setup.tls.as_ref().map(|t| t.root.as_os_str()))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(FleetError::Spawn)?;
            let pid = child.id();
            let (tx, rx) = mpsc::channel();
            if let Some(out) = child.stdout.take() {
                std::thread::spawn(move || {
                    for line in BufReader::new(out).lines() {
                        let Ok(line) = line else { break };
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                });
            }
            let stdin = child.stdin.take();
            remotes.push(Remote {
                child,
                stdin,
                replies: rx,
                pid,
            });
        }
        Ok(Fleet {
            local: Bench::new(setup, base)?,
            remotes,
        })
    }

    /// Processes driving clients, this one included.
    pub fn processes(&self) -> usize {
        1 + self.remotes.len()
    }

    /// The client processes' pids.
    pub fn remote_pids(&self) -> Vec<u32> {
        self.remotes.iter().map(|r| r.pid).collect()
    }

    /// Sends `cmd(i)` to client process `i`.
    fn send_each(&mut self, mut cmd: impl FnMut(usize) -> Command) -> Result<(), FleetError> {
        for (i, r) in self.remotes.iter_mut().enumerate() {
            r.send(&cmd(i))?;
        }
        Ok(())
    }

    /// Waits for every client process's answer, serving the tool's own clients meanwhile.
    fn replies(&mut self) -> Result<Vec<Reply>, FleetError> {
        let mut out = Vec::with_capacity(self.remotes.len());
        for i in 0..self.remotes.len() {
            loop {
                let r = &mut self.remotes[i];
                match r.replies.try_recv() {
                    Ok(line) => {
                        let reply: Reply = serde_json::from_str(&line).map_err(|e| {
                            FleetError::Protocol(r.pid, format!("unreadable answer ({e}): {line}"))
                        })?;
                        if let Reply::Failed(why) = reply {
                            return Err(FleetError::Protocol(r.pid, why));
                        }
                        out.push(reply);
                        break;
                    }
                    Err(TryRecvError::Empty) => self.local.pump(POLL_WAIT)?,
                    Err(TryRecvError::Disconnected) => {
                        let status = r
                            .child
                            .try_wait()
                            .ok()
                            .flatten()
                            .map_or("output closed".to_string(), |s| s.to_string());
                        return Err(FleetError::Gone(r.pid, status));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Connects `total` clients over all processes, each keeping its share of `window`
    /// connects in flight.
    pub fn connect_all(
        &mut self,
        total: usize,
        window: usize,
        limit: Duration,
    ) -> Result<(), FleetError> {
        let parts = shares(total, self.processes());
        let window = (window / self.processes()).max(1);
        let mut offset = parts[0];
        self.send_each(|i| {
            let cmd = Command::Connect {
                n: parts[i + 1],
                offset,
                window,
                limit_ms: limit.as_millis() as u64,
            };
            offset += parts[i + 1];
            cmd
        })?;
        self.local.connect_all(parts[0], window, limit)?;
        self.replies()?;
        Ok(())
    }

    /// Marks every client with its instance and counts them per instance (last: in none).
    pub fn map_instances(&mut self, pids: &[u32]) -> Result<Vec<usize>, FleetError> {
        let pids = pids.to_vec();
        self.send_each(|_| Command::Map { pids: pids.clone() })?;
        let mut counts = crate::instances::map_clients(&mut self.local.st.clients, &pids)
            .map_err(|e| FleetError::Io(io::Error::other(e.to_string())))?;
        self.local.st.tally.track_instances(pids.len());
        for reply in self.replies()? {
            let Reply::Mapped(theirs) = reply else {
                return Err(FleetError::Protocol(
                    0,
                    format!("expected Mapped, got {reply:?}"),
                ));
            };
            for (c, t) in counts.iter_mut().zip(theirs) {
                *c += t;
            }
        }
        Ok(counts)
    }

    /// Subscribes every client at a steady pace; whether all histories came, and every
    /// subscribe-to-history latency.
    pub fn subscribe_paced(
        &mut self,
        assets: &[i32],
        window: usize,
        limit: Duration,
    ) -> Result<(bool, Vec<u32>), FleetError> {
        let window = (window / self.processes()).max(1);
        self.send_each(|_| Command::Subscribe {
            assets: assets.to_vec(),
            window,
            limit_ms: limit.as_millis() as u64,
        })?;
        let mut complete = self.local.subscribe_paced(assets, window, limit)?;
        let mut lat = std::mem::take(&mut self.local.st.tally.history_lat_us);
        for reply in self.replies()? {
            let Reply::Subscribed {
                complete: c,
                history_lat_us,
                ..
            } = reply
            else {
                return Err(FleetError::Protocol(
                    0,
                    format!("expected Subscribed, got {reply:?}"),
                ));
            };
            complete &= c;
            lat.extend(history_lat_us);
        }
        Ok((complete, lat))
    }

    /// Waits until each tick `first..=last` is complete in every process.
    pub fn wait_ticks(&mut self, first: i64, last: i64) -> Result<(), FleetError> {
        self.send_each(|_| Command::Ticks { first, last })?;
        for t in first..=last {
            self.local
                .wait_tick(t, Duration::from_secs(3), Duration::from_secs(5))?;
        }
        self.replies()?;
        Ok(())
    }

    /// The subscribe storm at `at_wall_ns` in every process (the tool's own share starts
    /// when `start` returns, having waited for that time); whether all histories came,
    /// their latencies and when the last came.
    pub fn storm(
        &mut self,
        at_wall_ns: i64,
        assets: &[i32],
        shift: usize,
        limit: Duration,
        start: impl FnOnce(&mut Bench) -> io::Result<()>,
    ) -> Result<(bool, Vec<u32>, Option<Stamp>), FleetError> {
        self.send_each(|_| Command::Storm {
            at_wall_ns,
            assets: assets.to_vec(),
            shift,
            limit_ms: limit.as_millis() as u64,
        })?;
        start(&mut self.local)?;
        self.local.st.tally.history_lat_us.clear();
        self.local.st.tally.last_history = None;
        let mut complete = self.local.subscribe_storm(assets, shift, limit)?;
        let mut lat = std::mem::take(&mut self.local.st.tally.history_lat_us);
        let mut last = self.local.st.tally.last_history;
        for reply in self.replies()? {
            let Reply::Subscribed {
                complete: c,
                history_lat_us,
                last_history,
            } = reply
            else {
                return Err(FleetError::Protocol(
                    0,
                    format!("expected Subscribed, got {reply:?}"),
                ));
            };
            complete &= c;
            lat.extend(history_lat_us);
            last = match (last, last_history) {
                (Some(a), Some(b)) if b.mono_ns > a.mono_ns => Some(b),
                (a, b) => a.or(b),
            };
        }
        Ok((complete, lat, last))
    }

    /// The newest tick any client of any process got.
    pub fn newest(&mut self) -> Result<Option<i64>, FleetError> {
        self.send_each(|_| Command::Newest)?;
        let mut newest = self.local.st.tally.ticks.keys().next_back().copied();
        for reply in self.replies()? {
            if let Reply::Newest(Some(t)) = reply {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
        Ok(newest)
    }

    /// Waits until tick `time` is complete in every process.
    pub fn wait_tick(&mut self, time: i64) -> Result<(), FleetError> {
        self.send_each(|_| Command::WaitTick { time })?;
        self.local
            .wait_tick(time, Duration::from_secs(3), Duration::from_secs(5))?;
        self.replies()?;
        Ok(())
    }

    /// What every client saw, added up.
    pub fn snapshot(&mut self, newest: i64) -> Result<Snapshot, FleetError> {
        self.send_each(|_| Command::Snapshot { newest })?;
        let mut all = Snapshot::of(&self.local, newest);
        for reply in self.replies()? {
            let Reply::Snapshot(s) = reply else {
                return Err(FleetError::Protocol(
                    0,
                    format!("expected Snapshot, got {reply:?}"),
                ));
            };
            all.merge(&s);
        }
        Ok(all)
    }

    /// Closes every client and ends the client processes.
    pub fn close_all(&mut self) {
        let _ = self.send_each(|_| Command::Close);
        self.local.close_all();
        for r in &mut self.remotes {
            r.stdin = None;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(r.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(r.child.try_wait(), Ok(None)) {
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for r in &mut self.remotes {
            if matches!(r.child.try_wait(), Ok(None)) {
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
        }
    }
}

/// A client process: `--client-process BASE_MONO_NS ADDR PATH SRC_IPS OFFER
/// [TLS_ROOT_PEM]` (OFFER: `deflate` or `none`), steered through
/// stdin (see the module's text). Exit status 0 after `Close` or when stdin closes.
pub fn child_main(args: &[String]) -> ExitCode {
    match child_run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsbench client process {}: {e}", std::process::id());
            ExitCode::from(2)
        }
    }
}

fn child_run(args: &[String]) -> Result<(), String> {
    let (base_mono, addr, path, src_ips, offer, tls_root) = match args {
        [base, addr, path, src, offer] => (base, addr, path, src, offer, None),
        [base, addr, path, src, offer, root] => (base, addr, path, src, offer, Some(root)),
        _ => {
            return Err(format!(
                "{CHILD_FLAG} BASE_MONO_NS ADDR PATH SRC_IPS OFFER [TLS_ROOT_PEM], got {args:?}"
            ));
        }
    };
    let deflate = match offer.as_str() {
        "deflate" => true,
        "none" => false,
        other => return Err(format!("offer {other:?}: expected deflate or none")),
    };
    let tls = tls_root
        .map(|root| ClientTls::trusting(std::path::Path::new(root)))
        .transpose()?;
    let base_mono: u64 = base_mono.parse().map_err(|e| format!("base: {e}"))?;
    let addr: SocketAddr = addr.parse().map_err(|e| format!("address: {e}"))?;
    let src_ips: u8 = src_ips
        .parse()
        .map_err(|e| format!("source addresses: {e}"))?;
    ws_assets::limits::raise_open_files().map_err(|e| format!("open-file limit: {e}"))?;
    let behind = procfs::monotonic_ns().saturating_sub(base_mono);
    let now = Instant::now();
    let base = now.checked_sub(Duration::from_nanos(behind)).unwrap_or(now);
    let setup = Setup {
        addr,
        path: path.clone(),
        src_ips,
        index_offset: 0,
        tls,
        deflate,
    };
    let mut bench = Bench::new(setup, base).map_err(|e| format!("event loop: {e}"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdout = io::stdout().lock();
    loop {
        match rx.try_recv() {
            Ok(line) => {
                let reply = match serde_json::from_str::<Command>(&line) {
                    Ok(Command::Close) => {
                        bench.close_all();
                        return Ok(());
                    }
                    Ok(cmd) => {
                        obey(&mut bench, cmd).unwrap_or_else(|e| Reply::Failed(e.to_string()))
                    }
                    Err(e) => Reply::Failed(format!("unreadable command ({e}): {line}")),
                };
                let text = serde_json::to_string(&reply).map_err(|e| e.to_string())?;
                writeln!(stdout, "{text}")
                    .and_then(|()| stdout.flush())
                    .map_err(|e| format!("writing an answer: {e}"))?;
            }
            Err(TryRecvError::Empty) => bench
                .pump(POLL_WAIT)
                .map_err(|e| format!("event loop: {e}"))?,
            Err(TryRecvError::Disconnected) => {
                bench.close_all();
                return Ok(());
            }
        }
    }
}

/// Runs one command in a client process.
fn obey(bench: &mut Bench, cmd: Command) -> io::Result<Reply> {
    let ms = Duration::from_millis;
    Ok(match cmd {
        Command::Connect {
            n,
            offset,
            window,
            limit_ms,
        } => {
            bench.st.set_index_offset(offset);
            bench.connect_all(n, window, ms(limit_ms))?;
            Reply::Done
        }
        Command::Map { pids } => {
            let counts = crate::instances::map_clients(&mut bench.st.clients, &pids)
                .map_err(|e| io::Error::other(e.to_string()))?;
            bench.st.tally.track_instances(pids.len());
            Reply::Mapped(counts)
        }
        Command::Subscribe {
            assets,
            window,
            limit_ms,
        } => {
            let complete = bench.subscribe_paced(&assets, window, ms(limit_ms))?;
            Reply::Subscribed {
                complete,
                history_lat_us: std::mem::take(&mut bench.st.tally.history_lat_us),
                last_history: bench.st.tally.last_history,
            }
        }
        Command::Ticks { first, last } => {
            for t in first..=last {
                bench.wait_tick(t, Duration::from_secs(3), Duration::from_secs(5))?;
            }
            Reply::Done
        }
        Command::Storm {
            at_wall_ns,
            assets,
            shift,
            limit_ms,
        } => {
            let now = Stamp::now(bench.st.base).wall_ns;
            bench.run_for(Duration::from_nanos(
                at_wall_ns.saturating_sub(now).max(0) as u64
            ))?;
            bench.st.tally.history_lat_us.clear();
            bench.st.tally.last_history = None;
            let complete = bench.subscribe_storm(&assets, shift, ms(limit_ms))?;
            Reply::Subscribed {
                complete,
                history_lat_us: std::mem::take(&mut bench.st.tally.history_lat_us),
                last_history: bench.st.tally.last_history,
            }
        }
        Command::Newest => Reply::Newest(bench.st.tally.ticks.keys().next_back().copied()),
        Command::WaitTick { time } => {
            bench.wait_tick(time, Duration::from_secs(3), Duration::from_secs(5))?;
            Reply::Done
        }
        Command::Snapshot { newest } => Reply::Snapshot(Box::new(Snapshot::of(bench, newest))),
        Command::Close => Reply::Done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_split_evenly_larger_first() {
        assert_eq!(shares(38_000, 2), [19_000, 19_000]);
        assert_eq!(shares(7, 3), [3, 2, 2]);
        assert_eq!(shares(5, 1), [5]);
        assert_eq!(shares(1, 0), [1]);
    }

    #[test]
    fn processes_stay_under_the_open_file_limit() {
        assert_eq!(processes_for(19_000, 20_000), 1);
        assert_eq!(processes_for(19_936, 20_000), 1);
        assert_eq!(processes_for(19_937, 20_000), 2);
        assert_eq!(processes_for(38_000, 20_000), 2);
        assert_eq!(processes_for(0, 20_000), 1);
    }

    #[test]
    fn commands_and_replies_survive_a_line_of_json() {
        let cmd = Command::Storm {
            at_wall_ns: 1_700_000_000_800_000_000,
            assets: vec![1, 2],
            shift: 1,
            limit_ms: 60_000,
        };
        let line = serde_json::to_string(&cmd).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Command>(&line).unwrap(), cmd);
        let mut s = Snapshot {
            connected: 2,
            history_len: Some((1800, 1800)),
            ..Snapshot::default()
        };
        s.ticks.insert(
            5,
            TickAgg {
                n: 2,
                first: Stamp {
                    mono_ns: 1,
                    wall_ns: 2,
                },
                last: Stamp {
                    mono_ns: 3,
                    wall_ns: 4,
                },
            },
        );
        let reply = Reply::Snapshot(Box::new(s.clone()));
        let back: Reply = serde_json::from_str(&serde_json::to_string(&reply).unwrap()).unwrap();
        assert_eq!(back, reply);
        s.compressing = 1;
        s.history_wire_bytes = 9000;
        let mut merged = s.clone();
        merged.merge(&s);
        assert_eq!(merged.connected, 4);
        assert_eq!((merged.compressing, merged.history_wire_bytes), (2, 18_000));
        assert_eq!(merged.ticks[&5].n, 4);
        assert_eq!(merged.history_len, Some((1800, 1800)));
    }
}
