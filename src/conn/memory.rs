//! A connection in memory, for driving a [`Conn`](super::Conn) without a socket or a
//! reactor: the client's end ([`MemoryPeer`]) and what the reactor lends each step
//! ([`MemoryService`]). The driver's unit tests and the connection fuzz target use them.

use std::io::{self, IoSlice, Read, Write};
use std::time::Instant;

use bytes::Bytes;

use super::{Context, Shared, Stream};
use crate::asset::{Point, default_assets};
use crate::config::Config;
use crate::market::Market;
use crate::metrics::Metrics;

/// The reactor's state that a connection's steps borrow, owned, with a clock that the
/// caller moves by hand.
#[derive(Debug)]
pub struct MemoryService {
    /// The service's settings.
    pub config: Config,
    /// The default assets, their histories and subscriptions.
    pub market: Market,
    /// Counters the steps add to.
    pub metrics: Metrics,
    /// The reactor's buffers.
    pub shared: Shared,
    /// The time of the next step.
    pub now: Instant,
    /// The last second [`tick`](MemoryService::tick) recorded.
    pub second: i64,
}

impl MemoryService {
    /// The state for `config`, with no point recorded yet.
    pub fn new(config: Config) -> MemoryService {
        let market = Market::new(default_assets(), config.history_seconds);
        let (metrics, shared) = (Metrics::default(), Shared::new(&config));
        let (now, second) = (Instant::now(), 1_700_000_000);
        MemoryService {
            config,
            market,
            metrics,
            shared,
            now,
            second,
        }
    }

    /// Records a point of each default asset (ids 1 to 5) for the next second, as a
    /// feed's tick does; returns the frames of those recorded, with their asset's index.
    pub fn tick(&mut self) -> Vec<(usize, Bytes)> {
        self.second += 1;
        let (time, mut frames) = (self.second, Vec::new());
        for asset_id in 1..=5 {
            let value = 1.0 + f64::from(asset_id) / 10.0 + (time % 100) as f64 / 1e4;
            let point = Point {
                asset_id,
                time,
                value,
            };
            frames.extend(self.market.record(point));
        }
        frames
    }

    /// What one step is lent, as the reactor lends it.
    pub fn cx(&mut self) -> Context<'_> {
        Context {
            config: &self.config,
            market: &mut self.market,
            metrics: &mut self.metrics,
            shared: &mut self.shared,
            now: self.now,
        }
    }
}

/// What the client sends (`input`, of which the first `sent` bytes have gone out), what
/// it was sent (`written`), and how much more it will take (`room`, like a socket's send
/// buffer). A write after the write side is shut panics: the driver must never do it.
#[derive(Debug, Default)]
pub struct MemoryPeer {
    /// Everything the client will send.
    pub input: Vec<u8>,
    /// How much of `input` has been sent so far.
    pub sent: usize,
    /// How much of `input` the server has read.
    pub read: usize,
    /// Bytes read since the counter was last taken: what a turn read.
    pub read_in_turn: usize,
    /// The client closes its side once all of `input` is read (else it stays silent).
    pub closes: bool,
    /// What the server wrote.
    pub written: Vec<u8>,
    /// Bytes the server may still write before a write would block.
    pub room: usize,
    /// The server shut its write side.
    pub shut: bool,
}

impl MemoryPeer {
    /// A client that sends all of `input` at once, closes after it and reads anything.
    pub fn sending(input: &[u8]) -> MemoryPeer {
        MemoryPeer {
            input: input.to_vec(),
            sent: input.len(),
            closes: true,
            room: usize::MAX / 2,
            ..MemoryPeer::default()
        }
    }
}

impl Read for MemoryPeer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let ready = &self.input[self.read..self.sent];
        if ready.is_empty() && !(self.closes && self.sent == self.input.len()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = ready.len().min(buf.len());
        buf[..n].copy_from_slice(&ready[..n]);
        self.read += n;
        self.read_in_turn += n;
        Ok(n)
    }
}

impl Write for MemoryPeer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Takes what room allows from every slice, as a socket's `writev` does.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        assert!(!self.shut, "a write after the write side was shut");
        if self.room == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let before = self.written.len();
        for buf in bufs {
            let n = buf.len().min(self.room - (self.written.len() - before));
            self.written.extend_from_slice(&buf[..n]);
        }
        self.room -= self.written.len() - before;
        Ok(self.written.len() - before)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for MemoryPeer {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shut = true;
        Ok(())
    }
}
