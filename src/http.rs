//! The small HTTP/1.1 layer: parse a request head, decide its route, write responses.
//!
//! HTTP and WebSocket share one port, so every connection starts here. A WebSocket
//! upgrade is answered with our own `101` (tungstenite's handshake cannot serve plain
//! HTTP); everything else gets one response and the connection is closed.

use std::fmt::Write as _;

use tungstenite::handshake::derive_accept_key;

/// Longest request head accepted; longer is answered 431 and closed.
pub const MAX_HEAD_BYTES: usize = 8192;

/// Headers parsed at most.
const MAX_HEADERS: usize = 48;

/// The parts of a request head the service acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Request method, as sent.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// What the head asks for regarding WebSocket.
    pub upgrade: Upgrade,
    /// Whether the request is HTTP/1.1 (which requires `Host`).
    pub http11: bool,
    /// The `Host` header, if any.
    pub host: Option<String>,
    /// The `Origin` header, if any (browsers send it with every WebSocket upgrade).
    pub origin: Option<String>,
    /// The `Sec-WebSocket-Extensions` offers, every such header joined by commas.
    pub extensions: Option<String>,
    /// Bytes of the buffer taken by the head; what follows belongs to the next protocol.
    pub len: usize,
}

/// Whether, and how well, a request asks for a WebSocket upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// A plain HTTP request.
    None,
    /// A valid RFC 6455 upgrade with this `Sec-WebSocket-Key`.
    WebSocket(String),
    /// An upgrade request missing or misusing a header; the text says what.
    Invalid(&'static str),
    /// A WebSocket version other than 13.
    WrongVersion,
}

/// Why a request head could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x.
    Malformed,
    /// Larger than [`MAX_HEAD_BYTES`] or with too many headers.
    TooLarge,
}

/// Parses the head at the start of `buf`; `Ok(None)` means more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Err(HeadError::Malformed);
    };
    let path = target.split('?').next().unwrap_or(target).to_string();
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let upgrade = match header("upgrade") {
        None => Upgrade::None,
        Some(u) if !u.eq_ignore_ascii_case("websocket") => Upgrade::None,
        Some(_) => websocket_upgrade(method, request.version, header),
    };
    Ok(Some(RequestHead {
        method: method.to_string(),
        path,
        upgrade,
        http11: request.version == Some(1),
        host: header("host").map(str::to_string),
        origin: header("origin").map(str::to_string),
        extensions: joined(request.headers, "sec-websocket-extensions"),
        len,
    }))
}

/// Every header called `name` (a list header may come several times), joined by commas.
fn joined(headers: &[httparse::Header<'_>], name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim)
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn websocket_upgrade<'h>(
    method: &str,
    version: Option<u8>,
    header: impl Fn(&str) -> Option<&'h str>,
) -> Upgrade {
    if method != "GET" {
        return Upgrade::Invalid("a WebSocket upgrade must use GET");
    }
    if version != Some(1) {
        return Upgrade::Invalid("a WebSocket upgrade needs HTTP/1.1");
    }
    let connection_upgrade = header("connection").is_some_and(|c| {
        c.split(',')
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
    });
    if !connection_upgrade {
        return Upgrade::Invalid("a WebSocket upgrade needs \"Connection: Upgrade\"");
    }
    if header("sec-websocket-version") != Some("13") {
        return Upgrade::WrongVersion;
    }
    match header("sec-websocket-key") {
        Some(key) if is_websocket_key(key) => Upgrade::WebSocket(key.to_string()),
        _ => Upgrade::Invalid(
            "a WebSocket upgrade needs a Sec-WebSocket-Key of 16 bytes in base64 (RFC 6455 4.1)",
        ),
    }
}

/// Whether `key` is 16 bytes in canonical base64: 22 characters of the alphabet, the
/// last carrying no stray bits, and `==`.
fn is_websocket_key(key: &str) -> bool {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = key.as_bytes();
    let [data @ .., last, b'=', b'='] = bytes else {
        return false;
    };
    data.len() == 21
        && data.iter().all(|b| ALPHABET.contains(b))
        && ALPHABET
            .iter()
            .position(|b| b == last)
            .is_some_and(|sextet| sextet & 0x0F == 0)
}

/// An entry of `WS_ASSETS_ALLOWED_ORIGINS` that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadOrigin(pub String);

impl std::fmt::Display for BadOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} is not an origin like https://app.example.com",
            self.0
        )
    }
}

