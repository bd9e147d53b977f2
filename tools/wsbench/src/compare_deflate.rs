//! `--deflate`: the benchmark twice, each against fresh servers and with every phase the
//! same, clients offering no extension first, then clients that offer permessage-deflate;
//! both reports,
//! then what the compression changed: setup time (and the subscribe phase alone, since
//! connecting costs the same in both), history bytes on the wire, reactor CPU per
//! delivered point, server memory per connection.

use crate::benchmark;
use crate::error::BenchError;
use crate::options::Options;
use crate::report::{Keys, Report};
use std::fmt::Write;

/// The two runs of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The run whose clients offered nothing.
    pub plain: Report,
    /// The run whose clients offered permessage-deflate.
    pub deflate: Report,
}

/// Runs the benchmark `opts` describe with plain clients, then with compressing ones.
pub fn run(opts: &Options) -> Result<Comparison, BenchError> {
    let mut plain = opts.clone();
    plain.offer_deflate = false;
    let mut deflate = opts.clone();
    deflate.offer_deflate = true;
    Ok(Comparison {
        plain: benchmark::run(&plain, None)?,
        deflate: benchmark::run(&deflate, None)?,
    })
}

/// `after / before`, when both are known and `before` is not zero.
fn ratio(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    match (before, after) {
        (Some(b), Some(a)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn show(v: Option<f64>, decimals: usize, unit: &str) -> String {
    v.map_or("n/a".to_string(), |v| format!("{v:.decimals$}{unit}"))
}

/// A time ratio (deflate over plain) and how much faster or slower that is.
fn with_speed(r: Option<f64>) -> String {
    let speed = match r {
        Some(r) if r > 0.0 && r <= 1.0 => format!(" ({:.2}× faster)", 1.0 / r),
        Some(r) if r > 1.0 => format!(" ({r:.2}× slower)"),
        _ => String::new(),
    };
    format!("{}{speed}", show(r, 2, ""))
}

impl Comparison {
    /// The deflate run's setup time over the plain run's (below 1: compression is faster).
    pub fn setup_ratio(&self) -> Option<f64> {
        ratio(Some(self.plain.setup_s()), Some(self.deflate.setup_s()))
    }

    /// The deflate run's subscribe phase (every subscribe sent, every history received)
    /// over the plain run's: the setup without the connecting, which costs the same in
    /// both.
    pub fn subscribe_ratio(&self) -> Option<f64> {
        ratio(Some(self.plain.subscribe_s), Some(self.deflate.subscribe_s))
    }

    /// The deflate run's reactor CPU per delivered point over the plain run's.
    pub fn reactor_ratio(&self) -> Option<f64> {
        ratio(
            self.plain.reactor_us_per_point(),
            self.deflate.reactor_us_per_point(),
        )
    }

    /// The deflate run's history on the wire over its JSON.
    pub fn history_wire_share(&self) -> Option<f64> {
        ratio(self.deflate.history_json_b(), self.deflate.history_wire_b())
    }

    /// Both reports, then the comparison table.
    pub fn human(&self) -> String {
        let (p, d) = (&self.plain, &self.deflate);
        let mut o = p.human();
        o.push('\n');
        o.push_str(&d.human());
        let _ = writeln!(
            o,
            "\nclients offering permessage-deflate against clients offering none ({} each, two runs on fresh servers)",
            p.clients
        );
        let mut row = |what: &str, plain: String, deflate: String, change: String| {
            let line = format!("  {what:<40} {plain:>14} {deflate:>20}   {change}");
            let _ = writeln!(o, "{}", line.trim_end());
        };
        row(
            "",
            "no extension".into(),
            "permessage-deflate".into(),
            "deflate / none".into(),
        );
        row(
            "clients that agreed on the extension",
            format!("{} / {}", p.compressing, p.connected),
            format!("{} / {}", d.compressing, d.connected),
            String::new(),
        );
        let share = |r: &Report| ratio(r.history_json_b(), r.history_wire_b()).map(|s| s * 100.0);
        row(
            "history on the wire per subscribe",
            show(p.history_wire_b(), 0, " B"),
            show(d.history_wire_b(), 0, " B"),
            show(
                ratio(p.history_wire_b(), d.history_wire_b()).map(|r| r * 100.0),
                1,
                " %",
            ),
        );
        row(
            "  as a share of its JSON",
            show(share(p), 1, " %"),
            show(share(d), 1, " %"),
            String::new(),
        );
        row(
            "setup: connect + subscribe of all",
            format!("{:.3} s", p.setup_s()),
            format!("{:.3} s", d.setup_s()),
            with_speed(self.setup_ratio()),
        );
        row(
            "  connect + upgrade of all",
            format!("{:.3} s", p.connect_s),
            format!("{:.3} s", d.connect_s),
            show(ratio(Some(p.connect_s), Some(d.connect_s)), 2, ""),
        );
        row(
            "  subscribe -> history of all",
            format!("{:.3} s", p.subscribe_s),
            format!("{:.3} s", d.subscribe_s),
            with_speed(self.subscribe_ratio()),
        );
        let (pc, dc) = (p.subscribe_cpu, d.subscribe_cpu);
        for (what, plain, deflate) in [
            (
                "  reactor CPU while subscribing",
                pc.reactor_s,
                dc.reactor_s,
            ),
            ("  tool CPU while subscribing", pc.tool_s, dc.tool_s),
        ] {
            row(
                what,
                format!("{plain:.3} s"),
                format!("{deflate:.3} s"),
                show(ratio(Some(plain), Some(deflate)), 2, ""),
            );
        }
        row(
            "reactor CPU per delivered point",
            show(p.reactor_us_per_point(), 2, " µs"),
            show(d.reactor_us_per_point(), 2, " µs"),
            show(self.reactor_ratio(), 2, ""),
        );
        for (what, plain, deflate) in [
            (
                "server RSS per idle connection",
                p.idle_per_conn(),
                d.idle_per_conn(),
            ),
            (
                "server RSS per subscribed connection",
                p.sub_per_conn(),
                d.sub_per_conn(),
            ),
        ] {
            row(
                what,
                show(plain, 0, " B"),
                show(deflate, 0, " B"),
                show(ratio(plain, deflate), 2, ""),
            );
        }
        row(
            "load average (1 min), measured ticks",
            show(p.load_avg, 2, ""),
            show(d.load_avg, 2, ""),
            String::new(),
        );
        o
    }

    /// The plain run's keys, the deflate run's behind `deflate_`, and the ratios.
    pub fn result_line(&self) -> String {
        let mut k = self.plain.result_keys();
        k.append_prefixed("deflate_", self.deflate.result_keys());
        self.comparison_keys(&mut k);
        k.line()
    }

    fn comparison_keys(&self, k: &mut Keys) {
        k.opt("setup_ratio", self.setup_ratio());
        k.opt("subscribe_ratio", self.subscribe_ratio());
        k.opt("reactor_ratio", self.reactor_ratio());
        k.opt("history_wire_share", self.history_wire_share());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::Memory;
    use crate::report::TickRow;
    use std::collections::HashMap;

    fn report(extension: &str, setup_s: f64, wire_bytes: u64, reactor_s: f64) -> Report {
        Report {
            mode: "quick".into(),
            transport: "plain".into(),
            extension: extension.into(),
            clients: 4,
            connected: 4,
            compressing: if extension == "none" { 0 } else { 4 },
            connect_s: setup_s / 2.0,
            subscribe_s: setup_s / 2.0,
            histories: 4,
            history_wire_bytes: 4 * wire_bytes,
            history_json_bytes: 4 * 125_000,
            mem_base: Memory {
                rss_kib: 1000,
                hwm_kib: 1000,
                anon_kib: 100,
            },
            mem_idle: Memory {
                rss_kib: 1004,
                hwm_kib: 1004,
                anon_kib: 104,
            },
            ticks: vec![TickRow {
                time: 5,
                clients: 4,
                spread_ms: 1.0,
                first_after_ms: 1.0,
                last_after_ms: 2.0,
            }],
            tick_points: 4,
            tick_cpu: crate::report::CpuWindow {
                reactor_s,
                ..Default::default()
            },
            subscribe_cpu: crate::report::CpuWindow {
                reactor_s: 0.5,
                tool_s: setup_s,
                ..Default::default()
            },
            ..Report::default()
        }
    }

    fn keys(line: &str) -> HashMap<String, String> {
        line.strip_prefix("RESULT ")
            .unwrap()
            .split(' ')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn the_result_line_keeps_the_plain_keys_and_adds_the_deflate_run_and_ratios() {
        let c = Comparison {
            plain: report("none", 2.0, 125_004, 0.000_044),
            deflate: report("permessage-deflate", 1.0, 8_500, 0.000_040),
        };
        let line = c.result_line();
        let k = keys(&line);
        // Every key of the plain run's own line is there, unchanged.
        for (key, value) in keys(&c.plain.result_line()) {
            assert_eq!(k.get(&key), Some(&value), "{key}");
        }
        assert_eq!(k["extension"], "none");
        assert_eq!(k["deflate_extension"], "permessage-deflate");
        assert_eq!(k["history_wire_b"], "125004.000");
        assert_eq!(k["deflate_history_wire_b"], "8500.000");
        assert_eq!(k["compressing"], "0");
        assert_eq!(k["deflate_compressing"], "4");
        assert_eq!(k["setup_s"], "2.000");
        assert_eq!(k["deflate_setup_s"], "1.000");
        assert_eq!(k["setup_ratio"], "0.500");
        assert_eq!(k["subscribe_ratio"], "0.500");
        assert_eq!(k["reactor_ratio"], "0.909");
        assert_eq!(k["history_wire_share"], "0.068");
        assert_eq!(k["deflate_idle_per_conn_b"], "1024.000");
        assert_eq!(k["subscribe_tool_cpu_s"], "2.000");
        assert_eq!(k["deflate_subscribe_tool_cpu_s"], "1.000");
        // No key appears twice.
        assert_eq!(k.len(), line.split(' ').count() - 1);
        let human = c.human();
        assert!(human.contains("extension offered: none,"), "{human}");
        assert!(human.contains("extension offered: permessage-deflate,"));
        assert!(human.contains("0.50 (2.00× faster)"), "{human}");
        assert!(human.contains("6.8 %"), "{human}");
    }

    #[test]
    fn missing_figures_are_na_not_a_division_by_zero() {
        let mut c = Comparison {
            plain: report("none", 0.0, 0, 0.0),
            deflate: report("permessage-deflate", 1.0, 0, 0.0),
        };
        c.deflate.histories = 0;
        c.plain.tick_points = 0;
        let k = keys(&c.result_line());
        assert_eq!(k["setup_ratio"], "na");
        assert_eq!(k["subscribe_ratio"], "na");
        assert_eq!(k["reactor_ratio"], "na");
        assert_eq!(k["history_wire_share"], "na");
        assert_eq!(k["deflate_history_wire_b"], "na");
    }
}
