//! PostgreSQL DSN handling: parse the forms operators already use, render one for logs.
//!
//! Accepted: `postgresql://`, `postgres://`, any `postgresql+driver://` (the original
//! service used `postgresql+asyncpg://`), and libpq's `key=value` form. The rendered form
//! for logs and error messages never carries the password.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use postgres::config::Host;

// Also reachable here, where callers that parse a DSN look for it.
pub use super::pgerror::error_text;

/// TCP connect timeout used when the DSN sets none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long sent data may stay unacknowledged before the kernel drops the connection.
pub const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle time before the first TCP keepalive probe (the library's default is 2 hours).
pub const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
/// Time between unanswered keepalive probes.
pub const DEFAULT_KEEPALIVES_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered keepalive probes before the connection counts as dead.
pub const DEFAULT_KEEPALIVES_RETRIES: u32 = 3;
/// `application_name` reported to the server (visible in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "ws_assets";

/// The keepalive idle time `postgres::Config` starts with; used to tell "unset" from "set".
const LIBRARY_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// Why a DSN was refused. The text never contains the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DsnError {
    /// The DSN is empty or blank.
    Empty,
    /// The URL scheme is not a PostgreSQL one (e.g. `mysql://`).
    UnsupportedScheme(String),
    /// The DSN could not be parsed; the text says which part.
    Invalid(String),
}

impl fmt::Display for DsnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DsnError::Empty => f.write_str("the PostgreSQL DSN is empty"),
            DsnError::UnsupportedScheme(scheme) => write!(
                f,
                "unsupported DSN scheme `{scheme}://`; use postgresql://user:password@host:5432/database"
            ),
            DsnError::Invalid(why) => write!(f, "invalid PostgreSQL DSN: {why}"),
        }
    }
}

impl Error for DsnError {}

/// `WS_ASSETS_POSTGRESQL_DSN`, parsed once: what every connection of the service opens with.
#[derive(Debug, Clone)]
pub struct PgSettings {
    postgres: postgres::Config,
}

impl PgSettings {
    /// Parses a DSN in any of the accepted forms (see [`parse`]).
    pub fn parse(dsn: &str) -> Result<PgSettings, DsnError> {
        parse(dsn).map(PgSettings::from)
    }

    /// The driver's settings.
    pub fn postgres(&self) -> &postgres::Config {
        &self.postgres
    }

    /// The connection target for logs, without the password; see [`redacted`].
    pub fn redacted(&self) -> String {
        redacted(&self.postgres)
    }
}

impl From<postgres::Config> for PgSettings {
    fn from(postgres: postgres::Config) -> PgSettings {
        PgSettings { postgres }
    }
}

/// Parses a DSN into a `postgres::Config`, dropping any `+driver` part of the scheme.
///
/// A DSN without a host connects to `localhost`; the port defaults to 5432 and the user
/// to the operating-system user, as with libpq.
pub fn parse(dsn: &str) -> Result<postgres::Config, DsnError> {
    let dsn = dsn.trim();
    if dsn.is_empty() {
        return Err(DsnError::Empty);
    }
    let normalized = match url_scheme(dsn) {
        Some((scheme, rest)) => {
            let base = scheme
                .split_once('+')
                .map_or(scheme, |(base, _driver)| base);
            if !base.eq_ignore_ascii_case("postgresql") && !base.eq_ignore_ascii_case("postgres") {
                return Err(DsnError::UnsupportedScheme(scheme.to_string()));
            }
            format!("postgresql://{rest}")
        }
        None => dsn.to_string(),
    };
    let mut config: postgres::Config = normalized
        .parse()
        .map_err(|e: postgres::Error| DsnError::Invalid(plain_names_only(&error_text(&e))))?;
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        config.host("localhost");
    }
    Ok(config)
}

