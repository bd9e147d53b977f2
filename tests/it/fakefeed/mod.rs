//! A fake FXCM ratesjson server for tests: a small HTTP/1.1 server run inside the
//! test, which answers each request as the test decides (a queue of canned replies,
//! then a script keyed by the request's number), and records what it was asked.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

/// What the server does with one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with a Content-Length; the connection stays open.
    Ok(Vec<u8>),
    /// 200 with `Connection: close`, then the connection is closed.
    OkClose(Vec<u8>),
    /// Any status with a body; the connection stays open.
    Status(u16, Vec<u8>),
    /// Waits, then answers 200.
    Slow(Duration, Vec<u8>),
    /// Sends the headers and half the body, waits, then sends the rest.
    SlowBody(Duration, Vec<u8>),
    /// 200 with a chunked body (no Content-Length).
    Chunked(Vec<u8>),
    /// Closes the connection with most of the request unread: the client sees a reset.
    Reset,
    /// Writes these bytes as the whole answer and closes.
    Raw(Vec<u8>),
    /// Waits until request number `.0` has been answered (for up to 10 s), then
    /// `.1` more, then answers 200: an answer overtaken by a later one.
    AfterAnswer(usize, Duration, Vec<u8>),
}

/// Decides the reply to request number `n` (0-based, counted per server) when no
/// canned reply is queued.
type Script = dyn Fn(usize) -> Reply + Send + Sync;

struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    script: Box<Script>,
    /// Request heads, in the order they were complete.
    requests: Mutex<Vec<String>>,
    /// When each request (by number) began to arrive.
    arrivals: Mutex<Vec<SystemTime>>,
    /// Numbers of the requests whose answer has been written (or abandoned).
    answered: Mutex<Vec<usize>>,
    /// Clones of the open connections, by connection number, so `stop` can cut them.
    streams: Mutex<Vec<(usize, TcpStream)>>,
    accepts: AtomicUsize,
    /// Requests begun and not yet answered, and the most there ever were at once.
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The test's feed server: one thread accepting, one thread per connection.
pub struct FakeFeed {
    /// The address it listens on.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeFeed {
    /// Starts on a free loopback port; a request with no queued reply gets a 418.
    pub fn start() -> FakeFeed {
        FakeFeed::start_on(loopback_any()).expect("bind a free loopback port")
    }

    /// Starts on `addr`; a request with no queued reply gets a 418.
    pub fn start_on(addr: SocketAddr) -> io::Result<FakeFeed> {
        FakeFeed::scripted_on(addr, |_| {
            Reply::Status(418, b"no canned reply queued".to_vec())
        })
    }

