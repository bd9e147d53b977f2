//! A thousand clients at once all get their history and the same live ticks.

use crate::common::{Client, Server, time_of};

#[test]
fn a_thousand_concurrent_clients_all_receive_history_and_live_points() {
    ws_assets::limits::raise_open_files().expect("raise the test's open-file limit");
    let server = Server::start(&[]);
    let mut clients: Vec<Client> = (0..1000).map(|_| server.client()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.subscribe(1 + (i % 5) as i64);
    }
    let mut last_times = Vec::with_capacity(clients.len());
    for (i, client) in clients.iter_mut().enumerate() {
        let history = client.recv_action("asset_history");
        let points = history["message"]["points"].as_array().unwrap();
        assert!(points.len() >= 1799, "client {i}: {} points", points.len());
        assert!(points.iter().all(|p| p["assetId"] == 1 + (i % 5) as i64));
        last_times.push(time_of(points.last().unwrap()));
    }
    // Two live points each, continuing exactly where that client's history ended.
    for round in 1..=2 {
        for (i, client) in clients.iter_mut().enumerate() {
            let point = client.recv();
            assert_eq!(point["action"], "point", "client {i}");
            assert_eq!(point["message"]["assetId"], 1 + (i % 5) as i64);
            assert_eq!(
                time_of(&point["message"]),
                last_times[i] + 1,
                "client {i}, live point {round}"
            );
            last_times[i] += 1;
        }
    }
}
