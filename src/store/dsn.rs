//! PostgreSQL DSN handling: parse the forms operators already use, render one for logs.
//!
//! Accepted: `postgresql://`, `postgres://`, any `postgresql+driver://` (the original
//! service used `postgresql+asyncpg://`), and libpq's `key=value` form. The rendered form
//! for logs and error messages never carries the password.
//!
//! TLS follows libpq: `sslmode` is `disable`, `prefer` (the default), `require`,
//! `verify-ca` or `verify-full`, and `sslrootcert` names a PEM file of trusted roots (or
//! `system`). The driver knows only the first three modes and no `sslrootcert`, so both
//! are taken out of the DSN here, before the driver parses the rest.

use std::error::Error;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use postgres::config::Host;

use crate::{conninfo, redact};

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

/// libpq's `sslmode`: whether to use TLS, and what to check of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it; the certificate is checked only against an
    /// `sslrootcert` file, when one is named.
    Prefer,
    /// TLS always; the certificate is checked only against an `sslrootcert` file, when one
    /// is named (libpq's rule: `require` with a root file behaves as `verify-ca`).
    Require,
    /// TLS, and the server's certificate must chain to a trusted root; its name is not checked.
    VerifyCa,
    /// TLS, the certificate must chain to a trusted root and name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Every mode, in the order of increasing protection.
    pub const ALL: [SslMode; 5] = [
        SslMode::Disable,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// The DSN's spelling, e.g. `verify-full`.
    pub fn label(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(text: &str) -> Result<SslMode, DsnError> {
        SslMode::ALL
            .into_iter()
            .find(|mode| mode.label() == text)
            .ok_or_else(|| {
                DsnError::Invalid(format!(
                    "sslmode {text:?} is not supported; use disable, prefer, require, verify-ca or verify-full"
                ))
            })
    }
}

/// Where the roots that may sign the server's certificate come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The system's trusted roots (`sslrootcert=system`, and what `verify-ca` and
    /// `verify-full` use when no `sslrootcert` is given).
    System,
    /// The certificates in this PEM file.
    File(PathBuf),
}

/// What the server's certificate must pass once TLS is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// Nothing: the session is encrypted, but the server is not authenticated.
    Nothing,
    /// The certificate chains to one of these roots; its name is not checked.
    Chain(RootCerts),
    /// The certificate chains to one of these roots and names the host connected to.
    ChainAndHost(RootCerts),
}

/// `WS_ASSETS_POSTGRESQL_DSN`, parsed once: what every connection of the service opens with.
#[derive(Debug, Clone)]
pub struct PgSettings {
    postgres: postgres::Config,
    ssl_mode: SslMode,
    root_certs: Option<RootCerts>,
}

