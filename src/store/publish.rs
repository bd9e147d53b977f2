//! Points published through PostgreSQL: the channel, and the text of a notification
//! that the leader publishes with each write and followers read back.
//!
//! One payload holds points of one second: `<time> <asset id>:<value> ...`, values in
//! Rust's shortest round-trip form so a follower serves the very `f64` the leader
//! stored. PostgreSQL refuses payloads of 8,000 bytes or more, so a second with many
//! assets is split over several payloads.

use std::fmt::Write as _;

use crate::asset::Point;

/// The `LISTEN`/`NOTIFY` channel of new points.
pub const CHANNEL: &str = "ws_assets_points";

/// Largest payload written, safely under PostgreSQL's 8,000-byte limit.
pub const MAX_PAYLOAD_BYTES: usize = 7_900;

/// Payloads for `points`, one or more per second, in the order of the seconds.
pub fn encode(points: &[Point]) -> Vec<String> {
    let mut sorted: Vec<&Point> = points.iter().collect();
    sorted.sort_by_key(|p| (p.time, p.asset_id));
    let mut payloads = Vec::new();
    let mut current = String::new();
    let mut current_time = None;
    for point in sorted {
        let mut entry = String::new();
        let _ = write!(entry, " {}:{}", point.asset_id, point.value);
        let same_second = current_time == Some(point.time);
        if !same_second || current.len() + entry.len() > MAX_PAYLOAD_BYTES {
            if !current.is_empty() {
                payloads.push(std::mem::take(&mut current));
            }
            let _ = write!(current, "{}", point.time);
            current_time = Some(point.time);
        }
        current.push_str(&entry);
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    payloads
}

/// Why a payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPayload(pub String);

impl std::fmt::Display for BadPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unreadable points notification: {}", self.0)
    }
}

/// The second and points of one payload.
pub fn decode(payload: &str) -> Result<(i64, Vec<Point>), BadPayload> {
    let mut parts = payload.split(' ');
    let time: i64 = parts
        .next()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| BadPayload("no second at its start".into()))?;
    let mut points = Vec::new();
    for part in parts {
        let (id, value) = part
            .split_once(':')
            .ok_or_else(|| BadPayload(format!("{part:?} is not id:value")))?;
        let asset_id: i32 = id
            .parse()
            .map_err(|_| BadPayload(format!("asset id {id:?} is not an integer")))?;
        let value: f64 = value
            .parse()
            .map_err(|_| BadPayload(format!("value {value:?} is not a number")))?;
        if !value.is_finite() {
            return Err(BadPayload(format!("value {value} is not finite")));
        }
        points.push(Point {
            asset_id,
            time,
            value,
        });
    }
    Ok((time, points))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(asset_id: i32, time: i64, value: f64) -> Point {
        Point {
            asset_id,
            time,
            value,
        }
    }

    #[test]
    fn round_trips_exact_values_per_second() {
        let points = vec![
            point(2, 11, 114.02),
            point(1, 10, 1.110481),
            point(1, 11, 0.1 + 0.2),
            point(2, 10, 1e-7),
        ];
        let payloads = encode(&points);
        assert_eq!(
            payloads,
            [
                "10 1:1.110481 2:0.0000001",
                "11 1:0.30000000000000004 2:114.02"
            ]
        );
        let (time, back) = decode(&payloads[1]).unwrap();
        assert_eq!(time, 11);
        assert_eq!(back, [point(1, 11, 0.1 + 0.2), point(2, 11, 114.02)]);
    }

    #[test]
    fn a_second_with_many_assets_is_split_under_the_limit() {
        let points: Vec<Point> = (1..=2000)
            .map(|id| point(id, 5, 1.234567 * f64::from(id)))
            .collect();
        let payloads = encode(&points);
        assert!(payloads.len() > 1);
        let mut back = Vec::new();
        for payload in &payloads {
            assert!(payload.len() <= MAX_PAYLOAD_BYTES, "{}", payload.len());
            let (time, points) = decode(payload).unwrap();
            assert_eq!(time, 5);
            back.extend(points);
        }
        assert_eq!(back, points);
    }

    #[test]
    fn garbage_is_refused_not_guessed() {
        for bad in [
            "", "x 1:2", "10 1", "10 a:1", "10 1:b", "10 1:NaN", "10 1:inf",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        assert_eq!(decode("10").unwrap(), (10, vec![]));
    }
}
