//! The wire protocol: client requests parsed into [`Request`], replies serialised to JSON.
//!
//! Every message is `{"action": <string>, "message": <object>}` (the README's "Protocol" section). Parsing never
//! panics and every rejection says which field was wrong and what was expected.

use std::fmt;
use std::io::Write;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::asset::{Asset, Point};

/// A valid client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// List the assets.
    Assets,
    /// Replace the subscription with one to this asset id (not yet checked to exist).
    Subscribe {
        /// The requested `assetId`.
        asset_id: i32,
        /// Resume: only points after this epoch second go in the history.
        since: Option<i64>,
    },
    /// Drop the subscription, if any.
    Unsubscribe,
}

/// Why a request was refused; its `error_type` goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The text is not JSON.
    Parse(String),
    /// The JSON is not a valid request.
    Validation(String),
    /// `assetId` names no asset.
    UnknownAsset(i32),
}

/// The `error_type` of an error reply: the kinds of refusal a client can tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// The text is not JSON.
    ParseError,
    /// The JSON is not a valid request.
    ValidationError,
    /// `assetId` names no asset.
    UnknownAsset,
}

impl ErrorType {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::ParseError => "ParseError",
            ErrorType::ValidationError => "ValidationError",
            ErrorType::UnknownAsset => "UnknownAsset",
        }
    }
}

impl RequestError {
    /// The `error_type` sent to the client.
    pub fn error_type(&self) -> ErrorType {
        match self {
            RequestError::Parse(_) => ErrorType::ParseError,
            RequestError::Validation(_) => ErrorType::ValidationError,
            RequestError::UnknownAsset(_) => ErrorType::UnknownAsset,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Parse(e) => write!(f, "message is not valid JSON: {e}"),
            RequestError::Validation(e) => f.write_str(e),
            RequestError::UnknownAsset(id) => {
                write!(
                    f,
                    "no asset with assetId {id}; send {{\"action\":\"assets\",\"message\":{{}}}} for the list"
                )
            }
        }
    }
}

impl std::error::Error for RequestError {}

const ACTIONS: &str = "assets, subscribe, unsubscribe";

/// Parses one text message from a client.
pub fn parse_request(text: &str) -> Result<Request, RequestError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| RequestError::Parse(e.to_string()))?;
    let invalid = |msg: String| Err(RequestError::Validation(msg));
    let Value::Object(request) = value else {
        return invalid(format!(
            "request must be a JSON object {{\"action\": ..., \"message\": {{...}}}}, got {}",
            kind(&value)
        ));
    };
    let action = match request.get("action") {
        None => {
            return invalid(format!(
                "field \"action\" is missing; expected one of: {ACTIONS}"
            ));
        }
        Some(Value::String(action)) => action.as_str(),
        Some(other) => {
            return invalid(format!(
                "field \"action\" must be a string, got {}; expected one of: {ACTIONS}",
                kind(other)
            ));
        }
    };
    let message = match request.get("message") {
        None => return invalid("field \"message\" is missing; expected an object".into()),
        Some(Value::Object(message)) => message,
        Some(other) => {
            return invalid(format!(
                "field \"message\" must be an object, got {}",
                kind(other)
            ));
        }
    };
    match action {
        "assets" => Ok(Request::Assets),
        "unsubscribe" => Ok(Request::Unsubscribe),
        "subscribe" => Ok(Request::Subscribe {
            asset_id: asset_id(message)?,
            since: since(message)?,
        }),
        other => invalid(format!(
            "unknown action {}; expected one of: {ACTIONS}",
            Value::String(truncate(other, 64).to_string())
        )),
    }
}

fn asset_id(message: &Map<String, Value>) -> Result<i32, RequestError> {
    let invalid = |msg: String| Err(RequestError::Validation(msg));
    let range = format!("an integer 1..={}", i32::MAX);
    match message.get("assetId") {
        None => invalid(format!(
            "field \"message.assetId\" is missing; expected {range}"
        )),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(id) if id >= 1 && id <= i64::from(i32::MAX) => Ok(id as i32),
            Some(id) => invalid(format!(
                "field \"message.assetId\" is {id}, out of range; expected {range}"
            )),
            None if n.is_u64() => invalid(format!(
                "field \"message.assetId\" is {n}, out of range; expected {range}"
            )),
            None => invalid(format!(
                "field \"message.assetId\" must be an integer, got {n}; expected {range}"
            )),
        },
        Some(other) => invalid(format!(
            "field \"message.assetId\" must be an integer, got {}; expected {range}",
            kind(other)
        )),
    }
}