impl PgSettings {
    /// Parses a DSN in any of the accepted forms, `sslmode` and `sslrootcert` included.
    ///
    /// A DSN without a host connects to `localhost` (or to its `hostaddr`, which then also
    /// names the server for TLS); the port defaults to 5432 and the user to the
    /// operating-system user, as with libpq.
    pub fn parse(dsn: &str) -> Result<PgSettings, DsnError> {
        let dsn = dsn.trim();
        if dsn.is_empty() {
            return Err(DsnError::Empty);
        }
        let (normalized, is_url) = match url_scheme(dsn) {
            Some((scheme, rest)) => {
                let base = scheme
                    .split_once('+')
                    .map_or(scheme, |(base, _driver)| base);
                if !base.eq_ignore_ascii_case("postgresql")
                    && !base.eq_ignore_ascii_case("postgres")
                {
                    return Err(DsnError::UnsupportedScheme(scheme.to_string()));
                }
                (format!("postgresql://{rest}"), true)
            }
            None => (dsn.to_string(), false),
        };
        let (for_driver, tls) = take_tls_params(&normalized, is_url)?;
        let mut postgres: postgres::Config = for_driver.parse().map_err(|e: postgres::Error| {
            DsnError::Invalid(redact::quoted_names_only(&error_text(&e)))
        })?;
        // The driver ends a URL's user info at its first `@`: an unencoded `@` in the
        // password leaves the rest of the password in the host name, which messages show.
        if postgres
            .get_hosts()
            .iter()
            .any(|host| matches!(host, Host::Tcp(name) if name.contains('@')))
        {
            return Err(DsnError::Invalid(
                "the host name contains `@`; write an `@` in the user name or password as %40"
                    .to_string(),
            ));
        }
        if postgres.get_hosts().is_empty() {
            // The driver's TLS needs a name for the server: with only `hostaddr`, it is
            // the address (which `verify-full` then checks against the certificate).
            let addrs = postgres.get_hostaddrs().to_vec();
            if addrs.is_empty() {
                postgres.host("localhost");
            }
            for addr in addrs {
                postgres.host(&addr.to_string());
            }
        }
        // libpq: `sslrootcert=system` makes verify-full the default and refuses weaker modes,
        // since trusting every public CA without checking the name would admit anyone.
        let ssl_mode = match (tls.ssl_mode, &tls.root_certs) {
            (None, Some(RootCerts::System)) => SslMode::VerifyFull,
            (Some(mode), Some(RootCerts::System)) if mode != SslMode::VerifyFull => {
                return Err(DsnError::Invalid(format!(
                    "sslrootcert=system needs sslmode=verify-full (not {})",
                    mode.label()
                )));
            }
            (mode, _) => mode.unwrap_or(SslMode::Prefer),
        };
        postgres.ssl_mode(match ssl_mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                postgres::config::SslMode::Require
            }
        });
        Ok(PgSettings {
            postgres,
            ssl_mode,
            root_certs: tls.root_certs,
        })
    }

    /// The driver's settings (its `sslmode` is only disable, prefer or require).
    pub fn postgres(&self) -> &postgres::Config {
        &self.postgres
    }

    /// The `sslmode` given, or `prefer`.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// What the server's certificate must pass, by libpq's rules: `verify-ca` checks the
    /// chain and `verify-full` the name too, against `sslrootcert` or else the system's
    /// roots; `prefer` and `require` check the chain only when `sslrootcert` names a file.
    pub fn verify(&self) -> Verify {
        let roots = || self.root_certs.clone().unwrap_or(RootCerts::System);
        match (self.ssl_mode, &self.root_certs) {
            (SslMode::VerifyFull, _) => Verify::ChainAndHost(roots()),
            (SslMode::VerifyCa, _) => Verify::Chain(roots()),
            (SslMode::Prefer | SslMode::Require, Some(RootCerts::File(path))) => {
                Verify::Chain(RootCerts::File(path.clone()))
            }
            _ => Verify::Nothing,
        }
    }

    /// The connection target for logs, without the password: see [`redacted`]; a TLS
    /// setting other than the default follows as `?sslmode=...&sslrootcert=...`.
    pub fn redacted(&self) -> String {
        let mut out = redacted(&self.postgres);
        let mut params = Vec::new();
        if self.ssl_mode != SslMode::Prefer {
            params.push(format!("sslmode={}", self.ssl_mode.label()));
        }
        match &self.root_certs {
            Some(RootCerts::File(path)) => params.push(format!("sslrootcert={}", path.display())),
            Some(RootCerts::System) => params.push("sslrootcert=system".to_string()),
            None => {}
        }
        if !params.is_empty() {
            out.push('?');
            out.push_str(&params.join("&"));
        }
        out
    }
}

