//! The test page in a real browser: the real server binary on a free port, Debian's
//! headless Chromium driven over the DevTools protocol, and checks that read the
//! page's state from its DOM hooks (`data-testid`, `data-points`, ...), not pixels.
//! Screenshots land in `test-output/browser/` for a person to look at.
//!
//! Needs Chromium: run `.ci/install-chromium` once (as root).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::cdp::{Chromium, Page};
use crate::common::Server;
use crate::testca::{KeyKind, TestCa};
use serde_json::Value;

/// A test failure, printed as plain text (a boxed error's `Debug` would escape the
/// multi-line diagnostics).
struct Failure(String);

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: fmt::Display> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure(error.to_string())
    }
}

type TestResult = Result<(), Failure>;

/// Deadline for anything the page should show "soon" (a reply, a few ticks).
const SOON: Duration = Duration::from_secs(15);
/// The five assets of the protocol, in id order.
const ASSETS: [&str; 5] = ["EURUSD", "USDJPY", "GBPUSD", "AUDUSD", "USDCAD"];

/// Where screenshots go: `test-output/browser/` at the crate root (git-ignored).
fn output_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-output/browser")
}

/// Starts a server (with `env`) and Chromium, opens the page, runs `body`; on
/// failure saves a screenshot named after the test and adds the server's log and
/// the page's console errors to the error.
fn with_page(
    name: &str,
    env: &[(&str, &str)],
    body: impl FnOnce(&mut Server, &mut Page) -> TestResult,
) -> TestResult {
    let mut server = Server::try_start_on(0, env)?;
    let chromium = Chromium::launch()?;
    let mut page = chromium.open_page()?;
    page.set_viewport(1280, 900, 1.0, false)?;
    let outcome = page
        .navigate(&server.url("/"))
        .map_err(Into::into)
        .and_then(|()| body(&mut server, &mut page));
    if let Err(error) = outcome {
        let shot = output_dir().join(format!("failure-{name}.png"));
        let saved = match page.screenshot(&shot) {
            Ok(()) => format!("screenshot: {}", shot.display()),
            Err(e) => format!("no screenshot ({e})"),
        };
        let console = page.console_errors().unwrap_or_default();
        return Err(format!(
            "{error:?}\n{saved}\nconsole errors: {console:#?}\nserver log:\n{}\nchromium stderr:\n{}",
            server.log(),
            chromium.stderr_tail()
        )
        .into());
    }
    Ok(())
}

/// Every WebSocket the page opened negotiated permessage-deflate, as DevTools reports
/// the handshake's answer.
fn assert_deflate_negotiated(page: &mut Page) -> TestResult {
    let extensions = page.websocket_extensions()?;
    if extensions.is_empty()
        || !extensions
            .iter()
            .all(|e| e.starts_with("permessage-deflate"))
    {
        return Err(format!("the page's sockets negotiated {extensions:?}").into());
    }
    Ok(())
}

/// A CSS selector for a `data-testid`.
fn testid(id: &str) -> String {
    format!("[data-testid=\"{id}\"]")
}

/// An integer `data-*` attribute of the first element matching `selector` (-1 if absent).
fn data_int(page: &mut Page, selector: &str, attribute: &str) -> Result<i64, Failure> {
    let selector = serde_json::to_string(selector)?;
    let value = page.eval(&format!(
        "(() => {{ const e = document.querySelector({selector}); \
         const v = e ? e.getAttribute('data-{attribute}') : null; \
         return v === null || v === '' ? -1 : Number(v); }})()"
    ))?;
    value
        .as_i64()
        .or_else(|| value.as_f64().map(|f| f as i64))
        .ok_or_else(|| format!("data-{attribute} of {selector} is {value}, not a number").into())
}

/// Waits until the chart's integer attribute `attribute` reaches at least `at_least`.
fn wait_chart_at_least(page: &mut Page, attribute: &str, at_least: i64) -> TestResult {
    page.wait_for(
        &format!("the chart's data-{attribute} to reach {at_least}"),
        &format!(
            "Number(document.querySelector('[data-testid=\"chart\"]').getAttribute('data-{attribute}') || -1) >= {at_least}"
        ),
        SOON,
    )?;
    Ok(())
}

