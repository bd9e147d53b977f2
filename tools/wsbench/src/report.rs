//! The benchmark's findings and how they are printed: a report for people and one
//! `RESULT key=value ...` line for scripts.

use crate::probe::HistogramBounds;
use crate::procfs::Memory;
use crate::stats::{Summary, show};
use crate::tally::TickAgg;
use std::collections::BTreeMap;
use std::fmt::Write;

/// One tick's arrivals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickRow {
    /// Point time (epoch seconds).
    pub time: i64,
    /// Clients that got it.
    pub clients: u32,
    /// Last minus first arrival, ms.
    pub spread_ms: f64,
    /// First arrival after the second, ms.
    pub first_after_ms: f64,
    /// Last arrival after the second, ms.
    pub last_after_ms: f64,
}

/// Summaries over a set of ticks.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TickFigures {
    /// Fan-out spread.
    pub spread: Option<Summary>,
    /// First client's arrival after the second.
    pub first_after: Option<Summary>,
    /// Last client's arrival after the second.
    pub last_after: Option<Summary>,
}

impl TickFigures {
    /// Summarises `rows`.
    pub fn of(rows: &[TickRow]) -> TickFigures {
        let col = |f: fn(&TickRow) -> f64| Summary::of(&rows.iter().map(f).collect::<Vec<_>>());
        TickFigures {
            spread: col(|r| r.spread_ms),
            first_after: col(|r| r.first_after_ms),
            last_after: col(|r| r.last_after_ms),
        }
    }
}

/// CPU used by the server (reactor thread and whole process) and the tool over a window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CpuWindow {
    /// Reactor thread, seconds (schedstat ns when available).
    pub reactor_s: f64,
    /// Reactor thread, seconds from utime+stime clock ticks.
    pub reactor_ticks_s: f64,
    /// Whole server process, seconds from utime+stime.
    pub process_s: f64,
    /// The tool's own thread.
    pub tool_s: f64,
    /// Wall time of the window.
    pub wall_s: f64,
    /// The whole machine's busy CPU, seconds (all processes, all CPUs).
    pub machine_s: f64,
}

impl CpuWindow {
    /// Machine CPU not spent by the server or the tool: other load disturbing the run.
    pub fn other_s(&self) -> f64 {
        (self.machine_s - self.process_s - self.tool_s).max(0.0)
    }
}

/// The subscribe storm's figures.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Storm {
    /// Every history arrived before the time limit.
    pub complete: bool,
    /// First subscribe sent to last history received, seconds.
    pub all_s: f64,
    /// Per-client subscribe-to-history latency, ms.
    pub latency: Option<Summary>,
    /// Ticks whose second fell inside the storm.
    pub ticks: Vec<TickRow>,
    /// CPU during the storm.
    pub cpu: CpuWindow,
    /// Server memory right after the storm.
    pub memory: Memory,
}

/// One server instance's figures (with `--instances`), each from its own process.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstanceRow {
    /// Its pid.
    pub pid: u32,
    /// The role it last logged.
    pub role: String,
    /// Role changes it logged after its first.
    pub role_changes: u32,
    /// Spawn to its `listening on` line, ms.
    pub ready_ms: Option<f64>,
    /// Clients it accepted (from its sockets' peers).
    pub clients: usize,
    /// Its memory with no client.
    pub mem_base: Memory,
    /// Its memory with all clients subscribed.
    pub mem_sub: Memory,
    /// Its CPU over the measured ticks.
    pub tick_cpu: CpuWindow,
    /// Points its clients got in the measured ticks.
    pub tick_points: u64,
    /// Its clients' tick figures (spread among its own clients).
    pub ticks: TickFigures,
    /// Its log counts.
    pub log: String,
    /// How it exited.
    pub exit: String,
}

