//! Shared helpers for black-box tests: start the real server binary on port 0 and talk
//! to it with a real WebSocket client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// The server under test; killed when dropped.
pub struct Server {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server with the embedded defaults plus `env`, on 127.0.0.1 port 0.
    pub fn start(env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ws_assets"));
        command
            .env_clear()
            .env("WS_ASSETS_HOST", "127.0.0.1")
            .env("WS_ASSETS_PORT", "0")
            .env("WS_ASSETS_LOG_LEVEL", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn ws_assets");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr.parse().expect("address in the log"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Server { child, addr, log }
    }

    /// Connects a WebSocket client to `/api/v1/websocket`.
    pub fn client(&self) -> Client {
        Client::connect(self.addr, "/api/v1/websocket")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Sends SIGTERM to the server.
    pub fn terminate(&self) {
        // SAFETY: kill() with a pid we spawned and still own.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }

    /// Waits for the server to exit and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// One plain HTTP request; returns (status, body).
    pub fn http(&self, request: &str) -> (u16, String) {
        http_request(self.addr, request)
    }

    /// `GET path` over plain HTTP; returns (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        self.http(&format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes and reads the whole answer (the server closes after one response).
pub fn http_request(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A blocking WebSocket client with a read timeout.
pub struct Client {
    /// The underlying socket, for tests that need raw frames.
    pub ws: WebSocket<TcpStream>,
}

impl Client {
    /// Connects and completes the handshake on `path`.
    pub fn connect(addr: SocketAddr, path: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let url = format!("ws://{addr}{path}");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("handshake");
        Client { ws }
    }

    /// Sends a text frame.
    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    /// Sends `{"action":"subscribe","message":{"assetId":id}}`.
    pub fn subscribe(&mut self, asset_id: i64) {
        self.send_text(&format!(
            r#"{{"action":"subscribe","message":{{"assetId":{asset_id}}}}}"#
        ));
    }

    /// The next JSON text message (control frames are skipped).
    pub fn recv(&mut self) -> Value {
        loop {
            match self.ws.read().expect("read") {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("server sent JSON");
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// The next message whose action is `action`, skipping others (e.g. points).
    pub fn recv_action(&mut self, action: &str) -> Value {
        loop {
            let msg = self.recv();
            if msg["action"] == action {
                return msg;
            }
        }
    }

    /// Subscribes and returns the history's points.
    pub fn subscribe_history(&mut self, asset_id: i64) -> Vec<Value> {
        self.subscribe(asset_id);
        let history = self.recv_action("asset_history");
        history["message"]["points"]
            .as_array()
            .expect("points array")
            .clone()
    }

    /// Reads until the server's close frame; returns its code.
    pub fn recv_close(&mut self) -> Option<CloseCode> {
        loop {
            match self.ws.read() {
                Ok(Message::Close(frame)) => return frame.map(|f| f.code),
                Ok(_) => continue,
                Err(e) => panic!("connection ended without a close frame: {e}"),
            }
        }
    }

    /// Whether nothing but control frames arrives within `wait`.
    pub fn silent_for(&mut self, wait: Duration) -> Result<(), Value> {
        self.ws.get_ref().set_read_timeout(Some(wait)).unwrap();
        let result = loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    break Err(serde_json::from_str(text.as_str()).unwrap());
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break Ok(());
                }
                Err(e) => panic!("read failed: {e}"),
            }
        };
        self.ws
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        result
    }
}

/// The `time` of a point value.
pub fn time_of(point: &Value) -> i64 {
    point["time"].as_i64().expect("integer time")
}