/// Waits for a log entry from the server with this action (and error type).
fn wait_log(page: &mut Page, action: &str, error_type: Option<&str>) -> Result<String, Failure> {
    let mut selector =
        format!("[data-testid=\"log-entry\"][data-dir=\"in\"][data-action=\"{action}\"]");
    if let Some(kind) = error_type {
        selector.push_str(&format!("[data-error-type=\"{kind}\"]"));
    }
    let selector_js = serde_json::to_string(&selector)?;
    let text = page.wait_for(
        &format!("a log entry {selector}"),
        &format!("(() => {{ const e = document.querySelector({selector_js}); return e ? e.textContent : null; }})()"),
        SOON,
    )?;
    Ok(text.as_str().unwrap_or_default().to_string())
}

/// Replaces the send box's text the way a person would (click, select all, type)
/// and presses Send.
fn send_by_hand(page: &mut Page, text: &str) -> TestResult {
    page.click(&testid("send-input"))?;
    page.eval("document.querySelector('[data-testid=\"send-input\"]').select()")?;
    page.insert_text(text)?;
    let typed = page.eval("document.querySelector('[data-testid=\"send-input\"]').value")?;
    if typed.as_str() != Some(text) {
        return Err(format!("the send box holds {typed}, not {text:?}").into());
    }
    page.click(&testid("send-button"))?;
    Ok(())
}

fn assert_no_console_errors(page: &mut Page) -> TestResult {
    let errors = page.console_errors()?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("the page logged console errors: {errors:#?}").into())
    }
}

/// The main walk-through a person would do: load, see the assets, pick one, watch
/// the chart grow, read the log, send a bad request by hand, then the same page on
/// a phone-sized screen.
#[test]
fn page_lists_assets_draws_a_growing_chart_and_logs_messages() -> TestResult {
    with_page(
        "walkthrough",
        &[("WS_ASSETS_SIMULATED_BACKFILL", "false")],
        |server, page| {
            page.wait_for(
                "the connection state to be open",
                "document.querySelector('[data-testid=\"conn-state\"]').dataset.state === 'open'",
                SOON,
            )?;
            let url =
                page.eval("document.querySelector('[data-testid=\"ws-url\"]').textContent")?;
            let expected_url = format!("ws://{}/api/v1/websocket", server.addr);
            if url.as_str() != Some(expected_url.as_str()) {
                return Err(format!("the page connects to {url}, expected {expected_url}").into());
            }

            // The asset list, from the server's `assets` reply.
            page.wait_for(
                "5 assets in the list",
                "document.querySelectorAll('[data-testid=\"asset\"]').length === 5",
                SOON,
            )?;
            let names = page.eval(
                "[...document.querySelectorAll('[data-testid=\"asset\"]')].map(b => b.dataset.assetName)",
            )?;
            if names != serde_json::json!(ASSETS) {
                return Err(format!("the asset list is {names}, expected {ASSETS:?}").into());
            }
            wait_log(page, "assets", None)?;
            assert_deflate_negotiated(page)?;

            // Pick USDJPY with a real click: history, then live points, drawn.
            page.click("[data-testid=\"asset\"][data-asset-id=\"2\"]")?;
            page.wait_for(
                "the chart to show asset 2",
                "document.querySelector('[data-testid=\"chart\"]').dataset.assetId === '2'",
                SOON,
            )?;
            let pressed = page.eval(
                "document.querySelector('[data-testid=\"asset\"][data-asset-id=\"2\"]').getAttribute('aria-pressed')",
            )?;
            if pressed.as_str() != Some("true") {
                return Err(format!("the picked asset's aria-pressed is {pressed}").into());
            }
            wait_log(page, "asset_history", None)?;
            wait_chart_at_least(page, "points", 1)?;
            let before = data_int(page, &testid("chart"), "points")?;
            wait_chart_at_least(page, "points", before + 3)?;
            wait_chart_at_least(page, "live", 3)?;
            let point_text = wait_log(page, "point", None)?;
            if !point_text.contains("USDJPY") {
                return Err(format!("a point log entry is not USDJPY's: {point_text}").into());
            }

            // The quote line: asset name, a price, and the change over the window.
            let quote = page.eval(
                "['chart-asset', 'current-value', 'change'].map(id => \
                 document.querySelector(`[data-testid=\"${id}\"]`).textContent)",
            )?;
            let quote: Vec<&str> = quote
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let [asset, value, change] = quote[..] else {
                return Err(format!("the quote line is {quote:?}").into());
            };
            if asset != "USDJPY" || value.parse::<f64>().map_or(true, |v| v <= 0.0) {
                return Err(format!("the quote line shows {asset:?} {value:?}").into());
            }
            if !(change.contains('(') && change.ends_with("%)")) {
                return Err(format!("the change reads {change:?}, expected `±abs (±pct%)`").into());
            }

            // The examples are one click away.
            page.click(&testid("example-assets"))?;
            page.wait_for(
                "the example request in the log",
                "!!document.querySelector('[data-testid=\"log-entry\"][data-dir=\"out\"][data-action=\"assets\"]')",
                SOON,
            )?;

            // A bad request typed by hand: the server's ParseError shows in the log.
            send_by_hand(page, "{oops")?;
            let error = wait_log(page, "error", Some("ParseError"))?;
            if !error.contains("ParseError") {
                return Err(format!("the error entry reads {error:?}").into());
            }
            // Errors do not close the connection: points keep coming.
            let live = data_int(page, &testid("chart"), "live")?;
            wait_chart_at_least(page, "live", live + 1)?;

            assert_no_console_errors(page)?;
            page.screenshot(&output_dir().join("desktop.png"))?;

            // The same page on a phone-sized screen: nothing wider than the screen.
            page.set_viewport(390, 844, 2.0, true)?;
            let live = data_int(page, &testid("chart"), "live")?;
            wait_chart_at_least(page, "live", live + 1)?;
            let widths = page.eval(
                "[document.documentElement.scrollWidth, window.innerWidth, \
                 document.querySelector('[data-testid=\"chart\"]').getBoundingClientRect().width]",
            )?;
            let widths: Vec<f64> = widths
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            let [scroll, inner, chart] = widths[..] else {
                return Err(format!("could not measure the phone layout: {widths:?}").into());
            };
            if scroll > inner || chart > inner || chart < inner * 0.7 {
                return Err(format!(
                    "on a phone the page is {scroll}px wide and the chart {chart}px, in a {inner}px screen"
                )
                .into());
            }
            page.click("[data-testid=\"asset\"][data-asset-id=\"1\"]")?;
            page.wait_for(
                "the chart to switch to asset 1 on the phone",
                "document.querySelector('[data-testid=\"chart\"]').dataset.assetId === '1'",
                SOON,
            )?;
            wait_chart_at_least(page, "points", 2)?;
            assert_no_console_errors(page)?;
            page.screenshot(&output_dir().join("phone.png"))?;
            Ok(())
        },
    )
}

