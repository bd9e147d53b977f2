//! A thousand clients at once all get their history and the same live ticks.

use crate::common::{Client, Server, assert_seconds_follow, time_of};

#[test]
fn a_thousand_concurrent_clients_all_receive_history_and_live_points() {
    ws_assets::limits::raise_open_files().expect("raise the test's open-file limit");
    let server = Server::start(&[]);
    let mut clients: Vec<Client> = (0..1000).map(|_| server.client()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.subscribe(1 + (i % 5) as i64);
    }
    let mut last_times = Vec::with_capacity(clients.len());
    let mut history_lens = Vec::with_capacity(clients.len());
    for (i, client) in clients.iter_mut().enumerate() {
        let history = client.recv_action("asset_history");
        let points = history["message"]["points"].as_array().unwrap();
        history_lens.push(points.len() as u64);
        assert!(points.iter().all(|p| p["assetId"] == 1 + (i % 5) as i64));
        last_times.push(time_of(points.last().unwrap()));
    }
    // Two live points each, continuing exactly where that client's history ended (a
    // second the server counted as without a point aside).
    let mut streams: Vec<Vec<i64>> = last_times.into_iter().map(|last| vec![last]).collect();
    for _round in 1..=2 {
        for (i, client) in clients.iter_mut().enumerate() {
            let point = client.recv();
            assert_eq!(point["action"], "point", "client {i}");
            assert_eq!(point["message"]["assetId"], 1 + (i % 5) as i64);
            streams[i].push(time_of(&point["message"]));
        }
    }
    let allowed = server.ticks_without_point();
    // A whole 30-minute window each, whenever in its second the client subscribed.
    for (i, &len) in history_lens.iter().enumerate() {
        assert!(
            len <= 1800 && len + allowed >= 1800,
            "client {i}: {len} points of history, {allowed} ticks without a point"
        );
    }
    for (i, times) in streams.iter().enumerate() {
        assert_seconds_follow(times, allowed, &format!("client {i}"));
    }
}