/// Everything the benchmark found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// "full" or "quick".
    pub mode: String,
    /// The extension the clients offered: "none" or "permessage-deflate" (`--deflate`).
    pub extension: String,
    /// Clients asked for.
    pub clients: usize,
    /// Source addresses used.
    pub src_ips: u8,
    /// Paced subscribe window.
    pub sub_window: usize,
    /// The server's address and pid.
    pub server: String,
    /// The environment the tool gave a server it started.
    pub server_env: String,
    /// Server binary size.
    pub binary_bytes: Option<u64>,
    /// Spawn to first `assets` reply, ms (None when attached).
    pub startup_ms: Option<f64>,
    /// Asset ids subscribed to, and where they came from.
    pub assets: String,
    /// Server memory with no client.
    pub mem_base: Memory,
    /// With all clients connected, not subscribed.
    pub mem_idle: Memory,
    /// With all clients subscribed (histories received).
    pub mem_sub: Memory,
    /// Clients upgraded.
    pub connected: usize,
    /// Of those, the ones that agreed on permessage-deflate.
    pub compressing: usize,
    /// Clients that failed to connect/upgrade, and why.
    pub failed: usize,
    /// Failure reasons.
    pub failures: String,
    /// Clients the server closed.
    pub dropped: usize,
    /// Drop reasons (close codes, EOF).
    pub drops: String,
    /// How the clients spoke to the server: "plain", or "tls" (`--tls`).
    pub transport: String,
    /// Connect phase wall time, s.
    pub connect_s: f64,
    /// CPU over the connect phase (TCP accepts, TLS handshakes, upgrades).
    pub connect_cpu: CpuWindow,
    /// Paced subscribe phase wall time, s.
    pub subscribe_s: f64,
    /// CPU over the paced subscribe phase (the server shipping every history, the tool
    /// reading, and inflating, them).
    pub subscribe_cpu: CpuWindow,
    /// Connect-to-101 latency, ms.
    pub connect_latency: Option<Summary>,
    /// Subscribe-to-history latency (paced), ms.
    pub sub_latency: Option<Summary>,
    /// Every paced subscribe got its history.
    pub subscribe_complete: bool,
    /// Smallest and largest history.
    pub history_len: Option<(u32, u32)>,
    /// Histories received (paced subscribes and storm).
    pub histories: u64,
    /// Their bytes on the wire, summed.
    pub history_wire_bytes: u64,
    /// Their JSON's bytes (inflated), summed.
    pub history_json_bytes: u64,
    /// Messages that came compressed.
    pub compressed_messages: u64,
    /// Histories whose payload repeated one verified before (the tool read it once).
    pub reused_verdicts: u64,
    /// History points not 1 s after the previous.
    pub history_gaps: u64,
    /// History points of the wrong asset.
    pub history_wrong_asset: u64,
    /// Measured ticks.
    pub ticks: Vec<TickRow>,
    /// CPU over the measured ticks.
    pub tick_cpu: CpuWindow,
    /// Points delivered in the measured ticks.
    pub tick_points: u64,
    /// Every client's arrival of the measured ticks after the tick's second, ms.
    pub lateness: Option<Summary>,
    /// With two instances: the follower's `ws_assets_follower_lag_seconds` (second's start
    /// to its fan-out start) over the measured ticks, as bucket bounds.
    pub follower_lag: Option<HistogramBounds>,
    /// Seconds skipped, summed over clients.
    pub lost: u64,
    /// Points repeated, summed over clients.
    pub dup: u64,
    /// Points of a replaced subscription after its new history.
    pub stale: u64,
    /// Seams where the first live point was not history-last + 1.
    pub seam_bad: u64,
    /// Clients with any of the above.
    pub clients_with_findings: usize,
    /// Histories nobody asked for.
    pub unexpected_history: u64,
    /// `error` replies.
    pub error_replies: u64,
    /// Unreadable values.
    pub malformed: u64,
    /// Live points received in the whole run.
    pub points_total: u64,
    /// The storm (full mode).
    pub storm: Option<Storm>,
    /// The server's own tick timing from `/metrics` (start delay, fan-out duration).
    pub server_ticks: Vec<(String, String)>,
    /// How the server exited, if the tool stopped it.
    pub server_exit: String,
    /// Server log counts and notable lines.
    pub log: String,
    /// With `--instances`: each instance.
    pub instances: Vec<InstanceRow>,
    /// With `--instances`: the throwaway database.
    pub database: Option<String>,
    /// Open clients found in no instance's sockets.
    pub unmapped: usize,
    /// Processes that drove the clients.
    pub client_procs: usize,
    /// The machine's 1-minute load average when the measured ticks began.
    pub load_avg: Option<f64>,
}

/// The rows of ticks `first..=last` (empty when `first > last`).
pub fn tick_rows(ticks: &BTreeMap<i64, TickAgg>, first: i64, last: i64) -> Vec<TickRow> {
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

fn sum_memory(m: impl Iterator<Item = Memory>) -> Memory {
    m.fold(Memory::default(), |a, b| Memory {
        rss_kib: a.rss_kib + b.rss_kib,
        hwm_kib: a.hwm_kib + b.hwm_kib,
        anon_kib: a.anon_kib + b.anon_kib,
    })
}

/// Memory of several instances added up.
pub fn total_memory(m: &[Memory]) -> Memory {
    sum_memory(m.iter().copied())
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("n/a".to_string(), |v| format!("{v:.1} ms"))
}

fn per_conn(base: Memory, now: Memory, n: usize) -> Option<f64> {
    (n > 0).then(|| (now.rss_kib as f64 - base.rss_kib as f64) * 1024.0 / n as f64)
}

fn mem_line(out: &mut String, label: &str, base: Memory, now: Memory, n: usize) {
    let per = per_conn(base, now, n).map_or("n/a".to_string(), |b| format!("{b:.0} B"));
    let _ = writeln!(
        out,
        "  {label:<34} VmRSS {:>8} KiB  (+{} KiB, {per}/conn)  VmHWM {} KiB",
        now.rss_kib,
        now.rss_kib as i64 - base.rss_kib as i64,
        now.hwm_kib
    );
}

fn us_per(cpu_s: f64, points: u64) -> Option<f64> {
    (points > 0).then(|| cpu_s * 1e6 / points as f64)
}

fn tick_table(out: &mut String, rows: &[TickRow]) {
    let _ = writeln!(
        out,
        "    {:>12} {:>8} {:>10} {:>12} {:>12}",
        "time", "clients", "spread ms", "first+ ms", "last+ ms"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "    {:>12} {:>8} {:>10.1} {:>12.1} {:>12.1}",
            r.time, r.clients, r.spread_ms, r.first_after_ms, r.last_after_ms
        );
    }
}

