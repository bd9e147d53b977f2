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
//! cargo wsbench --clients 10000 --deflate         # plain clients, then compressing ones
//! cargo wsbench --tls --clients 10000             # plain, then TLS, compared
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
//! `soak.rs`), `--tls` and `--deflate` (below).
//!
//! With `--tls` the benchmark runs twice in one invocation, plain and then with the
//! server speaking TLS on a certificate the tool makes with `openssl` (`tls.rs`) and the
//! clients connecting over rustls (`wire.rs`; the start-up probe and `/metrics` too),
//! and `compare_tls.rs` prints both reports, a table of TLS against plain (CPU per point,
//! memory per connection, setup time, the handshake's reactor CPU and how many a core
//! does per second) and a RESULT line per run (`transport=plain|tls`, the TLS one
//! ending with `cpu_per_point_ratio`, `handshake_us`, `handshakes_per_core_s`).
//!
//! With `--deflate` the benchmark runs twice, each time against fresh servers and with
//! every phase the same: first with clients that offer no extension, then with clients
//! that offer permessage-deflate (RFC 7692) as browsers do and inflate what comes
//! compressed (the histories), checking every stream as usual. It prints both reports
//! and a comparison: setup time (connect and subscribe of all clients) and its ratio, a
//! history's bytes on the wire per subscribe against its JSON, the CPU of the subscribe
//! phase, reactor CPU per delivered point, and server RSS per idle and per subscribed
//! connection (see `compare_deflate.rs`). One comparison at a time: not with `--tls`.
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
//! Output: the report, then one line `RESULT key=value ...` (keys: transport,
//! extension, connected, compressing, failed, dropped, lost, duplicated, setup_s,
//! subscribe_reactor_cpu_s, subscribe_tool_cpu_s, sub_p50_ms, history_wire_b,
//! history_json_b, spread_p99_ms, reactor_us_per_point, idle_per_conn_b, storm_s, load1,
//! client_procs, with `--instances` also instances and per instance i0_role, i0_clients,
//! i0_reactor_us_per_point, i0_spread_p99_ms, ...; with `--deflate` one line: the first
//! run's keys, the compressing run's behind `deflate_` (deflate_setup_s,
//! deflate_history_wire_b, ...), and setup_ratio, subscribe_ratio (the subscribe phase
//! alone), reactor_ratio (the compressing run's over the first's) and history_wire_share (its history on the wire over its JSON); a
//! soak has its own keys). Exit status 0 when the run completed (findings such as lost
//! points are reported, not fatal), 1 on a usage error, 2 when it could not run.
//!
//! The tool shares the machine with the server: on loopback its own reads add to the
//! measured spread, and its CPU is printed so that can be judged.
//!
//! # Where things are
//!
//! `main.rs` only dispatches: `benchmark.rs` is the default mode, phase by phase,
//! `compare_tls.rs` and `compare_deflate.rs` run it twice for `--tls` and `--deflate`,
//! and `soak.rs` is the soak (its report in `soak_report.rs`); they fill a report
//! (`report.rs`). The clients are driven by one `mio` loop per process (`driver.rs`),
//! over several processes when needed (`fleet.rs`), each connection the socket or TLS
//! over it (`wire.rs`). A client's upgrade is written and its answer checked in
//! `handshake.rs`; a client's frames are read in one place, `Client::receive` in
//! `client.rs`, with headers parsed by tungstenite's `FrameHeader` in `frame.rs` and
//! payloads scanned where they lie by `scan.rs` (compressed ones inflated first by the
//! process's one inflater, `inflate.rs`; a long payload seen before, byte for byte, takes
//! the verdict remembered for it, `verify.rs` and `repeats.rs`); the stream checks are
//! `check.rs`. A new way of
//! connecting leaves the phases alone: it is a field of `Setup` (`driver.rs`) that the
//! client processes are handed too; TLS wraps the socket where it is opened (`net.rs`,
//! `wire.rs`) and read (`State::read` in `driver.rs`); an extension is asked for and
//! accepted in `handshake.rs`, and its frames unpacked in `Client::receive`.
//!
//! # Tests
//!
//! Each module's unit tests sit beside it (`cargo test -p wsbench`);
//! tests/against_server.rs runs the built tool against the real server.

mod benchmark;
mod check;
mod client;
mod compare_deflate;
mod compare_tls;
mod cpu;
mod driver;
mod error;
mod fleet;
mod frame;
mod handshake;
mod inflate;
mod instances;
mod net;
mod options;
mod pgdb;
mod probe;
mod procfs;
mod repeats;
mod report;
mod scan;
mod server;
mod soak;
mod soak_report;
mod stats;
mod tally;
mod tls;
mod verify;
mod wire;

use error::BenchError;
use options::{Options, OptionsError};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(fleet::CHILD_FLAG) {
        return fleet::child_main(&args[1..]);
    }
    let opts = match Options::parse(args, server_beside_this_tool()) {
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
        None if opts.tls => compare_tls::plain_and_tls(&opts),
        None if opts.deflate => compare_deflate::run(&opts).map(|c| (c.human(), c.result_line())),
        None => match opts.beside {
            Some(n) => benchmark::run_beside(&opts, n)
                .map(|(base, run)| (run.human_beside(&base), run.result_line_beside(&base))),
            None => benchmark::run(&opts, None).map(|r| (r.human(), r.result_line())),
        },
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

/// The service binary cargo puts beside this tool's executable (`target/release/ws_assets`
/// for `cargo wsbench`), or its bare name when the tool's own path is unknown.
fn server_beside_this_tool() -> PathBuf {
    let name = "ws_assets";
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}
