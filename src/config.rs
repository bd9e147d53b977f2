//! Configuration: one table of `WS_ASSETS_*` environment variables.
//!
//! The table [`VARS`] is the single source of the defaults, the `--help` text and the
//! README's configuration table. Each entry names its variable, its default, what it
//! means, what values it accepts, and the function that stores a parsed value into
//! [`Config`]. Defaults go through the same parsers as user values.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use crate::feed::{FeedSource, SIMULATED};
use crate::http::Origins;
use crate::redact::{self, Secrets};
use crate::store::dsn::PgSettings;
use crate::tls::TlsFiles;

/// Every environment variable starts with this.
pub const PREFIX: &str = "WS_ASSETS_";

/// The service's settings, each parsed once into the type it is used as.
#[derive(Debug, Clone)]
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
    /// The PostgreSQL connection settings; `None` (an empty DSN) selects the in-memory store.
    pub postgresql: Option<PgSettings>,
    /// Maximum PostgreSQL pool size.
    pub postgresql_pool_size: u32,
    /// How long start-up (and `migrate`) keeps retrying an unreachable database.
    pub postgresql_startup_timeout: Duration,
    /// How long points are kept in the store; `None` keeps them forever. See [`Config::retention`].
    retention: Option<Duration>,
    /// Where quotes come from.
    pub feed: FeedSource,
    /// Per-request timeout of the HTTP feed.
    pub rates_timeout: Duration,
    /// Largest feed body accepted, in bytes.
    pub rates_max_body_bytes: u64,
    /// Feed fetches allowed in flight at once; a tick finding them all busy is skipped.
    pub rates_max_in_flight: usize,
    /// Seed of the simulated feed; `None` picks one at random.
    pub simulated_seed: Option<u64>,
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
    /// Accept permessage-deflate offers.
    pub compression: bool,
    /// Messages of at least this many bytes go out compressed to clients that negotiated it.
    pub compression_min_bytes: usize,
    /// DEFLATE level of outgoing messages, 1 (fastest) to 9 (smallest).
    pub compression_level: u32,
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
    /// A follower that has heard no point for this long polls the feed itself.
    pub follower_fallback: Duration,
    /// Bind the listener with `SO_REUSEPORT`, so instances on one host share the port.
    pub reuse_port: bool,
    /// Which browser pages may open a WebSocket.
    pub allowed_origins: Origins,
    /// Connections one source address may hold; 0 is no limit.
    pub max_connections_per_ip: usize,
    /// The certificate chain and key files: the port speaks TLS only. `None`: plain.
    pub tls: Option<TlsFiles>,
    /// `WS_ASSETS_TLS_CERT_FILE` as given, until it is paired with the key in `tls`.
    tls_cert_file: Option<PathBuf>,
    /// `WS_ASSETS_TLS_KEY_FILE` as given, until it is paired with the chain in `tls`.
    tls_key_file: Option<PathBuf>,
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
    apply: fn(&mut Config, &str) -> Result<(), Refused>,
}