impl Report {
    /// Connect plus subscribe of every client, seconds.
    pub fn setup_s(&self) -> f64 {
        self.connect_s + self.subscribe_s
    }

    /// A history's bytes on the wire (headers and payload as received), on average.
    pub fn history_wire_b(&self) -> Option<f64> {
        (self.histories > 0).then(|| self.history_wire_bytes as f64 / self.histories as f64)
    }

    /// A history's JSON bytes (inflated), on average.
    pub fn history_json_b(&self) -> Option<f64> {
        (self.histories > 0).then(|| self.history_json_bytes as f64 / self.histories as f64)
    }

    /// Reactor CPU per connection set up (accept, TLS handshake, upgrade), µs.
    pub fn connect_us_per_conn(&self) -> Option<f64> {
        us_per(self.connect_cpu.reactor_s, self.connected as u64)
    }

    /// Server memory per idle connection, bytes.
    pub fn idle_per_conn(&self) -> Option<f64> {
        per_conn(self.mem_base, self.mem_idle, self.connected)
    }

    /// Server memory per subscribed connection, bytes.
    pub fn sub_per_conn(&self) -> Option<f64> {
        per_conn(self.mem_base, self.mem_sub, self.connected)
    }

    /// Reactor CPU per delivered point over the measured ticks, µs.
    pub fn reactor_us_per_point(&self) -> Option<f64> {
        us_per(self.tick_cpu.reactor_s, self.tick_points)
    }

