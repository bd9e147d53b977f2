//! The real quote feed: FXCM "ratesjson" fetched over HTTP(S).
//!
//! One `ureq::Agent` is shared by every fetch, so consecutive ticks reuse one
//! keep-alive connection (and one TLS session) instead of connecting each second.
//! Every request is bounded twice: in time (a global timeout covering DNS, connect,
//! TLS, headers and body) and in size (a cap on the decoded body).

use std::fmt;
use std::io;
use std::time::Duration;

use ureq::http::Uri;

use crate::asset::Asset;
use crate::feed::{Feed, FeedError, Fetched, ratesjson};
use crate::redact;

/// Why a rates URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedUrlError {
    /// The URL does not parse as a URI.
    InvalidUrl(String),
    /// The URL's scheme is not `http` or `https` (the scheme found, or empty).
    UnsupportedScheme(String),
    /// The URL has no host.
    MissingHost,
}

impl fmt::Display for FeedUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedUrlError::InvalidUrl(e) => write!(
                f,
                "rates URL is not a valid URL ({e}); expected http://host/path or https://host/path"
            ),
            FeedUrlError::UnsupportedScheme(s) if s.is_empty() => write!(
                f,
                "rates URL has no scheme; it must start with http:// or https://"
            ),
            FeedUrlError::UnsupportedScheme(s) => write!(
                f,
                "rates URL scheme {s:?} is not supported; it must start with http:// or https://"
            ),
            FeedUrlError::MissingHost => write!(f, "rates URL has no host"),
        }
    }
}

impl std::error::Error for FeedUrlError {}

/// An absolute `http://` or `https://` URL with a host: the one rule for a feed URL.
///
/// The scheme is matched in any case (`HTTPS://` is accepted); surrounding whitespace is
/// ignored. Userinfo in the URL is sent as HTTP Basic auth and never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct FeedUrl {
    uri: Uri,
    shown: String,
}

impl FeedUrl {
    /// Checks `text` and keeps it parsed.
    pub fn parse(text: &str) -> Result<FeedUrl, FeedUrlError> {
        let uri = parse_url(text)?;
        Ok(FeedUrl {
            shown: redacted(&uri),
            uri,
        })
    }

    /// The URL for logs: scheme, host, port and path; no userinfo, and the query (which
    /// may carry a token) shown only as `?...`.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl std::str::FromStr for FeedUrl {
    type Err = FeedUrlError;

    fn from_str(text: &str) -> Result<FeedUrl, FeedUrlError> {
        FeedUrl::parse(text)
    }
}

impl fmt::Debug for FeedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FeedUrl").field(&self.shown).finish()
    }
}

/// A [`Feed`] that GETs an FXCM ratesjson URL once per tick.
///
/// Cheap to share: `fetch` takes `&self` and may run on several worker threads at
/// once; they share the agent's connection pool.
pub struct FxcmFeed {
    agent: ureq::Agent,
    url: FeedUrl,
    max_body_bytes: u64,
}

impl FxcmFeed {
    /// Builds the feed for `url`. `timeout` bounds each fetch end to end; a body larger
    /// than `max_body_bytes` (after decompression) is refused. The configuration keeps
    /// both above zero (`WS_ASSETS_RATES_TIMEOUT_MS`, `WS_ASSETS_RATES_MAX_BODY_BYTES`).
    pub fn new(url: FeedUrl, timeout: Duration, max_body_bytes: u64) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // Non-200 answers come back as responses so the code is reported as is
            // and the connection can be drained and kept.
            .http_status_as_error(false)
            .user_agent(concat!("ws_assets/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        FxcmFeed {
            agent,
            url,
            max_body_bytes,
        }
    }

    /// GETs the URL and returns the whole body of a 200 answer.
    fn get_body(&self) -> Result<Vec<u8>, FeedError> {
        let cap = self.max_body_bytes;
        let mut response = self
            .agent
            .get(&self.url.uri)
            .call()
            .map_err(|e| classify(e, cap, &self.url))?;
        let status = response.status().as_u16();
        let body = response.body_mut();
        if status != 200 {
            // Read (and drop) the error page, within the same limits, so the
            // connection goes back to the pool; failing that, it is just closed.
            let mut reader = body.with_config().limit(cap).reader();
            let _ = io::copy(&mut reader, &mut io::sink());
            return Err(FeedError::Status(status));
        }
        if body.content_length().is_some_and(|len| len > cap) {
            return Err(FeedError::TooLarge(cap));
        }
        // Reading to the end (not just to the closing `;`) lets the agent reuse
        // the connection for the next tick.
        body.with_config()
            .limit(cap)
            .read_to_vec()
            .map_err(|e| classify(e, cap, &self.url))
    }
}

