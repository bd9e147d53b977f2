//! The worker pool: blocking jobs (feed requests, database calls) off the reactor.
//!
//! Jobs go in over a channel; each result comes back over another channel and the
//! reactor is woken through a `mio::Waker`. A job that panics yields the fallback
//! result given with it, so the reactor's bookkeeping never loses a job.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use log::{error, warn};
use mio::Waker;

type Job<R> = Box<dyn FnOnce() -> R + Send>;

/// A fixed set of threads running jobs that return `R` to the reactor.
///
/// The threads are detached: at exit the process does not wait for a job stuck in a
/// call that never returns (a hung database).
pub struct Workers<R> {
    jobs: Sender<(Job<R>, R)>,
    results: Receiver<R>,
}

impl<R: Send + 'static> Workers<R> {
    /// Starts `count` threads named `worker-N`; results wake the reactor through `waker`.
    pub fn start(count: usize, waker: Arc<Waker>) -> std::io::Result<Workers<R>> {
        let (job_tx, job_rx) = mpsc::channel::<(Job<R>, R)>();
        let (result_tx, results) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for n in 0..count {
            let jobs = Arc::clone(&job_rx);
            let results = result_tx.clone();
            let waker = Arc::clone(&waker);
            thread::Builder::new()
                .name(format!("worker-{n}"))
                .spawn(move || run(&jobs, &results, &waker))?;
        }
        Ok(Workers {
            jobs: job_tx,
            results,
        })
    }

    /// Queues `job`; if it panics, `if_panicked` is returned in its place.
    pub fn submit(&self, job: impl FnOnce() -> R + Send + 'static, if_panicked: R) {
        if self.jobs.send((Box::new(job), if_panicked)).is_err() {
            error!("worker pool has stopped; a job was not run");
        }
    }

    /// Takes one finished job's result, if any is waiting.
    pub fn try_recv(&self) -> Option<R> {
        self.results.try_recv().ok()
    }
}

fn run<R>(jobs: &Mutex<Receiver<(Job<R>, R)>>, results: &Sender<R>, waker: &Waker) {
    loop {
        let next = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            // A poisoned lock only means another worker panicked while waiting; the
            // receiver itself is intact.
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok((job, if_panicked)) = next else {
            return;
        };
        let result = catch_unwind(AssertUnwindSafe(job)).unwrap_or_else(|_| {
            error!("a worker job panicked; its result is replaced by a failure");
            if_panicked
        });
        if results.send(result).is_err() {
            return;
        }
        if let Err(e) = waker.wake() {
            warn!("could not wake the reactor: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Duration;

    #[test]
    fn results_come_back_and_wake_the_poll() {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(7)).unwrap());
        let workers: Workers<u32> = Workers::start(2, waker).unwrap();
        for n in 0..10 {
            workers.submit(move || n * 2, u32::MAX);
        }
        workers.submit(|| panic!("boom"), 999);
        let mut got = Vec::new();
        let mut events = Events::with_capacity(8);
        while got.len() < 11 {
            poll.poll(&mut events, Some(Duration::from_secs(5)))
                .unwrap();
            assert!(events.iter().any(|e| e.token() == Token(7)), "woken");
            while let Some(r) = workers.try_recv() {
                got.push(r);
            }
        }
        got.sort_unstable();
        assert_eq!(got, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 999]);
    }
}
