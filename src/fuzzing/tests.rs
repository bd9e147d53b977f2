//! The seed corpus and every past finding (`fuzz/corpus/`), replayed through the oracles
//! in every test run, and a check that the connection oracles really get answers.

use std::path::PathBuf;

use super::{drive_compressed, drive_connection};

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus")).join(target)
}

/// Runs `oracle` on every seed in `fuzz/corpus/<target>/`.
fn replay(target: &str, oracle: impl Fn(&[u8])) {
    let mut count = 0;
    for seed in std::fs::read_dir(corpus(target)).unwrap() {
        oracle(&std::fs::read(seed.unwrap().path()).unwrap());
        count += 1;
    }
    assert!(count > 0, "no seeds for {target}");
}

#[test]
fn every_seed_passes() {
    replay("request", super::parse_request);
    replay("http_head", super::parse_head_and_route);
    replay("ratesjson", super::ratesjson);
    replay("dsn", super::dsn);
    replay("connection", |data| drop(drive_connection(data)));
    replay("compressed", |data| drop(drive_compressed(data)));
}

/// Runs a seed (`target/name`) through `drive`; its output must hold all of `expected`.
fn answers(seed: &str, drive: fn(&[u8]) -> Vec<u8>, expected: &[&[u8]]) {
    let out = drive(&std::fs::read(corpus(seed)).unwrap());
    for part in expected {
        let found = out.windows(part.len()).any(|w| w == *part);
        assert!(found, "{part:?} not in {}", String::from_utf8_lossy(&out));
    }
}

/// The oracles really talk WebSocket: the session seed gets every kind of reply, a
/// client asking for histories faster than it reads is closed with 1008, the page
/// seed gets the page, and a compressing client its history compressed.
#[test]
fn the_connection_seeds_are_answered() {
    let session: [&[u8]; 7] = [
        b"HTTP/1.1 101 ",
        b"\"action\":\"assets\"",
        b"\"action\":\"asset_history\"",
        b"\"UnknownAsset\"",
        b"binary frames are not accepted",
        b"\"ParseError\"",
        b"\"action\":\"unsubscribed\"",
    ];
    answers("connection/session", drive_connection, &session);
    let slow: &[u8] = b"\x88\x0F\x03\xF0slow consumer";
    answers("connection/slow_consumer", drive_connection, &[slow]);
    answers("connection/page", drive_connection, &[b"HTTP/1.1 200 OK"]);
    answers("compressed/subscribe", drive_compressed, &[&[0xC1, 126]]);
}
