//! A small blocking Chrome DevTools Protocol client for the browser tests.
//!
//! It starts Debian's Chromium headless with a fresh profile, talks to it over one
//! WebSocket (tungstenite, blocking, with a short read timeout so every wait has a
//! deadline), attaches to one page target in "flat" session mode, and offers the few
//! calls the tests need: navigate, evaluate JavaScript, click, type, resize the
//! viewport, take a screenshot, and collect console errors.

use std::collections::VecDeque;
use std::fmt;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use crate::common::drain_lines;

/// How long Chromium may take to print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one protocol call may take before the test gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Read timeout on the DevTools socket: the granularity of every deadline check.
const READ_SLICE: Duration = Duration::from_millis(100);
/// Lines of Chromium's stderr kept for error messages.
const STDERR_TAIL: usize = 40;

/// Everything that can go wrong while driving the browser, worded for the person
/// reading a failed test.
pub enum CdpError {
    /// No Chromium binary was found.
    NoChromium,
    /// Chromium could not be started or did not print its DevTools address.
    Launch(String),
    /// A socket or file operation failed.
    Io(String, std::io::Error),
    /// The DevTools WebSocket failed.
    Socket(tungstenite::Error),
    /// Chromium answered a call with an error.
    Protocol { method: String, message: String },
    /// A JavaScript expression threw.
    Script { expression: String, message: String },
    /// Something did not happen before its deadline.
    Timeout(String),
    /// An answer did not have the expected shape.
    Unexpected(String),
}

impl fmt::Display for CdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CdpError::NoChromium => write!(
                f,
                "Chromium not found (neither /usr/bin/chromium nor `chromium` on PATH); \
                 run `.ci/install-chromium` (as root) to install Debian's chromium package"
            ),
            CdpError::Launch(why) => write!(f, "could not start Chromium: {why}"),
            CdpError::Io(what, e) => write!(f, "{what}: {e}"),
            CdpError::Socket(e) => write!(f, "DevTools WebSocket error: {e}"),
            CdpError::Protocol { method, message } => {
                write!(f, "DevTools call {method} failed: {message}")
            }
            CdpError::Script {
                expression,
                message,
            } => write!(f, "JavaScript `{expression}` threw: {message}"),
            CdpError::Timeout(what) => write!(f, "timed out waiting for {what}"),
            CdpError::Unexpected(what) => write!(f, "unexpected DevTools answer: {what}"),
        }
    }
}

impl fmt::Debug for CdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for CdpError {}

impl From<tungstenite::Error> for CdpError {
    fn from(e: tungstenite::Error) -> Self {
        CdpError::Socket(e)
    }
}