    /// Starts on a free loopback port; request `n` with no queued reply gets `script(n)`.
    pub fn scripted(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> FakeFeed {
        FakeFeed::scripted_on(loopback_any(), script).expect("bind a free loopback port")
    }

    /// Starts on `addr`; request `n` with no queued reply gets `script(n)`.
    pub fn scripted_on(
        addr: SocketAddr,
        script: impl Fn(usize) -> Reply + Send + Sync + 'static,
    ) -> io::Result<FakeFeed> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            replies: Mutex::new(VecDeque::new()),
            script: Box::new(script),
            requests: Mutex::new(Vec::new()),
            arrivals: Mutex::new(Vec::new()),
            answered: Mutex::new(Vec::new()),
            streams: Mutex::new(Vec::new()),
            accepts: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let sh = Arc::clone(&shared);
        let acceptor = thread::spawn(move || {
            for stream in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let id = sh.accepts.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    lock(&sh.streams).push((id, clone));
                }
                let sh = Arc::clone(&sh);
                thread::spawn(move || {
                    let mut stream = stream;
                    serve(&mut stream, &sh);
                    // Drop our clone first so that dropping `stream` really closes
                    // the socket (with unread data, that close is a reset).
                    lock(&sh.streams).retain(|(i, _)| *i != id);
                });
            }
        });
        Ok(FakeFeed {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Starts on `addr` again after another server left it, retrying for a few
    /// seconds while the port is not yet free.
    pub fn rebind(
        addr: SocketAddr,
        script: impl Fn(usize) -> Reply + Send + Sync + Clone + 'static,
    ) -> FakeFeed {
        let mut last = None;
        for _ in 0..50 {
            match FakeFeed::scripted_on(addr, script.clone()) {
                Ok(feed) => return feed,
                Err(e) => last = Some(e),
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("cannot bind {addr} again: {last:?}");
    }

    /// The URL to give the feed client.
    pub fn url(&self) -> String {
        format!("http://{}/rates", self.addr)
    }

    /// Queues a reply for the next request (ahead of the script).
    pub fn push(&self, reply: Reply) {
        lock(&self.shared.replies).push_back(reply);
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.shared.accepts.load(Ordering::SeqCst)
    }

    /// Heads of the requests received so far.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }

    /// Requests that have begun to arrive (each has been given its reply).
    pub fn request_count(&self) -> usize {
        lock(&self.shared.arrivals).len()
    }

    /// The most requests that were ever being served at once (begun, not yet answered).
    pub fn most_in_flight(&self) -> usize {
        self.shared.most_in_flight.load(Ordering::SeqCst)
    }

    /// When request `n` began to arrive.
    pub fn arrival(&self, n: usize) -> Option<SystemTime> {
        lock(&self.shared.arrivals).get(n).copied()
    }

    /// Closes the listener and every connection, as a server going down would.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag and drops the listener.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for (_, s) in lock(&self.shared.streams).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FakeFeed {
    fn drop(&mut self) {
        self.stop();
    }
}

fn loopback_any() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Serves requests on one connection until it closes or a reply closes it.
fn serve(stream: &mut TcpStream, sh: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    loop {
        let mut head = vec![0u8; 1];
        match stream.read(&mut head) {
            Ok(1) => {}
            _ => return,
        }
        let (n, reply) = {
            // Numbering and choosing under one lock keeps request numbers in
            // arrival order even with several connections.
            let mut arrivals = lock(&sh.arrivals);
            let n = arrivals.len();
            arrivals.push(SystemTime::now());
            let reply = lock(&sh.replies)
                .pop_front()
                .unwrap_or_else(|| (sh.script)(n));
            (n, reply)
        };
        let now_in_flight = sh.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        sh.most_in_flight.fetch_max(now_in_flight, Ordering::SeqCst);
        let answered = || {
            sh.in_flight.fetch_sub(1, Ordering::SeqCst);
            lock(&sh.answered).push(n);
        };
        if let Reply::Reset = reply {
            // Let the rest of the request arrive, then close with it unread.
            thread::sleep(Duration::from_millis(50));
            answered();
            return;
        }
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    answered();
                    return;
                }
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        lock(&sh.requests).push(String::from_utf8_lossy(&head).into_owned());
        let kept = answer(stream, reply, sh);
        answered();
        if kept.is_err() {
            return;
        }
    }
}

/// Writes one reply; `Ok(())` if the connection stays open for the next request.
fn answer(stream: &mut TcpStream, reply: Reply, sh: &Shared) -> Result<(), ()> {
    let sent = |r: io::Result<()>| r.map_err(|_| ());
    match reply {
        Reply::Ok(body) => sent(write_response(stream, 200, &body, false)),
        Reply::Status(code, body) => sent(write_response(stream, code, &body, false)),
        Reply::OkClose(body) => {
            let _ = write_response(stream, 200, &body, true);
            Err(())
        }
        Reply::Slow(delay, body) => {
            thread::sleep(delay);
            sent(write_response(stream, 200, &body, false))
        }
        Reply::SlowBody(delay, body) => {
            let (first, rest) = body.split_at(body.len() / 2);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            sent(stream.write_all(head.as_bytes()))?;
            sent(stream.write_all(first))?;
            thread::sleep(delay);
            sent(stream.write_all(rest))
        }
        Reply::Chunked(body) => {
            sent(stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))?;
            for part in body.chunks(8192) {
                sent(write!(stream, "{:x}\r\n", part.len()))?;
                sent(stream.write_all(part))?;
                sent(stream.write_all(b"\r\n"))?;
            }
            sent(stream.write_all(b"0\r\n\r\n"))
        }
        Reply::Raw(bytes) => {
            let _ = stream.write_all(&bytes);
            Err(())
        }
        Reply::AfterAnswer(other, delay, body) => {
            for _ in 0..1000 {
                if lock(&sh.answered).contains(&other) {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            thread::sleep(delay);
            sent(write_response(stream, 200, &body, false))
        }
        Reply::Reset => Err(()),
    }
}

fn write_response(stream: &mut TcpStream, code: u16, body: &[u8], close: bool) -> io::Result<()> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: text/javascript\r\nContent-Length: {}\r\n{connection}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// `(symbol, bid, ask)` rows as the real feed writes them: JSONP, strings,
/// trailing commas, plus a symbol nobody asked for.
pub fn rates_body<S: AsRef<str>>(rows: &[(S, S, S)]) -> Vec<u8> {
    let mut s = String::from("null({\"Rates\":[");
    for (sym, bid, ask) in rows {
        let (sym, bid, ask) = (sym.as_ref(), bid.as_ref(), ask.as_ref());
        s.push_str(&format!(
            "{{\"Symbol\":\"{sym}\",\"Bid\":\"{bid}\",\"Ask\":\"{ask}\",\"Spread\":\"2.30\",\"ProductType\":\"1\",}},"
        ));
    }
    s.push_str("{\"Symbol\":\"XAUUSD\",\"Bid\":\"2330.1\",\"Ask\":\"2330.6\",\"Spread\":\"50\",\"ProductType\":\"4\",},]});\n");
    s.into_bytes()
}