/// With a full 30-minute history (1800 points) the page draws it all, keeps the
/// log entry short, and keeps up with live points.
#[test]
fn page_draws_a_full_history_and_keeps_the_log_short() -> TestResult {
    with_page(
        "full-history",
        &[("WS_ASSETS_SIMULATED_BACKFILL", "true")],
        |server, page| {
            page.wait_for(
                "5 assets in the list",
                "document.querySelectorAll('[data-testid=\"asset\"]').length === 5",
                SOON,
            )?;
            let before = server.metrics();
            page.click("[data-testid=\"asset\"][data-asset-id=\"3\"]")?;
            let history = wait_log(page, "asset_history", None)?;
            // The server's history is the whole window, so expect most of 1800 points.
            wait_chart_at_least(page, "points", 1700)?;
            // The page's socket negotiated permessage-deflate (DevTools saw the answer);
            // Chromium sent its subscribe compressed and the history came compressed.
            assert_deflate_negotiated(page)?;
            let after = server.metrics();
            let inflated = after.moved_since(&before, "ws_assets_messages_inflated_total");
            let compressed = after.moved_since(
                &before,
                "ws_assets_message_bytes_total{encoding=\"deflate\"}",
            );
            if inflated < 1.0 || compressed <= 0.0 {
                return Err(format!(
                    "{inflated} requests inflated and {compressed} bytes sent compressed"
                )
                .into());
            }
            if history.len() > 600 {
                return Err(format!(
                    "the asset_history log entry is {} characters long; it should be truncated",
                    history.len()
                )
                .into());
            }
            let live = data_int(page, &testid("chart"), "live")?;
            wait_chart_at_least(page, "live", live + 2)?;
            let first = data_int(page, &testid("chart"), "first-time")?;
            let last = data_int(page, &testid("chart"), "last-time")?;
            if last - first > 1800 || last - first < 1700 {
                return Err(format!(
                    "the chart spans {first}..{last}, expected a 30-minute window"
                )
                .into());
            }
            // Pointing at the middle of the chart reads out a point from the middle of the window.
            page.click(&testid("chart"))?;
            let hovered = data_int(page, &testid("chart"), "hover-time")?;
            let first = data_int(page, &testid("chart"), "first-time")?;
            let last = data_int(page, &testid("chart"), "last-time")?;
            if hovered <= first || hovered >= last {
                return Err(format!(
                    "pointing at the chart's middle picked time {hovered}, outside {first}..{last}"
                )
                .into());
            }
            // The overlay that asks to wait for points is gone once there are points.
            let overlay =
                page.eval("document.getElementById('chart-empty').offsetParent === null")?;
            if overlay != Value::Bool(true) {
                return Err(
                    "the 'waiting for points' overlay still shows over a full chart".into(),
                );
            }
            assert_no_console_errors(page)?;
            page.screenshot(&output_dir().join("full-history.png"))?;

            // The dark scheme: the page follows prefers-color-scheme.
            page.set_color_scheme(true)?;
            let background = page.eval("getComputedStyle(document.body).backgroundColor")?;
            if background.as_str() == Some("rgb(246, 247, 249)") {
                return Err("the page stays light under prefers-color-scheme: dark".into());
            }
            let live = data_int(page, &testid("chart"), "live")?;
            wait_chart_at_least(page, "live", live + 1)?;
            page.screenshot(&output_dir().join("full-history-dark.png"))?;
            Ok(())
        },
    )
}