/// The whole configuration surface, in the order `--help` and the README list it.
pub const VARS: &[Var] = &[
    Var {
        name: "HOST",
        default: "0.0.0.0",
        help: "listen address",
        accepts: "an IPv4 or IPv6 address, or localhost",
        apply: |c, v| address(v).map(|a| c.host = a),
    },
    Var {
        name: "PORT",
        default: "8080",
        help: "listen port; 0 picks a free one and logs it",
        accepts: "an integer 0..=65535",
        apply: |c, v| int(v, 0, 65_535).map(|n| c.port = n),
    },
    Var {
        name: "ENABLE_UI",
        default: "TRUE",
        help: "serve the test page on /",
        accepts: BOOL,
        apply: |c, v| boolean(v).map(|b| c.enable_ui = b),
    },
    Var {
        name: "AUTO_APPLY_MIGRATIONS",
        default: "TRUE",
        help: "apply the sql/ migrations at start-up",
        accepts: BOOL,
        apply: |c, v| boolean(v).map(|b| c.auto_apply_migrations = b),
    },
    Var {
        name: "LOG_LEVEL",
        default: "INFO",
        help: "log level",
        accepts: "off, critical, error, warning, warn, info, debug or trace, in any case",
        apply: |c, v| log_level(v).map(|l| c.log_level = l),
    },
    Var {
        name: "POSTGRESQL_DSN",
        default: "",
        help: "PostgreSQL DSN; empty keeps points in memory only",
        accepts: "empty, or a postgresql://, postgres:// or postgresql+asyncpg:// URL (or libpq key=value pairs)",
        apply: |c, v| database(v).map(|d| c.postgresql = d),
    },
    Var {
        name: "POSTGRESQL_POOL_SIZE",
        default: "10",
        help: "maximum PostgreSQL pool size",
        accepts: "an integer 1..=1000",
        apply: |c, v| int(v, 1, 1000).map(|n| c.postgresql_pool_size = n),
    },
    Var {
        name: "POSTGRESQL_STARTUP_TIMEOUT_SECONDS",
        default: "30",
        help: "how long start-up and migrate retry an unreachable database before giving up, in seconds",
        accepts: "an integer 1..=3600",
        apply: |c, v| seconds(v, 1, 3600).map(|d| c.postgresql_startup_timeout = d),
    },
    Var {
        name: "RETENTION_DAYS",
        default: "30",
        help: "points older than this many days are deleted from the database; 0 keeps everything",
        accepts: "an integer 0..=36500",
        apply: |c, v| days_or_forever(v, 36_500).map(|d| c.retention = d),
    },
    Var {
        name: "RATES_URL",
        default: SIMULATED,
        help: "quote feed: simulated, or the http(s) URL of an FXCM ratesjson feed",
        accepts: "simulated, or a URL starting with http:// or https://",
        apply: |c, v| feed(v).map(|f| c.feed = f),
    },
    Var {
        name: "RATES_TIMEOUT_MS",
        default: "800",
        help: "timeout of one feed request, in milliseconds",
        accepts: "an integer 1..=60000",
        apply: |c, v| millis(v, 1, 60_000).map(|d| c.rates_timeout = d),
    },
    Var {
        name: "RATES_MAX_BODY_BYTES",
        default: "262144",
        help: "largest feed answer accepted, in bytes",
        accepts: "an integer 1024..=67108864",
        apply: |c, v| int(v, 1024, 64 << 20).map(|n| c.rates_max_body_bytes = n),
    },
    Var {
        name: "RATES_MAX_IN_FLIGHT",
        default: "2",
        help: "feed requests in flight at once; a tick finding them all busy is skipped",
        accepts: "an integer 1..=16",
        apply: |c, v| int(v, 1, 16).map(|n| c.rates_max_in_flight = n),
    },
    Var {
        name: "SIMULATED_SEED",
        default: "0",
        help: "seed of the simulated feed; 0 picks one at random",
        accepts: "an unsigned 64-bit integer",
        apply: |c, v| int(v, 0, u64::MAX).map(|n| c.simulated_seed = (n != 0).then_some(n)),
    },
    Var {
        name: "SIMULATED_BACKFILL",
        default: "TRUE",
        help: "fill the history window with simulated points at start-up (simulated feed and empty store only)",
        accepts: BOOL,
        apply: |c, v| boolean(v).map(|b| c.simulated_backfill = b),
    },
    Var {
        name: "HISTORY_SECONDS",
        default: "1800",
        help: "history window sent on subscribe, in seconds",
        accepts: "an integer 1..=86400",
        apply: |c, v| int(v, 1, 86_400).map(|n| c.history_seconds = n),
    },
    Var {
        name: "WORKER_THREADS",
        default: "4",
        help: "threads for blocking work (feed requests, database calls)",
        accepts: "an integer 1..=64",
        apply: |c, v| int(v, 1, 64).map(|n| c.worker_threads = n),
    },
    Var {
        name: "MAX_CONNECTIONS",
        default: "100000",
        help: "connections served at once (also bounded by the open-file limit)",
        accepts: "an integer 1..=10000000",
        apply: |c, v| int(v, 1, 10_000_000).map(|n| c.max_connections = n),
    },
    Var {
        name: "MAX_MESSAGE_BYTES",
        default: "4096",
        help: "largest incoming WebSocket message; larger closes the connection with 1009",
        accepts: "an integer 64..=1048576",
        apply: |c, v| int(v, 64, 1 << 20).map(|n| c.max_message_bytes = n),
    },
    Var {
        name: "CLIENT_QUEUE_BYTES",
        default: "1048576",
        help: "outgoing bytes a client may have waiting behind the message being sent; beyond it the client is closed with 1008",
        accepts: "an integer 4096..=1073741824",
        apply: |c, v| int(v, 4096, 1 << 30).map(|n| c.client_queue_bytes = n),
    },
    Var {
        name: "COMPRESSION",
        default: "TRUE",
        help: "accept permessage-deflate (RFC 7692) from clients that offer it: large messages (a history) go out compressed, once for all such clients",
        accepts: BOOL,
        apply: |c, v| boolean(v).map(|b| c.compression = b),
    },
    Var {
        name: "COMPRESSION_MIN_BYTES",
        default: "1024",
        help: "messages of at least this many bytes go out compressed to clients that negotiated permessage-deflate; smaller ones (a point) go out plain",
        accepts: "an integer 0..=1073741824",
        apply: |c, v| int(v, 0, 1 << 30).map(|n| c.compression_min_bytes = n),
    },
    Var {
        name: "COMPRESSION_LEVEL",
        default: "1",
        help: "DEFLATE level of compressed messages: 1 is fastest, 9 smallest",
        accepts: "an integer 1..=9",
        apply: |c, v| int(v, 1, 9).map(|n| c.compression_level = n),
    },
    Var {
        name: "PING_INTERVAL_SECONDS",
        default: "20",
        help: "silence after which the server pings a client, in seconds",
        accepts: "an integer 1..=3600",
        apply: |c, v| seconds(v, 1, 3600).map(|d| c.ping_interval = d),
    },
    Var {
        name: "PONG_TIMEOUT_SECONDS",
        default: "20",
        help: "time a pinged client has to answer before it is dropped, in seconds",
        accepts: "an integer 1..=3600",
        apply: |c, v| seconds(v, 1, 3600).map(|d| c.pong_timeout = d),
    },
    Var {
        name: "HANDSHAKE_TIMEOUT_SECONDS",
        default: "10",
        help: "time a new connection has to send its HTTP request, in seconds",
        accepts: "an integer 1..=600",
        apply: |c, v| seconds(v, 1, 600).map(|d| c.handshake_timeout = d),
    },
    Var {
        name: "WRITE_QUEUE_POINTS",
        default: "432000",
        help: "points kept for the store while it is unreachable (432000 = a day of 5 assets); beyond it the oldest are dropped",
        accepts: "an integer 1000..=100000000",
        apply: |c, v| int(v, 1000, 100_000_000).map(|n| c.write_queue_points = n),
    },
    Var {
        name: "HEALTH_MAX_TICK_AGE_SECONDS",
        default: "15",
        help: "/health answers 503 when no tick has recorded a point for this long, in seconds",
        accepts: "an integer 1..=86400",
        apply: |c, v| seconds(v, 1, 86_400).map(|d| c.health_max_tick_age = d),
    },
    Var {
        name: "FOLLOWER_FALLBACK_SECONDS",
        default: "3",
        help: "with several instances on one database: a follower that has heard no point from the leader for this long polls the feed itself until points come again, in seconds",
        accepts: "an integer 1..=3600",
        apply: |c, v| seconds(v, 1, 3600).map(|d| c.follower_fallback = d),
    },
    Var {
        name: "REUSE_PORT",
        default: "FALSE",
        help: "bind with SO_REUSEPORT, so several instances on one host share the port and the kernel spreads connections across them",
        accepts: BOOL,
        apply: |c, v| boolean(v).map(|b| c.reuse_port = b),
    },
    Var {
        name: "ALLOWED_ORIGINS",
        default: "",
        help: "browser origins allowed to open a WebSocket, comma-separated (https://app.example.com); * or empty allows any; the test page's own origin is always allowed and requests without Origin are not checked",
        accepts: "empty, *, or comma-separated http(s)://host[:port] origins",
        apply: |c, v| origins(v).map(|o| c.allowed_origins = o),
    },
    Var {
        name: "MAX_CONNECTIONS_PER_IP",
        default: "0",
        help: "connections one source address may hold; beyond it 503 and close; 0 is no limit (behind a load balancer every client has its address)",
        accepts: "an integer 0..=10000000",
        apply: |c, v| int(v, 0, 10_000_000).map(|n| c.max_connections_per_ip = n),
    },
    Var {
        name: TLS_CERT_FILE,
        default: "",
        help: "PEM file of the TLS certificate chain, the server's certificate first; with WS_ASSETS_TLS_KEY_FILE the port speaks TLS only (https://, wss://); both empty: plain HTTP and ws://",
        accepts: PEM_FILE,
        apply: |c, v| {
            c.tls_cert_file = path(v);
            Ok(())
        },
    },
    Var {
        name: TLS_KEY_FILE,
        default: "",
        help: "PEM file of the private key (RSA, ECDSA or Ed25519) of the certificate in WS_ASSETS_TLS_CERT_FILE; SIGHUP reloads both files",
        accepts: PEM_FILE,
        apply: |c, v| {
            c.tls_key_file = path(v);
            Ok(())
        },
    },
];

