//! Entry points for the fuzz targets in `fuzz/`: each feeds arbitrary bytes to one
//! parser of outside input ([`parsers`]), or to one whole client connection through the
//! real connection driver ([`connection`]), and checks what must hold. A broken
//! invariant panics: that is how the fuzzer reports a finding.
//!
//! Compiled only with `--cfg fuzzing` (which `cargo fuzz` sets) and in unit tests, which
//! replay the seed corpus and every past finding, so the service never carries it.
// An oracle fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod connection;
mod parsers;

pub use connection::drive_connection;
pub use parsers::{dsn, parse_head_and_route, parse_request, ratesjson};

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn corpus(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(name)
    }

    /// Runs `target` on every seed in `fuzz/corpus/<name>/`.
    fn seeds(name: &str, target: fn(&[u8])) {
        let mut count = 0;
        for entry in std::fs::read_dir(corpus(name)).unwrap() {
            target(&std::fs::read(entry.unwrap().path()).unwrap());
            count += 1;
        }
        assert!(count > 0, "no seeds for {name}");
    }

    #[test]
    fn every_seed_passes() {
        seeds("request", super::parse_request);
        seeds("http_head", super::parse_head_and_route);
        seeds("ratesjson", super::ratesjson);
        seeds("dsn", super::dsn);
        seeds("connection", super::drive_connection);
    }

    /// The oracle really talks WebSocket: the session seed gets every kind of reply, a
    /// client asking for histories faster than it reads is closed with 1008, and the
    /// page seed gets the page.
    #[test]
    fn the_connection_seeds_are_answered() {
        let run = |seed: &str| {
            super::connection::run_connection(
                &std::fs::read(corpus("connection").join(seed)).unwrap(),
            )
        };
        let out = run("session");
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        for expected in [
            "\"action\":\"assets\"",
            "\"action\":\"asset_history\"",
            "\"UnknownAsset\"",
            "binary frames are not accepted",
            "\"ParseError\"",
            "\"action\":\"unsubscribed\"",
        ] {
            assert!(text.contains(expected), "{expected} missing from {text}");
        }
        assert!(out.windows(2).any(|w| w == [0x8A, 2]), "the pong");
        assert!(
            out.ends_with(&[0x88, 5, 0x03, 0xE8, b'b', b'y', b'e']),
            "the close echoed"
        );
        let slow = b"\x88\x0F\x03\xF0slow consumer";
        assert!(run("slow_consumer").windows(slow.len()).any(|w| w == slow));
        assert!(run("page").starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
}
