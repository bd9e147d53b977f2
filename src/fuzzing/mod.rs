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

pub use connection::{drive_compressed, drive_connection};
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
        seeds("compressed", super::drive_compressed);
    }

    /// The oracles really talk WebSocket: the session seed gets every kind of reply and
    /// its close echoed, a client asking for histories faster than it reads is closed
    /// with 1008, the page seed gets the page, and a compressing client its history
    /// compressed.
    #[test]
    fn the_connection_seeds_are_answered() {
        let run = |target: &str, name: &str| match &std::fs::read(corpus(target).join(name))
            .unwrap()[..]
        {
            [flags, seed, input @ ..] => super::connection::run(*flags, *seed, input.to_vec()),
            _ => panic!("a seed of under two bytes"),
        };
        let out = run("connection", "session");
        let session = String::from_utf8_lossy(&out);
        for expected in [
            "HTTP/1.1 101 ",
            "\"action\":\"assets\"",
            "\"action\":\"asset_history\"",
            "\"UnknownAsset\"",
            "binary frames are not accepted",
            "\"ParseError\"",
            "\"action\":\"unsubscribed\"",
        ] {
            assert!(
                session.contains(expected),
                "{expected:?} missing from {session}"
            );
        }
        let slow = b"\x88\x0F\x03\xF0slow consumer";
        assert!(
            run("connection", "slow_consumer")
                .windows(slow.len())
                .any(|w| w == slow)
        );
        assert!(run("connection", "page").starts_with(b"HTTP/1.1 200 OK\r\n"));
        let seed = std::fs::read(corpus("compressed").join("subscribe")).unwrap();
        let (flags, seed, input) = super::connection::compressed_input(&seed).unwrap();
        let compressed = super::connection::run(flags, seed, input);
        assert!(
            compressed.windows(2).any(|w| w == [0xC1, 126]),
            "a compressed history"
        );
    }
}