impl Feed for FxcmFeed {
    fn describe(&self) -> String {
        self.url.shown.clone()
    }

    fn fetch(&self, _time: i64, assets: &[Asset]) -> Result<Fetched, FeedError> {
        let body = self.get_body()?;
        ratesjson::parse(&body, assets)
    }
}

impl fmt::Debug for FxcmFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FxcmFeed")
            .field("url", &self.url.shown)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// Checks that `url` is an absolute http(s) URL with a host.
fn parse_url(url: &str) -> Result<Uri, FeedUrlError> {
    let url = url.trim();
    // Look at the scheme first, so `ftp://...` or a bare `host/path` get a message
    // about the scheme rather than a generic parse error. Only a plausible scheme
    // is echoed back (never arbitrary text that may hold a secret).
    let scheme = match url.split_once("://") {
        Some((s, _))
            if !s.is_empty()
                && s.len() <= 16
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            s.to_ascii_lowercase()
        }
        _ => String::new(),
    };
    if scheme != "http" && scheme != "https" {
        return Err(FeedUrlError::UnsupportedScheme(scheme));
    }
    let uri: Uri = url
        .parse()
        .map_err(|e: ureq::http::uri::InvalidUri| FeedUrlError::InvalidUrl(e.to_string()))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(FeedUrlError::MissingHost);
    }
    // The URI parser leaves the port unchecked until it is used.
    let authority = uri.authority().map_or("", |a| a.as_str());
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some((_, port)) = host_port.rsplit_once(':')
        && !port.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(FeedUrlError::InvalidUrl(
            "the port is not a number from 0 to 65535".to_string(),
        ));
    }
    Ok(uri)
}

/// The URL for logs: scheme, host, port and path; no userinfo, and the query
/// (which may carry a token) shown only as `?...`.
fn redacted(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
    let authority = uri.authority().map_or("", |a| a.as_str());
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let query = if uri.query().is_some() { "?..." } else { "" };
    format!("{scheme}://{host_port}{}{query}", uri.path())
}

/// Maps a ureq error to the feed's error kinds. Its text may quote a URL (the feed's, a
/// redirect's, a proxy's): credentials are masked and the feed URL's query, which may
/// carry a token, is shown as `...`, as in [`FeedUrl::shown`].
fn classify(e: ureq::Error, cap: u64, url: &FeedUrl) -> FeedError {
    match e {
        ureq::Error::Timeout(_) => FeedError::Timeout,
        ureq::Error::Io(io) if is_timeout(&io) => FeedError::Timeout,
        ureq::Error::BodyExceedsLimit(_) => FeedError::TooLarge(cap),
        ureq::Error::StatusCode(code) => FeedError::Status(code),
        ureq::Error::Decompress(..) => FeedError::Parse(error_text(&e, url)),
        ureq::Error::HostNotFound => FeedError::Connect("host not found".to_string()),
        other => FeedError::Connect(error_text(&other, url)),
    }
}

