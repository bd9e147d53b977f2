//! `--tls`: the benchmark run twice in one invocation, plain and then with the server
//! speaking TLS, one after the other on the same machine, and the TLS figures set
//! against the plain ones: CPU per delivered point, memory per connection, the time to
//! set every client up, and what a handshake costs the reactor.

use crate::benchmark;
use crate::error::BenchError;
use crate::options::Options;
use crate::report::Report;
use crate::stats::show;
use crate::tls::ServerTls;
use std::fmt::Write;

/// Runs both, and returns the report (both runs' reports and the comparison) and the
/// RESULT lines (one per run; the TLS one with the ratios).
pub fn plain_and_tls(opts: &Options) -> Result<(String, String), BenchError> {
    let plain = benchmark::run(opts, None)?;
    let tls = ServerTls::make().map_err(BenchError::Tls)?;
    let secure = benchmark::run(opts, Some(&tls))?;
    let mut human = plain.human();
    human.push('\n');
    human.push_str(&secure.human());
    human.push('\n');
    human.push_str(&table(&plain, &secure));
    let result = format!(
        "{}\n{}{}",
        plain.result_line(),
        secure.result_line(),
        ratio_keys(&plain, &secure)
    );
    Ok((human, result))
}

/// TLS over plain, when both are known.
fn ratio(plain: Option<f64>, tls: Option<f64>) -> Option<f64> {
    match (plain, tls) {
        (Some(p), Some(t)) if p > 0.0 => Some(t / p),
        _ => None,
    }
}

/// The reactor CPU a TLS handshake adds to setting a connection up, µs: the TLS run's
/// cost per connection minus the plain run's (accept and upgrade are in both).
fn handshake_us(plain: &Report, tls: &Report) -> Option<f64> {
    let d = tls.connect_us_per_conn()? - plain.connect_us_per_conn()?;
    (d > 0.0).then_some(d)
}

fn ratio_keys(plain: &Report, tls: &Report) -> String {
    let mut keys = String::new();
    let mut put = |k: &str, v: Option<f64>| {
        let _ = write!(
            keys,
            " {k}={}",
            v.map_or("na".into(), |v| format!("{v:.3}"))
        );
    };
    put(
        "cpu_per_point_ratio",
        ratio(plain.reactor_us_per_point(), tls.reactor_us_per_point()),
    );
    put("handshake_us", handshake_us(plain, tls));
    put(
        "handshakes_per_core_s",
        handshake_us(plain, tls).map(|us| 1e6 / us),
    );
    keys
}

fn bytes(b: Option<f64>) -> String {
    b.map_or("n/a".into(), |b| format!("{b:.0} B"))
}

fn micros(us: Option<f64>) -> String {
    us.map_or("n/a".into(), |us| format!("{us:.1} µs"))
}

fn times(r: Option<f64>) -> String {
    r.map_or(String::new(), |r| format!("{r:.2}×"))
}

/// The comparison, one row per figure the issue names.
fn table(plain: &Report, tls: &Report) -> String {
    let mut o = String::new();
    let load = |r: &Report| r.load_avg.map_or("n/a".into(), |l| format!("{l:.2}"));
    let _ = writeln!(
        o,
        "plain vs TLS ({} clients each, one run after the other; 1-minute load average at the measured ticks {} / {})",
        plain.clients,
        load(plain),
        load(tls)
    );
    let _ = writeln!(
        o,
        "  {:<44} {:>18} {:>18} {:>9}",
        "", "plain", "TLS", "TLS/plain"
    );
    let mut row = |what: &str, p: String, t: String, r: String| {
        let _ = writeln!(o, "  {what:<44} {p:>18} {t:>18} {r:>9}");
    };
    let outcome = |r: &Report| format!("{} / {} / {}", r.connected, r.failed, r.dropped);
    row(
        "connected / failed / dropped",
        outcome(plain),
        outcome(tls),
        String::new(),
    );
    let findings = |r: &Report| format!("{} / {}", r.lost, r.dup);
    row(
        "points lost / duplicated",
        findings(plain),
        findings(tls),
        String::new(),
    );
    row(
        "server RSS per idle connection",
        bytes(plain.idle_per_conn()),
        bytes(tls.idle_per_conn()),
        times(ratio(plain.idle_per_conn(), tls.idle_per_conn())),
    );
    row(
        "server RSS per subscribed connection",
        bytes(plain.sub_per_conn()),
        bytes(tls.sub_per_conn()),
        times(ratio(plain.sub_per_conn(), tls.sub_per_conn())),
    );
    let setup = |r: &Report| r.connect_s + r.subscribe_s;
    row(
        "setup of all clients (connect + subscribe)",
        format!("{:.2} s", setup(plain)),
        format!("{:.2} s", setup(tls)),
        times(ratio(Some(setup(plain)), Some(setup(tls)))),
    );
    row(
        "reactor CPU per connection set up",
        micros(plain.connect_us_per_conn()),
        micros(tls.connect_us_per_conn()),
        times(ratio(
            plain.connect_us_per_conn(),
            tls.connect_us_per_conn(),
        )),
    );
    let handshake = handshake_us(plain, tls);
    row(
        "  of which the TLS handshake",
        String::new(),
        micros(handshake),
        String::new(),
    );
    row(
        "  TLS handshakes per core-second",
        String::new(),
        handshake.map_or("n/a".into(), |us| format!("{:.0}", 1e6 / us)),
        String::new(),
    );
    row(
        "reactor CPU per delivered point",
        micros(plain.reactor_us_per_point()),
        micros(tls.reactor_us_per_point()),
        times(ratio(
            plain.reactor_us_per_point(),
            tls.reactor_us_per_point(),
        )),
    );
    let spread = |r: &Report| {
        crate::report::TickFigures::of(&r.ticks)
            .spread
            .map_or("n/a".into(), |s| format!("{:.1} / {:.1} ms", s.p50, s.p99))
    };
    row(
        "fan-out spread p50 / p99",
        spread(plain),
        spread(tls),
        String::new(),
    );
    let storm = |r: &Report| {
        r.storm
            .as_ref()
            .map_or("n/a".into(), |s| format!("{:.2} s", s.all_s))
    };
    row(
        "storm: all histories served",
        storm(plain),
        storm(tls),
        String::new(),
    );
    let sub = |r: &Report| show(r.sub_latency, 1, "ms");
    let _ = writeln!(
        o,
        "  subscribe -> history p50/p99/max: plain {}, TLS {}",
        sub(plain),
        sub(tls)
    );
    o
}
