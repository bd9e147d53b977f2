//! The server under test: the real binary, its log, its signals and its HTTP side.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::{HttpResponse, http_exchange, http_request};
use super::metrics::Metrics;
use super::process::{drain_lines, end, ws_assets};
use super::websocket::{Client, raw_websocket};

/// How long the binary may take to log its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a clean exit after SIGTERM (the server itself waits at most 5 s).
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The server's standard error, line by line, with a signal for every new line.
#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
    /// Whether the reader has stopped reading the pipe (see
    /// [`Server::start_with_log_unread`]).
    held: Mutex<bool>,
    released: Condvar,
}

impl Log {
    fn lines(&self) -> MutexGuard<'_, Vec<String>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, line: String) {
        self.lines().push(line);
        self.grew.notify_all();
    }

    fn held(&self) -> MutexGuard<'_, bool> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the reader after the line it is handling, until [`Log::release`].
    fn hold(&self) {
        *self.held() = true;
    }

    fn release(&self) {
        *self.held() = false;
        self.released.notify_all();
    }

    /// Blocks the reader (leaving the pipe unread) while the log is held.
    fn wait_while_held(&self) {
        let held = self.held();
        drop(
            self.released
                .wait_while(held, |held| *held)
                .unwrap_or_else(|e| e.into_inner()),
        );
    }

    /// Waits until a line contains `needle`; false if none does within `within`.
    fn wait_for(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut lines = self.lines();
        let mut checked = 0;
        loop {
            if lines[checked..].iter().any(|line| line.contains(needle)) {
                return true;
            }
            checked = lines.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            lines = self
                .grew
                .wait_timeout(lines, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The server binary running on a loopback port. Dropping it stops it as an operator
/// would (SIGTERM, see [`end`]), so a failing test leaves nothing behind and every
/// server writes its coverage profile in an instrumented run.
pub struct Server {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    log: Arc<Log>,
}

impl Server {
    /// Starts the server with the embedded defaults plus `env`, on 127.0.0.1 port 0, and
    /// returns once it has logged its address.
    pub fn start(env: &[(&str, &str)]) -> Server {
        Server::start_on(0, env)
    }

    /// Like [`Server::start`] on a given port (e.g. to restart a server where its clients
    /// expect it).
    pub fn start_on(port: u16, env: &[(&str, &str)]) -> Server {
        Server::try_start_on(port, env).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Server::start`], but once the server has logged its address nobody reads
    /// its standard error, as when a log sink has stalled (a pipe nobody reads), until
    /// [`Server::read_log_again`].
    pub fn start_with_log_unread(env: &[(&str, &str)]) -> Server {
        Server::launch(0, env, true).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Server::start_on`], with a failure to start as an error (its text holds the
    /// log) instead of a panic.
    pub fn try_start_on(port: u16, env: &[(&str, &str)]) -> Result<Server, String> {
        Server::launch(port, env, false)
    }

    /// Starts the binary and waits for its address; with `leave_log_unread`, its log is
    /// not read past that line (see [`Server::start_with_log_unread`]).
    fn launch(port: u16, env: &[(&str, &str)], leave_log_unread: bool) -> Result<Server, String> {
        Server::launch_with(port, env, leave_log_unread, |_| {})
    }

    /// Like [`Server::start`], with `configure` given the command before it is spawned,
    /// for what the environment cannot say (e.g. a resource limit set in the child).
    pub fn start_with_command(
        env: &[(&str, &str)],
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        Server::launch_with(0, env, false, configure).unwrap_or_else(|e| panic!("{e}"))
    }

    fn launch_with(
        port: u16,
        env: &[(&str, &str)],
        leave_log_unread: bool,
        configure: impl FnOnce(&mut Command),
    ) -> Result<Server, String> {
        let mut command = ws_assets(port, env);
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        configure(&mut command);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot spawn ws_assets: {e}"))?;
        let log = Arc::new(Log::default());
        let (addr_tx, addr_rx) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            drain_lines(stderr, move |line| {
                let addr = listening_addr(&line);
                // Logged before it is announced: the whole line is there when `start` returns.
                log.push(line);
                if let Some(addr) = addr {
                    if leave_log_unread {
                        log.hold();
                    }
                    let _ = addr_tx.send(addr);
                }
                log.wait_while_held();
            });
        }
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        // Ends early, disconnected, when the binary exits without listening.
        match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                server.addr = addr;
                Ok(server)
            }
            Err(_) => Err(format!(
                "the server logged no \"listening on ADDR\" line within {START_TIMEOUT:?}; log:\n{}",
                server.log()
            )),
        }
    }

    /// `http://ADDR` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    // ---- clients ---------------------------------------------------------------------

    /// Connects a WebSocket client to `/api/v1/websocket`.
    pub fn client(&self) -> Client {
        Client::connect(self.addr, "/api/v1/websocket")
    }

    /// A connection upgraded to WebSocket by hand, which then does nothing unless told:
    /// see [`raw_websocket`].
    pub fn raw_websocket(&self) -> TcpStream {
        raw_websocket(self.addr)
    }

    // ---- HTTP ------------------------------------------------------------------------

    /// One plain HTTP request; returns (status, body).
    pub fn http(&self, request: &str) -> (u16, String) {
        http_request(self.addr, request)
    }

    /// `GET path` over plain HTTP; returns (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        self.http(&format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
    }

    /// One raw request and all of its answer; see [`http_exchange`].
    pub fn request(&self, request: &str) -> HttpResponse {
        http_exchange(self.addr, request.as_bytes(), Duration::from_secs(10))
    }

    /// `GET /health`: the status and the parsed body.
    pub fn health(&self) -> (u16, Value) {
        let (status, body) = self.get("/health");
        let health = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/health ({status}) is not JSON ({e}): {body}"));
        (status, health)
    }

    /// `GET /metrics`, which must answer 200, parsed (and checked for format).
    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "/metrics answered {status}: {body}");
        Metrics::parse(&body)
    }

    /// The value of one series in `/metrics`, named with its labels exactly as
    /// rendered (e.g. `ws_assets_feed_errors_total{kind="status"}`); `None` if absent.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics().get(series)
    }

    /// Like [`Server::metric`], but a missing series fails the test.
    pub fn metric_value(&self, series: &str) -> f64 {
        self.metrics().value(series)
    }

    // ---- the log ---------------------------------------------------------------------

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.log.lines().join("\n")
    }

    /// How many lines of the log so far contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lines()
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Waits until a log line contains `needle`; false if none does within `within`.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        self.log.wait_for(needle, within)
    }

    /// Reads the log again after [`Server::start_with_log_unread`].
    pub fn read_log_again(&self) {
        self.log.release();
    }

    // ---- the process -----------------------------------------------------------------

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident private memory, in bytes (`RssAnon` of `/proc/PID/status`):
    /// its heap and stacks, without the pages of its binary and libraries, which the
    /// kernel maps in and out as it likes. What a memory assertion should read.
    pub fn private_memory_bytes(&self) -> u64 {
        self.proc_status_bytes("RssAnon")
    }

    /// A `... kB` field of `/proc/PID/status`, in bytes.
    fn proc_status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read the server's /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status:\n{status}"));
        kib * 1024
    }

    /// Ticks since the start that recorded no point: every outcome of
    /// `ws_assets_ticks_total` but `ok` (missed because the loop was held up, skipped,
    /// failed, late, empty). On a loaded machine a second may pass without a point;
    /// the server counts each, and a test allows exactly that many gaps (see
    /// [`assert_seconds_follow`](super::assert_seconds_follow)).
    pub fn ticks_without_point(&self) -> u64 {
        self.metrics().ticks_without_point()
    }

    // ---- signals and exit ------------------------------------------------------------

    /// Sends `signal` (e.g. `libc::SIGINT`) to the server.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill() with the pid of a child we spawned and have not reaped.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "kill({signal}) failed");
    }

    /// Sends SIGTERM to the server.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends SIGINT to the server (what Ctrl-C does).
    pub fn interrupt(&self) {
        self.signal(libc::SIGINT);
    }

    /// Kills the server at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the server to exit and returns its exit code (`None` if it is still
    /// running after `within`, or a signal ended it).
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

    /// Stops the server with SIGTERM, fails the test unless it exits 0 in time, and
    /// returns its whole log.
    pub fn stop_and_log(&mut self) -> String {
        self.terminate();
        let code = self.wait_exit(EXIT_TIMEOUT);
        assert_eq!(
            code,
            Some(0),
            "clean exit after SIGTERM; log:\n{}",
            self.log()
        );
        // The log is read by another thread; its last line is "stopped".
        self.wait_for_log("stopped", Duration::from_secs(5));
        self.log()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Read the log to its end, or a held reader would keep the server's pipe full.
        self.log.release();
        end(&mut self.child);
    }
}

/// The address after `listening on ` in a log line, if the line has one.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let at = line.find("listening on ")?;
    let rest = &line[at + "listening on ".len()..];
    let rest = rest.strip_prefix("http://").unwrap_or(rest);
    let token: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    token.parse().ok()
}
