//! Runs the `wsbench` load tool against the real server with a small load and checks the
//! tool itself: it completes, prints a parsable RESULT line, every client connects, and
//! every client's stream is complete and without repeats; the same with two instances on
//! one port and the test PostgreSQL (`WS_ASSETS_TEST_POSTGRESQL_DSN`, as the cluster
//! tests) and the clients split over two processes; a soak of a few seconds; and a
//! `--deflate` comparison of plain and compressing clients. No timing is asserted.
//!
//! The tool is this package's binary (`CARGO_BIN_EXE_wsbench`); the server is the
//! service's binary of the same build, beside the test executable's directory
//! (`target/debug/ws_assets`): `cargo nextest run --workspace` (what `.ci/test` runs)
//! builds both.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

/// The load tool's executable.
fn wsbench() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wsbench"))
}

/// The service's executable of this build: target/PROFILE/ws_assets, two levels above
/// this test's own executable (target/PROFILE/deps/against_server-HASH).
fn server() -> String {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("ws_assets"))
        .expect("the test runs from target/PROFILE/deps");
    assert!(
        path.exists(),
        "{} is missing: build the service first (cargo build, or cargo nextest run --workspace)",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

fn result_line(stdout: &str) -> HashMap<String, String> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{stdout}"));
    line["RESULT ".len()..]
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("not key=value: {kv:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Runs the tool with `args` against the server cargo built, expecting success; its
/// stdout and RESULT line.
fn run_ok(args: &[&str]) -> (String, HashMap<String, String>) {
    let out = Command::new(wsbench())
        .args(args)
        .args(["--server", &server()])
        .output()
        .expect("wsbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "wsbench {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let r = result_line(&stdout);
    (stdout, r)
}

/// The test PostgreSQL's admin DSN, where `--instances` makes its database.
fn admin_dsn() -> String {
    std::env::var("WS_ASSETS_TEST_POSTGRESQL_DSN")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "postgresql://postgres@127.0.0.1:5432/postgres".to_string())
}

fn number(r: &HashMap<String, String>, k: &str) -> f64 {
    r.get(k)
        .unwrap_or_else(|| panic!("RESULT has no {k}: {r:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{k} is not a number: {r:?}"))
}

#[test]
fn wsbench_quick_run_against_the_server() {
    let out = Command::new(wsbench())
        .args([
            "--clients",
            "50",
            "--ticks",
            "3",
            "--src-ips",
            "2",
            "--mode",
            "quick",
        ])
        .args(["--server", &server()])
        .output()
        .expect("wsbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "wsbench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let r = result_line(&stdout);
    let num = |k: &str| -> f64 {
        r.get(k)
            .unwrap_or_else(|| panic!("RESULT has no {k}: {r:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("{k} is not a number: {r:?}"))
    };
    assert_eq!(r["mode"], "quick");
    assert_eq!(num("connected"), 50.0, "{stdout}");
    assert_eq!(num("failed"), 0.0, "{stdout}");
    assert_eq!(num("lost"), 0.0, "{stdout}");
    assert_eq!(num("duplicated"), 0.0, "{stdout}");
    assert_eq!(num("stale"), 0.0, "{stdout}");
    assert_eq!(num("ticks"), 3.0, "{stdout}");
    // Three measured ticks reached every client: 3 points for each of the 50.
    assert_eq!(num("tick_points"), 150.0, "{stdout}");
    // The server's full backfilled history (1800 s) was received by every subscriber.
    assert_eq!(num("history_min"), 1800.0, "{stdout}");
    assert!(num("rss_sub_kib") > 0.0, "{stdout}");
    assert!(
        !r.contains_key("storm_s"),
        "quick mode runs no storm: {stdout}"
    );
}

/// Two instances on one port and a throwaway database (the test PostgreSQL, as the
/// cluster tests use), the clients driven by two processes as a load beyond one
/// process's open files would be.
#[test]
fn wsbench_two_instances_and_two_client_processes() {
    let admin = admin_dsn();
    let (stdout, r) = run_ok(&[
        "--clients",
        "40",
        "--ticks",
        "3",
        "--src-ips",
        "2",
        "--mode",
        "quick",
        "--instances",
        "2",
        "--client-procs",
        "2",
        "--dsn",
        &admin,
    ]);
    assert_eq!(number(&r, "connected"), 40.0, "{stdout}");
    assert_eq!(number(&r, "failed"), 0.0, "{stdout}");
    assert_eq!(number(&r, "lost"), 0.0, "{stdout}");
    assert_eq!(number(&r, "duplicated"), 0.0, "{stdout}");
    assert_eq!(number(&r, "client_procs"), 2.0, "{stdout}");
    assert_eq!(number(&r, "instances"), 2.0, "{stdout}");
    assert_eq!(number(&r, "unmapped"), 0.0, "{stdout}");
    assert_eq!(number(&r, "tick_points"), 120.0, "{stdout}");
    assert_eq!(number(&r, "history_min"), 1800.0, "{stdout}");
    assert_eq!(r["i0_role"], "leader", "{stdout}");
    assert_eq!(r["i1_role"], "follower", "{stdout}");
    let (a, b) = (number(&r, "i0_clients"), number(&r, "i1_clients"));
    assert_eq!(a + b, 40.0, "{stdout}");
    assert!(
        a > 0.0 && b > 0.0,
        "the kernel gave one instance every client: {stdout}"
    );
    assert!(stdout.contains("driven by 2 processes"), "{stdout}");
}

#[test]
fn wsbench_two_instances_beside_one() {
    let admin = admin_dsn();
    let (stdout, r) = run_ok(&[
        "--clients",
        "40",
        "--ticks",
        "3",
        "--mode",
        "quick",
        "--instances",
        "2",
        "--beside",
        "1",
        "--dsn",
        &admin,
    ]);
    assert_eq!(number(&r, "base_instances"), 1.0, "{stdout}");
    assert_eq!(number(&r, "instances"), 2.0, "{stdout}");
    for clean in ["lost", "duplicated", "base_lost", "base_duplicated"] {
        assert_eq!(number(&r, clean), 0.0, "{clean}: {stdout}");
    }
    assert_eq!(r["i0_role"], "leader", "{stdout}");
    assert_eq!(r["i1_role"], "follower", "{stdout}");
    // Every client's lateness in both runs, their ratio, and the follower's own lag.
    for figure in [
        "lateness_p99_ms",
        "base_lateness_p99_ms",
        "lateness_p99_ratio",
        "follower_lag_p50_ms",
        "follower_lag_p99_ms",
    ] {
        assert!(number(&r, figure) > 0.0, "{figure}: {stdout}");
    }
    assert!(stdout.contains("=== 2 instances beside 1"), "{stdout}");
}

/// A soak of a few seconds: churn happens, no steady client loses a point, and the
/// server's open files come back to their baseline.
#[test]
fn wsbench_short_soak() {
    let (stdout, r) = run_ok(&[
        "--clients",
        "30",
        "--src-ips",
        "2",
        "--soak",
        "4s",
        "--sample-every",
        "2s",
        "--churn",
        "5",
        "--slow",
        "1",
        "--ping-flood",
        "1",
    ]);
    assert_eq!(r["mode"], "soak");
    assert_eq!(number(&r, "samples"), 2.0, "{stdout}");
    assert_eq!(number(&r, "lost"), 0.0, "{stdout}");
    assert_eq!(number(&r, "duplicated"), 0.0, "{stdout}");
    assert_eq!(number(&r, "stale"), 0.0, "{stdout}");
    assert_eq!(number(&r, "bad_seams"), 0.0, "{stdout}");
    assert_eq!(number(&r, "steady_drops"), 0.0, "{stdout}");
    assert!(
        number(&r, "reconnects") + number(&r, "resubscribes") >= 10.0,
        "{stdout}"
    );
    assert!(
        number(&r, "fds_after") <= number(&r, "fds_base"),
        "open files not back to the baseline: {stdout}"
    );
    assert!(number(&r, "rss_base_kib") > 0.0, "{stdout}");
}

/// `--deflate`: two runs on fresh servers, plain clients then compressing ones, both
/// complete and clean, and the compressing clients' histories far smaller on the wire.
#[test]
fn wsbench_deflate_compares_plain_and_compressing_clients() {
    let (stdout, r) = run_ok(&[
        "--clients",
        "50",
        "--ticks",
        "3",
        "--src-ips",
        "2",
        "--mode",
        "quick",
        "--deflate",
    ]);
    for run in ["", "deflate_"] {
        let n = |k: &str| number(&r, &format!("{run}{k}"));
        assert_eq!(n("connected"), 50.0, "{run}: {stdout}");
        assert_eq!(n("failed") + n("dropped"), 0.0, "{run}: {stdout}");
        assert_eq!(
            n("lost") + n("duplicated") + n("stale"),
            0.0,
            "{run}: {stdout}"
        );
        assert_eq!(n("bad_seams"), 0.0, "{run}: {stdout}");
        assert_eq!(n("tick_points"), 150.0, "{run}: {stdout}");
        assert_eq!(n("history_min"), 1800.0, "{run}: {stdout}");
        assert_eq!(n("histories"), 50.0, "{run}: {stdout}");
        assert!(n("setup_s") > 0.0, "{run}: {stdout}");
    }
    assert_eq!(
        (r["extension"].as_str(), r["deflate_extension"].as_str()),
        ("none", "permessage-deflate")
    );
    // Every compressing client agreed on the extension and got its history compressed;
    // the plain ones got nothing compressed.
    assert_eq!(number(&r, "compressing"), 0.0, "{stdout}");
    assert_eq!(number(&r, "compressed_msgs"), 0.0, "{stdout}");
    assert_eq!(number(&r, "deflate_compressing"), 50.0, "{stdout}");
    assert_eq!(number(&r, "deflate_compressed_msgs"), 50.0, "{stdout}");
    // The same history, a fraction of it on the wire (the target is 12 %).
    let (plain, deflate) = (
        number(&r, "history_wire_b"),
        number(&r, "deflate_history_wire_b"),
    );
    assert!(
        deflate < 0.2 * plain,
        "{deflate} B against {plain} B: {stdout}"
    );
    let (json, deflate_json) = (
        number(&r, "history_json_b"),
        number(&r, "deflate_history_json_b"),
    );
    assert!(
        (json - deflate_json).abs() < 0.1 * json && plain >= json,
        "{stdout}"
    );
    assert!(number(&r, "history_wire_share") < 0.2, "{stdout}");
    assert!(number(&r, "setup_ratio") > 0.0, "{stdout}");
    assert!(number(&r, "subscribe_ratio") > 0.0, "{stdout}");
    // Every subscriber of an asset in a second gets the same history: the tool reads it
    // once and the others take its verdict, in both runs.
    assert!(number(&r, "reused_verdicts") > 0.0, "{stdout}");
    assert!(number(&r, "deflate_reused_verdicts") > 0.0, "{stdout}");
    assert!(
        stdout.contains("clients offering permessage-deflate against clients offering none"),
        "{stdout}"
    );
}

#[test]
fn wsbench_reports_a_missing_server_binary() {
    let out = Command::new(wsbench())
        .args(["--clients", "1", "--server", "/nonexistent/ws_assets"])
        .output()
        .expect("wsbench runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot start /nonexistent/ws_assets"),
        "{stderr}"
    );
}

#[test]
fn wsbench_rejects_bad_flags() {
    let out = Command::new(wsbench())
        .args(["--clients", "many"])
        .output()
        .expect("wsbench runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--clients"));
}

#[test]
fn wsbench_tls_runs_plain_then_tls_and_compares() {
    // Two client processes: the second learns the test root from its arguments.
    let (stdout, plain) = run_ok(&[
        "--tls",
        "--clients",
        "30",
        "--ticks",
        "2",
        "--src-ips",
        "2",
        "--mode",
        "quick",
        "--client-procs",
        "2",
    ]);
    let tls_line = stdout
        .lines()
        .filter(|l| l.starts_with("RESULT "))
        .nth(1)
        .unwrap_or_else(|| panic!("no second RESULT line in:\n{stdout}"));
    let tls = result_line(tls_line);
    assert_eq!(plain["transport"], "plain", "{stdout}");
    assert_eq!(tls["transport"], "tls", "{stdout}");
    for r in [&plain, &tls] {
        assert_eq!(number(r, "connected"), 30.0, "{stdout}");
        assert_eq!(number(r, "lost") + number(r, "duplicated"), 0.0, "{stdout}");
        assert!(number(r, "tick_points") >= 60.0, "{stdout}");
    }
    assert!(number(&tls, "cpu_per_point_ratio") > 0.0, "{stdout}");
    assert!(stdout.contains("plain vs TLS"), "{stdout}");
    assert!(
        stdout.contains("TLS handshakes per core-second"),
        "{stdout}"
    );
}