/// Names of the two TLS variables, which must be set together.
const TLS_CERT_FILE: &str = "TLS_CERT_FILE";
const TLS_KEY_FILE: &str = "TLS_KEY_FILE";
const PEM_FILE: &str = "empty, or the path of a PEM file";

const BOOL: &str = "TRUE, FALSE, 1, 0, yes or no, in any case";

/// A configuration value that could not be used; start-up stops with this message.
///
/// It never holds a credential: the DSN is not repeated at all, and any other value and
/// the detail have URL user info and `password=`-like values masked ([`redact::text`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Full variable name, with the prefix.
    pub variable: String,
    /// The value given, credentials masked; `None` for a variable that may hold a
    /// password anywhere (the DSN).
    pub value: Option<String>,
    /// What would have been accepted.
    pub accepts: &'static str,
    /// What exactly is wrong, when the parser can say more than `accepts`.
    pub detail: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "invalid {}={value:?}", self.variable)?,
            None => write!(f, "invalid {} (value not shown)", self.variable)?,
        }
        write!(f, ": expected {}", self.accepts)?;
        match &self.detail {
            Some(detail) => write!(f, " ({detail})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why a parser refused a value, beyond the variable's `accepts` text.
#[derive(Debug)]
struct Refused {
    /// What exactly is wrong, if the parser can tell.
    detail: Option<String>,
    /// The value may hold a password: the error must not repeat it.
    secret: bool,
}

/// A value outside what `accepts` describes; nothing more to say.
const REFUSED: Refused = Refused {
    detail: None,
    secret: false,
};

impl<E: std::error::Error> From<E> for Refused {
    fn from(e: E) -> Refused {
        Refused {
            detail: Some(e.to_string()),
            secret: false,
        }
    }
}

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
            if (var.apply)(&mut config, var.default).is_err() {
                unreachable!("the default of {} must parse", var.name);
            }
            let full = format!("{PREFIX}{}", var.name);
            if let Some(value) = lookup(&full) {
                (var.apply)(&mut config, value.trim()).map_err(|refused| ConfigError {
                    variable: full,
                    value: (!refused.secret).then(|| redact::text(&value).into_owned()),
                    accepts: var.accepts,
                    detail: refused.detail.map(|d| redact::text(&d).into_owned()),
                })?;
            }
        }
        config.tls = tls_files(&config)?;
        Ok(config)
    }

    /// The credentials in the process environment's variables (see [`secrets_from`]).
    pub fn secrets_from_env() -> Secrets {
        secrets_from(|name| std::env::var(name).ok())
    }

    /// How long points are kept in the store; `None` keeps them forever.
    pub fn retention(&self) -> Option<Duration> {
        self.retention
    }

    /// A value of every field, each overwritten by its variable's default before use.
    fn blank() -> Config {
        Config {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 0,
            enable_ui: false,
            auto_apply_migrations: false,
            log_level: LevelFilter::Off,
            postgresql: None,
            postgresql_pool_size: 0,
            postgresql_startup_timeout: Duration::ZERO,
            retention: None,
            feed: FeedSource::Simulated,
            rates_timeout: Duration::ZERO,
            rates_max_body_bytes: 0,
            rates_max_in_flight: 0,
            simulated_seed: None,
            simulated_backfill: false,
            history_seconds: 0,
            worker_threads: 0,
            max_connections: 0,
            max_message_bytes: 0,
            client_queue_bytes: 0,
            compression: false,
            compression_min_bytes: 0,
            compression_level: 0,
            ping_interval: Duration::ZERO,
            pong_timeout: Duration::ZERO,
            handshake_timeout: Duration::ZERO,
            write_queue_points: 0,
            health_max_tick_age: Duration::ZERO,
            follower_fallback: Duration::ZERO,
            reuse_port: false,
            allowed_origins: Origins::Any,
            max_connections_per_ip: 0,
            tls: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// The TLS files, paired: both set turns TLS on, neither leaves it off, one alone is
/// refused, naming the one that is missing.
fn tls_files(config: &Config) -> Result<Option<TlsFiles>, ConfigError> {
    let missing = |name: &str, given: &str| ConfigError {
        variable: format!("{PREFIX}{name}"),
        value: Some(String::new()),
        accepts: "the path of a PEM file",
        detail: Some(format!(
            "required when {PREFIX}{given} is set: set both for TLS, or neither"
        )),
    };
    match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(chain), Some(key)) => Ok(Some(TlsFiles {
            chain: chain.clone(),
            key: key.clone(),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(missing(TLS_KEY_FILE, TLS_CERT_FILE)),
        (None, Some(_)) => Err(missing(TLS_CERT_FILE, TLS_KEY_FILE)),
    }
}

/// The credentials the variables hold, as `lookup` returns them, whether or not they
/// parse: the password of a URL's user info (the DSN's, the feed URL's) and the values of
/// `password=`-like pairs (a key=value DSN, a URL query). Every message the service
/// prints is scrubbed of them ([`Secrets::scrub`]).
pub fn secrets_from(lookup: impl Fn(&str) -> Option<String>) -> Secrets {
    let mut secrets = Secrets::new();
    for var in VARS {
        if let Some(value) = lookup(&format!("{PREFIX}{}", var.name)) {
            secrets.add_found_in(&value);
        }
    }
    secrets
}

/// The `--help` text: usage, then every variable with its default.
pub fn help_text() -> String {
    let mut out = String::from(
        "ws_assets: streams currency quotes over WebSocket.\n\n\
         Usage:\n  ws_assets            run the service\n  \
         ws_assets migrate    apply the database migrations and exit\n  \
         ws_assets health     ask the running service's GET /health on WS_ASSETS_HOST:WS_ASSETS_PORT\n                       \
         (0.0.0.0 and :: are asked on loopback; over https when TLS is configured);\n                       \
         prints one line, exits 0 on 200, else 1\n  \
         ws_assets --version  print the version\n  \
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

/// A file's path; empty is none.
fn path(v: &str) -> Option<PathBuf> {
    (!v.is_empty()).then(|| PathBuf::from(v))
}

/// An integer in `lo..=hi`, as the field's type (the range keeps it within that type).
fn int<T: TryFrom<u64>>(v: &str, lo: u64, hi: u64) -> Result<T, Refused> {
    let n = v
        .parse::<u64>()
        .ok()
        .filter(|n| (lo..=hi).contains(n))
        .ok_or(REFUSED)?;
    T::try_from(n).map_err(|_| REFUSED)
}

/// Whole seconds in `lo..=hi`.
fn seconds(v: &str, lo: u64, hi: u64) -> Result<Duration, Refused> {
    int(v, lo, hi).map(Duration::from_secs)
}

/// Whole milliseconds in `lo..=hi`.
fn millis(v: &str, lo: u64, hi: u64) -> Result<Duration, Refused> {
    int(v, lo, hi).map(Duration::from_millis)
}

/// Whole days up to `hi`; 0 means forever (`None`).
fn days_or_forever(v: &str, hi: u64) -> Result<Option<Duration>, Refused> {
    let days: u64 = int(v, 0, hi)?;
    Ok((days > 0).then(|| Duration::from_secs(days * 86_400)))
}

fn boolean(v: &str) -> Result<bool, Refused> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(REFUSED),
    }
}

fn address(v: &str) -> Result<IpAddr, Refused> {
    if v.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    v.parse().map_err(|_| REFUSED)
}

fn log_level(v: &str) -> Result<LevelFilter, Refused> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "off" => LevelFilter::Off,
        "critical" | "error" => LevelFilter::Error,
        "warning" | "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return Err(REFUSED),
    })
}

