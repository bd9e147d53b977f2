//! Entry points for the fuzz targets in `fuzz/`: each feeds arbitrary bytes to one
//! parser of outside input ([`parsers`]), or to one whole client connection through the
//! real connection driver ([`connection`]), and checks what must hold. A broken
//! invariant panics: that is how the fuzzer reports a finding.
//!
//! Compiled only with `--cfg fuzzing` (which `cargo fuzz` sets) and in unit tests
//! ([`tests`]: they replay the seed corpus and every past finding), so the service never
//! carries it.
// An oracle fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod connection;
mod parsers;

pub use connection::{drive_compressed, drive_connection};
pub use parsers::{dsn, parse_head_and_route, parse_request, ratesjson};

#[cfg(test)]
mod tests;
