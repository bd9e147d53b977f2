//! Where log lines go: a bounded queue drained to standard error by a thread of its own.
//!
//! Writing to standard error can block (a pipe nobody reads, a stalled terminal or
//! journal), and the reactor logs. So the logger writes into a queue that never blocks;
//! a line that does not fit is dropped and counted, and once the sink keeps up again a
//! line says how many were lost.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

/// Lines waiting for the sink at most.
pub const QUEUE_LINES: usize = 4096;

/// Lines dropped since start (for `/metrics`).
static DROPPED_TOTAL: AtomicU64 = AtomicU64::new(0);
/// Lines dropped since the last "dropped" note.
static DROPPED_UNREPORTED: AtomicU64 = AtomicU64::new(0);
/// Lines queued and not yet written.
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// The logger's writer: splits what it is given into lines and queues them.
pub struct QueueWriter {
    partial: Vec<u8>,
    lines: SyncSender<Vec<u8>>,
}

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let rest = self.partial.split_off(end + 1);
            let line = std::mem::replace(&mut self.partial, rest);
            PENDING.fetch_add(1, Ordering::SeqCst);
            match self.lines.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    PENDING.fetch_sub(1, Ordering::SeqCst);
                    DROPPED_TOTAL.fetch_add(1, Ordering::Relaxed);
                    DROPPED_UNREPORTED.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Starts the thread that writes queued lines to `out`; returns the writer to log into.
pub fn start(out: impl Write + Send + 'static, capacity: usize) -> io::Result<QueueWriter> {
    let (lines, queue) = mpsc::sync_channel(capacity);
    thread::Builder::new()
        .name("log".into())
        .spawn(move || drain(&queue, out))?;
    Ok(QueueWriter {
        partial: Vec::new(),
        lines,
    })
}

fn drain(queue: &Receiver<Vec<u8>>, mut out: impl Write) {
    loop {
        let next = queue.recv_timeout(Duration::from_secs(1));
        let dropped = DROPPED_UNREPORTED.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let note = format!(
                "ws_assets: {dropped} log lines dropped: standard error was not keeping up\n"
            );
            let _ = out.write_all(note.as_bytes());
        }
        match next {
            Ok(line) => {
                let _ = out.write_all(&line);
                PENDING.fetch_sub(1, Ordering::SeqCst);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let _ = out.flush();
    }
}

/// Log lines dropped since start because the sink did not keep up.
pub fn lines_dropped() -> u64 {
    DROPPED_TOTAL.load(Ordering::Relaxed)
}

/// Waits up to `limit` for the queued lines to be written (at exit).
pub fn settle(limit: Duration) {
    let until = Instant::now() + limit;
    while PENDING.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A sink that blocks until released, then records what it got.
    #[derive(Clone)]
    struct Gate {
        open: Arc<Mutex<bool>>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            while !*self.open.lock().unwrap() {
                thread::sleep(Duration::from_millis(1));
            }
            self.got.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_sink_never_blocks_the_writer_and_the_loss_is_reported() {
        let gate = Gate {
            open: Arc::new(Mutex::new(false)),
            got: Arc::new(Mutex::new(Vec::new())),
        };
        let mut writer = start(gate.clone(), 4).unwrap();
        let started = Instant::now();
        let before = lines_dropped();
        for n in 0..100 {
            // A line may come in pieces, as the logger formats it.
            write!(writer, "line ").unwrap();
            writeln!(writer, "{n}").unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(1), "never blocked");
        assert!(
            lines_dropped() - before >= 90,
            "what did not fit was counted"
        );
        *gate.open.lock().unwrap() = true;
        let text = || String::from_utf8(gate.got.lock().unwrap().clone()).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while !text().contains("line 3\n") {
            assert!(Instant::now() < until, "got {:?}", text());
            thread::sleep(Duration::from_millis(10));
        }
        writeln!(writer, "after").unwrap();
        loop {
            let text = text();
            if text.contains("after\n") {
                assert!(text.contains("log lines dropped"), "{text}");
                assert!(
                    text.contains("line 0\n"),
                    "the first lines were kept: {text}"
                );
                break;
            }
            assert!(Instant::now() < until, "got {text:?}");
            thread::sleep(Duration::from_millis(10));
        }
    }
}
