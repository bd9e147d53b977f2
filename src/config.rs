//! Configuration: one table of `WS_ASSETS_*` environment variables.
//!
//! The table [`VARS`] is the single source of the defaults, the `--help` text and the
//! README's configuration table. Each entry names its variable, its default, what it
//! means, what values it accepts, and the function that stores a parsed value into
//! [`Config`]. Defaults go through the same parsers as user values.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use log::LevelFilter;

/// Every environment variable starts with this.
pub const PREFIX: &str = "WS_ASSETS_";

/// What the simulated feed is called in `WS_ASSETS_RATES_URL`.
pub const SIMULATED: &str = "simulated";

/// The service's settings, parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address to listen on.
    pub host: IpAddr,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// Serve the test page on `/`.
    pub enable_ui: bool,
    /// Apply `sql/` migrations at start-up.
    pub auto_apply_migrations: bool,
    /// Log level.
    pub log_level: LevelFilter,
    /// PostgreSQL DSN; empty selects the in-memory store.
    pub postgresql_dsn: String,
    /// Maximum PostgreSQL pool size.
    pub postgresql_pool_size: u32,
    /// How long start-up (and `migrate`) keeps retrying an unreachable database.
    pub postgresql_startup_timeout: Duration,
    /// Points older than this many days are deleted; 0 keeps everything.
    pub retention_days: u32,
    /// `simulated`, or the `http(s)://` URL of an FXCM ratesjson feed.
    pub rates_url: String,
    /// Per-request timeout of the HTTP feed.
    pub rates_timeout: Duration,
    /// Largest feed body accepted, in bytes.
    pub rates_max_body_bytes: u64,
    /// Feed fetches allowed in flight at once; a tick finding them all busy is skipped.
    pub rates_max_in_flight: usize,
    /// Seed of the simulated feed; 0 picks one at random.
    pub simulated_seed: u64,
    /// Fill the history window with simulated points at start-up (simulated feed, empty store only).
    pub simulated_backfill: bool,
    /// Length of the history window sent on subscribe, in seconds.
    pub history_seconds: u32,
    /// Threads running blocking jobs (feed fetches, database calls).
    pub worker_threads: usize,
    /// Connections (HTTP and WebSocket) served at once.
    pub max_connections: usize,
    /// Largest incoming WebSocket message, in bytes; larger closes the connection with 1009.
    pub max_message_bytes: usize,
    /// Outgoing bytes a client may have waiting before it is closed as a slow consumer (1008).
    pub client_queue_bytes: usize,
    /// Silence after which the server pings a client.
    pub ping_interval: Duration,
    /// Time a pinged client has to answer before it is dropped.
    pub pong_timeout: Duration,
    /// Time a new connection has to send a complete HTTP request head.
    pub handshake_timeout: Duration,
    /// Points kept waiting for the store while it is unreachable; beyond it the oldest are dropped.
    pub write_queue_points: usize,
    /// `/health` answers 503 when no tick has recorded a point for this long.
    pub health_max_tick_age: Duration,
}

/// One environment variable: its name (without the prefix), default, meaning and parser.
pub struct Var {
    /// Name without [`PREFIX`].
    pub name: &'static str,
    /// Default value, as text; parsed like a user's value.
    pub default: &'static str,
    /// What it means, for `--help` and the README.
    pub help: &'static str,
    /// What values are accepted, for error messages.
    pub accepts: &'static str,
    apply: fn(&mut Config, &str) -> Option<()>,
}