/// Finds Debian's Chromium: `/usr/bin/chromium`, else `chromium` on `PATH`.
pub fn find_chromium() -> Result<PathBuf, CdpError> {
    let debian = PathBuf::from("/usr/bin/chromium");
    if debian.is_file() {
        return Ok(debian);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
        .ok_or(CdpError::NoChromium)
}

/// Makes the NSS database `nssdb` with `root_pem` in it, trusted to issue server
/// certificates.
fn trust(nssdb: &Path, root_pem: &Path) -> Result<(), CdpError> {
    std::fs::create_dir_all(nssdb)
        .map_err(|e| CdpError::Io(format!("creating {}", nssdb.display()), e))?;
    let db = format!("sql:{}", nssdb.display());
    let root = root_pem.display().to_string();
    for args in [
        vec!["-N", "-d", &db, "--empty-password"],
        vec![
            "-A",
            "-d",
            &db,
            "-t",
            "C,,",
            "-n",
            "ws_assets-test-root",
            "-i",
            &root,
        ],
    ] {
        let out = Command::new("certutil").args(&args).output().map_err(|e| {
            CdpError::Io(
                "running certutil (Debian's libnss3-tools; run .ci/install-chromium)".into(),
                e,
            )
        })?;
        if !out.status.success() {
            return Err(CdpError::Launch(format!(
                "certutil {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
    }
    Ok(())
}

/// A running headless Chromium with its own throw-away profile; killed and cleaned
/// up when dropped, also when a test fails.
pub struct Chromium {
    child: Child,
    profile: PathBuf,
    devtools_url: String,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Chromium {
    /// Starts Chromium headless and waits for it to print its DevTools address.
    pub fn launch() -> Result<Chromium, CdpError> {
        Chromium::launch_with(None)
    }

    /// Like [`Chromium::launch`], trusting the certificate authority in `root_pem` as a
    /// user's browser trusts a real one: Chromium on Linux reads the authorities it
    /// trusts from the NSS database in `$HOME/.pki/nssdb`, so it gets a home of its own
    /// (inside its throw-away profile) whose database holds this one, added with
    /// `certutil` (Debian's libnss3-tools).
    pub fn launch_trusting(root_pem: &Path) -> Result<Chromium, CdpError> {
        Chromium::launch_with(Some(root_pem))
    }

    fn launch_with(root_pem: Option<&Path>) -> Result<Chromium, CdpError> {
        let binary = find_chromium()?;
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let profile =
            std::env::temp_dir().join(format!("ws_assets-chromium-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&profile)
            .map_err(|e| CdpError::Io(format!("creating {}", profile.display()), e))?;
        let mut command = Command::new(&binary);
        if let Some(root_pem) = root_pem {
            let home = profile.join("home");
            trust(&home.join(".pki/nssdb"), root_pem)?;
            command.env("HOME", &home);
        }
        let mut child = command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--mute-audio",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CdpError::Launch(format!("{}: {e}", binary.display())))?;

        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let (found_tx, found_rx) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            let tail = Arc::clone(&stderr_tail);
            drain_lines(stderr, move |line| {
                if let Some(at) = line.find("DevTools listening on ") {
                    let url = line[at + "DevTools listening on ".len()..]
                        .trim()
                        .to_string();
                    let _ = found_tx.send(url);
                }
                // Chromium's complaints about a missing D-Bus are noise in a container.
                if line.contains("dbus") {
                    return;
                }
                if let Ok(mut tail) = tail.lock() {
                    if tail.len() == STDERR_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
        let mut chromium = Chromium {
            child,
            profile,
            devtools_url: String::new(),
            stderr_tail,
        };
        match found_rx.recv_timeout(LAUNCH_TIMEOUT) {
            Ok(url) => chromium.devtools_url = url,
            Err(_) => {
                return Err(CdpError::Launch(format!(
                    "no \"DevTools listening on\" line within {LAUNCH_TIMEOUT:?}; stderr:\n{}",
                    chromium.stderr_tail()
                )));
            }
        }
        Ok(chromium)
    }

    /// The last lines Chromium wrote to stderr, for diagnostics.
    pub fn stderr_tail(&self) -> String {
        self.stderr_tail
            .lock()
            .map(|tail| tail.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Connects to the browser endpoint, creates a fresh page target, attaches to it
    /// and enables the Runtime, Log, Page and Network domains.
    pub fn open_page(&self) -> Result<Page, CdpError> {
        let rest = self
            .devtools_url
            .strip_prefix("ws://")
            .ok_or_else(|| CdpError::Unexpected(format!("DevTools URL {}", self.devtools_url)))?;
        let host = rest.split('/').next().unwrap_or(rest);
        let stream = TcpStream::connect(host)
            .map_err(|e| CdpError::Io(format!("connecting to DevTools at {host}"), e))?;
        stream
            .set_read_timeout(Some(CALL_TIMEOUT))
            .map_err(|e| CdpError::Io("setting a read timeout".into(), e))?;
        let (socket, _) = tungstenite::client(self.devtools_url.as_str(), stream)
            .map_err(|e| CdpError::Launch(format!("DevTools handshake failed: {e}")))?;
        socket
            .get_ref()
            .set_read_timeout(Some(READ_SLICE))
            .map_err(|e| CdpError::Io("setting a read timeout".into(), e))?;
        let mut page = Page {
            socket,
            session: None,
            next_id: 0,
            console_errors: Vec::new(),
            websocket_extensions: Vec::new(),
        };
        let target = page.call("Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = target["targetId"]
            .as_str()
            .ok_or_else(|| CdpError::Unexpected(format!("createTarget answered {target}")))?
            .to_string();
        let attached = page.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        )?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| CdpError::Unexpected(format!("attachToTarget answered {attached}")))?;
        page.session = Some(session.to_string());
        for domain in [
            "Runtime.enable",
            "Log.enable",
            "Page.enable",
            "Network.enable",
        ] {
            page.call(domain, json!({}))?;
        }
        Ok(page)
    }
}

impl Chromium {
    /// Asks Chromium to quit over DevTools, so it stops its own helper processes,
    /// and waits up to `grace` for it to exit. Returns whether it did.
    fn close_gracefully(&mut self, grace: Duration) -> bool {
        let Some(host) = self
            .devtools_url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
        else {
            return false;
        };
        let Ok(stream) = TcpStream::connect(host) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(grace));
        if let Ok((mut socket, _)) = tungstenite::client(self.devtools_url.as_str(), stream) {
            let close = json!({"id": 1, "method": "Browser.close", "params": {}});
            let _ = socket.send(Message::text(close.to_string()));
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if !self.close_gracefully(Duration::from_secs(5)) {
            // Our own child, by its handle; it may already be gone, which is fine.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One page target driven over the DevTools protocol.
pub struct Page {
    socket: WebSocket<TcpStream>,
    session: Option<String>,
    next_id: u64,
    console_errors: Vec<String>,
    /// Each WebSocket handshake's negotiated extensions, as DevTools reported them.
    websocket_extensions: Vec<String>,
}

/// Where a DOM element sits in the viewport, in CSS pixels.
#[derive(Debug, Clone, Copy)]
pub struct Rect {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
}

impl Page {
    /// Sends one protocol call (to the attached page once there is one) and waits for
    /// its answer, collecting the events that arrive meanwhile.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, CdpError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            request["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(request.to_string()))
            .map_err(CdpError::Socket)?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let Some(message) = self.read_one(deadline)? else {
                return Err(CdpError::Timeout(format!("the answer to {method}")));
            };
            if message["id"].as_u64() != Some(id) {
                self.note_event(&message);
                continue;
            }
            if let Some(error) = message.get("error") {
                return Err(CdpError::Protocol {
                    method: method.to_string(),
                    message: error.to_string(),
                });
            }
            return Ok(message["result"].clone());
        }
    }

    /// Reads one JSON message, or `None` once `deadline` has passed.
    fn read_one(&mut self, deadline: Instant) -> Result<Option<Value>, CdpError> {
        loop {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    return serde_json::from_str(text.as_str()).map(Some).map_err(|e| {
                        CdpError::Unexpected(format!("message that is not JSON ({e})"))
                    });
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(CdpError::Socket(e)),
            }
        }
    }

    /// Keeps what counts as a console error: uncaught exceptions, `console.error`,
    /// and error-level browser log entries (failed loads, CSP, ...).
    fn note_event(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                let text = details["exception"]["description"]
                    .as_str()
                    .or_else(|| details["text"].as_str())
                    .unwrap_or("exception");
                self.console_errors.push(format!("uncaught: {text}"));
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .map(|args| {
                        args.iter()
                            .map(|a| match &a["value"] {
                                Value::String(s) => s.clone(),
                                Value::Null => a["description"].as_str().unwrap_or("").into(),
                                v => v.to_string(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.console_errors
                    .push(format!("console.error: {}", args.join(" ")));
            }
            Some("Network.webSocketHandshakeResponseReceived") => {
                let headers = params["response"]["headers"].as_object();
                let extensions = headers
                    .and_then(|h| {
                        h.iter()
                            .find(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-extensions"))
                    })
                    .and_then(|(_, value)| value.as_str())
                    .unwrap_or("");
                self.websocket_extensions.push(extensions.to_string());
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                let entry = &params["entry"];
                self.console_errors.push(format!(
                    "log ({}): {} {}",
                    entry["source"].as_str().unwrap_or("?"),
                    entry["text"].as_str().unwrap_or(""),
                    entry["url"].as_str().unwrap_or("")
                ));
            }
            _ => {}
        }
    }

    /// Reads the events that are already waiting, without blocking for long.
    pub fn pump_events(&mut self) -> Result<(), CdpError> {
        let deadline = Instant::now() + READ_SLICE;
        while let Some(message) = self.read_one(deadline)? {
            self.note_event(&message);
        }
        Ok(())
    }

    /// The console errors seen so far.
    pub fn console_errors(&mut self) -> Result<Vec<String>, CdpError> {
        self.pump_events()?;
        Ok(self.console_errors.clone())
    }

    /// The `Sec-WebSocket-Extensions` of every WebSocket handshake the page completed,
    /// in order ("" for none), as DevTools reported them.
    pub fn websocket_extensions(&mut self) -> Result<Vec<String>, CdpError> {
        self.pump_events()?;
        Ok(self.websocket_extensions.clone())
    }

    /// Forgets the console errors seen so far (for a phase that expects some).
    pub fn clear_console_errors(&mut self) -> Result<(), CdpError> {
        self.pump_events()?;
        self.console_errors.clear();
        Ok(())
    }

    /// Loads `url` and waits until the document has finished loading.
    pub fn navigate(&mut self, url: &str) -> Result<(), CdpError> {
        let answer = self.call("Page.navigate", json!({"url": url}))?;
        if let Some(error) = answer["errorText"].as_str() {
            return Err(CdpError::Protocol {
                method: "Page.navigate".into(),
                message: format!("{url}: {error}"),
            });
        }
        self.wait_for(
            "the page to finish loading",
            "document.readyState === 'complete'",
            Duration::from_secs(15),
        )?;
        Ok(())
    }

    /// Evaluates a JavaScript expression in the page and returns its value as JSON
    /// (`null` for `undefined`).
    pub fn eval(&mut self, expression: &str) -> Result<Value, CdpError> {
        let answer = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(details) = answer.get("exceptionDetails") {
            let message = details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("exception")
                .to_string();
            return Err(CdpError::Script {
                expression: expression.to_string(),
                message,
            });
        }
        Ok(answer["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Polls `expression` every 100 ms until it gives something other than `null`,
    /// `false`, `0` or `""`, and returns that value; fails after `timeout`.
    pub fn wait_for(
        &mut self,
        what: &str,
        expression: &str,
        timeout: Duration,
    ) -> Result<Value, CdpError> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.eval(expression)?;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                return Err(CdpError::Timeout(format!(
                    "{what} ({timeout:?}; `{expression}` last gave {value})"
                )));
            }
            self.pump_events()?;
        }
    }

    /// Where the first element matching `selector` is, after scrolling it into view.
    pub fn rect(&mut self, selector: &str) -> Result<Rect, CdpError> {
        let selector_js = json!(selector).to_string();
        let value = self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector_js}); if (!e) return null; \
             e.scrollIntoView({{block: 'center', inline: 'center'}}); \
             const r = e.getBoundingClientRect(); \
             return [r.x, r.y, r.width, r.height]; }})()"
        ))?;
        let numbers: Vec<f64> = value
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        match numbers[..] {
            [x, y, width, height] => Ok(Rect {
                x,
                y,
                width,
                height,
            }),
            _ => Err(CdpError::Unexpected(format!(
                "no element matches {selector}"
            ))),
        }
    }

    /// Clicks the middle of the first element matching `selector` with real mouse
    /// events, as a person would.
    pub fn click(&mut self, selector: &str) -> Result<(), CdpError> {
        let r = self.rect(selector)?;
        if r.width <= 0.0 || r.height <= 0.0 {
            return Err(CdpError::Unexpected(format!("{selector} is not visible")));
        }
        let (x, y) = (r.x + r.width / 2.0, r.y + r.height / 2.0);
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        )?;
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )?;
        }
        Ok(())
    }

    /// Types `text` into the focused element, as an input method would.
    pub fn insert_text(&mut self, text: &str) -> Result<(), CdpError> {
        self.call("Input.insertText", json!({"text": text}))?;
        Ok(())
    }

    /// Sets the viewport size, device pixel ratio and whether it is a phone.
    pub fn set_viewport(
        &mut self,
        width: u32,
        height: u32,
        scale: f64,
        mobile: bool,
    ) -> Result<(), CdpError> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile}),
        )?;
        if mobile {
            self.call(
                "Emulation.setTouchEmulationEnabled",
                json!({"enabled": true, "maxTouchPoints": 5}),
            )?;
        }
        Ok(())
    }

    /// Makes the page see `prefers-color-scheme: dark` (or light).
    pub fn set_color_scheme(&mut self, dark: bool) -> Result<(), CdpError> {
        let scheme = if dark { "dark" } else { "light" };
        self.call(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        )?;
        Ok(())
    }

    /// Saves a PNG of the whole page (not only the viewport) to `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<(), CdpError> {
        let metrics = self.call("Page.getLayoutMetrics", json!({}))?;
        let size = &metrics["cssContentSize"];
        let (width, height) = (
            size["width"].as_f64().unwrap_or(0.0),
            size["height"].as_f64().unwrap_or(0.0),
        );
        let mut params = json!({"format": "png"});
        if width > 0.0 && height > 0.0 {
            params["clip"] = json!({"x": 0, "y": 0, "width": width, "height": height, "scale": 1});
            params["captureBeyondViewport"] = json!(true);
        }
        let shot = self.call("Page.captureScreenshot", params)?;
        let data = shot["data"]
            .as_str()
            .ok_or_else(|| CdpError::Unexpected("captureScreenshot gave no data".into()))?;
        let png = decode_base64(data)
            .ok_or_else(|| CdpError::Unexpected("captureScreenshot data is not base64".into()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| CdpError::Io(format!("creating {}", dir.display()), e))?;
        }
        std::fs::write(path, png)
            .map_err(|e| CdpError::Io(format!("writing {}", path.display()), e))
    }
}

/// Decodes standard base64 (with or without padding); `None` on a bad character.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut bits: u32 = 0;
    let mut count = 0;
    for byte in text.bytes() {
        let six = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b'\n' | b'\r' => continue,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(six);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::decode_base64;

    #[test]
    fn base64_decodes_padded_unpadded_and_rejects_junk() {
        assert_eq!(decode_base64("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode_base64("aGVsbG8").as_deref(), Some(&b"hello"[..]));
        assert_eq!(
            decode_base64("iVBORw0KGgo=").as_deref(),
            Some(&b"\x89PNG\r\n\x1a\n"[..])
        );
        assert_eq!(decode_base64("").as_deref(), Some(&b""[..]));
        assert_eq!(decode_base64("ab$c"), None);
    }
}
