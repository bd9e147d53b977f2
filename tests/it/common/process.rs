//! Running the binary: the command every test starts it with, draining its pipes, and
//! running it to its exit.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Variables of the test's environment every run of the binary keeps: where an
/// instrumented build writes its coverage profile (`.ci/coverage` sets it), so the
/// processes the black-box tests start count towards the coverage figure.
const PASSED_THROUGH: &[&str] = &["LLVM_PROFILE_FILE"];

/// The binary with nothing of the test's environment but [`PASSED_THROUGH`]: 127.0.0.1,
/// port 0 (or `port`), debug log, then `env` (which may override any of these).
pub(crate) fn ws_assets(port: u16, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ws_assets"));
    command.env_clear();
    for name in PASSED_THROUGH {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
        .env("WS_ASSETS_HOST", "127.0.0.1")
        .env("WS_ASSETS_PORT", port.to_string())
        .env("WS_ASSETS_LOG_LEVEL", "debug")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Reads `pipe` line by line on a thread of its own until it closes, and hands every line
/// (without its end, invalid UTF-8 replaced) to `each`. The pipe is read for the child's
/// whole life, so the child never blocks on a full pipe.
pub fn drain_lines<R: Read + Send + 'static>(
    pipe: R,
    mut each: impl FnMut(String) + Send + 'static,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    each(text.trim_end_matches(['\n', '\r']).to_string());
                }
            }
        }
    })
}

/// How long [`end`] waits for a clean exit after SIGTERM before it kills: the server
/// itself gives up writing queued points after 5 s.
const END_GRACE: Duration = Duration::from_secs(10);

/// Ends a child that may still be running as an operator would: SIGCONT (a test may
/// have stopped it) and SIGTERM, then SIGKILL if it has not exited within
/// [`END_GRACE`]; reaps it. A clean exit is what writes an instrumented binary's
/// coverage profile.
pub(crate) fn end(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let pid = child.id() as libc::pid_t;
    for signal in [libc::SIGCONT, libc::SIGTERM] {
        // SAFETY: kill() with the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(pid, signal) };
    }
    let deadline = Instant::now() + END_GRACE;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// How a run of the binary ended.
pub struct Exited {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// Everything written to standard output.
    pub stdout: String,
    /// Everything written to standard error (the log).
    pub stderr: String,
    /// How long it ran.
    pub took: Duration,
}

/// Runs the binary with `args` on the embedded defaults plus `env` (127.0.0.1, port 0,
/// debug log) and waits for it to exit; ends it (see [`end`]) and panics when it runs past `within`.
/// For runs expected to end by themselves: failed start-ups, `migrate`.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)], within: Duration) -> Exited {
    let mut command = ws_assets(0, env);
    command.args(args);
    run_command(command, within)
}

/// Runs `command` to its exit, collecting its output; ends it (see [`end`]) and panics
/// when it runs past `within`.
pub fn run_command(mut command: Command, within: Duration) -> Exited {
    let what = format!("{:?}", command.get_program());
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = pipe.map(|pipe| {
            drain_lines(pipe, move |line| {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line)
            })
        });
        move || {
            if let Some(reader) = reader {
                let _ = reader.join();
            }
            let lines = lines.lock().unwrap_or_else(|e| e.into_inner());
            lines.join("\n")
        }
    };
    let stdout = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if started.elapsed() > within {
            end(&mut child);
            panic!(
                "{what} still running after {within:?}; standard error:\n{}",
                stderr()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    Exited {
        code: status.code(),
        stdout: stdout(),
        stderr: stderr(),
        took,
    }
}
