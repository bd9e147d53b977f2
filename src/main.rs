//! The `ws_assets` binary: reads the configuration, sets up logging, runs the service.

use std::process::ExitCode;

use log::error;
use simplelog::{ColorChoice, ConfigBuilder, LevelFilter, TermLogger, TerminalMode};

use ws_assets::config::{self, Config};
use ws_assets::service;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => {}
        Some("-h" | "--help" | "help") => {
            print!("{}", config::help_text());
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version") => {
            println!("ws_assets {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("ws_assets: unknown argument {other:?}; see ws_assets --help");
            return ExitCode::from(2);
        }
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ws_assets: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_level);
    let reactor = match service::start(config) {
        Ok(reactor) => reactor,
        Err(e) => {
            error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match reactor.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error at `level`, our own messages only.
fn init_logging(level: LevelFilter) {
    let config = ConfigBuilder::new()
        .add_filter_allow_str("ws_assets")
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .build();
    if TermLogger::init(level, config, TerminalMode::Stderr, ColorChoice::Never).is_err() {
        eprintln!("ws_assets: logging could not be set up; continuing without it");
    }
}
