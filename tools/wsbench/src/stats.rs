//! Percentile summaries of samples, printed the same way everywhere in the report.

/// p50 / p99 / max of a set of samples (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

impl Summary {
    /// Summarises `samples` (any order); `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let r = (p / 100.0 * v.len() as f64).ceil() as usize;
            v[r.clamp(1, v.len()) - 1]
        };
        Some(Summary {
            n: v.len(),
            p50: rank(50.0),
            p99: rank(99.0),
            max: v[v.len() - 1],
        })
    }

    /// Summarises samples taken in microseconds, in milliseconds.
    pub fn of_micros_as_ms(us: &[u32]) -> Option<Summary> {
        Summary::of(
            &us.iter()
                .map(|&v| f64::from(v) / 1000.0)
                .collect::<Vec<_>>(),
        )
    }
}

/// "p50 / p99 / max" with the given decimals and unit, or "n/a".
pub fn show(s: Option<Summary>, decimals: usize, unit: &str) -> String {
    match s {
        Some(s) => format!(
            "{:.d$} / {:.d$} / {:.d$} {unit}",
            s.p50,
            s.p99,
            s.max,
            d = decimals
        ),
        None => "n/a".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = Summary::of(&v).unwrap();
        assert_eq!((s.n, s.p50, s.p99, s.max), (100, 50.0, 99.0, 100.0));
        let s = Summary::of(&[3.0]).unwrap();
        assert_eq!((s.p50, s.p99, s.max), (3.0, 3.0, 3.0));
        let s = Summary::of(&[1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.p50, s.p99, s.max), (2.0, 10.0, 10.0));
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn shows_na_for_no_samples() {
        assert_eq!(show(None, 1, "ms"), "n/a");
        assert_eq!(
            show(Summary::of(&[1.0, 2.0]), 1, "ms"),
            "1.0 / 2.0 / 2.0 ms"
        );
    }
}
