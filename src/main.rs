//! The `ws_assets` binary: reads the configuration, sets up logging, runs the service.
//!
//! Everything it prints, log lines included, is scrubbed of the credentials the
//! configuration holds ([`Secrets`]), whatever produced the text.

use std::process::ExitCode;
use std::time::Duration;

use log::error;
use simplelog::{ConfigBuilder, LevelFilter, WriteLogger};

use ws_assets::config::{self, Config};
use ws_assets::logsink;
use ws_assets::reactor::Stopped;
use ws_assets::redact::{ScrubbingWriter, Secrets};
use ws_assets::{health_command, service};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut migrate_only = false;
    match args.first().map(String::as_str) {
        None => {}
        Some("migrate") => migrate_only = true,
        Some("health") => return health_command::main(),
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
    let secrets = Config::secrets_from_env();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ws_assets: {}", secrets.scrub(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_level, secrets.clone());
    let code = if migrate_only {
        migrate(&config, &secrets)
    } else {
        serve(config)
    };
    logsink::settle(LOG_SETTLE);
    code
}

/// Runs the service until a signal stops it.
fn serve(config: Config) -> ExitCode {
    let reactor = match service::start(config) {
        Ok(reactor) => reactor,
        Err(e) if e.is_configuration() => {
            error!("cannot start: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match reactor.run() {
        Ok(Stopped::Clean) => ExitCode::SUCCESS,
        // A second signal during the clean-up: the operator wants out now.
        Ok(Stopped::Abandoned) => ExitCode::FAILURE,
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `ws_assets migrate`: applies the pending migrations, says which, and exits.
fn migrate(config: &Config, secrets: &Secrets) -> ExitCode {
    match service::migrate(config) {
        Ok(applied) if applied.is_empty() => {
            println!("database schema is up to date");
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            for migration in applied {
                println!("applied {}", migration.name);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("migrate failed: {e}");
            eprintln!("ws_assets migrate: {}", secrets.scrub(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error at `level`, our own messages only, through a queue that
/// never blocks the caller (see `logsink`); the queue's thread scrubs `secrets` out of
/// every line.
fn init_logging(level: LevelFilter, secrets: Secrets) {
    let config = ConfigBuilder::new()
        .add_filter_allow_str("ws_assets")
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .build();
    let stderr = ScrubbingWriter::new(std::io::stderr(), secrets);
    let writer = match logsink::start(stderr, logsink::QUEUE_LINES) {
        Ok(writer) => writer,
        Err(e) => {
            eprintln!("ws_assets: logging could not be set up ({e}); continuing without it");
            return;
        }
    };
    if WriteLogger::init(level, config, writer).is_err() {
        eprintln!("ws_assets: logging could not be set up; continuing without it");
    }
}

/// How long the process waits at exit for queued log lines to be written.
const LOG_SETTLE: Duration = Duration::from_secs(1);