/// The whole configuration surface, in the order `--help` and the README list it.
pub const VARS: &[Var] = &[
    Var {
        name: "HOST",
        default: "0.0.0.0",
        help: "listen address",
        accepts: "an IPv4 or IPv6 address, or localhost",
        apply: |c, v| {
            c.host = if v.eq_ignore_ascii_case("localhost") {
                IpAddr::from([127, 0, 0, 1])
            } else {
                v.parse().ok()?
            };
            Some(())
        },
    },
    Var {
        name: "PORT",
        default: "8080",
        help: "listen port; 0 picks a free one and logs it",
        accepts: "an integer 0..=65535",
        apply: |c, v| set(&mut c.port, v.parse().ok()),
    },
    Var {
        name: "ENABLE_UI",
        default: "TRUE",
        help: "serve the test page on /",
        accepts: BOOL,
        apply: |c, v| set(&mut c.enable_ui, parse_bool(v)),
    },
    Var {
        name: "AUTO_APPLY_MIGRATIONS",
        default: "TRUE",
        help: "apply the sql/ migrations at start-up",
        accepts: BOOL,
        apply: |c, v| set(&mut c.auto_apply_migrations, parse_bool(v)),
    },
    Var {
        name: "LOG_LEVEL",
        default: "INFO",
        help: "log level",
        accepts: "off, critical, error, warning, warn, info, debug or trace, in any case",
        apply: |c, v| set(&mut c.log_level, parse_log_level(v)),
    },
    Var {
        name: "POSTGRESQL_DSN",
        default: "",
        help: "PostgreSQL DSN; empty keeps points in memory only",
        accepts: "empty, or a postgresql://, postgres:// or postgresql+asyncpg:// URL (or libpq key=value pairs)",
        apply: |c, v| {
            if !v.is_empty() {
                crate::store::dsn::parse(v).ok()?;
            }
            c.postgresql_dsn = v.to_string();
            Some(())
        },
    },
    Var {
        name: "POSTGRESQL_POOL_SIZE",
        default: "10",
        help: "maximum PostgreSQL pool size",
        accepts: "an integer 1..=1000",
        apply: |c, v| {
            set(
                &mut c.postgresql_pool_size,
                in_range(v, 1, 1000).map(|n| n as u32),
            )
        },
    },
    Var {
        name: "POSTGRESQL_STARTUP_TIMEOUT_SECONDS",
        default: "30",
        help: "how long start-up and migrate retry an unreachable database before giving up, in seconds",
        accepts: "an integer 1..=3600",
        apply: |c, v| {
            set(
                &mut c.postgresql_startup_timeout,
                in_range(v, 1, 3600).map(Duration::from_secs),
            )
        },
    },
    Var {
        name: "RETENTION_DAYS",
        default: "30",
        help: "points older than this many days are deleted from the database; 0 keeps everything",
        accepts: "an integer 0..=36500",
        apply: |c, v| {
            set(
                &mut c.retention_days,
                in_range(v, 0, 36_500).map(|n| n as u32),
            )
        },
    },
    Var {
        name: "RATES_URL",
        default: SIMULATED,
        help: "quote feed: simulated, or the http(s) URL of an FXCM ratesjson feed",
        accepts: "simulated, or a URL starting with http:// or https://",
        apply: |c, v| {
            let ok = v == SIMULATED || v.starts_with("http://") || v.starts_with("https://");
            ok.then(|| c.rates_url = v.to_string())
        },
    },
    Var {
        name: "RATES_TIMEOUT_MS",
        default: "800",
        help: "timeout of one feed request, in milliseconds",
        accepts: "an integer 1..=60000",
        apply: |c, v| {
            set(
                &mut c.rates_timeout,
                in_range(v, 1, 60_000).map(Duration::from_millis),
            )
        },
    },
    Var {
        name: "RATES_MAX_BODY_BYTES",
        default: "262144",
        help: "largest feed answer accepted, in bytes",
        accepts: "an integer 1024..=67108864",
        apply: |c, v| set(&mut c.rates_max_body_bytes, in_range(v, 1024, 64 << 20)),
    },
    Var {
        name: "RATES_MAX_IN_FLIGHT",
        default: "2",
        help: "feed requests in flight at once; a tick finding them all busy is skipped",
        accepts: "an integer 1..=16",
        apply: |c, v| {
            set(
                &mut c.rates_max_in_flight,
                in_range(v, 1, 16).map(|n| n as usize),
            )
        },
    },
    Var {
        name: "SIMULATED_SEED",
        default: "0",
        help: "seed of the simulated feed; 0 picks one at random",
        accepts: "an unsigned 64-bit integer",
        apply: |c, v| set(&mut c.simulated_seed, v.parse().ok()),
    },
    Var {
        name: "SIMULATED_BACKFILL",
        default: "TRUE",
        help: "fill the history window with simulated points at start-up (simulated feed and empty store only)",
        accepts: BOOL,
        apply: |c, v| set(&mut c.simulated_backfill, parse_bool(v)),
    },
    Var {
        name: "HISTORY_SECONDS",
        default: "1800",
        help: "history window sent on subscribe, in seconds",
        accepts: "an integer 1..=86400",
        apply: |c, v| {
            set(
                &mut c.history_seconds,
                in_range(v, 1, 86_400).map(|n| n as u32),
            )
        },
    },
    Var {
        name: "WORKER_THREADS",
        default: "4",
        help: "threads for blocking work (feed requests, database calls)",
        accepts: "an integer 1..=64",
        apply: |c, v| {
            set(
                &mut c.worker_threads,
                in_range(v, 1, 64).map(|n| n as usize),
            )
        },
    },
    Var {
        name: "MAX_CONNECTIONS",
        default: "100000",
        help: "connections served at once (also bounded by the open-file limit)",
        accepts: "an integer 1..=10000000",
        apply: |c, v| {
            set(
                &mut c.max_connections,
                in_range(v, 1, 10_000_000).map(|n| n as usize),
            )
        },
    },
    Var {
        name: "MAX_MESSAGE_BYTES",
        default: "4096",
        help: "largest incoming WebSocket message; larger closes the connection with 1009",
        accepts: "an integer 64..=1048576",
        apply: |c, v| {
            set(
                &mut c.max_message_bytes,
                in_range(v, 64, 1 << 20).map(|n| n as usize),
            )
        },
    },
    Var {
        name: "CLIENT_QUEUE_BYTES",
        default: "1048576",
        help: "outgoing bytes a client may have waiting behind the message being sent; beyond it the client is closed with 1008",
        accepts: "an integer 4096..=1073741824",
        apply: |c, v| {
            set(
                &mut c.client_queue_bytes,
                in_range(v, 4096, 1 << 30).map(|n| n as usize),
            )
        },
    },
    Var {
        name: "PING_INTERVAL_SECONDS",
        default: "20",
        help: "silence after which the server pings a client, in seconds",
        accepts: "an integer 1..=3600",
        apply: |c, v| {
            set(
                &mut c.ping_interval,
                in_range(v, 1, 3600).map(Duration::from_secs),
            )
        },
    },
    Var {
        name: "PONG_TIMEOUT_SECONDS",
        default: "20",
        help: "time a pinged client has to answer before it is dropped, in seconds",
        accepts: "an integer 1..=3600",
        apply: |c, v| {
            set(
                &mut c.pong_timeout,
                in_range(v, 1, 3600).map(Duration::from_secs),
            )
        },
    },
    Var {
        name: "HANDSHAKE_TIMEOUT_SECONDS",
        default: "10",
        help: "time a new connection has to send its HTTP request, in seconds",
        accepts: "an integer 1..=600",
        apply: |c, v| {
            set(
                &mut c.handshake_timeout,
                in_range(v, 1, 600).map(Duration::from_secs),
            )
        },
    },
    Var {
        name: "WRITE_QUEUE_POINTS",
        default: "432000",
        help: "points kept for the store while it is unreachable (432000 = a day of 5 assets); beyond it the oldest are dropped",
        accepts: "an integer 1000..=100000000",
        apply: |c, v| {
            set(
                &mut c.write_queue_points,
                in_range(v, 1000, 100_000_000).map(|n| n as usize),
            )
        },
    },
    Var {
        name: "HEALTH_MAX_TICK_AGE_SECONDS",
        default: "15",
        help: "/health answers 503 when no tick has recorded a point for this long, in seconds",
        accepts: "an integer 1..=86400",
        apply: |c, v| {
            set(
                &mut c.health_max_tick_age,
                in_range(v, 1, 86_400).map(Duration::from_secs),
            )
        },
    },
];

