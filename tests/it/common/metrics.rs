//! `/metrics` read as Prometheus text.

use std::collections::HashMap;
use std::ops::Index;

/// One `/metrics` answer: every sample's value by its series, the name with its labels
/// exactly as rendered (e.g. `ws_assets_ticks_total{outcome="ok"}`).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    samples: HashMap<String, f64>,
}

impl Metrics {
    /// Parses Prometheus text, failing the test unless every line is `# HELP`, `# TYPE`
    /// or `name{labels} value`; every sample belongs to a family declared with both
    /// comments, named `ws_assets_*`; and every counter's name ends in `_total`.
    pub fn parse(text: &str) -> Metrics {
        let mut helped = Vec::new();
        let mut typed = Vec::new();
        let mut samples = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.push(rest.split(' ').next().unwrap_or_default().to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let name = parts.next().unwrap_or_default().to_string();
                let kind = parts.next().unwrap_or_default();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                if kind == "counter" {
                    assert!(
                        name.ends_with("_total"),
                        "counter {name} must end in _total"
                    );
                }
                typed.push(name);
            } else {
                assert!(!line.starts_with('#'), "unknown comment {line}");
                let (series, value) = line
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
                let value: f64 = value
                    .parse()
                    .unwrap_or_else(|_| panic!("no value in {line:?}"));
                let name = series.split('{').next().unwrap_or_default();
                assert!(name.starts_with("ws_assets_"), "{name}");
                if let Some(labels) = series.strip_prefix(name)
                    && !labels.is_empty()
                {
                    assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                }
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        name.strip_suffix(s)
                            .filter(|f| typed.iter().any(|t| t == f))
                    })
                    .unwrap_or(name);
                assert!(typed.iter().any(|t| t == family), "no # TYPE for {line}");
                assert!(helped.iter().any(|h| h == family), "no # HELP for {line}");
                samples.insert(series.to_string(), value);
            }
        }
        Metrics { samples }
    }

    /// The value of `series`, if the answer has it.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    /// The value of `series`; its absence fails the test.
    pub fn value(&self, series: &str) -> f64 {
        match self.get(series) {
            Some(v) => v,
            None => {
                let mut known: Vec<&String> = self.samples.keys().collect();
                known.sort();
                panic!("no {series} in /metrics; it has {known:#?}")
            }
        }
    }

    /// Ticks that recorded no point: the sum of `ws_assets_ticks_total` over every
    /// outcome but `ok`.
    pub fn ticks_without_point(&self) -> u64 {
        let sum: f64 = self
            .samples
            .iter()
            .filter(|(series, _)| {
                series.starts_with("ws_assets_ticks_total{")
                    && series.as_str() != "ws_assets_ticks_total{outcome=\"ok\"}"
            })
            .map(|(_, value)| value)
            .sum();
        sum as u64
    }

    /// How much `series` grew since `before` (a series absent before counts from 0).
    pub fn moved_since(&self, before: &Metrics, series: &str) -> f64 {
        self.value(series) - before.get(series).unwrap_or(0.0)
    }
}

impl Index<&str> for Metrics {
    type Output = f64;

    /// The value of `series`; its absence fails the test.
    fn index(&self, series: &str) -> &f64 {
        if !self.samples.contains_key(series) {
            self.value(series);
        }
        &self.samples[series]
    }
}
