//! Failover through a real load balancer: Debian's HAProxy with the shipped
//! `deploy/haproxy.cfg` in front of three instances on one database. A client streams
//! through HAProxy, the instance it is on is killed (`kill -9`), and the client
//! reconnects through HAProxy and resumes with `since`: its stream then holds every
//! second, except at most one that nobody polled during a takeover, none twice and in
//! order.
//!
//! Needs HAProxy: run `.ci/install-haproxy` once (as root).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{Client, Server, time_of, wait_until};
use crate::pgdb::TestDb;

/// The shipped configuration, as an operator would install it.
const SHIPPED_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy.cfg");
/// The ports in it: the one clients use and the instances'.
const SHIPPED_FRONT: &str = "bind :8080";
const SHIPPED_INSTANCES: [&str; 3] = ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"];
/// HAProxy's checks take an instance in after two passes a second apart.
const ALL_UP_WITHIN: Duration = Duration::from_secs(30);

/// HAProxy running the shipped configuration, rewritten to loopback ports; killed and its
/// files removed when dropped, also when the test fails.
struct Haproxy {
    child: Child,
    dir: PathBuf,
    /// The address clients connect to.
    addr: SocketAddr,
}

impl Haproxy {
    /// Starts HAProxy in front of `instances` (in the order of the shipped `ws1..ws3`).
    fn start(instances: &[SocketAddr; 3]) -> Haproxy {
        let shipped = std::fs::read_to_string(SHIPPED_CONFIG)
            .unwrap_or_else(|e| panic!("{SHIPPED_CONFIG}: {e}"));
        let port = free_port();
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("ws_assets-haproxy-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut config = shipped.replacen(SHIPPED_FRONT, &format!("bind 127.0.0.1:{port}"), 1);
        assert_ne!(config, shipped, "{SHIPPED_FRONT:?} in {SHIPPED_CONFIG}");
        for (shipped_addr, addr) in SHIPPED_INSTANCES.iter().zip(instances) {
            assert!(
                config.contains(shipped_addr),
                "{shipped_addr} in {SHIPPED_CONFIG}"
            );
            config = config.replacen(shipped_addr, &addr.to_string(), 1);
        }
        // The test asks HAProxy which instances it considers up.
        let socket = dir.join("admin.sock");
        config = config.replacen(
            "global\n",
            &format!(
                "global\n    stats socket {} mode 600 level admin\n",
                socket.display()
            ),
            1,
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let child = Command::new(haproxy_binary())
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start haproxy: {e}"));
        Haproxy {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// The state HAProxy gives each instance (`UP`, `DOWN`, ...), by server name.
    fn states(&self) -> Result<Vec<(String, String)>, String> {
        let mut socket = UnixStream::connect(self.dir.join("admin.sock"))
            .map_err(|e| format!("admin socket: {e}"))?;
        socket
            .write_all(b"show stat\n")
            .map_err(|e| format!("admin socket: {e}"))?;
        let mut csv = String::new();
        socket
            .read_to_string(&mut csv)
            .map_err(|e| format!("admin socket: {e}"))?;
        Ok(csv
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| line.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > 17 && f[0] == "ws_assets_instances" && f[1].starts_with("ws"))
            .map(|f| (f[1].to_string(), f[17].to_string()))
            .collect())
    }

    /// Waits until HAProxy has every instance in.
    fn wait_all_up(&self) {
        wait_until(ALL_UP_WITHIN, "every instance up in HAProxy", || {
            let states = self.states()?;
            if states.len() == 3 && states.iter().all(|(_, state)| state == "UP") {
                Ok(())
            } else {
                Err(format!("{states:?}"))
            }
        });
    }

    /// A WebSocket client through HAProxy.
    fn client(&self) -> Client {
        Client::connect(self.addr, "/api/v1/websocket")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // Our own child, by its handle; it may already be gone, which is fine.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn haproxy_binary() -> PathBuf {
    ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .or_else(|| {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .map(|dir| dir.join("haproxy"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "HAProxy not found; run `.ci/install-haproxy` (as root) to install Debian's \
                 haproxy package"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|probe| probe.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn role(server: &Server) -> String {
    let (_, health) = server.health();
    health["role"].as_str().unwrap_or_default().to_string()
}

/// Asset ids and names of the default assets, in order.
const ASSETS: [(i64, &str); 5] = [
    (1, "EURUSD"),
    (2, "USDJPY"),
    (3, "GBPUSD"),
    (4, "AUDUSD"),
    (5, "USDCAD"),
];

/// Kills the instance the client is on, `leader` or a follower, and checks what the
/// client has once it has reconnected through HAProxy and resumed.
fn a_client_survives_the_loss_of_its_instance(leader: bool) {
    let db = TestDb::create();
    let dsn = db.dsn();
    let mut servers: Vec<Server> = (0..3)
        .map(|_| Server::start(&[("WS_ASSETS_POSTGRESQL_DSN", dsn.as_str())]))
        .collect();
    assert_eq!(role(&servers[0]), "leader");
    let haproxy = Haproxy::start(&[servers[0].addr, servers[1].addr, servers[2].addr]);
    haproxy.wait_all_up();
    let target = if leader { 0 } else { 1 };

    // Clients through HAProxy, each on an asset of its own, until one is on the target.
    let (mut client, asset) = ASSETS
        .iter()
        .find_map(|&(asset, name)| {
            let mut client = haproxy.client();
            client.subscribe_history(asset);
            client.recv_point();
            let series = format!("ws_assets_subscriptions{{asset=\"{name}\"}}");
            (servers[target].metric_value(&series) >= 1.0).then_some((client, asset))
        })
        .expect("a client on the instance to kill");
    let mut seen = vec![time_of(&client.recv_point())];

    servers[target].kill();
    // HAProxy closes the client's side when the instance's side dies.
    seen.extend(client.points_until_close().iter().map(time_of));
    let last = seen[seen.len() - 1];

    let mut again = haproxy.client();
    again.send_text(&format!(
        r#"{{"action":"subscribe","message":{{"assetId":{asset},"since":{last}}}}}"#
    ));
    let history = again.recv_action("asset_history");
    seen.extend(
        history["message"]["points"]
            .as_array()
            .expect("points")
            .iter()
            .map(time_of),
    );
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        seen.push(time_of(&again.recv_point()));
    }

    // In order, nothing twice.
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "in order, none twice: {seen:?}"
    );
    // Every second, except one at most that nobody polled during a takeover.
    let stored: BTreeSet<i64> = db
        .stored(asset as i32)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let missing: Vec<i64> = (seen[0]..=seen[seen.len() - 1])
        .filter(|t| !seen.contains(t))
        .collect();
    let allowed = if leader { 1 } else { 0 };
    assert!(
        missing.len() <= allowed,
        "missing {missing:?} (at most {allowed}): {seen:?}"
    );
    for second in &missing {
        assert!(
            !stored.contains(second),
            "second {second} is stored, yet the client never got it: {seen:?}"
        );
    }
    if leader {
        wait_until(Duration::from_secs(5), "a new leader", || {
            let leaders = servers[1..].iter().filter(|s| role(s) == "leader").count();
            if leaders == 1 {
                Ok(())
            } else {
                Err(format!("{leaders} leaders"))
            }
        });
    }
}

#[test]
fn a_client_through_haproxy_resumes_without_a_hole_when_its_leader_is_killed() {
    a_client_survives_the_loss_of_its_instance(true);
}

#[test]
fn a_client_through_haproxy_resumes_without_a_hole_when_its_follower_is_killed() {
    a_client_survives_the_loss_of_its_instance(false);
}

#[test]
fn the_shipped_configuration_is_valid() {
    let mut check = Command::new(haproxy_binary())
        .args(["-c", "-q", "-f", SHIPPED_CONFIG])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run haproxy -c: {e}"));
    let status = wait_until(Duration::from_secs(30), "haproxy -c", || {
        check
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "still checking".to_string())
    });
    assert!(
        status.success(),
        "haproxy -c -f {SHIPPED_CONFIG}: {status} (run it to see why)"
    );
}
