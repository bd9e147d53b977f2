//! The built-in feed: a mean-reverting random walk from realistic prices.
//!
//! It lets a fresh install stream data with no network and no account. Prices move by
//! a fraction of a pip per second and are rounded to the instrument's usual decimals.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Feed, FeedError, Fetched, Quote};
use crate::asset::{Asset, Point};

/// Relative standard deviation of one second's move (a 0.5 % daily volatility).
const STEP: f64 = 1.7e-5;
/// Pull back towards the starting price per second, so months of running stay realistic.
const REVERSION: f64 = 2e-5;

/// A random walk per asset, seeded for reproducible runs.
pub struct SimulatedFeed {
    state: Mutex<Walks>,
}

struct Walks {
    rng: fastrand::Rng,
    by_name: HashMap<String, Walk>,
}

struct Walk {
    start: f64,
    price: f64,
    scale: f64,
}

impl SimulatedFeed {
    /// A walk seeded with `seed`; the same seed gives the same prices.
    pub fn new(seed: u64) -> SimulatedFeed {
        SimulatedFeed {
            state: Mutex::new(Walks {
                rng: fastrand::Rng::with_seed(seed),
                by_name: HashMap::new(),
            }),
        }
    }

    /// Points for every asset at every second of `from..=to`, advancing the walk, so the
    /// live ticks that follow continue from the last of them.
    pub fn backfill(&self, assets: &[Asset], from: i64, to: i64) -> Vec<Point> {
        let mut walks = self.lock();
        let seconds = usize::try_from(to - from + 1).unwrap_or(0);
        let mut points = Vec::with_capacity(seconds * assets.len());
        for time in from..=to {
            for asset in assets {
                points.push(Point {
                    asset_id: asset.id,
                    time,
                    value: walks.step(&asset.name),
                });
            }
        }
        points
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Walks> {
        // The walk state is valid after any panic in another holder; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Feed for SimulatedFeed {
    fn describe(&self) -> String {
        "simulated".to_string()
    }

    fn fetch(&self, _time: i64, assets: &[Asset]) -> Result<Fetched, FeedError> {
        let mut walks = self.lock();
        let quotes = assets
            .iter()
            .map(|asset| Quote {
                asset_id: asset.id,
                value: walks.step(&asset.name),
            })
            .collect();
        Ok(Fetched {
            quotes,
            rejected: 0,
        })
    }
}

impl Walks {
    fn step(&mut self, name: &str) -> f64 {
        let rng = &mut self.rng;
        let walk = self
            .by_name
            .entry(name.to_string())
            .or_insert_with(|| Walk::starting(name));
        // Sum of four uniforms: close enough to a normal draw for a price simulation.
        let z = ((0..4).map(|_| rng.f64()).sum::<f64>() - 2.0) * 3f64.sqrt();
        walk.price += walk.price * STEP * z + (walk.start - walk.price) * REVERSION;
        let rounded = (walk.price * walk.scale).round() / walk.scale;
        if rounded > 0.0 {
            rounded
        } else {
            1.0 / walk.scale
        }
    }
}

impl Walk {
    fn starting(name: &str) -> Walk {
        let (price, decimals) = match name {
            "EURUSD" => (1.0850, 5),
            "USDJPY" => (149.50, 3),
            "GBPUSD" => (1.2700, 5),
            "AUDUSD" => (0.6550, 5),
            "USDCAD" => (1.3600, 5),
            _ => (1.0, 5),
        };
        Walk {
            start: price,
            price,
            scale: 10f64.powi(decimals),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asset::default_assets;

    #[test]
    fn same_seed_same_prices() {
        let assets = default_assets();
        let a = SimulatedFeed::new(7).fetch(0, &assets).unwrap();
        let b = SimulatedFeed::new(7).fetch(0, &assets).unwrap();
        let c = SimulatedFeed::new(8).fetch(0, &assets).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.quotes.len(), 5);
    }

    #[test]
    fn prices_stay_realistic_over_a_day() {
        let assets = default_assets();
        let feed = SimulatedFeed::new(1);
        let points = feed.backfill(&assets, 0, 86_399);
        assert_eq!(points.len(), 86_400 * 5);
        for p in points.iter().filter(|p| p.asset_id == 2) {
            assert!((130.0..170.0).contains(&p.value), "USDJPY {}", p.value);
        }
        for p in points.iter().filter(|p| p.asset_id == 1) {
            assert!((0.95..1.25).contains(&p.value), "EURUSD {}", p.value);
            assert_eq!((p.value * 1e5).round() / 1e5, p.value, "five decimals");
        }
    }

    #[test]
    fn live_ticks_continue_from_the_backfill() {
        let assets = default_assets();
        let feed = SimulatedFeed::new(3);
        let last = *feed.backfill(&assets, 0, 99).last().unwrap();
        let next = feed.fetch(100, &assets).unwrap().quotes[4];
        assert_eq!(last.asset_id, next.asset_id);
        assert!((next.value / last.value - 1.0).abs() < 0.001);
    }

    #[test]
    fn unknown_assets_get_a_walk_too() {
        let assets = [Asset {
            id: 9,
            name: "XAUUSD".into(),
        }];
        let got = SimulatedFeed::new(1).fetch(0, &assets).unwrap();
        assert_eq!(got.quotes[0].asset_id, 9);
        assert!(got.quotes[0].value > 0.0);
    }
}