/// A ureq error's text, safe to show (see [`classify`]).
fn error_text(e: &ureq::Error, url: &FeedUrl) -> String {
    let text = redact::text(&e.to_string()).into_owned();
    match url.uri.query() {
        Some(query) if !query.is_empty() => text.replace(query, "..."),
        _ => text,
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(url: &str) -> Result<FxcmFeed, FeedUrlError> {
        let url = FeedUrl::parse(url)?;
        Ok(FxcmFeed::new(url, Duration::from_millis(800), 256 * 1024))
    }

    #[test]
    fn accepts_http_and_https() {
        for url in [
            "http://rates.example.com/RatesJSON",
            "https://rates.example.com:8443/x?a=1",
            "HTTPS://Rates.Example.com/",
            "http://127.0.0.1:9/",
            "http://[::1]:8080/rates",
            "  https://rates.example.com/rates  ",
        ] {
            assert!(feed(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn rejects_other_schemes_and_non_urls() {
        let cases: &[(&str, FeedUrlError)] = &[
            (
                "ftp://rates.example.com/x",
                FeedUrlError::UnsupportedScheme("ftp".into()),
            ),
            (
                "rates.example.com/x",
                FeedUrlError::UnsupportedScheme(String::new()),
            ),
            ("simulated", FeedUrlError::UnsupportedScheme(String::new())),
            ("", FeedUrlError::UnsupportedScheme(String::new())),
            (
                "pass word://h/",
                FeedUrlError::UnsupportedScheme(String::new()),
            ),
        ];
        for (url, want) in cases {
            assert_eq!(feed(url).err().as_ref(), Some(want), "{url}");
        }
        assert!(
            matches!(feed("file:///etc/passwd"), Err(FeedUrlError::UnsupportedScheme(s)) if s == "file")
        );
        assert!(matches!(feed("http://"), Err(FeedUrlError::InvalidUrl(_))));
        assert!(matches!(
            feed("http://a b/"),
            Err(FeedUrlError::InvalidUrl(_))
        ));
        assert!(matches!(
            feed("http:///path"),
            Err(FeedUrlError::InvalidUrl(_) | FeedUrlError::MissingHost)
        ));
        assert!(matches!(feed("ws://h/"), Err(FeedUrlError::UnsupportedScheme(s)) if s == "ws"));
        for bad_port in ["http://h:notaport/x", "http://u:p@h:99999/", "http://h:/x"] {
            assert!(
                matches!(feed(bad_port), Err(FeedUrlError::InvalidUrl(e)) if e.contains("port")),
                "{bad_port}"
            );
        }
        assert!(feed("http://[::1]/x").is_ok());
    }

    #[test]
    fn describe_hides_userinfo_and_query() -> Result<(), FeedUrlError> {
        let f = feed("https://user:s3cret@rates.example.com:8443/RatesJSON?token=abc")?;
        assert_eq!(f.describe(), "https://rates.example.com:8443/RatesJSON?...");
        let debug = format!("{f:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("abc"),
            "{debug}"
        );

        let f = feed("http://rates.example.com")?;
        assert_eq!(f.describe(), "http://rates.example.com/");
        let f = feed("http://a@b@[::1]:81/p")?;
        assert_eq!(f.describe(), "http://[::1]:81/p");
        assert_eq!(FeedUrl::parse("HTTPS://h/x")?.shown(), "https://h/x");
        Ok(())
    }

    #[test]
    fn error_messages_name_the_problem() {
        let msg = FeedUrlError::UnsupportedScheme("ftp".into()).to_string();
        assert!(msg.contains("\"ftp\"") && msg.contains("http://"), "{msg}");
        let msg = FeedUrlError::UnsupportedScheme(String::new()).to_string();
        assert!(msg.contains("no scheme"), "{msg}");
    }

    #[test]
    fn classify_maps_ureq_errors() {
        let cap = 10;
        let url = FeedUrl::parse("https://h/rates").unwrap();
        let classify = |e, cap| classify(e, cap, &url);
        assert_eq!(
            classify(ureq::Error::Timeout(ureq::Timeout::Global), cap),
            FeedError::Timeout
        );
        assert_eq!(
            classify(ureq::Error::Io(io::ErrorKind::TimedOut.into()), cap),
            FeedError::Timeout
        );
        assert_eq!(
            classify(ureq::Error::BodyExceedsLimit(cap), cap),
            FeedError::TooLarge(cap)
        );
        assert_eq!(
            classify(ureq::Error::StatusCode(503), cap),
            FeedError::Status(503)
        );
        assert!(matches!(
            classify(
                ureq::Error::Io(io::ErrorKind::ConnectionRefused.into()),
                cap
            ),
            FeedError::Connect(_)
        ));
        assert!(matches!(
            classify(ureq::Error::HostNotFound, cap),
            FeedError::Connect(m) if m == "host not found"
        ));
    }

    #[test]
    fn error_texts_hide_credentials_and_the_query() {
        let url = FeedUrl::parse("https://u:hunter2@h/rates?token=abc&x=y").unwrap();
        for error in [
            ureq::Error::BadUri("https://u:hunter2@h/rates?token=abc&x=y is missing host".into()),
            ureq::Error::RequireHttpsOnly("http://u:hunter2@h/rates?token=abc&x=y".into()),
            ureq::Error::Io(io::Error::other(
                "proxy http://p:hunter2@proxy:3128 refused",
            )),
        ] {
            let FeedError::Connect(text) = classify(error, 10, &url) else {
                panic!("expected Connect");
            };
            assert!(!text.contains("hunter2") && !text.contains("abc"), "{text}");
        }
    }

    #[test]
    fn feed_is_shareable_across_workers() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<FxcmFeed>();
    }
}
