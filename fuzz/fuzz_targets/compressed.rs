#![no_main]
//! Fuzz target: see `ws_assets::fuzzing::drive_compressed`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ws_assets::fuzzing::drive_compressed(data);
});
