//! The fuzz targets' oracles for the parsers of outside input: a client's text message,
//! an HTTP request head (and its route), a feed's answer, a DSN. Each calls the
//! service's own function and checks what must hold of its answer.

use serde_json::Value;

use crate::asset::default_assets;
use crate::feed::{FeedError, ratesjson};
use crate::http::{self, Origins, Route};
use crate::protocol::{self, Request, RequestError};
use crate::store::dsn;

// ---- the client request ------------------------------------------------------------

/// Parses `data` as a client's text message ([`protocol::parse_request`]); checks that
/// an accepted request says what the JSON says and that the error reply is the
/// documented JSON, short whatever the input.
pub fn parse_request(data: &[u8]) {
    // tungstenite hands over text frames only once they are valid UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let result = protocol::parse_request(text);
    match &result {
        Ok(request) => {
            let value: Value = serde_json::from_str(text).expect("accepted text is JSON");
            assert!(
                value["message"].is_object(),
                "accepted without a message object"
            );
            let action = value["action"]
                .as_str()
                .expect("accepted without an action");
            match *request {
                Request::Assets => assert_eq!(action, "assets"),
                Request::Unsubscribe => assert_eq!(action, "unsubscribe"),
                Request::Subscribe { asset_id, since } => {
                    assert_eq!(action, "subscribe");
                    assert!(asset_id >= 1, "assetId {asset_id} accepted");
                    assert_eq!(
                        value["message"]["assetId"].as_i64(),
                        Some(i64::from(asset_id))
                    );
                    assert!(since.is_none_or(|s| s >= 0), "since {since:?} accepted");
                }
            }
        }
        Err(error) => check_error_reply(error),
    }
    // Whitespace around a JSON text changes nothing.
    let padded = protocol::parse_request(&format!(" \n{text}\t "));
    match (&result, &padded) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.error_type(), b.error_type()),
        _ => panic!("surrounding whitespace changed {result:?} into {padded:?}"),
    }
}

/// The error reply: `{"action":"error","message":{"error_type":..,"error_text":..}}`.
fn check_error_reply(error: &RequestError) {
    let reply = protocol::error_message(error);
    assert!(
        reply.len() <= 1024,
        "an error reply of {} bytes",
        reply.len()
    );
    let value: Value = serde_json::from_slice(&reply).expect("the error reply is JSON");
    assert_eq!(value["action"], "error");
    assert_eq!(value["message"]["error_type"], error.error_type().as_str());
    assert!(value["message"]["error_text"].is_string());
}

// ---- the HTTP request head ----------------------------------------------------------

/// Parses `data` as the start of a connection ([`http::parse_head`]) and routes the head
/// ([`http::route`], [`Origins::allow`]); checks the parse against a re-parse of the
/// head alone, the route against the head, and every response it leads to.
pub fn parse_head_and_route(data: &[u8]) {
    let Ok(Some(head)) = http::parse_head(data) else {
        return;
    };
    assert!(head.len <= data.len());
    assert!(
        head.len <= http::MAX_HEAD_BYTES,
        "a head of {} bytes accepted",
        head.len
    );
    // What follows the head is not part of it.
    assert_eq!(http::parse_head(&data[..head.len]), Ok(Some(head.clone())));
    if head.len > 0 {
        assert_eq!(http::parse_head(&data[..head.len - 1]), Ok(None));
    }
    let head_only = head.method == "HEAD";
    for ui in [false, true] {
        match http::route(&head, ui) {
            Route::WebSocket(key) => {
                assert_eq!(head.method, "GET");
                assert!(head.http11 && head.host.is_some());
                assert!(matches!(head.path.as_str(), "/" | "/api/v1/websocket"));
                assert_eq!(key.len(), 24, "key {key:?}");
                check_http_response(&http::upgrade_response(&key), 101, true);
            }
            Route::Page => {
                assert!(ui);
                assert!(matches!(head.method.as_str(), "GET" | "HEAD"));
            }
            Route::Health | Route::Metrics => {
                assert!(matches!(head.method.as_str(), "GET" | "HEAD"));
            }
            Route::Error(status, text) => {
                assert!(
                    matches!(status, 400 | 404 | 405 | 426),
                    "route gave {status}"
                );
                let response = http::error_response(status, text, head_only);
                check_http_response(&response, status, head_only);
            }
        }
    }
    let origin = head.origin.as_deref();
    let host = head.host.as_deref();
    assert!(Origins::Any.allow(origin, host));
    let only = Origins::parse("https://app.example.com,http://localhost:8080")
        .expect("a valid origin list");
    let allowed = only.allow(origin, host);
    if origin.is_none() {
        assert!(allowed, "a request without Origin refused");
    }
    if origin.is_some_and(|o| o.eq_ignore_ascii_case("https://app.example.com")) {
        assert!(allowed, "a listed origin refused");
    }
}