/// The optional `since` of a subscribe: the last second the client already has.
fn since(message: &Map<String, Value>) -> Result<Option<i64>, RequestError> {
    let expected = "expected an integer number of epoch seconds";
    match message.get("since") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(t) if t >= 0 => Ok(Some(t)),
            _ => Err(RequestError::Validation(format!(
                "field \"message.since\" is {n}; {expected} (0 or more)"
            ))),
        },
        Some(other) => Err(RequestError::Validation(format!(
            "field \"message.since\" must be an integer, got {}; {expected}",
            kind(other)
        ))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A point as it appears on the wire, in the original's field order.
#[derive(Serialize)]
struct WirePoint<'a> {
    #[serde(rename = "assetName")]
    asset_name: &'a str,
    time: i64,
    #[serde(rename = "assetId")]
    asset_id: i32,
    value: f64,
}

/// `{"action":"point","message":P}` for one point.
pub fn point_message(asset_name: &str, point: &Point) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"action\":\"point\",\"message\":");
    write_point(&mut out, asset_name, point);
    out.push(b'}');
    out
}

/// `{"action":"asset_history","message":{"points":[P, ...]}}`, oldest first.
pub fn history_message<'a>(
    asset_name: &str,
    points: impl ExactSizeIterator<Item = &'a Point>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + points.len() * (asset_name.len() + 64));
    out.extend_from_slice(b"{\"action\":\"asset_history\",\"message\":{\"points\":[");
    for (i, point) in points.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_point(&mut out, asset_name, point);
    }
    out.extend_from_slice(b"]}}");
    out
}

fn write_point(out: &mut Vec<u8>, asset_name: &str, point: &Point) {
    let wire = WirePoint {
        asset_name,
        time: point.time,
        asset_id: point.asset_id,
        value: point.value,
    };
    // Serialising plain numbers and a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &wire);
}

/// `{"action":"assets","message":{"assets":[{"id":1,"name":"EURUSD"}, ...]}}`.
pub fn assets_message(assets: &[Asset]) -> Vec<u8> {
    #[derive(Serialize)]
    struct WireAsset<'a> {
        id: i32,
        name: &'a str,
    }
    let list: Vec<WireAsset<'_>> = assets
        .iter()
        .map(|a| WireAsset {
            id: a.id,
            name: &a.name,
        })
        .collect();
    let mut out = Vec::with_capacity(64 + 32 * assets.len());
    out.extend_from_slice(b"{\"action\":\"assets\",\"message\":{\"assets\":");
    let _ = serde_json::to_writer(&mut out, &list);
    out.extend_from_slice(b"}}");
    out
}

/// `{"action":"unsubscribed","message":{}}`.
pub const UNSUBSCRIBED_MESSAGE: &[u8] = b"{\"action\":\"unsubscribed\",\"message\":{}}";

/// `{"action":"error","message":{"error_type":...,"error_text":...}}`.
pub fn error_message(error: &RequestError) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let _ = write!(
        out,
        "{{\"action\":\"error\",\"message\":{{\"error_type\":\"{}\",\"error_text\":",
        error.error_type().as_str()
    );
    let _ = serde_json::to_writer(&mut out, &error.to_string());
    out.extend_from_slice(b"}}");
    out
}

