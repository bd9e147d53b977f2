//! Start-up: configuration errors, --help, and the README staying equal to it.

use std::time::Duration;

use crate::common::{self, run_to_exit};

/// Bound on a run that ends by itself (a refused start-up, `--help`).
const RUN_LIMIT: Duration = Duration::from_secs(30);

#[test]
fn a_bad_value_refuses_to_start_naming_variable_value_and_accepted_values() {
    for (var, value, accepted) in [
        ("WS_ASSETS_PORT", "eighty", "0..=65535"),
        ("WS_ASSETS_ENABLE_UI", "perhaps", "TRUE, FALSE"),
        ("WS_ASSETS_LOG_LEVEL", "chatty", "debug"),
        ("WS_ASSETS_RATES_URL", "ftp://feed", "http://"),
    ] {
        let run = run_to_exit(&[], &[(var, value)], RUN_LIMIT);
        assert_eq!(run.code, Some(2), "{var}={value}");
        assert!(run.stderr.contains(var), "{}", run.stderr);
        assert!(run.stderr.contains(value), "{}", run.stderr);
        assert!(run.stderr.contains(accepted), "{}", run.stderr);
    }
}

#[test]
fn a_port_in_use_is_a_clear_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = run_to_exit(&[], &[("WS_ASSETS_PORT", &port)], RUN_LIMIT);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
}

#[test]
fn help_lists_every_variable_with_its_default() {
    let run = run_to_exit(&["--help"], &[], RUN_LIMIT);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for var in ws_assets::config::VARS {
        let line = format!("WS_ASSETS_{} [", var.name);
        assert!(run.stdout.contains(&line), "{line} missing");
    }
    assert!(run.stdout.contains("WS_ASSETS_PORT [8080]"));
    let bad = run_to_exit(&["--frobnicate"], &[], RUN_LIMIT);
    assert_eq!(bad.code, Some(2));
}

#[test]
fn the_readme_configuration_table_is_the_one_help_describes() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let table = ws_assets::config::markdown_table();
    assert!(
        readme.contains(&table),
        "README.md's configuration table differs from the configuration source; \
         replace it with:\n\n{table}"
    );
}

#[test]
fn port_zero_logs_the_bound_address() {
    let server = common::Server::start(&[]);
    assert_ne!(server.addr.port(), 0);
    assert!(server.log().contains("store: memory"));
    assert!(server.log().contains("feed: simulated"));
}

/// The harness reads the address from this line (see `common::listening_addr`).
#[test]
fn the_listening_line_is_read_as_an_address() {
    use common::listening_addr;
    use std::net::SocketAddr;
    let addr = listening_addr("2026-01-01 INFO listening on 127.0.0.1:41234 (ws, http)");
    assert_eq!(addr, Some(SocketAddr::from(([127, 0, 0, 1], 41234))));
    assert_eq!(
        listening_addr("listening on [::1]:8080"),
        "[::1]:8080".parse().ok()
    );
    assert_eq!(listening_addr("starting up"), None);
}