impl std::error::Error for BadOrigin {}

/// Which browser pages may open a WebSocket (`WS_ASSETS_ALLOWED_ORIGINS`).
///
/// A request without `Origin` (not a browser) is always allowed, and so is the test
/// page's own origin: an `Origin` naming the host the request was sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// No check (the original service had none).
    Any,
    /// Only these origins (`scheme://host[:port]`, lowercase, no trailing slash).
    Only(Vec<String>),
}

impl Origins {
    /// Parses the comma-separated list: empty or `*` for any, else origins.
    pub fn parse(list: &str) -> Result<Origins, BadOrigin> {
        let mut origins = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                return Ok(Origins::Any);
            }
            let normal = item.trim_end_matches('/').to_ascii_lowercase();
            let rest = normal
                .strip_prefix("https://")
                .or_else(|| normal.strip_prefix("http://"));
            match rest {
                Some(authority) if !authority.is_empty() && !authority.contains('/') => {
                    origins.push(normal);
                }
                _ => return Err(BadOrigin(item.to_string())),
            }
        }
        Ok(if origins.is_empty() {
            Origins::Any
        } else {
            Origins::Only(origins)
        })
    }

    /// Whether an upgrade with this `Origin`, sent to this `Host`, is allowed.
    pub fn allow(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let (Origins::Only(allowed), Some(origin)) = (self, origin) else {
            return true;
        };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let same_host = authority.is_some_and(|a| host.is_some_and(|h| a.eq_ignore_ascii_case(h)));
        same_host || allowed.contains(&origin)
    }
}

/// What the service does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Switch to WebSocket with this key.
    WebSocket(String),
    /// The test page.
    Page,
    /// The health probe.
    Health,
    /// The Prometheus exposition.
    Metrics,
    /// A plain answer with this status and reason text, then close.
    Error(u16, &'static str),
}

/// Routes a request head. `ui` says whether the test page is served.
pub fn route(head: &RequestHead, ui: bool) -> Route {
    if head.http11 && head.host.is_none() {
        return Route::Error(
            400,
            "an HTTP/1.1 request needs a Host header (RFC 9112 3.2)",
        );
    }
    let websocket_path = matches!(head.path.as_str(), "/" | "/api/v1/websocket");
    match &head.upgrade {
        Upgrade::WebSocket(key) if websocket_path => return Route::WebSocket(key.clone()),
        Upgrade::Invalid(why) if websocket_path => return Route::Error(400, why),
        Upgrade::WrongVersion if websocket_path => {
            return Route::Error(426, "only WebSocket version 13 is supported");
        }
        _ => {}
    }
    if head.method != "GET" && head.method != "HEAD" {
        return Route::Error(405, "only GET and HEAD are allowed");
    }
    match head.path.as_str() {
        "/" | "/index.html" if ui => Route::Page,
        "/api/v1/websocket" => Route::Error(426, "this path speaks WebSocket; send an upgrade"),
        "/health" => Route::Health,
        "/metrics" => Route::Metrics,
        _ => Route::Error(404, "not found"),
    }
}