impl From<postgres::Config> for PgSettings {
    /// Settings from a driver config: its `sslmode`, and no `sslrootcert`.
    fn from(postgres: postgres::Config) -> PgSettings {
        let ssl_mode = match postgres.get_ssl_mode() {
            postgres::config::SslMode::Disable => SslMode::Disable,
            postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        PgSettings {
            postgres,
            ssl_mode,
            root_certs: None,
        }
    }
}

/// Parses a DSN and returns the driver's part of it (see [`PgSettings::parse`]); a
/// `verify-ca` or `verify-full` mode shows there as `require`, and `sslrootcert` is dropped.
pub fn parse(dsn: &str) -> Result<postgres::Config, DsnError> {
    PgSettings::parse(dsn).map(|settings| settings.postgres)
}

/// The TLS parameters taken out of a DSN.
#[derive(Debug, Default, PartialEq)]
struct TlsParams {
    ssl_mode: Option<SslMode>,
    root_certs: Option<RootCerts>,
}

impl TlsParams {
    /// Records `key=value` if it is a TLS parameter; `false` for any other key.
    fn take(&mut self, key: &str, value: &str) -> Result<bool, DsnError> {
        match key {
            "sslmode" => self.ssl_mode = Some(SslMode::parse(value)?),
            "sslrootcert" => {
                self.root_certs = match value {
                    "" => None,
                    "system" => Some(RootCerts::System),
                    path => Some(RootCerts::File(PathBuf::from(path))),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Splits a DSN into its text without `sslmode` and `sslrootcert`, and those two.
/// The rest is left as written, for the driver to parse (and to report errors in).
fn take_tls_params(dsn: &str, is_url: bool) -> Result<(String, TlsParams), DsnError> {
    let mut tls = TlsParams::default();
    if !is_url {
        let mut cut = Vec::new();
        for pair in conninfo::pairs(dsn) {
            if tls.take(pair.key, &pair.value)? {
                cut.push(pair.span);
            }
        }
        return Ok((remove(dsn, &cut), tls));
    }
    // As the driver reads a URL: credentials up to the first `@`, then the query after
    // the first `?`, as `&`-separated, percent-encoded `key=value` pairs.
    let after_credentials = dsn.find('@').map_or(0, |at| at + 1);
    let Some((base, query)) = dsn[after_credentials..]
        .split_once('?')
        .map(|(head, query)| (&dsn[..after_credentials + head.len()], query))
    else {
        return Ok((dsn.to_string(), tls));
    };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !tls.take(&decode(key)?, &decode(value)?)? {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, tls))
}

fn decode(text: &str) -> Result<String, DsnError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| DsnError::Invalid("a parameter is not valid percent-encoded UTF-8".into()))
}

/// `text` without the byte ranges in `cut` (ascending, not overlapping).
fn remove(text: &str, cut: &[Range<usize>]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for range in cut {
        out.push_str(&text[from..range.start]);
        from = range.end;
    }
    out.push_str(&text[from..]);
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

/// A copy of `config` whose server cancels any statement of the session that runs longer
/// than `timeout`.
///
/// `-c statement_timeout=<ms>` goes in front of the connection's `options` (libpq's
/// switches for the server process, sent with the start-up message), so no `SET` round
/// trip follows each new connection. The DSN's own `options` come after it and are kept
/// as written: the server applies switches in order, so a `statement_timeout` the DSN sets
/// is the one in force.
pub fn with_statement_timeout(config: &postgres::Config, timeout: Duration) -> postgres::Config {
    let mut config = config.clone();
    let ours = format!("-c statement_timeout={}", timeout.as_millis());
    let options = match config.get_options().map(str::trim) {
        Some(theirs) if !theirs.is_empty() => format!("{ours} {theirs}"),
        _ => ours,
    };
    config.options(&options);
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
    fn an_unencoded_at_sign_in_the_password_is_refused_without_showing_it() {
        let text = refused("postgresql://u:hun@ter2@h/db").to_string();
        assert!(text.contains("%40"), "{text}");
        assert!(!text.contains("ter2") && !text.contains("hun"), "{text}");
        assert_eq!(
            parsed("postgresql://u:hun%40ter2@h/db").get_password(),
            Some(&b"hun@ter2"[..])
        );
    }

    #[test]
    fn driver_errors_never_carry_the_password() {
        for dsn in [
            "postgresql://u:hunter2@h:notaport/db",
            "postgresql://u:hunter2@h/db?sslpassword=hunter2",
            "postgresql://u:hunter2@[::1/db",
            "postgresql://u:hunter2@h/db?connect_timeout=hunter2",
            "host=h password=hunter2 port=notaport",
            "host=h password='hunter2 port=5",
            "host=h password=hunter2 sslpassword=hunter2",
            "host=h password=hun ter2",
        ] {
            let text = refused(dsn).to_string();
            assert!(
                !text.contains("hunter2") && !text.contains("ter2"),
                "{dsn}: {text}"
            );
        }
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

    #[test]
    fn the_statement_timeout_goes_first_in_the_options_and_the_dsns_own_follow() {
        let timeout = Duration::from_millis(1500);
        let plain = with_statement_timeout(&parsed("postgresql://u@h/db"), timeout);
        assert_eq!(plain.get_options(), Some("-c statement_timeout=1500"));
        let blank = with_statement_timeout(&parsed("host=h options=' '"), timeout);
        assert_eq!(blank.get_options(), Some("-c statement_timeout=1500"));
        let theirs = with_statement_timeout(
            &parsed(
                "postgresql://u@h/db?options=-c%20statement_timeout%3D5s%20-c%20lock_timeout%3D2s",
            ),
            timeout,
        );
        assert_eq!(
            theirs.get_options(),
            Some("-c statement_timeout=1500 -c statement_timeout=5s -c lock_timeout=2s")
        );
        let kv = with_statement_timeout(&parsed(r"host=h options='-c search_path=a\\ b'"), timeout);
        assert_eq!(
            kv.get_options(),
            Some(r"-c statement_timeout=1500 -c search_path=a\ b")
        );
    }

    fn settings(dsn: &str) -> PgSettings {
        match PgSettings::parse(dsn) {
            Ok(settings) => settings,
            Err(e) => panic!("{dsn} should parse: {e}"),
        }
    }

    fn file(path: &str) -> RootCerts {
        RootCerts::File(PathBuf::from(path))
    }

    #[test]
    fn prefer_is_the_default_and_checks_nothing() {
        let s = settings("postgresql://u@h/db");
        assert_eq!(s.ssl_mode(), SslMode::Prefer);
        assert_eq!(s.verify(), Verify::Nothing);
        assert_eq!(
            s.postgres().get_ssl_mode(),
            postgres::config::SslMode::Prefer
        );
        assert_eq!(s.redacted(), "postgresql://u@h:5432/db");
    }

    #[test]
    fn every_sslmode_is_read_from_urls_and_keyword_pairs() {
        use postgres::config::SslMode as Driver;
        for (mode, driver, verify) in [
            (SslMode::Disable, Driver::Disable, Verify::Nothing),
            (SslMode::Prefer, Driver::Prefer, Verify::Nothing),
            (SslMode::Require, Driver::Require, Verify::Nothing),
            (
                SslMode::VerifyCa,
                Driver::Require,
                Verify::Chain(RootCerts::System),
            ),
            (
                SslMode::VerifyFull,
                Driver::Require,
                Verify::ChainAndHost(RootCerts::System),
            ),
        ] {
            let label = mode.label();
            for dsn in [
                format!("postgresql+asyncpg://u:pw@h:6432/db?sslmode={label}"),
                format!("host=h port=6432 user=u password=pw dbname=db sslmode={label}"),
            ] {
                let s = settings(&dsn);
                assert_eq!(s.ssl_mode(), mode, "{dsn}");
                assert_eq!(s.postgres().get_ssl_mode(), driver, "{dsn}");
                assert_eq!(s.verify(), verify, "{dsn}");
                assert_eq!(s.postgres().get_dbname(), Some("db"), "{dsn}");
                assert_eq!(s.postgres().get_ports(), &[6432], "{dsn}");
            }
        }
    }

    #[test]
    fn sslrootcert_names_the_roots_and_makes_require_check_the_chain() {
        let s = settings("postgresql://u@h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem");
        assert_eq!(s.verify(), Verify::ChainAndHost(file("/etc/ca.pem")));
        assert_eq!(
            s.redacted(),
            "postgresql://u@h:5432/db?sslmode=verify-full&sslrootcert=/etc/ca.pem"
        );
        // libpq: require (and prefer) with a root file check the chain, as verify-ca.
        let s = settings("postgresql://u@h/db?sslrootcert=%2Fsrv%2Fmy%20ca.pem&sslmode=require");
        assert_eq!(s.verify(), Verify::Chain(file("/srv/my ca.pem")));
        let s = settings("host=h sslrootcert='/p q/ca.pem' dbname=d");
        assert_eq!(s.ssl_mode(), SslMode::Prefer);
        assert_eq!(s.verify(), Verify::Chain(file("/p q/ca.pem")));
        assert_eq!(s.postgres().get_dbname(), Some("d"));
        let s = settings(r"host=h sslmode = verify-ca sslrootcert=/a\ b.pem");
        assert_eq!(s.verify(), Verify::Chain(file("/a b.pem")));
    }

    #[test]
    fn sslrootcert_system_means_verify_full_as_in_libpq() {
        let s = settings("postgresql://u@h/db?sslrootcert=system");
        assert_eq!(s.ssl_mode(), SslMode::VerifyFull);
        assert_eq!(s.verify(), Verify::ChainAndHost(RootCerts::System));
        let err = refused("postgresql://u:hunter2@h/db?sslrootcert=system&sslmode=require");
        let text = err.to_string();
        assert!(
            text.contains("verify-full") && !text.contains("hunter2"),
            "{text}"
        );
    }

    #[test]
    fn other_parameters_stay_for_the_driver() {
        let s = settings(
            "postgresql://u@h/db?sslmode=verify-ca&application_name=mine&connect_timeout=3",
        );
        assert_eq!(s.postgres().get_application_name(), Some("mine"));
        assert_eq!(
            s.postgres().get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        let s = settings("postgresql://u@h/db?application_name=mine&sslmode=verify-ca");
        assert_eq!(s.postgres().get_application_name(), Some("mine"));
        let s = settings("application_name='a b' sslmode=disable host=h");
        assert_eq!(s.postgres().get_application_name(), Some("a b"));
        assert_eq!(s.ssl_mode(), SslMode::Disable);
        // A password that looks like a parameter is left alone.
        let s = settings("postgresql://u:x?sslmode=disable@h/db");
        assert_eq!(s.postgres().get_password(), Some(&b"x?sslmode=disable"[..]));
        assert_eq!(s.ssl_mode(), SslMode::Prefer);
    }

    #[test]
    fn unknown_sslmodes_are_refused_naming_the_choices() {
        for dsn in [
            "postgresql://u:hunter2@h/db?sslmode=allow",
            "host=h password=hunter2 sslmode=VERIFY-FULL",
        ] {
            let text = refused(dsn).to_string();
            assert!(
                text.contains("verify-full") && text.contains("disable"),
                "{text}"
            );
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn a_driver_config_keeps_its_sslmode() {
        let mut config = postgres::Config::new();
        config
            .host("h")
            .ssl_mode(postgres::config::SslMode::Disable);
        assert_eq!(PgSettings::from(config).ssl_mode(), SslMode::Disable);
        assert_eq!(
            parsed("postgresql://h/db?sslmode=verify-full").get_ssl_mode(),
            postgres::config::SslMode::Require
        );
    }

    #[test]
    fn a_hostaddr_alone_also_names_the_server_for_tls() {
        let s = settings("hostaddr=127.0.0.1 port=6000 dbname=q sslmode=require");
        assert_eq!(s.postgres().get_hosts(), &[Host::Tcp("127.0.0.1".into())]);
        assert_eq!(s.postgres().get_hostaddrs().len(), 1);
        let s = settings("host=db.example hostaddr=10.0.0.5 dbname=q");
        assert_eq!(s.postgres().get_hosts(), &[Host::Tcp("db.example".into())]);
    }
}