fn feed(v: &str) -> Result<FeedSource, Refused> {
    Ok(FeedSource::parse(v)?)
}

fn origins(v: &str) -> Result<Origins, Refused> {
    Ok(Origins::parse(v)?)
}

/// Empty: no database. Otherwise the DSN; a refused one is not repeated (it may hold a
/// password), and the parser's reason never contains the password.
fn database(v: &str) -> Result<Option<PgSettings>, Refused> {
    if v.is_empty() {
        return Ok(None);
    }
    match PgSettings::parse(v) {
        Ok(settings) => Ok(Some(settings)),
        Err(e) => Err(Refused {
            detail: Some(e.to_string()),
            secret: true,
        }),
    }
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
        assert!(c.postgresql.is_none());
        assert_eq!(c.postgresql_pool_size, 10);
        assert_eq!(c.feed, FeedSource::Simulated);
        assert_eq!(c.simulated_seed, None);
        assert_eq!(c.retention(), Some(Duration::from_secs(30 * 86_400)));
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
        assert_eq!(err.value.as_deref(), Some("80a"));
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
        let feed = with(&[("RATES_URL", "https://x/rates")]).unwrap().feed;
        assert!(matches!(feed, FeedSource::Fxcm(url) if url.shown() == "https://x/rates"));
    }

    #[test]
    fn the_feed_url_follows_one_rule() {
        let err = with(&[("RATES_URL", "http://")]).unwrap_err();
        assert_eq!(err.variable, "WS_ASSETS_RATES_URL");
        let text = err.to_string();
        assert!(text.contains("\"http://\""), "{text}");
        assert!(text.contains("not a valid URL"), "{text}");
        assert!(with(&[("RATES_URL", "http:///path")]).is_err());

        let feed = with(&[("RATES_URL", "HTTPS://host/x")]).unwrap().feed;
        assert!(matches!(feed, FeedSource::Fxcm(url) if url.shown() == "https://host/x"));
    }

    #[test]
    fn the_dsn_is_parsed_once_and_its_errors_hide_the_value() {
        let c = with(&[("POSTGRESQL_DSN", "postgresql+asyncpg://u:p@h:6432/db")]).unwrap();
        let pg = c.postgresql.unwrap();
        assert_eq!(pg.redacted(), "postgresql://u@h:6432/db");
        assert!(
            with(&[("POSTGRESQL_DSN", "  ")])
                .unwrap()
                .postgresql
                .is_none()
        );

        for bad in [
            "mysql://u:hunter2@h/db",
            "postgresql://u:hunter2@h:notaport/db",
        ] {
            let err = with(&[("POSTGRESQL_DSN", bad)]).unwrap_err();
            assert_eq!(err.variable, "WS_ASSETS_POSTGRESQL_DSN");
            assert_eq!(err.value, None);
            let text = err.to_string();
            assert!(text.contains("WS_ASSETS_POSTGRESQL_DSN"), "{text}");
            assert!(text.contains("expected"), "{text}");
            assert!(err.detail.is_some(), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn a_refused_feed_url_is_shown_without_its_credentials() {
        for bad in [
            "ftp://u:hunter2@h/x",
            "http://u:hunter2@h:notaport/x",
            "https://u:hunter2@/x",
        ] {
            let err = with(&[("RATES_URL", bad)]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("WS_ASSETS_RATES_URL"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
        let text = with(&[("RATES_URL", "ftp://u:hunter2@h/x")])
            .unwrap_err()
            .to_string();
        assert!(text.contains("ftp://u:***@h/x"), "{text}");
    }

    #[test]
    fn secrets_are_found_in_every_variable_that_holds_one() {
        let env = [
            (
                "WS_ASSETS_POSTGRESQL_DSN",
                "postgresql://u:dsn-secret@h/db?sslpassword=ssl-secret",
            ),
            ("WS_ASSETS_RATES_URL", "https://feed:feed-secret@h/x"),
            ("WS_ASSETS_PORT", "8080"),
        ];
        let secrets = secrets_from(|name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        });
        assert_eq!(
            secrets.scrub("dsn-secret ssl-secret feed-secret 8080"),
            "*** *** *** 8080"
        );
        let kv = secrets_from(|name| {
            (name == "WS_ASSETS_POSTGRESQL_DSN").then(|| "host=h password='kv pass'".into())
        });
        assert_eq!(kv.scrub("said: kv pass"), "said: ***");
    }

    #[test]
    fn seeds_and_retention_keep_their_special_zero() {
        let c = with(&[("SIMULATED_SEED", "0"), ("RETENTION_DAYS", "0")]).unwrap();
        assert_eq!(c.simulated_seed, None);
        assert_eq!(c.retention(), None);
        let c = with(&[("SIMULATED_SEED", "42"), ("RETENTION_DAYS", "2")]).unwrap();
        assert_eq!(c.simulated_seed, Some(42));
        assert_eq!(c.retention(), Some(Duration::from_secs(2 * 86_400)));
    }

    /// Every `an integer LO..=HI` that `--help` promises is the range the parser applies.
    #[test]
    fn integer_ranges_are_the_ones_documented() {
        for var in VARS {
            let Some(range) = var.accepts.strip_prefix("an integer ") else {
                continue;
            };
            let (lo, hi) = range.split_once("..=").unwrap();
            let (lo, hi): (u64, u64) = (lo.parse().unwrap(), hi.parse().unwrap());
            assert!(with(&[(var.name, &lo.to_string())]).is_ok(), "{}", var.name);
            assert!(with(&[(var.name, &hi.to_string())]).is_ok(), "{}", var.name);
            assert!(
                with(&[(var.name, &(hi + 1).to_string())]).is_err(),
                "{}",
                var.name
            );
            if lo > 0 {
                assert!(
                    with(&[(var.name, &(lo - 1).to_string())]).is_err(),
                    "{}",
                    var.name
                );
            }
        }
    }

    #[test]
    fn tls_needs_both_files_or_neither() {
        assert!(with(&[]).unwrap().tls.is_none());
        assert!(
            with(&[("TLS_CERT_FILE", " "), ("TLS_KEY_FILE", "")])
                .unwrap()
                .tls
                .is_none()
        );
        let tls = with(&[("TLS_CERT_FILE", "/c.pem"), ("TLS_KEY_FILE", "/k.pem")])
            .unwrap()
            .tls
            .unwrap();
        assert_eq!(tls.chain, PathBuf::from("/c.pem"));
        assert_eq!(tls.key, PathBuf::from("/k.pem"));

        let err = with(&[("TLS_CERT_FILE", "/c.pem")]).unwrap_err();
        assert_eq!(err.variable, "WS_ASSETS_TLS_KEY_FILE");
        let text = err.to_string();
        assert!(text.contains("WS_ASSETS_TLS_CERT_FILE is set"), "{text}");
        let err = with(&[("TLS_KEY_FILE", "/k.pem")]).unwrap_err();
        assert_eq!(err.variable, "WS_ASSETS_TLS_CERT_FILE");
        assert!(err.to_string().contains("set both"), "{err}");
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