/// The server goes away and comes back on the same port: the page shows it,
/// reconnects by itself, subscribes again to the asset that was picked, and resumes:
/// its subscribe carries `since`, the last second its chart holds, and the answer
/// extends the chart without a hole.
#[test]
fn page_reconnects_and_resumes_its_chart() -> TestResult {
    with_page(
        "reconnect",
        &[("WS_ASSETS_SIMULATED_BACKFILL", "false")],
        |server, page| {
            page.wait_for(
                "5 assets in the list",
                "document.querySelectorAll('[data-testid=\"asset\"]').length === 5",
                SOON,
            )?;
            page.click("[data-testid=\"asset\"][data-asset-id=\"4\"]")?;
            wait_chart_at_least(page, "live", 3)?;
            let port = server.addr.port();

            // Stop the server and watch the page notice.
            let first_without_point = server.ticks_without_point();
            server.kill();
            page.wait_for(
                "the page to show it is disconnected",
                "document.querySelector('[data-testid=\"conn-state\"]').dataset.state !== 'open'",
                SOON,
            )?;
            // Closed, so no point can come in any more: this is what the chart holds.
            let first = data_int(page, &testid("chart"), "first-time")?;
            let last = data_int(page, &testid("chart"), "last-time")?;
            let first_log = server.log();

            // The server comes back with a history that covers the time it was away
            // (simulated here; a store would have it in production), so a resume can
            // fill the chart up to the present.
            *server = Server::try_start_on(port, &[("WS_ASSETS_SIMULATED_BACKFILL", "true")])?;
            page.wait_for(
                "the page to reconnect",
                "document.querySelector('[data-testid=\"conn-state\"]').dataset.state === 'open'",
                Duration::from_secs(30),
            )?;
            let resume = page.wait_for(
                "a second subscribe to asset 4 after the reconnect",
                "(() => { const sent = [...document.querySelectorAll(\
                 '[data-testid=\"log-entry\"][data-dir=\"out\"][data-action=\"subscribe\"] .text')]\
                 .map(e => e.textContent).filter(t => t.includes('\"assetId\":4')); \
                 return sent.length >= 2 ? sent[0] : null; })()",
                SOON,
            )?;
            // The newest entry comes first: the subscribe sent on reconnecting.
            let resume: Value = serde_json::from_str(resume.as_str().unwrap_or_default())
                .map_err(|e| format!("the resuming subscribe {resume} is not JSON: {e}"))?;
            if resume["message"]["since"].as_i64() != Some(last) {
                return Err(format!(
                    "after the reconnect the page sent {resume}; expected `since` to be {last}, \
                     the last second its chart held"
                )
                .into());
            }
            // The answer to it is a second asset_history, and live points follow.
            page.wait_for(
                "the resumed history",
                "document.querySelectorAll('[data-testid=\"log-entry\"][data-dir=\"in\"]\
                 [data-action=\"asset_history\"]').length >= 2",
                SOON,
            )?;
            wait_chart_at_least(page, "last-time", last + 3)?;
            let asset = data_int(page, &testid("chart"), "asset-id")?;
            if asset != 4 {
                return Err(
                    format!("after the reconnect the chart shows asset {asset}, not 4").into(),
                );
            }

            // Extended, not restarted, and without a hole: one point for every second
            // from the first one before the disconnect to the newest, but for the
            // seconds either server counted as without a point.
            let points = data_int(page, &testid("chart"), "points")?;
            let now_first = data_int(page, &testid("chart"), "first-time")?;
            let now_last = data_int(page, &testid("chart"), "last-time")?;
            let allowed = (first_without_point + server.ticks_without_point()) as i64;
            let span = now_last - now_first + 1;
            if now_first != first || points > span || points + allowed < span {
                return Err(format!(
                    "before the disconnect the chart spanned {first}..={last}; after resuming \
                     it spans {now_first}..={now_last} with {points} points, expected it to \
                     start at {first} with {} points (one a second; {allowed} ticks without \
                     a point)\nfirst server's log:\n{first_log}",
                    now_last - first + 1
                )
                .into());
            }
            // Failed connection attempts while the server was down are expected console noise.
            page.clear_console_errors()?;
            Ok(())
        },
    )
}