/// A complete response with `Connection: close`; the body is left out for `HEAD`.
pub fn response(
    status: u16,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
    head_only: bool,
) -> Vec<u8> {
    let mut head = String::with_capacity(160);
    let _ = write!(
        head,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n{extra_headers}\r\n",
        reason(status),
        body.len()
    );
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// A short plain-text error response.
pub fn error_response(status: u16, text: &str, head_only: bool) -> Vec<u8> {
    let extra = match status {
        405 => "Allow: GET, HEAD\r\n",
        426 => "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n",
        _ => "",
    };
    let body = format!("{status} {}: {text}\n", reason(status));
    response(
        status,
        "text/plain; charset=utf-8",
        extra,
        body.as_bytes(),
        head_only,
    )
}

/// The `101 Switching Protocols` answer to a valid upgrade.
pub fn upgrade_response(key: &str, extension: Option<&str>) -> Vec<u8> {
    let extension = extension
        .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{extension}\r\n",
        derive_accept_key(key.as_bytes())
    )
    .into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn head(text: &str) -> RequestHead {
        parse_head(text.as_bytes()).unwrap().unwrap()
    }

    fn upgrade_request(path: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
        )
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(parse_head(b""), Ok(None));
    }

    #[test]
    fn garbage_and_oversized_heads_are_refused() {
        assert_eq!(
            parse_head(b"\x16\x03\x01\x02\x00"),
            Err(HeadError::Malformed)
        );
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse_head(long.as_bytes()), Err(HeadError::TooLarge));
        let many: String = (0..100).map(|i| format!("H{i}: v\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(text.as_bytes()), Err(HeadError::TooLarge));
    }

    #[test]
    fn a_complete_head_over_the_limit_is_refused_too() {
        // Found by fuzzing: the limit held only for a head still incomplete, so one
        // that arrived whole in the last read could reach MAX_HEAD_BYTES + 2047 bytes.
        let head_of = |len: usize| {
            let start = "GET / HTTP/1.1\r\nHost: x\r\nX: ";
            format!("{start}{}\r\n\r\n", "a".repeat(len - start.len() - 4))
        };
        assert_eq!(head_of(MAX_HEAD_BYTES).len(), MAX_HEAD_BYTES);
        assert!(matches!(
            parse_head(head_of(MAX_HEAD_BYTES).as_bytes()),
            Ok(Some(_))
        ));
        let over = head_of(MAX_HEAD_BYTES + 1);
        assert_eq!(parse_head(over.as_bytes()), Err(HeadError::TooLarge));
        let mut upgrade = upgrade_request("/").replace("\r\n\r\n", "\r\nX: ");
        upgrade.push_str(&"a".repeat(MAX_HEAD_BYTES - upgrade.len() + 700));
        upgrade.push_str("\r\n\r\n");
        assert_eq!(parse_head(upgrade.as_bytes()), Err(HeadError::TooLarge));
    }

    #[test]
    fn websocket_upgrades_on_both_paths() {
        for path in ["/", "/api/v1/websocket", "/api/v1/websocket?x=1"] {
            let h = head(&upgrade_request(path));
            assert_eq!(route(&h, true), Route::WebSocket(KEY.into()), "{path}");
            assert_eq!(route(&h, false), Route::WebSocket(KEY.into()), "{path}");
        }
        assert_eq!(
            route(&head(&upgrade_request("/other")), true),
            Route::Error(404, "not found")
        );
    }

    #[test]
    fn head_length_excludes_following_bytes() {
        let text = upgrade_request("/");
        let mut bytes = text.clone().into_bytes();
        bytes.extend_from_slice(b"\x81\x85extra");
        assert_eq!(parse_head(&bytes).unwrap().unwrap().len, text.len());
    }

    #[test]
    fn broken_upgrades_are_explained() {
        let no_key = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
        assert!(
            matches!(route(&head(no_key), true), Route::Error(400, why) if why.contains("Key"))
        );
        let old = upgrade_request("/").replace("Version: 13", "Version: 8");
        assert!(matches!(route(&head(&old), true), Route::Error(426, _)));
        let post = upgrade_request("/").replacen("GET", "POST", 1);
        assert!(matches!(route(&head(&post), true), Route::Error(400, why) if why.contains("GET")));
        let no_conn = upgrade_request("/").replace("keep-alive, Upgrade", "keep-alive");
        assert!(matches!(route(&head(&no_conn), true), Route::Error(400, _)));
    }

    #[test]
    fn plain_routes() {
        let get = |path: &str| head(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(route(&get("/"), true), Route::Page);
        assert_eq!(route(&get("/"), false), Route::Error(404, "not found"));
        assert_eq!(route(&get("/health"), true), Route::Health);
        assert_eq!(route(&get("/metrics?x"), true), Route::Metrics);
        assert_eq!(route(&get("/nope"), true), Route::Error(404, "not found"));
        assert!(matches!(
            route(&get("/api/v1/websocket"), true),
            Route::Error(426, _)
        ));
        let delete = head("DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(matches!(route(&delete, true), Route::Error(405, _)));
        let head_req = head("HEAD / HTTP/1.0\r\n\r\n");
        assert_eq!(route(&head_req, true), Route::Page);
    }

    #[test]
    fn http11_without_host_is_refused_and_http10_needs_none() {
        let no_host = head("GET /health HTTP/1.1\r\n\r\n");
        assert!(matches!(route(&no_host, true), Route::Error(400, why) if why.contains("Host")));
        let upgrade = upgrade_request("/").replace("Host: x\r\n", "");
        assert!(
            matches!(route(&head(&upgrade), true), Route::Error(400, why) if why.contains("Host"))
        );
        assert_eq!(
            route(&head("GET /health HTTP/1.0\r\n\r\n"), true),
            Route::Health
        );
    }

    #[test]
    fn websocket_keys_must_be_16_bytes_of_base64() {
        assert!(is_websocket_key(KEY));
        assert!(is_websocket_key("AAAAAAAAAAAAAAAAAAAAAA=="));
        for bad in [
            "",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25j*Q==",
            "dGhlIHNhbXBsZSBub25jZQ==x",
            "dGhlIHNhbXBsZSBub25jZSBs",
            "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ",
        ] {
            assert!(!is_websocket_key(bad), "{bad:?}");
            let text = upgrade_request("/").replace(KEY, bad);
            assert!(
                matches!(route(&head(&text), true), Route::Error(400, _)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn origins_allow_the_listed_the_own_and_non_browsers() {
        let only = Origins::parse(" https://App.example.com/ , http://localhost:3000").unwrap();
        assert!(only.allow(Some("https://app.example.com"), Some("ws.example.com")));
        assert!(only.allow(Some("http://localhost:3000"), Some("ws.example.com")));
        assert!(!only.allow(Some("https://evil.example"), Some("ws.example.com")));
        assert!(!only.allow(Some("null"), Some("ws.example.com")));
        assert!(only.allow(None, Some("ws.example.com")), "not a browser");
        assert!(
            only.allow(
                Some("http://ws.example.com:8080"),
                Some("ws.example.com:8080")
            ),
            "the test page's own origin"
        );
        assert!(!only.allow(
            Some("http://ws.example.com:9999"),
            Some("ws.example.com:8080")
        ));
        for any in ["", "*", " , ", "https://a.example, *"] {
            assert_eq!(Origins::parse(any), Ok(Origins::Any), "{any:?}");
            assert!(Origins::Any.allow(Some("https://evil.example"), None));
        }
        for bad in [
            "app.example.com",
            "ftp://x",
            "https://",
            "https://a.example/path",
        ] {
            assert!(Origins::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn responses_are_well_formed() {
        let r = String::from_utf8(response(200, "text/html", "", b"hello", false)).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("Content-Length: 5\r\n"));
        assert!(r.ends_with("\r\n\r\nhello"));
        let h = String::from_utf8(response(200, "text/html", "", b"hello", true)).unwrap();
        assert!(h.ends_with("\r\n\r\n"));
        assert!(
            String::from_utf8(error_response(405, "x", false))
                .unwrap()
                .contains("Allow: GET, HEAD")
        );
        let up = String::from_utf8(upgrade_response(KEY, None)).unwrap();
        assert!(up.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }
}