const BOOL: &str = "TRUE, FALSE, 1, 0, yes or no, in any case";

/// A configuration value that could not be used; start-up stops with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Full variable name, with the prefix.
    pub variable: String,
    /// The value given.
    pub value: String,
    /// What would have been accepted.
    pub accepts: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}={:?}: expected {}",
            self.variable, self.value, self.accepts
        )
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from the defaults, overridden by what `lookup` returns
    /// for each full variable name. Surrounding whitespace of a value is ignored.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut config = Config::blank();
        for var in VARS {
            (var.apply)(&mut config, var.default)
                .unwrap_or_else(|| unreachable!("default of {} must parse", var.name));
            let full = format!("{PREFIX}{}", var.name);
            if let Some(value) = lookup(&full) {
                (var.apply)(&mut config, value.trim()).ok_or(ConfigError {
                    variable: full,
                    value,
                    accepts: var.accepts,
                })?;
            }
        }
        Ok(config)
    }

    /// How long points are kept in the store; `None` keeps them forever.
    pub fn retention(&self) -> Option<Duration> {
        (self.retention_days > 0)
            .then(|| Duration::from_secs(u64::from(self.retention_days) * 86_400))
    }

    /// Whether the feed is the built-in simulation.
    pub fn is_simulated_feed(&self) -> bool {
        self.rates_url == SIMULATED
    }

    /// A value of every field, each overwritten by its variable's default before use.
    fn blank() -> Config {
        Config {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 0,
            enable_ui: false,
            auto_apply_migrations: false,
            log_level: LevelFilter::Off,
            postgresql_dsn: String::new(),
            postgresql_pool_size: 0,
            postgresql_startup_timeout: Duration::ZERO,
            retention_days: 0,
            rates_url: String::new(),
            rates_timeout: Duration::ZERO,
            rates_max_body_bytes: 0,
            rates_max_in_flight: 0,
            simulated_seed: 0,
            simulated_backfill: false,
            history_seconds: 0,
            worker_threads: 0,
            max_connections: 0,
            max_message_bytes: 0,
            client_queue_bytes: 0,
            ping_interval: Duration::ZERO,
            pong_timeout: Duration::ZERO,
            handshake_timeout: Duration::ZERO,
            write_queue_points: 0,
            health_max_tick_age: Duration::ZERO,
        }
    }
}