/// Checks that `bytes` is one complete response with `status` and a body of its
/// `Content-Length` (none for `HEAD` and `101`), and nothing after it.
fn check_http_response(bytes: &[u8], status: u16, head_only: bool) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = response.parse(bytes) else {
        panic!("not a response: {:?}", String::from_utf8_lossy(bytes));
    };
    assert_eq!(response.code, Some(status));
    assert_eq!(response.version, Some(1));
    let content_length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .expect("a numeric Content-Length")
        });
    match content_length {
        Some(body) if !head_only => assert_eq!(bytes.len(), len + body),
        Some(_) => assert_eq!(bytes.len(), len),
        None => {
            assert_eq!(status, 101, "a {status} without Content-Length");
            assert_eq!(bytes.len(), len);
        }
    }
}

// ---- the FXCM body ------------------------------------------------------------------

/// Parses `data` as a feed's answer ([`ratesjson::parse`]) for the default assets;
/// checks every quote, that the JSONP wrapper changes nothing, and that a strict JSON
/// document with a `Rates` array (which `serde_json` reads) is never refused.
pub fn ratesjson(data: &[u8]) {
    let assets = default_assets();
    let result = ratesjson::parse(data, &assets);
    match &result {
        Ok(fetched) => {
            let mut next = 0;
            for quote in &fetched.quotes {
                assert!(quote.value.is_finite() && quote.value > 0.0, "{quote:?}");
                let at = assets[next..]
                    .iter()
                    .position(|a| a.id == quote.asset_id)
                    .expect("quotes of known assets, in the assets' order, once each");
                next += at + 1;
            }
        }
        Err(FeedError::Parse(_)) => {}
        Err(other) => panic!("a parse gave {other:?}"),
    }
    if data.trim_ascii_start().first() == Some(&b'{') {
        let mut wrapped = b"null(".to_vec();
        wrapped.extend_from_slice(data);
        wrapped.extend_from_slice(b");");
        let unwrapped = ratesjson::parse(&wrapped, &assets);
        assert_eq!(
            result.is_ok(),
            unwrapped.is_ok(),
            "{result:?} / {unwrapped:?}"
        );
        if let (Ok(a), Ok(b)) = (&result, &unwrapped) {
            assert_eq!(a, b);
        }
    }
    // A strict JSON document: escapes in member names, duplicate "Rates" members and
    // nesting past the parser's bound are the documented differences.
    if result.is_err()
        && !data.contains(&b'\\')
        && data.windows(7).filter(|w| *w == b"\"Rates\"").count() == 1
        && let Ok(Value::Object(root)) = serde_json::from_slice::<Value>(data)
        && root.get("Rates").is_some_and(Value::is_array)
        && depth(&Value::Object(root)) <= ratesjson::MAX_DEPTH
    {
        panic!("strict JSON refused: {result:?}");
    }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

// ---- the DSN ------------------------------------------------------------------------

/// Parses `data` as `WS_ASSETS_POSTGRESQL_DSN` ([`dsn::PgSettings::parse`]), as given
/// and with a password spliced in; checks that neither the error nor what is shown of
/// an accepted DSN (its redacted form, its `Debug`) carries the password.
pub fn dsn(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let shown = check_dsn(text, None);
    const SECRET: &str = "Qz7xSecretPw9";
    if text.contains(SECRET) || shown.contains(SECRET) {
        // The fuzzer learns the string from the checks below and may write it (or an
        // escaped or percent-encoded form of it) into a host or user, which do show.
        return;
    }
    // A URL gets the password in its user info; anything else (read as key=value, where
    // text before `://` may well be a host's value) gets a `password=` of its own.
    let spliced = match text.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            format!("{scheme}://fuzzuser:{SECRET}@{rest}")
        }
        _ => format!("password={SECRET} {text}"),
    };
    check_dsn(&spliced, Some(SECRET));
}

/// Parses `text`; returns what the service may show of it (the redacted form and
/// `Debug`, or the error), after checking that it does not carry `secret`.
fn check_dsn(text: &str, secret: Option<&str>) -> String {
    let shown = match dsn::PgSettings::parse(text) {
        Ok(settings) => {
            let config = dsn::with_service_defaults(settings.postgres());
            let _ = dsn::host_list(&config);
            format!("{}\n{settings:?}", settings.redacted())
        }
        Err(error) => format!("{error}\n{error:?}"),
    };
    if let Some(secret) = secret {
        assert!(!shown.contains(secret), "{shown}");
    }
    shown
}
