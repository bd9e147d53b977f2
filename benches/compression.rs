//! What permessage-deflate costs and saves on this service's messages, at levels 1 and 6:
//! a full 30-minute history (1,800 points), shorter histories (a resuming client's), and
//! the small messages (a point, the asset list); and the reactor's share of a core when
//! 50 assets each get one history compressed per second (the most the market builds).
//!
//! `cargo bench --bench compression`. Prints figures; asserts nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::json;
use ws_assets::deflate::Compressor;

/// A history message of `points` points as the service encodes it, prices walking from
/// 1.0950 like the simulated feed's.
fn history(points: usize) -> Vec<u8> {
    let mut value: f64 = 1.095;
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let points: Vec<_> = (0..points)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            value += ((seed % 2001) as f64 - 1000.0) * 1e-8;
            json!({"assetName": "EURUSD", "time": 1_700_000_000 + i, "assetId": 1,
                   "value": (value * 1e6).round() / 1e6})
        })
        .collect();
    serde_json::to_vec(&json!({"action": "asset_history", "message": {"points": points}}))
        .unwrap_or_default()
}

/// Median time of compressing `payload` at `level`, and the compressed frame's size.
fn measure(payload: &[u8], level: u32) -> (Duration, usize) {
    let mut compressor = Compressor::new(level);
    let runs = (2_000_000 / payload.len().max(1)).clamp(20, 2000);
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            black_box(compressor.text_frame(black_box(payload)));
            started.elapsed()
        })
        .collect();
    times.sort();
    (times[times.len() / 2], compressor.text_frame(payload).len())
}

fn main() {
    let messages: Vec<(&str, Vec<u8>)> = vec![
        ("point", br#"{"action":"point","message":{"assetName":"EURUSD","time":1700000000,"assetId":1,"value":1.095123}}"#.to_vec()),
        ("assets reply", br#"{"action":"assets","message":{"assets":[{"id":1,"name":"EURUSD"},{"id":2,"name":"USDJPY"},{"id":3,"name":"GBPUSD"},{"id":4,"name":"AUDUSD"},{"id":5,"name":"USDCAD"}]}}"#.to_vec()),
        ("history, 5 points", history(5)),
        ("history, 10 points", history(10)),
        ("history, 60 points", history(60)),
        ("history, 300 points", history(300)),
        ("history, 1800 points", history(1800)),
    ];
    println!(
        "{:<22} {:>9} {:>26} {:>26}",
        "message", "JSON B", "level 1: frame B (%) / µs", "level 6: frame B (%) / µs"
    );
    for (name, payload) in &messages {
        let mut row = format!("{name:<22} {:>9}", payload.len());
        for level in [1, 6] {
            let (time, size) = measure(payload, level);
            let share = size as f64 * 100.0 / payload.len() as f64;
            let cell = format!("{size} ({share:.1} %) / {:.1}", time.as_secs_f64() * 1e6);
            row += &format!(" {cell:>26}");
        }
        println!("{row}");
    }
    let full = history(1800);
    for level in [1, 6] {
        let (time, _) = measure(&full, level);
        let per_second = time * 50;
        println!(
            "50 assets, one full history each per second, level {level}: {:.1} ms of every second = {:.1} % of a core",
            per_second.as_secs_f64() * 1e3,
            per_second.as_secs_f64() * 100.0
        );
    }
}