    /// The human-readable report.
    pub fn human(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "wsbench: {} clients, mode {}, {} source addresses, {}, extension offered: {}, server {}",
            self.clients, self.mode, self.src_ips, self.transport, self.extension, self.server
        );
        self.write_server(&mut o);
        self.write_clients(&mut o);
        self.write_setup(&mut o);
        self.write_memory(&mut o);
        self.write_ticks(&mut o);
        self.write_storm(&mut o);
        self.write_checks(&mut o);
        let _ = writeln!(o, "server exit: {}", self.server_exit);
        let _ = writeln!(o, "server log: {}", self.log);
        o
    }

    /// The server: how it was started, its size, start-up and assets (and with `--instances` each instance).
    fn write_server(&self, o: &mut String) {
        let _ = writeln!(o, "server");
        if !self.server_env.is_empty() {
            let _ = writeln!(
                o,
                "  started with                       {}",
                self.server_env
            );
        }
        let _ = writeln!(
            o,
            "  binary size                        {}",
            self.binary_bytes.map_or("n/a".into(), |b| format!(
                "{b} B ({:.2} MiB)",
                b as f64 / 1048576.0
            ))
        );
        let _ = writeln!(
            o,
            "  start-up (spawn -> assets reply)   {}",
            opt_ms(self.startup_ms)
        );
        let _ = writeln!(o, "  assets                             {}", self.assets);
        if !self.instances.is_empty() {
            self.instance_table(o);
        }
    }

    /// Connection outcomes.
    fn write_clients(&self, o: &mut String) {
        let _ = writeln!(o, "clients");
        if self.client_procs > 1 {
            let _ = writeln!(
                o,
                "  driven by {} processes (the open-file limit holds one process's sockets)",
                self.client_procs
            );
        }
        let _ = writeln!(
            o,
            "  connected {} / failed {} / dropped by server {}",
            self.connected, self.failed, self.dropped
        );
        let _ = writeln!(o, "  failures: {}", self.failures);
        let _ = writeln!(o, "  drops:    {}", self.drops);
        if self.compressing > 0 || self.extension != "none" {
            let _ = writeln!(
                o,
                "  permessage-deflate agreed by {} of {}; {} messages came compressed",
                self.compressing, self.connected, self.compressed_messages
            );
        }
    }

    /// How long connecting and subscribing took, and what the histories looked like.
    fn write_setup(&self, o: &mut String) {
        let _ = writeln!(o, "setup");
        let _ = writeln!(
            o,
            "  connect+upgrade all                {:.3} s; per client p50/p99/max {}",
            self.connect_s,
            show(self.connect_latency, 2, "ms")
        );
        let _ = writeln!(
            o,
            "  reactor CPU while connecting       {:.3} s = {} per connection ({} set up per core-second)",
            self.connect_cpu.reactor_s,
            self.connect_us_per_conn()
                .map_or("n/a".into(), |us| format!("{us:.1} µs")),
            self.connect_us_per_conn()
                .map_or("n/a".into(), |us| format!("{:.0}", 1e6 / us))
        );
        let _ = writeln!(
            o,
            "  subscribe->history (window {})     {:.3} s; per client p50/p99/max {}{}",
            self.sub_window,
            self.subscribe_s,
            show(self.sub_latency, 2, "ms"),
            if self.subscribe_complete {
                ""
            } else {
                "  (INCOMPLETE)"
            }
        );
        let sc = self.subscribe_cpu;
        let _ = writeln!(
            o,
            "  CPU while subscribing              reactor {:.3} s, whole server {:.2} s, \
             tool {:.2} s, other load {:.2} s",
            sc.reactor_s,
            sc.process_s,
            sc.tool_s,
            sc.other_s()
        );
        let _ = writeln!(
            o,
            "  total setup                        {:.3} s",
            self.setup_s()
        );
        let hl = self
            .history_len
            .map_or("n/a".into(), |(a, b)| format!("{a}..{b} points"));
        let _ = writeln!(
            o,
            "  history length {hl}; gaps inside histories {}; wrong-asset points {}",
            self.history_gaps, self.history_wrong_asset
        );
        if let (Some(wire), Some(json)) = (self.history_wire_b(), self.history_json_b()) {
            let _ = writeln!(
                o,
                "  history on the wire {wire:.0} B per subscribe, {:.1} % of its {json:.0} B \
                 of JSON ({} histories)",
                100.0 * wire / json.max(1.0),
                self.histories
            );
        }
        let _ = writeln!(
            o,
            "  the tool read {} of {} histories; the others repeated one it had read, byte for \
             byte, and took its verdict",
            self.histories.saturating_sub(self.reused_verdicts),
            self.histories
        );
    }

    /// Server memory at rest, with idle and with subscribed clients, after the storm.
    fn write_memory(&self, o: &mut String) {
        let n = self.connected;
        let _ = writeln!(o, "server memory");
        let _ = writeln!(
            o,
            "  {:<34} VmRSS {:>8} KiB  VmHWM {} KiB",
            "idle, no client", self.mem_base.rss_kib, self.mem_base.hwm_kib
        );
        mem_line(
            o,
            "clients connected, not subscribed",
            self.mem_base,
            self.mem_idle,
            n,
        );
        mem_line(
            o,
            "clients subscribed (history sent)",
            self.mem_base,
            self.mem_sub,
            n,
        );
        if let Some(s) = &self.storm {
            mem_line(o, "after the subscribe storm", self.mem_base, s.memory, n);
        }
    }

    /// The measured ticks: fan-out spread and arrival, CPU per point, other load.
    fn write_ticks(&self, o: &mut String) {
        let f = TickFigures::of(&self.ticks);
        let _ = writeln!(o, "measured ticks: {}", self.ticks.len());
        tick_table(o, &self.ticks);
        let _ = writeln!(
            o,
            "  fan-out spread (last - first client)  p50/p99/max {}",
            show(f.spread, 1, "ms")
        );
        let _ = writeln!(
            o,
            "  first client after the second         p50/p99/max {}",
            show(f.first_after, 1, "ms")
        );
        let _ = writeln!(
            o,
            "  last client after the second          p50/p99/max {}",
            show(f.last_after, 1, "ms")
        );
        let _ = writeln!(
            o,
            "  every client after the second         p50/p99/max {}",
            show(self.lateness, 1, "ms")
        );
        if let Some(lag) = self.follower_lag {
            let _ = writeln!(
                o,
                "  follower lag (its /metrics: second -> its fan-out start) \
                 p50 <= {} ms, p99 <= {} ms, max <= {} ms ({} ticks)",
                lag.p50_ms, lag.p99_ms, lag.max_ms, lag.count
            );
        }
        let c = self.tick_cpu;
        let _ = writeln!(
            o,
            "  points delivered {} in {:.2} s",
            self.tick_points, c.wall_s
        );
        let _ = writeln!(
            o,
            "  reactor thread CPU {:.3} s (utime+stime {:.2} s) = {} per point",
            c.reactor_s,
            c.reactor_ticks_s,
            self.reactor_us_per_point()
                .map_or("n/a".into(), |v| format!("{v:.2} µs"))
        );
        let _ = writeln!(
            o,
            "  whole server CPU   {:.2} s = {} per point; tool CPU {:.2} s",
            c.process_s,
            us_per(c.process_s, self.tick_points).map_or("n/a".into(), |v| format!("{v:.2} µs")),
            c.tool_s
        );
        let _ = writeln!(
            o,
            "  machine busy       {:.2} CPU-s over {:.2} s; other load (not server, not tool) {:.2} CPU-s",
            c.machine_s,
            c.wall_s,
            c.other_s()
        );
        if let Some(l) = self.load_avg {
            let _ = writeln!(o, "  machine load average (1 min) at the start {l:.2}");
        }
        if c.other_s() > 0.1 * c.wall_s {
            let _ = writeln!(
                o,
                "  NOTE: other processes were busy during the measured ticks; timings are disturbed"
            );
        }
    }

    /// The subscribe storm (full mode).
    fn write_storm(&self, o: &mut String) {
        let f = TickFigures::of(&self.ticks);
        if let Some(s) = &self.storm {
            let _ = writeln!(
                o,
                "subscribe storm (all clients at once, each to the next asset, from 200 ms before a second)"
            );
            let _ = writeln!(
                o,
                "  all histories received in {:.3} s{}",
                s.all_s,
                if s.complete { "" } else { " (INCOMPLETE)" }
            );
            let _ = writeln!(o, "  per client p50/p99/max {}", show(s.latency, 1, "ms"));
            let _ = writeln!(
                o,
                "  reactor CPU {:.3} s (utime+stime {:.2} s), whole server {:.2} s, tool {:.2} s, wall {:.2} s",
                s.cpu.reactor_s, s.cpu.reactor_ticks_s, s.cpu.process_s, s.cpu.tool_s, s.cpu.wall_s
            );
            if s.ticks.is_empty() {
                let _ = writeln!(o, "  no tick's second began during the storm");
            } else {
                let _ = writeln!(o, "  ticks whose second began during the storm:");
                tick_table(o, &s.ticks);
                let sf = TickFigures::of(&s.ticks);
                let max = |f: Option<Summary>| {
                    f.map_or("n/a".to_string(), |s| format!("{:.1} ms", s.max))
                };
                let _ = writeln!(
                    o,
                    "  first / last client after the second, max: {} / {} (measured ticks: {} / {})",
                    max(sf.first_after),
                    max(sf.last_after),
                    max(f.first_after),
                    max(f.last_after)
                );
            }
        }
    }

    /// Every client's stream checked, and the server's own tick timing.
    fn write_checks(&self, o: &mut String) {
        let _ = writeln!(o, "stream checks (every client, whole run)");
        let _ = writeln!(
            o,
            "  lost {} / duplicated {} / stale {} / bad seams {} / clients affected {}",
            self.lost, self.dup, self.stale, self.seam_bad, self.clients_with_findings
        );
        let _ = writeln!(
            o,
            "  live points {}; error replies {}; unexpected histories {}; malformed values {}",
            self.points_total, self.error_replies, self.unexpected_history, self.malformed
        );
        if !self.server_ticks.is_empty() {
            let _ = writeln!(o, "server-side tick timing (its /metrics, whole run)");
            for (what, summary) in &self.server_ticks {
                let _ = writeln!(o, "  {what:<34} {summary}");
            }
        }
    }

    fn instance_table(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "instances: {} on one port (SO_REUSEPORT), database {}{}",
            self.instances.len(),
            self.database.as_deref().unwrap_or("?"),
            if self.unmapped > 0 {
                format!("; {} open clients found in no instance", self.unmapped)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            o,
            "    {:>2} {:>8} {:<10} {:>7} {:>8} {:>10} {:>8} {:>8} {:>8} {:>19} {:>8}  log",
            "#",
            "pid",
            "role",
            "clients",
            "ready ms",
            "RSS sub",
            "reactor",
            "µs/pt",
            "process",
            "spread p50/p99 ms",
            "first+ms"
        );
        for (i, r) in self.instances.iter().enumerate() {
            let role = if r.role_changes > 0 {
                format!("{}(+{})", r.role, r.role_changes)
            } else {
                r.role.clone()
            };
            let spread = r.ticks.spread.map_or("n/a".to_string(), |s| {
                format!("{:.1} / {:.1}", s.p50, s.p99)
            });
            let first = r
                .ticks
                .first_after
                .map_or("n/a".to_string(), |s| format!("{:.1}", s.p50));
            let _ = writeln!(
                o,
                "    {:>2} {:>8} {:<10} {:>7} {:>8} {:>6} KiB {:>7.3}s {:>8} {:>7.2}s {:>19} {:>8}  {}",
                i,
                r.pid,
                role,
                r.clients,
                r.ready_ms.map_or("n/a".into(), |v| format!("{v:.0}")),
                r.mem_sub.rss_kib,
                r.tick_cpu.reactor_s,
                us_per(r.tick_cpu.reactor_s, r.tick_points)
                    .map_or("n/a".into(), |v| format!("{v:.2}")),
                r.tick_cpu.process_s,
                spread,
                first,
                r.log
            );
        }
        let _ = writeln!(
            o,
            "    (reactor = the instance's reactor thread over the measured ticks; µs/pt = that \
             per point its clients got; process = all its threads; spread among its own clients; \
             first+ms = its first client after the second, p50)"
        );
    }

    /// `--beside`: `base`'s report (the same benchmark with fewer instances), this one's,
    /// and the two compared.
    pub fn human_beside(&self, base: &Report) -> String {
        let (n, k) = (base.instances.len(), self.instances.len());
        let mut o = format!("=== with {n} instance(s) ===\n");
        o.push_str(&base.human());
        let _ = writeln!(o, "=== with {k} instances ===");
        o.push_str(&self.human());
        let _ = writeln!(o, "=== {k} instances beside {n}, the same clients ===");
        let (fb, fk) = (TickFigures::of(&base.ticks), TickFigures::of(&self.ticks));
        let row = |o: &mut String, what: &str, b: Option<Summary>, s: Option<Summary>| {
            let ratio = match (b, s) {
                (Some(b), Some(s)) if b.p99 > 0.0 => format!("{:.2}", s.p99 / b.p99),
                _ => "n/a".to_string(),
            };
            let _ = writeln!(
                o,
                "  {what:<38} {:>24} {:>24} {:>7}",
                show(b, 1, "ms"),
                show(s, 1, "ms"),
                ratio
            );
        };
        let _ = writeln!(
            o,
            "  {:<38} {:>24} {:>24} {:>7}",
            "p50 / p99 / max",
            format!("{n} instance(s)"),
            format!("{k} instances"),
            "p99 x"
        );
        row(
            &mut o,
            "every client after the second",
            base.lateness,
            self.lateness,
        );
        row(
            &mut o,
            "last client after the second",
            fb.last_after,
            fk.last_after,
        );
        row(
            &mut o,
            "fan-out spread over every client",
            fb.spread,
            fk.spread,
        );
        if let Some(lag) = self.follower_lag {
            let _ = writeln!(
                o,
                "  follower lag (second -> a follower's fan-out start): p50 <= {} ms, p99 <= {} ms",
                lag.p50_ms, lag.p99_ms
            );
        }
        let _ = writeln!(
            o,
            "  load average (1 min) at the measured ticks: {} / {}",
            base.load_avg.map_or("n/a".into(), |l| format!("{l:.2}")),
            self.load_avg.map_or("n/a".into(), |l| format!("{l:.2}"))
        );
        o
    }

    /// `--beside`: this run's `RESULT` line with `base_`-prefixed figures of the run with
    /// fewer instances, and `lateness_p99_ratio` (this run's p99 over `base`'s).
    pub fn result_line_beside(&self, base: &Report) -> String {
        let mut k = Keys::default();
        k.put("base_instances", base.instances.len());
        k.put("base_connected", base.connected);
        k.put("base_lost", base.lost);
        k.put("base_duplicated", base.dup);
        k.summary("base_lateness", base.lateness);
        k.summary("base_last_after", TickFigures::of(&base.ticks).last_after);
        k.opt("base_load1", base.load_avg);
        k.opt(
            "lateness_p99_ratio",
            match (base.lateness, self.lateness) {
                (Some(b), Some(s)) if b.p99 > 0.0 => Some(s.p99 / b.p99),
                _ => None,
            },
        );
        format!("{} {}", self.result_line(), k.body())
    }

    /// The machine-readable `RESULT key=value ...` line.
    pub fn result_line(&self) -> String {
        self.result_keys().line()
    }

    /// The `RESULT` line's keys and values.
    pub fn result_keys(&self) -> Keys {
        let mut k = Keys::default();
        self.setup_keys(&mut k);
        self.tick_keys(&mut k);
        self.check_keys(&mut k);
        if let Some(s) = &self.storm {
            self.storm_keys(&mut k, s);
        }
        k.put("client_procs", self.client_procs);
        k.opt("load1", self.load_avg);
        self.instance_keys(&mut k);
        k
    }

    /// Connection outcomes, start-up, memory and the set-up phases.
    fn setup_keys(&self, k: &mut Keys) {
        let n = self.connected;
        k.put("mode", &self.mode);
        k.put("transport", &self.transport);
        k.put("extension", &self.extension);
        k.put("clients", self.clients);
        k.put("connected", n);
        k.put("compressing", self.compressing);
        k.put("failed", self.failed);
        k.put("dropped", self.dropped);
        k.opt("startup_ms", self.startup_ms);
        k.put(
            "binary_bytes",
            self.binary_bytes.map_or("na".into(), |b| b.to_string()),
        );
        k.put("rss_base_kib", self.mem_base.rss_kib);
        k.put("rss_idle_kib", self.mem_idle.rss_kib);
        k.opt("idle_per_conn_b", self.idle_per_conn());
        k.put("rss_sub_kib", self.mem_sub.rss_kib);
        k.opt("sub_per_conn_b", self.sub_per_conn());
        k.num("connect_s", self.connect_s);
        k.num("connect_reactor_cpu_s", self.connect_cpu.reactor_s);
        k.opt("connect_us_per_conn", self.connect_us_per_conn());
        k.num("subscribe_s", self.subscribe_s);
        k.num("setup_s", self.setup_s());
        k.num("subscribe_reactor_cpu_s", self.subscribe_cpu.reactor_s);
        k.num("subscribe_tool_cpu_s", self.subscribe_cpu.tool_s);
        k.summary("sub", self.sub_latency);
        k.put(
            "history_min",
            self.history_len.map_or("na".into(), |h| h.0.to_string()),
        );
        k.put("histories", self.histories);
        k.opt("history_wire_b", self.history_wire_b());
        k.opt("history_json_b", self.history_json_b());
        k.put("compressed_msgs", self.compressed_messages);
        k.put("reused_verdicts", self.reused_verdicts);
    }

    /// The measured ticks: arrival figures and CPU per point.
    fn tick_keys(&self, k: &mut Keys) {
        let f = TickFigures::of(&self.ticks);
        let cpu = self.tick_cpu;
        k.put("ticks", self.ticks.len());
        k.summary("spread", f.spread);
        k.summary("first_after", f.first_after);
        k.summary("last_after", f.last_after);
        k.summary("lateness", self.lateness);
        if let Some(lag) = self.follower_lag {
            k.num("follower_lag_p50_ms", lag.p50_ms);
            k.num("follower_lag_p99_ms", lag.p99_ms);
        }
        k.put("tick_points", self.tick_points);
        k.num("reactor_cpu_s", cpu.reactor_s);
        k.opt("reactor_us_per_point", self.reactor_us_per_point());
        k.num("process_cpu_s", cpu.process_s);
        k.opt(
            "process_us_per_point",
            us_per(cpu.process_s, self.tick_points),
        );
        k.num("tool_cpu_s", cpu.tool_s);
        k.num("other_cpu_s", cpu.other_s());
    }

    /// The stream checks.
    fn check_keys(&self, k: &mut Keys) {
        k.put("lost", self.lost);
        k.put("duplicated", self.dup);
        k.put("stale", self.stale);
        k.put("bad_seams", self.seam_bad);
        k.put("error_replies", self.error_replies);
    }

    /// The subscribe storm.
    fn storm_keys(&self, k: &mut Keys, s: &Storm) {
        let sf = TickFigures::of(&s.ticks);
        k.put("storm_complete", s.complete);
        k.num("storm_s", s.all_s);
        k.summary("storm", s.latency);
        k.put("storm_ticks", s.ticks.len());
        k.opt("storm_first_after_max_ms", sf.first_after.map(|x| x.max));
        k.opt("storm_last_after_max_ms", sf.last_after.map(|x| x.max));
        k.num("storm_reactor_cpu_s", s.cpu.reactor_s);
        k.num("storm_process_cpu_s", s.cpu.process_s);
        k.put("rss_storm_kib", s.memory.rss_kib);
        k.opt(
            "storm_per_conn_b",
            per_conn(self.mem_base, s.memory, self.connected),
        );
        k.put("hwm_kib", s.memory.hwm_kib);
    }

    /// With `--instances`: how many, and each one's keys (`i0_role`, `i1_role`, ...).
    fn instance_keys(&self, k: &mut Keys) {
        if self.instances.is_empty() {
            return;
        }
        k.put("instances", self.instances.len());
        k.put("unmapped", self.unmapped);
        for (i, r) in self.instances.iter().enumerate() {
            k.put(format!("i{i}_role"), &r.role);
            k.put(format!("i{i}_clients"), r.clients);
            k.num(format!("i{i}_reactor_cpu_s"), r.tick_cpu.reactor_s);
            k.opt(
                format!("i{i}_reactor_us_per_point"),
                us_per(r.tick_cpu.reactor_s, r.tick_points),
            );
            k.num(format!("i{i}_process_cpu_s"), r.tick_cpu.process_s);
            k.opt(format!("i{i}_spread_p99_ms"), r.ticks.spread.map(|s| s.p99));
            k.opt(
                format!("i{i}_first_after_p50_ms"),
                r.ticks.first_after.map(|s| s.p50),
            );
            k.opt(
                format!("i{i}_first_after_p99_ms"),
                r.ticks.first_after.map(|s| s.p99),
            );
            k.put(format!("i{i}_rss_sub_kib"), r.mem_sub.rss_kib);
        }
    }
}

