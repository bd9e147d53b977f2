//! The server under test: started by the tool (its stderr drained on a helper thread so
//! logging can never block it) or attached to by address and pid.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why the server could not be started or found.
#[derive(Debug)]
pub enum ServerError {
    /// The binary could not be executed.
    Spawn(PathBuf, std::io::Error),
    /// It exited before logging its address.
    ExitedEarly(Option<ExitStatus>, Vec<String>),
    /// It never logged `listening on ADDR`.
    NoAddress(Duration, Vec<String>),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Spawn(p, e) => {
                write!(
                    f,
                    "cannot start {}: {e} (build it with `cargo build --release` or pass --server)",
                    p.display()
                )
            }
            ServerError::ExitedEarly(status, tail) => {
                write!(
                    f,
                    "server exited before listening ({status:?}); last log lines:\n  {}",
                    tail.join("\n  ")
                )
            }
            ServerError::NoAddress(after, tail) => write!(
                f,
                "server logged no `listening on ADDR` line within {after:?} (is WS_ASSETS_LOG_LEVEL info?); \
                 last log lines:\n  {}",
                tail.join("\n  ")
            ),
        }
    }
}

/// What the server wrote to stderr, kept small: counts and the first few warnings/errors.
#[derive(Debug, Default, Clone)]
pub struct LogSummary {
    /// Lines read.
    pub lines: u64,
    /// Lines at WARN level.
    pub warnings: u64,
    /// Lines at ERROR level.
    pub errors: u64,
    /// The first warnings and errors, verbatim.
    pub notable: Vec<String>,
    /// The last lines (for start-up failures).
    pub tail: Vec<String>,
    /// The role the server last logged (`standalone`, `leader`, `follower`).
    pub role: Option<String>,
    /// Role changes logged after the first.
    pub role_changes: u32,
}

/// The role named in a log line: `(role: leader; ...` at start-up, `role: follower (...`
/// when it changes.
pub fn logged_role(line: &str) -> Option<&str> {
    let rest = &line[line.find("role: ")? + "role: ".len()..];
    let word = rest.split(|c: char| !c.is_ascii_alphabetic()).next()?;
    ["standalone", "leader", "follower"]
        .contains(&word)
        .then_some(word)
}

impl LogSummary {
    fn add(&mut self, line: &str) {
        self.lines += 1;
        if let Some(role) = logged_role(line) {
            if self.role.is_some() {
                self.role_changes += 1;
            }
            self.role = Some(role.to_string());
        }
        let upper = line.to_ascii_uppercase();
        let notable = if upper.contains("ERROR") {
            self.errors += 1;
            true
        } else if upper.contains("WARN") {
            self.warnings += 1;
            true
        } else {
            false
        };
        if notable && self.notable.len() < 8 {
            self.notable.push(line.to_string());
        }
        if self.tail.len() == 20 {
            self.tail.remove(0);
        }
        self.tail.push(line.to_string());
    }
}

/// Finds the address in a `... listening on 127.0.0.1:PORT ...` log line.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let token = rest.split_whitespace().next()?;
    token.trim_end_matches([',', ')', ';', '.']).parse().ok()
}

/// A server process the tool started, or one it attached to.
pub struct Server {
    /// Its WebSocket address.
    pub addr: SocketAddr,
    /// Its pid.
    pub pid: u32,
    /// When it was spawned (None when attached).
    pub spawned_at: Option<Instant>,
    /// Its executable's size in bytes, if readable.
    pub binary_bytes: Option<u64>,
    /// The environment it was started with (names and values the tool set).
    pub env: Vec<(String, String)>,
    /// Spawn to its `listening on` line (None when attached).
    pub ready_after: Option<Duration>,
    child: Option<Child>,
    log: Arc<Mutex<LogSummary>>,
}

