//! Independent client libraries against the real server: Python's `websockets` (PyPI)
//! and Node's `ws` (npm), each with its default permessage-deflate offer, sending its
//! subscribe compressed. `.ci/install-interop` installs both (`.ci/test` runs it).
//!
//! Each script (tests/interop/) compares the history it got compressed with one it got
//! plain in the same second, and reads two live points; the server's metrics show the
//! request arrived compressed and the history left compressed.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::{Server, run_command};

/// Where `.ci/install-interop` puts Node's packages: target/interop/node_modules, found
/// from this test's own executable (target/PROFILE/deps/it-HASH).
fn node_modules() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test runs from target/PROFILE/deps");
    target.join("interop/node_modules")
}

fn script(name: &str) -> String {
    format!("{}/tests/interop/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs a client script against a fresh server and checks what it and the server saw.
fn run_client(program: &str, script_name: &str, env: &[(&str, String)]) {
    let server = Server::start(&[]);
    let url = format!("ws://{}/api/v1/websocket", server.addr);
    let before = server.metrics();
    let mut command = Command::new(program);
    command.arg(script(script_name)).arg(&url).arg("4");
    for (name, value) in env {
        command.env(name, value);
    }
    let out = run_command(command, Duration::from_secs(60));
    assert_eq!(
        out.code,
        Some(0),
        "{program} {script_name} failed:\n{}",
        out.stderr
    );
    let report: Value =
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    let extension = report["extension"].as_str().unwrap_or_default();
    assert!(extension.starts_with("permessage-deflate"), "{report}");
    assert_eq!(report["history_points"], 1800, "{report}");
    assert_eq!(report["history_equal"], true, "{report}");
    assert_eq!(report["asset"], 4);
    let last = report["history_last"].as_i64().unwrap();
    let live: Vec<i64> = report["live"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().unwrap())
        .collect();
    assert_eq!(live, [last + 1, last + 2], "the seam and the next point");
    let after = server.metrics();
    assert!(
        after.moved_since(&before, "ws_assets_messages_inflated_total") >= 1.0,
        "the subscribe came compressed"
    );
    assert!(after.moved_since(&before, "ws_assets_history_compressions_total") >= 1.0);
}

#[test]
fn python_websockets_negotiates_deflate_and_streams() {
    run_client("python3", "python_client.py", &[]);
}

#[test]
fn node_ws_negotiates_deflate_and_streams() {
    let path = node_modules();
    assert!(
        path.join("ws").is_dir(),
        "{} is missing: run .ci/install-interop",
        path.display()
    );
    run_client(
        "node",
        "node_client.cjs",
        &[("NODE_PATH", path.to_string_lossy().into_owned())],
    );
}