/// The driver quotes the option it refuses (`unknown option `...``); in a DSN that is
/// not quite a URL (`postgresql:/u:secret@h/db?x=1`) that "option" carries the password.
/// A quoted part that is not a plain option name is left out.
fn plain_names_only(text: &str) -> String {
    let mut parts = text.split('`');
    let mut out = String::from(parts.next().unwrap_or_default());
    for (i, part) in parts.enumerate() {
        out.push('`');
        let quoted = i % 2 == 0;
        if quoted && !part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push_str("(not shown)");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// Splits `scheme://rest` when the DSN is a URL; `None` for the `key=value` form.
fn url_scheme(dsn: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = dsn.split_once("://")?;
    let is_scheme = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    is_scheme.then_some((scheme, rest))
}

/// Renders the connection target for logs: `postgresql://user@host:port/database`, no password.
pub fn redacted(config: &postgres::Config) -> String {
    let mut out = String::from("postgresql://");
    if let Some(user) = config.get_user() {
        out.push_str(user);
        out.push('@');
    }
    out.push_str(&host_list(config));
    out.push('/');
    if let Some(db) = config.get_dbname() {
        out.push_str(db);
    }
    out
}

/// `host:port[,host:port...]` of a config, the part of [`redacted`] that names the server.
pub fn host_list(config: &postgres::Config) -> String {
    let ports = config.get_ports();
    let port_of = |i: usize| match ports {
        [] => 5432,
        [only] => *only,
        many => many.get(i).copied().unwrap_or(5432),
    };
    let mut names: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) if name.contains(':') => format!("[{name}]"),
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    if names.is_empty() {
        names = config
            .get_hostaddrs()
            .iter()
            .map(|addr| match addr {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                std::net::IpAddr::V4(v4) => v4.to_string(),
            })
            .collect();
    }
    names
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{name}:{}", port_of(i)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A copy of `config` with the service's timeouts and keepalives filled in where the DSN set none.
///
/// Without these a dead or black-holed server can block a worker (or r2d2's health check,
/// which has no timeout of its own) for hours.
pub fn with_service_defaults(config: &postgres::Config) -> postgres::Config {
    let mut config = config.clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(DEFAULT_TCP_USER_TIMEOUT);
    }
    if config.get_keepalives() {
        if config.get_keepalives_idle() == LIBRARY_KEEPALIVES_IDLE {
            config.keepalives_idle(DEFAULT_KEEPALIVES_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(DEFAULT_KEEPALIVES_INTERVAL);
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(DEFAULT_KEEPALIVES_RETRIES);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION_NAME);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(dsn: &str) -> postgres::Config {
        match parse(dsn) {
            Ok(config) => config,
            Err(e) => panic!("{dsn} should parse: {e}"),
        }
    }

    #[test]
    fn accepts_both_url_schemes() {
        for dsn in [
            "postgresql://alice:pw@db.example:5433/quotes",
            "postgres://alice:pw@db.example:5433/quotes",
        ] {
            let config = parsed(dsn);
            assert_eq!(config.get_user(), Some("alice"));
            assert_eq!(config.get_password(), Some(&b"pw"[..]));
            assert_eq!(config.get_dbname(), Some("quotes"));
            assert_eq!(config.get_hosts(), &[Host::Tcp("db.example".into())]);
            assert_eq!(config.get_ports(), &[5433]);
        }
    }

    #[test]
    fn drops_any_driver_suffix() {
        for dsn in [
            "postgresql+asyncpg://user:password@localhost:5432/database",
            "postgresql+psycopg2://user:password@localhost:5432/database",
            "POSTGRES+whatever://user:password@localhost:5432/database",
        ] {
            let config = parsed(dsn);
            assert_eq!(config.get_user(), Some("user"));
            assert_eq!(config.get_dbname(), Some("database"));
            assert_eq!(config.get_ports(), &[5432]);
        }
    }

    fn refused(dsn: &str) -> DsnError {
        match parse(dsn) {
            Err(e) => e,
            Ok(_) => panic!("{dsn} should be refused"),
        }
    }

    #[test]
    fn refuses_other_schemes_and_blank_input() {
        assert_eq!(
            refused("mysql://u:p@h/db"),
            DsnError::UnsupportedScheme("mysql".into())
        );
        assert_eq!(
            refused("sqlite+pysqlite://x"),
            DsnError::UnsupportedScheme("sqlite+pysqlite".into())
        );
        assert_eq!(refused("   "), DsnError::Empty);
    }

    #[test]
    fn invalid_dsn_error_does_not_leak_the_password() {
        let err = refused("postgresql://u:hunter2@h:notaport/db");
        let text = err.to_string();
        assert!(matches!(err, DsnError::Invalid(_)), "{text}");
        assert!(text.contains("port"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn a_dsn_that_is_almost_a_url_does_not_leak_the_password() {
        // Found by fuzzing: read as key=value, the whole text became an unknown
        // option's name, and the driver's error quoted it.
        for dsn in [
            "postgresql:/u:hunter2@h/db?connect_timeout=3",
            "le.com:5432/ws_asptostgresql://ws:hunter2@db.example.com:5432/ws_assetsms?simeout=3",
        ] {
            let text = refused(dsn).to_string();
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("unknown option"), "{text}");
        }
        let text = refused("host=h frobnicate=1").to_string();
        assert!(
            text.contains("`frobnicate`"),
            "plain names are still shown: {text}"
        );
    }

    #[test]
    fn key_value_form_is_accepted() {
        let config = parsed("host=127.0.0.1 port=6000 user=bob dbname=q password='a b'");
        assert_eq!(config.get_ports(), &[6000]);
        assert_eq!(config.get_user(), Some("bob"));
        assert_eq!(config.get_password(), Some(&b"a b"[..]));
    }

    #[test]
    fn missing_host_means_localhost_and_port_defaults_to_5432() {
        let config = parsed("postgresql:///quotes");
        assert_eq!(config.get_hosts(), &[Host::Tcp("localhost".into())]);
        assert_eq!(redacted(&config), "postgresql://localhost:5432/quotes");
    }

    #[test]
    fn percent_encoded_password_is_decoded() {
        let config = parsed("postgresql://u:p%40ss%2Fw@h/db");
        assert_eq!(config.get_password(), Some(&b"p@ss/w"[..]));
    }

    #[test]
    fn redacted_names_user_host_port_and_database_but_not_the_password() {
        let config = parsed("postgresql+asyncpg://svc:t0p-secret@10.1.2.3:6432/ws");
        let shown = redacted(&config);
        assert_eq!(shown, "postgresql://svc@10.1.2.3:6432/ws");
        assert!(!shown.contains("t0p-secret"));
    }

    #[test]
    fn redacted_lists_every_host_with_its_port() {
        let config = parsed("postgresql://u@a:1,b,[::1]:3/db");
        assert_eq!(redacted(&config), "postgresql://u@a:1,b:5432,[::1]:3/db");
        assert_eq!(host_list(&parsed("postgres://h:7/x")), "h:7");
    }

    #[test]
    fn service_defaults_fill_gaps_only() {
        let plain = with_service_defaults(&parsed("postgresql://u@h/db"));
        assert_eq!(plain.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(
            plain.get_tcp_user_timeout(),
            Some(&DEFAULT_TCP_USER_TIMEOUT)
        );
        assert_eq!(plain.get_keepalives_idle(), DEFAULT_KEEPALIVES_IDLE);
        assert_eq!(
            plain.get_keepalives_interval(),
            Some(DEFAULT_KEEPALIVES_INTERVAL)
        );
        assert_eq!(
            plain.get_keepalives_retries(),
            Some(DEFAULT_KEEPALIVES_RETRIES)
        );
        assert_eq!(plain.get_application_name(), Some(APPLICATION_NAME));

        let chosen = with_service_defaults(&parsed(
            "postgresql://u@h/db?connect_timeout=1&tcp_user_timeout=2&keepalives_idle=3&application_name=mine",
        ));
        assert_eq!(chosen.get_connect_timeout(), Some(&Duration::from_secs(1)));
        assert_eq!(chosen.get_tcp_user_timeout(), Some(&Duration::from_secs(2)));
        assert_eq!(chosen.get_keepalives_idle(), Duration::from_secs(3));
        assert_eq!(chosen.get_application_name(), Some("mine"));
    }
}