/// The `RESULT` line's keys and values, in order; numbers with three decimals, an
/// absent figure as `na`.
#[derive(Default)]
pub struct Keys(Vec<(String, String)>);

impl Keys {
    /// Adds a key and its value.
    pub fn put(&mut self, key: impl Into<String>, value: impl ToString) {
        self.0.push((key.into(), value.to_string()));
    }

    fn num(&mut self, key: impl Into<String>, value: f64) {
        self.put(key, format!("{value:.3}"));
    }

    /// Adds a figure with three decimals, or `na` when there is none.
    pub fn opt(&mut self, key: impl Into<String>, value: Option<f64>) {
        match value {
            Some(v) => self.num(key, v),
            None => self.put(key, "na"),
        }
    }

    /// `{name}_p50_ms`, `{name}_p99_ms` and `{name}_max_ms`.
    fn summary(&mut self, name: &str, s: Option<Summary>) {
        self.opt(format!("{name}_p50_ms"), s.map(|s| s.p50));
        self.opt(format!("{name}_p99_ms"), s.map(|s| s.p99));
        self.opt(format!("{name}_max_ms"), s.map(|s| s.max));
    }

    /// Adds every key of `other`, each behind `prefix` (a second run's keys).
    pub fn append_prefixed(&mut self, prefix: &str, other: Keys) {
        for (k, v) in other.0 {
            self.0.push((format!("{prefix}{k}"), v));
        }
    }

