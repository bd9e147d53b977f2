//! WebSocket from the client's side: a real client (tungstenite), and raw frames for
//! what a well-behaved client never does (not reading, breaking the protocol).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::protocol::Role;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// Read timeout of a client between messages.
pub(super) const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What a [`Client`] speaks over: a TCP socket, or TLS over one.
pub trait ClientStream: Read + Write {
    /// Sets how long a read waits (see `TcpStream::set_read_timeout`).
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl ClientStream for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

/// A blocking WebSocket client with a read timeout, over plain TCP (`ws://`) unless
/// said otherwise (`wss://`: see `common::tls`).
pub struct Client<S = TcpStream> {
    /// The underlying socket, for tests that need raw frames.
    pub ws: WebSocket<S>,
}

impl Client {
    /// Connects and completes the handshake on `path`.
    pub fn connect(addr: SocketAddr, path: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let url = format!("ws://{addr}{path}");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("handshake");
        Client { ws }
    }

    /// A client over a connection whose handshake was done by hand
    /// ([`raw_websocket`]), e.g. to read what the server sent it after raw frames.
    pub fn from_raw(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        Client {
            ws: WebSocket::from_raw_socket(stream, Role::Client, None),
        }
    }
}

impl<S: ClientStream> Client<S> {
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

    /// The message of the next `point`, skipping other actions.
    pub fn recv_point(&mut self) -> Value {
        self.recv_action("point")["message"].clone()
    }

    /// The message of every `point` until the server's close frame (or the end of the
    /// connection).
    pub fn points_until_close(&mut self) -> Vec<Value> {
        let mut points = Vec::new();
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    let msg: Value = serde_json::from_str(text.as_str()).expect("server sent JSON");
                    if msg["action"] == "point" {
                        points.push(msg["message"].clone());
                    }
                }
                Ok(Message::Close(_)) | Err(_) => return points,
                Ok(_) => {}
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
                Ok(Message::Close(frame)) => {
                    // Complete the close handshake like a well-behaved client.
                    let _ = self.ws.flush();
                    return frame.map(|f| f.code);
                }
                Ok(_) => continue,
                Err(e) => panic!("connection ended without a close frame: {e}"),
            }
        }
    }

    /// The next JSON text message if one arrives within `wait` (control frames
    /// are skipped).
    pub fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        self.silent_for(wait).err()
    }

    /// Whether nothing but control frames arrives within `wait`.
    pub fn silent_for(&mut self, wait: Duration) -> Result<(), Value> {
        ClientStream::set_read_timeout(self.ws.get_ref(), Some(wait)).unwrap();
        let result = loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    break Err(serde_json::from_str(text.as_str()).unwrap());
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break Ok(());
                }
                Err(e) => panic!("read failed: {e}"),
            }
        };
        ClientStream::set_read_timeout(self.ws.get_ref(), Some(READ_TIMEOUT)).unwrap();
        result
    }
}

/// The `time` of a point value.
pub fn time_of(point: &Value) -> i64 {
    point["time"].as_i64().expect("integer time")
}

/// A connection to `/api/v1/websocket` upgraded by hand, which then does nothing unless
/// the test writes to it: it never reads on its own and never answers a ping.
pub fn raw_websocket(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    upgrade_by_hand(&mut stream);
    stream
}

/// Sends a WebSocket upgrade for `/api/v1/websocket` on `stream` and reads the `101`
/// answer's head, nothing more.
pub fn upgrade_by_hand(stream: &mut (impl Read + Write)) {
    stream
        .write_all(
            b"GET /api/v1/websocket HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .expect("write the upgrade request");
    stream.flush().expect("send the upgrade request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("read the 101");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

/// A masked client frame: `first` is the first byte (FIN, RSV1-3 and the opcode, e.g.
/// `0x81` for a whole text frame), then `payload` with a fixed mask.
pub fn masked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len <= 65535 {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [1u8, 2, 3, 4];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A masked client text frame carrying `payload`, whole (FIN set).
pub fn masked_text(payload: &[u8]) -> Vec<u8> {
    masked_frame(0x81, payload)
}

/// What a raw connection received before the server ended it.
#[derive(Debug)]
pub struct Ended {
    /// Every byte received.
    pub bytes: Vec<u8>,
    /// When the end was seen, from the `since` given to [`read_until_closed`].
    pub after: Duration,
}

/// Reads `stream` until the server ends the connection (EOF or reset); `None` if it is
/// still open `within` after `since`.
pub fn read_until_closed(
    stream: &mut TcpStream,
    since: Instant,
    within: Duration,
) -> Option<Ended> {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 65536];
    while since.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(_) => break,
        }
    }
    let after = since.elapsed();
    (after < within).then_some(Ended { bytes, after })
}

/// One frame as the server sent it (server frames are never masked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    /// The opcode: 0x1 text, 0x8 close, 0x9 ping, ...
    pub opcode: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

/// The whole frames in `bytes`, in order (a cut-off last frame is left out).
pub fn server_frames(bytes: &[u8]) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let opcode = bytes[at] & 0x0f;
        let (len, header) = match bytes[at + 1] & 0x7f {
            126 if at + 4 <= bytes.len() => (
                u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize,
                4,
            ),
            127 if at + 10 <= bytes.len() => {
                let mut len = [0u8; 8];
                len.copy_from_slice(&bytes[at + 2..at + 10]);
                (u64::from_be_bytes(len) as usize, 10)
            }
            126 | 127 => break,
            short => (short as usize, 2),
        };
        let Some(payload) = bytes.get(at + header..at + header + len) else {
            break;
        };
        frames.push(ServerFrame {
            opcode,
            payload: payload.to_vec(),
        });
        at += header + len;
    }
    frames
}