/// `GET /` serves the embedded page when the UI is on, and 404 when it is off.
#[test]
fn root_serves_the_embedded_page_only_when_the_ui_is_enabled() -> TestResult {
    let on = Server::try_start_on(0, &[("WS_ASSETS_ENABLE_UI", "true")])?;
    let page = on.request("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
    let (status, head, body) = (page.status, page.head, page.body);
    if status != 200 {
        return Err(format!("GET / with the UI on answered {status}:\n{head}").into());
    }
    if !head
        .to_ascii_lowercase()
        .contains("content-type: text/html")
    {
        return Err(format!("GET / is not served as HTML:\n{head}").into());
    }
    if body != include_bytes!("../../static/index.html") {
        return Err("GET / does not serve static/index.html as embedded".into());
    }

    let off = Server::try_start_on(0, &[("WS_ASSETS_ENABLE_UI", "false")])?;
    let page = off.request("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
    let (status, head) = (page.status, page.head);
    if status != 404 {
        return Err(
            format!("GET / with the UI off answered {status}, expected 404:\n{head}").into(),
        );
    }
    Ok(())
}

/// The page stays small and self-contained: nothing is fetched from elsewhere.
#[test]
fn page_is_small_and_self_contained() -> TestResult {
    let page = include_str!("../../static/index.html");
    if page.len() >= 50 * 1024 {
        return Err(format!(
            "static/index.html is {} bytes; keep it under 50 KiB",
            page.len()
        )
        .into());
    }
    for external in [
        "http://",
        "https://",
        "//cdn",
        "@import",
        "<link rel=\"stylesheet\"",
    ] {
        if page.contains(external) {
            return Err(format!(
                "static/index.html refers to {external:?}; it must not fetch anything"
            )
            .into());
        }
    }
    Ok(())
}

/// The page served over https, in a Chromium that trusts the test's own authority the
/// way a user's browser trusts a real one (no flag that skips the check): the page
/// opens `wss://` on the same port and the chart streams history and live points.
#[test]
fn the_page_over_https_streams_its_chart_over_wss() -> TestResult {
    let ca = TestCa::new();
    let issued = ca.issue("browser", KeyKind::Ecdsa);
    let files = issued.env();
    let env: Vec<(&str, &str)> = files.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::try_start_on(0, &env)?;
    let chromium = Chromium::launch_trusting(&ca.root_pem())?;
    let mut page = chromium.open_page()?;
    let origin = format!("https://localhost:{}", server.addr.port());
    let outcome = page
        .navigate(&format!("{origin}/"))
        .map_err(Failure::from)
        .and_then(|()| {
            page.wait_for(
                "the connection state to be open",
                "document.querySelector('[data-testid=\"conn-state\"]').dataset.state === 'open'",
                SOON,
            )?;
            let url =
                page.eval("document.querySelector('[data-testid=\"ws-url\"]').textContent")?;
            let expected = format!("wss://localhost:{}/api/v1/websocket", server.addr.port());
            if url.as_str() != Some(expected.as_str()) {
                return Err(format!("the page connects to {url}, expected {expected}").into());
            }
            page.click("[data-testid=\"asset\"][data-asset-id=\"3\"]")?;
            wait_log(&mut page, "asset_history", None)?;
            wait_chart_at_least(&mut page, "points", 100)?;
            wait_chart_at_least(&mut page, "live", 2)?;
            assert_no_console_errors(&mut page)
        });
    if let Err(error) = outcome {
        let shot = output_dir().join("failure-https.png");
        let saved = match page.screenshot(&shot) {
            Ok(()) => format!("screenshot: {}", shot.display()),
            Err(e) => format!("no screenshot ({e})"),
        };
        return Err(format!(
            "{error:?}\n{saved}\nserver log:\n{}\nchromium stderr:\n{}",
            server.log(),
            chromium.stderr_tail()
        )
        .into());
    }
    Ok(())
}
