//! The wire protocol, against the real server: the assets list, history then live
//! points with an exact seam, switching and dropping subscriptions, errors that keep the
//! connection, pings, and requests however they are framed.

use crate::common;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::common::{Client, Server, assert_seconds_follow, masked_text, time_of};
use serde_json::{Value, json};
use tungstenite::Message;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};

#[test]
fn assets_are_listed_in_id_order() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.send_text(r#"{"action":"assets","message":{}}"#);
    assert_eq!(
        client.recv(),
        json!({"action":"assets","message":{"assets":[
            {"id":1,"name":"EURUSD"},{"id":2,"name":"USDJPY"},{"id":3,"name":"GBPUSD"},
            {"id":4,"name":"AUDUSD"},{"id":5,"name":"USDCAD"}]}})
    );
}

#[test]
fn websocket_is_also_served_on_the_root_path() {
    let server = Server::start(&[]);
    let mut client = Client::connect(server.addr, "/");
    client.send_text(r#"{"action":"assets","message":{}}"#);
    assert_eq!(client.recv()["action"], "assets");
}

#[test]
fn history_is_the_window_oldest_first_with_the_points_shape() {
    let server = Server::start(&[("WS_ASSETS_HISTORY_SECONDS", "1800")]);
    let mut client = server.client();
    let points = client.subscribe_history(2);
    let now = common::epoch_now();
    let times: Vec<i64> = points.iter().map(time_of).collect();
    let allowed = server.ticks_without_point();
    assert_seconds_follow(&times, allowed, "one point per second, oldest first");
    // The window ends at the newest second held, whenever in its second the client
    // subscribed: a whole window, not one point short.
    assert!(
        points.len() <= 1800 && points.len() as u64 + allowed >= 1800,
        "a backfilled window holds 1800 points, got {} ({allowed} ticks without a point)",
        points.len()
    );
    let last = time_of(points.last().unwrap());
    assert!(now - last <= 2, "history ends now: {last} vs {now}");
    assert!(last - times[0] < 1800, "{}..={last}", times[0]);
    for p in &points {
        let obj = p.as_object().unwrap();
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 4, "{p}");
        assert_eq!(p["assetName"], "USDJPY");
        assert_eq!(p["assetId"], 2);
        assert!(p["value"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn history_seconds_sets_the_backfilled_window() {
    let server = Server::start(&[("WS_ASSETS_HISTORY_SECONDS", "120")]);
    let mut client = server.client();
    let points = client.subscribe_history(4);
    let times: Vec<i64> = points.iter().map(time_of).collect();
    let allowed = server.ticks_without_point();
    assert_seconds_follow(&times, allowed, "one point per second");
    assert!(
        points.len() <= 120 && points.len() as u64 + allowed >= 120,
        "a backfilled 120 s window holds 120 points, got {} ({allowed} ticks without a point)",
        points.len()
    );
    let now = common::epoch_now();
    let last = time_of(points.last().unwrap());
    assert!(now - last <= 2, "history ends now: {last} vs {now}");
}

#[test]
fn a_short_history_window_keeps_only_its_last_seconds() {
    const WINDOW: i64 = 4;
    let server = Server::start(&[
        ("WS_ASSETS_HISTORY_SECONDS", "4"),
        ("WS_ASSETS_SIMULATED_BACKFILL", "false"),
    ]);
    // A watcher records every point of asset 2 until there are more than the window holds.
    let mut watcher = server.client();
    let mut recorded = watcher.subscribe_history(2);
    while recorded.len() < WINDOW as usize + 2 {
        recorded.push(watcher.recv_point());
    }
    let mut client = server.client();
    let history = client.subscribe_history(2);
    let last = time_of(history.last().expect("a history"));
    while time_of(recorded.last().unwrap()) < last {
        recorded.push(watcher.recv_point());
    }
    // The window ends at the current second, which may not have its point yet.
    let first = time_of(&history[0]);
    assert!(
        first > last - WINDOW,
        "a {WINDOW} s window holds {first}..={last}"
    );
    let expected: Vec<Value> = recorded
        .into_iter()
        .filter(|p| (first..=last).contains(&time_of(p)))
        .collect();
    assert_eq!(history, expected, "the window's points, all of them");
    assert!(
        first <= last - (WINDOW - 2),
        "a {WINDOW} s window holds only {first}..={last}"
    );
}

#[test]
fn live_points_follow_history_with_an_exact_seam() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let history = client.subscribe_history(1);
    let mut times = vec![time_of(history.last().unwrap())];
    for _ in 0..4 {
        let point = client.recv();
        assert_eq!(point["action"], "point");
        let p = &point["message"];
        assert_eq!(p["assetId"], 1);
        assert_eq!(p["assetName"], "EURUSD");
        times.push(time_of(p));
    }
    assert_seconds_follow(
        &times,
        server.ticks_without_point(),
        "the history's last second, then live: no gap and no repeat",
    );
}

#[test]
fn history_without_backfill_still_seams_exactly() {
    let launched = Instant::now();
    let server = Server::start(&[("WS_ASSETS_SIMULATED_BACKFILL", "false")]);
    // A watcher records asset 3 from the start; the client subscribes once a tick has
    // recorded a point, so its history is not empty.
    let mut watcher = server.client();
    let mut recorded = watcher.subscribe_history(3);
    recorded.push(watcher.recv_point());
    let mut client = server.client();
    let history = client.subscribe_history(3);
    let last = time_of(
        history
            .last()
            .expect("a point was recorded before subscribing"),
    );
    while time_of(recorded.last().unwrap()) < last {
        recorded.push(watcher.recv_point());
    }
    recorded.retain(|p| time_of(p) <= last);
    assert_eq!(history, recorded, "the history is what was recorded live");
    // Nothing was invented for the time before the start.
    let seconds_up = launched.elapsed().as_secs() as usize + 1;
    assert!(
        history.len() <= seconds_up,
        "{} points in a history {seconds_up} s after the start",
        history.len()
    );
    let next = client.recv_action("point");
    assert_seconds_follow(
        &[last, time_of(&next["message"])],
        server.ticks_without_point(),
        "the seam",
    );
}

#[test]
fn resubscribe_switches_assets_with_no_old_point_after_the_new_history() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.subscribe_history(1);
    client.recv_action("point");
    client.subscribe(4);
    // Points of asset 1 may still arrive before the new history; none after it.
    let history = loop {
        let msg = client.recv();
        if msg["action"] == "asset_history" {
            break msg;
        }
        assert_eq!(msg["message"]["assetId"], 1);
    };
    let points = history["message"]["points"].as_array().unwrap();
    assert!(points.iter().all(|p| p["assetId"] == 4));
    let mut times = vec![time_of(points.last().unwrap())];
    for _ in 0..3 {
        let point = client.recv();
        assert_eq!(point["action"], "point");
        assert_eq!(
            point["message"]["assetId"], 4,
            "old asset's point after new history"
        );
        times.push(time_of(&point["message"]));
    }
    assert_seconds_follow(&times, server.ticks_without_point(), "the new asset's seam");
}

#[test]
fn resubscribing_to_the_same_asset_sends_fresh_history_without_duplicates() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.subscribe_history(5);
    let first_live = client.recv_action("point");
    let history = client.subscribe_history(5);
    let last = time_of(history.last().unwrap());
    assert!(
        last >= time_of(&first_live["message"]),
        "fresh history includes what was sent live"
    );
    let mut times = vec![last];
    for _ in 0..3 {
        let point = client.recv();
        assert_eq!(point["action"], "point");
        times.push(time_of(&point["message"]));
    }
    assert_seconds_follow(
        &times,
        server.ticks_without_point(),
        "exactly one stream, no duplicates",
    );
}

#[test]
fn unsubscribe_stops_points() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.subscribe_history(1);
    client.recv_action("point");
    client.send_text(r#"{"action":"unsubscribe","message":{}}"#);
    let reply = client.recv_action("unsubscribed");
    assert_eq!(reply, json!({"action":"unsubscribed","message":{}}));
    assert_eq!(client.silent_for(Duration::from_millis(2500)), Ok(()));
    // Unsubscribing again is harmless and still answered.
    client.send_text(r#"{"action":"unsubscribe","message":{}}"#);
    assert_eq!(client.recv()["action"], "unsubscribed");
}

#[test]
fn two_clients_are_isolated() {
    let server = Server::start(&[]);
    let mut a = server.client();
    let mut b = server.client();
    a.subscribe_history(1);
    b.subscribe_history(2);
    a.send_text("not json");
    assert_eq!(
        a.recv_action("error")["message"]["error_type"],
        "ParseError"
    );
    for _ in 0..3 {
        let pa = a.recv();
        let pb = b.recv();
        assert_eq!(pa["message"]["assetId"], 1, "{pa}");
        assert_eq!(pb["message"]["assetId"], 2, "{pb}");
        assert_eq!(pb["action"], "point", "b never sees a's error");
    }
}

fn expect_error(client: &mut Client, request: &str, error_type: &str, text_part: &str) {
    client.send_text(request);
    let reply = client.recv_action("error");
    assert_eq!(
        reply["message"]["error_type"], error_type,
        "{request} -> {reply}"
    );
    let text = reply["message"]["error_text"].as_str().unwrap();
    assert!(
        text.contains(text_part),
        "{request}: {text:?} should mention {text_part:?}"
    );
    // The connection stays usable.
    client.send_text(r#"{"action":"assets","message":{}}"#);
    assert_eq!(
        client.recv_action("assets")["message"]["assets"][0]["id"],
        1
    );
}

#[test]
fn every_error_row_answers_and_keeps_the_connection() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let rows = [
        ("{not json", "ParseError", "JSON"),
        ("", "ParseError", "JSON"),
        ("[1,2]", "ValidationError", "JSON object"),
        ("\"assets\"", "ValidationError", "JSON object"),
        (r#"{"message":{}}"#, "ValidationError", "action"),
        (
            r#"{"action":"foo","message":{}}"#,
            "ValidationError",
            "unknown action \"foo\"; expected one of: assets, subscribe, unsubscribe",
        ),
        (r#"{"action":7,"message":{}}"#, "ValidationError", "action"),
        (r#"{"action":"assets"}"#, "ValidationError", "message"),
        (
            r#"{"action":"assets","message":"x"}"#,
            "ValidationError",
            "message",
        ),
        (
            r#"{"action":"subscribe","message":{}}"#,
            "ValidationError",
            "assetId",
        ),
        (
            r#"{"action":"subscribe","message":{"assetId":"1"}}"#,
            "ValidationError",
            "integer",
        ),
        (
            r#"{"action":"subscribe","message":{"assetId":1.5}}"#,
            "ValidationError",
            "integer",
        ),
        (
            r#"{"action":"subscribe","message":{"assetId":-3}}"#,
            "ValidationError",
            "range",
        ),
        (
            r#"{"action":"subscribe","message":{"assetId":99999999999}}"#,
            "ValidationError",
            "range",
        ),
        (
            r#"{"action":"subscribe","message":{"assetId":42}}"#,
            "UnknownAsset",
            "42",
        ),
    ];
    for (request, error_type, text_part) in rows {
        expect_error(&mut client, request, error_type, text_part);
    }
}

#[test]
fn a_binary_frame_is_a_validation_error() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client
        .ws
        .send(Message::binary(
            b"{\"action\":\"assets\",\"message\":{}}".to_vec(),
        ))
        .unwrap();
    let reply = client.recv();
    assert_eq!(reply["action"], "error");
    assert_eq!(reply["message"]["error_type"], "ValidationError");
    assert!(
        reply["message"]["error_text"]
            .as_str()
            .unwrap()
            .contains("binary")
    );
    client.send_text(r#"{"action":"assets","message":{}}"#);
    assert_eq!(client.recv()["action"], "assets");
}

#[test]
fn pings_are_answered_with_pongs() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client
        .ws
        .send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    loop {
        match client.ws.read().unwrap() {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"are you there");
                break;
            }
            Message::Ping(_) => continue,
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    client.send_text(r#"{"action":"assets","message":{}}"#);
    assert_eq!(client.recv()["action"], "assets");
}

#[test]
fn requests_split_across_frames_and_pipelined_requests_work() {
    let server = Server::start(&[]);
    let request = r#"{"action":"assets","message":{}}"#;

    // One request in three frames (a text frame and two continuations, none valid JSON
    // by itself), with a ping between them, as RFC 6455 allows.
    let mut client = server.client();
    let (first, rest) = request.split_at(10);
    let (second, third) = rest.split_at(10);
    for frame in [
        Frame::message(first.to_string(), OpCode::Data(Data::Text), false),
        Frame::ping(b"between fragments".to_vec()),
        Frame::message(second.to_string(), OpCode::Data(Data::Continue), false),
        Frame::message(third.to_string(), OpCode::Data(Data::Continue), true),
    ] {
        client.ws.write(Message::Frame(frame)).unwrap();
    }
    client.ws.flush().unwrap();
    let (mut pong, mut reply) = (false, None);
    while !pong || reply.is_none() {
        match client.ws.read().unwrap() {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"between fragments");
                pong = true;
            }
            Message::Text(text) => {
                assert!(reply.is_none(), "one request, one reply; then {text}");
                reply = Some(serde_json::from_str::<Value>(text.as_str()).unwrap());
            }
            _ => {}
        }
    }
    assert_eq!(reply.unwrap()["action"], "assets");

    // One frame trickling in, a few bytes per TCP segment (the header split too).
    let mut stream = server.raw_websocket();
    stream.set_nodelay(true).unwrap();
    for piece in masked_text(request.as_bytes()).chunks(3) {
        stream.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut trickled = Client::from_raw(stream);
    assert_eq!(trickled.recv()["action"], "assets");

    // Three requests written back to back before reading any reply.
    for _ in 0..3 {
        client
            .ws
            .write(Message::text(r#"{"action":"assets","message":{}}"#))
            .unwrap();
    }
    client.ws.flush().unwrap();
    for _ in 0..3 {
        assert_eq!(client.recv()["action"], "assets");
    }
}

#[test]
fn values_are_finite_positive_numbers() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.subscribe_history(2);
    let point: Value = client.recv_action("point");
    let value = point["message"]["value"].as_f64().unwrap();
    assert!(value.is_finite() && value > 0.0);
}