impl Server {
    /// Starts `path` on loopback port `port` (0: a free one) with `extra` variables
    /// besides the tool's, and waits (up to 30 s) for its address.
    pub fn spawn(path: &Path, port: u16, extra: &[(&str, String)]) -> Result<Server, ServerError> {
        let mut env: Vec<(String, String)> = [
            ("WS_ASSETS_PORT", port.to_string()),
            ("WS_ASSETS_HOST", "127.0.0.1".to_string()),
            ("WS_ASSETS_LOG_LEVEL", "info".to_string()),
            ("WS_ASSETS_SIMULATED_BACKFILL", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            match env.iter_mut().find(|(name, _)| name == k) {
                Some(slot) => slot.1 = v.clone(),
                None => env.push((k.to_string(), v.clone())),
            }
        }
        let binary_bytes = std::fs::metadata(path).ok().map(|m| m.len());
        let spawned_at = Instant::now();
        let mut child = Command::new(path)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ServerError::Spawn(path.to_path_buf(), e))?;
        let log = Arc::new(Mutex::new(LogSummary::default()));
        let (tx, rx) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut sent = false;
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if !sent && let Some(addr) = listening_addr(&line) {
                        sent = tx.send(addr).is_ok();
                    }
                    if let Ok(mut l) = log.lock() {
                        l.add(&line);
                    }
                }
            });
        }
        let pid = child.id();
        let mut server = Server {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid,
            spawned_at: Some(spawned_at),
            binary_bytes,
            env,
            ready_after: None,
            child: Some(child),
            log,
        };
        server.addr = server.wait_for_address(&rx, Duration::from_secs(30))?;
        server.ready_after = Some(spawned_at.elapsed());
        Ok(server)
    }

    fn wait_for_address(
        &mut self,
        rx: &Receiver<SocketAddr>,
        limit: Duration,
    ) -> Result<SocketAddr, ServerError> {
        let start = Instant::now();
        loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(50)) {
                return Ok(addr);
            }
            if let Some(status) = self.try_exit_status() {
                std::thread::sleep(Duration::from_millis(100)); // let the drain thread finish
                return Err(ServerError::ExitedEarly(Some(status), self.log().tail));
            }
            if start.elapsed() > limit {
                return Err(ServerError::NoAddress(limit, self.log().tail));
            }
        }
    }

    /// Attaches to a running server.
    pub fn attach(addr: SocketAddr, pid: u32) -> Server {
        let binary_bytes = std::fs::metadata(format!("/proc/{pid}/exe"))
            .ok()
            .map(|m| m.len());
        Server {
            addr,
            pid,
            spawned_at: None,
            binary_bytes,
            env: Vec::new(),
            ready_after: None,
            child: None,
            log: Arc::new(Mutex::new(LogSummary::default())),
        }
    }

    /// A copy of what the server has logged so far (empty when attached).
    pub fn log(&self) -> LogSummary {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The exit status if a spawned server has already exited.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Whether the server is still running (always true when attached and /proc has it).
    pub fn alive(&mut self) -> bool {
        match self.child {
            Some(_) => self.try_exit_status().is_none(),
            None => Path::new(&format!("/proc/{}", self.pid)).exists(),
        }
    }

    /// Stops a spawned server with SIGTERM (SIGKILL after 10 s) and returns how it exited.
    /// An attached server is left running.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        // SAFETY: kill(2) on the pid of a child we started and have not reaped.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_log_lines() {
        let a: SocketAddr = "127.0.0.1:41234".parse().unwrap();
        assert_eq!(
            listening_addr("14:05:00 [INFO] listening on 127.0.0.1:41234"),
            Some(a)
        );
        assert_eq!(
            listening_addr("listening on 127.0.0.1:41234, ui enabled"),
            Some(a)
        );
        assert_eq!(
            listening_addr("[INFO] ws_assets: listening on 127.0.0.1:41234 (websocket)"),
            Some(a)
        );
        assert_eq!(listening_addr("[INFO] starting"), None);
        assert_eq!(listening_addr("listening on nowhere"), None);
    }

    #[test]
    fn finds_the_role_in_log_lines() {
        assert_eq!(
            logged_role("[INFO] listening on 127.0.0.1:1, port shared (role: leader; store: x)"),
            Some("leader")
        );
        assert_eq!(
            logged_role("[WARN] role: follower (the leadership lock was lost)"),
            Some("follower")
        );
        assert_eq!(logged_role("[INFO] role: nonsense"), None);
        let mut l = LogSummary::default();
        l.add("listening on 127.0.0.1:1 (role: follower; store: x)");
        l.add("role: leader (polling the feed and publishing its points)");
        assert_eq!((l.role.as_deref(), l.role_changes), (Some("leader"), 1));
    }

    #[test]
    fn log_summary_counts_levels_and_keeps_a_tail() {
        let mut l = LogSummary::default();
        for i in 0..30 {
            l.add(&format!("[INFO] line {i}"));
        }
        l.add("[WARN] slow consumer closed");
        l.add("[ERROR] boom");
        assert_eq!((l.lines, l.warnings, l.errors), (32, 1, 1));
        assert_eq!(l.notable.len(), 2);
        assert_eq!(l.tail.len(), 20);
        assert_eq!(l.tail.last().map(String::as_str), Some("[ERROR] boom"));
    }

    #[test]
    fn a_missing_binary_is_a_clear_error() {
        let err = Server::spawn(Path::new("/nonexistent/ws_assets"), 0, &[])
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("cannot start /nonexistent/ws_assets")
        );
    }

    #[test]
    fn a_server_that_exits_early_is_reported_with_its_log() {
        let err = Server::spawn(Path::new("/bin/false"), 0, &[])
            .err()
            .unwrap();
        assert!(matches!(err, ServerError::ExitedEarly(..)), "{err}");
    }
}