/// The `--help` text: usage, then every variable with its default.
pub fn help_text() -> String {
    let mut out = String::from(
        "ws_assets: streams currency quotes over WebSocket.\n\n\
         Usage:\n  ws_assets            run the service\n  \
         ws_assets migrate    apply the database migrations and exit\n  \
         ws_assets --help     print this text\n\n\
         Configuration (environment variables, default in brackets):\n",
    );
    for var in VARS {
        let default = if var.default.is_empty() {
            "(empty)"
        } else {
            var.default
        };
        out.push_str(&format!(
            "  {PREFIX}{} [{default}]\n      {}\n",
            var.name, var.help
        ));
    }
    out
}

/// The README's configuration table, in Markdown; a test keeps the README equal to it.
pub fn markdown_table() -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for var in VARS {
        let default = if var.default.is_empty() {
            "(empty)".to_string()
        } else {
            format!("`{}`", var.default)
        };
        out.push_str(&format!(
            "| `{PREFIX}{}` | {default} | {} |\n",
            var.name, var.help
        ));
    }
    out
}

fn set<T>(field: &mut T, value: Option<T>) -> Option<()> {
    *field = value?;
    Some(())
}

fn in_range(v: &str, min: u64, max: u64) -> Option<u64> {
    v.parse::<u64>().ok().filter(|n| (min..=max).contains(n))
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn parse_log_level(v: &str) -> Option<LevelFilter> {
    Some(match v.to_ascii_lowercase().as_str() {
        "off" => LevelFilter::Off,
        "critical" | "error" => LevelFilter::Error,
        "warning" | "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect();
        Config::from_lookup(|name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = with(&[]).unwrap();
        assert_eq!(c.host, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(c.port, 8080);
        assert!(c.enable_ui);
        assert!(c.auto_apply_migrations);
        assert_eq!(c.log_level, LevelFilter::Info);
        assert_eq!(c.postgresql_dsn, "");
        assert_eq!(c.postgresql_pool_size, 10);
        assert!(c.is_simulated_feed());
        assert_eq!(c.history_seconds, 1800);
        assert!(c.rates_timeout < Duration::from_secs(1));
    }

    #[test]
    fn booleans_accept_every_documented_spelling() {
        for (text, want) in [
            ("TRUE", true),
            ("true", true),
            ("Yes", true),
            ("1", true),
            ("FALSE", false),
            ("no", false),
            ("0", false),
            ("False", false),
        ] {
            assert_eq!(
                with(&[("ENABLE_UI", text)]).unwrap().enable_ui,
                want,
                "{text}"
            );
        }
        assert!(with(&[("ENABLE_UI", "maybe")]).is_err());
    }

    #[test]
    fn log_levels_include_the_originals_names() {
        let level = |v| with(&[("LOG_LEVEL", v)]).unwrap().log_level;
        assert_eq!(level("CRITICAL"), LevelFilter::Error);
        assert_eq!(level("WARNING"), LevelFilter::Warn);
        assert_eq!(level("debug"), LevelFilter::Debug);
        assert_eq!(level("Off"), LevelFilter::Off);
        assert!(with(&[("LOG_LEVEL", "loud")]).is_err());
    }

    #[test]
    fn bad_value_names_variable_value_and_what_is_accepted() {
        let err = with(&[("PORT", "80a")]).unwrap_err();
        assert_eq!(err.variable, "WS_ASSETS_PORT");
        assert_eq!(err.value, "80a");
        let text = err.to_string();
        assert!(text.contains("WS_ASSETS_PORT"), "{text}");
        assert!(text.contains("80a"), "{text}");
        assert!(text.contains("0..=65535"), "{text}");
    }

    #[test]
    fn ranges_are_enforced() {
        assert!(with(&[("PORT", "65536")]).is_err());
        assert!(with(&[("WORKER_THREADS", "0")]).is_err());
        assert!(with(&[("HISTORY_SECONDS", "-5")]).is_err());
        assert_eq!(with(&[("PORT", " 0 ")]).unwrap().port, 0);
        assert_eq!(
            with(&[("RATES_TIMEOUT_MS", "250")]).unwrap().rates_timeout,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn hosts_and_urls() {
        assert_eq!(
            with(&[("HOST", "localhost")]).unwrap().host,
            IpAddr::from([127, 0, 0, 1])
        );
        assert!(with(&[("HOST", "::1")]).unwrap().host.is_ipv6());
        assert!(with(&[("HOST", "example")]).is_err());
        assert!(with(&[("RATES_URL", "ftp://x")]).is_err());
        assert!(
            !with(&[("RATES_URL", "https://x/rates")])
                .unwrap()
                .is_simulated_feed()
        );
        assert!(with(&[("POSTGRESQL_DSN", "mysql://x")]).is_err());
        assert!(with(&[("POSTGRESQL_DSN", "postgresql+asyncpg://u:p@h/db")]).is_ok());
    }

    #[test]
    fn help_and_table_list_every_variable() {
        let help = help_text();
        let table = markdown_table();
        for var in VARS {
            let full = format!("{PREFIX}{}", var.name);
            assert!(help.contains(&full), "{full} missing from --help");
            assert!(table.contains(&full), "{full} missing from table");
        }
    }
}
