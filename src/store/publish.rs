//! Points published through PostgreSQL: the channel, and the text of a notification
//! that the leader publishes with each write and followers read back.
//!
//! One payload holds points of one second: `<time> <asset id>:<value> ...`, values in
//! Rust's shortest round-trip form so a follower serves the very `f64` the leader
//! stored. Only points the write really stored are published (a second already in the
//! table keeps its value, and nobody hears another). PostgreSQL refuses payloads of
//! 8,000 bytes or more, so a second with many assets is split over several payloads.

use crate::asset::Point;

/// The `LISTEN`/`NOTIFY` channel of new points.
pub const CHANNEL: &str = "ws_assets_points";

/// Largest payload written, safely under PostgreSQL's 8,000-byte limit.
pub const MAX_PAYLOAD_BYTES: usize = 7_900;

/// Entries of one payload at most: 200 entries of at most 36 bytes stay under
/// [`MAX_PAYLOAD_BYTES`] with the second in front.
pub const ENTRIES_PER_PAYLOAD: i64 = 200;

/// One point's entry in a payload: `<asset id>:<value>`, the value in its shortest
/// round-trip form with an exponent for very small or large numbers, so an entry is
/// never longer than 36 bytes. The write statement joins the entries of the points it
/// stored, second by second, behind the second.
pub fn entry(point: &Point) -> String {
    format!("{}:{:?}", point.asset_id, point.value)
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

    /// A payload as the write statement builds it.
    fn payload(time: i64, points: &[Point]) -> String {
        let entries: Vec<String> = points.iter().map(entry).collect();
        format!("{time} {}", entries.join(" "))
    }

    #[test]
    fn entries_round_trip_exact_values() {
        let points = [
            point(1, 11, 0.1 + 0.2),
            point(2, 11, 114.02),
            point(3, 11, 1e-7),
        ];
        let text = payload(11, &points);
        assert_eq!(text, "11 1:0.30000000000000004 2:114.02 3:1e-7");
        assert_eq!(decode(&text).unwrap(), (11, points.to_vec()));
    }

    #[test]
    fn a_full_payload_stays_under_the_limit() {
        for value in [
            f64::MIN_POSITIVE * 3.0,
            -1.234_567_890_123_456_7e-300,
            f64::MAX,
        ] {
            assert!(entry(&point(i32::MIN, 0, value)).len() <= 36, "{value:?}");
        }
        let widest = point(i32::MIN, i64::MIN, -1.234_567_890_123_456_7e-300);
        let points = vec![widest; ENTRIES_PER_PAYLOAD as usize];
        let text = payload(i64::MIN, &points);
        assert!(text.len() <= MAX_PAYLOAD_BYTES, "{}", text.len());
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