/// The reply to a binary frame: the protocol is JSON text only.
pub fn binary_frame_error() -> RequestError {
    RequestError::Validation(
        "binary frames are not accepted; send requests as JSON text frames".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validation(text: &str) -> String {
        match parse_request(text) {
            Err(RequestError::Validation(msg)) => msg,
            other => panic!("{text}: expected ValidationError, got {other:?}"),
        }
    }

    #[test]
    fn valid_requests() {
        assert_eq!(
            parse_request(r#"{"action":"assets","message":{}}"#),
            Ok(Request::Assets)
        );
        assert_eq!(
            parse_request(r#"{"action":"subscribe","message":{"assetId":3}}"#),
            Ok(Request::Subscribe {
                asset_id: 3,
                since: None
            })
        );
        assert_eq!(
            parse_request(r#"{"action":"subscribe","message":{"assetId":3,"since":1455883484}}"#),
            Ok(Request::Subscribe {
                asset_id: 3,
                since: Some(1_455_883_484)
            })
        );
        assert_eq!(
            parse_request(r#" {"message":{},"action":"unsubscribe","extra":1} "#),
            Ok(Request::Unsubscribe)
        );
    }

    #[test]
    fn a_bad_since_is_explained() {
        for since in ["\"x\"", "1.5", "-1", "true", "[]"] {
            let text =
                format!(r#"{{"action":"subscribe","message":{{"assetId":1,"since":{since}}}}}"#);
            assert!(validation(&text).contains("message.since"), "{text}");
        }
    }

    #[test]
    fn not_json_is_a_parse_error() {
        for text in ["", "{", "hello", "{\"action\":}", "[1,2"] {
            let err = parse_request(text).unwrap_err();
            assert_eq!(err.error_type(), ErrorType::ParseError, "{text}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let text = "[".repeat(100_000);
        assert_eq!(
            parse_request(&text).unwrap_err().error_type(),
            ErrorType::ParseError
        );
    }

    #[test]
    fn validation_errors_name_the_field() {
        assert!(validation("[]").contains("JSON object"));
        assert!(validation("42").contains("JSON object"));
        assert!(validation(r#"{"message":{}}"#).contains("\"action\" is missing"));
        assert!(validation(r#"{"action":5,"message":{}}"#).contains("must be a string"));
        assert_eq!(
            validation(r#"{"action":"foo","message":{}}"#),
            "unknown action \"foo\"; expected one of: assets, subscribe, unsubscribe"
        );
        assert!(validation(r#"{"action":"assets"}"#).contains("\"message\" is missing"));
        assert!(validation(r#"{"action":"assets","message":[]}"#).contains("must be an object"));
        assert!(validation(r#"{"action":"subscribe","message":{}}"#).contains("assetId"));
        assert!(
            validation(r#"{"action":"subscribe","message":{"assetId":"1"}}"#)
                .contains("must be an integer, got a string")
        );
        assert!(
            validation(r#"{"action":"subscribe","message":{"assetId":1.5}}"#)
                .contains("must be an integer")
        );
        for out_of_range in ["0", "-1", "2147483648", "18446744073709551615"] {
            let text =
                format!(r#"{{"action":"subscribe","message":{{"assetId":{out_of_range}}}}}"#);
            assert!(validation(&text).contains("out of range"), "{text}");
        }
    }

    #[test]
    fn long_unknown_actions_are_truncated_in_the_reply() {
        let text = format!(r#"{{"action":"{}","message":{{}}}}"#, "x".repeat(5000));
        assert!(validation(&text).len() < 200);
    }

    #[test]
    fn replies_have_the_original_shape() {
        let point = Point {
            asset_id: 1,
            time: 1455883484,
            value: 1.110481,
        };
        assert_eq!(
            String::from_utf8(point_message("EURUSD", &point)).unwrap(),
            r#"{"action":"point","message":{"assetName":"EURUSD","time":1455883484,"assetId":1,"value":1.110481}}"#
        );
        let history = history_message("EURUSD", [point, point].iter());
        let parsed: Value = serde_json::from_slice(&history).unwrap();
        assert_eq!(parsed["action"], "asset_history");
        assert_eq!(parsed["message"]["points"].as_array().unwrap().len(), 2);
        let empty: Value = serde_json::from_slice(&history_message("X", [].iter())).unwrap();
        assert_eq!(empty["message"]["points"], serde_json::json!([]));

        let assets = assets_message(&[Asset {
            id: 1,
            name: "EURUSD".into(),
        }]);
        assert_eq!(
            String::from_utf8(assets).unwrap(),
            r#"{"action":"assets","message":{"assets":[{"id":1,"name":"EURUSD"}]}}"#
        );
        let error: Value =
            serde_json::from_slice(&error_message(&RequestError::UnknownAsset(9))).unwrap();
        assert_eq!(error["action"], "error");
        assert_eq!(error["message"]["error_type"], "UnknownAsset");
        assert!(
            error["message"]["error_text"]
                .as_str()
                .unwrap()
                .contains('9')
        );
        let _: Value = serde_json::from_slice(UNSUBSCRIBED_MESSAGE).unwrap();
    }

    #[test]
    fn names_needing_escapes_stay_valid_json() {
        let point = Point {
            asset_id: 7,
            time: 1,
            value: 2.5,
        };
        let parsed: Value = serde_json::from_slice(&point_message("a\"b\\c", &point)).unwrap();
        assert_eq!(parsed["message"]["assetName"], "a\"b\\c");
    }
}
