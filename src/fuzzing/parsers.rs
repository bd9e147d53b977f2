//! The oracles for the parsers of outside input: a client's text message, an HTTP
//! request head (its route and permessage-deflate offers), a feed's answer, a DSN. Each
//! calls the service's own function and checks what must hold of its answer.

use serde_json::Value;

use crate::asset::default_assets;
use crate::deflate;
use crate::feed::{FeedError, ratesjson};
use crate::http::{self, Origins, Route};
use crate::protocol::{self, Request};
use crate::store::dsn;

/// A client's text message ([`protocol::parse_request`]): an accepted request says what
/// the JSON says, and an error reply is short documented JSON.
pub fn parse_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // Text frames are UTF-8 before they are parsed.
    };
    match &protocol::parse_request(text) {
        Ok(request) => {
            let value: Value = serde_json::from_str(text).expect("accepted text is JSON");
            let (action, message) = (value["action"].as_str(), &value["message"]);
            assert!(message.is_object(), "accepted without a message object");
            match *request {
                Request::Assets => assert_eq!(action, Some("assets")),
                Request::Unsubscribe => assert_eq!(action, Some("unsubscribe")),
                Request::Subscribe { asset_id, since } => {
                    let id = message["assetId"].as_i64();
                    assert_eq!((action, id), (Some("subscribe"), Some(asset_id.into())));
                    assert!(asset_id >= 1 && since.is_none_or(|s| s >= 0), "{request:?}");
                }
            }
        }
        Err(error) => {
            let reply = protocol::error_message(error);
            assert!(reply.len() <= 1024, "an error reply of {}", reply.len());
            let value: Value = serde_json::from_slice(&reply).expect("the reply is JSON");
            assert_eq!(value["action"], "error");
            assert_eq!(value["message"]["error_type"], error.error_type().as_str());
            assert!(value["message"]["error_text"].is_string());
        }
    }
}

/// The start of a connection ([`http::parse_head`]), its route ([`http::route`],
/// [`Origins::allow`]) and its extension offers: the head re-parses alone and the route
/// fits the head. What the driver answers, [`drive_connection`](super::drive_connection)
/// checks as it is written.
pub fn parse_head_and_route(data: &[u8]) {
    let Ok(Some(head)) = http::parse_head(data) else {
        return;
    };
    assert!(head.len <= data.len().min(http::MAX_HEAD_BYTES));
    assert_eq!(http::parse_head(&data[..head.len]), Ok(Some(head.clone())));
    assert!(head.len == 0 || http::parse_head(&data[..head.len - 1]) == Ok(None));
    let get_or_head = matches!(&*head.method, "GET" | "HEAD");
    for ui in [false, true] {
        match http::route(&head, ui) {
            Route::WebSocket(_) => {
                assert!(head.method == "GET" && head.http11 && head.host.is_some());
                assert!(matches!(head.path.as_str(), "/" | "/api/v1/websocket"));
                let _ = head.extensions.as_deref().is_some_and(deflate::accepts);
            }
            route @ (Route::Page | Route::Health | Route::Metrics) => {
                assert!(get_or_head && (ui || route != Route::Page), "{route:?}");
            }
            Route::Error(status, _) => assert!(matches!(status, 400 | 404 | 405 | 426)),
        }
    }
    let (origin, host) = (head.origin.as_deref(), head.host.as_deref());
    assert!(Origins::Any.allow(origin, host));
    let only = Origins::parse("https://app.example.com,http://localhost:8080").expect("a list");
    let listed = origin.is_none_or(|o| o.eq_ignore_ascii_case("https://app.example.com"));
    assert!(!listed || only.allow(origin, host), "{origin:?} refused");
}

/// A feed's answer ([`ratesjson::parse`]) for the default assets: every quote usable,
/// the JSONP wrapper changes nothing, and strict JSON with a `Rates` array (which
/// `serde_json` reads) is never refused.
pub fn ratesjson(data: &[u8]) {
    let assets = default_assets();
    let result = ratesjson::parse(data, &assets);
    match &result {
        Ok(fetched) => {
            let mut next = 0;
            for quote in &fetched.quotes {
                assert!(quote.value.is_finite() && quote.value > 0.0, "{quote:?}");
                let at = assets[next..].iter().position(|a| a.id == quote.asset_id);
                next += at.expect("known assets, in the assets' order, once each") + 1;
            }
        }
        Err(FeedError::Parse(_)) => {}
        Err(other) => panic!("a parse gave {other:?}"),
    }
    if data.trim_ascii_start().first() == Some(&b'{') {
        let unwrapped = ratesjson::parse(&[&b"null("[..], data, b");"].concat(), &assets);
        assert_eq!(result.as_ref().ok(), unwrapped.as_ref().ok());
    }
    // Escapes in member names, duplicate "Rates" members and nesting past the parser's
    // bound are the documented differences from strict JSON.
    fn depth(v: &Value) -> usize {
        match v {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    if result.is_err()
        && !data.contains(&b'\\')
        && data.windows(7).filter(|w| *w == b"\"Rates\"").count() == 1
        && let Ok(root @ Value::Object(_)) = serde_json::from_slice::<Value>(data)
        && root.get("Rates").is_some_and(Value::is_array)
        && depth(&root) <= ratesjson::MAX_DEPTH
    {
        panic!("strict JSON refused: {result:?}");
    }
}

/// `WS_ASSETS_POSTGRESQL_DSN` ([`dsn::PgSettings::parse`]), as given and with a password
/// spliced in: neither the error nor what is shown of an accepted DSN (its redacted
/// form, its `Debug`) carries the password.
pub fn dsn(data: &[u8]) {
    const SECRET: &str = "Qz7xSecretPw9";
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let shown = |text: &str| match dsn::PgSettings::parse(text) {
        Ok(settings) => {
            let _ = dsn::host_list(&dsn::with_service_defaults(settings.postgres()));
            format!("{}\n{settings:?}", settings.redacted())
        }
        Err(error) => format!("{error}\n{error:?}"),
    };
    // The fuzzer learns the secret from the checks and may write it (or an escaped or
    // encoded form of it) into a host or user, which do show.
    if text.contains(SECRET) || shown(text).contains(SECRET) {
        return;
    }
    // A URL gets the password in its user info; anything else (read as key=value, where
    // text before `://` may be a host's value) a `password=` of its own.
    let scheme_char = |c: char| c.is_ascii_alphanumeric() || "+-.".contains(c);
    let is_scheme = |s: &str| !s.is_empty() && s.chars().all(scheme_char);
    let spliced = match text.split_once("://").filter(|(s, _)| is_scheme(s)) {
        Some((scheme, rest)) => format!("{scheme}://fuzzuser:{SECRET}@{rest}"),
        None => format!("password={SECRET} {text}"),
    };
    let shown = shown(&spliced);
    assert!(!shown.contains(SECRET), "{shown}");
}