    /// `RESULT key=value ...`.
    pub fn line(self) -> String {
        format!("RESULT {}", self.body())
    }

    /// The `key=value` pairs, space-separated, without `RESULT`.
    fn body(self) -> String {
        let body: Vec<String> = self
            .0
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        body.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_is_key_value_with_the_checked_keys() {
        let r = Report {
            mode: "quick".into(),
            clients: 2,
            connected: 2,
            mem_base: Memory {
                rss_kib: 1000,
                hwm_kib: 1000,
                anon_kib: 400,
            },
            mem_idle: Memory {
                rss_kib: 1002,
                hwm_kib: 1002,
                anon_kib: 402,
            },
            ticks: vec![TickRow {
                time: 5,
                clients: 2,
                spread_ms: 1.0,
                first_after_ms: 2.0,
                last_after_ms: 3.0,
            }],
            tick_points: 2,
            ..Report::default()
        };
        let line = r.result_line();
        assert!(line.starts_with("RESULT "));
        let kv: std::collections::HashMap<&str, &str> = line["RESULT ".len()..]
            .split(' ')
            .filter_map(|p| p.split_once('='))
            .collect();
        assert_eq!(kv["connected"], "2");
        assert_eq!(kv["lost"], "0");
        assert_eq!(kv["duplicated"], "0");
        assert_eq!(kv["idle_per_conn_b"], "1024.000");
        assert_eq!(kv["spread_max_ms"], "1.000");
        assert_eq!(kv["startup_ms"], "na");
        assert!(!kv.contains_key("storm_s"));
        assert!(
            r.human()
                .contains("connected 2 / failed 0 / dropped by server 0")
        );
    }

    #[test]
    fn a_run_beside_another_is_compared_on_every_clients_lateness() {
        let lateness = |p99: f64| {
            Some(Summary {
                n: 100,
                p50: p99 / 2.0,
                p99,
                max: p99 + 1.0,
            })
        };
        let base = Report {
            instances: vec![InstanceRow::default()],
            connected: 10,
            lateness: lateness(200.0),
            load_avg: Some(0.5),
            ..Report::default()
        };
        let run = Report {
            instances: vec![InstanceRow::default(), InstanceRow::default()],
            connected: 10,
            lateness: lateness(100.0),
            follower_lag: Some(HistogramBounds {
                p50_ms: 5.0,
                p99_ms: 20.0,
                max_ms: 30.0,
                count: 60.0,
            }),
            ..Report::default()
        };
        let line = run.result_line_beside(&base);
        let kv: std::collections::HashMap<&str, &str> = line["RESULT ".len()..]
            .split(' ')
            .filter_map(|p| p.split_once('='))
            .collect();
        assert_eq!(kv["instances"], "2");
        assert_eq!(kv["base_instances"], "1");
        assert_eq!(kv["lateness_p99_ms"], "100.000");
        assert_eq!(kv["base_lateness_p99_ms"], "200.000");
        assert_eq!(kv["lateness_p99_ratio"], "0.500");
        assert_eq!(kv["follower_lag_p99_ms"], "20.000");
        assert_eq!(line.matches("RESULT").count(), 1);
        let human = run.human_beside(&base);
        assert!(human.contains("=== with 1 instance(s) ==="), "{human}");
        assert!(human.contains("=== 2 instances beside 1"), "{human}");
        assert!(human.contains("every client after the second"), "{human}");
        assert!(human.contains("0.50"), "{human}");
    }
}
